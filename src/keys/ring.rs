//! The key versions read from the token, with their rotation metadata.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cryptoki::object::ObjectHandle;
use tracing::warn;

use super::algorithm::{Algorithm, VerifyingKey};
use super::label::{self, KeyLabel, Parsed};
use super::{KeyName, KeyState, SaltSetting, key_id_text};
use crate::config::KeyPolicy;
use crate::hsm::HsmError;
use crate::hsm::objects::{KeyPair, Listing};

/// One version of a named key, as read from the token.
#[derive(Debug)]
pub struct KeyVersion {
    /// Key name.
    pub name: KeyName,
    /// Version number, from 1.
    pub version: u32,
    /// Lifecycle state.
    pub state: KeyState,
    /// RFC 7638 thumbprint, base64url without padding.
    pub key_id: String,
    /// Signature algorithm.
    pub algorithm: Algorithm,
    /// Key size in bits: the RSA modulus size, or the curve's size.
    pub bits: u32,
    /// PSS salt length that an RSA-PSS version signs with. `None` for
    /// other algorithms, and for RSA-PSS when the configured salt does not
    /// fit the modulus.
    pub salt_len: Option<usize>,
    /// Generation time.
    pub created_at: SystemTime,
    /// When the version starts, or started, to sign.
    pub activates_at: SystemTime,
    /// When the version was revoked, for revoked versions.
    pub revoked_at: Option<SystemTime>,
    /// When signing moves to the next version.
    pub rotates_at: SystemTime,
    /// When verifiers should stop accepting this version.
    pub verify_until: SystemTime,
    /// The public key, used to check every signature before it is returned.
    pub public_key: VerifyingKey,
    /// The same key, prepared for the check of every signature.
    pub check: super::check::SelfCheck,
    /// DER-encoded SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// PEM-encoded SubjectPublicKeyInfo.
    pub spki_pem: String,
    /// Key ID of the previous version of the same name, if still present.
    pub previous_key_id: Option<String>,
    /// Key ID of the next version of the same name, if present.
    pub next_key_id: Option<String>,
    /// Handle of the private key in the token.
    pub(crate) private: ObjectHandle,
}

/// The times that follow from a version's label and its name's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// When the version starts, or started, to sign.
    pub activates_at: SystemTime,
    /// When signing moves, or moved, to the next version.
    pub rotates_at: SystemTime,
    /// When verifiers stop accepting the version. A REVOKED version stays
    /// listed until then, so that verifiers learn of the revocation, but is
    /// never accepted.
    pub verify_until: SystemTime,
}

/// Computes a version's timeline:
///
/// - NEXT and ACTIVE rotate `rotation_period` after activation;
/// - RETIRED rotated when it was retired;
/// - REVOKED rotated when it was retired or, if it never was, revoked;
/// - every version stays published `verify_grace` after it rotates.
pub fn timeline(label: &KeyLabel, policy: &KeyPolicy) -> Timeline {
    let activates_at = label.activates.unwrap_or(label.created);
    let scheduled = later(activates_at, policy.rotation_period);
    let rotates_at = match label.state {
        KeyState::Next | KeyState::Active => scheduled,
        KeyState::Retired => label.retired.unwrap_or(scheduled),
        KeyState::Revoked => label.retired.or(label.revoked).unwrap_or(scheduled),
    };
    Timeline {
        activates_at,
        rotates_at,
        verify_until: later(rotates_at, policy.verify_grace),
    }
}

/// Adds `duration` to `time`, saturating at the largest representable
/// time, so that a label with an absurd timestamp cannot overflow.
fn later(time: SystemTime, duration: std::time::Duration) -> SystemTime {
    time.checked_add(duration)
        .unwrap_or_else(|| UNIX_EPOCH + std::time::Duration::from_secs(i64::MAX as u64 / 2))
}

/// All key versions found in one read of the token.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every complete version, ordered by name and then version.
    versions: Vec<Arc<KeyVersion>>,
    /// Per name, the versions in state ACTIVE, newest first.
    active: BTreeMap<KeyName, Vec<Arc<KeyVersion>>>,
    /// Objects that carry the Hallmark prefix but could not be used.
    problems: Vec<String>,
    /// Names with two objects for one version, which must not sign.
    conflicts: BTreeMap<KeyName, String>,
    /// The token connection that the object handles belong to.
    generation: u64,
}

impl Snapshot {
    /// Builds a snapshot from a token listing. An object that has two
    /// public keys where there must be one stops its key name from signing.
    pub fn from_listing(listing: Listing, policies: &BTreeMap<KeyName, KeyPolicy>) -> Self {
        let Listing { pairs, problems } = listing;
        let mut snapshot = Self::default();
        for (label, error) in problems {
            let name = match KeyLabel::parse(&label) {
                Ok(Some(Parsed::Complete(parsed) | Parsed::Pending(parsed))) => Some(parsed.name),
                _ => None,
            };
            if let (Some(name), HsmError::Ambiguous { .. }) = (name, &error) {
                snapshot.conflicts.insert(name, error.to_string());
            }
            snapshot
                .problems
                .push(format!("key object {label:?}: {error}"));
        }
        for pair in pairs {
            match version_from_pair(&pair, policies) {
                Ok(version) => snapshot.versions.push(Arc::new(version)),
                Err(problem) => snapshot.problems.push(problem),
            }
        }
        snapshot
            .versions
            .sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        snapshot.link_neighbours();
        // Two copies of one version that may both sign make the choice a
        // guess. Retired and revoked copies only stay published, so they
        // are harmless; the rotator retires all but one signing copy.
        let signing = |v: &KeyVersion| matches!(v.state, KeyState::Next | KeyState::Active);
        for pair in snapshot.versions.windows(2) {
            let same_version = pair[0].name == pair[1].name && pair[0].version == pair[1].version;
            if same_version && signing(&pair[0]) && signing(&pair[1]) {
                let problem = format!(
                    "key {} has two objects for version {}; run `hallmark keys rotate` to \
                     retire all but one",
                    pair[0].name, pair[0].version
                );
                snapshot.conflicts.insert(pair[0].name.clone(), problem);
            }
        }
        for version in snapshot.versions.iter().rev() {
            if version.state == KeyState::Active {
                let entry = snapshot.active.entry(version.name.clone()).or_default();
                entry.push(Arc::clone(version));
            }
        }
        snapshot
    }

    /// Records the token connection that the listing was read on.
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Returns the token connection that the object handles belong to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Key IDs of the versions that were ACTIVE in `previous` and are
    /// missing from this read altogether. Versions are destroyed only
    /// after they retire, so such a gap means that the token lost objects,
    /// not that the key lifecycle removed them.
    pub fn vanished_active(&self, previous: &Snapshot) -> Vec<String> {
        previous
            .active
            .values()
            .flatten()
            .filter(|old| self.by_key_id(&old.key_id).is_none())
            .map(|old| old.key_id.clone())
            .collect()
    }

    /// Fills in each version's previous and next key IDs.
    fn link_neighbours(&mut self) {
        let ids: Vec<(KeyName, String)> = self
            .versions
            .iter()
            .map(|v| (v.name.clone(), v.key_id.clone()))
            .collect();
        for (index, version) in self.versions.iter_mut().enumerate() {
            let Some(version) = Arc::get_mut(version) else {
                continue;
            };
            let same_name = |other: &(KeyName, String)| other.0 == version.name;
            version.previous_key_id = index
                .checked_sub(1)
                .and_then(|i| ids.get(i))
                .filter(|o| same_name(o))
                .map(|o| o.1.clone());
            version.next_key_id = ids
                .get(index + 1)
                .filter(|o| same_name(o))
                .map(|o| o.1.clone());
        }
    }

    /// Keeps signing with the previous snapshot's active version of a name
    /// that lost its active version only because it was retired.
    ///
    /// A version is retired only after its successor is ACTIVE, so a read
    /// that shows the old version RETIRED and no ACTIVE version has missed
    /// the successor. SoftHSM, for one, can show another process's changes
    /// to existing objects before it shows the objects that process
    /// created. The retired version is still published, so its signatures
    /// verify, and the next read finds the successor. A revoked version is
    /// never carried over.
    pub fn carry_over_retired(&mut self, previous: &Snapshot) -> Vec<KeyName> {
        let mut carried = Vec::new();
        // Handles from another connection to the token mean nothing here.
        if previous.generation != self.generation {
            return carried;
        }
        for (name, versions) in &previous.active {
            let Some(old) = versions.first() else {
                continue;
            };
            let retired_now = self
                .by_key_id(&old.key_id)
                .is_some_and(|v| v.state == KeyState::Retired);
            if self.active(name).is_none() && retired_now {
                self.active.insert(name.clone(), vec![Arc::clone(old)]);
                carried.push(name.clone());
            }
        }
        carried
    }

    /// Returns the conflict that stops `name` from signing, if any.
    pub fn conflict(&self, name: &KeyName) -> Option<&str> {
        self.conflicts.get(name).map(String::as_str)
    }

    /// Returns the version with `key_id`, if present.
    pub fn by_key_id(&self, key_id: &str) -> Option<&Arc<KeyVersion>> {
        self.versions.iter().find(|v| v.key_id == key_id)
    }

    /// Every complete key version, ordered by name and then version.
    pub fn versions(&self) -> &[Arc<KeyVersion>] {
        &self.versions
    }

    /// The versions published at `now`: every NEXT and ACTIVE version, and
    /// every RETIRED and REVOKED version whose verify-until time has not
    /// passed.
    ///
    /// An ACTIVE version stays published past its own verify-until time,
    /// because it still signs when no rotation has run. Verifiers must never
    /// meet a signature whose key they cannot find.
    pub fn published(&self, now: SystemTime) -> impl Iterator<Item = &Arc<KeyVersion>> {
        self.versions.iter().filter(move |v| {
            matches!(v.state, KeyState::Next | KeyState::Active) || v.verify_until > now
        })
    }

    /// The version that signs for `name`.
    ///
    /// When an interrupted key creation leaves two ACTIVE versions, the
    /// newest signs: creation marks the new version ACTIVE before it
    /// retires the old one, and rerunning it completes the change.
    pub fn active(&self, name: &KeyName) -> Option<&Arc<KeyVersion>> {
        self.active.get(name).and_then(|versions| versions.first())
    }

    /// Descriptions of Hallmark objects in the token that could not be used.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

fn version_from_pair(
    pair: &KeyPair,
    policies: &BTreeMap<KeyName, KeyPolicy>,
) -> Result<KeyVersion, String> {
    let described = |reason: String| format!("key object {:?}: {reason}", pair.label);
    let parsed = KeyLabel::parse(&pair.label).map_err(described)?;
    let label = match parsed {
        Some(Parsed::Complete(label)) => label,
        Some(Parsed::Pending(_)) => {
            return Err(described(
                "key generation did not finish; this pair never signs, and \
                 `hallmark keys create` can be run again"
                    .into(),
            ));
        }
        None => return Err(described("not a Hallmark key".into())),
    };

    let public_key = VerifyingKey::from_material(&pair.material)
        .map_err(|e| described(format!("invalid public key: {e}")))?;
    let thumbprint = public_key.thumbprint();
    if pair.id != thumbprint {
        return Err(described(
            "CKA_ID is not the public key's thumbprint; the pair is incomplete or altered".into(),
        ));
    }
    let algorithm = match label.algorithm {
        Some(algorithm) => algorithm,
        // Labels without `alg` predate other key types: RSA means RSA-PSS.
        None => *Algorithm::from_material(&pair.material)
            .first()
            .ok_or_else(|| described("no algorithm signs with this key type".into()))?,
    };
    algorithm
        .check_material(&pair.material)
        .map_err(|e| described(e.to_string()))?;
    let spki_der = public_key
        .spki_der()
        .map_err(|e| described(format!("cannot encode SubjectPublicKeyInfo: {e}")))?;
    let spki_pem = public_key
        .spki_pem()
        .map_err(|e| described(format!("cannot encode PEM: {e}")))?;

    let default_policy = KeyPolicy::default();
    let policy = policies.get(&label.name).unwrap_or(&default_policy);
    let bits = public_key.bits();
    let salt_len = match (algorithm, label.salt) {
        (Algorithm::RsaPssSha256, Some(salt)) => {
            let salt = salt as usize;
            if salt > SaltSetting::max_len(bits) {
                return Err(described(format!(
                    "salt of {salt} bytes does not fit an RSA-{bits} key"
                )));
            }
            Some(salt)
        }
        (Algorithm::RsaPssSha256, None) => policy.salt.len_for(bits),
        _ => None,
    };
    let times = timeline(&label, policy);
    Ok(KeyVersion {
        key_id: key_id_text(&thumbprint),
        algorithm,
        salt_len,
        bits,
        created_at: label.created,
        activates_at: times.activates_at,
        revoked_at: label.revoked,
        rotates_at: times.rotates_at,
        verify_until: times.verify_until,
        previous_key_id: None,
        next_key_id: None,
        check: super::check::SelfCheck::new(algorithm, salt_len, &spki_der),
        public_key,
        spki_der,
        spki_pem,
        private: pair.private,
        name: label.name,
        version: label.version,
        state: label.state,
    })
}

/// The current snapshot, replaced whole on every refresh so that a request
/// uses one consistent read of the token. Watchers learn of each
/// replacement.
#[derive(Debug)]
pub struct KeyRing {
    current: tokio::sync::watch::Sender<Arc<Snapshot>>,
}

impl Default for KeyRing {
    fn default() -> Self {
        Self {
            current: tokio::sync::watch::Sender::new(Arc::default()),
        }
    }
}

impl KeyRing {
    /// Returns the current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.borrow())
    }

    /// Replaces the snapshot and logs each unusable object.
    pub fn replace(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        for problem in snapshot.problems() {
            warn!(%problem, "unusable key object in token");
        }
        let snapshot = Arc::new(snapshot);
        self.current.send_replace(Arc::clone(&snapshot));
        snapshot
    }

    /// Watches the snapshot.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.current.subscribe()
    }
}

/// Checks that the salt setting of every configured key fits its active
/// version, so that an impossible salt fails at start and not at signing.
pub fn salt_problems(snapshot: &Snapshot, policies: &BTreeMap<KeyName, KeyPolicy>) -> Vec<String> {
    policies
        .iter()
        .filter_map(|(name, policy)| {
            let active = snapshot.active(name)?;
            let is_pss = active.algorithm == Algorithm::RsaPssSha256;
            (is_pss && active.salt_len.is_none()).then(|| {
                format!(
                    "keys.{name}.salt: {} does not fit version {} (RSA-{}), whose maximum PSS \
                     salt with SHA-256 is {} bytes",
                    policy.salt,
                    active.version,
                    active.bits,
                    SaltSetting::max_len(active.bits)
                )
            })
        })
        .collect()
}

/// Returns the label prefix shared by every object that Hallmark writes.
pub(crate) fn label_prefix() -> &'static str {
    label::ANY_PREFIX
}
