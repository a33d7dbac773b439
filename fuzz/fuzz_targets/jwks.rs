//! Reads arbitrary UTF-8 text as a key set: as a JWKS document with
//! `KeySet::from_jwks`, and as PEM with `KeySet::from_pem` under three sets
//! of RSA parameters.
//!
//! Invariants, from what the two parsers document:
//!
//! - neither panics;
//! - an accepted JWKS document is an object with a `keys` array in which no
//!   non-empty `kid` appears twice. Every such `kid` names an entry of the
//!   set, and every ID in `hallmark_revoked` is revoked;
//! - each usable JWKS key has its entry's `kid` as key ID, its entry's
//!   `hallmark_algorithm`, which its public key can verify, and its entry's
//!   `hallmark_key_name` (or none). Its `hallmark_version` is at least 1,
//!   and it has a PSS salt length, which fits the key, exactly when it is
//!   an RSA-PSS key. An EC key's coordinates are the entry's `x` and `y`;
//! - an accepted PEM text gives at least one key, and each key's ID is the
//!   RFC 7638 thumbprint of its public key, recomputed here from its JWK.
//!   It has no version, no name and no time limit, and the algorithm and
//!   salt length come from the parameters for RSA keys.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hallmark::verify::algorithm::{Algorithm, VerifyingKey};
use hallmark::verify::{KeySet, Lookup, PemParameters, PublishedKey, Validity, parse_rfc3339};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The RSA parameters that PEM text is read with: none, which rejects RSA
/// keys, and each RSA algorithm, PSS with a salt of 64 bytes.
const PEM_PARAMETERS: [PemParameters; 3] = [
    PemParameters {
        rsa_algorithm: None,
        pss_salt_length: None,
    },
    PemParameters {
        rsa_algorithm: Some(Algorithm::RsaPssSha256),
        pss_salt_length: Some(64),
    },
    PemParameters {
        rsa_algorithm: Some(Algorithm::RsaPkcs1v15Sha256),
        pss_salt_length: None,
    },
];

/// SHA-256 digest length: the RSA-PSS salt of a key read from PEM when the
/// parameters give none.
const DEFAULT_SALT_LEN: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(document) = serde_json::from_str::<Value>(text)
        && let Ok(keys) = KeySet::from_jwks(&document, "fuzz input")
    {
        check_jwks(&document, &keys);
    }
    for parameters in PEM_PARAMETERS {
        if let Ok(keys) = KeySet::from_pem(text, parameters, "fuzz input") {
            check_pem(text, &keys, parameters);
        }
    }
});

fn check_jwks(document: &Value, keys: &KeySet) {
    let entries = document["keys"]
        .as_array()
        .expect("accepted a document without a keys array");
    let kids: Vec<&str> = entries
        .iter()
        .filter_map(|entry| entry.get("kid").and_then(Value::as_str))
        .filter(|kid| !kid.is_empty())
        .collect();
    let unique: BTreeSet<&str> = kids.iter().copied().collect();
    assert_eq!(unique.len(), kids.len(), "accepted a repeated kid");

    let revoked: BTreeSet<&str> = match document.get("hallmark_revoked") {
        Some(Value::Array(revoked)) => revoked
            .iter()
            .filter_map(|entry| entry.get("kid").and_then(Value::as_str))
            .collect(),
        None | Some(Value::Null) => BTreeSet::new(),
        Some(other) => panic!("accepted hallmark_revoked {other}"),
    };
    for kid in &unique {
        assert_ne!(keys.lookup(kid), Lookup::Unknown, "kid {kid:?} is unknown");
    }
    for kid in &revoked {
        assert!(
            matches!(keys.lookup(kid), Lookup::Revoked(_)),
            "revoked kid {kid:?} is not revoked"
        );
    }

    for key in keys.keys() {
        assert!(
            unique.contains(key.key_id.as_str()),
            "key ID {:?} is no entry's kid",
            key.key_id
        );
        let entry = entries
            .iter()
            .find(|entry| entry.get("kid").and_then(Value::as_str) == Some(&key.key_id))
            .and_then(Value::as_object)
            .expect("a usable key's entry is not an object");
        check_jwk_key(entry, key);
        if !revoked.contains(key.key_id.as_str()) {
            assert_eq!(keys.lookup(&key.key_id), Lookup::Usable(key));
        }
    }
}

fn check_jwk_key(entry: &Map<String, Value>, key: &PublishedKey) {
    let text = |name: &str| entry.get(name).and_then(Value::as_str);
    assert_eq!(Some(key.algorithm.as_str()), text("hallmark_algorithm"));
    assert_eq!(key.key_name, text("hallmark_key_name").unwrap_or_default());
    assert!(key.version >= 1, "version {}", key.version);
    assert_eq!(
        entry.get("hallmark_version").and_then(Value::as_u64),
        Some(u64::from(key.version))
    );
    check_algorithm_and_salt(key);

    let stated_window = text("hallmark_activates_at")
        .and_then(|t| parse_rfc3339(t).ok())
        .zip(text("hallmark_verify_until").and_then(|t| parse_rfc3339(t).ok()));
    match (key.validity, stated_window) {
        (
            Validity::Window {
                activates_at,
                verify_until,
            },
            Some(stated),
        ) => assert_eq!((activates_at, verify_until), stated),
        (Validity::Unknown, None) => {}
        (validity, stated) => panic!("validity {validity:?} for the entry's window {stated:?}"),
    }

    // RFC 7518, section 6.2.1.2: `x` and `y` are each the full coordinate
    // length, so no other split of the same point names the key.
    if matches!(
        key.public_key,
        VerifyingKey::P256(_) | VerifyingKey::P384(_)
    ) {
        let jwk = key.public_key.jwk();
        for coordinate in ["x", "y"] {
            let stated = text(coordinate).and_then(|c| URL_SAFE_NO_PAD.decode(c).ok());
            let parsed = jwk[coordinate]
                .as_str()
                .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok());
            assert_eq!(
                stated, parsed,
                "the key's {coordinate} differs from the entry's"
            );
        }
    }
}

fn check_algorithm_and_salt(key: &PublishedKey) {
    assert!(
        key.public_key.algorithms().contains(&key.algorithm),
        "a {:?} key cannot verify {}",
        key.public_key.algorithms(),
        key.algorithm
    );
    assert_eq!(
        key.pss_salt_length.is_some(),
        key.algorithm == Algorithm::RsaPssSha256,
        "salt length {:?} for {}",
        key.pss_salt_length,
        key.algorithm
    );
    if let (Some(salt), Some(max)) = (key.pss_salt_length, key.public_key.max_pss_salt_len()) {
        assert!(
            salt <= max,
            "a salt of {salt} bytes exceeds the maximum {max}"
        );
    }
}

fn check_pem(text: &str, keys: &KeySet, parameters: PemParameters) {
    assert!(!keys.is_empty(), "accepted PEM without keys");
    let blocks = text.matches("-----BEGIN PUBLIC KEY-----").count();
    assert!(keys.keys().count() <= blocks, "more keys than PEM blocks");
    for key in keys.keys() {
        assert_eq!(
            key.key_id,
            thumbprint(&key.public_key),
            "key ID is not the thumbprint"
        );
        assert_eq!(key.validity, Validity::Unbounded);
        assert_eq!(key.version, 0);
        assert!(key.key_name.is_empty());
        check_algorithm_and_salt(key);
        if matches!(key.public_key, VerifyingKey::Rsa(_)) {
            assert_eq!(Some(key.algorithm), parameters.rsa_algorithm);
            if key.algorithm == Algorithm::RsaPssSha256 {
                let expected = parameters.pss_salt_length.unwrap_or(DEFAULT_SALT_LEN);
                assert_eq!(key.pss_salt_length, Some(expected));
            }
        }
    }
}

/// Computes the RFC 7638 thumbprint from the key's JWK: the SHA-256 of the
/// required members, which `jwk` returns exactly, sorted by name and
/// written without whitespace.
fn thumbprint(key: &VerifyingKey) -> String {
    let jwk = key.jwk();
    let sorted: BTreeMap<&String, &Value> = jwk.iter().collect();
    let members = serde_json::to_string(&sorted).expect("a map of strings serializes");
    URL_SAFE_NO_PAD.encode(Sha256::digest(members.as_bytes()))
}
