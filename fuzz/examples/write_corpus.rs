//! Writes the seed corpus of every fuzz target to `fuzz/corpus/TARGET/`,
//! one file per seed, named after what it contains. Existing files with
//! other names are left alone.
//!
//! Every key is derived from a constant, so a rerun writes the same bytes
//! as long as the dependencies generate keys and signatures the same way.
//!
//! ```sh
//! cargo run --release --manifest-path fuzz/Cargo.toml --example write_corpus
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use hallmark::canon::{Profile, canonicalize};
use hallmark::pb;
use hallmark::verify::algorithm::VerifyingKey;
use hallmark::verify::{Options, Verifier, encode_hex, format_rfc3339};
use hallmark_fuzz as fixture;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use prost::Message;
use rand_core::{CryptoRng, RngCore};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut corpus = Corpus { root, written: 0 };
    sign_request_seeds(&mut corpus);
    canonical_json_seeds(&mut corpus);
    jwks_seeds(&mut corpus);
    signed_output_seeds(&mut corpus);
    println!(
        "wrote {} seeds under {}",
        corpus.written,
        corpus.root.display()
    );
}

struct Corpus {
    root: PathBuf,
    written: usize,
}

impl Corpus {
    fn write(&mut self, target: &str, name: &str, bytes: impl AsRef<[u8]>) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        self.written += 1;
    }
}

/// A deterministic byte stream for generating fixture keys: SHA-256 of a
/// label and a block counter. It is predictable, so it serves only keys
/// that sign nothing outside this corpus.
struct FixtureRng {
    label: &'static str,
    counter: u64,
    block: Vec<u8>,
}

impl FixtureRng {
    fn new(label: &'static str) -> Self {
        Self {
            label,
            counter: 0,
            block: Vec::new(),
        }
    }
}

impl RngCore for FixtureRng {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0; 4];
        self.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.block.is_empty() {
                let mut hasher = Sha256::new();
                hasher.update(self.label.as_bytes());
                hasher.update(self.counter.to_le_bytes());
                self.counter += 1;
                self.block = hasher.finalize().to_vec();
            }
            *byte = self.block.pop().unwrap_or_default();
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixtureRng {}

// ---------------------------------------------------------------- sign_request

fn sign_request_seeds(corpus: &mut Corpus) {
    let request =
        |digest_len: usize, hash: i32, key: &str, id: &str, encoding: i32| pb::SignRequest {
            digest: vec![0xa5; digest_len],
            hash_algorithm: hash,
            key_name: key.to_owned(),
            request_id: id.to_owned(),
            signature_encoding: encoding,
        };
    let cases = [
        ("valid-default-key", request(32, 0, "", "req-1", 0)),
        ("valid-sha256-der", request(32, 1, "default", "req-2", 1)),
        ("valid-ec256-p1363", request(32, 1, "ec256", "req-3", 2)),
        ("valid-ec384-sha384", request(48, 2, "ec384", "req-4", 2)),
        ("valid-ed25519", request(32, 0, "ed", "", 0)),
        (
            "valid-dotted-name",
            request(32, 1, "team.fraud_v2-1", "a.b-c_d", 0),
        ),
        ("valid-longest-id", request(32, 0, "", &"x".repeat(128), 0)),
        ("valid-graphic-id", request(32, 0, "", "!~#{}[]<>|\"'", 0)),
        ("id-too-long", request(32, 0, "", &"x".repeat(129), 0)),
        ("id-with-space", request(32, 0, "", "a b", 0)),
        ("id-non-ascii", request(32, 0, "", "r\u{e9}q", 0)),
        ("id-control", request(32, 0, "", "a\tb", 0)),
        ("digest-empty", request(0, 0, "", "", 0)),
        ("digest-31", request(31, 1, "", "", 0)),
        ("digest-33", request(33, 1, "", "", 0)),
        ("digest-48-sha256", request(48, 1, "", "", 0)),
        ("digest-32-sha384", request(32, 2, "ec384", "", 0)),
        ("hash-unknown", request(32, 3, "", "", 0)),
        ("hash-negative", request(32, -1, "", "", 0)),
        ("encoding-unknown", request(32, 0, "", "", 3)),
        ("key-missing", request(32, 0, "missing", "", 0)),
        ("key-uppercase", request(32, 0, "Default", "", 0)),
        ("key-reserved", request(32, 0, "unknown", "", 0)),
        (
            "key-long",
            request(32, 0, "k\u{1f600}".repeat(40).as_str(), "", 0),
        ),
        ("key-escapes", request(32, 0, "\u{0}\n\"\\\u{7f}", "", 0)),
    ];
    for (name, request) in cases {
        corpus.write("sign_request", name, request.encode_to_vec());
    }

    // Protobuf edge cases: no fields, an unknown field, and a repeated
    // field, where the last value wins.
    corpus.write("sign_request", "empty-message", []);
    let mut unknown = request(32, 0, "", "", 0).encode_to_vec();
    unknown.extend([0x78, 0x01]); // field 15, varint 1
    corpus.write("sign_request", "unknown-field", unknown);
    let mut repeated = request(31, 0, "", "", 0).encode_to_vec();
    repeated.extend(request(32, 0, "", "", 0).encode_to_vec());
    corpus.write("sign_request", "repeated-digest", repeated);
}

// -------------------------------------------------------------- canonical_json

fn canonical_json_seeds(corpus: &mut Corpus) {
    let cases: &[(&str, &str)] = &[
        ("string-latin1", r#"{"name": "café – naïve"}"#),
        ("string-astral", "\"😀𝄞\""),
        ("string-surrogate-pairs", r#""\ud83d\ude00\uD834\uDD1E""#),
        ("string-controls", r#""\u0000\u0001\u001f\b\f\n\r\t\u007f""#),
        ("string-raw-del", "\"raw \u{7f} and \u{80}\""),
        ("string-escapes", r#""quote \" backslash \\ slash \/ end""#),
        (
            "string-line-separators",
            "[\"\u{2028}\u{2029}\", \"\\u2028\"]",
        ),
        (
            "float-exponents",
            "[1e-7, 1e16, 1.5e300, 1e15, 0.0001, 0.00001]",
        ),
        (
            "float-large",
            "[1e22, 9999999999999998.0, 12345678901234567890.0, 1.5E-300]",
        ),
        (
            "float-extremes",
            "[5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]",
        ),
        ("float-underflow", "[1e-400, -1e-400]"),
        ("zeros", "[-0.0, -0, 0, 0.0, 0e5, -0E-3]"),
        ("number-spellings", "[1.0, 1E2, 1E+2, 1e-2, 0.1, 100]"),
        (
            "float-rounding",
            "[0.30000000000000004, 0.1000000000000000055511151231257827]",
        ),
        (
            "float-halfway",
            "[1424953923781206.25, 1125899906842624.75]",
        ),
        (
            "float-ecmascript-switch",
            "[1e20, 1e21, 123e18, 0.000001, 0.0000001]",
        ),
        ("integer-limits", "[9007199254740991, -9007199254740991]"),
        ("integer-beyond-2-53", "9007199254740992"),
        (
            "integer-huge",
            "[18446744073709551617, -340282366920938463463374607431768211457]",
        ),
        (
            "integer-as-float",
            "[9007199254740993.0, 9007199254740993e0]",
        ),
        (
            "nested",
            r#"{"b": {"d": [1, {"f": null, "e": true}], "c": false}, "a": []}"#,
        ),
        ("empty-containers", r#"[{}, [], "", {"": []}]"#),
        ("whitespace", " \r\n\t{ \"k\" :\n[ true ,false, null ] }\n"),
        (
            "order-utf16",
            r#"{"\ufb01": 1, "\ud83d\ude00": 2, "z": 3, "\u00e9": 4, "A": 5, "a": 6}"#,
        ),
        (
            "order-rfc8785",
            r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
        ),
        ("order-escaped-names", r#"{"a\"b": 2, "a b": 3, "a\nb": 1}"#),
        ("scalar-string", r#""plain""#),
        ("scalar-true", "true"),
        ("scalar-null", "null"),
        (
            "manifest",
            r#"{"prediction": "versicolor", "index": 77, "probabilities": [0.0, 0.9666666666666667, 0.03333333333333333], "model": {"name": "iris-knn", "trained_at": "2024-05-01T12:00:00Z"}}"#,
        ),
        ("reject-nan", r#"{"a": [1, NaN]}"#),
        ("reject-infinity", "[Infinity, -Infinity]"),
        ("reject-overflow", "[-1.5e999]"),
        ("reject-duplicate", r#"{"k": {"x": 1, "x": 2}}"#),
        ("reject-duplicate-escaped", r#"{"\u0061": 1, "a": 2}"#),
        ("reject-lone-high-surrogate", r#""\ud800""#),
        ("reject-lone-low-surrogate", r#"["\udc00x"]"#),
        ("reject-bom", "\u{feff}{}"),
        ("reject-leading-zero", "[01]"),
        ("reject-trailing-comma", "[1,]"),
        ("reject-raw-control", "[\"a\u{1}\"]"),
        ("reject-bad-escape", r#""\x""#),
        ("reject-two-values", "1 2"),
    ];
    for (name, text) in cases {
        corpus.write("canonical_json", name, text);
    }

    let deepest = format!("{}{}", "[".repeat(128), "]".repeat(128));
    corpus.write("canonical_json", "depth-128", deepest);
    let too_deep = format!("{}1{}", "[".repeat(129), "]".repeat(129));
    corpus.write("canonical_json", "reject-depth-129", too_deep);
    let objects = format!(
        "{}{}",
        "{\"a\":".repeat(128),
        "{}".to_owned() + &"}".repeat(128)
    );
    corpus.write("canonical_json", "reject-object-depth-129", objects);
    corpus.write(
        "canonical_json",
        "integer-4300-digits",
        format!("[1{}]", "0".repeat(4299)),
    );
    corpus.write(
        "canonical_json",
        "reject-integer-4301-digits",
        format!("[1{}]", "0".repeat(4300)),
    );
}

// ------------------------------------------------------------------------ jwks

/// Fixture keys of every type, as Hallmark's `VerifyingKey`.
struct Keys {
    rsa: VerifyingKey,
    p256: VerifyingKey,
    p384: VerifyingKey,
    ed25519: VerifyingKey,
}

fn fixture_keys() -> Keys {
    let rsa = rsa::RsaPrivateKey::new(&mut FixtureRng::new("jwks rsa-2048"), 2048)
        .unwrap_or_else(|e| panic!("RSA key generation failed: {e}"));
    let rsa = VerifyingKey::rsa(&rsa.n().to_bytes_be(), &rsa.e().to_bytes_be())
        .unwrap_or_else(|e| panic!("RSA key: {e}"));
    let p256 = VerifyingKey::P256(*fixture::signing_key(&[0x33; 32]).verifying_key());
    let p384 = p384::ecdsa::SigningKey::from_slice(&[0x44; 48])
        .unwrap_or_else(|e| panic!("P-384 key: {e}"));
    let p384 = VerifyingKey::P384(*p384.verifying_key());
    let ed25519 = ed25519_dalek::SigningKey::from_bytes(&[0x55; 32]);
    let ed25519 = VerifyingKey::ed25519(ed25519.verifying_key().as_bytes())
        .unwrap_or_else(|e| panic!("Ed25519 key: {e}"));
    Keys {
        rsa,
        p256,
        p384,
        ed25519,
    }
}

/// Writes a Hallmark JWK: the key's public members, its thumbprint as
/// `kid`, and the lifecycle members that Hallmark publishes.
fn hallmark_jwk(
    key: &VerifyingKey,
    algorithm: &str,
    version: u32,
) -> serde_json::Map<String, Value> {
    let mut jwk = key.jwk();
    jwk.insert("kid".into(), key.key_id().into());
    jwk.insert("use".into(), "sig".into());
    jwk.insert("hallmark_algorithm".into(), algorithm.into());
    jwk.insert("hallmark_key_name".into(), "model".into());
    jwk.insert("hallmark_version".into(), version.into());
    jwk.insert("hallmark_state".into(), "ACTIVE".into());
    jwk.insert("hallmark_created_at".into(), "2025-12-25T00:00:00Z".into());
    jwk.insert(
        "hallmark_activates_at".into(),
        "2026-01-01T00:00:00Z".into(),
    );
    jwk.insert("hallmark_rotates_at".into(), "2026-04-01T00:00:00Z".into());
    jwk.insert(
        "hallmark_verify_until".into(),
        "2026-05-01T00:00:00Z".into(),
    );
    jwk
}

fn jwks_seeds(corpus: &mut Corpus) {
    let keys = fixture_keys();
    let with = |mut jwk: serde_json::Map<String, Value>, changes: &[(&str, Value)]| {
        for (name, value) in changes {
            if value.is_null() {
                jwk.remove(*name);
            } else {
                jwk.insert((*name).to_owned(), value.clone());
            }
        }
        Value::Object(jwk)
    };
    let pss = hallmark_jwk(&keys.rsa, "rsa-pss-sha256", 1);
    let pkcs1 = hallmark_jwk(&keys.rsa, "rsa-pkcs1-sha256", 2);
    let p256 = hallmark_jwk(&keys.p256, "ecdsa-p256-sha256", 3);
    let p384 = hallmark_jwk(&keys.p384, "ecdsa-p384-sha384", 4);
    let ed25519 = hallmark_jwk(&keys.ed25519, "ed25519", 5);

    let single = |entry: Value| json!({"keys": [entry]});
    let entries = [
        (
            "rsa-pss-salt-32",
            with(
                pss.clone(),
                &[
                    ("hallmark_pss_salt_length", 32.into()),
                    ("alg", "PS256".into()),
                ],
            ),
        ),
        (
            "rsa-pss-ps256-no-salt",
            with(pss.clone(), &[("alg", "PS256".into())]),
        ),
        (
            "rsa-pss-salt-max",
            with(pss.clone(), &[("hallmark_pss_salt_length", 222.into())]),
        ),
        (
            "rsa-pss-salt-too-large",
            with(pss.clone(), &[("hallmark_pss_salt_length", 223.into())]),
        ),
        ("rsa-pss-no-salt", with(pss.clone(), &[])),
        ("rsa-pkcs1", with(pkcs1.clone(), &[("alg", "RS256".into())])),
        ("ec-p256", with(p256.clone(), &[("alg", "ES256".into())])),
        ("ec-p384", with(p384.clone(), &[("alg", "ES384".into())])),
        ("ed25519", with(ed25519.clone(), &[("alg", "EdDSA".into())])),
        (
            "ec-p256-wrong-crv",
            with(p256.clone(), &[("crv", "P-384".into())]),
        ),
        (
            "ec-p256-not-on-curve",
            with(
                p256.clone(),
                &[("y", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into())],
            ),
        ),
        (
            "ec-p256-padded-base64",
            with(p256.clone(), &[("x", "AAAA==".into())]),
        ),
        (
            "ed25519-small-order",
            with(
                ed25519.clone(),
                &[("x", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into())],
            ),
        ),
        (
            "ed25519-short",
            with(ed25519.clone(), &[("x", "AQID".into())]),
        ),
        (
            "rsa-wrong-kty",
            with(pkcs1.clone(), &[("kty", "EC".into())]),
        ),
        (
            "unknown-algorithm",
            with(p256.clone(), &[("hallmark_algorithm", "ES256".into())]),
        ),
        (
            "no-version",
            with(p256.clone(), &[("hallmark_version", Value::Null)]),
        ),
        (
            "version-zero",
            with(p256.clone(), &[("hallmark_version", 0.into())]),
        ),
        (
            "no-window",
            with(p256.clone(), &[("hallmark_verify_until", Value::Null)]),
        ),
        (
            "bad-window",
            with(
                p256.clone(),
                &[("hallmark_activates_at", "2026-02-30T00:00:00Z".into())],
            ),
        ),
        ("no-kid", with(p256.clone(), &[("kid", Value::Null)])),
        ("empty-kid", with(p256.clone(), &[("kid", "".into())])),
    ];
    for (name, entry) in entries {
        corpus.write("jwks", &format!("{name}.json"), single(entry).to_string());
    }

    let full = json!({
        "keys": [
            with(pss.clone(), &[("hallmark_pss_salt_length", 32.into())]),
            Value::Object(pkcs1.clone()),
            Value::Object(p256.clone()),
            Value::Object(p384.clone()),
            Value::Object(ed25519.clone()),
        ],
        "hallmark_revoked": [
            {"kid": "old-key", "hallmark_key_name": "model", "hallmark_version": 1,
             "hallmark_revoked_at": "2026-03-01T00:00:00Z"},
            {"kid": keys.p384.key_id()},
        ],
    });
    corpus.write(
        "jwks",
        "all-key-types.json",
        serde_json::to_string_pretty(&full).unwrap_or_default(),
    );
    let twice = json!({"keys": [Value::Object(p256.clone()), Value::Object(p256.clone())]});
    corpus.write("jwks", "kid-twice.json", twice.to_string());
    let revoked_not_array = json!({"keys": [], "hallmark_revoked": {"kid": "x"}});
    corpus.write(
        "jwks",
        "revoked-not-array.json",
        revoked_not_array.to_string(),
    );
    corpus.write("jwks", "keys-not-array.json", r#"{"keys": {}}"#);
    corpus.write("jwks", "not-an-object.json", "[]");
    corpus.write("jwks", "empty.json", r#"{"keys": []}"#);

    let pems: Vec<(&str, String)> = [
        ("rsa", &keys.rsa),
        ("p256", &keys.p256),
        ("p384", &keys.p384),
        ("ed25519", &keys.ed25519),
    ]
    .into_iter()
    .map(|(name, key)| {
        (
            name,
            key.spki_pem().unwrap_or_else(|e| panic!("{name} PEM: {e}")),
        )
    })
    .collect();
    for (name, pem) in &pems {
        corpus.write("jwks", &format!("{name}.pem"), pem);
    }
    let all: String = pems.iter().map(|(_, pem)| pem.as_str()).collect();
    corpus.write("jwks", "all-key-types.pem", &all);
    let truncated = &pems[1].1[..pems[1].1.len() - 30];
    corpus.write("jwks", "truncated.pem", truncated);
    corpus.write(
        "jwks",
        "no-end-line.pem",
        pems[2].1.replace("-----END PUBLIC KEY-----", ""),
    );
}

// --------------------------------------------------------------- signed_output

/// Signs the manifest's canonical bytes and returns the signature in the
/// encoding named: `der` or `p1363`.
fn sign(
    key: &p256::ecdsa::SigningKey,
    manifest: &str,
    profile: Profile,
    encoding: &str,
) -> Vec<u8> {
    let canonical = canonicalize(manifest, profile)
        .unwrap_or_else(|e| panic!("seed manifest {manifest:?}: {e}"));
    let signature: p256::ecdsa::Signature = key
        .sign_prehash(&Sha256::digest(&canonical))
        .unwrap_or_else(|e| panic!("signing failed: {e}"));
    match encoding {
        "p1363" => signature.to_bytes().to_vec(),
        _ => signature.to_der().as_bytes().to_vec(),
    }
}

/// Checks that a seed whose name starts with `valid-` verifies in the
/// `signed_output` target and that every other seed is rejected, and
/// prints the reason, so that each seed reaches the check it was made for.
fn check_seed(name: &str, document: &str) {
    let untrusted = p256::ecdsa::SigningKey::from_slice(&[0x77; 32])
        .unwrap_or_else(|e| panic!("untrusted key: {e}"));
    let keys = fixture::signed_output_key_set(untrusted.verifying_key());
    let verifier = Verifier::new(keys, "seed check", Options::default())
        .unwrap_or_else(|e| panic!("verifier: {e}"));
    let result = verifier.verify_at(document, fixture::instant(fixture::NOW));
    match (name.starts_with("valid-"), result) {
        (true, Ok(_)) => println!("signed_output/{name}: accepted"),
        (false, Err(error)) => println!("signed_output/{name}: {}", error.reason()),
        (true, Err(error)) => panic!("seed {name} is rejected: {error}"),
        (false, Ok(_)) => panic!("seed {name} is accepted"),
    }
}

/// Returns a manifest with a `timestamp` `offset_seconds` after the
/// fixture's NOW.
fn manifest(offset_seconds: i64, prediction: &str) -> String {
    let now = fixture::instant(fixture::NOW);
    let at = if offset_seconds >= 0 {
        now + std::time::Duration::from_secs(offset_seconds.unsigned_abs())
    } else {
        now - std::time::Duration::from_secs(offset_seconds.unsigned_abs())
    };
    format!(
        r#"{{"model": "iris", "prediction": "{prediction}", "index": 12, "scores": [0.97, 0.02, 1e-7], "timestamp": "{}"}}"#,
        format_rfc3339(at)
    )
}

fn signed_output_seeds(corpus: &mut Corpus) {
    let window = fixture::signing_key(&fixture::WINDOW_KEY_SECRET);
    let unbounded = fixture::signing_key(&fixture::UNBOUNDED_KEY_SECRET);
    let window_id = fixture::key_id(window.verifying_key());
    let unbounded_id = fixture::key_id(unbounded.verifying_key());
    let fresh = manifest(-60, "setosa");

    let document = |output: &str, signature: &[u8], kid: &str, extra: &str| {
        format!(
            r#"{{"output": {output}, "signature": "{}", "signing_key_id": "{kid}"{extra}}}"#,
            encode_hex(signature)
        )
    };
    let jcs_der = sign(&window, &fresh, Profile::Jcs, "der");
    let jcs = r#", "canonicalization": "jcs""#;

    let mut seeds: Vec<(&str, String)> = vec![
        ("valid-jcs-der", document(&fresh, &jcs_der, &window_id, jcs)),
        (
            "valid-python-plain-shape",
            document(
                &fresh,
                &sign(&window, &fresh, Profile::PythonSortKeys, "der"),
                &window_id,
                "",
            ),
        ),
        (
            "valid-jcs-p1363",
            document(
                &fresh,
                &sign(&window, &fresh, Profile::Jcs, "p1363"),
                &window_id,
                r#", "canonicalization": "jcs", "signature_encoding": "p1363""#,
            ),
        ),
        (
            "valid-every-field",
            document(
                &fresh,
                &jcs_der,
                &window_id,
                r#", "key_version": 3, "algorithm": "ecdsa-p256-sha256", "canonicalization": "jcs", "signed_at": "2026-06-01T11:59:00.000000Z", "signature_encoding": "der", "extra": [1]"#,
            ),
        ),
        (
            "valid-unbounded-key",
            document(
                &fresh,
                &sign(&unbounded, &fresh, Profile::Jcs, "der"),
                &unbounded_id,
                jcs,
            ),
        ),
        (
            "valid-unbounded-any-version",
            document(
                &fresh,
                &sign(&unbounded, &fresh, Profile::Jcs, "der"),
                &unbounded_id,
                r#", "canonicalization": "jcs", "key_version": 9"#,
            ),
        ),
        (
            "version-mismatch",
            document(
                &fresh,
                &jcs_der,
                &window_id,
                r#", "canonicalization": "jcs", "key_version": 4"#,
            ),
        ),
        (
            "algorithm-mismatch",
            document(
                &fresh,
                &jcs_der,
                &window_id,
                r#", "canonicalization": "jcs", "algorithm": "ed25519""#,
            ),
        ),
        (
            "encoding-mismatch",
            document(
                &fresh,
                &jcs_der,
                &window_id,
                r#", "canonicalization": "jcs", "signature_encoding": "p1363""#,
            ),
        ),
        (
            "profile-mismatch",
            document(
                &fresh,
                &jcs_der,
                &window_id,
                r#", "canonicalization": "python-sort-keys""#,
            ),
        ),
        (
            "tampered-output",
            document(
                &fresh.replace("setosa", "virginica"),
                &jcs_der,
                &window_id,
                jcs,
            ),
        ),
        (
            "revoked-key",
            document(&fresh, &jcs_der, fixture::REVOKED_KEY_ID, jcs),
        ),
        (
            "revoked-key-with-time",
            document(&fresh, &jcs_der, fixture::REVOKED_AT_KEY_ID, jcs),
        ),
        (
            "unusable-key",
            document(&fresh, &jcs_der, fixture::UNUSABLE_KEY_ID, jcs),
        ),
        (
            "unknown-key",
            document(&fresh, &jcs_der, "no-such-key", jcs),
        ),
    ];
    for (name, offset) in [
        ("stale", -600),
        ("future", 300),
        ("before-window", -200 * 86_400),
    ] {
        let output = manifest(offset, "setosa");
        let signature = sign(&window, &output, Profile::Jcs, "der");
        seeds.push((name, document(&output, &signature, &window_id, jcs)));
    }
    let tricky = format!(
        r#"{{"timestamp": "{}", "é": "\u00e9\ud83d\ude00", "n": [1.0, 1E2, -0, 1e20, 0.1], "nested": {{"b": [], "a": {{}}}}, "line": "\u2028"}}"#,
        format_rfc3339(fixture::instant(fixture::NOW))
    );
    for (name, profile, flag) in [
        ("valid-tricky-jcs", Profile::Jcs, jcs),
        ("valid-tricky-python", Profile::PythonSortKeys, ""),
    ] {
        let signature = sign(&window, &tricky, profile, "der");
        seeds.push((name, document(&tricky, &signature, &window_id, flag)));
    }
    let malformed = [
        (
            "no-timestamp",
            r#"{"output": {"a": 1}, "signature": "00", "signing_key_id": "k"}"#,
        ),
        (
            "timestamp-not-string",
            r#"{"output": {"timestamp": 5}, "signature": "00", "signing_key_id": "k"}"#,
        ),
        (
            "timestamp-no-offset",
            r#"{"output": {"timestamp": "2026-06-01T12:00:00"}, "signature": "00", "signing_key_id": "k"}"#,
        ),
        ("missing-fields", r#"{"output": {}}"#),
        (
            "output-array",
            r#"{"output": [], "signature": "00", "signing_key_id": "k"}"#,
        ),
        (
            "odd-hex",
            r#"{"output": {}, "signature": "0", "signing_key_id": "k"}"#,
        ),
        (
            "empty-kid",
            r#"{"output": {}, "signature": "00", "signing_key_id": ""}"#,
        ),
        (
            "version-zero",
            r#"{"output": {}, "signature": "00", "signing_key_id": "k", "key_version": 0}"#,
        ),
        (
            "version-float",
            r#"{"output": {}, "signature": "00", "signing_key_id": "k", "key_version": 1.0}"#,
        ),
        (
            "unknown-profile",
            r#"{"output": {}, "signature": "00", "signing_key_id": "k", "canonicalization": "json"}"#,
        ),
        (
            "null-optionals",
            r#"{"output": {}, "signature": "00", "signing_key_id": "k", "algorithm": null, "key_version": null}"#,
        ),
        (
            "repeated-member",
            r#"{"output": {}, "signature": "00", "signature": "01", "signing_key_id": "k"}"#,
        ),
        (
            "output-duplicate-name",
            r#"{"output": {"a": 1, "a": 2}, "signature": "00", "signing_key_id": "k"}"#,
        ),
        (
            "lone-surrogate",
            r#"{"output": {}, "signature": "00", "signing_key_id": "\ud800"}"#,
        ),
        ("not-an-object", "[1, 2]"),
    ];
    for (name, text) in malformed {
        seeds.push((name, text.to_owned()));
    }
    for (name, text) in seeds {
        check_seed(name, &text);
        corpus.write("signed_output", &format!("{name}.json"), text);
    }
}
