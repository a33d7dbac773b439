//! A request whose deadline passes while the token signs: the client gets
//! no signature, the token's operation finishes on its session, and the
//! audit log still records what the token did. The fault-injecting module
//! slows C_Sign down so that the deadline falls inside the signature.

mod common;

use std::time::{Duration, Instant};

use common::{FaultControl, TestToken};
use hallmark::pb::{self, SignRequest};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::Code;

fn request(request_id: &str) -> SignRequest {
    SignRequest {
        digest: Sha256::digest(request_id.as_bytes()).to_vec(),
        hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
        key_name: String::new(),
        request_id: request_id.into(),
        signature_encoding: 0,
    }
}

/// Reads the audit records with `request_id`.
fn records_of(token: &TestToken, request_id: &str) -> Vec<Value> {
    let path = token.dir.path().join("audit").join("audit-000001.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| record["request_id"] == request_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn late_signature_recorded_as_cancelled() {
    let token = TestToken::new(2048, "digest");
    let control = FaultControl::new(&token);
    let server = control.start_server(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;
    let key_id = client
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner()
        .keys[0]
        .key_id
        .clone();

    // cryptoki calls C_Sign twice per signature, so each signature takes
    // at least 800 ms, well past the 300 ms deadline.
    control.set(&["C_Sign delay_ms=400"]);
    let mut slow = tonic::Request::new(request("slow"));
    slow.set_timeout(Duration::from_millis(300));
    let status = client.sign(slow).await.expect_err("the deadline passes");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");

    // The token finishes the signature after the client has gone, and the
    // record follows it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut records = records_of(&token, "slow");
    while records.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        records = records_of(&token, "slow");
    }
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["outcome"], "CANCELLED", "{}", records[0]);
    assert_eq!(records[0]["key_id"], key_id.as_str(), "{}", records[0]);
    assert_eq!(records[0]["key_version"], 1, "{}", records[0]);
    let counts = control.counts();
    assert_eq!(counts["C_Sign"].calls, 2, "{counts:?}");
    assert_eq!(counts["C_Sign"].failed, 0, "{counts:?}");

    // The session came back to the pool in a usable state.
    control.set(&[]);
    let signed = client
        .sign(request("after"))
        .await
        .expect("signs after the cancelled request")
        .into_inner();
    assert_eq!(signed.key.expect("key").key_id, key_id);
    assert_eq!(records_of(&token, "after")[0]["outcome"], "OK");
    let body = server.metrics().await;
    assert_eq!(
        common::sample(
            &body,
            r#"hallmark_sign_requests_total{code="CANCELLED",key_name="default"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_requests_leave_the_session_queue() {
    let token = TestToken::new(2048, "digest");
    let control = FaultControl::new(&token);
    let mut env = control.env();
    env.push(("HALLMARK_SESSIONS", "1".into()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = common::TestServer::start_with(&token, "127.0.0.1:0", &pairs);
    server.wait_serving(Duration::from_secs(30)).await;
    let channel = server.channel().await;

    // One session, and each signature holds it for at least 800 ms. Of
    // four requests with a 1 s deadline, the first two get the session in
    // time; the other two would get it after their deadline, so they
    // leave the queue and never reach the token.
    control.set(&["C_Sign delay_ms=400"]);
    let before = control.counts();
    let mut calls = Vec::new();
    for n in 0..4 {
        let mut client = pb::signer_service_client::SignerServiceClient::new(channel.clone());
        calls.push(tokio::spawn(async move {
            let mut call = tonic::Request::new(request(&format!("queued-{n}")));
            call.set_timeout(Duration::from_secs(1));
            client.sign(call).await.map(|_| ())
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        let _ = call.await.expect("task completes");
    }
    // Let the second signature finish on the token.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let after = control.counts();
    let sign_inits = after["C_SignInit"].calls - before.get("C_SignInit").map_or(0, |c| c.calls);
    assert_eq!(sign_inits, 2, "{after:?}");
    for n in [2, 3] {
        let records = records_of(&token, &format!("queued-{n}"));
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["key_id"], "", "{}", records[0]);
        assert!(
            records[0]["outcome"] == "DEADLINE_EXCEEDED" || records[0]["outcome"] == "CANCELLED",
            "{}",
            records[0]
        );
    }
}
