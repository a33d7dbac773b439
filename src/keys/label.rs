//! The CKA_LABEL encoding that stores a key version's lifecycle in the token.
//!
//! A complete key version's private and public objects both carry a label of
//! the form
//!
//! ```text
//! hallmark1;name=<key name>;version=<n>;state=<state>;alg=<algorithm>[;salt=<bytes>];created=<unix seconds>[;activates=<unix seconds>][;retired=<unix seconds>][;revoked=<unix seconds>]
//! ```
//!
//! and a CKA_ID equal to the 32-byte RFC 7638 thumbprint of the public key.
//! The token therefore contains everything needed to rebuild every key version,
//! its state and its timestamps after a restart with an empty disk.
//!
//! Key generation first writes a pending label, `hallmark1-pending;...` with
//! the same fields, and a random CKA_ID. Only after the ID is set to the
//! thumbprint does the label become final, so a crash in between leaves an
//! object that is recognisably incomplete and never signs.
//!
//! Fields are `;`-separated `key=value` pairs. Readers ignore fields they do
//! not know, so later versions can add fields without breaking older ones.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::algorithm::Algorithm;
use super::{KeyName, KeyState};

/// Prefix of every complete key version label.
pub const PREFIX: &str = "hallmark1;";
/// Prefix of labels written during key generation.
pub const PENDING_PREFIX: &str = "hallmark1-pending;";
/// Prefix shared by complete and pending labels.
pub const ANY_PREFIX: &str = "hallmark1";

/// The lifecycle fields stored in a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLabel {
    /// Key name.
    pub name: KeyName,
    /// Version number, from 1.
    pub version: u32,
    /// Lifecycle state.
    pub state: KeyState,
    /// Signature algorithm. Labels written before this field existed lack
    /// it, and then the key type decides: RSA keys sign with RSA-PSS.
    pub algorithm: Option<Algorithm>,
    /// PSS salt length in bytes, for RSA-PSS versions. Stored so that a
    /// version keeps its salt when the configuration changes. Labels
    /// without it take the configured salt.
    pub salt: Option<u32>,
    /// Generation time, whole seconds.
    pub created: SystemTime,
    /// When the version starts, or started, to sign. Labels written before
    /// this field existed lack it, and then the creation time applies.
    pub activates: Option<SystemTime>,
    /// When the version stopped signing, for retired versions.
    pub retired: Option<SystemTime>,
    /// When the version was revoked.
    pub revoked: Option<SystemTime>,
}

/// The kind of object that a Hallmark label marks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete key version.
    Complete(KeyLabel),
    /// A key pair whose generation did not finish.
    Pending(KeyLabel),
}

impl KeyLabel {
    /// Encodes the final label.
    pub fn encode(&self) -> String {
        self.encode_with(PREFIX)
    }

    /// Encodes the label written while the key is being generated.
    pub fn encode_pending(&self) -> String {
        self.encode_with(PENDING_PREFIX)
    }

    fn encode_with(&self, prefix: &str) -> String {
        let mut text = format!(
            "{prefix}name={};version={};state={}",
            self.name,
            self.version,
            self.state.as_str(),
        );
        if let Some(algorithm) = self.algorithm {
            text.push_str(&format!(";alg={algorithm}"));
        }
        if let Some(salt) = self.salt {
            text.push_str(&format!(";salt={salt}"));
        }
        text.push_str(&format!(";created={}", unix_seconds(self.created)));
        for (key, time) in [
            ("activates", self.activates),
            ("retired", self.retired),
            ("revoked", self.revoked),
        ] {
            if let Some(time) = time {
                text.push_str(&format!(";{key}={}", unix_seconds(time)));
            }
        }
        text
    }

    /// Parses a label. Returns `Ok(None)` for labels without the Hallmark
    /// prefix, which belong to other applications.
    pub fn parse(label: &str) -> Result<Option<Parsed>, String> {
        let (fields, pending) = if let Some(rest) = label.strip_prefix(PREFIX) {
            (rest, false)
        } else if let Some(rest) = label.strip_prefix(PENDING_PREFIX) {
            (rest, true)
        } else {
            return Ok(None);
        };

        let mut name = None;
        let mut version = None;
        let mut state = None;
        let mut created = None;
        let mut algorithm = None;
        let mut salt = None;
        let mut activates = None;
        let mut retired = None;
        let mut revoked = None;
        for field in fields.split(';') {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("field {field:?} is not key=value"))?;
            match key {
                "name" => name = Some(KeyName::parse(value)?),
                "version" => version = Some(parse_number(key, value)?),
                "state" => {
                    state = Some(
                        KeyState::parse(value).ok_or_else(|| format!("unknown state {value:?}"))?,
                    )
                }
                "alg" => algorithm = Some(Algorithm::parse(value).map_err(|e| e.to_string())?),
                "salt" => salt = Some(parse_number(key, value)?),
                "created" => created = Some(parse_time(key, value)?),
                "activates" => activates = Some(parse_time(key, value)?),
                "retired" => retired = Some(parse_time(key, value)?),
                "revoked" => revoked = Some(parse_time(key, value)?),
                _ => {}
            }
        }
        let missing = |what: &str| format!("missing field {what}");
        let label = KeyLabel {
            name: name.ok_or_else(|| missing("name"))?,
            version: version
                .filter(|v| *v > 0)
                .ok_or_else(|| missing("version (a number from 1)"))?,
            state: state.ok_or_else(|| missing("state"))?,
            algorithm,
            salt,
            created: created.ok_or_else(|| missing("created"))?,
            activates,
            retired,
            revoked,
        };
        Ok(Some(if pending {
            Parsed::Pending(label)
        } else {
            Parsed::Complete(label)
        }))
    }
}

/// Seconds since the Unix epoch, or 0 for earlier times.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_number(key: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("field {key}={value:?} is not a whole number"))
}

fn parse_time(key: &str, value: &str) -> Result<SystemTime, String> {
    let seconds: u64 = value
        .parse()
        .map_err(|_| format!("field {key}={value:?} is not Unix seconds"))?;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(seconds))
        .ok_or_else(|| format!("field {key}={value:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyLabel {
        KeyLabel {
            name: KeyName::parse("default").expect("valid"),
            version: 3,
            state: KeyState::Retired,
            algorithm: Some(Algorithm::EcdsaP256Sha256),
            salt: None,
            created: UNIX_EPOCH + Duration::from_secs(1_765_000_000),
            activates: Some(UNIX_EPOCH + Duration::from_secs(1_765_000_100)),
            retired: Some(UNIX_EPOCH + Duration::from_secs(1_765_086_400)),
            revoked: None,
        }
    }

    #[test]
    fn label_round_trips() {
        let label = sample();
        let text = label.encode();
        assert_eq!(
            text,
            "hallmark1;name=default;version=3;state=retired;alg=ecdsa-p256-sha256;\
             created=1765000000;activates=1765000100;retired=1765086400"
        );
        assert_eq!(
            KeyLabel::parse(&text),
            Ok(Some(Parsed::Complete(label.clone())))
        );
        assert_eq!(
            KeyLabel::parse(&label.encode_pending()),
            Ok(Some(Parsed::Pending(label)))
        );
    }

    #[test]
    fn foreign_labels_are_ignored() {
        assert_eq!(KeyLabel::parse("my-other-app-key"), Ok(None));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let text = "hallmark1;name=a;version=1;state=active;created=5;future=x";
        let Ok(Some(Parsed::Complete(label))) = KeyLabel::parse(text) else {
            panic!("{text} did not parse");
        };
        assert_eq!(label.version, 1);
    }

    #[test]
    fn broken_labels_are_errors() {
        for text in [
            "hallmark1;name=a;version=0;state=active;created=5",
            "hallmark1;name=a;state=active;created=5",
            "hallmark1;name=a;version=1;state=lost;created=5",
            "hallmark1;name=A;version=1;state=active;created=5",
            "hallmark1;name=a;version=1;state=active;created=soon",
            "hallmark1;garbage",
        ] {
            assert!(KeyLabel::parse(text).is_err(), "{text} parsed");
        }
    }
}
