//! SignBatch against a real server and a real SoftHSM token: per-item
//! results, the failures that refuse a whole batch, one audit record per
//! item, and the request metrics. Signatures are checked with the `p256`
//! and `rsa` crates.

mod common;

use std::time::Duration;

use common::{TestServer, TestToken, sample};
use hallmark::pb::{self, SignBatchItem, SignBatchRequest};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::pkcs8::DecodePublicKey;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::Code;

fn digest_of(request_id: &str) -> Vec<u8> {
    Sha256::digest(request_id.as_bytes()).to_vec()
}

fn item(request_id: &str) -> SignBatchItem {
    SignBatchItem {
        digest: digest_of(request_id),
        request_id: request_id.into(),
    }
}

fn batch(items: Vec<SignBatchItem>) -> SignBatchRequest {
    SignBatchRequest {
        items,
        hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
        key_name: String::new(),
        signature_encoding: pb::SignatureEncoding::Der as i32,
    }
}

async fn start(token: &TestToken) -> TestServer {
    let server = TestServer::start_with(token, "127.0.0.1:0", &[]);
    server.wait_serving(Duration::from_secs(30)).await;
    server
}

/// Returns the only key version that the server lists.
async fn only_key(server: &TestServer) -> pb::KeyVersion {
    let mut keys = server
        .client()
        .await
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys.remove(0)
}

/// Reads every sign record of the token's audit log.
fn sign_records(token: &TestToken) -> Vec<Value> {
    let directory = token.dir.path().join("audit");
    let mut paths: Vec<_> = std::fs::read_dir(&directory)
        .expect("audit directory readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    paths.sort();
    paths
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).expect("audit file readable");
            text.lines()
                .map(|line| serde_json::from_str::<Value>(line).expect("record is JSON"))
                .collect::<Vec<_>>()
        })
        .filter(|record| record["kind"] == "sign")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_item_gets_its_own_result() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let server = start(&token).await;
    let key = only_key(&server).await;
    let verifier =
        p256::ecdsa::VerifyingKey::from_public_key_der(&key.public_key_der).expect("P-256 key");

    let mut items: Vec<SignBatchItem> = (0..5).map(|n| item(&format!("item-{n}"))).collect();
    items.insert(
        2,
        SignBatchItem {
            digest: vec![1; 31],
            request_id: "short".into(),
        },
    );
    items.push(SignBatchItem {
        digest: digest_of("spaced"),
        request_id: "has space".into(),
    });
    let response = server
        .client()
        .await
        .sign_batch(batch(items.clone()))
        .await
        .expect("the batch is accepted")
        .into_inner();

    assert_eq!(response.results.len(), 7);
    let response_key = response.key.as_ref().expect("the signing key is named");
    assert_eq!(response_key.key_id, key.key_id);
    assert_eq!(response_key.version, 1);
    assert_eq!(
        response.signature_encoding,
        pb::SignatureEncoding::Der as i32
    );
    for (index, (sent, result)) in items.iter().zip(&response.results).enumerate() {
        match index {
            2 => {
                let error = result.error.as_ref().expect("short digest fails");
                assert_eq!(error.code, Code::InvalidArgument as i32);
                assert_eq!(
                    error.message,
                    "digest is 31 bytes; a SHA-256 digest is 32 bytes"
                );
                assert!(result.signature.is_empty());
                assert_eq!(result.request_id, "short");
            }
            6 => {
                let error = result.error.as_ref().expect("bad request ID fails");
                assert_eq!(error.code, Code::InvalidArgument as i32);
                assert_eq!(
                    error.message,
                    "request_id may contain only printable ASCII without spaces"
                );
                assert_eq!(result.request_id, "");
            }
            _ => {
                assert_eq!(result.error, None, "item {index}");
                assert_eq!(result.request_id, sent.request_id);
                let signature =
                    p256::ecdsa::Signature::from_der(&result.signature).expect("DER signature");
                verifier
                    .verify_prehash(&sent.digest, &signature)
                    .unwrap_or_else(|e| panic!("item {index} does not verify: {e}"));
            }
        }
    }

    // One record per item, in order, with the item's own outcome.
    let records = sign_records(&token);
    assert_eq!(records.len(), 7, "{records:?}");
    for (index, record) in records.iter().enumerate() {
        let expected = if index == 2 || index == 6 {
            "INVALID_ARGUMENT"
        } else {
            "OK"
        };
        assert_eq!(record["outcome"], expected, "record {index}: {record}");
        let key_id = if expected == "OK" {
            key.key_id.as_str()
        } else {
            ""
        };
        assert_eq!(record["key_id"].as_str().unwrap_or(""), key_id, "{record}");
    }
    assert_eq!(records[0]["request_id"], "item-0");
    assert_eq!(records[6]["request_id"], "has space");

    let metrics = server.metrics().await;
    let count = |code: &str| {
        sample(
            &metrics,
            &format!(r#"hallmark_sign_requests_total{{code="{code}",key_name="default"}}"#),
        )
    };
    assert_eq!(count("OK"), Some(5.0), "{metrics}");
    assert_eq!(count("INVALID_ARGUMENT"), Some(2.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            r#"hallmark_sign_batch_duration_seconds_count{key_name="default"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn problems_shared_by_every_item_refuse_the_batch() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let config = std::fs::read_to_string(token.config()).expect("config");
    let config = config.replace("[signing]\n", "[signing]\nmax_batch = 3\n");
    std::fs::write(token.config(), config).expect("config written");
    let server = start(&token).await;
    let mut client = server.client().await;

    let refused = |request: SignBatchRequest| {
        let mut client = client.clone();
        async move {
            client
                .sign_batch(request)
                .await
                .expect_err("the batch is refused")
        }
    };
    let empty = refused(batch(Vec::new())).await;
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(empty.message(), "items is empty; send at least one digest");

    let four = (0..4).map(|n| item(&format!("n{n}"))).collect();
    let too_many = refused(batch(four)).await;
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert_eq!(
        too_many.message(),
        "items has 4 digests; the maximum is 3 (signing.max_batch); split the batch"
    );

    let mut unknown = batch(vec![item("a")]);
    unknown.key_name = "nope".into();
    let unknown = refused(unknown).await;
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(unknown.message(), "key \"nope\" is not configured");

    // SHA-384 digests of the right length for their algorithm, for a key
    // that signs SHA-256: the whole batch does not suit the key.
    let mut sha384 = batch(vec![SignBatchItem {
        digest: vec![9; 48],
        request_id: "long".into(),
    }]);
    sha384.hash_algorithm = pb::HashAlgorithm::Sha384 as i32;
    let mismatch = refused(sha384).await;
    assert_eq!(mismatch.code(), Code::InvalidArgument);
    assert_eq!(
        mismatch.message(),
        "key \"default\" signs ecdsa-p256-sha256 and needs a 32-byte digest, not 48 bytes"
    );

    // Digests of the length that the request's hash algorithm names, but
    // an algorithm the key does not use: refused whole, even though every
    // item is invalid for the batch's own algorithm.
    let mut no_valid = batch(vec![SignBatchItem {
        digest: vec![9; 32],
        request_id: "short-for-384".into(),
    }]);
    no_valid.hash_algorithm = pb::HashAlgorithm::Sha384 as i32;
    let refused_whole = refused(no_valid).await;
    assert_eq!(refused_whole.code(), Code::InvalidArgument);
    assert_eq!(
        refused_whole.message(),
        "key \"default\" signs ecdsa-p256-sha256 and needs a 32-byte digest, not 48 bytes"
    );

    // The service still signs a good batch after the refusals.
    let response = client
        .sign_batch(batch(vec![item("x"), item("y"), item("z")]))
        .await
        .expect("a valid batch signs")
        .into_inner();
    assert!(response.results.iter().all(|r| r.error.is_none()));

    // A refused batch leaves one record, whatever its size, with its first
    // item's request ID; nothing refused carries a key ID.
    let records = sign_records(&token);
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(
        outcomes,
        [
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "NOT_FOUND",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "OK",
            "OK",
            "OK"
        ]
    );
    assert_eq!(records[1]["request_id"], "n0");
    assert!(
        records[..4]
            .iter()
            .all(|r| r["key_id"].as_str().unwrap_or("").is_empty()),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_pss_batch_verifies() {
    let token = TestToken::new(2048, "digest");
    let server = start(&token).await;
    let key = only_key(&server).await;
    let public = common::public_key(&key.public_key_der);
    let items: Vec<SignBatchItem> = (0..16).map(|n| item(&format!("rsa-{n}"))).collect();
    let response = server
        .client()
        .await
        .sign_batch(batch(items.clone()))
        .await
        .expect("the batch signs")
        .into_inner();
    assert_eq!(response.results.len(), 16);
    for (sent, result) in items.iter().zip(&response.results) {
        assert_eq!(result.error, None);
        public
            .verify(
                rsa::Pss::new_with_salt::<Sha256>(32),
                &sent.digest,
                &result.signature,
            )
            .expect("PSS signature verifies");
    }
    // PSS is randomized: no two signatures are equal, even of one digest.
    let again = server
        .client()
        .await
        .sign_batch(batch(vec![item("rsa-0"), item("rsa-0")]))
        .await
        .expect("the batch signs")
        .into_inner();
    assert_ne!(again.results[0].signature, again.results[1].signature);
}
