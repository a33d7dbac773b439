//! Graceful shutdown on SIGTERM: requests in flight finish and verify, a
//! new request is refused, the audit log ends with a checkpoint over every
//! record, every PKCS#11 session is closed, the module is finalized, and
//! the process exits 0. The fault-injecting module slows C_Sign down so
//! that requests are still in flight when the signal arrives.

mod common;

use std::time::Duration;

use common::{FaultControl, TestToken, public_key};
use hallmark::pb::{self, SignRequest};
use rsa::Pss;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Requests in flight when SIGTERM arrives.
const IN_FLIGHT: usize = 4;

fn request(request_id: &str) -> SignRequest {
    SignRequest {
        digest: Sha256::digest(request_id.as_bytes()).to_vec(),
        hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
        key_name: String::new(),
        request_id: request_id.into(),
        signature_encoding: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_closes_everything() {
    let token = TestToken::new(2048, "digest");
    let control = FaultControl::new(&token);
    let server = control.start_server(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let channel = server.channel().await;
    let mut client = pb::signer_service_client::SignerServiceClient::new(channel.clone());
    let key = client
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner()
        .keys
        .remove(0);
    let verifying_key = public_key(&key.public_key_der);

    // Each signature makes two C_Sign calls, so it takes at least 800 ms.
    control.set(&["C_Sign delay_ms=400"]);
    let mut in_flight = Vec::new();
    for n in 0..IN_FLIGHT {
        let mut client = pb::signer_service_client::SignerServiceClient::new(channel.clone());
        in_flight.push(tokio::spawn(async move {
            client.sign(request(&format!("in-flight-{n}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = server.pid().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The service stops accepting connections at once, so a new client
    // cannot connect. Clients on existing connections get GOAWAY instead.
    let fresh = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2));
    let refused = fresh.connect().await.expect_err("the listener is closed");
    assert!(
        format!("{refused:?}").contains("ConnectionRefused"),
        "{refused:?}"
    );

    for (n, task) in in_flight.into_iter().enumerate() {
        let response = task
            .await
            .expect("task completes")
            .unwrap_or_else(|status| panic!("in-flight request {n} failed: {status:?}"))
            .into_inner();
        let digest = Sha256::digest(format!("in-flight-{n}").as_bytes());
        verifying_key
            .verify(
                Pss::new_with_salt::<Sha256>(32),
                &digest,
                &response.signature,
            )
            .unwrap_or_else(|e| panic!("in-flight request {n} does not verify: {e}"));
    }

    let log = server.log.clone();
    let status = tokio::task::spawn_blocking(move || server.wait_exit())
        .await
        .expect("wait task completes");
    let log = log.lock().expect("log").join("\n");
    assert_eq!(status.code(), Some(0), "{log}");

    // Every session opened was closed, and the module was finalized once.
    let counts = control.counts();
    assert_eq!(
        counts["C_CloseSession"].calls, counts["C_OpenSession"].calls,
        "{counts:?}"
    );
    assert_eq!(counts["C_Finalize"].calls, 1, "{counts:?}");

    // The log ends with a checkpoint over the four sign records.
    let path = token.dir.path().join("audit").join("audit-000001.jsonl");
    let text = std::fs::read_to_string(path).expect("audit file");
    let records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    let signed: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "sign" && r["outcome"] == "OK")
        .collect();
    assert_eq!(signed.len(), IN_FLIGHT, "{text}");
    let last = records.last().expect("records");
    assert_eq!(last["kind"], "checkpoint", "{last}");
    assert_eq!(last["seq"], records.len(), "{last}");
}
