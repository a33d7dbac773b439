//! Key names, versions and their lifecycle state, and signing with them.
//!
//! This layer turns token objects into key versions with rotation metadata,
//! chooses the version that signs, and checks every signature against the
//! public key before it leaves the service.

pub mod algorithm;
pub mod check;
pub mod jwks;
pub mod label;
mod lifecycle;
mod ring;
mod signer;

use std::fmt;

pub use check::SelfCheck;
pub use lifecycle::{
    RotateMode, Transition, create_version, destroy_expired, list_versions, revoke, rotate,
};
pub use ring::{KeyRing, KeyVersion, Snapshot, Timeline, salt_problems, timeline};
pub(crate) use signer::check_signature;
pub use signer::{SignError, Signed, SignedBatch, Signer};

pub use crate::verify::algorithm::{SHA256_LEN, key_id_text, rsa_thumbprint};

/// A key name: 1 to 63 characters from `a-z`, `0-9`, `.`, `_` and `-`,
/// starting with a letter or digit. The limits keep names safe inside token
/// labels and metric labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyName(String);

impl KeyName {
    /// Metric label value used for names that are not configured.
    pub const UNKNOWN: &'static str = "unknown";

    /// Validates a key name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid_chars = text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        let valid_start = text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if text.is_empty() || text.len() > 63 || !valid_chars || !valid_start {
            return Err(format!(
                "{text:?} is not a valid key name: use 1 to 63 characters from a-z, 0-9, '.', \
                 '_' and '-', starting with a letter or digit"
            ));
        }
        if text == Self::UNKNOWN {
            return Err(format!(
                "{text:?} is reserved for metrics; choose another key name"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The PSS salt length setting of a key name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaltSetting {
    /// As long as the digest: 32 bytes for SHA-256. Required by FIPS 186-5
    /// and JOSE PS256, and accepted by every common verifier.
    Digest,
    /// The largest salt that fits the key: emLen - hLen - 2 bytes.
    Max,
    /// An explicit length in bytes.
    Bytes(u32),
}

impl SaltSetting {
    /// Reads `"digest"`, `"max"` or a whole number from a TOML value.
    pub fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(text) if text == "digest" => Ok(Self::Digest),
            toml::Value::String(text) if text == "max" => Ok(Self::Max),
            toml::Value::Integer(n) => u32::try_from(*n)
                .map(Self::Bytes)
                .map_err(|_| format!("{n} is not a byte count")),
            other => Err(format!(
                "{other} is not \"digest\", \"max\" or a byte count"
            )),
        }
    }

    /// The largest PSS salt with SHA-256 for a modulus of `bits` bits
    /// (RFC 8017, section 9.1.1: emLen >= hLen + sLen + 2).
    pub fn max_len(bits: u32) -> usize {
        let em_len = (bits as usize).saturating_sub(1).div_ceil(8);
        em_len.saturating_sub(SHA256_LEN + 2)
    }

    /// The salt length in bytes for a modulus of `bits` bits, or `None` if
    /// the setting does not fit the key.
    pub fn len_for(self, bits: u32) -> Option<usize> {
        let max = Self::max_len(bits);
        let len = match self {
            Self::Digest => SHA256_LEN,
            Self::Max => max,
            Self::Bytes(n) => n as usize,
        };
        (len <= max).then_some(len)
    }
}

impl fmt::Display for SaltSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Digest => f.write_str("digest"),
            Self::Max => f.write_str("max"),
            Self::Bytes(n) => write!(f, "{n}"),
        }
    }
}

/// Lifecycle state of a key version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyState {
    /// Published ahead of use. Does not sign yet.
    Next,
    /// The version that signs.
    Active,
    /// No longer signs. Still published until its verify-until time.
    Retired,
    /// Withdrawn. Verifiers must reject it.
    Revoked,
}

impl KeyState {
    /// The short name used in token labels and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }

    /// Parses a short name written by [`KeyState::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "next" => Some(Self::Next),
            "active" => Some(Self::Active),
            "retired" => Some(Self::Retired),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn key_names_are_checked() {
        assert!(KeyName::parse("default").is_ok());
        assert!(KeyName::parse("fraud-model.v2_eu").is_ok());
        assert!(KeyName::parse("").is_err());
        assert!(KeyName::parse("Default").is_err());
        assert!(KeyName::parse("-x").is_err());
        assert!(KeyName::parse("a;b").is_err());
        assert!(KeyName::parse(&"a".repeat(64)).is_err());
        assert!(KeyName::parse("unknown").is_err());
    }

    #[test]
    fn salt_lengths_match_rfc8017() {
        assert_eq!(SaltSetting::max_len(2048), 222);
        assert_eq!(SaltSetting::max_len(3072), 350);
        assert_eq!(SaltSetting::max_len(4096), 478);
        // A modulus of 8n + 1 bits has an encoded message one byte shorter.
        assert_eq!(SaltSetting::max_len(2049), 222);
        assert_eq!(SaltSetting::Digest.len_for(2048), Some(32));
        assert_eq!(SaltSetting::Max.len_for(4096), Some(478));
        assert_eq!(SaltSetting::Bytes(223).len_for(2048), None);
    }

    /// The example RSA key of RFC 7638, section 3.1, and its published
    /// thumbprint.
    #[test]
    fn thumbprint_matches_rfc7638_example() {
        let n = URL_SAFE_NO_PAD
            .decode(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6\
                 tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5\
                 v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbIS\
                 D08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-\
                 kEgU8awapJzKnqDKgw",
            )
            .expect("valid base64url");
        let e = URL_SAFE_NO_PAD.decode("AQAB").expect("valid base64url");
        assert_eq!(
            key_id_text(&rsa_thumbprint(&n, &e)),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
