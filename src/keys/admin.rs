//! Administrative key operations used by the command line: creating a new
//! version of a key and listing what the token holds.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cryptoki::session::Session;
use cryptoki::types::Date;
use tracing::info;

use super::label::{KeyLabel, Parsed, unix_seconds};
use super::ring::{Snapshot, label_prefix};
use super::{KeyName, KeyState, rsa_thumbprint};
use crate::config::KeyPolicy;
use crate::hsm::{HsmError, Token, objects};

/// Creates a new version of `name` in the token and makes it the one that
/// signs. Earlier ACTIVE versions of the name become RETIRED, and stay
/// published until their verify-until time.
///
/// Returns the new version number and its key ID.
pub fn create_version(
    token: &Token,
    name: &KeyName,
    bits: u32,
    now: SystemTime,
) -> Result<(u32, String), HsmError> {
    // Labels hold whole seconds, so the in-memory value is truncated to match.
    let now = UNIX_EPOCH + Duration::from_secs(unix_seconds(now));
    token.with_admin_session(|session| {
        let pairs = objects::list_rsa_pairs(session, label_prefix())?;
        let mut previous_active = Vec::new();
        let mut highest = 0;
        for pair in &pairs {
            let label = match KeyLabel::parse(&pair.label) {
                Ok(Some(Parsed::Complete(label) | Parsed::Pending(label))) => label,
                _ => continue,
            };
            if &label.name != name {
                continue;
            }
            highest = highest.max(label.version);
            if label.state == KeyState::Active && pair.label.starts_with(super::label::PREFIX) {
                previous_active.push((pair.clone(), label));
            }
        }

        let label = KeyLabel {
            name: name.clone(),
            version: highest + 1,
            state: KeyState::Active,
            created: now,
            retired: None,
        };
        let temporary_id = random_id(session)?;
        let mut pair = objects::generate_rsa_pair(
            session,
            bits,
            &label.encode_pending(),
            &temporary_id,
            pkcs11_date(now),
        )?;
        let thumbprint = rsa_thumbprint(&pair.modulus, &pair.exponent);
        objects::relabel(session, &mut pair, &label.encode(), &thumbprint)?;
        let key_id = super::key_id_text(&thumbprint);
        info!(key_name = %name, version = label.version, %key_id, bits, "key version created");

        for (mut old_pair, mut old_label) in previous_active {
            old_label.state = KeyState::Retired;
            old_label.retired = Some(now);
            let id = old_pair.id.clone();
            objects::relabel(session, &mut old_pair, &old_label.encode(), &id)?;
            info!(key_name = %name, version = old_label.version, "key version retired");
        }
        Ok((label.version, key_id))
    })
}

/// Reads every key version in the token.
pub fn list_versions(
    token: &Token,
    policies: &BTreeMap<KeyName, KeyPolicy>,
) -> Result<Snapshot, HsmError> {
    let pairs =
        token.with_admin_session(|session| objects::list_rsa_pairs(session, label_prefix()))?;
    Ok(Snapshot::build(pairs, policies))
}

fn random_id(session: &Session) -> Result<Vec<u8>, HsmError> {
    session
        .generate_random_vec(16)
        .map_err(|e| HsmError::pkcs11("C_GenerateRandom", e))
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
