//! Signing through the real server against a real SoftHSM token, checked
//! with the `rsa` crate.

mod common;

use std::time::{Duration, SystemTime};

use common::{TestServer, TestToken, public_key, sample};
use hallmark::pb::{self, KeyState, SignRequest, SignatureAlgorithm};
use rsa::Pss;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const MANIFEST: &[u8] =
    br#"{"input_sha256": "ab12", "model_version": "iris-1", "prediction": "setosa"}"#;

fn sign_request(digest: Vec<u8>, request_id: &str) -> SignRequest {
    SignRequest {
        digest,
        hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
        key_name: String::new(),
        request_id: request_id.into(),
        signature_encoding: 0,
    }
}

/// Signs the manifest digest and verifies it with the `rsa` crate using the
/// salt length that the response states, which must equal `expected_salt`.
async fn sign_and_verify(bits: u32, salt: &str, expected_salt: usize) {
    let token = TestToken::new(bits, salt);
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
    let listed = &keys[0];
    assert_eq!(listed.key_name, "default");
    assert_eq!(listed.version, 1);
    assert_eq!(listed.key_bits, bits);
    assert_eq!(listed.state, KeyState::Active as i32);
    assert!(
        listed
            .public_key_pem
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );

    let digest = Sha256::digest(MANIFEST).to_vec();
    let before = SystemTime::now();
    let response = client
        .sign(sign_request(digest.clone(), "req-42"))
        .await
        .expect("Sign succeeds")
        .into_inner();

    assert_eq!(response.request_id, "req-42");
    assert_eq!(response.signature.len(), bits as usize / 8);
    let key = response.key.expect("key metadata");
    assert_eq!(key.key_id, listed.key_id);
    assert_eq!(key.key_name, "default");
    assert_eq!(key.version, 1);
    assert_eq!(key.state, KeyState::Active as i32);
    assert_eq!(key.algorithm, SignatureAlgorithm::RsaPssSha256 as i32);
    assert_eq!(key.pss_salt_length as usize, expected_salt);
    assert!(
        key.public_key_der.is_empty(),
        "Sign responses carry no public key"
    );

    let created = SystemTime::try_from(key.created_at.expect("created_at")).expect("valid time");
    let rotates = SystemTime::try_from(key.rotates_at.expect("rotates_at")).expect("valid time");
    let until = SystemTime::try_from(key.verify_until.expect("verify_until")).expect("valid time");
    let day = Duration::from_secs(86_400);
    assert_eq!(rotates.duration_since(created).expect("ordered"), 90 * day);
    assert_eq!(until.duration_since(rotates).expect("ordered"), 30 * day);
    let signed_at =
        SystemTime::try_from(response.signed_at.expect("signed_at")).expect("valid time");
    assert!(signed_at >= before - Duration::from_secs(1));

    let public = public_key(&listed.public_key_der);
    public
        .verify(
            Pss::new_with_salt::<Sha256>(expected_salt),
            &digest,
            &response.signature,
        )
        .expect("signature verifies with the stated salt");

    let mut flipped = MANIFEST.to_vec();
    flipped[10] ^= 0x01;
    let flipped_digest = Sha256::digest(&flipped);
    assert!(
        public
            .verify(
                Pss::new_with_salt::<Sha256>(expected_salt),
                &flipped_digest,
                &response.signature
            )
            .is_err(),
        "a one-bit change in the manifest must fail"
    );

    // A signature over the digest hashed twice would verify here instead.
    let double = Sha256::digest(&digest);
    assert!(
        public
            .verify(
                Pss::new_with_salt::<Sha256>(expected_salt),
                &double,
                &response.signature
            )
            .is_err(),
        "the service must not hash the digest again"
    );
}

#[tokio::test]
async fn rsa2048_digest_salt_verifies() {
    sign_and_verify(2048, "digest", 32).await;
}

#[tokio::test]
async fn rsa2048_max_salt_verifies() {
    sign_and_verify(2048, "max", 222).await;
}

#[tokio::test]
async fn rsa3072_digest_salt_verifies() {
    sign_and_verify(3072, "digest", 32).await;
}

#[tokio::test]
async fn rsa3072_max_salt_verifies() {
    sign_and_verify(3072, "max", 350).await;
}

#[tokio::test]
async fn rsa4096_digest_salt_verifies() {
    sign_and_verify(4096, "digest", 32).await;
}

#[tokio::test]
async fn rsa4096_max_salt_verifies() {
    sign_and_verify(4096, "max", 478).await;
}

#[tokio::test]
async fn wrong_digest_lengths_are_invalid_argument() {
    let token = TestToken::new(2048, "digest");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;

    for len in [0, 31, 33, 64] {
        let status = client
            .sign(sign_request(vec![1; len], ""))
            .await
            .expect_err("wrong length is rejected");
        assert_eq!(status.code(), Code::InvalidArgument, "length {len}");
        assert_eq!(
            status.message(),
            format!("digest is {len} bytes; a SHA-256 digest is 32 bytes")
        );
    }
}

#[tokio::test]
async fn unknown_key_is_not_found() {
    let token = TestToken::new(2048, "digest");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;

    let mut request = sign_request(vec![1; 32], "");
    request.key_name = "no-such-key".into();
    let status = client.sign(request).await.expect_err("unknown key");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "key \"no-such-key\" is not configured");
}

#[tokio::test]
async fn oversized_request_is_rejected() {
    let token = TestToken::new(2048, "digest");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;

    let status = client
        .sign(sign_request(vec![0; 64 * 1024], ""))
        .await
        .expect_err("oversized request");
    assert_eq!(status.code(), Code::OutOfRange);
}

#[tokio::test]
async fn health_turns_serving_when_key_appears() {
    let token = TestToken::without_key();
    let config = std::fs::read_to_string(token.config()).expect("config");
    let config = config.replace("[signing]\n", "[signing]\nwait_for_default_key = true\n");
    std::fs::write(token.config(), config).expect("config written");
    let server = TestServer::start(&token);

    assert_eq!(server.health("").await, ServingStatus::NotServing);
    assert_eq!(
        server.health("hallmark.v1.SignerService").await,
        ServingStatus::NotServing
    );
    assert_eq!(server.health("liveness").await, ServingStatus::Serving);
    let mut client = server.client().await;
    let status = client
        .sign(sign_request(vec![1; 32], ""))
        .await
        .expect_err("no key yet");
    assert_eq!(status.code(), Code::FailedPrecondition);

    let output = token.hallmark(&["keys", "create", "--bits", "2048"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    server.wait_serving(Duration::from_secs(10)).await;
    assert_eq!(
        server.health("hallmark.v1.SignerService").await,
        ServingStatus::Serving
    );
    let response = client
        .sign(sign_request(vec![1; 32], ""))
        .await
        .expect("signs once the key exists");
    assert_eq!(response.into_inner().key.expect("key").version, 1);
}

#[tokio::test]
async fn metrics_count_requests() {
    let token = TestToken::new(2048, "digest");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;

    for i in 0..3 {
        client
            .sign(sign_request(vec![i; 32], ""))
            .await
            .expect("Sign succeeds");
    }
    client
        .sign(sign_request(vec![0; 5], ""))
        .await
        .expect_err("short digest");
    let mut unknown = sign_request(vec![0; 32], "");
    unknown.key_name = "attacker-chosen-name".into();
    client.sign(unknown).await.expect_err("unknown key");

    let body = server.metrics().await;
    let ok = r#"hallmark_sign_requests_total{code="OK",key_name="default"}"#;
    let invalid = r#"hallmark_sign_requests_total{code="INVALID_ARGUMENT",key_name="default"}"#;
    let not_found = r#"hallmark_sign_requests_total{code="NOT_FOUND",key_name="unknown"}"#;
    assert_eq!(sample(&body, ok), Some(3.0), "{body}");
    assert_eq!(sample(&body, invalid), Some(1.0), "{body}");
    assert_eq!(sample(&body, not_found), Some(1.0), "{body}");
    assert!(
        !body.contains("attacker-chosen-name"),
        "raw client input in labels"
    );
    assert_eq!(
        sample(
            &body,
            r#"hallmark_sign_duration_seconds_count{key_name="default"}"#
        ),
        Some(4.0)
    );
    let fast_bucket = r#"hallmark_sign_duration_seconds_bucket{key_name="default",le="0.0001"}"#;
    assert!(
        sample(&body, fast_bucket).is_some(),
        "sub-millisecond buckets exist"
    );
    assert_eq!(
        sample(
            &body,
            r#"hallmark_hsm_sign_duration_seconds_count{key_name="default"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &body,
            r#"hallmark_signature_self_check_failures_total{key_name="default"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &body,
            &format!(
                r#"hallmark_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert_eq!(sample(&body, "hallmark_token_ready"), Some(1.0));
    assert_eq!(
        sample(
            &body,
            r#"hallmark_key_versions{key_name="default",state="active"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn parallel_signs_after_start_succeed() {
    let token = TestToken::new(2048, "digest");
    let server = TestServer::start(&token);
    let channel = server.channel().await;

    let mut tasks = Vec::new();
    for i in 0..64u8 {
        let mut client = pb::signer_service_client::SignerServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let digest = Sha256::digest([i]).to_vec();
            let response = client
                .sign(sign_request(digest.clone(), &format!("parallel-{i}")))
                .await
                .map(|r| r.into_inner());
            (digest, response)
        }));
    }
    let mut client = server.client().await;
    let keys = client
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner()
        .keys;
    let public = public_key(&keys[0].public_key_der);
    for (i, task) in tasks.into_iter().enumerate() {
        let (digest, response) = task.await.expect("task completes");
        let response = response.unwrap_or_else(|status| panic!("request {i} failed: {status:?}"));
        assert_eq!(response.request_id, format!("parallel-{i}"));
        public
            .verify(
                Pss::new_with_salt::<Sha256>(32),
                &digest,
                &response.signature,
            )
            .unwrap_or_else(|e| panic!("request {i} does not verify: {e}"));
    }
}

#[tokio::test]
async fn unix_socket_serves() {
    let token = TestToken::new(2048, "digest");
    let socket = token.dir.path().join("hallmark.sock");
    let listen = format!("unix:{}", socket.display());
    let server = TestServer::start_with(&token, &listen, &[]);
    assert_eq!(server.grpc_addr, listen);
    server.wait_serving(Duration::from_secs(30)).await;

    let mut client = server.client().await;
    let response = client
        .sign(sign_request(vec![9; 32], "uds"))
        .await
        .expect("Sign over UDS succeeds");
    assert_eq!(response.into_inner().request_id, "uds");

    // The wait runs off the test's runtime thread, so that the client's
    // connection tasks can handle the server's GOAWAY and close.
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("terminate completes");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle connections close before the drain deadline"
    );
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists(), "socket file removed on shutdown");
}

#[tokio::test]
async fn second_instance_on_live_socket_fails() {
    let token = TestToken::new(2048, "digest");
    let socket = token.dir.path().join("hallmark.sock");
    let listen = format!("unix:{}", socket.display());
    let server = TestServer::start_with(&token, &listen, &[]);
    server.wait_serving(Duration::from_secs(30)).await;

    let output = std::process::Command::new(common::HALLMARK)
        .args([
            "serve",
            "--listen",
            &listen,
            "--metrics-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(token.config())
        // Its own audit directory, so that the socket check is what stops it.
        .env("HALLMARK_AUDIT_DIR", token.dir.path().join("audit-second"))
        .output()
        .expect("hallmark runs");
    assert_eq!(output.status.code(), Some(74));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another process is serving this socket"),
        "{stderr}"
    );
    assert_eq!(server.health("").await, ServingStatus::Serving);
}

#[tokio::test]
async fn configured_salt_applies_to_new_versions() {
    let token = TestToken::new(2048, "digest");
    // Salt 300 is valid for new 4096-bit versions but would not fit the
    // RSA-2048 version 1, which keeps the 32-byte salt in its label.
    let config = std::fs::read_to_string(token.config()).expect("config");
    let config = config
        .replace("bits = 2048", "bits = 4096")
        .replace("salt = \"digest\"", "salt = 300");
    std::fs::write(token.config(), config).expect("config written");

    let server = TestServer::start_with(
        &token,
        "127.0.0.1:0",
        &[("HALLMARK_REFRESH_INTERVAL", "200ms")],
    );
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;
    let digest = Sha256::digest(MANIFEST).to_vec();
    let first = client
        .sign(sign_request(digest.clone(), "v1"))
        .await
        .expect("Sign succeeds")
        .into_inner();
    assert_eq!(first.key.expect("key").pss_salt_length, 32);

    let rotated = token.hallmark(&["keys", "rotate", "--force"]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let second = loop {
        let response = client
            .sign(sign_request(digest.clone(), "v2"))
            .await
            .expect("Sign succeeds")
            .into_inner();
        if response.key.as_ref().map(|k| k.version) == Some(2) {
            break response;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "version 2 never signed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let key = second.key.expect("key");
    assert_eq!(key.pss_salt_length, 300);
    assert_eq!(key.key_bits, 4096);
    let keys = client
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner()
        .keys;
    let published = keys
        .iter()
        .find(|k| k.key_id == key.key_id)
        .expect("published");
    public_key(&published.public_key_der)
        .verify(
            Pss::new_with_salt::<Sha256>(300),
            &digest,
            &second.signature,
        )
        .expect("signature verifies with salt 300");
}

#[tokio::test]
async fn regular_file_at_socket_path_is_kept() {
    let token = TestToken::new(2048, "digest");
    let path = token.dir.path().join("precious.txt");
    std::fs::write(&path, "precious data").expect("file written");

    let listen = format!("unix:{}", path.display());
    let output = token.hallmark(&[
        "serve",
        "--listen",
        &listen,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(output.status.code(), Some(74));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the path exists and is not a socket"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).expect("file kept"),
        "precious data"
    );
}

#[tokio::test]
async fn overdue_active_key_stays_published() {
    let token = TestToken::new(2048, "digest");
    token.append_config("rotation_period = \"1s\"\nprepublish = \"0s\"\nverify_grace = \"1s\"\n");
    let server = TestServer::start_with(
        &token,
        "127.0.0.1:0",
        &[("HALLMARK_REFRESH_INTERVAL", "500ms")],
    );
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;

    // No rotation runs, so the active version is past its verify-until time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let signed = client
        .sign(sign_request(vec![3; 32], "overdue"))
        .await
        .expect("Sign succeeds")
        .into_inner();
    let key_id = signed.key.expect("key").key_id;
    let keys = client
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key_id, key_id, "the signing key stays published");
    let body = server.metrics().await;
    let due = sample(
        &body,
        r#"hallmark_key_rotation_due_seconds{key_name="default"}"#,
    )
    .expect("rotation due gauge");
    assert!(due < 0.0, "overdue rotation shows as negative: {due}");
}

#[tokio::test]
async fn audit_health_is_1_when_the_audit_log_is_off() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let config = std::fs::read_to_string(token.config()).expect("config");
    let config = config.replace("[audit]\n", "[audit]\nenabled = false\n");
    std::fs::write(token.config(), config).expect("config written");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let metrics = server.metrics().await;
    assert_eq!(
        sample(&metrics, "hallmark_audit_healthy"),
        Some(1.0),
        "{metrics}"
    );
    assert!(!token.dir.path().join("audit").exists());
}

/// `hallmark sign` stops once the reader has closed stdout, because no
/// further signed output can reach anyone, and exits 0 without an error.
#[tokio::test]
async fn sign_command_stops_at_closed_stdout() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let timestamp = hallmark::verify::format_rfc3339(SystemTime::now());
    let manifests = token.dir.path().join("manifests.jsonl");
    let lines: Vec<String> = (0..3)
        .map(|i| format!("{{\"prediction\": {i}, \"timestamp\": \"{timestamp}\"}}\n"))
        .collect();
    std::fs::write(&manifests, lines.concat()).expect("writes");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);

    let output = std::process::Command::new(common::HALLMARK)
        .args(["sign", "--target", &server.grpc_addr, "--manifest"])
        .arg(&manifests)
        .stdout(writer)
        .output()
        .expect("hallmark runs");

    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert_eq!(output.status.code(), Some(0));
    let body = server.metrics().await;
    let ok = r#"hallmark_sign_requests_total{code="OK",key_name="default"}"#;
    assert_eq!(sample(&body, ok), Some(1.0), "{body}");
}
