//! The check that every signature passes before it leaves the service.
//!
//! The token's signature is verified against the public key read from the
//! token. Verifying costs CPU time on the same cores that SoftHSM signs
//! on, and with the pure-Rust `p256` crate an ECDSA P-256 check took about
//! three times as long as the signature itself. ECDSA and RSA therefore
//! verify with AWS-LC (`aws-lc-rs`), whose P-256 and RSA code is
//! hand-optimized, over the digest as the token signed it. Ed25519 and the
//! RSA-PSS salt lengths that AWS-LC's fixed parameters do not cover use
//! the verifiers in [`crate::verify::algorithm`], which every verifier of
//! signed outputs also uses.

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::signature::{self as lc, ParsedPublicKey};

use super::algorithm::{self, Algorithm, AlgorithmError, SignatureEncoding, VerifyingKey};

/// The salt length of AWS-LC's fixed RSA-PSS parameters: the SHA-256
/// digest length.
const LC_PSS_SALT_LEN: usize = 32;

/// A version's public key, prepared once for checking its signatures.
#[derive(Clone)]
pub struct SelfCheck {
    /// The key parsed by AWS-LC with the parameters of each encoding, or
    /// `None` where the key is checked by [`algorithm::verify`].
    fast: Option<Fast>,
}

#[derive(Clone)]
enum Fast {
    /// ECDSA: the same key parsed for DER and for P1363 signatures.
    Ecdsa {
        der: ParsedPublicKey,
        p1363: ParsedPublicKey,
        hash: &'static digest::Algorithm,
    },
    /// RSA, with PSS and a 32-byte salt or with PKCS #1 v1.5.
    Rsa(ParsedPublicKey),
}

impl std::fmt::Debug for SelfCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verifier = match self.fast {
            Some(Fast::Ecdsa { .. } | Fast::Rsa(_)) => "aws-lc",
            None => "rust",
        };
        f.debug_struct("SelfCheck")
            .field("verifier", &verifier)
            .finish()
    }
}

impl SelfCheck {
    /// Prepares the check of `algorithm` signatures under the key whose
    /// SubjectPublicKeyInfo is `spki_der`. A key that AWS-LC does not
    /// accept is checked by [`algorithm::verify`] instead, which is slower
    /// but applies the same rules.
    pub fn new(algorithm: Algorithm, salt_len: Option<usize>, spki_der: &[u8]) -> Self {
        let parse = |params: &'static dyn lc::VerificationAlgorithm| {
            ParsedPublicKey::new(params, spki_der).ok()
        };
        let fast = match algorithm {
            Algorithm::EcdsaP256Sha256 => parse(&lc::ECDSA_P256_SHA256_ASN1)
                .zip(parse(&lc::ECDSA_P256_SHA256_FIXED))
                .map(|(der, p1363)| Fast::Ecdsa {
                    der,
                    p1363,
                    hash: &digest::SHA256,
                }),
            Algorithm::EcdsaP384Sha384 => parse(&lc::ECDSA_P384_SHA384_ASN1)
                .zip(parse(&lc::ECDSA_P384_SHA384_FIXED))
                .map(|(der, p1363)| Fast::Ecdsa {
                    der,
                    p1363,
                    hash: &digest::SHA384,
                }),
            Algorithm::RsaPssSha256 if salt_len == Some(LC_PSS_SALT_LEN) => {
                parse(&lc::RSA_PSS_2048_8192_SHA256).map(Fast::Rsa)
            }
            Algorithm::RsaPkcs1v15Sha256 => parse(&lc::RSA_PKCS1_2048_8192_SHA256).map(Fast::Rsa),
            Algorithm::RsaPssSha256 | Algorithm::Ed25519 => None,
        };
        Self { fast }
    }

    /// Verifies `signature` over `digest`, in `encoding` for ECDSA.
    ///
    /// # Errors
    ///
    /// [`AlgorithmError::VerificationFailed`] when the signature does not
    /// verify, and the errors of [`algorithm::verify`] for keys that it
    /// checks.
    pub fn verify(
        &self,
        key: &VerifyingKey,
        algorithm: Algorithm,
        salt_len: Option<usize>,
        digest: &[u8],
        signature: &[u8],
        encoding: SignatureEncoding,
    ) -> Result<(), AlgorithmError> {
        let (parsed, hash) = match &self.fast {
            None => {
                return algorithm::verify(key, algorithm, salt_len, digest, signature, encoding);
            }
            Some(Fast::Ecdsa { der, p1363, hash }) => match encoding {
                SignatureEncoding::Der => (der, *hash),
                SignatureEncoding::P1363 => (p1363, *hash),
            },
            Some(Fast::Rsa(parsed)) => (parsed, &digest::SHA256),
        };
        algorithm.check_digest(digest)?;
        let digest = Digest::import_less_safe(digest, hash)
            .map_err(|_| AlgorithmError::VerificationFailed { algorithm })?;
        parsed
            .verify_digest_sig(&digest, signature)
            .map_err(|_| AlgorithmError::VerificationFailed { algorithm })
    }

    /// Returns whether AWS-LC checks this key's signatures.
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::pkcs8::EncodePublicKey;
    use sha2::{Digest as _, Sha256};

    use super::*;

    fn p256_pair() -> (p256::ecdsa::SigningKey, Vec<u8>) {
        let secret = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).expect("valid scalar");
        let der = secret
            .verifying_key()
            .to_public_key_der()
            .expect("encodes")
            .into_vec();
        (secret, der)
    }

    #[test]
    fn ecdsa_checks_both_encodings() {
        let (secret, der) = p256_pair();
        let key = VerifyingKey::from_spki_der(&der).expect("parses");
        let check = SelfCheck::new(Algorithm::EcdsaP256Sha256, None, &der);
        assert!(check.is_fast());
        let digest = Sha256::digest(b"prediction").to_vec();
        let signature: p256::ecdsa::Signature = secret.sign_prehash(&digest).expect("signs");
        for (encoding, bytes) in [
            (
                SignatureEncoding::Der,
                signature.to_der().as_bytes().to_vec(),
            ),
            (SignatureEncoding::P1363, signature.to_bytes().to_vec()),
        ] {
            let verify = |digest: &[u8], bytes: &[u8], encoding| {
                check.verify(
                    &key,
                    Algorithm::EcdsaP256Sha256,
                    None,
                    digest,
                    bytes,
                    encoding,
                )
            };
            assert!(verify(&digest, &bytes, encoding).is_ok(), "{encoding:?}");
            let mut other = digest.clone();
            other[0] ^= 1;
            assert!(matches!(
                verify(&other, &bytes, encoding),
                Err(AlgorithmError::VerificationFailed {
                    algorithm: Algorithm::EcdsaP256Sha256
                })
            ));
            // A signature in the other encoding does not pass as this one.
            let swapped = match encoding {
                SignatureEncoding::Der => SignatureEncoding::P1363,
                SignatureEncoding::P1363 => SignatureEncoding::Der,
            };
            assert!(verify(&digest, &bytes, swapped).is_err());
        }
        // A digest of the wrong length is rejected before verifying.
        assert!(matches!(
            check.verify(
                &key,
                Algorithm::EcdsaP256Sha256,
                None,
                &digest[..31],
                signature.to_der().as_bytes(),
                SignatureEncoding::Der
            ),
            Err(AlgorithmError::DigestLength { .. })
        ));
    }
}
