//! Fixtures that the fuzz targets share with `examples/write_corpus.rs`,
//! which writes their seed corpora: the configuration that `sign_request`
//! validates against, and the keys, key set and clock of `signed_output`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use hallmark::config::{Config, Overrides};
use hallmark::verify::algorithm::{Algorithm, VerifyingKey};
use hallmark::verify::{KeySet, PublishedKey, Validity, parse_rfc3339};
use serde_json::{Value, json};

/// Configuration of `sign_request`: one key name for each algorithm family.
/// Validation never opens the PKCS#11 module, so its path need not exist.
pub const SIGN_REQUEST_CONFIG: &str = r#"
[hsm]
module = "/nonexistent/libsofthsm2.so"
token_label = "fuzz"

[signing]
default_key = "default"

[keys.default]

[keys.ec256]
algorithm = "ecdsa-p256-sha256"

[keys.ec384]
algorithm = "ecdsa-p384-sha384"

[keys.ed]
algorithm = "ed25519"

[keys."team.fraud_v2-1"]
algorithm = "rsa-pkcs1-sha256"
"#;

/// Parses [`SIGN_REQUEST_CONFIG`].
pub fn sign_request_config() -> Config {
    let env: BTreeMap<String, String> = [("HALLMARK_PIN".to_owned(), "1234".to_owned())].into();
    hallmark::config::parse(
        SIGN_REQUEST_CONFIG,
        Path::new("/"),
        &env,
        &Overrides::default(),
    )
    .unwrap_or_else(|problems| panic!("the fixed configuration is invalid: {problems:?}"))
}

/// The instant at which `signed_output` verifies every document.
pub const NOW: &str = "2026-06-01T12:00:00Z";

/// Secret scalar of the P-256 key published with a validity window and
/// version [`WINDOW_KEY_VERSION`].
pub const WINDOW_KEY_SECRET: [u8; 32] = [0x11; 32];

/// Secret scalar of the P-256 key that is valid without a time limit and
/// has no version, as a key read from PEM is.
pub const UNBOUNDED_KEY_SECRET: [u8; 32] = [0x22; 32];

/// Version number of the window key.
pub const WINDOW_KEY_VERSION: u32 = 3;

/// Name of the window key.
pub const WINDOW_KEY_NAME: &str = "fuzz-window";

/// Start of the window key's validity.
pub const WINDOW_ACTIVATES_AT: &str = "2026-01-01T00:00:00Z";

/// End of the window key's validity.
pub const WINDOW_VERIFY_UNTIL: &str = "2027-01-01T00:00:00Z";

/// A key ID that the key set lists as revoked, without a revocation time.
pub const REVOKED_KEY_ID: &str = "revoked-kid";

/// A key ID that the key set lists as revoked at [`REVOKED_AT`].
pub const REVOKED_AT_KEY_ID: &str = "revoked-at-kid";

/// Revocation time of [`REVOKED_AT_KEY_ID`].
pub const REVOKED_AT: &str = "2026-05-01T00:00:00Z";

/// A key ID whose key set entry is unusable: it has no `hallmark_version`.
pub const UNUSABLE_KEY_ID: &str = "unusable-kid";

/// Parses an RFC 3339 constant of this module.
pub fn instant(text: &str) -> SystemTime {
    parse_rfc3339(text).unwrap_or_else(|e| panic!("fixed timestamp {text:?}: {e}"))
}

/// Builds the P-256 signing key for a fixed secret scalar.
pub fn signing_key(secret: &[u8; 32]) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(secret)
        .unwrap_or_else(|e| panic!("fixed secret is not a P-256 scalar: {e}"))
}

/// Returns a P-256 key's ID: its RFC 7638 thumbprint, as Hallmark names key
/// versions.
pub fn key_id(key: &p256::ecdsa::VerifyingKey) -> String {
    VerifyingKey::P256(*key).key_id()
}

/// Builds the key set of `signed_output`.
///
/// A JWKS document supplies the window key, `untrusted` (a key whose secret
/// the fuzzer never sees, with the same window), an unusable entry and the
/// revoked IDs, one with a revocation time and one without. The unbounded
/// key is inserted directly, as a PEM key would be.
pub fn signed_output_key_set(untrusted: &p256::ecdsa::VerifyingKey) -> KeySet {
    let window_key = *signing_key(&WINDOW_KEY_SECRET).verifying_key();
    let document = json!({
        "keys": [
            window_jwk(&window_key, WINDOW_KEY_NAME, WINDOW_KEY_VERSION),
            window_jwk(untrusted, "fuzz-untrusted", 1),
            {"kid": UNUSABLE_KEY_ID, "kty": "EC", "crv": "P-256",
             "hallmark_algorithm": "ecdsa-p256-sha256"},
        ],
        "hallmark_revoked": [
            {"kid": REVOKED_KEY_ID},
            {"kid": REVOKED_AT_KEY_ID, "hallmark_revoked_at": REVOKED_AT},
        ],
    });
    let mut keys = KeySet::from_jwks(&document, "fuzz fixture")
        .unwrap_or_else(|e| panic!("the fixed key set is invalid: {e}"));

    let unbounded = *signing_key(&UNBOUNDED_KEY_SECRET).verifying_key();
    keys.insert(PublishedKey {
        key_id: key_id(&unbounded),
        key_name: String::new(),
        version: 0,
        algorithm: Algorithm::EcdsaP256Sha256,
        pss_salt_length: None,
        validity: Validity::Unbounded,
        public_key: VerifyingKey::P256(unbounded),
    });
    keys
}

/// Writes a Hallmark JWK for a P-256 key valid in the fixed window.
pub fn window_jwk(key: &p256::ecdsa::VerifyingKey, name: &str, version: u32) -> Value {
    let mut jwk = VerifyingKey::P256(*key).jwk();
    let mut set = |member: &str, value: Value| {
        jwk.insert(member.to_owned(), value);
    };
    set("kid", key_id(key).into());
    set("alg", "ES256".into());
    set("use", "sig".into());
    set("hallmark_algorithm", "ecdsa-p256-sha256".into());
    set("hallmark_key_name", name.into());
    set("hallmark_version", version.into());
    set("hallmark_state", "ACTIVE".into());
    set("hallmark_activates_at", WINDOW_ACTIVATES_AT.into());
    set("hallmark_verify_until", WINDOW_VERIFY_UNTIL.into());
    Value::Object(jwk)
}
