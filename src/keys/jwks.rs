//! The published key set as a JWKS document (RFC 7517).
//!
//! `keys` contains every NEXT, ACTIVE and RETIRED version that verifiers should
//! trust. REVOKED versions are left out of `keys`, so that a consumer that
//! reads only the standard member can never accept them, and are listed
//! without key material in the `hallmark_revoked` member instead.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::{KeyState, KeyVersion, Snapshot};

/// Builds the JWKS document for the versions published at `now`.
pub fn document(snapshot: &Snapshot, now: SystemTime) -> Value {
    let mut keys = Vec::new();
    let mut revoked = Vec::new();
    for version in snapshot.published(now) {
        if version.state == KeyState::Revoked {
            revoked.push(json!({
                "kid": version.key_id,
                "hallmark_key_name": version.name.as_str(),
                "hallmark_version": version.version,
                "hallmark_revoked_at": rfc3339(version.revoked_at.unwrap_or(version.rotates_at)),
            }));
        } else {
            keys.push(Value::Object(jwk(version)));
        }
    }
    json!({ "keys": keys, "hallmark_revoked": revoked })
}

/// Builds the JWK of one version, with Hallmark's lifecycle members.
fn jwk(version: &KeyVersion) -> Map<String, Value> {
    let mut members = version.public_key.jwk();
    members.insert("kid".into(), version.key_id.clone().into());
    members.insert("use".into(), "sig".into());
    // A JOSE name is set only where it applies exactly: PS256, for one,
    // fixes the salt to the digest length (RFC 7518, section 3.5).
    if let Some(alg) = version.algorithm.jose_alg(version.salt_len) {
        members.insert("alg".into(), alg.into());
    }
    members.insert(
        "hallmark_algorithm".into(),
        version.algorithm.as_str().into(),
    );
    if let Some(salt) = version.salt_len {
        members.insert("hallmark_pss_salt_length".into(), salt.into());
    }
    members.insert("hallmark_key_name".into(), version.name.as_str().into());
    members.insert("hallmark_version".into(), version.version.into());
    members.insert("hallmark_state".into(), version.state.as_str().into());
    members.insert(
        "hallmark_created_at".into(),
        rfc3339(version.created_at).into(),
    );
    members.insert(
        "hallmark_activates_at".into(),
        rfc3339(version.activates_at).into(),
    );
    members.insert(
        "hallmark_rotates_at".into(),
        rfc3339(version.rotates_at).into(),
    );
    members.insert(
        "hallmark_verify_until".into(),
        rfc3339(version.verify_until).into(),
    );
    members
}

fn rfc3339(time: SystemTime) -> String {
    prost_types::Timestamp::from(time).to_string()
}
