//! Every key type signs through the real server, and the RustCrypto
//! verifiers accept the result in each encoding.

mod common;

use std::time::Duration;

use common::{TestServer, TestToken};
use hallmark::pb::{self, HashAlgorithm, SignRequest, SignatureAlgorithm, SignatureEncoding};
use p256::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256, Sha384};
use tonic::Code;

const MANIFEST: &[u8] = br#"{"model_version": "iris-1", "prediction": "versicolor"}"#;

fn request(digest: Vec<u8>, hash: HashAlgorithm, encoding: SignatureEncoding) -> SignRequest {
    SignRequest {
        digest,
        hash_algorithm: hash as i32,
        key_name: String::new(),
        request_id: String::new(),
        signature_encoding: encoding as i32,
    }
}

/// Starts a server whose default key signs with `algorithm` and returns it
/// with the DER SubjectPublicKeyInfo from ListKeys.
async fn serve(algorithm: &str) -> (TestToken, TestServer, Vec<u8>) {
    let token = TestToken::with_algorithm(algorithm);
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;
    let keys = client
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    let der = keys[0].public_key_der.clone();
    (token, server, der)
}

#[tokio::test]
async fn ecdsa_p256_verifies_in_both_encodings() {
    let (_token, server, der) = serve("ecdsa-p256-sha256").await;
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(&der).expect("P-256 SPKI");
    let mut client = server.client().await;
    let digest = Sha256::digest(MANIFEST).to_vec();

    let der_response = client
        .sign(request(
            digest.clone(),
            HashAlgorithm::Sha256,
            SignatureEncoding::Unspecified,
        ))
        .await
        .expect("Sign succeeds")
        .into_inner();
    assert_eq!(
        der_response.signature_encoding,
        SignatureEncoding::Der as i32
    );
    let meta = der_response.key.expect("key");
    assert_eq!(meta.algorithm, SignatureAlgorithm::EcdsaP256Sha256 as i32);
    assert_eq!(meta.key_bits, 256);
    assert_eq!(meta.pss_salt_length, 0);
    let signature = p256::ecdsa::DerSignature::from_bytes(&der_response.signature).expect("DER");
    use p256::ecdsa::signature::Verifier;
    key.verify(MANIFEST, &signature)
        .expect("DER signature verifies over the manifest");

    let p1363 = client
        .sign(request(
            digest,
            HashAlgorithm::Sha256,
            SignatureEncoding::P1363,
        ))
        .await
        .expect("Sign succeeds")
        .into_inner();
    assert_eq!(p1363.signature_encoding, SignatureEncoding::P1363 as i32);
    assert_eq!(p1363.signature.len(), 64);
    let signature = p256::ecdsa::Signature::from_slice(&p1363.signature).expect("r||s");
    key.verify(MANIFEST, &signature)
        .expect("P1363 signature verifies over the manifest");
    assert!(key.verify(b"another manifest", &signature).is_err());
}

#[tokio::test]
async fn ecdsa_p384_needs_sha384_digest() {
    let (_token, server, der) = serve("ecdsa-p384-sha384").await;
    let key = p384::ecdsa::VerifyingKey::from_public_key_der(&der).expect("P-384 SPKI");
    let mut client = server.client().await;

    let status = client
        .sign(request(
            Sha256::digest(MANIFEST).to_vec(),
            HashAlgorithm::Sha256,
            SignatureEncoding::Der,
        ))
        .await
        .expect_err("SHA-256 digest for a P-384 key");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "key \"default\" signs ecdsa-p384-sha384 and needs a 48-byte digest, not 32 bytes"
    );

    let response = client
        .sign(request(
            Sha384::digest(MANIFEST).to_vec(),
            HashAlgorithm::Sha384,
            SignatureEncoding::P1363,
        ))
        .await
        .expect("Sign succeeds")
        .into_inner();
    assert_eq!(response.signature.len(), 96);
    let signature = p384::ecdsa::Signature::from_slice(&response.signature).expect("r||s");
    use p384::ecdsa::signature::Verifier;
    key.verify(MANIFEST, &signature)
        .expect("signature verifies over the manifest");
}

#[tokio::test]
async fn ed25519_signs_the_digest_bytes() {
    let (_token, server, der) = serve("ed25519").await;
    let key = ed25519_dalek::VerifyingKey::from_public_key_der(&der).expect("Ed25519 SPKI");
    let mut client = server.client().await;
    let digest = Sha256::digest(MANIFEST).to_vec();

    let response = client
        .sign(request(
            digest.clone(),
            HashAlgorithm::Sha256,
            SignatureEncoding::Unspecified,
        ))
        .await
        .expect("Sign succeeds")
        .into_inner();
    assert_eq!(
        response.signature_encoding,
        SignatureEncoding::Unspecified as i32
    );
    assert_eq!(
        response.key.expect("key").algorithm,
        SignatureAlgorithm::Ed25519 as i32
    );
    let signature = ed25519_dalek::Signature::from_slice(&response.signature).expect("64 bytes");
    key.verify_strict(&digest, &signature)
        .expect("pure Ed25519 over the 32 digest bytes");
    assert!(
        key.verify_strict(MANIFEST, &signature).is_err(),
        "the message is the digest"
    );

    let status = client
        .sign(request(
            vec![0; 48],
            HashAlgorithm::Sha384,
            SignatureEncoding::Der,
        ))
        .await
        .expect_err("SHA-384 digest for an Ed25519 key");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn rsa_pkcs1_verifies_over_manifest() {
    let (_token, server, der) = serve("rsa-pkcs1-sha256").await;
    let key = rsa::RsaPublicKey::from_public_key_der(&der).expect("RSA SPKI");
    let key = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
    let mut client = server.client().await;

    let response = client
        .sign(request(
            Sha256::digest(MANIFEST).to_vec(),
            HashAlgorithm::Unspecified,
            SignatureEncoding::Unspecified,
        ))
        .await
        .expect("Sign succeeds")
        .into_inner();
    assert_eq!(
        response.key.expect("key").algorithm,
        SignatureAlgorithm::RsaPkcs1v15Sha256 as i32
    );
    let signature =
        rsa::pkcs1v15::Signature::try_from(response.signature.as_slice()).expect("signature");
    use rsa::signature::Verifier;
    key.verify(MANIFEST, &signature)
        .expect("PKCS#1 v1.5 signature verifies");
}

#[tokio::test]
async fn jwks_names_each_jose_algorithm() {
    for (algorithm, alg, kty) in [
        ("rsa-pkcs1-sha256", "RS256", "RSA"),
        ("ecdsa-p256-sha256", "ES256", "EC"),
        ("ecdsa-p384-sha384", "ES384", "EC"),
        ("ed25519", "EdDSA", "OKP"),
    ] {
        let (_token, server, _der) = serve(algorithm).await;
        let jwks = server.jwks().await;
        assert_eq!(jwks["keys"][0]["alg"], alg, "{algorithm}");
        assert_eq!(jwks["keys"][0]["kty"], kty, "{algorithm}");
        assert_eq!(jwks["keys"][0]["hallmark_algorithm"], algorithm);
    }
}

#[tokio::test]
async fn ecdsa_key_rotates_to_same_algorithm() {
    let (token, server, _der) = serve("ecdsa-p256-sha256").await;
    let output = token.hallmark(&["keys", "rotate", "--force"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = token.hallmark(&["keys", "list", "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["algorithm"], "ecdsa-p256-sha256");
    assert_eq!(lines[1]["state"], "active");
    drop(server);
}
