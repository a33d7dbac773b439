//! Signing a digest with the active version of a key, and checking the
//! signature before it leaves the service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tracing::{debug, error, info, warn};

use super::algorithm::{self, Algorithm, AlgorithmError, SignatureEncoding};
use super::ring::{KeyRing, KeyVersion, Snapshot, label_prefix};
use super::{KeyName, KeyState};

/// Most reads of the token in one refresh while looking for two that agree.
const MAX_TOKEN_READS: u32 = 10;
/// Pause between reads that disagreed, so that a concurrent change can end.
const TOKEN_REREAD_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Returns whether two reads found the same objects with the same labels and IDs.
fn same_objects(a: &objects::Listing, b: &objects::Listing) -> bool {
    let problem_labels = |l: &objects::Listing| -> Vec<String> {
        l.problems.iter().map(|(label, _)| label.clone()).collect()
    };
    problem_labels(a) == problem_labels(b) && same_pairs(&a.pairs, &b.pairs)
}

fn same_pairs(a: &[objects::KeyPair], b: &[objects::KeyPair]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.label == y.label && x.id == y.id && x.private == y.private)
}

/// Shortest interval between two token re-reads caused by failed lookups.
pub const MIN_LOOKUP_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
use crate::config::KeyPolicy;
use crate::hsm::{Abandon, HsmError, Recovery, SessionPool, objects};
use crate::metrics::Metrics;

/// A failure to produce a checked signature.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key name is configured but the token contains no active version.
    /// Operator error: the key has not been created.
    #[error(
        "key \"{name}\" has no active version in the token; create one with `hallmark keys create --name {name}`"
    )]
    NoActiveVersion {
        /// The key name.
        name: KeyName,
    },
    /// The token contains conflicting objects for the key name, so choosing one
    /// would be a guess. Operator error: remove the duplicate.
    #[error("{problem}")]
    Conflict {
        /// The conflict found.
        problem: String,
    },
    /// The digest's length does not match the key's algorithm. Caller error.
    #[error("key \"{name}\" signs {algorithm} and needs a {}-byte digest, not {length} bytes", algorithm.digest_len())]
    DigestMismatch {
        /// The key name.
        name: KeyName,
        /// The active version's algorithm.
        algorithm: Algorithm,
        /// The length of the digest that was sent.
        length: usize,
    },
    /// Encoding or checking a signature failed in a way that is not the
    /// token's fault, such as an out-of-range ECDSA value.
    #[error(transparent)]
    Algorithm(#[from] AlgorithmError),
    /// The configured salt does not fit the active version's modulus.
    #[error("the salt configured for key \"{name}\" does not fit version {version}")]
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
    /// Signature bytes, in the algorithm's encoding.
    pub signature: Vec<u8>,
    /// The encoding of an ECDSA signature; `None` for other algorithms.
    pub encoding: Option<SignatureEncoding>,
    /// The version that signed.
    pub key: Arc<KeyVersion>,
    /// When the signature was made.
    pub signed_at: SystemTime,
}

/// The outcome of a batch: one result per digest, in the order of the
/// digests, all signed by one key version.
#[derive(Debug)]
pub struct SignedBatch {
    /// A checked signature, or why the digest has none. Digests that
    /// failed for one shared reason share the error.
    pub results: Vec<Result<Vec<u8>, Arc<SignError>>>,
    /// The encoding of ECDSA signatures; `None` for other algorithms.
    pub encoding: Option<SignatureEncoding>,
    /// The version that signed every signature in `results`.
    pub key: Arc<KeyVersion>,
    /// When the last signature was made.
    pub signed_at: SystemTime,
}

/// The result of one pass over a batch on one session.
struct BatchPass {
    /// Raw signatures with their digest's index and the time `C_Sign` took.
    signed: Vec<(usize, Vec<u8>, std::time::Duration)>,
    /// The reason the pass stopped early, when the request was given up.
    abandoned: Option<HsmError>,
    /// The reason the pass stopped early, when the token failed.
    failed: Option<HsmError>,
}

/// Signs digests with keys in the token.
pub struct Signer {
    pool: Arc<SessionPool>,
    ring: KeyRing,
    /// Serializes refreshes and records when the last one finished, so that
    /// a burst of failed lookups triggers one re-read, not one per request.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
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
            last_refresh: tokio::sync::Mutex::new(None),
            policies,
            metrics,
        }
    }

    /// Returns the session pool.
    pub fn pool(&self) -> &Arc<SessionPool> {
        &self.pool
    }

    /// Watches the key versions: every refresh sends a new snapshot.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.ring.subscribe()
    }

    /// Returns the key versions from the most recent refresh.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.ring.snapshot()
    }

    /// Re-reads every key object from the token.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, HsmError> {
        let mut last = self.last_refresh.lock().await;
        let snapshot = self.read_token().await?;
        *last = Some(Instant::now());
        Ok(snapshot)
    }

    /// Reads the token until two reads in a row agree.
    ///
    /// Another process may relabel objects while this one reads them one by
    /// one, so a single read can mix states from before and after a change:
    /// the new version still pending and the old one already retired. Such
    /// a torn read would leave a name without a signing version. Two equal
    /// reads mean that no change overlapped the second one.
    ///
    /// A read that no longer finds a version that was active means that
    /// the token lost objects: SoftHSM, for one, drops every object when
    /// its token directory disappears. The pool then reconnects, which
    /// reads the token from scratch, and the read is repeated once.
    async fn read_token(&self) -> Result<Arc<Snapshot>, HsmError> {
        let previous = self.ring.snapshot();
        let mut snapshot = self.read_agreed().await?;
        let vanished = snapshot.vanished_active(&previous);
        if !vanished.is_empty() && snapshot.generation() == previous.generation() {
            warn!(key_ids = ?vanished, "active key versions vanished from the token; reconnecting");
            self.pool.reconnect(snapshot.generation()).await?;
            snapshot = self.read_agreed().await?;
        }
        for name in snapshot.carry_over_retired(&previous) {
            debug!(key_name = %name, "successor of the retired version not visible yet");
        }
        self.count_transitions(&previous, &snapshot);
        Ok(self.ring.replace(snapshot))
    }

    /// Reads the token until two reads in a row, on one connection, agree.
    async fn read_agreed(&self) -> Result<Snapshot, HsmError> {
        let mut previous = self.read_pairs().await;
        let mut attempts = 1;
        let (pairs, generation) = loop {
            let current = self.read_pairs().await;
            attempts += 1;
            match (&previous, current) {
                (Ok((before, was)), Ok((now, generation)))
                    if *was == generation && same_objects(before, &now) =>
                {
                    break (now, generation);
                }
                // Reading again cannot help while the token itself fails.
                (_, Err(error)) if error.is_token_unavailable() => return Err(error),
                (_, current) if attempts >= MAX_TOKEN_READS => break current?,
                (_, current) => previous = current,
            }
            tokio::time::sleep(TOKEN_REREAD_DELAY).await;
        };
        Ok(Snapshot::from_listing(pairs, &self.policies).with_generation(generation))
    }

    /// Reads the Hallmark key pairs, ordered by private key handle so that
    /// two reads compare item by item, with the connection they were read on.
    async fn read_pairs(&self) -> Result<(objects::Listing, u64), HsmError> {
        let (mut listing, generation) = self
            .pool
            .run(|session| objects::list_pairs_with_problems(session, label_prefix()))
            .await?;
        listing.pairs.sort_by_key(|pair| pair.private.handle());
        listing.problems.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((listing, generation))
    }

    /// Re-reads the token after a failed lookup, unless another request did
    /// so within [`MIN_LOOKUP_REFRESH_INTERVAL`].
    async fn refresh_after_miss(&self) -> Arc<Snapshot> {
        let mut last = self.last_refresh.lock().await;
        let recent = last.is_some_and(|at| at.elapsed() < MIN_LOOKUP_REFRESH_INTERVAL);
        if !recent {
            match self.read_token().await {
                Ok(_) => *last = Some(Instant::now()),
                Err(error) => warn!(%error, "re-reading keys after a failed lookup failed"),
            }
        }
        self.ring.snapshot()
    }

    /// Re-reads the token unless another request already replaced `seen`,
    /// the snapshot whose handles went stale. Each stale snapshot therefore
    /// costs one read, however many requests hit it.
    async fn refresh_if_current(&self, seen: &Arc<Snapshot>) {
        let mut last = self.last_refresh.lock().await;
        if Arc::ptr_eq(&self.ring.snapshot(), seen) {
            match self.read_token().await {
                Ok(_) => *last = Some(Instant::now()),
                Err(error) => warn!(%error, "re-reading keys after a stale handle failed"),
            }
        }
    }

    /// Counts rotations and revocations between two reads of the token, so
    /// that every instance counts them, whichever process made them.
    fn count_transitions(&self, before: &Snapshot, after: &Snapshot) {
        // The first read of the token finds the existing state, not changes.
        if before.versions().is_empty() {
            return;
        }
        for version in after.versions() {
            let name = version.name.as_str();
            let earlier = before.by_key_id(&version.key_id).map(|v| v.state);
            if version.state == KeyState::Active && earlier != Some(KeyState::Active) {
                self.metrics.rotations.with_label_values(&[name]).inc();
                info!(key_name = name, version = version.version, key_id = %version.key_id,
                    "key version now active");
            }
            if version.state == KeyState::Revoked && earlier != Some(KeyState::Revoked) {
                self.metrics.revocations.with_label_values(&[name]).inc();
                info!(key_name = name, version = version.version, key_id = %version.key_id,
                    "key version now revoked");
            }
        }
    }

    /// Returns the version that signs for `name` and the connection its
    /// handle belongs to. Re-reads the token first if the snapshot is from
    /// an earlier connection, and once more if it has no version for
    /// `name`.
    async fn active_version(&self, name: &KeyName) -> Result<(Arc<KeyVersion>, u64), SignError> {
        let mut snapshot = self.ring.snapshot();
        if snapshot.generation() != self.pool.generation() && self.pool.fault().is_none() {
            self.refresh_if_current(&snapshot).await;
            snapshot = self.ring.snapshot();
        }
        if snapshot.active(name).is_none() {
            snapshot = self.refresh_after_miss().await;
        }
        if let Some(fault) = self.pool.fault() {
            return Err(SignError::Hsm(HsmError::Disconnected { reason: fault }));
        }
        if let Some(problem) = snapshot.conflict(name) {
            return Err(SignError::Conflict {
                problem: problem.to_owned(),
            });
        }
        snapshot
            .active(name)
            .map(|version| (Arc::clone(version), snapshot.generation()))
            .ok_or_else(|| SignError::NoActiveVersion { name: name.clone() })
    }

    /// Signs a SHA-256 digest with the active version of `name`.
    ///
    /// The token computes RSASSA-PSS with the raw `CKM_RSA_PKCS_PSS`
    /// mechanism, which encodes the digest as given. A hash-and-sign
    /// mechanism would hash the digest a second time. The result is verified
    /// with the cached public key, and a signature that fails is never
    /// returned.
    ///
    /// A call that fails because a session, the login or the token broke
    /// is retried once, after the pool has recovered and the key has been
    /// looked up again. `abandon` drops the request, before it reaches the
    /// token, once its deadline passes or its client goes away.
    pub async fn sign(
        &self,
        name: &KeyName,
        digest: Vec<u8>,
        encoding: SignatureEncoding,
        abandon: &Abandon,
    ) -> Result<Signed, SignError> {
        let (key, generation) = self.active_version(name).await?;
        let used = self.ring.snapshot();
        let error = match self
            .sign_with(name, key, generation, digest.clone(), encoding, abandon)
            .await
        {
            Err(SignError::Hsm(error)) if error.recovery() != Recovery::None => error,
            other => return other,
        };
        let recovery = error.recovery();
        warn!(%error, key_name = %name, ?recovery, "signing failed; recovering and retrying once");
        match recovery {
            Recovery::None | Recovery::Retry => {}
            Recovery::Lookup => self.refresh_if_current(&used).await,
            Recovery::Relogin | Recovery::Reconnect => {
                self.pool.recover(&error, generation).await?;
                self.refresh_if_current(&used).await;
            }
        }
        let (key, generation) = self.active_version(name).await?;
        self.sign_with(name, key, generation, digest, encoding, abandon)
            .await
    }

    /// Signs every digest in `digests` with the active version of `name`,
    /// holding one session for the batch.
    ///
    /// The whole call fails, as [`Signer::sign`] does, when no version can
    /// sign or when `digest_len`, the length of the batch's hash, or a
    /// digest's length does not suit the key, even with no digests. Otherwise
    /// each digest gets its own result. When a call fails because a
    /// session, the login or the token broke, the digests not signed yet
    /// are retried once after recovery, with the same version; those that
    /// still fail carry the error. A digest reached after `abandon` gave
    /// up on the request is not signed.
    pub async fn sign_batch(
        &self,
        name: &KeyName,
        digest_len: usize,
        digests: Vec<Vec<u8>>,
        encoding: SignatureEncoding,
        abandon: &Abandon,
    ) -> Result<SignedBatch, SignError> {
        let (key, generation) = self.active_version(name).await?;
        let length = digests
            .iter()
            .map(Vec::len)
            .find(|&len| len != digest_len)
            .unwrap_or(digest_len);
        if length != key.algorithm.digest_len() {
            return Err(SignError::DigestMismatch {
                name: name.clone(),
                algorithm: key.algorithm,
                length,
            });
        }
        if key.algorithm == Algorithm::RsaPssSha256 && key.salt_len.is_none() {
            return Err(SignError::SaltDoesNotFit {
                name: name.clone(),
                version: key.version,
            });
        }
        if digests.is_empty() {
            return Ok(SignedBatch {
                results: Vec::new(),
                encoding: key.algorithm.is_ecdsa().then_some(encoding),
                key,
                signed_at: SystemTime::now(),
            });
        }
        let digests = Arc::new(digests);
        let mut results: Vec<Option<Result<Vec<u8>, Arc<SignError>>>> =
            std::iter::repeat_with(|| None)
                .take(digests.len())
                .collect();
        let used = self.ring.snapshot();
        let failure = self
            .batch_pass(
                name,
                &key,
                generation,
                &digests,
                encoding,
                abandon,
                &mut results,
            )
            .await;
        let failure = match failure {
            Some(error) if error.recovery() != Recovery::None => {
                let recovery = error.recovery();
                warn!(%error, key_name = %name, ?recovery,
                    "signing a batch failed; recovering and retrying the rest once");
                self.retry_batch(
                    name,
                    &key,
                    &digests,
                    encoding,
                    abandon,
                    &mut results,
                    (error, generation),
                    &used,
                )
                .await
            }
            other => other.map(|error| Arc::new(SignError::Hsm(error))),
        };
        let results = results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(failure.clone().unwrap_or_else(|| {
                        Arc::new(SignError::Hsm(HsmError::TaskFailed(
                            "the digest was not signed".into(),
                        )))
                    }))
                })
            })
            .collect();
        Ok(SignedBatch {
            results,
            encoding: key.algorithm.is_ecdsa().then_some(encoding),
            key,
            signed_at: SystemTime::now(),
        })
    }

    /// Recovers from `error`, then signs the digests that have no result
    /// yet, with the same key version under its new handle. Returns the
    /// error that the digests still without a result carry.
    #[allow(clippy::too_many_arguments)]
    async fn retry_batch(
        &self,
        name: &KeyName,
        key: &Arc<KeyVersion>,
        digests: &Arc<Vec<Vec<u8>>>,
        encoding: SignatureEncoding,
        abandon: &Abandon,
        results: &mut [Option<Result<Vec<u8>, Arc<SignError>>>],
        (error, generation): (HsmError, u64),
        used: &Arc<Snapshot>,
    ) -> Option<Arc<SignError>> {
        match error.recovery() {
            Recovery::None | Recovery::Retry => {}
            Recovery::Lookup => self.refresh_if_current(used).await,
            Recovery::Relogin | Recovery::Reconnect => {
                if let Err(error) = self.pool.recover(&error, generation).await {
                    return Some(Arc::new(SignError::Hsm(error)));
                }
                self.refresh_if_current(used).await;
            }
        }
        let (again, generation) = match self.active_version(name).await {
            Ok(found) => found,
            Err(error) => return Some(Arc::new(error)),
        };
        // One response names one version. If another became active in
        // between, the rest are left for the caller to send again.
        if again.key_id != key.key_id {
            return Some(Arc::new(SignError::Hsm(HsmError::Disconnected {
                reason: format!(
                    "key \"{name}\" rotated to version {} while the batch was signed by \
                     version {}",
                    again.version, key.version
                ),
            })));
        }
        self.batch_pass(
            name, &again, generation, digests, encoding, abandon, results,
        )
        .await
        .map(|error| Arc::new(SignError::Hsm(error)))
    }

    /// Signs, on one session, each digest that has no result yet, then
    /// checks the signatures. Returns the error that stopped the pass early,
    /// if one did. Digests not reached keep no result.
    #[allow(clippy::too_many_arguments)]
    async fn batch_pass(
        &self,
        name: &KeyName,
        key: &Arc<KeyVersion>,
        generation: u64,
        digests: &Arc<Vec<Vec<u8>>>,
        encoding: SignatureEncoding,
        abandon: &Abandon,
        results: &mut [Option<Result<Vec<u8>, Arc<SignError>>>],
    ) -> Option<HsmError> {
        let pending: Vec<usize> = (0..results.len())
            .filter(|&i| results[i].is_none())
            .collect();
        let (algorithm, salt_len, private) = (key.algorithm, key.salt_len, key.private);
        let (inputs, until) = (Arc::clone(digests), abandon.clone());
        let pass = self
            .pool
            .run_partial_at(generation, abandon, move |session| {
                sign_on_session(
                    session, algorithm, salt_len, private, &inputs, &pending, &until,
                )
            })
            .await;
        let pass = match pass {
            Ok(pass) => pass,
            Err(error) => return Some(error),
        };
        let histogram = self
            .metrics
            .hsm_sign_duration
            .with_label_values(&[name.as_str()]);
        for (_, _, took) in &pass.signed {
            histogram.observe(took.as_secs_f64());
        }
        // Checking costs CPU time in proportion to the batch, so it runs
        // on a blocking thread rather than on one that serves requests.
        let (checked_key, digests) = (Arc::clone(key), Arc::clone(digests));
        let signed = pass.signed;
        let checked = tokio::task::spawn_blocking(move || {
            signed
                .into_iter()
                .map(|(index, raw, _)| {
                    let result = check_signature(&checked_key, &digests[index], raw, encoding);
                    (index, result)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let checked = match checked {
            Ok(checked) => checked,
            Err(error) => return Some(HsmError::TaskFailed(error.to_string())),
        };
        for (index, result) in checked {
            if let Err(SignError::SelfCheckFailed { .. }) = &result {
                self.metrics
                    .self_check_failures
                    .with_label_values(&[name.as_str()])
                    .inc();
                error!(key_id = %key.key_id, "signature failed the self-check");
            }
            results[index] = Some(result.map_err(Arc::new));
        }
        if let Some(abandoned) = pass.abandoned {
            for result in results.iter_mut().filter(|r| r.is_none()) {
                *result = Some(Err(Arc::new(SignError::Hsm(match &abandoned {
                    HsmError::Abandoned { deadline } => HsmError::Abandoned {
                        deadline: *deadline,
                    },
                    HsmError::Stopping => HsmError::Stopping,
                    other => HsmError::TaskFailed(other.to_string()),
                }))));
            }
        }
        pass.failed
    }

    async fn sign_with(
        &self,
        name: &KeyName,
        key: Arc<KeyVersion>,
        generation: u64,
        digest: Vec<u8>,
        encoding: SignatureEncoding,
        abandon: &Abandon,
    ) -> Result<Signed, SignError> {
        let algorithm = key.algorithm;
        if digest.len() != algorithm.digest_len() {
            return Err(SignError::DigestMismatch {
                name: name.clone(),
                algorithm,
                length: digest.len(),
            });
        }
        let salt_len = key.salt_len;
        if algorithm == Algorithm::RsaPssSha256 && salt_len.is_none() {
            return Err(SignError::SaltDoesNotFit {
                name: name.clone(),
                version: key.version,
            });
        }
        let input = algorithm::token_input(algorithm, &digest)?;
        // Fails here, before the token is involved, if the parameters are
        // invalid. The mechanism itself holds raw pointers and is not
        // `Send`, so the signing thread builds its own copy.
        algorithm::mechanism(algorithm, salt_len)?;
        let private = key.private;

        let started = Instant::now();
        let raw = self
            .pool
            .run_at(generation, abandon, move |session| {
                let mechanism = algorithm::mechanism(algorithm, salt_len)
                    .map_err(|e| HsmError::TaskFailed(e.to_string()))?;
                session
                    .sign(&mechanism, private, &input)
                    .map_err(|e| HsmError::pkcs11("C_Sign", e))
            })
            .await?;
        self.metrics
            .hsm_sign_duration
            .with_label_values(&[name.as_str()])
            .observe(started.elapsed().as_secs_f64());

        let signature = match check_signature(&key, &digest, raw, encoding) {
            Err(failure @ SignError::SelfCheckFailed { .. }) => {
                self.metrics
                    .self_check_failures
                    .with_label_values(&[name.as_str()])
                    .inc();
                error!(key_id = %key.key_id, "signature failed the self-check");
                return Err(failure);
            }
            other => other?,
        };
        Ok(Signed {
            signature,
            encoding: algorithm.is_ecdsa().then_some(encoding),
            key,
            signed_at: SystemTime::now(),
        })
    }
}

/// Encodes a raw signature from the token and checks it against the
/// version's public key. A signature that fails is discarded.
///
/// `hallmark bench` calls it too, to measure what the check costs.
pub(crate) fn check_signature(
    key: &KeyVersion,
    digest: &[u8],
    raw: Vec<u8>,
    encoding: SignatureEncoding,
) -> Result<Vec<u8>, SignError> {
    let signature = algorithm::encode_signature(key.algorithm, raw, encoding)?;
    match key.check.verify(
        &key.public_key,
        key.algorithm,
        key.salt_len,
        digest,
        &signature,
        encoding,
    ) {
        Ok(()) => Ok(signature),
        Err(failure) => {
            debug!(key_id = %key.key_id, %failure, "self-check failure");
            Err(SignError::SelfCheckFailed {
                key_id: key.key_id.clone(),
            })
        }
    }
}

/// Signs the digests at `pending` one after another on `session`, until
/// all are signed, a call fails, or `abandon` gives up on the request.
fn sign_on_session(
    session: &cryptoki::session::Session,
    algorithm: Algorithm,
    salt_len: Option<usize>,
    private: cryptoki::object::ObjectHandle,
    digests: &[Vec<u8>],
    pending: &[usize],
    abandon: &Abandon,
) -> (BatchPass, Option<HsmError>) {
    let mut pass = BatchPass {
        signed: Vec::with_capacity(pending.len()),
        abandoned: None,
        failed: None,
    };
    let mechanism = match algorithm::mechanism(algorithm, salt_len) {
        Ok(mechanism) => mechanism,
        Err(error) => {
            pass.failed = Some(HsmError::TaskFailed(error.to_string()));
            return (pass, None);
        }
    };
    for &index in pending {
        if let Err(error) = abandon.check() {
            pass.abandoned = Some(error);
            break;
        }
        let input = match algorithm::token_input(algorithm, &digests[index]) {
            Ok(input) => input,
            Err(error) => {
                pass.failed = Some(HsmError::TaskFailed(error.to_string()));
                break;
            }
        };
        let started = Instant::now();
        match session.sign(&mechanism, private, &input) {
            Ok(raw) => pass.signed.push((index, raw, started.elapsed())),
            Err(error) => {
                let error = HsmError::pkcs11("C_Sign", error);
                // The session may be left mid-operation: it is closed.
                let broken = HsmError::TaskFailed(error.to_string());
                pass.failed = Some(error);
                return (pass, Some(broken));
            }
        }
    }
    (pass, None)
}
