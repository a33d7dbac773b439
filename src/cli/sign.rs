//! `hallmark sign`: canonicalize manifests, have a running Hallmark sign
//! their digests, and print the signed outputs.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use sha2::{Digest as _, Sha256, Sha384};
use tonic::Code;
use tonic::transport::Channel;

use super::client::{ENV_TARGET, Target, block_on};
use super::input::{EXIT_DATA, Input, read_documents};
use super::{EXIT_CONFIG, EXIT_IO, EXIT_UNAVAILABLE, output};
use crate::canon::{Profile, canonicalize};
use crate::config::{DEFAULT_LISTEN, parse_duration};
use crate::pb;
use crate::pb::signer_service_client::SignerServiceClient;
use crate::verify::algorithm::{self, Algorithm, SignatureEncoding, VerifyingKey};
use crate::verify::{NewSignedOutput, format_rfc3339, parse_rfc3339};
use serde_json::Value;

/// Exit code when the server's policy does not let this caller sign
/// (sysexits EX_NOPERM).
pub const EXIT_NO_PERMISSION: u8 = 77;

/// Options of `hallmark sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// A manifest (a JSON object), or JSON lines of them; `-` reads
    /// standard input.
    #[arg(long, value_name = "FILE")]
    pub manifest: Input,
    /// The Hallmark server: unix:PATH or HOST:PORT.
    #[arg(long, env = ENV_TARGET, default_value = DEFAULT_LISTEN)]
    pub target: String,
    /// Key name to sign with; defaults to the server's default key.
    #[arg(long)]
    pub key: Option<String>,
    /// Canonical serialization to sign.
    #[arg(long, value_enum, default_value_t = CanonArg::Jcs)]
    pub canonicalization: CanonArg,
    /// Encoding of ECDSA signatures.
    #[arg(long, value_enum, default_value_t = EncodingArg::Der)]
    pub signature_encoding: EncodingArg,
    /// Deadline of each call, such as 10s.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// Manifest field that must hold the output's RFC 3339 timestamp,
    /// which verifiers check freshness against.
    #[arg(long, default_value = crate::verify::DEFAULT_TIMESTAMP_FIELD)]
    pub timestamp_field: String,
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("{text:?} must be longer than zero")),
        duration => Ok(duration),
    }
}

/// Canonicalization names on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CanonArg {
    /// RFC 8785, the JSON Canonicalization Scheme.
    Jcs,
    /// Python's `json.dumps(obj, sort_keys=True)`.
    PythonSortKeys,
}

/// ECDSA signature encodings on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EncodingArg {
    /// ASN.1 DER.
    Der,
    /// IEEE P1363, `r || s`.
    P1363,
}

/// A failure that ends the command, with its exit code.
struct Failure {
    message: String,
    exit: u8,
}

impl Failure {
    fn new(exit: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit,
        }
    }
}

/// Runs `hallmark sign`.
pub fn run(args: &SignArgs) -> ExitCode {
    let manifests = match read_documents(&args.manifest) {
        Ok(manifests) => manifests,
        Err(exit) => return exit,
    };
    let profile = match args.canonicalization {
        CanonArg::Jcs => Profile::Jcs,
        CanonArg::PythonSortKeys => Profile::PythonSortKeys,
    };
    // Every manifest is checked before the first call, so that a bad line
    // does not leave half the input signed.
    let mut messages = Vec::with_capacity(manifests.len());
    for (line, text) in &manifests {
        if !text.trim_start().starts_with('{') {
            stderr_line!("error: line {line}: a manifest must be a JSON object");
            return ExitCode::from(EXIT_DATA);
        }
        let checked = canonicalize(text, profile)
            .map_err(|e| e.to_string())
            .and_then(|message| {
                check_timestamp(text, &args.timestamp_field)?;
                Ok(message)
            });
        match checked {
            Ok(message) => messages.push(message),
            Err(error) => {
                stderr_line!("error: line {line}: the manifest cannot be signed: {error}");
                return ExitCode::from(EXIT_DATA);
            }
        }
    }
    let target = match Target::parse(&args.target) {
        Ok(target) => target,
        Err(error) => {
            stderr_line!("error: --target {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result =
        block_on(sign_all(args, &target, profile, &manifests, &messages)).unwrap_or_else(|e| {
            Err(Failure::new(
                EXIT_IO,
                format!("cannot start the async runtime: {e}"),
            ))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            stderr_line!("error: {}", failure.message);
            ExitCode::from(failure.exit)
        }
    }
}

/// Checks that a manifest has the timestamp that verifiers require, since
/// an output without one can be signed but never verified.
fn check_timestamp(manifest: &str, field: &str) -> Result<(), String> {
    let members: BTreeMap<String, Value> =
        serde_json::from_str(manifest).map_err(|e| format!("it is not a JSON object: {e}"))?;
    match members.get(field) {
        Some(Value::String(text)) => parse_rfc3339(text).map(|_| ()),
        Some(other) => Err(format!(
            "its {field:?} field must be an RFC 3339 string, not {other}"
        )),
        None => Err(format!(
            "it has no {field:?} field; verifiers check freshness against an RFC 3339 \
             timestamp there (choose another field with --timestamp-field)"
        )),
    }
}

async fn sign_all(
    args: &SignArgs,
    target: &Target,
    profile: Profile,
    manifests: &[(usize, String)],
    messages: &[Vec<u8>],
) -> Result<(), Failure> {
    let mut client = target.connect(args.timeout).await.map_err(|e| {
        Failure::new(
            EXIT_UNAVAILABLE,
            format!("cannot connect to {}: {e}", args.target),
        )
    })?;
    let key_name = args.key.clone().unwrap_or_default();
    let listed = list_keys(&mut client).await?;
    let mut hashes = candidate_hashes(&listed, &key_name);
    let mut public_keys = PublicKeys::default();
    public_keys.add(&listed);
    let encoding = match args.signature_encoding {
        EncodingArg::Der => SignatureEncoding::Der,
        EncodingArg::P1363 => SignatureEncoding::P1363,
    };
    let mut stdout = output::Stdout::lock();
    for ((line, text), message) in manifests.iter().zip(messages) {
        // Once the reader has closed stdout, no reader can receive another
        // signed output, so no more signatures are requested.
        if stdout.is_closed() {
            break;
        }
        let mut signed = sign_one(&mut client, &key_name, &hashes, message, encoding).await;
        // A rotation can move the key to an algorithm with another hash;
        // the server then rejects the digest, so look the hash up again.
        if matches!(&signed, Err(f) if f.exit == EXIT_DATA) && hashes.len() == 1 {
            let listed = list_keys(&mut client).await?;
            public_keys.add(&listed);
            hashes = candidate_hashes(&listed, &key_name);
            signed = sign_one(&mut client, &key_name, &hashes, message, encoding).await;
        }
        let signed =
            signed.map_err(|f| Failure::new(f.exit, format!("line {line}: {}", f.message)))?;
        check_response(&mut client, &mut public_keys, &signed)
            .await
            .map_err(|f| Failure::new(f.exit, format!("line {line}: {}", f.message)))?;
        let signed = signed.response;
        let key = signed.key.as_ref().ok_or_else(no_key)?;
        let algorithm = response_algorithm(key)?;
        let signed_at = signed
            .signed_at
            .and_then(|t| SystemTime::try_from(t).ok())
            .map(format_rfc3339)
            .unwrap_or_default();
        let document = NewSignedOutput {
            output: text,
            signature: &signed.signature,
            signing_key_id: &key.key_id,
            key_version: key.version,
            algorithm,
            canonicalization: profile,
            signed_at: &signed_at,
            signature_encoding: SignatureEncoding::from(signed.signature_encoding()),
        };
        writeln!(stdout, "{}", document.to_json())
            .map_err(|e| Failure::new(EXIT_IO, format!("cannot write the output: {e}")))?;
    }
    Ok(())
}

/// Public keys by key ID, from `ListKeys`: `Sign` responses name the key
/// version without its public key.
#[derive(Default)]
struct PublicKeys(HashMap<String, VerifyingKey>);

impl PublicKeys {
    /// Adds the keys of a `ListKeys` response whose ID is the thumbprint of
    /// their public key.
    fn add(&mut self, keys: &[pb::KeyVersion]) {
        for version in keys {
            if let Ok(key) = VerifyingKey::from_spki_der(&version.public_key_der)
                && key.key_id() == version.key_id
            {
                self.0.insert(version.key_id.clone(), key);
            }
        }
    }
}

async fn list_keys(
    client: &mut SignerServiceClient<Channel>,
) -> Result<Vec<pb::KeyVersion>, Failure> {
    client
        .list_keys(pb::ListKeysRequest {})
        .await
        .map(|response| response.into_inner().keys)
        .map_err(|status| rpc_failure("ListKeys", &status))
}

/// Returns the hashes to try for the key, in order: the one hash that the
/// key's ACTIVE versions (or every ACTIVE version, for the default key)
/// agree on, or SHA-256 and then SHA-384.
fn candidate_hashes(keys: &[pb::KeyVersion], key_name: &str) -> Vec<pb::HashAlgorithm> {
    let mut hashes: Vec<pb::HashAlgorithm> = keys
        .iter()
        .filter(|k| k.state == pb::KeyState::Active as i32)
        .filter(|k| key_name.is_empty() || k.key_name == key_name)
        .filter_map(|k| pb::SignatureAlgorithm::try_from(k.algorithm).ok())
        .filter_map(|a| Algorithm::try_from(a).ok())
        .map(Algorithm::hash_algorithm)
        .collect();
    hashes.sort_by_key(|h| *h as i32);
    hashes.dedup();
    if hashes.len() == 1 {
        return hashes;
    }
    vec![pb::HashAlgorithm::Sha256, pb::HashAlgorithm::Sha384]
}

/// Signs one canonical manifest, trying each hash until the server accepts
/// one, and checks that the response matches the request.
async fn sign_one(
    client: &mut SignerServiceClient<Channel>,
    key_name: &str,
    hashes: &[pb::HashAlgorithm],
    message: &[u8],
    encoding: SignatureEncoding,
) -> Result<Signed, Failure> {
    let mut last = None;
    for &hash in hashes {
        let digest = match hash {
            pb::HashAlgorithm::Sha384 => Sha384::digest(message).to_vec(),
            _ => Sha256::digest(message).to_vec(),
        };
        let request_id = new_request_id();
        let request = pb::SignRequest {
            digest: digest.clone(),
            hash_algorithm: hash as i32,
            key_name: key_name.to_owned(),
            request_id: request_id.clone(),
            signature_encoding: pb::SignatureEncoding::from(encoding) as i32,
        };
        match client.sign(request).await {
            Ok(response) => {
                let response = response.into_inner();
                if response.request_id != request_id {
                    return Err(protocol_break(format!(
                        "it echoes request_id {:?} instead of {request_id:?}",
                        response.request_id
                    )));
                }
                return Ok(Signed { response, digest });
            }
            Err(status) if status.code() == Code::InvalidArgument && hashes.len() > 1 => {
                last = Some(status);
            }
            Err(status) => return Err(rpc_failure("Sign", &status)),
        }
    }
    Err(last.map_or_else(no_key, |status| rpc_failure("Sign", &status)))
}

/// A `Sign` response with the digest it signed.
struct Signed {
    response: pb::SignResponse,
    digest: Vec<u8>,
}

fn protocol_break(problem: String) -> Failure {
    Failure::new(
        EXIT_UNAVAILABLE,
        format!("the server's response breaks the protocol: {problem}"),
    )
}

/// Checks that a signature verifies under the public key that `ListKeys`
/// publishes for the version it names, listing the keys again once for a
/// version created after the last listing.
async fn check_response(
    client: &mut SignerServiceClient<Channel>,
    public_keys: &mut PublicKeys,
    signed: &Signed,
) -> Result<(), Failure> {
    let key = signed.response.key.as_ref().ok_or_else(no_key)?;
    let algorithm = response_algorithm(key)?;
    if !public_keys.0.contains_key(&key.key_id) {
        public_keys.add(&list_keys(client).await?);
    }
    let public_key = public_keys
        .0
        .get(&key.key_id)
        .ok_or_else(|| protocol_break(format!("ListKeys does not publish key {}", key.key_id)))?;
    let salt = (algorithm == Algorithm::RsaPssSha256)
        .then(|| usize::try_from(key.pss_salt_length).unwrap_or(usize::MAX));
    algorithm::verify(
        public_key,
        algorithm,
        salt,
        &signed.digest,
        &signed.response.signature,
        SignatureEncoding::from(signed.response.signature_encoding()),
    )
    .map_err(|e| protocol_break(format!("the signature does not verify: {e}")))
}

fn response_algorithm(key: &pb::KeyVersion) -> Result<Algorithm, Failure> {
    pb::SignatureAlgorithm::try_from(key.algorithm)
        .ok()
        .and_then(|a| Algorithm::try_from(a).ok())
        .ok_or_else(|| {
            Failure::new(
                EXIT_UNAVAILABLE,
                format!(
                    "the server names unknown signature algorithm {}",
                    key.algorithm
                ),
            )
        })
}

fn no_key() -> Failure {
    Failure::new(
        EXIT_UNAVAILABLE,
        "the server's response names no key version",
    )
}

/// Maps a failed call to an exit code: a key name the server does not know
/// is a usage problem, rejected input is a data problem, and anything else
/// means the server cannot sign now.
fn rpc_failure(method: &str, status: &tonic::Status) -> Failure {
    let exit = match status.code() {
        Code::NotFound => EXIT_CONFIG,
        Code::PermissionDenied => EXIT_NO_PERMISSION,
        Code::InvalidArgument | Code::OutOfRange => EXIT_DATA,
        _ => EXIT_UNAVAILABLE,
    };
    Failure::new(
        exit,
        format!("{method} failed: {:?}: {}", status.code(), status.message()),
    )
}

/// Returns a request ID unique to this process and call, for matching the
/// server's logs and audit records.
fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("hallmark-cli-{}-{nanos:x}-{n}", std::process::id())
}
