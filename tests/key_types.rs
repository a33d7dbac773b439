//! Every key type end to end in a real SoftHSM token: generation, listing,
//! signing through the raw mechanisms, the self-check, an independent check
//! with the `openssl` CLI, the protection of the private key, and
//! destruction.
//!
//! This is a test binary of its own because it loads SoftHSM into the test
//! process, and SoftHSM reads its configuration once per process. For the
//! same reason everything runs in one test function.

mod common;

use std::path::Path;
use std::process::Command;

use common::TestToken;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Date;
use hallmark::hsm::objects::{self, EcCurve, KeyKind, KeyPair, PublicKeyMaterial};
use hallmark::keys::SelfCheck;
use hallmark::keys::algorithm::{self, Algorithm, AlgorithmError, SignatureEncoding, VerifyingKey};
use sha2::{Digest, Sha256, Sha384};

/// Label prefix of the pairs this test creates.
const PREFIX: &str = "hallmark-key-types;";

/// One key type under test.
struct Case {
    name: &'static str,
    kind: KeyKind,
    algorithm: Algorithm,
    salt_len: Option<usize>,
}

const CASES: [Case; 5] = [
    Case {
        name: "rsa-pss",
        kind: KeyKind::Rsa { bits: 2048 },
        algorithm: Algorithm::RsaPssSha256,
        salt_len: Some(32),
    },
    Case {
        name: "rsa-pkcs1",
        kind: KeyKind::Rsa { bits: 2048 },
        algorithm: Algorithm::RsaPkcs1v15Sha256,
        salt_len: None,
    },
    Case {
        name: "p256",
        kind: KeyKind::EcP256,
        algorithm: Algorithm::EcdsaP256Sha256,
        salt_len: None,
    },
    Case {
        name: "p384",
        kind: KeyKind::EcP384,
        algorithm: Algorithm::EcdsaP384Sha384,
        salt_len: None,
    },
    Case {
        name: "ed25519",
        kind: KeyKind::Ed25519,
        algorithm: Algorithm::Ed25519,
        salt_len: None,
    },
];

#[test]
fn every_key_type_signs_and_verifies() {
    let token = TestToken::without_key();
    let session = common::open_session(&token);
    let work = tempfile::tempdir().expect("temporary directory");

    let mut pairs = Vec::new();
    for case in &CASES {
        let pair = generate_and_list(&session, case);
        check_protection(&session, &pair, case);
        sign_and_verify(&session, &pair, case, work.path());
        pairs.push(pair);
    }

    // All five pairs are listed, two of them RSA-2048.
    let listed = objects::list_pairs(&session, PREFIX).expect("list");
    assert_eq!(listed.len(), 5);
    let rsa_moduli: Vec<usize> = listed
        .iter()
        .filter_map(|pair| match &pair.material {
            objects::PublicKeyMaterial::Rsa { modulus, .. } => Some(modulus.len()),
            _ => None,
        })
        .collect();
    assert_eq!(rsa_moduli, vec![256, 256]);

    // Relabelling changes both objects, so the pair is then found by its
    // new label only.
    let mut moved = pairs.remove(2);
    objects::relabel(&session, &mut moved, "other;p256", b"new-id").expect("relabel");
    assert_eq!(
        objects::list_pairs(&session, PREFIX).expect("list").len(),
        4
    );
    let found = objects::list_pairs(&session, "other;").expect("list");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, b"new-id");
    assert_eq!(found[0].public, moved.public);

    // Destroying removes both objects.
    objects::destroy_pair(&session, &moved).expect("destroy");
    assert!(
        objects::list_pairs(&session, "other;")
            .expect("list")
            .is_empty()
    );
    for handle in [moved.private, moved.public] {
        assert!(
            session
                .get_attributes(handle, &[AttributeType::Label])
                .is_err(),
            "object {handle} still exists"
        );
    }
    for pair in &pairs {
        objects::destroy_pair(&session, pair).expect("destroy");
    }
    assert!(
        objects::list_pairs(&session, PREFIX)
            .expect("list")
            .is_empty()
    );
}

/// Generates the case's pair and checks that listing finds it with the
/// same handles and material.
fn generate_and_list(session: &Session, case: &Case) -> KeyPair {
    let label = format!("{PREFIX}{}", case.name);
    let id = session.generate_random_vec(16).expect("random ID");
    let start = Date::new_from_str_slice("2025", "01", "31").expect("valid date");
    let pair = objects::generate_pair(session, case.kind, &label, &id, start)
        .unwrap_or_else(|e| panic!("{}: generate: {e}", case.name));
    assert_eq!(pair.material.kind(), case.kind, "{}", case.name);
    match (&pair.material, case.kind) {
        (PublicKeyMaterial::Rsa { modulus, exponent }, KeyKind::Rsa { .. }) => {
            assert_eq!(modulus.len(), 256);
            assert_eq!(exponent, &[1, 0, 1]);
        }
        (PublicKeyMaterial::Ec { curve, point }, KeyKind::EcP256 | KeyKind::EcP384) => {
            assert_eq!(point.len(), 1 + 2 * curve.field_len());
            assert_eq!(point[0], 0x04, "uncompressed SEC1");
            assert_eq!(*curve == EcCurve::P256, case.kind == KeyKind::EcP256);
        }
        (PublicKeyMaterial::Ed25519 { .. }, KeyKind::Ed25519) => {}
        (material, kind) => panic!("{}: {material:?} for {kind:?}", case.name),
    }
    let listed = objects::list_pairs(session, &label).expect("list");
    assert_eq!(listed.len(), 1, "{}", case.name);
    assert_eq!(listed[0].private, pair.private);
    assert_eq!(listed[0].public, pair.public);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].material, pair.material, "{}", case.name);
    assert!(case.algorithm.check_material(&pair.material).is_ok());
    pair
}

/// Checks the attributes of both objects and that no secret value of the
/// private key can be read.
fn check_protection(session: &Session, pair: &KeyPair, case: &Case) {
    assert_eq!(
        objects::private_key_protection(session, pair.private).expect("protection"),
        (true, false),
        "{}: sensitive and not extractable",
        case.name
    );
    let private = flags(
        session,
        pair.private,
        &[
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Sign,
            AttributeType::AlwaysSensitive,
            AttributeType::NeverExtractable,
        ],
    );
    for expected in [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sign(true),
        Attribute::AlwaysSensitive(true),
        Attribute::NeverExtractable(true),
    ] {
        assert!(private.contains(&expected), "{}: {private:?}", case.name);
    }
    let public = flags(
        session,
        pair.public,
        &[
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Verify,
        ],
    );
    for expected in [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
    ] {
        assert!(public.contains(&expected), "{}: {public:?}", case.name);
    }

    // Sensitive attributes come back as unavailable, so the binding omits
    // them. CKA_VALUE is the EC and EdDSA private scalar.
    let secret_types: &[AttributeType] = match case.kind {
        KeyKind::Rsa { .. } => &[
            AttributeType::PrivateExponent,
            AttributeType::Prime1,
            AttributeType::Prime2,
            AttributeType::Exponent1,
            AttributeType::Exponent2,
            AttributeType::Coefficient,
        ],
        _ => &[AttributeType::Value],
    };
    let secret = session
        .get_attributes(pair.private, secret_types)
        .expect("C_GetAttributeValue answers");
    assert_eq!(
        secret,
        Vec::new(),
        "{}: private key material was returned",
        case.name
    );
}

fn flags(session: &Session, handle: ObjectHandle, types: &[AttributeType]) -> Vec<Attribute> {
    session
        .get_attributes(handle, types)
        .expect("attributes readable")
}

/// Signs a digest in the token, checks the signature with [`algorithm::verify`]
/// in every encoding, and again with `openssl pkeyutl`.
fn sign_and_verify(session: &Session, pair: &KeyPair, case: &Case, dir: &Path) {
    let algorithm = case.algorithm;
    let message = format!("model output signed with {}", case.name);
    let digest = match algorithm.digest_len() {
        48 => Sha384::digest(message.as_bytes()).to_vec(),
        _ => Sha256::digest(message.as_bytes()).to_vec(),
    };
    let mut flipped = digest.clone();
    flipped[0] ^= 0x01;

    let key = VerifyingKey::from_material(&pair.material).expect("valid public key");
    let pem = key.spki_pem().expect("PEM");
    assert_eq!(
        pem_body(&pem),
        key.spki_der().expect("DER"),
        "{}: PEM and DER hold the same SubjectPublicKeyInfo",
        case.name
    );
    let pem_path = dir.join(format!("{}.pem", case.name));
    std::fs::write(&pem_path, &pem).expect("write PEM");

    let mechanism = algorithm::mechanism(algorithm, case.salt_len).expect("mechanism");
    let input = algorithm::token_input(algorithm, &digest).expect("token input");
    // ECDSA signatures are randomized, so several rounds make it likely
    // that r and s values with the high bit both set and clear reach the
    // DER encoder.
    let rounds = if algorithm.is_ecdsa() { 8 } else { 1 };
    for round in 0..rounds {
        let raw = session
            .sign(&mechanism, pair.private, &input)
            .unwrap_or_else(|e| panic!("{}: C_Sign: {e}", case.name));
        let encodings: &[SignatureEncoding] = if algorithm.is_ecdsa() {
            &[SignatureEncoding::Der, SignatureEncoding::P1363]
        } else {
            &[SignatureEncoding::Der]
        };
        for &encoding in encodings {
            let signature = algorithm::encode_signature(algorithm, raw.clone(), encoding)
                .unwrap_or_else(|e| panic!("{}: encode: {e}", case.name));
            let spki = key.spki_der().expect("DER");
            let self_check = SelfCheck::new(algorithm, case.salt_len, &spki);
            let fast = match algorithm {
                Algorithm::Ed25519 => false,
                Algorithm::RsaPssSha256 => case.salt_len == Some(32),
                _ => true,
            };
            assert_eq!(
                self_check.is_fast(),
                fast,
                "{}: self-check verifier",
                case.name
            );
            // Both verifiers must agree: the service's self-check and the
            // one that consumers of signed outputs use.
            let check = |digest: &[u8], signature: &[u8]| {
                let service =
                    self_check.verify(&key, algorithm, case.salt_len, digest, signature, encoding);
                let consumer =
                    algorithm::verify(&key, algorithm, case.salt_len, digest, signature, encoding);
                assert_eq!(
                    service.is_ok(),
                    consumer.is_ok(),
                    "{} {encoding:?}: self-check {service:?}, verifier {consumer:?}",
                    case.name
                );
                service
            };
            assert!(
                check(&digest, &signature).is_ok(),
                "{} {encoding:?}: self-check rejected a token signature",
                case.name
            );
            assert!(
                matches!(
                    check(&flipped, &signature),
                    Err(AlgorithmError::VerificationFailed { .. })
                ),
                "{} {encoding:?}: a changed digest was accepted",
                case.name
            );
            let mut tampered = signature.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 0x01;
            assert!(
                check(&digest, &tampered).is_err(),
                "{} {encoding:?}: a changed signature was accepted",
                case.name
            );
            if encoding == SignatureEncoding::Der && round < 2 {
                let name = format!("{}-{round}", case.name);
                assert_eq!(
                    openssl_verify(dir, &name, case, &pem_path, &digest, &signature),
                    Some(0),
                    "{}: openssl rejected the signature",
                    case.name
                );
                assert_eq!(
                    openssl_verify(dir, &name, case, &pem_path, &flipped, &signature),
                    Some(1),
                    "{}: openssl accepted a changed digest",
                    case.name
                );
            }
        }
        if algorithm.is_ecdsa() {
            // The token's output is the P1363 form. Neither encoding
            // verifies when declared as the other.
            let der = algorithm::encode_signature(algorithm, raw.clone(), SignatureEncoding::Der)
                .expect("DER");
            assert!(
                algorithm::verify(
                    &key,
                    algorithm,
                    None,
                    &digest,
                    &der,
                    SignatureEncoding::P1363
                )
                .is_err()
            );
            assert!(
                algorithm::verify(&key, algorithm, None, &digest, &raw, SignatureEncoding::Der)
                    .is_err()
            );
        }
    }
}

/// Verifies `signature` over `digest` with `openssl pkeyutl` and returns
/// its exit code: 0 when the signature verifies, 1 when it does not.
fn openssl_verify(
    dir: &Path,
    name: &str,
    case: &Case,
    pem: &Path,
    digest: &[u8],
    signature: &[u8],
) -> Option<i32> {
    let digest_path = dir.join(format!("{name}.digest"));
    let signature_path = dir.join(format!("{name}.sig"));
    std::fs::write(&digest_path, digest).expect("write digest");
    std::fs::write(&signature_path, signature).expect("write signature");
    let mut command = Command::new("openssl");
    command
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(pem)
        .arg("-in")
        .arg(&digest_path)
        .arg("-sigfile")
        .arg(&signature_path);
    let options: &[&str] = match case.algorithm {
        Algorithm::RsaPssSha256 => &[
            "digest:sha256",
            "rsa_padding_mode:pss",
            "rsa_mgf1_md:sha256",
            "rsa_pss_saltlen:32",
        ],
        Algorithm::RsaPkcs1v15Sha256 => &["digest:sha256", "rsa_padding_mode:pkcs1"],
        Algorithm::EcdsaP256Sha256 => &["digest:sha256"],
        Algorithm::EcdsaP384Sha384 => &["digest:sha384"],
        // Pure Ed25519 signs the message itself: the digest bytes.
        Algorithm::Ed25519 => {
            command.arg("-rawin");
            &[]
        }
    };
    for option in options {
        command.args(["-pkeyopt", option]);
    }
    let output = command.output().expect("openssl runs");
    output.status.code()
}

/// Decodes the DER bytes inside a PEM block.
fn pem_body(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body is base64")
}
