//! Signing a digest with the active version of a key, and checking the
//! signature before it leaves the service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::types::Ulong;
use rsa::Pss;
use sha2::Sha256;
use tracing::error;

use super::ring::{KeyRing, KeyVersion, Snapshot, label_prefix};
use super::{KeyName, SHA256_LEN};
use crate::config::KeyPolicy;
use crate::hsm::{HsmError, SessionPool, objects};
use crate::metrics::Metrics;

/// A failure to produce a checked signature.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key name is configured but the token contains no active version.
    /// Operator error: the key has not been created.
    #[error(
        "key {name:?} has no active version in the token; create one with `hallmark keys create --name {name}`"
    )]
    NoActiveVersion {
        /// The key name.
        name: KeyName,
    },
    /// The configured salt does not fit the active version's modulus.
    #[error("the salt configured for key {name:?} does not fit version {version}")]
    SaltDoesNotFit {
        /// The key name.
        name: KeyName,
        /// The active version.
        version: u32,
    },
    /// The token returned a signature that does not verify under the
    /// public key. The signature was discarded.
    #[error("signature from key {key_id} failed the self-check and was discarded")]
    SelfCheckFailed {
        /// The key ID.
        key_id: String,
    },
    /// The PKCS#11 layer failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
}

/// A checked signature and the key version that made it.
#[derive(Debug)]
pub struct Signed {
    /// RSASSA-PSS signature bytes.
    pub signature: Vec<u8>,
    /// The version that signed.
    pub key: Arc<KeyVersion>,
    /// When the signature was made.
    pub signed_at: SystemTime,
}

/// Signs digests with keys in the token.
pub struct Signer {
    pool: Arc<SessionPool>,
    ring: KeyRing,
    policies: BTreeMap<KeyName, KeyPolicy>,
    metrics: Arc<Metrics>,
}

impl Signer {
    /// Creates a signer over `pool`. Call [`Signer::refresh`] before use.
    pub fn new(
        pool: Arc<SessionPool>,
        policies: BTreeMap<KeyName, KeyPolicy>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            ring: KeyRing::default(),
            policies,
            metrics,
        }
    }

    /// The session pool.
    pub fn pool(&self) -> &Arc<SessionPool> {
        &self.pool
    }

    /// The key versions from the most recent refresh.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.ring.snapshot()
    }

    /// Re-reads every key object from the token.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, HsmError> {
        let pairs = self
            .pool
            .run(|session| objects::list_rsa_pairs(session, label_prefix()))
            .await?;
        Ok(self.ring.replace(Snapshot::build(pairs, &self.policies)))
    }

    /// Signs a SHA-256 digest with the active version of `name`.
    ///
    /// The token computes RSASSA-PSS with the raw `CKM_RSA_PKCS_PSS`
    /// mechanism, which encodes the digest as given. A hash-and-sign
    /// mechanism would hash the digest a second time. The result is verified
    /// with the cached public key, and a signature that fails is never
    /// returned.
    pub async fn sign(
        &self,
        name: &KeyName,
        digest: [u8; SHA256_LEN],
    ) -> Result<Signed, SignError> {
        let snapshot = self.ring.snapshot();
        let key = snapshot
            .active(name)
            .ok_or_else(|| SignError::NoActiveVersion { name: name.clone() })?;
        let key = Arc::clone(key);
        let salt_len = key.salt_len.ok_or_else(|| SignError::SaltDoesNotFit {
            name: name.clone(),
            version: key.version,
        })?;
        let s_len = Ulong::try_from(salt_len)
            .map_err(|e| HsmError::TaskFailed(format!("salt length {salt_len}: {e}")))?;
        let private = key.private;

        let started = Instant::now();
        let signature = self
            .pool
            .run(move |session| {
                // `Mechanism` holds raw pointers and is not `Send`, so it is
                // built on the blocking thread.
                session
                    .sign(&pss_mechanism(s_len), private, &digest)
                    .map_err(|e| HsmError::pkcs11("C_Sign", e))
            })
            .await?;
        self.metrics
            .hsm_sign_duration
            .with_label_values(&[name.as_str()])
            .observe(started.elapsed().as_secs_f64());

        let check =
            key.public_key
                .verify(Pss::new_with_salt::<Sha256>(salt_len), &digest, &signature);
        if let Err(failure) = check {
            self.metrics
                .self_check_failures
                .with_label_values(&[name.as_str()])
                .inc();
            error!(key_id = %key.key_id, %failure, "signature failed the self-check");
            return Err(SignError::SelfCheckFailed {
                key_id: key.key_id.clone(),
            });
        }
        Ok(Signed {
            signature,
            key,
            signed_at: SystemTime::now(),
        })
    }
}

/// Builds the raw RSASSA-PSS mechanism for a SHA-256 digest.
fn pss_mechanism(s_len: Ulong) -> Mechanism<'static> {
    Mechanism::RsaPkcsPss(PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len,
    })
}
