//! Key lifecycle in the token: creation, scheduled rotation, revocation and
//! destruction, plus repair of what an interrupted run left behind.
//!
//! Every change is a relabel or a destroy of token objects, so the token
//! alone records the lifecycle. Each step leaves a state that the next run
//! completes:
//!
//! - a pending label (generation interrupted) is destroyed and reported;
//! - two ACTIVE versions (promotion interrupted) are resolved by retiring
//!   all but the newest, which is also the one that signs meanwhile;
//! - a name without an ACTIVE version gets its NEXT version promoted, or a
//!   new version if it has none.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cryptoki::session::Session;
use cryptoki::types::Date;
use tracing::{info, warn};

use super::algorithm::{Algorithm, VerifyingKey};
use super::label::{KeyLabel, Parsed, unix_seconds};
use super::ring::{Snapshot, label_prefix, timeline};
use super::{KeyName, KeyState, SaltSetting, key_id_text};
use crate::config::KeyPolicy;
use crate::hsm::objects::{self, KeyPair};
use crate::hsm::{HsmError, Token};

/// One change made to the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A new version was generated.
    Created {
        /// Key name.
        name: KeyName,
        /// New version number.
        version: u32,
        /// Key ID of the new version.
        key_id: String,
        /// State it was created in: NEXT or ACTIVE.
        state: KeyState,
    },
    /// A version started to sign.
    Activated {
        /// Key name.
        name: KeyName,
        /// Version number.
        version: u32,
        /// Key ID.
        key_id: String,
    },
    /// A version stopped signing.
    Retired {
        /// Key name.
        name: KeyName,
        /// Version number.
        version: u32,
        /// Key ID.
        key_id: String,
    },
    /// A version was revoked.
    Revoked {
        /// Key name.
        name: KeyName,
        /// Version number.
        version: u32,
        /// Key ID.
        key_id: String,
    },
    /// A version past its verify-until time was removed from the token.
    Destroyed {
        /// Key name.
        name: KeyName,
        /// Version number.
        version: u32,
        /// Key ID.
        key_id: String,
    },
    /// An interrupted key generation was removed from the token.
    RemovedIncomplete {
        /// The pending label of the removed pair.
        label: String,
    },
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created {
                name,
                version,
                key_id,
                state,
            } => write!(
                f,
                "created {name} version {version} ({key_id}) as {}",
                state.as_str()
            ),
            Self::Activated {
                name,
                version,
                key_id,
            } => write!(f, "activated {name} version {version} ({key_id})"),
            Self::Retired {
                name,
                version,
                key_id,
            } => write!(f, "retired {name} version {version} ({key_id})"),
            Self::Revoked {
                name,
                version,
                key_id,
            } => write!(f, "revoked {name} version {version} ({key_id})"),
            Self::Destroyed {
                name,
                version,
                key_id,
            } => write!(f, "destroyed {name} version {version} ({key_id})"),
            Self::RemovedIncomplete { label } => {
                write!(f, "removed incomplete key generation {label:?}")
            }
        }
    }
}

/// The way `rotate` treats the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotateMode {
    /// Publish and promote only when the schedule is due.
    Scheduled,
    /// Promote a new version now, whatever the schedule. For a suspected
    /// compromise or a test; the new version is not pre-published.
    Force,
}

/// A Hallmark key pair in the token with its parsed label.
struct Entry {
    pair: KeyPair,
    label: KeyLabel,
    key_id: String,
}

impl Entry {
    fn transition(&self, make: fn(KeyName, u32, String) -> Transition) -> Transition {
        make(
            self.label.name.clone(),
            self.label.version,
            self.key_id.clone(),
        )
    }
}

/// Everything that the token holds for Hallmark, read in one pass.
struct TokenState {
    entries: Vec<Entry>,
    pending: Vec<KeyPair>,
    /// Versions of complete pairs that were skipped as defective. Their
    /// numbers stay taken, so that a new version never repeats one.
    skipped: Vec<(KeyName, u32)>,
}

impl TokenState {
    fn read(session: &Session) -> Result<Self, HsmError> {
        let mut entries = Vec::new();
        let mut pending = Vec::new();
        let mut skipped = Vec::new();
        let listing = objects::list_pairs_with_problems(session, label_prefix())?;
        for (label, error) in &listing.problems {
            warn!(%label, %error, "skipping a defective key object");
        }
        for pair in listing.pairs {
            match KeyLabel::parse(&pair.label) {
                Ok(Some(Parsed::Complete(label))) => {
                    let Ok(public_key) = VerifyingKey::from_material(&pair.material) else {
                        continue;
                    };
                    let thumbprint = public_key.thumbprint();
                    // The service skips such pairs, so the lifecycle must too,
                    // or the two would disagree on which version signs.
                    if pair.id != thumbprint {
                        warn!(label = %pair.label, "skipping a key object whose CKA_ID is not its thumbprint");
                        skipped.push((label.name, label.version));
                        continue;
                    }
                    let key_id = key_id_text(&thumbprint);
                    entries.push(Entry {
                        pair,
                        label,
                        key_id,
                    });
                }
                Ok(Some(Parsed::Pending(_))) => pending.push(pair),
                Ok(None) | Err(_) => {}
            }
        }
        // Within a version, the copy with the smallest key ID sorts last, so
        // that `last` and `pop` choose it when concurrent runs made copies.
        entries.sort_by(|a, b| {
            (&a.label.name, a.label.version)
                .cmp(&(&b.label.name, b.label.version))
                .then_with(|| b.key_id.cmp(&a.key_id))
        });
        Ok(Self {
            entries,
            pending,
            skipped,
        })
    }

    fn of_name<'a>(&'a self, name: &'a KeyName) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| &e.label.name == name)
    }

    fn highest_version(&self, name: &KeyName) -> u32 {
        let complete = self.of_name(name).map(|e| e.label.version);
        let pending = self
            .pending
            .iter()
            .filter_map(|pair| match KeyLabel::parse(&pair.label) {
                Ok(Some(Parsed::Pending(label))) if &label.name == name => Some(label.version),
                _ => None,
            });
        let skipped = self
            .skipped
            .iter()
            .filter(|(skipped_name, _)| skipped_name == name)
            .map(|(_, version)| *version);
        complete.chain(pending).chain(skipped).max().unwrap_or(0)
    }
}

/// Truncates a time to whole seconds, the precision of labels.
fn whole_seconds(time: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_seconds(time))
}

/// Creates a new version of `name`. Without an ACTIVE version the new one
/// becomes ACTIVE at once. Otherwise it is published as NEXT, scheduled to
/// take over when the active version is due to rotate.
pub fn create_version(
    token: &Token,
    name: &KeyName,
    policy: &KeyPolicy,
    bits: u32,
    now: SystemTime,
) -> Result<Vec<Transition>, HsmError> {
    let now = whole_seconds(now);
    token.with_admin_session(|session| {
        let state = TokenState::read(session)?;
        // One NEXT version at a time keeps promotion in version order.
        if state.of_name(name).any(|e| e.label.state == KeyState::Next) {
            return Ok(Vec::new());
        }
        let active = state
            .of_name(name)
            .filter(|e| e.label.state == KeyState::Active)
            .last();
        let activates = match active {
            None => now,
            Some(active) => timeline(&active.label, policy).rotates_at.max(now),
        };
        let key_state = if active.is_some() {
            KeyState::Next
        } else {
            KeyState::Active
        };
        let spec = KeySpec {
            bits,
            ..KeySpec::of(policy)
        };
        let created = generate(session, &state, name, spec, key_state, now, activates)?;
        Ok(vec![created])
    })
}

/// Runs the rotation schedule for each name in `policies`: repairs
/// interrupted runs, publishes a NEXT version `prepublish` before the
/// active one is due, and promotes NEXT when it is due. With
/// [`RotateMode::Force`], a new version signs from now on.
pub fn rotate(
    token: &Token,
    policies: &BTreeMap<KeyName, KeyPolicy>,
    mode: RotateMode,
    now: SystemTime,
) -> Result<Vec<Transition>, HsmError> {
    let now = whole_seconds(now);
    token.with_admin_session(|session| {
        let mut done = remove_incomplete(session)?;
        for (name, policy) in policies {
            done.extend(rotate_name(session, name, policy, mode, now)?);
        }
        Ok(done)
    })
}

fn rotate_name(
    session: &Session,
    name: &KeyName,
    policy: &KeyPolicy,
    mode: RotateMode,
    now: SystemTime,
) -> Result<Vec<Transition>, HsmError> {
    let mut done = Vec::new();
    let state = TokenState::read(session)?;
    let mut actives: Vec<&Entry> = state
        .of_name(name)
        .filter(|e| e.label.state == KeyState::Active)
        .collect();
    let next = state
        .of_name(name)
        .filter(|e| e.label.state == KeyState::Next)
        .last();
    // Repair: a name has at most one NEXT version.
    for extra in state.of_name(name).filter(|e| {
        e.label.state == KeyState::Next
            && Some(e.key_id.as_str()) != next.map(|n| n.key_id.as_str())
    }) {
        retire(session, extra, now)?;
        done.push(retired(extra));
    }

    // Repair: the newest ACTIVE version signs, so retire the older ones.
    let newest = actives.pop();
    for stale in actives {
        let retired_at = newest.and_then(|n| n.label.activates).unwrap_or(now);
        retire(session, stale, retired_at)?;
        done.push(retired(stale));
    }

    let Some(active) = newest else {
        done.push(replace_active(session, &state, name, policy, next, now)?);
        return Ok(done);
    };

    let due = timeline(&active.label, policy).rotates_at;
    let publish_from = due.checked_sub(policy.prepublish).unwrap_or(UNIX_EPOCH);
    let forced = mode == RotateMode::Force;
    match next {
        None if forced => {
            done.push(generate(
                session,
                &state,
                name,
                KeySpec::of(policy),
                KeyState::Active,
                now,
                now,
            )?);
            retire(session, active, now)?;
            done.push(retired(active));
        }
        None if now >= publish_from => {
            let activates = due.max(now);
            done.push(generate(
                session,
                &state,
                name,
                KeySpec::of(policy),
                KeyState::Next,
                now,
                activates,
            )?);
        }
        Some(next) if forced || now >= next.label.activates.unwrap_or(due) => {
            // The new version is marked ACTIVE before the old one retires, so
            // that the name always has a version to sign with.
            activate(session, next, now)?;
            done.push(activated(next));
            retire(session, active, now)?;
            done.push(retired(active));
        }
        _ => {}
    }
    Ok(done)
}

/// Revokes the version with `key_id`. A revoked ACTIVE version is replaced
/// at once: by the NEXT version if there is one, else by a new version.
pub fn revoke(
    token: &Token,
    policies: &BTreeMap<KeyName, KeyPolicy>,
    key_id: &str,
    now: SystemTime,
) -> Result<Vec<Transition>, HsmError> {
    let now = whole_seconds(now);
    token.with_admin_session(|session| {
        let state = TokenState::read(session)?;
        let matches: Vec<&Entry> = state
            .entries
            .iter()
            .filter(|e| e.key_id == key_id)
            .collect();
        let entry = match matches.as_slice() {
            [one] => *one,
            [] => {
                return Err(HsmError::NotFound {
                    what: format!("key version with key ID {key_id}"),
                });
            }
            many => {
                return Err(HsmError::Ambiguous {
                    what: format!("key ID {key_id}"),
                    count: many.len(),
                });
            }
        };
        if entry.label.state == KeyState::Revoked {
            return Ok(Vec::new());
        }
        let was_active = entry.label.state == KeyState::Active;
        let mut done = Vec::new();
        if was_active {
            // The replacement becomes ACTIVE before the revocation, so that
            // the name never lacks a signing version: key generation takes
            // long enough for running instances to read the token between
            // the two steps. The newest ACTIVE version signs meanwhile.
            let name = &entry.label.name;
            let default_policy = KeyPolicy::default();
            let policy = policies.get(name).unwrap_or(&default_policy);
            let next = state
                .of_name(name)
                .filter(|e| e.label.state == KeyState::Next)
                .last();
            done.push(replace_active(session, &state, name, policy, next, now)?);
        }

        let mut label = entry.label.clone();
        label.state = KeyState::Revoked;
        label.revoked = Some(now);
        if was_active {
            label.retired = Some(now);
        }
        relabel(session, entry, &label)?;
        done.push(
            entry.transition(|name, version, key_id| Transition::Revoked {
                name,
                version,
                key_id,
            }),
        );
        Ok(done)
    })
}

/// Destroys RETIRED and REVOKED versions whose verify-until time has
/// passed, and removes interrupted key generations.
pub fn destroy_expired(
    token: &Token,
    policies: &BTreeMap<KeyName, KeyPolicy>,
    now: SystemTime,
) -> Result<Vec<Transition>, HsmError> {
    token.with_admin_session(|session| {
        let mut done = remove_incomplete(session)?;
        let state = TokenState::read(session)?;
        let default_policy = KeyPolicy::default();
        for entry in &state.entries {
            if !matches!(entry.label.state, KeyState::Retired | KeyState::Revoked) {
                continue;
            }
            let policy = policies.get(&entry.label.name).unwrap_or(&default_policy);
            if timeline(&entry.label, policy).verify_until > now {
                continue;
            }
            destroy(session, &entry.pair)?;
            let transition = entry.transition(|name, version, key_id| Transition::Destroyed {
                name,
                version,
                key_id,
            });
            info!(%transition, "key version destroyed");
            done.push(transition);
        }
        Ok(done)
    })
}

/// Reads every key version in the token.
pub fn list_versions(
    token: &Token,
    policies: &BTreeMap<KeyName, KeyPolicy>,
) -> Result<Snapshot, HsmError> {
    let listing = token
        .with_admin_session(|session| objects::list_pairs_with_problems(session, label_prefix()))?;
    Ok(Snapshot::from_listing(listing, policies))
}

/// Destroys pairs whose generation never finished. They never signed and
/// were never published, so nothing depends on them.
fn remove_incomplete(session: &Session) -> Result<Vec<Transition>, HsmError> {
    let state = TokenState::read(session)?;
    let mut done = Vec::new();
    for pair in &state.pending {
        warn!(label = %pair.label, "removing an interrupted key generation");
        destroy(session, pair)?;
        done.push(Transition::RemovedIncomplete {
            label: pair.label.clone(),
        });
    }
    Ok(done)
}

/// Generates a version in `key_state`. The pair first gets a pending label
/// and a random CKA_ID, and only then its final label and thumbprint ID.
fn generate(
    session: &Session,
    state: &TokenState,
    name: &KeyName,
    spec: KeySpec,
    key_state: KeyState,
    now: SystemTime,
    activates: SystemTime,
) -> Result<Transition, HsmError> {
    let salt = match spec.algorithm {
        Algorithm::RsaPssSha256 => {
            let len = spec
                .salt
                .len_for(spec.bits)
                .ok_or_else(|| HsmError::MalformedObject {
                    label: name.to_string(),
                    reason: format!("salt {} does not fit an RSA-{} key", spec.salt, spec.bits),
                })?;
            u32::try_from(len).ok()
        }
        _ => None,
    };
    let label = KeyLabel {
        name: name.clone(),
        version: state.highest_version(name) + 1,
        state: key_state,
        algorithm: Some(spec.algorithm),
        salt,
        created: now,
        activates: Some(activates),
        retired: None,
        revoked: None,
    };
    let temporary_id = session
        .generate_random_vec(16)
        .map_err(|e| HsmError::pkcs11("C_GenerateRandom", e))?;
    let mut pair = objects::generate_pair(
        session,
        spec.algorithm.key_kind(spec.bits),
        &label.encode_pending(),
        &temporary_id,
        pkcs11_date(now),
    )?;
    pause_point("generated");
    let public_key =
        VerifyingKey::from_material(&pair.material).map_err(|e| HsmError::MalformedObject {
            label: pair.label.clone(),
            reason: e.to_string(),
        })?;
    let thumbprint = public_key.thumbprint();
    objects::relabel(session, &mut pair, &label.encode(), &thumbprint)?;
    pause_point("labelled");
    let key_id = key_id_text(&thumbprint);
    yield_to_concurrent_creation(session, name, label.version, &key_id, &pair)?;
    let transition = Transition::Created {
        name: name.clone(),
        version: label.version,
        key_id: key_id_text(&thumbprint),
        state: key_state,
    };
    info!(key_name = %name, version = label.version, key_id = %key_id_text(&thumbprint),
        state = key_state.as_str(), algorithm = %spec.algorithm, "key version created");
    Ok(transition)
}

/// Checks that no other process created the same version at the same time.
///
/// PKCS#11 has no lock that spans processes, so two rotations that start
/// together both pick the same version number. A process that finds the
/// other copy here retires its own if it has the larger key ID, and fails
/// so that it can be run again. The retired copy stays published, so any
/// signature it made still verifies. SoftHSM can show another process's
/// new objects late, so both copies may survive; the next rotation then
/// retires all but the one with the smallest key ID.
fn yield_to_concurrent_creation(
    session: &Session,
    name: &KeyName,
    version: u32,
    key_id: &str,
    pair: &KeyPair,
) -> Result<(), HsmError> {
    let state = TokenState::read(session)?;
    let rival = state
        .of_name(name)
        .filter(|e| e.label.version == version && e.key_id != key_id)
        .map(|e| e.key_id.as_str())
        .min();
    match rival {
        Some(rival) if rival < key_id => {
            warn!(key_name = %name, version, %key_id, %rival,
                "another process created the same version; retiring this copy");
            let mut label = state
                .of_name(name)
                .find(|e| e.key_id == key_id)
                .map(|e| e.label.clone())
                .ok_or_else(|| HsmError::NotFound {
                    what: format!("key version with key ID {key_id}"),
                })?;
            label.state = KeyState::Retired;
            label.retired = Some(label.created);
            let mut copy = pair.clone();
            let id = copy.id.clone();
            objects::relabel(session, &mut copy, &label.encode(), &id)?;
            Err(HsmError::ConcurrentChange {
                what: format!("key {name} version {version}"),
            })
        }
        _ => Ok(()),
    }
}

/// Gives a name without an ACTIVE version one: its NEXT version if it has
/// one, else a new version.
fn replace_active(
    session: &Session,
    state: &TokenState,
    name: &KeyName,
    policy: &KeyPolicy,
    next: Option<&Entry>,
    now: SystemTime,
) -> Result<Transition, HsmError> {
    match next {
        Some(next) => {
            activate(session, next, now)?;
            Ok(activated(next))
        }
        None => generate(
            session,
            state,
            name,
            KeySpec::of(policy),
            KeyState::Active,
            now,
            now,
        ),
    }
}

fn retired(entry: &Entry) -> Transition {
    entry.transition(|name, version, key_id| Transition::Retired {
        name,
        version,
        key_id,
    })
}

fn activated(entry: &Entry) -> Transition {
    entry.transition(|name, version, key_id| Transition::Activated {
        name,
        version,
        key_id,
    })
}

fn activate(session: &Session, entry: &Entry, now: SystemTime) -> Result<(), HsmError> {
    let mut label = entry.label.clone();
    label.state = KeyState::Active;
    label.activates = Some(now);
    relabel(session, entry, &label)?;
    pause_point("activated");
    info!(key_name = %label.name, version = label.version, key_id = %entry.key_id, "key version activated");
    Ok(())
}

fn retire(session: &Session, entry: &Entry, at: SystemTime) -> Result<(), HsmError> {
    let mut label = entry.label.clone();
    label.state = KeyState::Retired;
    label.retired = Some(at);
    relabel(session, entry, &label)?;
    pause_point("retired");
    info!(key_name = %label.name, version = label.version, key_id = %entry.key_id, "key version retired");
    Ok(())
}

fn relabel(session: &Session, entry: &Entry, label: &KeyLabel) -> Result<(), HsmError> {
    let mut pair = entry.pair.clone();
    let id = pair.id.clone();
    objects::relabel(session, &mut pair, &label.encode(), &id)
}

fn destroy(session: &Session, pair: &KeyPair) -> Result<(), HsmError> {
    objects::destroy_pair(session, pair)
}

/// The algorithm and, for RSA, the modulus size of a new version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// Signature algorithm.
    pub algorithm: Algorithm,
    /// RSA modulus size in bits; ignored for other algorithms.
    pub bits: u32,
    /// PSS salt setting; used only for RSA-PSS.
    pub salt: SaltSetting,
}

impl KeySpec {
    fn of(policy: &KeyPolicy) -> Self {
        Self {
            algorithm: policy.algorithm,
            bits: policy.bits,
            salt: policy.salt,
        }
    }
}

/// Environment variable that names a lifecycle step at which a debug build
/// stops, so that crash tests can kill the process there with SIGKILL.
pub const PAUSE_ENV: &str = "HALLMARK_TEST_PAUSE_AT";

/// Stops the process forever at `step` when [`PAUSE_ENV`] names it, after
/// printing a marker line to stderr. Release builds ignore the variable.
fn pause_point(step: &str) {
    if cfg!(debug_assertions) && std::env::var(PAUSE_ENV).is_ok_and(|v| v == step) {
        stderr_line!("paused at lifecycle step {step}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Converts a time to a PKCS#11 CK_DATE (UTC calendar date).
fn pkcs11_date(time: SystemTime) -> Date {
    let days = unix_seconds(time) / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    Date::new_from_str_slice(
        &format!("{year:04}"),
        &format!("{month:02}"),
        &format!("{day:02}"),
    )
    .unwrap_or_default()
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date, using
/// Howard Hinnant's `civil_from_days` algorithm.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates_are_correct() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_426), (2025, 12, 4));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
