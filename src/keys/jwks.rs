//! The published key set as a JWKS document (RFC 7517).
//!
//! `keys` holds every NEXT, ACTIVE and RETIRED version that verifiers should
//! trust. REVOKED versions are left out of `keys`, so that a consumer that
//! reads only the standard member can never accept them, and are listed
//! without key material in the `hallmark_revoked` member instead.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::traits::PublicKeyParts;
use serde_json::{Map, Value, json};

use super::{KeyState, KeyVersion, SHA256_LEN, Snapshot};

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
                "hallmark_revoked_at": rfc3339(version.rotates_at),
            }));
        } else {
            keys.push(Value::Object(jwk(version)));
        }
    }
    json!({ "keys": keys, "hallmark_revoked": revoked })
}

/// Builds the JWK of one version, with Hallmark's lifecycle members.
fn jwk(version: &KeyVersion) -> Map<String, Value> {
    let public = &version.public_key;
    let mut members = Map::new();
    members.insert("kty".into(), "RSA".into());
    members.insert(
        "n".into(),
        URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()).into(),
    );
    members.insert(
        "e".into(),
        URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()).into(),
    );
    members.insert("kid".into(), version.key_id.clone().into());
    members.insert("use".into(), "sig".into());
    // PS256 fixes the salt to the digest length (RFC 7518, section 3.5), so
    // the name applies only to keys that sign with a 32-byte salt.
    if version.salt_len == Some(SHA256_LEN) {
        members.insert("alg".into(), "PS256".into());
    }
    members.insert("hallmark_algorithm".into(), "RSA_PSS_SHA256".into());
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
