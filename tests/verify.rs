//! The consumer-side verifier: every rejection reason with its exact error,
//! replays across a restart, and verification of outputs that a real server
//! signed, through its JWKS endpoint and its ListKeys call.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TestServer, TestToken};
use hallmark::canon::{Profile, canonicalize};
use hallmark::pb;
use hallmark::verify::algorithm::{Algorithm, SignatureEncoding};
use hallmark::verify::{
    KeySet, NewSignedOutput, Options, PemParameters, Verifier, encode_hex, format_rfc3339,
    parse_rfc3339,
};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SOURCE: &str = "keys.json";
const ACTIVATES_AT: &str = "2026-01-01T00:00:00Z";
const VERIFY_UNTIL: &str = "2026-06-01T00:00:00Z";
const NOW: &str = "2026-03-01T12:00:00Z";

fn at(text: &str) -> SystemTime {
    parse_rfc3339(text).expect("valid test timestamp")
}

/// A local P-256 key standing in for a key version that a server published.
struct Producer {
    key: p256::ecdsa::SigningKey,
    key_id: String,
}

impl Producer {
    fn new(seed: u8) -> Self {
        let key = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).expect("valid scalar");
        let verifying = hallmark::verify::algorithm::VerifyingKey::P256(*key.verifying_key());
        Self {
            key_id: verifying.key_id(),
            key,
        }
    }

    /// Returns the JWK that Hallmark's JWKS endpoint would publish for the key.
    fn jwk(&self, activates_at: &str, verify_until: &str) -> Value {
        let verifying = hallmark::verify::algorithm::VerifyingKey::P256(*self.key.verifying_key());
        let mut jwk = verifying.jwk();
        jwk.insert("kid".into(), self.key_id.clone().into());
        jwk.insert("hallmark_algorithm".into(), "ecdsa-p256-sha256".into());
        jwk.insert("hallmark_key_name".into(), "fraud-model".into());
        jwk.insert("hallmark_version".into(), 3.into());
        jwk.insert("hallmark_activates_at".into(), activates_at.into());
        jwk.insert("hallmark_verify_until".into(), verify_until.into());
        Value::Object(jwk)
    }

    fn key_set(&self) -> KeySet {
        self.key_set_valid(ACTIVATES_AT, VERIFY_UNTIL)
    }

    fn key_set_valid(&self, activates_at: &str, verify_until: &str) -> KeySet {
        let jwks = json!({ "keys": [self.jwk(activates_at, verify_until)] });
        KeySet::from_jwks(&jwks, SOURCE).expect("valid JWKS")
    }

    /// Signs a manifest with the given timestamp and returns the document.
    fn sign(&self, timestamp: &str, profile: Profile) -> String {
        let manifest = format!(
            r#"{{"prediction": "fraud", "score": 0.97, "model_version": "gbm-7", "timestamp": "{timestamp}"}}"#
        );
        let digest = Sha256::digest(canonicalize(&manifest, profile).expect("canonical"));
        let signature: p256::ecdsa::Signature = self.key.sign_prehash(&digest).expect("signs");
        NewSignedOutput {
            output: &manifest,
            signature: signature.to_der().as_bytes(),
            signing_key_id: &self.key_id,
            key_version: 3,
            algorithm: Algorithm::EcdsaP256Sha256,
            canonicalization: profile,
            signed_at: timestamp,
            signature_encoding: SignatureEncoding::Der,
        }
        .to_json()
    }
}

fn verifier(keys: KeySet) -> Verifier {
    Verifier::new(keys, SOURCE, Options::default()).expect("verifier builds")
}

/// Verifies at [`NOW`] and returns the error's reason and message.
fn rejection(verifier: &Verifier, document: &str) -> (&'static str, String) {
    match verifier.verify_at(document, at(NOW)) {
        Ok(verdict) => panic!("expected a rejection, got {verdict:?}"),
        Err(error) => (error.reason(), error.to_string()),
    }
}

#[test]
fn a_fresh_output_verifies_with_its_key() {
    let producer = Producer::new(7);
    let verifier = verifier(producer.key_set());
    for profile in [Profile::Jcs, Profile::PythonSortKeys] {
        let document = producer.sign("2026-03-01T11:59:50Z", profile);
        let verdict = verifier
            .verify_at(&document, at(NOW))
            .expect("the document verifies");
        assert_eq!(verdict.key_id, producer.key_id);
        assert_eq!(verdict.key_name, "fraud-model");
        assert_eq!(verdict.key_version, 3);
        assert_eq!(verdict.algorithm, Algorithm::EcdsaP256Sha256);
        assert_eq!(verdict.canonicalization, profile);
        assert_eq!(verdict.timestamp, at("2026-03-01T11:59:50Z"));
    }
}

#[test]
fn malformed_document() {
    let producer = Producer::new(7);
    let verifier = verifier(producer.key_set());
    let document = producer
        .sign("2026-03-01T11:59:50Z", Profile::Jcs)
        .replace("\"timestamp\"", "\"time\"");
    assert_eq!(
        rejection(&verifier, &document),
        (
            "malformed_document",
            "malformed document: output has no \"timestamp\" field to check freshness against"
                .into()
        )
    );
    let document = producer
        .sign("2026-03-01T11:59:50Z", Profile::Jcs)
        .replace("0.97", "NaN");
    assert_eq!(
        rejection(&verifier, &document),
        (
            "malformed_document",
            "malformed document: the signed output is not JSON: expected value at line 1 \
             column 41"
                .into()
        )
    );
}

#[test]
fn unknown_key() {
    let producer = Producer::new(7);
    let other = Producer::new(8);
    let verifier = verifier(producer.key_set());
    let document = other.sign("2026-03-01T11:59:50Z", Profile::Jcs);
    assert_eq!(
        rejection(&verifier, &document),
        (
            "unknown_key",
            format!(
                "unknown key: signing_key_id {} is not in the key set from keys.json",
                other.key_id
            )
        )
    );
}

#[test]
fn revoked_key() {
    let producer = Producer::new(7);
    let jwks = json!({
        "keys": [],
        "hallmark_revoked": [{"kid": producer.key_id, "hallmark_revoked_at": "2026-02-01T00:00:00Z"}],
    });
    let verifier = verifier(KeySet::from_jwks(&jwks, SOURCE).expect("valid JWKS"));
    let document = producer.sign("2026-03-01T11:59:50Z", Profile::Jcs);
    assert_eq!(
        rejection(&verifier, &document),
        (
            "revoked_key",
            format!(
                "revoked key: key {} was revoked at 2026-02-01T00:00:00Z",
                producer.key_id
            )
        )
    );
}

#[test]
fn bad_signature() {
    let producer = Producer::new(7);
    let verifier = verifier(producer.key_set());
    let document = producer
        .sign("2026-03-01T11:59:50Z", Profile::Jcs)
        .replace("\"fraud\"", "\"legit\"");
    assert_eq!(
        rejection(&verifier, &document),
        (
            "bad_signature",
            format!(
                "bad signature: the ecdsa-p256-sha256 signature does not match the jcs output \
                 for key {} (ecdsa-p256-sha256 signature does not verify)",
                producer.key_id
            )
        )
    );
}

/// A document that names one key but carries another key's signature is
/// checked with the named key only, and fails.
#[test]
fn the_named_key_alone_is_tried() {
    let producer = Producer::new(7);
    let other = Producer::new(8);
    let jwks = json!({ "keys": [
        producer.jwk(ACTIVATES_AT, VERIFY_UNTIL),
        other.jwk(ACTIVATES_AT, VERIFY_UNTIL),
    ]});
    let verifier = verifier(KeySet::from_jwks(&jwks, SOURCE).expect("valid JWKS"));
    let document = other
        .sign("2026-03-01T11:59:50Z", Profile::Jcs)
        .replace(&other.key_id, &producer.key_id);
    assert_eq!(rejection(&verifier, &document).0, "bad_signature");
}

#[test]
fn parameters_come_from_the_key_set() {
    let producer = Producer::new(7);
    let verifier = verifier(producer.key_set());
    let document = producer.sign("2026-03-01T11:59:50Z", Profile::Jcs);
    let cases = [
        (
            document.replace("\"ecdsa-p256-sha256\"", "\"ed25519\""),
            format!(
                "bad signature: the document names algorithm ed25519 but key {} is \
                 ecdsa-p256-sha256",
                producer.key_id
            ),
        ),
        (
            document.replace("\"key_version\":3", "\"key_version\":4"),
            format!(
                "bad signature: the document names key_version 4 but key {} is version 3",
                producer.key_id
            ),
        ),
        (
            // The DER signature read as P1363 is the wrong length.
            document.replace("\"der\"", "\"p1363\""),
            format!(
                "bad signature: the ecdsa-p256-sha256 signature does not match the jcs output \
                 for key {} (malformed ecdsa-p256-sha256 signature: not a P-256 signature in \
                 the requested encoding)",
                producer.key_id
            ),
        ),
    ];
    for (document, expected) in cases {
        assert_eq!(rejection(&verifier, &document), ("bad_signature", expected));
    }
}

#[test]
fn expired_key() {
    let producer = Producer::new(7);
    let verifier = verifier(producer.key_set());
    // Before the window opens, beyond the 30 s clock skew allowance.
    let early = producer.sign("2025-12-31T23:59:29Z", Profile::Jcs);
    assert_eq!(
        rejection(&verifier, &early),
        (
            "expired_key",
            format!(
                "expired key: output timestamp 2025-12-31T23:59:29.000000Z is before key {} \
                 activates at 2026-01-01T00:00:00.000000Z",
                producer.key_id
            )
        )
    );
    // The window has closed by the time the consumer verifies.
    let late = producer.sign("2026-06-01T00:00:00Z", Profile::Jcs);
    let error = verifier
        .verify_at(&late, at("2026-06-01T00:00:01Z"))
        .expect_err("the window has closed");
    assert_eq!(
        error.to_string(),
        format!(
            "expired key: key {} stopped being valid at 2026-06-01T00:00:00.000000Z",
            producer.key_id
        )
    );
    // A key set without a window cannot vouch for any timestamp.
    let mut jwk = producer.jwk(ACTIVATES_AT, VERIFY_UNTIL);
    jwk.as_object_mut()
        .map(|members| members.remove("hallmark_verify_until"));
    let keys = KeySet::from_jwks(&json!({ "keys": [jwk] }), SOURCE).expect("valid JWKS");
    let document = producer.sign("2026-03-01T11:59:50Z", Profile::Jcs);
    assert_eq!(
        rejection(&self::verifier(keys), &document),
        (
            "expired_key",
            format!(
                "expired key: the key set gives no validity window for key {}",
                producer.key_id
            )
        )
    );
}

#[test]
fn stale_output() {
    let producer = Producer::new(7);
    let verifier = verifier(producer.key_set());
    let old = producer.sign("2026-03-01T11:54:59Z", Profile::Jcs);
    assert_eq!(
        rejection(&verifier, &old),
        (
            "stale_output",
            "stale output: output timestamp 2026-03-01T11:54:59.000000Z is older than the \
             maximum age of 5m"
                .into()
        )
    );
    let future = producer.sign("2026-03-01T12:00:31Z", Profile::Jcs);
    assert_eq!(
        rejection(&verifier, &future),
        (
            "stale_output",
            "stale output: output timestamp 2026-03-01T12:00:31.000000Z is more than 30s in \
             the future"
                .into()
        )
    );
    // The edges are inside the window.
    for timestamp in ["2026-03-01T11:55:00Z", "2026-03-01T12:00:30Z"] {
        let document = producer.sign(timestamp, Profile::Jcs);
        assert!(
            verifier.verify_at(&document, at(NOW)).is_ok(),
            "{timestamp}"
        );
    }
}

#[test]
fn replayed_output() {
    let producer = Producer::new(7);
    let verifier = verifier(producer.key_set());
    let document = producer.sign("2026-03-01T11:59:50Z", Profile::Jcs);
    assert!(verifier.verify_at(&document, at(NOW)).is_ok());
    assert_eq!(
        rejection(&verifier, &document),
        (
            "replayed_output",
            format!(
                "replayed output: this signature by key {} was already accepted within the \
                 last 5m30s",
                producer.key_id
            )
        )
    );
}

/// An ECDSA signature stays valid with `s` replaced by `n - s`, and in
/// either encoding; none of these forms slips past the replay cache.
#[test]
fn re_encoded_ecdsa_signatures_are_replays() {
    let producer = Producer::new(7);
    let verifier = verifier(producer.key_set());
    let document = producer.sign("2026-03-01T11:59:50Z", Profile::Jcs);
    let parsed: Value = serde_json::from_str(&document).expect("valid JSON");
    let der = hex_decode(parsed["signature"].as_str().expect("hex signature"));
    let signature = p256::ecdsa::Signature::from_der(&der).expect("DER signature");
    let flipped = signature_with_negated_s(&signature);

    let p1363 = document
        .replace(&encode_hex(&der), &encode_hex(&signature.to_bytes()))
        .replace("\"der\"", "\"p1363\"");
    let negated = document.replace(&encode_hex(&der), &encode_hex(flipped.to_der().as_bytes()));
    assert!(verifier.verify_at(&document, at(NOW)).is_ok());
    for replay in [p1363, negated] {
        assert_eq!(rejection(&verifier, &replay).0, "replayed_output");
    }
}

fn signature_with_negated_s(signature: &p256::ecdsa::Signature) -> p256::ecdsa::Signature {
    let (r, s) = signature.split_scalars();
    let negated = -*s;
    p256::ecdsa::Signature::from_scalars(r.to_bytes(), negated.to_bytes()).expect("valid scalars")
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn replays_are_refused_after_a_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let producer = Producer::new(7);
    let options = Options {
        replay_cache_path: Some(dir.path().join("replay.cache")),
        ..Options::default()
    };
    // Opening the cache drops entries expired by the wall clock, so this
    // test runs at the real time.
    let keys = || producer.key_set_valid("2020-01-01T00:00:00Z", "2100-01-01T00:00:00Z");
    let now = SystemTime::now();
    let document = producer.sign(&format_rfc3339(now - Duration::from_secs(10)), Profile::Jcs);
    {
        let first = Verifier::new(keys(), SOURCE, options.clone()).expect("opens");
        assert!(first.verify(&document).is_ok());
    }
    let restarted = Verifier::new(keys(), SOURCE, options).expect("reopens");
    let error = restarted.verify(&document).expect_err("a replay");
    assert_eq!(error.reason(), "replayed_output");
}

#[test]
fn an_unusable_key_set_entry_names_its_problem() {
    let producer = Producer::new(7);
    let mut jwk = producer.jwk(ACTIVATES_AT, VERIFY_UNTIL);
    jwk["crv"] = "P-384".into();
    let keys = KeySet::from_jwks(&json!({ "keys": [jwk] }), SOURCE).expect("valid JWKS");
    let document = producer.sign("2026-03-01T11:59:50Z", Profile::Jcs);
    assert_eq!(
        rejection(&verifier(keys), &document),
        (
            "bad_signature",
            format!(
                "bad signature: the key set entry for {} is unusable: a ecdsa-p256-sha256 key \
                 must have kty EC and crv P-256",
                producer.key_id
            )
        )
    );
}

/// Coordinates split at another place than the field length spell the
/// same concatenated point, so they must not name the key.
#[test]
fn ec_coordinates_of_wrong_length_are_unusable() {
    let producer = Producer::new(7);
    let mut jwk = producer.jwk(ACTIVATES_AT, VERIFY_UNTIL);
    let mut x = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().expect("x"))
        .expect("base64url");
    let mut y = URL_SAFE_NO_PAD
        .decode(jwk["y"].as_str().expect("y"))
        .expect("base64url");
    x.push(y.remove(0));
    jwk["x"] = URL_SAFE_NO_PAD.encode(&x).into();
    jwk["y"] = URL_SAFE_NO_PAD.encode(&y).into();
    let keys = KeySet::from_jwks(&json!({ "keys": [jwk] }), SOURCE).expect("valid JWKS");
    let document = producer.sign("2026-03-01T11:59:50Z", Profile::Jcs);
    assert_eq!(
        rejection(&verifier(keys), &document),
        (
            "bad_signature",
            format!(
                "bad signature: the key set entry for {} is unusable: x is 33 bytes, not the \
                 curve's 32",
                producer.key_id
            )
        )
    );
}

/// A salt longer than the modulus allows makes the `rsa` crate panic, so
/// the key set refuses it before any signature reaches the crate.
#[test]
fn impossible_pss_salts_are_unusable() {
    let modulus = URL_SAFE_NO_PAD.encode([0xc5; 256]);
    let jwk = |salt: Value| {
        json!({
            "kty": "RSA", "n": modulus, "e": "AQAB", "kid": "rsa-1",
            "hallmark_algorithm": "rsa-pss-sha256", "hallmark_pss_salt_length": salt,
            "hallmark_version": 1,
            "hallmark_activates_at": ACTIVATES_AT, "hallmark_verify_until": VERIFY_UNTIL,
        })
    };
    let document = r#"{"output": {"timestamp": "2026-03-01T11:59:50Z"}, "signature": "00",
        "signing_key_id": "rsa-1", "canonicalization": "jcs"}"#;
    let cases = [
        (
            json!(u64::MAX),
            "a PSS salt of 18446744073709551615 bytes does not fit a 2048-bit key; the maximum \
             is 222",
        ),
        (
            json!(223),
            "a PSS salt of 223 bytes does not fit a 2048-bit key; the maximum is 222",
        ),
        (
            json!(32.0),
            "hallmark_pss_salt_length 32.0 is not a byte count",
        ),
        (json!(-1), "hallmark_pss_salt_length -1 is not a byte count"),
    ];
    for (salt, problem) in cases {
        let keys = KeySet::from_jwks(&json!({ "keys": [jwk(salt)] }), SOURCE).expect("valid JWKS");
        assert_eq!(
            rejection(&verifier(keys), document),
            (
                "bad_signature",
                format!("bad signature: the key set entry for rsa-1 is unusable: {problem}")
            )
        );
    }
}

#[test]
fn windows_that_overflow_are_refused() {
    let producer = Producer::new(7);
    let options = Options {
        max_age: Duration::MAX,
        ..Options::default()
    };
    let error = Verifier::new(producer.key_set(), SOURCE, options).map(|_| ());
    assert_eq!(
        error.map_err(|e| e.to_string()),
        Err("max_age plus clock_skew must be at most 36500d".to_owned())
    );
}

#[test]
fn pem_keys_verify_without_a_window() {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    let producer = Producer::new(7);
    let pem = producer
        .key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("encodes");
    let keys = KeySet::from_pem(&pem, PemParameters::default(), "key.pem").expect("valid PEM");
    let verifier = Verifier::new(keys, "key.pem", Options::default()).expect("builds");
    let document = producer.sign("2030-01-01T00:00:00Z", Profile::Jcs);
    let verdict = verifier
        .verify_at(&document, at("2030-01-01T00:00:10Z"))
        .expect("PEM keys have no window");
    // PEM gives no version, so the document's key_version 3 goes unchecked.
    assert_eq!(verdict.key_version, 0);
    assert_eq!(verdict.key_id, producer.key_id);
}

/// Signs a manifest through the server as a model service would and
/// returns the signed output document.
async fn sign_through(server: &TestServer, manifest: &str, profile: Profile) -> String {
    let digest = Sha256::digest(canonicalize(manifest, profile).expect("canonical")).to_vec();
    let mut client = server.client().await;
    let response = client
        .sign(pb::SignRequest {
            digest,
            hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
            key_name: String::new(),
            request_id: "verify-test".into(),
            signature_encoding: pb::SignatureEncoding::Der as i32,
        })
        .await
        .expect("Sign succeeds")
        .into_inner();
    let key = response.key.expect("the response names its key");
    let signed_at = format_rfc3339(SystemTime::now());
    NewSignedOutput {
        output: manifest,
        signature: &response.signature,
        signing_key_id: &key.key_id,
        key_version: key.version,
        algorithm: Algorithm::EcdsaP256Sha256,
        canonicalization: profile,
        signed_at: &signed_at,
        signature_encoding: SignatureEncoding::Der,
    }
    .to_json()
}

#[tokio::test(flavor = "multi_thread")]
async fn server_outputs_verify_and_revocation_reaches_the_verifier() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    // A short refresh interval publishes the revocation quickly.
    let server = TestServer::start_with(
        &token,
        "127.0.0.1:0",
        &[("HALLMARK_REFRESH_INTERVAL", "200ms")],
    );
    server.wait_serving(Duration::from_secs(30)).await;
    let manifest = format!(
        r#"{{"prediction": "versicolor", "timestamp": "{}"}}"#,
        format_rfc3339(SystemTime::now())
    );
    let jcs = sign_through(&server, &manifest, Profile::Jcs).await;
    let python = sign_through(&server, &manifest, Profile::PythonSortKeys).await;

    let jwks_url = format!("http://{}/.well-known/jwks.json", server.metrics_addr);
    let options = Options {
        refresh_min_interval: Duration::ZERO,
        ..Options::default()
    };
    let url = jwks_url.clone();
    let verifier = tokio::task::spawn_blocking(move || {
        Verifier::fetching(&url, PemParameters::default(), options)
    })
    .await
    .expect("joins")
    .expect("the JWKS is served");
    let verdict = verifier.verify(&jcs).expect("the JCS output verifies");
    assert_eq!(verdict.key_name, "default");
    assert_eq!(verdict.key_version, 1);
    let key_id = verdict.key_id.clone();

    let list = server
        .client()
        .await
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner();
    let from_list = Verifier::new(
        KeySet::from_list_keys(&list),
        "ListKeys",
        Options::default(),
    )
    .expect("builds");
    let verdict = from_list
        .verify(&python)
        .expect("the python-sort-keys output verifies");
    assert_eq!(verdict.key_id, key_id);
    assert_eq!(verdict.canonicalization, Profile::PythonSortKeys);

    let revoke = token.hallmark(&["keys", "revoke", &key_id]);
    assert_eq!(revoke.status.code(), Some(0), "{revoke:?}");
    // The server publishes the revocation at its next refresh; the
    // verifier picks it up at its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let verifier = std::sync::Arc::new(verifier);
    loop {
        let v = std::sync::Arc::clone(&verifier);
        let refreshed = tokio::task::spawn_blocking(move || v.refresh())
            .await
            .expect("joins");
        assert!(refreshed.is_ok(), "{refreshed:?}");
        let key_set = verifier.key_set();
        if matches!(
            key_set.lookup(&key_id),
            hallmark::verify::Lookup::Revoked(_)
        ) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the revocation never reached the JWKS"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let error = verifier.verify(&python).expect_err("the key is revoked");
    assert_eq!(error.reason(), "revoked_key");
    assert!(
        error
            .to_string()
            .starts_with(&format!("revoked key: key {key_id} was revoked at 20")),
        "{error}"
    );
}

fn hallmark(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .args(args)
        .output()
        .expect("hallmark runs")
}

#[test]
fn sign_command_checks_manifests_before_calling() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let manifests = dir.path().join("manifests.jsonl");
    std::fs::write(
        &manifests,
        "{\"timestamp\": \"2026-03-01T12:00:00Z\"}\n{\"prediction\": 1}\n",
    )
    .expect("writes");
    // No server listens on the target: the second manifest fails first.
    let output = hallmark(&[
        "sign",
        "--manifest",
        manifests.to_str().unwrap_or_default(),
        "--target",
        "127.0.0.1:9",
    ]);
    assert_eq!(output.status.code(), Some(65));
    assert_eq!(output.stdout, b"");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: line 2: the manifest cannot be signed: it has no \"timestamp\" field; verifiers \
         check freshness against an RFC 3339 timestamp there (choose another field with \
         --timestamp-field)\n"
    );
}

#[test]
fn verify_command_exit_codes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("missing.json");
    let output = hallmark(&[
        "verify",
        "--keys",
        missing.to_str().unwrap_or_default(),
        "-",
    ]);
    assert_eq!(output.status.code(), Some(69));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: cannot read the key set from {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );

    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, r#"{"keys": 1}"#).expect("writes");
    let document = dir.path().join("doc.json");
    std::fs::write(&document, "{}").expect("writes");
    let output = hallmark(&[
        "verify",
        "--keys",
        invalid.to_str().unwrap_or_default(),
        document.to_str().unwrap_or_default(),
    ]);
    assert_eq!(output.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: the key set from {} is invalid: expected a JWK Set: an object with a \
             \"keys\" array\n",
            invalid.display()
        )
    );

    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, r#"{"keys": []}"#).expect("writes");
    let keys_arg = keys.to_str().unwrap_or_default();
    let usage_errors = [
        (
            vec!["verify", "--keys", "ftp://127.0.0.1/keys.json", "-"],
            "error: the key set from ftp://127.0.0.1/keys.json is invalid: the scheme is not \
             supported; use http://, https://, file:// or a file path\n",
        ),
        (
            vec![
                "verify",
                "--keys",
                keys_arg,
                "--replay-cache-size",
                "0",
                "-",
            ],
            "error: the replay cache size must be at least 1\n",
        ),
        (
            vec![
                "verify",
                "--keys",
                keys_arg,
                "--replay-cache",
                "/dev/null",
                "-",
            ],
            "error: replay cache path /dev/null exists but is not a regular file; choose a file \
             path\n",
        ),
    ];
    for (args, message) in usage_errors {
        let output = hallmark(&args);
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), message);
    }
    std::fs::write(&document, "{\"output\": {}}\n\nnot json\n").expect("writes");
    let output = hallmark(&[
        "verify",
        "--keys",
        keys.to_str().unwrap_or_default(),
        document.to_str().unwrap_or_default(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON verdict"))
        .collect();
    assert_eq!(
        lines,
        [
            json!({"line": 1, "verdict": "rejected", "reason": "malformed_document",
                   "error": "malformed document: the signed output has no signature, signing_key_id"}),
            json!({"line": 3, "verdict": "rejected", "reason": "malformed_document",
                   "error": "malformed document: the signed output is not JSON: expected ident at line 1 column 2"}),
        ]
    );
}

/// A reader that closes stdout early does not change the verdict: the
/// outputs are still verified, and the exit code reports that one was
/// rejected.
#[test]
fn verify_to_closed_stdout_keeps_exit_code() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, r#"{"keys": []}"#).expect("writes");
    let document = dir.path().join("doc.json");
    std::fs::write(&document, "{\"output\": {}}\nnot json\n").expect("writes");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);

    let output = Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .args(["verify", "--keys"])
        .args([&keys, &document])
        .stdout(writer)
        .output()
        .expect("hallmark runs");

    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "2 of 2 signed outputs rejected\n"
    );
    assert_eq!(output.status.code(), Some(1));
}
