//! The published key versions a verifier trusts, read from a JWKS document,
//! a `ListKeys` response or PEM public keys.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use tracing::warn;

use super::algorithm::{Algorithm, SHA256_LEN, VerifyingKey};
use super::time::parse_rfc3339;
use crate::pb;

/// Largest key set document read, in bytes.
pub const MAX_KEY_SET_BYTES: u64 = 1 << 20;

/// A failure to fetch or read a key set.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// The key set cannot be fetched or read.
    #[error("cannot read the key set from {source_name}: {reason}")]
    Unavailable {
        /// The location the key set was read from.
        source_name: String,
        /// The failure.
        reason: String,
    },
    /// The key set was read but is not a usable key set.
    #[error("the key set from {source_name} is invalid: {reason}")]
    Invalid {
        /// The location the key set was read from.
        source_name: String,
        /// The defect found.
        reason: String,
    },
}

/// The time span in which a key version's signatures are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// From `activates_at` to `verify_until`, as Hallmark publishes it.
    Window {
        /// When the version starts signing.
        activates_at: SystemTime,
        /// When verifiers stop accepting it.
        verify_until: SystemTime,
    },
    /// Always: a PEM key, whose validity the operator vouches for.
    Unbounded,
    /// The key set gives no window, so no output can be checked against it.
    Unknown,
}

/// One usable key version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKey {
    /// The key ID, as signed outputs name it.
    pub key_id: String,
    /// The key name, or empty when the key set does not give it.
    pub key_name: String,
    /// The version number, or 0 when the key set does not give it; a
    /// document's `key_version` is then not checked.
    pub version: u32,
    /// The signature algorithm that the key set states for the key.
    pub algorithm: Algorithm,
    /// The RSA-PSS salt length in bytes; `None` for other algorithms.
    pub pss_salt_length: Option<usize>,
    /// The time span in which signatures are accepted.
    pub validity: Validity,
    /// The public key.
    pub public_key: VerifyingKey,
}

/// A key set entry that cannot be used, kept so that a signature by it is
/// rejected with the reason instead of as an unknown key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnusableKey {
    /// The defect found in the entry.
    pub problem: String,
}

/// Key versions by key ID: usable ones, unusable entries and revoked IDs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    usable: BTreeMap<String, PublishedKey>,
    unusable: BTreeMap<String, UnusableKey>,
    /// Revoked key IDs, with the revocation time when known.
    revoked: BTreeMap<String, Option<String>>,
}

/// The result of looking up one key ID in a key set.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The key may verify.
    Usable(&'a PublishedKey),
    /// The entry exists but cannot be used.
    Unusable(&'a UnusableKey),
    /// The key is revoked, revoked at the given time when known.
    Revoked(Option<&'a str>),
    /// The key set does not name the key ID.
    Unknown,
}

/// The parameters of RSA public keys read from PEM, because PEM states no
/// algorithm. EC and Ed25519 keys each serve one algorithm and ignore it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PemParameters {
    /// The algorithm for RSA keys; RSA keys are refused without one.
    pub rsa_algorithm: Option<Algorithm>,
    /// The RSA-PSS salt length in bytes; defaults to 32, the SHA-256
    /// digest length and Hallmark's default.
    pub pss_salt_length: Option<usize>,
}

impl KeySet {
    /// Looks up `key_id` in the key set. A revoked ID wins over
    /// any other entry for it.
    pub fn lookup(&self, key_id: &str) -> Lookup<'_> {
        if let Some(revoked_at) = self.revoked.get(key_id) {
            return Lookup::Revoked(revoked_at.as_deref());
        }
        if let Some(key) = self.usable.get(key_id) {
            return Lookup::Usable(key);
        }
        match self.unusable.get(key_id) {
            Some(entry) => Lookup::Unusable(entry),
            None => Lookup::Unknown,
        }
    }

    /// Returns the usable key versions.
    pub fn keys(&self) -> impl Iterator<Item = &PublishedKey> {
        self.usable.values()
    }

    /// Returns the number of key IDs the set names, usable or not.
    pub fn len(&self) -> usize {
        self.usable.len() + self.unusable.len() + self.revoked.len()
    }

    /// Returns whether the set names no key ID.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a usable key, replacing any entry with its key ID.
    pub fn insert(&mut self, key: PublishedKey) {
        self.unusable.remove(&key.key_id);
        self.usable.insert(key.key_id.clone(), key);
    }

    /// Returns the key set reduced to the usable versions of one key name,
    /// with every revoked ID kept.
    pub fn only_key_name(&self, name: &str) -> Self {
        Self {
            usable: self
                .usable
                .iter()
                .filter(|(_, key)| key.key_name == name)
                .map(|(id, key)| (id.clone(), key.clone()))
                .collect(),
            unusable: BTreeMap::new(),
            revoked: self.revoked.clone(),
        }
    }

    /// Marks a key ID revoked.
    pub fn revoke(&mut self, key_id: &str, revoked_at: Option<String>) {
        self.revoked.insert(key_id.to_owned(), revoked_at);
    }

    /// Reads a key set from a JWKS URL (`http://`, `https://` or `file://`)
    /// or a file path. A file holding PEM is read with
    /// [`KeySet::from_pem`] and `pem`.
    pub fn fetch(
        location: &str,
        timeout: Duration,
        pem: PemParameters,
    ) -> Result<Self, KeySetError> {
        let text = read_location(location, timeout)?;
        if text.contains("-----BEGIN PUBLIC KEY-----") {
            return Self::from_pem(&text, pem, location);
        }
        let document: Value = serde_json::from_str(&text).map_err(|e| KeySetError::Invalid {
            source_name: location.to_owned(),
            reason: format!("not JSON ({e}) and not PEM"),
        })?;
        Self::from_jwks(&document, location)
    }

    /// Reads a Hallmark JWKS document: `keys` with Hallmark's lifecycle
    /// members, and the revoked key IDs in `hallmark_revoked`. `source_name`
    /// names the document in errors.
    ///
    /// An entry without a `kid` is skipped with a warning. An entry that is
    /// otherwise unusable is kept with its problem, so that a signature
    /// naming it fails with that problem.
    pub fn from_jwks(document: &Value, source_name: &str) -> Result<Self, KeySetError> {
        let invalid = |reason: &str| KeySetError::Invalid {
            source_name: source_name.to_owned(),
            reason: reason.to_owned(),
        };
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err(invalid(
                "expected a JWK Set: an object with a \"keys\" array",
            ));
        };
        let mut set = Self::default();
        for entry in entries {
            let Some(key_id) = entry
                .get("kid")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
            else {
                warn!(
                    source = source_name,
                    "ignoring a key set entry without a kid"
                );
                continue;
            };
            if set.usable.contains_key(key_id) || set.unusable.contains_key(key_id) {
                return Err(invalid(&format!("it lists kid {key_id} twice")));
            }
            match jwk_entry(key_id, entry) {
                Ok(key) => set.insert(key),
                Err(problem) => {
                    let problem = format!("the key set entry for {key_id} is unusable: {problem}");
                    set.unusable
                        .insert(key_id.to_owned(), UnusableKey { problem });
                }
            }
        }
        match document.get("hallmark_revoked") {
            None | Some(Value::Null) => {}
            Some(Value::Array(revoked)) => {
                for entry in revoked {
                    if let Some(key_id) = entry.get("kid").and_then(Value::as_str) {
                        let at = entry.get("hallmark_revoked_at").and_then(Value::as_str);
                        set.revoke(key_id, at.map(str::to_owned));
                    }
                }
            }
            Some(_) => return Err(invalid("\"hallmark_revoked\" is not an array")),
        }
        Ok(set)
    }

    /// Reads the key versions of a `ListKeys` response. REVOKED versions
    /// become revoked key IDs.
    pub fn from_list_keys(response: &pb::ListKeysResponse) -> Self {
        let mut set = Self::default();
        for version in &response.keys {
            if version.state == pb::KeyState::Revoked as i32 {
                set.revoke(&version.key_id, None);
                continue;
            }
            match list_keys_entry(version) {
                Ok(key) => set.insert(key),
                Err(problem) => {
                    let problem = format!(
                        "the ListKeys entry for {} is unusable: {problem}",
                        version.key_id
                    );
                    set.unusable
                        .insert(version.key_id.clone(), UnusableKey { problem });
                }
            }
        }
        set
    }

    /// Reads every `PUBLIC KEY` block of a PEM text. Each key's ID is its
    /// RFC 7638 thumbprint, as Hallmark names key versions, and each is
    /// valid without a time limit.
    pub fn from_pem(
        text: &str,
        parameters: PemParameters,
        source_name: &str,
    ) -> Result<Self, KeySetError> {
        let invalid = |reason: String| KeySetError::Invalid {
            source_name: source_name.to_owned(),
            reason,
        };
        let mut set = Self::default();
        for block in pem_blocks(text) {
            let key = VerifyingKey::from_spki_pem(block).map_err(|e| invalid(e.to_string()))?;
            let algorithm = match (key.algorithms(), parameters.rsa_algorithm) {
                ([only], _) => *only,
                (choices, Some(chosen)) if choices.contains(&chosen) => chosen,
                (_, Some(chosen)) => {
                    return Err(invalid(format!(
                        "an RSA key cannot verify {chosen}; choose rsa-pss-sha256 or \
                         rsa-pkcs1-sha256"
                    )));
                }
                (_, None) => {
                    return Err(invalid(
                        "an RSA public key in PEM needs its algorithm stated: rsa-pss-sha256 \
                         or rsa-pkcs1-sha256"
                            .into(),
                    ));
                }
            };
            let pss_salt_length = (algorithm == Algorithm::RsaPssSha256)
                .then(|| parameters.pss_salt_length.unwrap_or(SHA256_LEN));
            check_salt(&key, pss_salt_length).map_err(&invalid)?;
            set.insert(PublishedKey {
                key_id: key.key_id(),
                key_name: String::new(),
                version: 0,
                algorithm,
                pss_salt_length,
                validity: Validity::Unbounded,
                public_key: key,
            });
        }
        if set.is_empty() {
            return Err(invalid("it contains no PUBLIC KEY block".into()));
        }
        Ok(set)
    }
}

/// Reads a location's text: an HTTP(S) URL, a `file://` URL or a path.
fn read_location(location: &str, timeout: Duration) -> Result<String, KeySetError> {
    let unavailable = |reason: String| KeySetError::Unavailable {
        source_name: location.to_owned(),
        reason,
    };
    if location.starts_with("http://") || location.starts_with("https://") {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .into();
        let mut response = agent
            .get(location)
            .header("Accept", "application/jwk-set+json, application/json")
            .call()
            .map_err(|e| unavailable(e.to_string()))?;
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_KEY_SET_BYTES)
            .read_to_vec()
            .map_err(|e| unavailable(e.to_string()))?;
        let text =
            String::from_utf8(body).map_err(|_| unavailable("the body is not UTF-8".into()))?;
        return Ok(text);
    }
    let path = Path::new(location.strip_prefix("file://").unwrap_or(location));
    if location.contains("://") && !location.starts_with("file://") {
        return Err(KeySetError::Invalid {
            source_name: location.to_owned(),
            reason: "the scheme is not supported; use http://, https://, file:// or a file path"
                .into(),
        });
    }
    let metadata = std::fs::metadata(path).map_err(|e| unavailable(e.to_string()))?;
    if metadata.len() > MAX_KEY_SET_BYTES {
        return Err(unavailable(format!(
            "the file is larger than {MAX_KEY_SET_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| unavailable(e.to_string()))?;
    Ok(text)
}

/// Splits PEM text into its `PUBLIC KEY` blocks.
fn pem_blocks(text: &str) -> Vec<&str> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        blocks.push(&rest[start..stop]);
        rest = &rest[stop..];
    }
    blocks
}

/// Reads one JWK with Hallmark's members, or returns why it is unusable.
fn jwk_entry(key_id: &str, entry: &Value) -> Result<PublishedKey, String> {
    let members = entry.as_object().ok_or("the entry is not an object")?;
    let text = |name: &str| members.get(name).and_then(Value::as_str);
    let algorithm_name = text("hallmark_algorithm").ok_or("it has no hallmark_algorithm")?;
    let algorithm = Algorithm::parse(algorithm_name).map_err(|e| e.to_string())?;
    let public_key = jwk_public_key(algorithm, members)?;
    let pss_salt_length = match (algorithm, members.get("hallmark_pss_salt_length")) {
        (Algorithm::RsaPssSha256, Some(salt)) => Some(
            salt.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("hallmark_pss_salt_length {salt} is not a byte count"))?,
        ),
        // PS256 fixes the salt at the digest length (RFC 7518, section 3.5).
        (Algorithm::RsaPssSha256, None) if text("alg") == Some("PS256") => Some(SHA256_LEN),
        (Algorithm::RsaPssSha256, None) => {
            return Err("an rsa-pss-sha256 key needs hallmark_pss_salt_length".into());
        }
        _ => None,
    };
    check_salt(&public_key, pss_salt_length)?;
    let version = members
        .get("hallmark_version")
        .and_then(Value::as_u64)
        .filter(|&v| v >= 1)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or("hallmark_version must be an integer of at least 1")?;
    let time = |name: &str| text(name).and_then(|t| parse_rfc3339(t).ok());
    let validity = match (time("hallmark_activates_at"), time("hallmark_verify_until")) {
        (Some(activates_at), Some(verify_until)) => Validity::Window {
            activates_at,
            verify_until,
        },
        _ => Validity::Unknown,
    };
    Ok(PublishedKey {
        key_id: key_id.to_owned(),
        key_name: text("hallmark_key_name").unwrap_or_default().to_owned(),
        version,
        algorithm,
        pss_salt_length,
        validity,
        public_key,
    })
}

/// Checks that an RSA-PSS salt length fits the key.
fn check_salt(key: &VerifyingKey, salt: Option<usize>) -> Result<(), String> {
    match (salt, key.max_pss_salt_len()) {
        (Some(len), Some(max)) if len > max => Err(format!(
            "a PSS salt of {len} bytes does not fit a {}-bit key; the maximum is {max}",
            key.bits()
        )),
        _ => Ok(()),
    }
}

/// Builds the public key of a JWK whose `kty` and `crv` must fit the
/// algorithm.
fn jwk_public_key(
    algorithm: Algorithm,
    members: &Map<String, Value>,
) -> Result<VerifyingKey, String> {
    let member = |name: &str| -> Result<Vec<u8>, String> {
        let value = members
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("it has no {name}"))?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| format!("{name} is not unpadded base64url"))
    };
    let kty = members.get("kty").and_then(Value::as_str);
    let crv = members.get("crv").and_then(Value::as_str);
    // RFC 7518 section 6.2.1: each coordinate is exactly as long as the
    // field, so that one key has one spelling. Without the check, x and y
    // of other lengths with the same concatenation would name the key.
    let ec_point = |field_len: usize| -> Result<Vec<u8>, String> {
        let mut point = vec![0x04];
        for name in ["x", "y"] {
            let coordinate = member(name)?;
            if coordinate.len() != field_len {
                return Err(format!(
                    "{name} is {} bytes, not the curve's {field_len}",
                    coordinate.len()
                ));
            }
            point.extend(coordinate);
        }
        Ok(point)
    };
    let key = match algorithm {
        Algorithm::RsaPssSha256 | Algorithm::RsaPkcs1v15Sha256 => {
            if kty != Some("RSA") {
                return Err(format!("a {algorithm} key must have kty RSA"));
            }
            VerifyingKey::rsa(&member("n")?, &member("e")?)
        }
        Algorithm::EcdsaP256Sha256 => {
            if kty != Some("EC") || crv != Some("P-256") {
                return Err(format!("a {algorithm} key must have kty EC and crv P-256"));
            }
            VerifyingKey::p256(&ec_point(32)?)
        }
        Algorithm::EcdsaP384Sha384 => {
            if kty != Some("EC") || crv != Some("P-384") {
                return Err(format!("a {algorithm} key must have kty EC and crv P-384"));
            }
            VerifyingKey::p384(&ec_point(48)?)
        }
        Algorithm::Ed25519 => {
            if kty != Some("OKP") || crv != Some("Ed25519") {
                return Err("an ed25519 key must have kty OKP and crv Ed25519".into());
            }
            let x = <[u8; 32]>::try_from(member("x")?).map_err(|_| "x is not 32 bytes")?;
            VerifyingKey::ed25519(&x)
        }
    };
    key.map_err(|e| e.to_string())
}

/// Reads one `ListKeys` version, or returns why it is unusable.
fn list_keys_entry(version: &pb::KeyVersion) -> Result<PublishedKey, String> {
    let algorithm = pb::SignatureAlgorithm::try_from(version.algorithm)
        .map_err(|_| format!("unknown algorithm {}", version.algorithm))
        .and_then(|a| Algorithm::try_from(a).map_err(|e| e.to_string()))?;
    let public_key =
        VerifyingKey::from_spki_der(&version.public_key_der).map_err(|e| e.to_string())?;
    if !public_key.algorithms().contains(&algorithm) {
        return Err(format!("its public key cannot verify {algorithm}"));
    }
    let pss_salt_length = (algorithm == Algorithm::RsaPssSha256)
        .then(|| usize::try_from(version.pss_salt_length).unwrap_or(usize::MAX));
    check_salt(&public_key, pss_salt_length)?;
    let time =
        |t: &Option<prost_types::Timestamp>| t.as_ref().and_then(|t| SystemTime::try_from(*t).ok());
    let validity = match (time(&version.activates_at), time(&version.verify_until)) {
        (Some(activates_at), Some(verify_until)) => Validity::Window {
            activates_at,
            verify_until,
        },
        _ => Validity::Unknown,
    };
    Ok(PublishedKey {
        key_id: version.key_id.clone(),
        key_name: version.key_name.clone(),
        version: version.version,
        algorithm,
        pss_salt_length,
        validity,
        public_key,
    })
}
