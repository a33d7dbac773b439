//! Signature algorithms, their encodings, and the check of a signature over
//! a digest.
//!
//! Every algorithm signs a digest, never the message itself: RSA-PSS and
//! RSA PKCS#1 v1.5 sign the SHA-256 digest as their scheme prescribes,
//! ECDSA signs the digest as its prehash, and Ed25519 signs the 32 digest
//! bytes as its message (pure Ed25519, not Ed25519ph). This module holds
//! what a signer and a verifier share, and none of it touches PKCS#11.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPublicKey};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::pb;

/// Length in bytes of a SHA-256 digest.
pub const SHA256_LEN: usize = 32;

/// Length in bytes of a SHA-384 digest.
pub const SHA384_LEN: usize = 48;

/// Length of an Ed25519 signature.
const ED25519_SIGNATURE_LEN: usize = 64;

/// A failure to use an algorithm with a key, a digest or a signature.
#[derive(Debug, thiserror::Error)]
pub enum AlgorithmError {
    /// A configuration value that names no algorithm.
    #[error(
        "{name:?} is not a signature algorithm; use one of rsa-pss-sha256, rsa-pkcs1-sha256, \
         ecdsa-p256-sha256, ecdsa-p384-sha384 or ed25519"
    )]
    UnknownName {
        /// The value given.
        name: String,
    },
    /// The protobuf value is unspecified or unknown.
    #[error("signature algorithm {value} is not one the service signs with")]
    UnknownProtobufValue {
        /// The protobuf enum number.
        value: i32,
    },
    /// The key is of a type that cannot sign with the algorithm.
    #[error("{algorithm} cannot be used with {key} key")]
    KeyMismatch {
        /// The algorithm.
        algorithm: Algorithm,
        /// The key's type, such as "an RSA" or "a P-384".
        key: &'static str,
    },
    /// RSA-PSS was used without a salt length.
    #[error("{algorithm} needs a PSS salt length")]
    MissingSaltLength {
        /// The algorithm.
        algorithm: Algorithm,
    },
    /// The salt length does not fit the key, or the PKCS#11 parameter.
    #[error("PSS salt length {len} is too large; the maximum is {max}")]
    SaltTooLarge {
        /// The salt length in bytes.
        len: usize,
        /// The largest salt length allowed, in bytes.
        max: usize,
    },
    /// The digest is not as long as the algorithm's hash output.
    #[error("{algorithm} signs a {expected}-byte digest, not {actual} bytes")]
    DigestLength {
        /// The algorithm.
        algorithm: Algorithm,
        /// The length the algorithm needs.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The public key material does not describe a valid key.
    #[error("invalid {key} public key: {reason}")]
    InvalidPublicKey {
        /// The key's type.
        key: &'static str,
        /// The defect found.
        reason: String,
    },
    /// A SubjectPublicKeyInfo contains no RSA, P-256, P-384 or Ed25519 key.
    #[error("not a SubjectPublicKeyInfo of an RSA, P-256, P-384 or Ed25519 public key")]
    UnsupportedPublicKey,
    /// The public key could not be encoded as a SubjectPublicKeyInfo.
    #[error("cannot encode the public key as SubjectPublicKeyInfo: {reason}")]
    PublicKeyEncoding {
        /// The encoder's error.
        reason: String,
    },
    /// A signature does not have the shape of the algorithm's signatures.
    #[error("malformed {algorithm} signature: {reason}")]
    MalformedSignature {
        /// The algorithm.
        algorithm: Algorithm,
        /// The defect found.
        reason: String,
    },
    /// A well-formed signature that does not verify under the key.
    #[error("{algorithm} signature does not verify")]
    VerificationFailed {
        /// The algorithm.
        algorithm: Algorithm,
    },
}

/// A signature scheme, with the hash and every parameter except the PSS
/// salt length fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256.
    RsaPssSha256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1v15Sha256,
    /// ECDSA on P-256 over a SHA-256 digest.
    EcdsaP256Sha256,
    /// ECDSA on P-384 over a SHA-384 digest.
    EcdsaP384Sha384,
    /// Pure Ed25519 whose message is the 32 digest bytes (not Ed25519ph).
    Ed25519,
}

impl Algorithm {
    /// Every algorithm, in protobuf order.
    pub const ALL: [Self; 5] = [
        Self::RsaPssSha256,
        Self::RsaPkcs1v15Sha256,
        Self::EcdsaP256Sha256,
        Self::EcdsaP384Sha384,
        Self::Ed25519,
    ];

    /// Parses a configuration name written by [`Algorithm::as_str`].
    pub fn parse(text: &str) -> Result<Self, AlgorithmError> {
        Self::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == text)
            .ok_or_else(|| AlgorithmError::UnknownName {
                name: text.to_owned(),
            })
    }

    /// Returns the configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RsaPssSha256 => "rsa-pss-sha256",
            Self::RsaPkcs1v15Sha256 => "rsa-pkcs1-sha256",
            Self::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Self::EcdsaP384Sha384 => "ecdsa-p384-sha384",
            Self::Ed25519 => "ed25519",
        }
    }

    /// Returns the length in bytes of the digest that the algorithm signs.
    pub fn digest_len(self) -> usize {
        match self {
            Self::EcdsaP384Sha384 => SHA384_LEN,
            _ => SHA256_LEN,
        }
    }

    /// Returns the protobuf hash algorithm of the digest that the algorithm signs.
    pub fn hash_algorithm(self) -> pb::HashAlgorithm {
        match self {
            Self::EcdsaP384Sha384 => pb::HashAlgorithm::Sha384,
            _ => pb::HashAlgorithm::Sha256,
        }
    }

    /// Returns whether the signature encoding can be chosen, which is the
    /// case for ECDSA only.
    pub fn is_ecdsa(self) -> bool {
        matches!(self, Self::EcdsaP256Sha256 | Self::EcdsaP384Sha384)
    }

    /// Returns the JOSE `alg` value (RFC 7518, RFC 8037) for signatures of this
    /// algorithm, or `None` when JOSE has none.
    ///
    /// PS256 fixes the PSS salt at 32 bytes, so RSA-PSS with another salt
    /// has no JOSE name. ES256 and ES384 signatures are P1363 encoded in
    /// JOSE.
    pub fn jose_alg(self, salt_len: Option<usize>) -> Option<&'static str> {
        match self {
            Self::RsaPssSha256 => (salt_len == Some(SHA256_LEN)).then_some("PS256"),
            Self::RsaPkcs1v15Sha256 => Some("RS256"),
            Self::EcdsaP256Sha256 => Some("ES256"),
            Self::EcdsaP384Sha384 => Some("ES384"),
            Self::Ed25519 => Some("EdDSA"),
        }
    }

    /// Checks that a digest is as long as the algorithm's hash output.
    pub fn check_digest(self, digest: &[u8]) -> Result<(), AlgorithmError> {
        if digest.len() == self.digest_len() {
            Ok(())
        } else {
            Err(AlgorithmError::DigestLength {
                algorithm: self,
                expected: self.digest_len(),
                actual: digest.len(),
            })
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = AlgorithmError;

    fn from_str(text: &str) -> Result<Self, AlgorithmError> {
        Self::parse(text)
    }
}

impl From<Algorithm> for pb::SignatureAlgorithm {
    fn from(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::RsaPssSha256 => Self::RsaPssSha256,
            Algorithm::RsaPkcs1v15Sha256 => Self::RsaPkcs1v15Sha256,
            Algorithm::EcdsaP256Sha256 => Self::EcdsaP256Sha256,
            Algorithm::EcdsaP384Sha384 => Self::EcdsaP384Sha384,
            Algorithm::Ed25519 => Self::Ed25519,
        }
    }
}

impl TryFrom<pb::SignatureAlgorithm> for Algorithm {
    type Error = AlgorithmError;

    fn try_from(value: pb::SignatureAlgorithm) -> Result<Self, AlgorithmError> {
        match value {
            pb::SignatureAlgorithm::RsaPssSha256 => Ok(Self::RsaPssSha256),
            pb::SignatureAlgorithm::RsaPkcs1v15Sha256 => Ok(Self::RsaPkcs1v15Sha256),
            pb::SignatureAlgorithm::EcdsaP256Sha256 => Ok(Self::EcdsaP256Sha256),
            pb::SignatureAlgorithm::EcdsaP384Sha384 => Ok(Self::EcdsaP384Sha384),
            pb::SignatureAlgorithm::Ed25519 => Ok(Self::Ed25519),
            pb::SignatureAlgorithm::Unspecified => Err(AlgorithmError::UnknownProtobufValue {
                value: value as i32,
            }),
        }
    }
}

/// Encoding of an ECDSA signature. Other algorithms have a single encoding
/// and ignore it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SignatureEncoding {
    /// ASN.1 DER `SEQUENCE { r INTEGER, s INTEGER }` (RFC 3279).
    #[default]
    Der,
    /// IEEE P1363: `r || s`, each as long as the curve's scalars.
    P1363,
}

impl From<pb::SignatureEncoding> for SignatureEncoding {
    /// Unspecified means DER, as the protocol states.
    fn from(value: pb::SignatureEncoding) -> Self {
        match value {
            pb::SignatureEncoding::Unspecified | pb::SignatureEncoding::Der => Self::Der,
            pb::SignatureEncoding::P1363 => Self::P1363,
        }
    }
}

impl From<SignatureEncoding> for pb::SignatureEncoding {
    fn from(value: SignatureEncoding) -> Self {
        match value {
            SignatureEncoding::Der => Self::Der,
            SignatureEncoding::P1363 => Self::P1363,
        }
    }
}

/// A public key that checks signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyingKey {
    /// An RSA key, for both RSA schemes.
    Rsa(RsaPublicKey),
    /// A P-256 key.
    P256(p256::ecdsa::VerifyingKey),
    /// A P-384 key.
    P384(p384::ecdsa::VerifyingKey),
    /// An Ed25519 key.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl VerifyingKey {
    /// Builds an RSA key from its big-endian modulus and public exponent.
    /// The modulus may have at most 4096 bits (the `rsa` crate's limit) and
    /// the exponent must lie from 2 to 2^33 - 1.
    pub fn rsa(modulus: &[u8], exponent: &[u8]) -> Result<Self, AlgorithmError> {
        RsaPublicKey::new(
            BigUint::from_bytes_be(modulus),
            BigUint::from_bytes_be(exponent),
        )
        .map(Self::Rsa)
        .map_err(|e| invalid_key("an RSA", e))
    }

    /// Builds a P-256 key from a SEC 1 point, which must lie on the curve.
    pub fn p256(point: &[u8]) -> Result<Self, AlgorithmError> {
        p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .map(Self::P256)
            .map_err(|e| invalid_key("a P-256", e))
    }

    /// Builds a P-384 key from a SEC 1 point, which must lie on the curve.
    pub fn p384(point: &[u8]) -> Result<Self, AlgorithmError> {
        p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .map(Self::P384)
            .map_err(|e| invalid_key("a P-384", e))
    }

    /// Builds an Ed25519 key from its 32-byte encoding. The point must
    /// decode and must not have small order, because a small-order key
    /// accepts signatures made without the private key.
    pub fn ed25519(point: &[u8; 32]) -> Result<Self, AlgorithmError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(point)
            .map_err(|e| invalid_key("an Ed25519", e))?;
        if key.is_weak() {
            return Err(invalid_key("an Ed25519", "the point has small order"));
        }
        Ok(Self::Ed25519(key))
    }

    /// Reads a DER SubjectPublicKeyInfo of any of the four key types, with
    /// the checks of the constructors above.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, AlgorithmError> {
        if let Ok(key) = RsaPublicKey::from_public_key_der(der) {
            return Self::rsa(&key.n().to_bytes_be(), &key.e().to_bytes_be());
        }
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(Self::P256(key));
        }
        if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(Self::P384(key));
        }
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Self::ed25519(key.as_bytes());
        }
        Err(AlgorithmError::UnsupportedPublicKey)
    }

    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) block, as
    /// [`VerifyingKey::from_spki_der`] reads DER.
    pub fn from_spki_pem(pem: &str) -> Result<Self, AlgorithmError> {
        if let Ok(key) = RsaPublicKey::from_public_key_pem(pem) {
            return Self::rsa(&key.n().to_bytes_be(), &key.e().to_bytes_be());
        }
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::P256(key));
        }
        if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::P384(key));
        }
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Self::ed25519(key.as_bytes());
        }
        Err(AlgorithmError::UnsupportedPublicKey)
    }

    /// Returns the algorithms that the key can verify. An RSA key serves
    /// both RSA schemes, and every other key serves exactly one.
    pub fn algorithms(&self) -> &'static [Algorithm] {
        match self {
            Self::Rsa(_) => &[Algorithm::RsaPssSha256, Algorithm::RsaPkcs1v15Sha256],
            Self::P256(_) => &[Algorithm::EcdsaP256Sha256],
            Self::P384(_) => &[Algorithm::EcdsaP384Sha384],
            Self::Ed25519(_) => &[Algorithm::Ed25519],
        }
    }

    /// Returns the key ID: the RFC 7638 thumbprint in base64url without
    /// padding, as Hallmark names every key version.
    pub fn key_id(&self) -> String {
        key_id_text(&self.thumbprint())
    }

    /// Computes the RFC 7638 JWK SHA-256 thumbprint: the SHA-256 of the required
    /// public JWK members in lexicographic order without whitespace.
    ///
    /// - RSA: `{"e":…,"kty":"RSA","n":…}`;
    /// - EC: `{"crv":"P-256","kty":"EC","x":…,"y":…}`, with `x` and `y` at
    ///   the full field length (RFC 7518, section 6.2.1.2);
    /// - Ed25519: `{"crv":"Ed25519","kty":"OKP","x":…}` (RFC 8037).
    pub fn thumbprint(&self) -> [u8; SHA256_LEN] {
        let json = match self {
            Self::Rsa(key) => {
                return rsa_thumbprint(&key.n().to_bytes_be(), &key.e().to_bytes_be());
            }
            Self::P256(_) | Self::P384(_) => {
                let (crv, x, y) = self.ec_coordinates();
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            Self::Ed25519(key) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(key.as_bytes())
            ),
        };
        Sha256::digest(json.as_bytes()).into()
    }

    /// Returns the public members of the key's JWK: `kty` and the key parameters.
    /// The caller adds `kid`, `alg` and `use` as it needs.
    pub fn jwk(&self) -> Map<String, Value> {
        let mut jwk = Map::new();
        let mut set = |name: &str, value: String| {
            jwk.insert(name.to_owned(), Value::String(value));
        };
        match self {
            Self::Rsa(key) => {
                set("kty", "RSA".into());
                set("n", URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()));
                set("e", URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()));
            }
            Self::P256(_) | Self::P384(_) => {
                let (crv, x, y) = self.ec_coordinates();
                set("kty", "EC".into());
                set("crv", crv.into());
                set("x", x);
                set("y", y);
            }
            Self::Ed25519(key) => {
                set("kty", "OKP".into());
                set("crv", "Ed25519".into());
                set("x", URL_SAFE_NO_PAD.encode(key.as_bytes()));
            }
        }
        jwk
    }

    /// Encodes the key as a DER SubjectPublicKeyInfo (RFC 5280): rsaEncryption
    /// (RFC 3279), id-ecPublicKey with the named curve and the uncompressed
    /// point (RFC 5480), or id-Ed25519 (RFC 8410).
    pub fn spki_der(&self) -> Result<Vec<u8>, AlgorithmError> {
        let encoded = match self {
            Self::Rsa(key) => key.to_public_key_der(),
            Self::P256(key) => key.to_public_key_der(),
            Self::P384(key) => key.to_public_key_der(),
            Self::Ed25519(key) => key.to_public_key_der(),
        };
        encoded.map(|der| der.into_vec()).map_err(spki_error)
    }

    /// Encodes the SubjectPublicKeyInfo in PEM, as `-----BEGIN PUBLIC KEY-----`
    /// with LF line endings.
    pub fn spki_pem(&self) -> Result<String, AlgorithmError> {
        let encoded = match self {
            Self::Rsa(key) => key.to_public_key_pem(LineEnding::LF),
            Self::P256(key) => key.to_public_key_pem(LineEnding::LF),
            Self::P384(key) => key.to_public_key_pem(LineEnding::LF),
            Self::Ed25519(key) => key.to_public_key_pem(LineEnding::LF),
        };
        encoded.map_err(spki_error)
    }

    /// Returns the largest RSA-PSS salt length, in bytes, that the key can
    /// verify with SHA-256, or `None` for keys that are not RSA.
    pub fn max_pss_salt_len(&self) -> Option<usize> {
        match self {
            Self::Rsa(key) => Some(pss_max_salt_len(key.n().bits())),
            _ => None,
        }
    }

    /// Returns the key size in bits: the RSA modulus size, or the curve's
    /// size.
    pub fn bits(&self) -> u32 {
        match self {
            Self::Rsa(key) => u32::try_from(key.n().bits()).unwrap_or(u32::MAX),
            Self::P256(_) => 256,
            Self::P384(_) => 384,
            Self::Ed25519(_) => 256,
        }
    }

    /// Returns the key's type as an error message phrases it.
    fn name(&self) -> &'static str {
        match self {
            Self::Rsa(_) => "an RSA",
            Self::P256(_) => "a P-256",
            Self::P384(_) => "a P-384",
            Self::Ed25519(_) => "an Ed25519",
        }
    }

    /// Returns the JWK `crv`, `x` and `y` of an EC key, and empty strings for other
    /// keys.
    fn ec_coordinates(&self) -> (&'static str, String, String) {
        let point = match self {
            Self::P256(key) => key.to_encoded_point(false).as_bytes().to_vec(),
            Self::P384(key) => key.to_encoded_point(false).as_bytes().to_vec(),
            Self::Rsa(_) | Self::Ed25519(_) => return ("", String::new(), String::new()),
        };
        let crv = if matches!(self, Self::P256(_)) {
            "P-256"
        } else {
            "P-384"
        };
        // An uncompressed point is 0x04 followed by x and y of equal length.
        let coordinates = point.get(1..).unwrap_or_default();
        let (x, y) = coordinates.split_at(coordinates.len() / 2);
        (crv, URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
    }
}
/// Returns the largest PSS salt for SHA-256 and a modulus of `bits` bits:
/// emLen - hLen - 2, where emLen = ceil((bits - 1) / 8) (RFC 8017, section
/// 9.1.1).
fn pss_max_salt_len(bits: usize) -> usize {
    bits.saturating_sub(1)
        .div_ceil(8)
        .saturating_sub(SHA256_LEN + 2)
}

fn invalid_key(key: &'static str, error: impl fmt::Display) -> AlgorithmError {
    AlgorithmError::InvalidPublicKey {
        key,
        reason: error.to_string(),
    }
}

/// Computes the RFC 7638 thumbprint of an RSA key from its big-endian
/// modulus and exponent: the SHA-256 of `{"e":…,"kty":"RSA","n":…}`.
pub fn rsa_thumbprint(modulus: &[u8], exponent: &[u8]) -> [u8; SHA256_LEN] {
    let json = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(exponent),
        URL_SAFE_NO_PAD.encode(modulus)
    );
    Sha256::digest(json.as_bytes()).into()
}

/// Encodes a thumbprint as a key ID: base64url without padding.
pub fn key_id_text(thumbprint: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(thumbprint)
}

fn spki_error(error: impl fmt::Display) -> AlgorithmError {
    AlgorithmError::PublicKeyEncoding {
        reason: error.to_string(),
    }
}

/// Turns the token's signature into the one returned to the caller.
///
/// The token returns ECDSA signatures as `r || s` (P1363). They are
/// checked to contain two scalars in range, and re-encoded as DER when
/// `encoding` requests it. RSA signatures pass unchanged, and Ed25519
/// signatures are checked to be 64 bytes long.
pub fn encode_signature(
    algorithm: Algorithm,
    raw: Vec<u8>,
    encoding: SignatureEncoding,
) -> Result<Vec<u8>, AlgorithmError> {
    let malformed = |reason: String| AlgorithmError::MalformedSignature { algorithm, reason };
    match algorithm {
        Algorithm::RsaPssSha256 | Algorithm::RsaPkcs1v15Sha256 => Ok(raw),
        Algorithm::Ed25519 if raw.len() == ED25519_SIGNATURE_LEN => Ok(raw),
        Algorithm::Ed25519 => Err(malformed(format!(
            "{} bytes instead of {ED25519_SIGNATURE_LEN}",
            raw.len()
        ))),
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => {
            let checked = if algorithm == Algorithm::EcdsaP256Sha256 {
                p256::ecdsa::Signature::from_slice(&raw).map(|_| ())
            } else {
                p384::ecdsa::Signature::from_slice(&raw).map(|_| ())
            };
            checked.map_err(|_| {
                malformed(format!(
                    "{} bytes that are not two scalars in range",
                    raw.len()
                ))
            })?;
            Ok(match encoding {
                SignatureEncoding::P1363 => raw,
                SignatureEncoding::Der => p1363_to_der(&raw),
            })
        }
    }
}

/// Checks a signature made by [`encode_signature`] over `digest`.
///
/// This is the check every signature passes before it leaves the service.
/// RSA-PSS requires exactly `salt_len` bytes of salt. ECDSA verifies the
/// digest as the prehash, and accepts only canonical DER or the exact P1363
/// length, as `encoding` selects. Ed25519 verifies the digest bytes as the
/// message with the strict rules, which reject small-order keys and
/// non-canonical signatures.
pub fn verify(
    key: &VerifyingKey,
    algorithm: Algorithm,
    salt_len: Option<usize>,
    digest: &[u8],
    signature: &[u8],
    encoding: SignatureEncoding,
) -> Result<(), AlgorithmError> {
    algorithm.check_digest(digest)?;
    let failed = AlgorithmError::VerificationFailed { algorithm };
    let malformed = |reason: &str| AlgorithmError::MalformedSignature {
        algorithm,
        reason: reason.to_owned(),
    };
    match (key, algorithm) {
        (VerifyingKey::Rsa(key), Algorithm::RsaPssSha256) => {
            let len = salt_len.ok_or(AlgorithmError::MissingSaltLength { algorithm })?;
            // The rsa crate panics on a salt longer than the encoded message
            // has room for, and such a salt is never valid anyway.
            let max = pss_max_salt_len(key.n().bits());
            if len > max {
                return Err(AlgorithmError::SaltTooLarge { len, max });
            }
            key.verify(Pss::new_with_salt::<Sha256>(len), digest, signature)
                .map_err(|_| failed)
        }
        (VerifyingKey::Rsa(key), Algorithm::RsaPkcs1v15Sha256) => key
            .verify(Pkcs1v15Sign::new::<Sha256>(), digest, signature)
            .map_err(|_| failed),
        (VerifyingKey::P256(key), Algorithm::EcdsaP256Sha256) => {
            let signature = p256_signature(signature, encoding)
                .ok_or_else(|| malformed("not a P-256 signature in the requested encoding"))?;
            key.verify_prehash(digest, &signature).map_err(|_| failed)
        }
        (VerifyingKey::P384(key), Algorithm::EcdsaP384Sha384) => {
            let signature = p384_signature(signature, encoding)
                .ok_or_else(|| malformed("not a P-384 signature in the requested encoding"))?;
            key.verify_prehash(digest, &signature).map_err(|_| failed)
        }
        (VerifyingKey::Ed25519(key), Algorithm::Ed25519) => {
            let signature = ed25519_dalek::Signature::from_slice(signature)
                .map_err(|_| malformed("not 64 bytes"))?;
            key.verify_strict(digest, &signature).map_err(|_| failed)
        }
        (key, algorithm) => Err(AlgorithmError::KeyMismatch {
            algorithm,
            key: key.name(),
        }),
    }
}

/// Returns the bytes that identify a verified signature for replay
/// detection. An ECDSA signature `(r, s)` is also valid as `(r, n - s)`
/// and in both encodings, so all four forms map to `r || min(s, n - s)` in
/// P1363. Other signatures identify themselves: RSA signatures must be
/// below the modulus, and strict Ed25519 refuses non-canonical `S`.
///
/// Call it only after [`verify`] accepted the signature; an undecodable
/// ECDSA signature returns its own bytes.
pub fn signature_identity(
    algorithm: Algorithm,
    signature: &[u8],
    encoding: SignatureEncoding,
) -> Vec<u8> {
    let low_s = match algorithm {
        Algorithm::EcdsaP256Sha256 => p256_signature(signature, encoding)
            .map(|sig| sig.normalize_s().unwrap_or(sig).to_bytes().to_vec()),
        Algorithm::EcdsaP384Sha384 => p384_signature(signature, encoding)
            .map(|sig| sig.normalize_s().unwrap_or(sig).to_bytes().to_vec()),
        _ => None,
    };
    low_s.unwrap_or_else(|| signature.to_vec())
}

/// Encodes `r || s` (two halves of equal length) as the DER
/// `SEQUENCE { INTEGER r, INTEGER s }`, each INTEGER minimal: leading zero
/// bytes dropped, and one zero byte added where the first remaining byte
/// has its high bit set, so that the value stays positive.
fn p1363_to_der(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = Vec::with_capacity(raw.len() + 6);
    der_unsigned_integer(&mut body, r);
    der_unsigned_integer(&mut body, s);
    let mut der = Vec::with_capacity(body.len() + 4);
    der.push(0x30);
    der_length(&mut der, body.len());
    der.extend_from_slice(&body);
    der
}

fn der_unsigned_integer(out: &mut Vec<u8>, value: &[u8]) {
    let first = value.iter().position(|&b| b != 0).unwrap_or(value.len());
    let magnitude = &value[first..];
    let pad = magnitude.first().is_none_or(|&b| b & 0x80 != 0);
    out.push(0x02);
    der_length(out, magnitude.len() + usize::from(pad));
    if pad {
        out.push(0x00);
    }
    out.extend_from_slice(magnitude);
}

/// Appends a DER length in the shortest form.
fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // Fits in seven bits, checked above.
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - 1);
    let significant = &bytes[first..];
    // A usize has at most 16 bytes, so the count fits in seven bits.
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

/// Decodes a P-256 signature. DER is decoded and re-encoded by the `ecdsa`
/// crate, independently of [`p1363_to_der`], so that the self-check also
/// catches a fault in that encoder. Only the canonical encoding is
/// accepted, which rejects BER variants and trailing bytes. Both forms
/// require `r` and `s` in range.
fn p256_signature(signature: &[u8], encoding: SignatureEncoding) -> Option<p256::ecdsa::Signature> {
    match encoding {
        SignatureEncoding::Der => p256::ecdsa::Signature::from_der(signature)
            .ok()
            .filter(|decoded| decoded.to_der().as_bytes() == signature),
        SignatureEncoding::P1363 => p256::ecdsa::Signature::from_slice(signature).ok(),
    }
}

/// Decodes a P-384 signature, as [`p256_signature`] does for P-256.
fn p384_signature(signature: &[u8], encoding: SignatureEncoding) -> Option<p384::ecdsa::Signature> {
    match encoding {
        SignatureEncoding::Der => p384::ecdsa::Signature::from_der(signature)
            .ok()
            .filter(|decoded| decoded.to_der().as_bytes() == signature),
        SignatureEncoding::P1363 => p384::ecdsa::Signature::from_slice(signature).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_default())
            .collect()
    }

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap_or_default()
    }

    #[test]
    fn names_round_trip() {
        for algorithm in Algorithm::ALL {
            assert_eq!(Algorithm::parse(algorithm.as_str()).ok(), Some(algorithm));
            let proto = pb::SignatureAlgorithm::from(algorithm);
            assert_eq!(Algorithm::try_from(proto).ok(), Some(algorithm));
        }
        assert!(Algorithm::parse("rsa-pss").is_err());
        assert!(Algorithm::parse("ED25519").is_err());
        assert!(Algorithm::try_from(pb::SignatureAlgorithm::Unspecified).is_err());
        assert_eq!(
            "ecdsa-p384-sha384".parse::<Algorithm>().ok(),
            Some(Algorithm::EcdsaP384Sha384)
        );
    }

    #[test]
    fn jose_names() {
        assert_eq!(Algorithm::RsaPssSha256.jose_alg(Some(32)), Some("PS256"));
        assert_eq!(Algorithm::RsaPssSha256.jose_alg(Some(222)), None);
        assert_eq!(Algorithm::RsaPssSha256.jose_alg(None), None);
        assert_eq!(Algorithm::RsaPkcs1v15Sha256.jose_alg(None), Some("RS256"));
        assert_eq!(Algorithm::EcdsaP256Sha256.jose_alg(None), Some("ES256"));
        assert_eq!(Algorithm::EcdsaP384Sha384.jose_alg(None), Some("ES384"));
        assert_eq!(Algorithm::Ed25519.jose_alg(None), Some("EdDSA"));
    }

    /// Builds a P1363 P-256 signature from two 32-byte halves.
    fn pair(r: &str, s: &str) -> Vec<u8> {
        let mut raw = hex(r);
        raw.extend(hex(s));
        raw
    }

    #[test]
    fn der_integers_are_minimal() {
        // r has its high bit set: it gets a 0x00 and is 33 bytes long.
        // s starts with two zero bytes followed by a byte below 0x80.
        let r = "80000000000000000000000000000000000000000000000000000000000000aa";
        let s = "00007f00000000000000000000000000000000000000000000000000000000bb";
        let raw = pair(r, s);
        let der = encode_signature(
            Algorithm::EcdsaP256Sha256,
            raw.clone(),
            SignatureEncoding::Der,
        )
        .unwrap_or_default();
        let mut expected = hex("30430221");
        expected.push(0x00);
        expected.extend(hex(r));
        expected.extend(hex("021e"));
        expected.extend(&hex(s)[2..]);
        assert_eq!(der, expected);

        // A leading zero byte whose next byte has the high bit set: the
        // zero byte stays, as the sign byte.
        let s_high = "0080000000000000000000000000000000000000000000000000000000000001";
        let der = p1363_to_der(&pair(r, s_high));
        assert_eq!(
            der[der.len() - 34..der.len() - 30],
            [0x02, 0x20, 0x00, 0x80]
        );
    }

    #[test]
    fn der_matches_the_ecdsa_crate() {
        let cases = [
            (
                "7fffffff00000000000000000000000000000000000000000000000000000001",
                "0000000000000000000000000000000000000000000000000000000000000001",
            ),
            (
                "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550",
                "00ff000000000000000000000000000000000000000000000000000000000002",
            ),
            (
                "0000000000000000000000000000000000000000000000000000000000000080",
                "8000000000000000000000000000000000000000000000000000000000000000",
            ),
        ];
        for (r, s) in cases {
            let raw = pair(r, s);
            let ours = p1363_to_der(&raw);
            let theirs = p256::ecdsa::Signature::from_slice(&raw)
                .map(|sig| sig.to_der().as_bytes().to_vec())
                .unwrap_or_default();
            assert_eq!(ours, theirs, "r={r} s={s}");
            let decoded = p256_signature(&ours, SignatureEncoding::Der).map(|sig| sig.to_vec());
            assert_eq!(decoded, Some(raw));
        }
    }

    #[test]
    fn der_p384_fits_short_lengths() {
        let raw = vec![0xfe; 96];
        // 0xfe.. is above the P-384 order, so only the encoder is tested.
        let der = p1363_to_der(&raw);
        assert_eq!(der[..4], [0x30, 0x66, 0x02, 0x31]);
        assert_eq!(der.len(), 104);
    }

    #[test]
    fn non_canonical_der_is_rejected() {
        let r = "00000000000000000000000000000000000000000000000000000000000000aa";
        let s = "00000000000000000000000000000000000000000000000000000000000000bb";
        let der = p1363_to_der(&pair(r, s));
        assert_eq!(der, hex("3008020200aa020200bb"));
        let decode = |text: &str| p256_signature(&hex(text), SignatureEncoding::Der);
        assert!(decode("3008020200aa020200bb").is_some());
        // A redundant leading zero, a long-form length, a trailing byte, a
        // missing sign byte and a P1363 signature are each rejected.
        assert!(decode("300902030000aa020200bb").is_none());
        assert!(decode("308108020200aa020200bb").is_none());
        assert!(decode("3008020200aa020200bb00").is_none());
        assert!(decode("30060201aa0201bb").is_none());
        assert!(p256_signature(&pair(r, s), SignatureEncoding::Der).is_none());
        assert!(p256_signature(&der, SignatureEncoding::P1363).is_none());
    }

    #[test]
    fn malformed_token_signatures_are_rejected() {
        let zero = vec![0; 64];
        assert!(
            encode_signature(Algorithm::EcdsaP256Sha256, zero, SignatureEncoding::Der).is_err()
        );
        let short = vec![1; 63];
        assert!(
            encode_signature(Algorithm::EcdsaP256Sha256, short, SignatureEncoding::P1363).is_err()
        );
        let p256_sized = vec![1; 64];
        assert!(
            encode_signature(
                Algorithm::EcdsaP384Sha384,
                p256_sized,
                SignatureEncoding::Der
            )
            .is_err()
        );
        assert!(encode_signature(Algorithm::Ed25519, vec![1; 63], SignatureEncoding::Der).is_err());
    }

    /// The example RSA key of RFC 7638, section 3.1.
    #[test]
    fn rsa_thumbprint_matches_rfc7638() {
        let key = VerifyingKey::rsa(
            &b64(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6\
                 tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5\
                 v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbIS\
                 D08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-\
                 kEgU8awapJzKnqDKgw",
            ),
            &b64("AQAB"),
        );
        let key = key.expect("valid public key");
        assert_eq!(
            key_id_text(&key.thumbprint()),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(key.bits(), 2048);
        assert_eq!(key.jwk()["e"], "AQAB");
    }

    /// Builds an uncompressed SEC 1 point from JWK coordinates.
    fn ec_point(x: &str, y: &str) -> Vec<u8> {
        let mut point = vec![0x04];
        point.extend(b64(x));
        point.extend(b64(y));
        point
    }

    /// The P-256 key of RFC 7515, appendix A.3. The expected thumbprint
    /// and SubjectPublicKeyInfo were computed with Python `jwcrypto` 1.6.1
    /// and `cryptography` 50.
    #[test]
    fn p256_thumbprint_jwk_and_spki() {
        let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        let key = VerifyingKey::p256(&ec_point(x, y));
        let key = key.expect("valid public key");
        assert_eq!(
            key_id_text(&key.thumbprint()),
            "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U"
        );
        let jwk = key.jwk();
        assert_eq!(jwk.len(), 4);
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["x"], x);
        assert_eq!(jwk["y"], y);
        assert_eq!(
            key.spki_der().unwrap_or_default(),
            hex(
                "3059301306072a8648ce3d020106082a8648ce3d030107034200047fcdce2770f6c45d4183cbee6f\
                 db4b7b580733357be9ef13bacf6e3c7bd15445c7f144cd1bbd9b7e872cdfedb9eeb9f4b3695d6ea9\
                 0b24ad8a4623288588e5ad"
            )
        );
        assert_eq!(key.bits(), 256);
    }

    /// A P-384 key generated by Python `jwcrypto` 1.6.1, with the thumbprint
    /// that `jwcrypto` computed for it.
    #[test]
    fn p384_thumbprint() {
        let key = VerifyingKey::p384(&ec_point(
            "_D83ZedSietuYGusRzPX1uXOe9MB9IQ1Le9NWSTCbqrgqrSEt-2tpfrhHCOpbbur",
            "3vvQ63uRaw86qcg_NPzVplei8BT6rSSk03vsB8ZBWICC9c8Ob3uddxMLWtbc7a9I",
        ));
        let key = key.expect("valid public key");
        assert_eq!(
            key_id_text(&key.thumbprint()),
            "j6iTdptrdrW_KIJM9JNHTmlgqqCERSAExlkypVn_KeI"
        );
        assert_eq!(key.jwk()["crv"], "P-384");
        assert_eq!(key.bits(), 384);
    }

    /// The Ed25519 key of RFC 8037, appendix A.2, and its thumbprint from
    /// appendix A.3. The PEM was computed with Python `cryptography` 50.
    #[test]
    fn ed25519_thumbprint_jwk_and_spki() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let point = <[u8; 32]>::try_from(b64(x)).unwrap_or_default();
        let key = VerifyingKey::ed25519(&point);
        let key = key.expect("valid public key");
        assert_eq!(
            key_id_text(&key.thumbprint()),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        let jwk = key.jwk();
        assert_eq!(jwk.len(), 3);
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["x"], x);
        assert_eq!(
            key.spki_pem().unwrap_or_default(),
            "-----BEGIN PUBLIC KEY-----\n\
             MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n\
             -----END PUBLIC KEY-----\n"
        );
    }

    #[test]
    fn spki_round_trips_for_every_key_type() {
        let p256 = VerifyingKey::p256(&ec_point(
            "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        ));
        let p384 = VerifyingKey::p384(&ec_point(
            "_D83ZedSietuYGusRzPX1uXOe9MB9IQ1Le9NWSTCbqrgqrSEt-2tpfrhHCOpbbur",
            "3vvQ63uRaw86qcg_NPzVplei8BT6rSSk03vsB8ZBWICC9c8Ob3uddxMLWtbc7a9I",
        ));
        let point = <[u8; 32]>::try_from(b64("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"))
            .unwrap_or_default();
        let ed25519 = VerifyingKey::ed25519(&point);
        let rsa = VerifyingKey::rsa(&[0xc5; 256], &[1, 0, 1]);
        for key in [p256, p384, ed25519, rsa] {
            let key = key.expect("valid public key");
            let der = key.spki_der().expect("encodes");
            let pem = key.spki_pem().expect("encodes");
            assert_eq!(VerifyingKey::from_spki_der(&der).ok(), Some(key.clone()));
            assert_eq!(VerifyingKey::from_spki_pem(&pem).ok(), Some(key));
        }
        assert!(matches!(
            VerifyingKey::from_spki_der(&[0x30, 0x00]),
            Err(AlgorithmError::UnsupportedPublicKey)
        ));
    }

    #[test]
    fn oversized_pss_salts_are_rejected_without_panicking() {
        let key = VerifyingKey::rsa(&[0xc5; 256], &[1, 0, 1]).expect("valid public key");
        assert_eq!(key.max_pss_salt_len(), Some(222));
        for len in [223, usize::MAX] {
            let result = verify(
                &key,
                Algorithm::RsaPssSha256,
                Some(len),
                &[0; 32],
                &[1; 256],
                SignatureEncoding::Der,
            );
            assert!(
                matches!(result, Err(AlgorithmError::SaltTooLarge { max: 222, .. })),
                "{len}: {result:?}"
            );
        }
    }

    #[test]
    fn invalid_public_keys_are_rejected() {
        // The identity encoding and a point off the curve.
        assert!(VerifyingKey::p256(&[0x00]).is_err());
        let mut off_curve = ec_point(
            "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        );
        off_curve[64] ^= 1;
        assert!(VerifyingKey::p256(&off_curve).is_err());
        // The Ed25519 identity point has small order.
        let mut identity = [0; 32];
        identity[0] = 1;
        assert!(matches!(
            VerifyingKey::ed25519(&identity),
            Err(AlgorithmError::InvalidPublicKey {
                key: "an Ed25519",
                ..
            })
        ));
    }

    #[test]
    fn verify_rejects_mismatched_inputs() {
        let point = <[u8; 32]>::try_from(b64("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"))
            .unwrap_or_default();
        let key = VerifyingKey::ed25519(&point).expect("the RFC 8037 key is valid");
        let der = SignatureEncoding::Der;

        let wrong_algorithm = verify(
            &key,
            Algorithm::EcdsaP256Sha256,
            None,
            &[0; 32],
            &[1; 64],
            der,
        );
        assert!(matches!(
            wrong_algorithm,
            Err(AlgorithmError::KeyMismatch { .. })
        ));

        let wrong_digest = verify(&key, Algorithm::Ed25519, None, &[0; 48], &[1; 64], der);
        assert!(matches!(
            wrong_digest,
            Err(AlgorithmError::DigestLength { .. })
        ));

        let short = verify(&key, Algorithm::Ed25519, None, &[0; 32], &[1; 63], der);
        assert!(matches!(
            short,
            Err(AlgorithmError::MalformedSignature { .. })
        ));

        let forged = verify(&key, Algorithm::Ed25519, None, &[0; 32], &[1; 64], der);
        assert!(matches!(
            forged,
            Err(AlgorithmError::VerificationFailed { .. })
        ));
    }
}
