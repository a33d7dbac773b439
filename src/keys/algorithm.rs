//! What the token computes for each signature algorithm.
//!
//! Every algorithm signs a digest that the caller computed. The token never
//! hashes: RSA-PSS uses raw `CKM_RSA_PKCS_PSS`, RSA PKCS#1 v1.5 uses raw
//! `CKM_RSA_PKCS` over a DigestInfo built here, ECDSA uses raw `CKM_ECDSA`
//! over the digest, and Ed25519 uses `CKM_EDDSA` with the digest bytes as
//! the message.
//!
//! The algorithms themselves, their encodings and the signature check live
//! in [`crate::verify::algorithm`], which consumers use without the PKCS#11
//! stack. This module re-exports them and adds the token side.

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::types::Ulong;

use crate::hsm::objects::{EcCurve, KeyKind, PublicKeyMaterial};
pub use crate::verify::algorithm::{
    Algorithm, AlgorithmError, SHA256_LEN, SHA384_LEN, SignatureEncoding, VerifyingKey,
    encode_signature, verify,
};

/// The DER encoding of a SHA-256 DigestInfo up to the digest itself
/// (RFC 8017, section 9.2, note 1): a SEQUENCE of the AlgorithmIdentifier
/// for id-sha256 with NULL parameters, and the 32-byte OCTET STRING header.
pub const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

impl Algorithm {
    /// Returns the kind of key pair to generate for the algorithm. `bits` is the
    /// RSA modulus size and is ignored by the other algorithms.
    pub fn key_kind(self, bits: u32) -> KeyKind {
        match self {
            Self::RsaPssSha256 | Self::RsaPkcs1v15Sha256 => KeyKind::Rsa { bits },
            Self::EcdsaP256Sha256 => KeyKind::EcP256,
            Self::EcdsaP384Sha384 => KeyKind::EcP384,
            Self::Ed25519 => KeyKind::Ed25519,
        }
    }

    /// Returns the algorithms that a public key can verify. An RSA key
    /// serves both RSA schemes, and every other key serves exactly one.
    pub fn from_material(material: &PublicKeyMaterial) -> &'static [Self] {
        match material {
            PublicKeyMaterial::Rsa { .. } => &[Self::RsaPssSha256, Self::RsaPkcs1v15Sha256],
            PublicKeyMaterial::Ec {
                curve: EcCurve::P256,
                ..
            } => &[Self::EcdsaP256Sha256],
            PublicKeyMaterial::Ec {
                curve: EcCurve::P384,
                ..
            } => &[Self::EcdsaP384Sha384],
            PublicKeyMaterial::Ed25519 { .. } => &[Self::Ed25519],
        }
    }

    /// Checks that a key of this material can sign with the algorithm.
    pub fn check_material(self, material: &PublicKeyMaterial) -> Result<(), AlgorithmError> {
        if Self::from_material(material).contains(&self) {
            Ok(())
        } else {
            Err(AlgorithmError::KeyMismatch {
                algorithm: self,
                key: material_name(material),
            })
        }
    }
}

impl VerifyingKey {
    /// Builds the key from the material read from the token, with the checks
    /// of [`VerifyingKey::rsa`], [`VerifyingKey::p256`], [`VerifyingKey::p384`]
    /// and [`VerifyingKey::ed25519`].
    pub fn from_material(material: &PublicKeyMaterial) -> Result<Self, AlgorithmError> {
        match material {
            PublicKeyMaterial::Rsa { modulus, exponent } => Self::rsa(modulus, exponent),
            PublicKeyMaterial::Ec {
                curve: EcCurve::P256,
                point,
            } => Self::p256(point),
            PublicKeyMaterial::Ec {
                curve: EcCurve::P384,
                point,
            } => Self::p384(point),
            PublicKeyMaterial::Ed25519 { point } => Self::ed25519(point),
        }
    }
}

fn material_name(material: &PublicKeyMaterial) -> &'static str {
    match material {
        PublicKeyMaterial::Rsa { .. } => "an RSA",
        PublicKeyMaterial::Ec {
            curve: EcCurve::P256,
            ..
        } => "a P-256",
        PublicKeyMaterial::Ec {
            curve: EcCurve::P384,
            ..
        } => "a P-384",
        PublicKeyMaterial::Ed25519 { .. } => "an Ed25519",
    }
}

/// The PKCS#11 mechanism that computes the algorithm's signature over
/// [`token_input`].
///
/// `salt_len` is the PSS salt length in bytes, required for RSA-PSS and
/// ignored otherwise. `Mechanism` contains raw pointers and is not `Send`,
/// so build it on the thread that calls `C_Sign`. Both inputs are `Send`.
pub fn mechanism(
    algorithm: Algorithm,
    salt_len: Option<usize>,
) -> Result<Mechanism<'static>, AlgorithmError> {
    Ok(match algorithm {
        Algorithm::RsaPssSha256 => {
            let len = salt_len.ok_or(AlgorithmError::MissingSaltLength { algorithm })?;
            let s_len = Ulong::try_from(len).map_err(|_| AlgorithmError::SaltTooLarge {
                len,
                // CK_ULONG has at least 32 bits on every platform.
                max: u32::MAX as usize,
            })?;
            Mechanism::RsaPkcsPss(PkcsPssParams {
                hash_alg: MechanismType::SHA256,
                mgf: PkcsMgfType::MGF1_SHA256,
                s_len,
            })
        }
        Algorithm::RsaPkcs1v15Sha256 => Mechanism::RsaPkcs,
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => Mechanism::Ecdsa,
        // Without CK_EDDSA_PARAMS, CKM_EDDSA on an Ed25519 key is pure
        // Ed25519. Ed25519ph would need the parameters with phFlag set.
        Algorithm::Ed25519 => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
    })
}

/// Returns the type of the mechanism that [`mechanism`] builds.
pub fn mechanism_type(algorithm: Algorithm) -> MechanismType {
    match algorithm {
        Algorithm::RsaPssSha256 => MechanismType::RSA_PKCS_PSS,
        Algorithm::RsaPkcs1v15Sha256 => MechanismType::RSA_PKCS,
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => MechanismType::ECDSA,
        Algorithm::Ed25519 => MechanismType::EDDSA,
    }
}

/// Returns the bytes to pass to `C_Sign` with [`mechanism`]: the DigestInfo of the
/// digest for RSA PKCS#1 v1.5, whose raw mechanism only pads, and the digest
/// itself for every other algorithm.
pub fn token_input(algorithm: Algorithm, digest: &[u8]) -> Result<Vec<u8>, AlgorithmError> {
    algorithm.check_digest(digest)?;
    Ok(match algorithm {
        Algorithm::RsaPkcs1v15Sha256 => {
            let mut input = Vec::with_capacity(SHA256_DIGEST_INFO_PREFIX.len() + digest.len());
            input.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
            input.extend_from_slice(digest);
            input
        }
        _ => digest.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use rsa::Pkcs1v15Sign;
    use sha2::Sha256;

    use super::*;
    use crate::pb;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_default())
            .collect()
    }

    #[test]
    fn digest_lengths_and_kinds() {
        assert_eq!(Algorithm::EcdsaP384Sha384.digest_len(), 48);
        assert_eq!(Algorithm::Ed25519.digest_len(), 32);
        assert_eq!(
            Algorithm::RsaPkcs1v15Sha256.key_kind(3072),
            KeyKind::Rsa { bits: 3072 }
        );
        assert_eq!(Algorithm::EcdsaP256Sha256.key_kind(4096), KeyKind::EcP256);
        assert_eq!(
            Algorithm::EcdsaP384Sha384.hash_algorithm(),
            pb::HashAlgorithm::Sha384
        );
    }

    #[test]
    fn material_selects_algorithms() {
        let ed = PublicKeyMaterial::Ed25519 { point: [0; 32] };
        assert_eq!(Algorithm::from_material(&ed), &[Algorithm::Ed25519]);
        assert!(Algorithm::Ed25519.check_material(&ed).is_ok());
        assert!(Algorithm::EcdsaP256Sha256.check_material(&ed).is_err());
        let rsa = PublicKeyMaterial::Rsa {
            modulus: vec![0xff; 256],
            exponent: vec![1, 0, 1],
        };
        assert!(Algorithm::RsaPkcs1v15Sha256.check_material(&rsa).is_ok());
        assert!(Algorithm::RsaPssSha256.check_material(&rsa).is_ok());
        assert!(Algorithm::Ed25519.check_material(&rsa).is_err());
    }

    /// The DigestInfo matches RFC 8017's SHA-256 prefix and the one the
    /// `rsa` crate builds for its own PKCS#1 v1.5 verification.
    #[test]
    fn digest_info_wraps_the_digest() {
        let digest = [0xab; 32];
        let input = token_input(Algorithm::RsaPkcs1v15Sha256, &digest).unwrap_or_default();
        assert_eq!(input.len(), 51);
        assert_eq!(
            input[..19],
            hex("3031300d060960864801650304020105000420")[..]
        );
        assert_eq!(input[19..], digest);
        assert_eq!(
            Pkcs1v15Sign::new::<Sha256>().prefix[..],
            SHA256_DIGEST_INFO_PREFIX
        );
        assert_eq!(
            token_input(Algorithm::EcdsaP256Sha256, &digest).unwrap_or_default(),
            digest
        );
        assert!(token_input(Algorithm::EcdsaP384Sha384, &digest).is_err());
        assert!(token_input(Algorithm::Ed25519, &[0; 48]).is_err());
    }

    #[test]
    fn mechanisms_match_algorithms() {
        let pss = mechanism(Algorithm::RsaPssSha256, Some(32)).map(|m| m.mechanism_type());
        assert_eq!(pss.ok(), Some(MechanismType::RSA_PKCS_PSS));
        assert!(mechanism(Algorithm::RsaPssSha256, None).is_err());
        let cases = [
            (Algorithm::RsaPkcs1v15Sha256, MechanismType::RSA_PKCS),
            (Algorithm::EcdsaP256Sha256, MechanismType::ECDSA),
            (Algorithm::EcdsaP384Sha384, MechanismType::ECDSA),
            (Algorithm::Ed25519, MechanismType::EDDSA),
        ];
        for (algorithm, expected) in cases {
            let found = mechanism(algorithm, None).map(|m| m.mechanism_type());
            assert_eq!(found.ok(), Some(expected), "{algorithm}");
        }
    }
}
