//! Audit records, their one serialized form, and the statement that a
//! checkpoint signs.
//!
//! A record is one line of compact JSON with its fields in a fixed order,
//! so that the same record always gives the same bytes and the same hash.
//! [`Record::parse`] accepts a line only if serializing the parsed record
//! gives back exactly those bytes.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha384};
use tonic::Code;

use crate::verify::algorithm::{Algorithm, SignatureEncoding};
use crate::verify::{encode_hex, format_rfc3339, parse_rfc3339};

/// Maximum length in bytes of each text field of a sign record. Longer
/// values are cut to this length, because denied requests carry client
/// input and must not be able to grow the log without bound.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Maximum length of a recorded digest. Longer digests are cut, for the
/// same reason as text fields, and their hex form then fills
/// [`MAX_FIELD_BYTES`].
pub const MAX_DIGEST_BYTES: usize = MAX_FIELD_BYTES / 2;

/// Maximum length of a checkpoint signature: an RSA-8192 signature, twice
/// the largest key that Hallmark generates.
pub const MAX_SIGNATURE_BYTES: usize = 1024;

/// Maximum length of a serialized record, without its newline. The field
/// limits keep every valid record below it, even when every character
/// needs a six-byte `\u00XX` escape, so a longer line is never a record.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// First line of every checkpoint statement; the version changes if the
/// statement's form ever does.
pub const CHECKPOINT_STATEMENT_TAG: &str = "hallmark-audit-checkpoint/v1";

/// The gRPC code names written as a sign record's `outcome`, as the gRPC
/// status code documentation spells them.
const CODE_NAMES: [(Code, &str); 17] = [
    (Code::Ok, "OK"),
    (Code::Cancelled, "CANCELLED"),
    (Code::Unknown, "UNKNOWN"),
    (Code::InvalidArgument, "INVALID_ARGUMENT"),
    (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
    (Code::NotFound, "NOT_FOUND"),
    (Code::AlreadyExists, "ALREADY_EXISTS"),
    (Code::PermissionDenied, "PERMISSION_DENIED"),
    (Code::ResourceExhausted, "RESOURCE_EXHAUSTED"),
    (Code::FailedPrecondition, "FAILED_PRECONDITION"),
    (Code::Aborted, "ABORTED"),
    (Code::OutOfRange, "OUT_OF_RANGE"),
    (Code::Unimplemented, "UNIMPLEMENTED"),
    (Code::Internal, "INTERNAL"),
    (Code::Unavailable, "UNAVAILABLE"),
    (Code::DataLoss, "DATA_LOSS"),
    (Code::Unauthenticated, "UNAUTHENTICATED"),
];

/// Returns the upper-case name of a gRPC code, such as `PERMISSION_DENIED`.
pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES
        .iter()
        .find(|(known, _)| *known == code)
        .map_or("UNKNOWN", |(_, name)| name)
}

/// Parses an upper-case gRPC code name written by [`code_name`].
pub fn parse_code_name(name: &str) -> Option<Code> {
    CODE_NAMES
        .iter()
        .find(|(_, known)| *known == name)
        .map(|(code, _)| *code)
}

/// A SHA-256 hash that links a record to the line before it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The `prev` of the first record of a log: 32 zero bytes.
    pub const GENESIS: Self = Self([0; 32]);

    /// Hashes a serialized record, without its trailing newline.
    pub fn of_line(line: &[u8]) -> Self {
        Self(Sha256::digest(line).into())
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        decode_lower_hex(text)?.try_into().ok().map(Self)
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_hex(&self.0))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

/// The hash function that produced a signed digest, as the request named it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-256, a 32-byte digest.
    Sha256,
    /// SHA-384, a 48-byte digest.
    Sha384,
}

impl HashAlgorithm {
    /// Returns the name written in records: `sha256` or `sha384`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Sha256, Self::Sha384]
            .into_iter()
            .find(|algorithm| algorithm.as_str() == text)
    }
}

/// One Sign request and its result, as the caller reports it. Failed and
/// denied requests are recorded too, so any key field may be empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignEvent {
    /// The authenticated caller's identity, or empty when there is none.
    pub caller: String,
    /// The key name the request resolved to, or as the client sent it.
    pub key_name: String,
    /// The key ID of the version that signed, or empty.
    pub key_id: String,
    /// The version number that signed, or 0.
    pub key_version: u32,
    /// The digest the client sent.
    pub digest: Vec<u8>,
    /// The digest's hash function, or `None` when the request named none
    /// that the service accepts.
    pub hash_algorithm: Option<HashAlgorithm>,
    /// The client's request ID, possibly empty.
    pub request_id: String,
    /// The gRPC code returned to the client.
    pub outcome: Code,
}

impl SignEvent {
    /// Cuts every text field to [`MAX_FIELD_BYTES`] and the digest to
    /// [`MAX_DIGEST_BYTES`], keeping whole UTF-8 characters.
    pub fn truncate_to_limits(&mut self) {
        for text in [
            &mut self.caller,
            &mut self.key_name,
            &mut self.key_id,
            &mut self.request_id,
        ] {
            let end = char_boundary_at_or_below(text, MAX_FIELD_BYTES);
            text.truncate(end);
        }
        self.digest.truncate(MAX_DIGEST_BYTES);
    }

    fn check_limits(&self) -> Result<(), String> {
        let fields = [
            ("caller", &self.caller),
            ("key_name", &self.key_name),
            ("key_id", &self.key_id),
            ("request_id", &self.request_id),
        ];
        for (name, text) in fields {
            if text.len() > MAX_FIELD_BYTES {
                return Err(format!("{name} is longer than {MAX_FIELD_BYTES} bytes"));
            }
        }
        if self.digest.len() > MAX_DIGEST_BYTES {
            return Err(format!("digest is longer than {MAX_DIGEST_BYTES} bytes"));
        }
        Ok(())
    }
}

/// A checkpoint signature and the key version that made it, as the
/// checkpoint's signing function returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSignature {
    /// The key ID of the signing version.
    pub key_id: String,
    /// The version number, or 0 when unknown.
    pub key_version: u32,
    /// The signature algorithm.
    pub algorithm: Algorithm,
    /// The signature over [`CheckpointStatement::digest_for`] of the
    /// algorithm.
    pub signature: Vec<u8>,
    /// The ECDSA signature encoding; ignored for other algorithms.
    pub encoding: SignatureEncoding,
}

/// The body of a checkpoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The number of records before the checkpoint: its `seq` minus one.
    pub records: u64,
    /// The hash of the line before the checkpoint, equal to its `prev`.
    pub head: ChainHash,
    /// The signature over the checkpoint statement.
    pub signature: CheckpointSignature,
}

impl Checkpoint {
    /// Returns the statement that the checkpoint at `seq` and `time` signs.
    pub fn statement(&self, seq: u64, time: SystemTime) -> CheckpointStatement {
        CheckpointStatement {
            seq,
            time,
            records: self.records,
            head: self.head,
        }
    }
}

/// The statement that a checkpoint signs. Its text is, with each line
/// ending in `\n`:
///
/// ```text
/// hallmark-audit-checkpoint/v1
/// seq=SEQ
/// time=TIME
/// records=RECORDS
/// head=HEAD
/// ```
///
/// `SEQ` is the checkpoint record's own `seq` and `RECORDS` the number of
/// records before it, both in decimal. `TIME` is the record's `time` and
/// `HEAD` the lowercase hex SHA-256 of the line before it (64 zeros when
/// there is none). The signature covers the digest of this text that the
/// key's algorithm signs; see [`CheckpointStatement::digest_for`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointStatement {
    /// The checkpoint record's `seq`.
    pub seq: u64,
    /// The checkpoint record's `time`.
    pub time: SystemTime,
    /// The number of records before the checkpoint.
    pub records: u64,
    /// The hash of the last record before the checkpoint.
    pub head: ChainHash,
}

impl CheckpointStatement {
    /// Returns the statement's text.
    pub fn text(&self) -> String {
        format!(
            "{CHECKPOINT_STATEMENT_TAG}\nseq={}\ntime={}\nrecords={}\nhead={}\n",
            self.seq,
            format_rfc3339(self.time),
            self.records,
            self.head
        )
    }

    /// Returns the SHA-256 digest of the text.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.text()).into()
    }

    /// Returns the digest of the text that `algorithm` signs: SHA-384 for
    /// `ecdsa-p384-sha384` and SHA-256 for every other algorithm, the same
    /// rule as for signed outputs.
    pub fn digest_for(&self, algorithm: Algorithm) -> Vec<u8> {
        match algorithm {
            Algorithm::EcdsaP384Sha384 => Sha384::digest(self.text()).to_vec(),
            _ => self.sha256().to_vec(),
        }
    }
}

/// The content of a record: a sign event or a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A Sign request, `"kind": "sign"`.
    Sign(SignEvent),
    /// A signed checkpoint, `"kind": "checkpoint"`.
    Checkpoint(Checkpoint),
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in the log, from 1, without gaps across files.
    pub seq: u64,
    /// When the writer serialized the record, to the microsecond.
    pub time: SystemTime,
    /// The hash of the previous line, or [`ChainHash::GENESIS`] for seq 1.
    pub prev: ChainHash,
    /// The record's content.
    pub body: Body,
}

/// Sign record fields, in the order they are written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignLine {
    seq: u64,
    time: String,
    kind: String,
    prev: String,
    caller: String,
    key_name: String,
    key_id: String,
    key_version: u32,
    digest: String,
    hash_algorithm: String,
    request_id: String,
    outcome: String,
}

/// Checkpoint record fields, in the order they are written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    seq: u64,
    time: String,
    kind: String,
    prev: String,
    records: u64,
    head: String,
    key_id: String,
    key_version: u32,
    algorithm: String,
    signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature_encoding: Option<String>,
}

/// The one field read before the rest, to choose the record's form.
#[derive(Deserialize)]
struct KindField {
    kind: String,
}

impl Record {
    /// Returns the record's `kind`: `sign` or `checkpoint`.
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Sign(_) => "sign",
            Body::Checkpoint(_) => "checkpoint",
        }
    }

    /// Serializes the record as one line of JSON without a newline.
    pub fn to_line(&self) -> String {
        let (seq, time, kind) = (self.seq, format_rfc3339(self.time), self.kind().to_owned());
        let prev = self.prev.to_string();
        let serialized = match &self.body {
            Body::Sign(event) => serde_json::to_string(&SignLine {
                seq,
                time,
                kind,
                prev,
                caller: event.caller.clone(),
                key_name: event.key_name.clone(),
                key_id: event.key_id.clone(),
                key_version: event.key_version,
                digest: encode_hex(&event.digest),
                hash_algorithm: event
                    .hash_algorithm
                    .map_or("", HashAlgorithm::as_str)
                    .into(),
                request_id: event.request_id.clone(),
                outcome: code_name(event.outcome).into(),
            }),
            Body::Checkpoint(checkpoint) => {
                let signed = &checkpoint.signature;
                serde_json::to_string(&CheckpointLine {
                    seq,
                    time,
                    kind,
                    prev,
                    records: checkpoint.records,
                    head: checkpoint.head.to_string(),
                    key_id: signed.key_id.clone(),
                    key_version: signed.key_version,
                    algorithm: signed.algorithm.as_str().into(),
                    signature: encode_hex(&signed.signature),
                    signature_encoding: signed
                        .algorithm
                        .is_ecdsa()
                        .then(|| encoding_name(signed.encoding).into()),
                })
            }
        };
        // serde_json 1.0 documents that to_string fails only when a
        // Serialize impl fails or a map has non-string keys. These derived
        // structs of strings and integers have neither.
        serialized.expect("an audit record always serializes")
    }

    /// Parses one line, without its newline. The line must be exactly what
    /// [`Record::to_line`] writes for the parsed record.
    ///
    /// # Errors
    ///
    /// A message saying what is wrong with the line.
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let kind: KindField =
            serde_json::from_slice(line).map_err(|e| format!("not an audit record: {e}"))?;
        let record = match kind.kind.as_str() {
            "sign" => {
                let fields = serde_json::from_slice(line)
                    .map_err(|e| format!("not a valid sign record: {e}"))?;
                sign_record(fields)?
            }
            "checkpoint" => {
                let fields = serde_json::from_slice(line)
                    .map_err(|e| format!("not a valid checkpoint record: {e}"))?;
                checkpoint_record(fields)?
            }
            other => return Err(format!("unknown record kind {other:?}")),
        };
        if record.to_line().as_bytes() != line {
            return Err(
                "the line is not in canonical form: its spacing, field order or number and \
                 string forms differ from what the writer produces"
                    .into(),
            );
        }
        Ok(record)
    }
}

fn sign_record(fields: SignLine) -> Result<Record, String> {
    let hash_algorithm = match fields.hash_algorithm.as_str() {
        "" => None,
        name => Some(
            HashAlgorithm::parse(name)
                .ok_or_else(|| format!("hash_algorithm {name:?} is not sha256 or sha384"))?,
        ),
    };
    let event = SignEvent {
        caller: fields.caller,
        key_name: fields.key_name,
        key_id: fields.key_id,
        key_version: fields.key_version,
        digest: decode_field("digest", &fields.digest)?,
        hash_algorithm,
        request_id: fields.request_id,
        outcome: parse_code_name(&fields.outcome)
            .ok_or_else(|| format!("outcome {:?} is not a gRPC code name", fields.outcome))?,
    };
    event.check_limits()?;
    Ok(Record {
        seq: check_seq(fields.seq)?,
        time: parse_rfc3339(&fields.time).map_err(|e| format!("time: {e}"))?,
        prev: hash_field("prev", &fields.prev)?,
        body: Body::Sign(event),
    })
}

fn checkpoint_record(fields: CheckpointLine) -> Result<Record, String> {
    let algorithm = Algorithm::parse(&fields.algorithm).map_err(|e| e.to_string())?;
    let encoding = match (algorithm.is_ecdsa(), fields.signature_encoding.as_deref()) {
        (true, Some("der")) => SignatureEncoding::Der,
        (true, Some("p1363")) => SignatureEncoding::P1363,
        (true, Some(other)) => {
            return Err(format!("signature_encoding {other:?} is not der or p1363"));
        }
        (true, None) => return Err(format!("a {algorithm} checkpoint needs signature_encoding")),
        (false, None) => SignatureEncoding::Der,
        (false, Some(_)) => {
            return Err(format!("signature_encoding does not apply to {algorithm}"));
        }
    };
    let signature = decode_field("signature", &fields.signature)?;
    if signature.is_empty() || signature.len() > MAX_SIGNATURE_BYTES {
        return Err(format!(
            "signature must be 1 to {MAX_SIGNATURE_BYTES} bytes, not {}",
            signature.len()
        ));
    }
    if fields.key_id.is_empty() || fields.key_id.len() > MAX_FIELD_BYTES {
        return Err(format!("key_id must be 1 to {MAX_FIELD_BYTES} bytes"));
    }
    let checkpoint = Checkpoint {
        records: fields.records,
        head: hash_field("head", &fields.head)?,
        signature: CheckpointSignature {
            key_id: fields.key_id,
            key_version: fields.key_version,
            algorithm,
            signature,
            encoding,
        },
    };
    Ok(Record {
        seq: check_seq(fields.seq)?,
        time: parse_rfc3339(&fields.time).map_err(|e| format!("time: {e}"))?,
        prev: hash_field("prev", &fields.prev)?,
        body: Body::Checkpoint(checkpoint),
    })
}

fn check_seq(seq: u64) -> Result<u64, String> {
    if seq == 0 {
        return Err("seq 0 is invalid; the first record has seq 1".into());
    }
    Ok(seq)
}

fn hash_field(name: &str, text: &str) -> Result<ChainHash, String> {
    ChainHash::from_hex(text).ok_or_else(|| format!("{name} is not 64 lowercase hex digits"))
}

fn decode_field(name: &str, text: &str) -> Result<Vec<u8>, String> {
    decode_lower_hex(text).ok_or_else(|| format!("{name} is not lowercase hex of whole bytes"))
}

/// Returns the name of an ECDSA signature encoding, as signed outputs
/// write it.
pub(super) fn encoding_name(encoding: SignatureEncoding) -> &'static str {
    match encoding {
        SignatureEncoding::Der => "der",
        SignatureEncoding::P1363 => "p1363",
    }
}

/// Decodes lowercase hex of whole bytes; the empty text is zero bytes.
fn decode_lower_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Returns the largest index at most `max` that starts a UTF-8 character,
/// or the text's length when it is shorter.
fn char_boundary_at_or_below(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn event() -> SignEvent {
        SignEvent {
            caller: "spiffe://ml/scorer".into(),
            key_name: "fraud-model".into(),
            key_id: "kid-1".into(),
            key_version: 3,
            digest: vec![0xab; 32],
            hash_algorithm: Some(HashAlgorithm::Sha256),
            request_id: "req-1".into(),
            outcome: Code::Ok,
        }
    }

    fn at_micros(micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(micros)
    }

    #[test]
    fn sign_record_has_fixed_field_order() {
        let record = Record {
            seq: 7,
            time: at_micros(1_780_000_000_123_456),
            prev: ChainHash::GENESIS,
            body: Body::Sign(event()),
        };
        let expected = format!(
            "{{\"seq\":7,\"time\":\"2026-05-28T20:26:40.123456Z\",\"kind\":\"sign\",\
             \"prev\":\"{}\",\"caller\":\"spiffe://ml/scorer\",\"key_name\":\"fraud-model\",\
             \"key_id\":\"kid-1\",\"key_version\":3,\"digest\":\"{}\",\
             \"hash_algorithm\":\"sha256\",\"request_id\":\"req-1\",\"outcome\":\"OK\"}}",
            "0".repeat(64),
            "ab".repeat(32)
        );
        assert_eq!(record.to_line(), expected);
        assert_eq!(Record::parse(expected.as_bytes()), Ok(record));
    }

    #[test]
    fn denied_record_with_empty_fields_round_trips() {
        let record = Record {
            seq: 1,
            time: at_micros(1),
            prev: ChainHash::of_line(b"x"),
            body: Body::Sign(SignEvent {
                caller: String::new(),
                key_name: "nope\"\n".into(),
                key_id: String::new(),
                key_version: 0,
                digest: Vec::new(),
                hash_algorithm: None,
                request_id: String::new(),
                outcome: Code::PermissionDenied,
            }),
        };
        let line = record.to_line();
        assert!(!line.contains('\n'), "control characters are escaped");
        assert!(line.contains("\"outcome\":\"PERMISSION_DENIED\""));
        assert_eq!(Record::parse(line.as_bytes()), Ok(record));
    }

    #[test]
    fn checkpoint_record_round_trips() {
        let checkpoint = |algorithm| Record {
            seq: 5,
            time: at_micros(2),
            prev: ChainHash([1; 32]),
            body: Body::Checkpoint(Checkpoint {
                records: 4,
                head: ChainHash([1; 32]),
                signature: CheckpointSignature {
                    key_id: "kid".into(),
                    key_version: 2,
                    algorithm,
                    signature: vec![9; 64],
                    encoding: SignatureEncoding::P1363,
                },
            }),
        };
        let ecdsa = checkpoint(Algorithm::EcdsaP256Sha256);
        let line = ecdsa.to_line();
        assert!(line.ends_with(",\"signature_encoding\":\"p1363\"}"));
        assert_eq!(Record::parse(line.as_bytes()), Ok(ecdsa));

        // Other algorithms have one encoding, so the field is left out.
        let mut ed25519 = checkpoint(Algorithm::Ed25519);
        let line = ed25519.to_line();
        assert!(!line.contains("signature_encoding"));
        if let Body::Checkpoint(c) = &mut ed25519.body {
            c.signature.encoding = SignatureEncoding::Der;
        }
        assert_eq!(Record::parse(line.as_bytes()), Ok(ed25519));
    }

    #[test]
    fn non_canonical_lines_are_rejected() {
        let record = Record {
            seq: 1,
            time: at_micros(3),
            prev: ChainHash::GENESIS,
            body: Body::Sign(event()),
        };
        let line = record.to_line();
        let spaced = line.replace(",\"kind\"", ", \"kind\"");
        let upper = line.replace(&"ab".repeat(32), &"AB".repeat(32));
        let extra = line.replace("}", ",\"note\":1}");
        let repeated = line.replace("}", ",\"outcome\":\"OK\"}");
        let short_time = line.replace(".000003Z", "Z");
        for bad in [spaced, upper, extra, repeated, short_time] {
            assert!(Record::parse(bad.as_bytes()).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn invalid_field_values_are_rejected() {
        let line = Record {
            seq: 1,
            time: at_micros(4),
            prev: ChainHash::GENESIS,
            body: Body::Sign(event()),
        }
        .to_line();
        let cases = [
            line.replace("\"seq\":1", "\"seq\":0"),
            line.replace("\"OK\"", "\"FINE\""),
            line.replace("\"sha256\"", "\"md5\""),
            line.replace("\"sign\"", "\"note\""),
            line.replace(&"0".repeat(64), &"0".repeat(63)),
        ];
        for bad in cases {
            assert!(Record::parse(bad.as_bytes()).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn long_fields_are_cut_at_character_boundaries() {
        let mut event = event();
        event.caller = "é".repeat(MAX_FIELD_BYTES);
        event.digest = vec![1; MAX_DIGEST_BYTES + 1];
        event.truncate_to_limits();
        assert_eq!(event.caller.len(), MAX_FIELD_BYTES);
        assert_eq!(event.digest.len(), MAX_DIGEST_BYTES);

        event.caller = format!("a{}", "é".repeat(MAX_FIELD_BYTES));
        event.truncate_to_limits();
        assert_eq!(event.caller.len(), MAX_FIELD_BYTES - 1);
        assert!(event.check_limits().is_ok());
    }

    #[test]
    fn largest_record_fits_the_line_limit() {
        let mut event = event();
        // U+0001 is escaped as \u0001, six bytes for one.
        let worst = "\u{1}".repeat(MAX_FIELD_BYTES);
        event.caller = worst.clone();
        event.key_name = worst.clone();
        event.key_id = worst.clone();
        event.request_id = worst;
        event.digest = vec![0xff; MAX_DIGEST_BYTES];
        let line = Record {
            seq: u64::MAX,
            time: at_micros(5),
            prev: ChainHash::GENESIS,
            body: Body::Sign(event),
        }
        .to_line();
        assert!(line.len() < MAX_LINE_BYTES, "{} bytes", line.len());
    }

    #[test]
    fn statement_text_is_stable() {
        let statement = CheckpointStatement {
            seq: 10,
            time: at_micros(1_780_000_000_000_001),
            records: 9,
            head: ChainHash([0x11; 32]),
        };
        assert_eq!(
            statement.text(),
            format!(
                "hallmark-audit-checkpoint/v1\nseq=10\ntime=2026-05-28T20:26:40.000001Z\n\
                 records=9\nhead={}\n",
                "11".repeat(32)
            )
        );
        assert_eq!(statement.digest_for(Algorithm::EcdsaP256Sha256).len(), 32);
        assert_eq!(statement.digest_for(Algorithm::EcdsaP384Sha384).len(), 48);
    }

    #[test]
    fn code_names_round_trip() {
        for (code, name) in CODE_NAMES {
            assert_eq!(code_name(code), name);
            assert_eq!(parse_code_name(name), Some(code));
        }
        assert_eq!(parse_code_name("ok"), None);
    }
}
