//! Parses arbitrary UTF-8 text as a signed output document and verifies it
//! with a `Verifier` at a fixed instant, against the fixed key set of
//! `hallmark_fuzz::signed_output_key_set`.
//!
//! The key set contains two P-256 keys whose secrets are constants, so that
//! the seed corpus contains validly signed documents that reach the
//! validity, freshness and replay checks, and one P-256 key generated at
//! start, whose secret the fuzzer never sees.
//!
//! Invariants:
//!
//! - neither parsing nor verification panics;
//! - a document that `SignedOutput::parse` rejects is a malformed document
//!   to the verifier too;
//! - a parsed document, written again with `NewSignedOutput::to_json`,
//!   parses to the same fields, and its compacted manifest canonicalizes to
//!   the same bytes;
//! - no document verifies with the generated key;
//! - an accepted document names the verdict's key, and its signature
//!   verifies over the canonical manifest with the p256 crate directly.
//!   Its timestamp is within the freshness window and the key's validity;
//! - an accepted document is a replay the second time, and so is each
//!   equivalent form of its signature: `(r, n - s)` and the other encoding.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::SystemTime;

use hallmark::canon::canonicalize;
use hallmark::verify::algorithm::{Algorithm, SignatureEncoding};
use hallmark::verify::{
    KeySet, NewSignedOutput, Options, SignedOutput, Validity, Verdict, Verifier, VerifyError,
    compact_json, encode_hex,
};
use hallmark_fuzz as fixture;
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::ff::PrimeField;
use rand_core::OsRng;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

struct Fixture {
    keys: KeySet,
    /// The fixed keys by key ID.
    trusted: BTreeMap<String, VerifyingKey>,
    /// The ID of the key generated at start.
    untrusted_key_id: String,
    now: SystemTime,
    options: Options,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let untrusted = *SigningKey::random(&mut OsRng).verifying_key();
    let trusted = [fixture::WINDOW_KEY_SECRET, fixture::UNBOUNDED_KEY_SECRET]
        .iter()
        .map(|secret| {
            let key = *fixture::signing_key(secret).verifying_key();
            (fixture::key_id(&key), key)
        })
        .collect();
    Fixture {
        keys: fixture::signed_output_key_set(&untrusted),
        trusted,
        untrusted_key_id: fixture::key_id(&untrusted),
        now: fixture::instant(fixture::NOW),
        // A small cache: each input gets a new verifier.
        options: Options {
            replay_cache_size: 8,
            ..Options::default()
        },
    }
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = Verifier::new(
        FIXTURE.keys.clone(),
        "fuzz key set",
        FIXTURE.options.clone(),
    )
    .expect("the fixed options are valid");
    let result = verifier.verify_at(text, FIXTURE.now);

    let parsed = match SignedOutput::parse(text) {
        Ok(parsed) => parsed,
        Err(_) => {
            assert!(
                matches!(result, Err(VerifyError::MalformedDocument(_))),
                "an unparsable document gave {result:?}"
            );
            return;
        }
    };
    check_rewritten(&parsed);
    if let Ok(verdict) = result {
        check_accepted(text, &parsed, &verdict, &verifier);
    }
});

/// Writes the parsed fields as a new document and parses that.
fn check_rewritten(parsed: &SignedOutput<'_>) {
    let algorithm = parsed.algorithm.unwrap_or(Algorithm::EcdsaP256Sha256);
    let encoding = parsed.signature_encoding.unwrap_or_default();
    let compact = compact_json(parsed.output);
    let written = NewSignedOutput {
        output: parsed.output,
        signature: &parsed.signature,
        signing_key_id: &parsed.signing_key_id,
        key_version: parsed.key_version.unwrap_or(1),
        algorithm,
        canonicalization: parsed.canonicalization,
        signed_at: fixture::NOW,
        signature_encoding: encoding,
    }
    .to_json();
    let again = SignedOutput::parse(&written)
        .unwrap_or_else(|e| panic!("the rewritten document {written:?} does not parse: {e}"));
    assert_eq!(again.output, compact);
    assert_eq!(again.signature, parsed.signature);
    assert_eq!(again.signing_key_id, parsed.signing_key_id);
    assert_eq!(again.key_version, Some(parsed.key_version.unwrap_or(1)));
    assert_eq!(again.algorithm, Some(algorithm));
    assert_eq!(again.canonicalization, parsed.canonicalization);
    let expected_encoding = algorithm.is_ecdsa().then_some(encoding);
    assert_eq!(again.signature_encoding, expected_encoding);

    if let Ok(canonical) = canonicalize(parsed.output, parsed.canonicalization) {
        assert_eq!(
            canonicalize(&compact, parsed.canonicalization),
            Ok(canonical),
            "compacting the manifest changed its canonical bytes"
        );
    }
}

fn check_accepted(text: &str, parsed: &SignedOutput<'_>, verdict: &Verdict, verifier: &Verifier) {
    assert_ne!(
        verdict.key_id, FIXTURE.untrusted_key_id,
        "accepted a signature by the generated key"
    );
    assert_eq!(verdict.key_id, parsed.signing_key_id);
    assert_eq!(verdict.canonicalization, parsed.canonicalization);
    assert_eq!(verdict.algorithm, Algorithm::EcdsaP256Sha256);
    let key = FIXTURE
        .trusted
        .get(&verdict.key_id)
        .unwrap_or_else(|| panic!("accepted key ID {:?}", verdict.key_id));

    let canonical = canonicalize(parsed.output, parsed.canonicalization)
        .expect("an accepted manifest does not canonicalize");
    let digest = Sha256::digest(&canonical);
    let encoding = parsed.signature_encoding.unwrap_or_default();
    let signature = match encoding {
        SignatureEncoding::Der => Signature::from_der(&parsed.signature),
        SignatureEncoding::P1363 => Signature::from_slice(&parsed.signature),
    }
    .expect("an accepted signature does not decode");
    key.verify_prehash(&digest, &signature)
        .expect("the p256 crate rejects an accepted signature");

    check_times(verdict);
    check_replays(text, &signature, verifier);
}

fn check_times(verdict: &Verdict) {
    let Options {
        max_age,
        clock_skew,
        ..
    } = FIXTURE.options;
    assert!(
        verdict.timestamp >= FIXTURE.now - max_age,
        "stale output accepted"
    );
    assert!(
        verdict.timestamp <= FIXTURE.now + clock_skew,
        "future output accepted"
    );

    let published = match FIXTURE.keys.lookup(&verdict.key_id) {
        hallmark::verify::Lookup::Usable(key) => key,
        other => panic!("accepted key ID {:?}, which is {other:?}", verdict.key_id),
    };
    if let Validity::Window {
        activates_at,
        verify_until,
    } = published.validity
    {
        assert!(verdict.timestamp >= activates_at - clock_skew);
        assert!(verdict.timestamp <= verify_until);
    }
}

/// Verifies the accepted document again, and each equivalent form of its
/// signature: every one must be a replay.
fn check_replays(text: &str, signature: &Signature, verifier: &Verifier) {
    let again = verifier.verify_at(text, FIXTURE.now);
    assert!(
        matches!(again, Err(VerifyError::ReplayedOutput { .. })),
        "the second verification gave {again:?}"
    );

    let (r, s) = signature.split_scalars();
    let high_s = Signature::from_scalars(r.to_repr(), (-*s).to_repr())
        .expect("n - s is a valid non-zero scalar");
    for form in [signature, &high_s] {
        for (encoding, bytes) in [
            ("der", form.to_der().as_bytes().to_vec()),
            ("p1363", form.to_bytes().to_vec()),
        ] {
            let document = with_signature(text, &bytes, encoding);
            let result = verifier.verify_at(&document, FIXTURE.now);
            assert!(
                matches!(result, Err(VerifyError::ReplayedOutput { .. })),
                "an equivalent signature ({encoding}) gave {result:?}"
            );
        }
    }
}

/// Replaces the signature and its encoding in a document, keeping every
/// other member as written.
fn with_signature(text: &str, signature: &[u8], encoding: &str) -> String {
    let mut members: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(text).expect("an accepted document is not a JSON object");
    let raw = |json: String| RawValue::from_string(json).expect("a JSON string is a raw value");
    members.insert(
        "signature".to_owned(),
        raw(format!("\"{}\"", encode_hex(signature))),
    );
    members.insert(
        "signature_encoding".to_owned(),
        raw(format!("\"{encoding}\"")),
    );
    serde_json::to_string(&members).expect("raw values serialize")
}
