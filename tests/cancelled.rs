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
    let (control, server) = one_session(&token).await;
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

/// Reads the kinds of the audit records, in order.
fn record_kinds(token: &TestToken) -> Vec<String> {
    let path = token.dir.path().join("audit").join("audit-000001.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|record| record["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until the pool's one session is lent out in two scrapes 200 ms
/// apart, so that a short token read between two scrapes does not count.
async fn wait_session_in_use(server: &common::TestServer) {
    let series = r#"hallmark_sessions{state="in_use"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 2 {
        assert!(Instant::now() < deadline, "the session was never in use");
        let in_use = common::sample(&server.metrics().await, series);
        in_a_row = if in_use == Some(1.0) { in_a_row + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts a server on `token` behind the fault-injecting module, with one
/// session, and waits until it reports SERVING.
async fn one_session(token: &TestToken) -> (FaultControl, common::TestServer) {
    let control = FaultControl::new(token);
    let mut env = control.env();
    env.push(("HALLMARK_SESSIONS", "1".into()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = common::TestServer::start_with(token, "127.0.0.1:0", &pairs);
    server.wait_serving(Duration::from_secs(30)).await;
    (control, server)
}

/// [`one_session`], with an audit checkpoint every second.
async fn one_session_with_checkpoints() -> (TestToken, FaultControl, common::TestServer) {
    let token = TestToken::new(2048, "digest");
    let config = std::fs::read_to_string(token.config()).expect("config readable");
    std::fs::write(
        token.config(),
        config.replace("[audit]\n", "[audit]\ncheckpoint_interval = \"1s\"\n"),
    )
    .expect("config writable");
    let (control, server) = one_session(&token).await;
    (token, control, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_waits_leave_the_session_queue() {
    let (token, control, server) = one_session_with_checkpoints().await;
    let mut client = server.client().await;
    let before = control.counts();

    // The one session signs for 4 s. An invalid request adds a record
    // meanwhile, so each checkpoint interval tries to sign a checkpoint,
    // and each try stops waiting for the session after its 1 s limit by
    // dropping its wait, not through a deadline.
    control.set(&["C_SignInit delay_ms=4000 times=1"]);
    let mut slow_client = client.clone();
    let slow = tokio::spawn(async move { slow_client.sign(request("slow")).await });
    wait_session_in_use(&server).await;
    let mut invalid = request("invalid");
    invalid.digest.truncate(3);
    let status = client
        .sign(invalid)
        .await
        .expect_err("a 3-byte digest is rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    slow.await
        .expect("task completes")
        .expect("the slow request signs");

    // The checkpoints that follow the slow signature take milliseconds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = server.log_text();
    assert!(
        log.contains("audit checkpoint failed; retrying at the next interval"),
        "{log}"
    );
    let checkpoints = record_kinds(&token)
        .iter()
        .filter(|kind| *kind == "checkpoint")
        .count() as u64;
    assert!(checkpoints >= 1, "{:?}", record_kinds(&token));
    // The token made the slow signature and one per written checkpoint.
    // A checkpoint try that stopped waiting before the session was free
    // must not reach the token later, when no caller waits for it.
    let after = control.counts();
    let sign_inits = after["C_SignInit"].calls - before.get("C_SignInit").map_or(0, |c| c.calls);
    assert_eq!(sign_inits, 1 + checkpoints, "{after:?}\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_go_ahead_of_queued_requests() {
    let (token, control, server) = one_session_with_checkpoints().await;
    let client = server.client().await;

    // cryptoki calls C_Sign twice per signature, once for the length, so
    // every signature takes 200 ms on the one session and 16 requests
    // queue for over 3 s. A checkpoint that waited behind them would miss
    // its 1 s limit; one that goes first waits for one signature at most.
    control.set(&["C_Sign delay_ms=100"]);
    let mut requests = Vec::new();
    for index in 0..16 {
        let mut client = client.clone();
        requests.push(tokio::spawn(async move {
            client.sign(request(&format!("queued-{index}"))).await
        }));
    }
    for done in requests {
        done.await
            .expect("task completes")
            .expect("the queued request signs");
    }

    let log = server.log_text();
    assert!(!log.contains("audit checkpoint failed"), "{log}");
    let kinds = record_kinds(&token);
    let last_sign = kinds
        .iter()
        .rposition(|kind| kind != "checkpoint")
        .expect("sign records");
    let checkpoints_meanwhile = kinds[..last_sign]
        .iter()
        .filter(|kind| *kind == "checkpoint")
        .count();
    assert!(checkpoints_meanwhile >= 2, "{kinds:?}\n{log}");
}

/// Counts the audit records of kind "sign" by outcome.
fn audit_outcomes(token: &TestToken) -> std::collections::BTreeMap<String, u64> {
    let path = token.dir.path().join("audit").join("audit-000001.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts = std::collections::BTreeMap::new();
    for record in text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| record["kind"] == "sign")
    {
        let outcome = record["outcome"].as_str().unwrap_or_default().to_owned();
        *counts.entry(outcome).or_insert(0) += 1;
    }
    counts
}

/// A request refused for its deadline counts under the code that its
/// audit record carries, DEADLINE_EXCEEDED, which the error-rate alert
/// watches, even when tonic's own timer drops the handler meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn expired_sign_counts_as_recorded() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let server = common::TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;

    // The header alone, without a client-side timer: the deadline has
    // passed by the time the server admits each request, so the service
    // refuses it with DEADLINE_EXCEEDED before it reaches the token.
    for n in 0..20 {
        let mut expired = tonic::Request::new(request(&format!("expired-{n}")));
        expired
            .metadata_mut()
            .insert("grpc-timeout", "1n".parse().expect("valid header"));
        client.sign(expired).await.expect_err("deadline passed");
    }

    // tonic's own timer may respond first, even before the service receives
    // the request. A request that the service received is counted after its
    // record is written.
    let counted = |body: &str| -> f64 {
        body.lines()
            .filter(|line| line.starts_with("hallmark_sign_requests_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let waited = Instant::now() + Duration::from_secs(10);
    let mut recorded = audit_outcomes(&token);
    let mut body = server.metrics().await;
    while (recorded.is_empty() || counted(&body) != recorded.values().sum::<u64>() as f64)
        && Instant::now() < waited
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        recorded = audit_outcomes(&token);
        body = server.metrics().await;
    }
    assert_eq!(
        counted(&body),
        recorded.values().sum::<u64>() as f64,
        "{recorded:?}"
    );
    // The deadline had passed before the service looked, so every request
    // it saw was refused for it, also when its client had gone.
    assert_eq!(
        recorded.keys().collect::<Vec<_>>(),
        ["DEADLINE_EXCEEDED"],
        "{recorded:?}"
    );

    // The error-rate alert counts DEADLINE_EXCEEDED and leaves CANCELLED
    // out, so the metric must carry the code the service decided on, the
    // one in the audit record.
    for (outcome, count) in &recorded {
        let series =
            format!(r#"hallmark_sign_requests_total{{code="{outcome}",key_name="default"}}"#);
        assert_eq!(
            common::sample(&body, &series),
            Some(*count as f64),
            "audit outcomes {recorded:?}, metrics:\n{}",
            body.lines()
                .filter(|line| line.starts_with("hallmark_sign_requests_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
