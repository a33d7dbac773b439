//! Verification of signed outputs against a published key set, for the
//! consumers that act on model outputs.
//!
//! A [`Verifier`] contains a [`KeySet`] (from a JWKS URL or file, a `ListKeys`
//! response or PEM public keys), a freshness window and a replay cache. Its
//! [`Verifier::verify`] runs these checks in order and stops at the first
//! failure, each with its own [`VerifyError`]:
//!
//! 1. the document has the fields of a signed output, in the right form,
//!    and its manifest canonicalizes ([`VerifyError::MalformedDocument`]);
//! 2. the key set names the key ID, after one refresh if it did not
//!    ([`VerifyError::UnknownKey`]);
//! 3. the key is not revoked ([`VerifyError::RevokedKey`]);
//! 4. the signature verifies with the algorithm and parameters that the key
//!    set states for that key, and only that key
//!    ([`VerifyError::BadSignature`]);
//! 5. the manifest's timestamp lies in the key's validity window and the
//!    window has not closed ([`VerifyError::ExpiredKey`]);
//! 6. the timestamp is at most `max_age` old and at most `clock_skew` in
//!    the future ([`VerifyError::StaleOutput`]);
//! 7. the signature was not accepted before within `max_age + clock_skew`
//!    ([`VerifyError::ReplayedOutput`]).
//!
//! Only a document that passes every check enters the replay cache.
//!
//! This module never reaches PKCS#11: build the crate with
//! `default-features = false` to use it without the signing service.
//!
//! # Example
//!
//! ```
//! use hallmark::canon::{Profile, canonicalize};
//! use hallmark::verify::{KeySet, Options, PemParameters, Verifier, VerifyError, encode_hex};
//! use p256::ecdsa::signature::hazmat::PrehashSigner;
//! use p256::pkcs8::{EncodePublicKey, LineEnding};
//! use sha2::{Digest, Sha256};
//!
//! // A producer's key. In production the key stays in the HSM and the
//! // consumer reads the public keys from Hallmark's JWKS endpoint.
//! let signing_key = p256::ecdsa::SigningKey::from_slice(&[7; 32])?;
//! let pem = signing_key.verifying_key().to_public_key_pem(LineEnding::LF)?;
//! let keys = KeySet::from_pem(&pem, PemParameters::default(), "producer.pem")?;
//! let key_id = keys.keys().next().map(|k| k.key_id.clone()).unwrap_or_default();
//!
//! let now = hallmark::verify::format_rfc3339(std::time::SystemTime::now());
//! let manifest = format!(r#"{{"prediction": "setosa", "timestamp": "{now}"}}"#);
//! let digest = Sha256::digest(canonicalize(&manifest, Profile::Jcs)?);
//! let signature: p256::ecdsa::Signature = signing_key.sign_prehash(&digest)?;
//! let document = format!(
//!     r#"{{"output": {manifest}, "signature": "{}", "signing_key_id": "{key_id}",
//!         "canonicalization": "jcs", "signature_encoding": "p1363"}}"#,
//!     encode_hex(&signature.to_bytes()),
//! );
//!
//! let verifier = Verifier::new(keys, "producer.pem", Options::default())?;
//! let verdict = verifier.verify(&document)?;
//! assert_eq!(verdict.key_id, key_id);
//!
//! // The same output a second time is a replay.
//! let again = verifier.verify(&document);
//! assert!(matches!(again, Err(VerifyError::ReplayedOutput { .. })));
//!
//! // A changed prediction fails the signature.
//! let forged = document.replace("setosa", "virginica");
//! assert_eq!(verifier.verify(&forged).map_err(|e| e.reason()), Err("bad_signature"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod algorithm;
mod document;
mod keyset;
mod replay;
mod time;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256, Sha384};
use tracing::warn;

use crate::canon::{Profile, canonicalize};
use algorithm::{Algorithm, SignatureEncoding};

pub use document::{NewSignedOutput, SignedOutput, compact_json, encode_hex};
pub use keyset::{
    KeySet, KeySetError, Lookup, MAX_KEY_SET_BYTES, PemParameters, PublishedKey, UnusableKey,
    Validity,
};
pub use replay::{ReplayCache, ReplayCacheError};
pub use time::{format_duration, format_rfc3339, parse_rfc3339};

/// Default maximum age of an output's timestamp.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// Default allowance for a producer's clock running ahead of the consumer's.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Default manifest field that contains the output's timestamp.
pub const DEFAULT_TIMESTAMP_FIELD: &str = "timestamp";
/// Default replay cache size: a consumer accepting 300 outputs a second
/// for the default window of 5 minutes 30 seconds needs about 100,000.
pub const DEFAULT_REPLAY_CACHE_SIZE: usize = 100_000;
/// Default period after which a fetched key set is fetched again, so that
/// revocations and new versions reach the verifier.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Default minimum time between two fetches, so that documents naming
/// unknown keys cannot make the verifier hammer the key server.
pub const DEFAULT_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Maximum replay window (`max_age + clock_skew`): 100 years of
/// 365 days, far beyond any freshness policy, which keeps time arithmetic
/// from overflowing.
pub const MAX_WINDOW: Duration = Duration::from_secs(100 * 365 * 86_400);
/// Default timeout of one key set fetch.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The reason a signed output was rejected. [`VerifyError::reason`] gives a stable
/// machine-readable name for each, the same as the Python client's.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A field of the document is missing, repeated or of the wrong type or
    /// form, or the manifest cannot be canonicalized.
    #[error("malformed document: {0}")]
    MalformedDocument(String),
    /// The key set does not name the key ID, even after a refresh.
    #[error("unknown key: signing_key_id {key_id} is not in the key set from {source_name}")]
    UnknownKey {
        /// The key ID that the document names.
        key_id: String,
        /// The location of the key set.
        source_name: String,
    },
    /// The key ID names a revoked key version.
    #[error("revoked key: key {key_id} was revoked{}", revoked_at.as_deref().map(|t| format!(" at {t}")).unwrap_or_default())]
    RevokedKey {
        /// The revoked key ID.
        key_id: String,
        /// When it was revoked, if the key set gives the time.
        revoked_at: Option<String>,
    },
    /// The signature does not verify with the key set's parameters for the
    /// key, or the document contradicts them.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The output's timestamp lies outside the key version's validity
    /// window, or the window has closed.
    #[error("expired key: {0}")]
    ExpiredKey(String),
    /// The output's timestamp is older than the maximum age or too far in
    /// the future.
    #[error("stale output: {0}")]
    StaleOutput(String),
    /// The same signature was already accepted within the replay window.
    #[error(
        "replayed output: this signature by key {key_id} was already accepted within the \
         last {window}"
    )]
    ReplayedOutput {
        /// The key ID of the signature.
        key_id: String,
        /// The replay window, formatted.
        window: String,
    },
    /// The verifier could not record the acceptance in its on-disk replay
    /// cache, so it refuses the output rather than risk accepting it twice.
    #[error("replay cache failed: {0}")]
    ReplayCache(#[source] ReplayCacheError),
}

impl VerifyError {
    /// Returns the rejection reason as a stable snake-case name.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedDocument(_) => "malformed_document",
            Self::UnknownKey { .. } => "unknown_key",
            Self::RevokedKey { .. } => "revoked_key",
            Self::BadSignature(_) => "bad_signature",
            Self::ExpiredKey(_) => "expired_key",
            Self::StaleOutput(_) => "stale_output",
            Self::ReplayedOutput { .. } => "replayed_output",
            Self::ReplayCache(_) => "replay_cache_failed",
        }
    }
}

/// A failure to set up a [`Verifier`].
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The first fetch of the key set failed.
    #[error(transparent)]
    KeySet(#[from] KeySetError),
    /// The replay cache cannot be opened.
    #[error(transparent)]
    ReplayCache(#[from] ReplayCacheError),
    /// An option is out of range.
    #[error("{0}")]
    InvalidOption(String),
}

/// The result of a successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The key ID that verified the signature.
    pub key_id: String,
    /// The key name, or empty when the key set does not give it.
    pub key_name: String,
    /// The key version, or 0 when the key set does not give it.
    pub key_version: u32,
    /// The algorithm that verified the signature.
    pub algorithm: Algorithm,
    /// The canonical serialization that the signature covers.
    pub canonicalization: Profile,
    /// The manifest's timestamp.
    pub timestamp: SystemTime,
}

/// Verifier settings; [`Options::default`] gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The maximum age of an output's timestamp.
    pub max_age: Duration,
    /// How far in the future an output's timestamp may be.
    pub clock_skew: Duration,
    /// The manifest field that contains the timestamp, in RFC 3339.
    pub timestamp_field: String,
    /// How many accepted signatures the replay cache remembers.
    pub replay_cache_size: usize,
    /// A file that keeps the replay cache across restarts.
    pub replay_cache_path: Option<PathBuf>,
    /// Age after which a fetched key set is fetched again.
    pub refresh_interval: Duration,
    /// Minimum time between two fetches.
    pub refresh_min_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_age: DEFAULT_MAX_AGE,
            clock_skew: DEFAULT_CLOCK_SKEW,
            timestamp_field: DEFAULT_TIMESTAMP_FIELD.to_owned(),
            replay_cache_size: DEFAULT_REPLAY_CACHE_SIZE,
            replay_cache_path: None,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            refresh_min_interval: DEFAULT_REFRESH_MIN_INTERVAL,
        }
    }
}

/// Fetches a fresh key set.
pub type Fetch = Box<dyn Fn() -> Result<KeySet, KeySetError> + Send + Sync>;

/// Checks signed outputs; see the [module documentation](self). It is safe
/// to share between threads.
pub struct Verifier {
    source_name: String,
    fetch: Option<Fetch>,
    keys: RwLock<Arc<KeySet>>,
    refresh: Mutex<RefreshTimes>,
    options: Options,
    replay: Mutex<ReplayCache>,
}

struct RefreshTimes {
    fetched_at: Instant,
    last_attempt: Instant,
}

impl Verifier {
    /// Creates a verifier with a fixed key set. `source_name` names it in
    /// errors.
    pub fn new(keys: KeySet, source_name: &str, options: Options) -> Result<Self, SetupError> {
        Self::build(keys, source_name, None, options)
    }

    /// Creates a verifier that fetches its key set from a JWKS URL
    /// (`http://`, `https://`, `file://`) or file, now and again at the
    /// intervals in [`Options`]. A PEM file is read with `pem`. It has no
    /// revocations to pick up, but is reread all the same.
    pub fn fetching(
        location: &str,
        pem: PemParameters,
        options: Options,
    ) -> Result<Self, SetupError> {
        let owned = location.to_owned();
        let fetch: Fetch = Box::new(move || KeySet::fetch(&owned, DEFAULT_FETCH_TIMEOUT, pem));
        Self::with_fetch(location, fetch, options)
    }

    /// Creates a verifier whose key set comes from `fetch`, called now and
    /// again at the intervals in [`Options`].
    pub fn with_fetch(
        source_name: &str,
        fetch: Fetch,
        options: Options,
    ) -> Result<Self, SetupError> {
        let keys = fetch()?;
        Self::build(keys, source_name, Some(fetch), options)
    }

    fn build(
        keys: KeySet,
        source_name: &str,
        fetch: Option<Fetch>,
        options: Options,
    ) -> Result<Self, SetupError> {
        if options.max_age.is_zero() {
            return Err(SetupError::InvalidOption("max_age must be positive".into()));
        }
        let window = options.max_age.checked_add(options.clock_skew);
        if window.is_none_or(|w| w > MAX_WINDOW) {
            return Err(SetupError::InvalidOption(format!(
                "max_age plus clock_skew must be at most {}",
                format_duration(MAX_WINDOW)
            )));
        }
        if options.timestamp_field.is_empty() {
            return Err(SetupError::InvalidOption(
                "timestamp_field must not be empty".into(),
            ));
        }
        let replay = match &options.replay_cache_path {
            Some(path) => ReplayCache::open(options.replay_cache_size, path, SystemTime::now())?,
            None => ReplayCache::in_memory(options.replay_cache_size)?,
        };
        let now = Instant::now();
        Ok(Self {
            source_name: source_name.to_owned(),
            fetch,
            keys: RwLock::new(Arc::new(keys)),
            refresh: Mutex::new(RefreshTimes {
                fetched_at: now,
                last_attempt: now,
            }),
            options,
            replay: Mutex::new(replay),
        })
    }

    /// Returns the key set in use.
    pub fn key_set(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Fetches the key set now, whatever the rate limit. A verifier with a
    /// fixed key set keeps it.
    pub fn refresh(&self) -> Result<(), KeySetError> {
        let Some(fetch) = &self.fetch else {
            return Ok(());
        };
        let keys = fetch()?;
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        let mut times = self.refresh.lock().unwrap_or_else(PoisonError::into_inner);
        times.fetched_at = Instant::now();
        times.last_attempt = times.fetched_at;
        Ok(())
    }

    /// Refreshes unless a fetch was attempted within the minimum interval.
    /// A failure keeps the previous key set, so that a key server outage
    /// does not stop verification with the keys already known.
    fn maybe_refresh(&self, why: &str) {
        if self.fetch.is_none() {
            return;
        }
        {
            let mut times = self.refresh.lock().unwrap_or_else(PoisonError::into_inner);
            if times.last_attempt.elapsed() < self.options.refresh_min_interval {
                return;
            }
            times.last_attempt = Instant::now();
        }
        if let Err(error) = self.refresh() {
            warn!(%error, why, "key set refresh failed; keeping the previous key set");
        }
    }

    /// Verifies a signed output document at the current time.
    pub fn verify(&self, document: &str) -> Result<Verdict, VerifyError> {
        self.verify_at(document, SystemTime::now())
    }

    /// Verifies a signed output document as if the time were `now`.
    pub fn verify_at(&self, document: &str, now: SystemTime) -> Result<Verdict, VerifyError> {
        let parsed = SignedOutput::parse(document).map_err(VerifyError::MalformedDocument)?;
        let message = canonicalize(parsed.output, parsed.canonicalization).map_err(|e| {
            VerifyError::MalformedDocument(format!("output cannot be canonicalized: {e}"))
        })?;
        let timestamp = self.timestamp(parsed.output)?;

        let stale = self
            .refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fetched_at
            .elapsed()
            > self.options.refresh_interval;
        if stale {
            self.maybe_refresh("periodic");
        }
        let mut keys = self.key_set();
        if keys.lookup(&parsed.signing_key_id) == Lookup::Unknown {
            self.maybe_refresh("unknown key ID");
            keys = self.key_set();
        }
        let key = match keys.lookup(&parsed.signing_key_id) {
            Lookup::Usable(key) => key,
            Lookup::Unusable(entry) => {
                return Err(VerifyError::BadSignature(entry.problem.clone()));
            }
            Lookup::Revoked(revoked_at) => {
                return Err(VerifyError::RevokedKey {
                    key_id: parsed.signing_key_id,
                    revoked_at: revoked_at.map(str::to_owned),
                });
            }
            Lookup::Unknown => {
                return Err(VerifyError::UnknownKey {
                    key_id: parsed.signing_key_id,
                    source_name: self.source_name.clone(),
                });
            }
        };
        let encoding = check_signature(&parsed, key, &message)?;
        self.check_validity(key, timestamp, now)?;
        self.check_freshness(timestamp, now)?;

        let identity = algorithm::signature_identity(key.algorithm, &parsed.signature, encoding);
        let mut replay_id = Sha256::new();
        replay_id.update(key.key_id.as_bytes());
        replay_id.update([0]);
        replay_id.update(&identity);
        let replay_id = encode_hex(&replay_id.finalize());
        let window = self.options.max_age + self.options.clock_skew;
        let first_use = self
            .replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(&replay_id, now, window)
            .map_err(VerifyError::ReplayCache)?;
        if !first_use {
            return Err(VerifyError::ReplayedOutput {
                key_id: key.key_id.clone(),
                window: format_duration(window),
            });
        }
        Ok(Verdict {
            key_id: key.key_id.clone(),
            key_name: key.key_name.clone(),
            key_version: key.version,
            algorithm: key.algorithm,
            canonicalization: parsed.canonicalization,
            timestamp,
        })
    }

    /// Reads the manifest's timestamp field.
    fn timestamp(&self, output: &str) -> Result<SystemTime, VerifyError> {
        let field = &self.options.timestamp_field;
        let members: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
            serde_json::from_str(output).map_err(|e| {
                VerifyError::MalformedDocument(format!("output is not a JSON object: {e}"))
            })?;
        let raw = members.get(field).ok_or_else(|| {
            VerifyError::MalformedDocument(format!(
                "output has no {field:?} field to check freshness against"
            ))
        })?;
        let text: String = serde_json::from_str(raw.get()).map_err(|_| {
            VerifyError::MalformedDocument(format!(
                "output.{field} must be an RFC 3339 string, got {}",
                raw.get()
            ))
        })?;
        parse_rfc3339(&text)
            .map_err(|e| VerifyError::MalformedDocument(format!("output.{field}: {e}")))
    }

    fn check_validity(
        &self,
        key: &PublishedKey,
        timestamp: SystemTime,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let (activates_at, verify_until) = match key.validity {
            Validity::Unbounded => return Ok(()),
            Validity::Unknown => {
                return Err(VerifyError::ExpiredKey(format!(
                    "the key set gives no validity window for key {}",
                    key.key_id
                )));
            }
            Validity::Window {
                activates_at,
                verify_until,
            } => (activates_at, verify_until),
        };
        let earliest = activates_at
            .checked_sub(self.options.clock_skew)
            .unwrap_or(activates_at);
        if timestamp < earliest {
            return Err(VerifyError::ExpiredKey(format!(
                "output timestamp {} is before key {} activates at {}",
                format_rfc3339(timestamp),
                key.key_id,
                format_rfc3339(activates_at)
            )));
        }
        if timestamp > verify_until {
            return Err(VerifyError::ExpiredKey(format!(
                "output timestamp {} is after key {} stops being valid at {}",
                format_rfc3339(timestamp),
                key.key_id,
                format_rfc3339(verify_until)
            )));
        }
        if now > verify_until {
            return Err(VerifyError::ExpiredKey(format!(
                "key {} stopped being valid at {}",
                key.key_id,
                format_rfc3339(verify_until)
            )));
        }
        Ok(())
    }

    fn check_freshness(&self, timestamp: SystemTime, now: SystemTime) -> Result<(), VerifyError> {
        let Options {
            max_age,
            clock_skew,
            ..
        } = self.options;
        match now.duration_since(timestamp) {
            Ok(age) if age > max_age => Err(VerifyError::StaleOutput(format!(
                "output timestamp {} is older than the maximum age of {}",
                format_rfc3339(timestamp),
                format_duration(max_age)
            ))),
            Err(ahead) if ahead.duration() > clock_skew => Err(VerifyError::StaleOutput(format!(
                "output timestamp {} is more than {} in the future",
                format_rfc3339(timestamp),
                format_duration(clock_skew)
            ))),
            _ => Ok(()),
        }
    }
}

/// Checks the signature with the key's stated algorithm and parameters,
/// after checking that the document does not contradict them. Returns the
/// ECDSA encoding used.
fn check_signature(
    parsed: &SignedOutput<'_>,
    key: &PublishedKey,
    message: &[u8],
) -> Result<SignatureEncoding, VerifyError> {
    let key_id = &key.key_id;
    if let Some(named) = parsed.algorithm
        && named != key.algorithm
    {
        return Err(VerifyError::BadSignature(format!(
            "the document names algorithm {named} but key {key_id} is {}",
            key.algorithm
        )));
    }
    // Version 0 means the key set gives none, as with PEM keys.
    if let Some(named) = parsed.key_version
        && key.version != 0
        && named != key.version
    {
        return Err(VerifyError::BadSignature(format!(
            "the document names key_version {named} but key {key_id} is version {}",
            key.version
        )));
    }
    if parsed.signature_encoding.is_some() && !key.algorithm.is_ecdsa() {
        return Err(VerifyError::BadSignature(format!(
            "signature_encoding applies to ECDSA keys only, and key {key_id} is {}",
            key.algorithm
        )));
    }
    let encoding = parsed.signature_encoding.unwrap_or_default();
    let digest = match key.algorithm {
        Algorithm::EcdsaP384Sha384 => Sha384::digest(message).to_vec(),
        _ => Sha256::digest(message).to_vec(),
    };
    algorithm::verify(
        &key.public_key,
        key.algorithm,
        key.pss_salt_length,
        &digest,
        &parsed.signature,
        encoding,
    )
    .map_err(|error| {
        VerifyError::BadSignature(format!(
            "the {} signature does not match the {} output for key {key_id} ({error})",
            key.algorithm,
            parsed.canonicalization.as_str()
        ))
    })?;
    Ok(encoding)
}
