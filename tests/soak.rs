//! A bounded soak: a fixed number of Sign requests from several client
//! tasks, mixing valid requests with malformed ones, unknown key names,
//! deadlines too short to meet and clients that give up mid-request.
//! At the end every valid request has either signed, with a signature
//! that the `p256` crate verifies, or failed with a status that
//! docs/protocol.md lists for its case. Every OK response has its audit
//! record, no session is left lent out, and resident memory stays within
//! a fixed bound. The test prints its figures.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, TestToken, sample};
use hallmark::pb::{self, SignRequest};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::Code;

/// Requests in the whole run.
const REQUESTS: usize = 20_000;
/// Client tasks sending them, each on its own connection.
const CLIENTS: usize = 8;
/// Sessions in the service's pool.
const SESSIONS: usize = 4;
/// Largest resident set the service may reach, in KiB. A debug build
/// idles at about 30 MiB.
const MAX_RSS_KIB: u64 = 128 * 1024;

/// What a request of the mix does, chosen by its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Valid,
    ShortDigest,
    UnknownKey,
    TightDeadline,
    GivesUp,
}

impl Kind {
    fn of(index: usize) -> Self {
        match index % 10 {
            0 => Kind::ShortDigest,
            1 => Kind::UnknownKey,
            2 => Kind::TightDeadline,
            3 => Kind::GivesUp,
            _ => Kind::Valid,
        }
    }
}

fn request(index: usize, kind: Kind) -> SignRequest {
    let mut digest = Sha256::digest(format!("soak-{index}").as_bytes()).to_vec();
    if kind == Kind::ShortDigest {
        digest.truncate(31);
    }
    SignRequest {
        digest,
        hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
        key_name: if kind == Kind::UnknownKey {
            "no-such-key".into()
        } else {
            String::new()
        },
        request_id: format!("soak-{index}"),
        signature_encoding: 0,
    }
}

/// Reads a field such as `VmRSS` or `VmHWM`, in KiB, from
/// `/proc/PID/status`.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("memory field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_load_keeps_every_promise() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let sessions = SESSIONS.to_string();
    let server = TestServer::start_with(
        &token,
        "127.0.0.1:0",
        &[("HALLMARK_SESSIONS", &sessions), ("RUST_LOG", "warn")],
    );
    server.wait_serving(Duration::from_secs(30)).await;
    let key = server
        .client()
        .await
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner()
        .keys
        .remove(0);
    let verifying_key =
        Arc::new(VerifyingKey::from_public_key_der(&key.public_key_der).expect("P-256 key"));
    let rss_before = memory_kib(server.pid(), "VmRSS");

    let started = Instant::now();
    let mut tasks = Vec::new();
    for client_index in 0..CLIENTS {
        let mut client =
            pb::signer_service_client::SignerServiceClient::new(server.channel().await);
        let verifying_key = Arc::clone(&verifying_key);
        tasks.push(tokio::spawn(async move {
            let mut outcomes: BTreeMap<(Kind, String), usize> = BTreeMap::new();
            let mut signed = Vec::new();
            for index in (client_index..REQUESTS).step_by(CLIENTS) {
                let kind = Kind::of(index);
                let mut call = tonic::Request::new(request(index, kind));
                if kind == Kind::TightDeadline {
                    call.set_timeout(Duration::from_micros(200));
                }
                let result = if kind == Kind::GivesUp {
                    // The client stops waiting after 200 µs, usually while
                    // the request is in flight.
                    match tokio::time::timeout(Duration::from_micros(200), client.sign(call)).await
                    {
                        Ok(result) => result,
                        Err(_) => {
                            *outcomes.entry((kind, "GAVE_UP".into())).or_default() += 1;
                            continue;
                        }
                    }
                } else {
                    client.sign(call).await
                };
                let code = match &result {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                };
                let allowed = match kind {
                    Kind::Valid => code == Code::Ok,
                    Kind::ShortDigest => code == Code::InvalidArgument,
                    Kind::UnknownKey => code == Code::NotFound,
                    Kind::TightDeadline | Kind::GivesUp => {
                        matches!(code, Code::Ok | Code::DeadlineExceeded | Code::Cancelled)
                    }
                };
                assert!(allowed, "request {index} ({kind:?}) got {result:?}");
                if let Ok(response) = result {
                    let response = response.into_inner();
                    let digest = Sha256::digest(format!("soak-{index}").as_bytes());
                    let signature = Signature::from_der(&response.signature)
                        .unwrap_or_else(|e| panic!("request {index}: not DER: {e}"));
                    verifying_key
                        .verify_prehash(&digest, &signature)
                        .unwrap_or_else(|e| panic!("request {index} does not verify: {e}"));
                    signed.push(response.request_id);
                }
                *outcomes.entry((kind, format!("{code:?}"))).or_default() += 1;
            }
            (outcomes, signed)
        }));
    }
    let mut outcomes: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    let mut signed = Vec::new();
    for task in tasks {
        let (counts, ids) = task.await.expect("client task completes");
        for (key, count) in counts {
            *outcomes.entry(key).or_default() += count;
        }
        signed.extend(ids);
    }
    let elapsed = started.elapsed();

    // Requests whose clients gave up may still be signing. Once they are
    // done, every session is back in the pool.
    let idle = r#"hallmark_sessions{state="idle"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut metrics = server.metrics().await;
    while sample(&metrics, idle) != Some(SESSIONS as f64) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = server.metrics().await;
    }
    assert_eq!(sample(&metrics, idle), Some(SESSIONS as f64), "{metrics}");
    assert_eq!(
        sample(&metrics, r#"hallmark_sessions{state="in_use"}"#),
        Some(0.0)
    );

    let rss_after = memory_kib(server.pid(), "VmRSS");
    let rss_peak = memory_kib(server.pid(), "VmHWM");
    let total: usize = outcomes.values().sum();
    eprintln!(
        "{total} requests from {CLIENTS} clients in {:.1} s ({:.0}/s); resident memory \
         {rss_before} KiB before, {rss_after} KiB after, {rss_peak} KiB peak",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    for ((kind, code), count) in &outcomes {
        eprintln!("  {kind:?} {code}: {count}");
    }
    assert_eq!(total, REQUESTS);
    let valid = REQUESTS - REQUESTS / 10 * 4;
    assert_eq!(outcomes.get(&(Kind::Valid, "Ok".into())), Some(&valid));
    assert_eq!(
        outcomes.get(&(Kind::ShortDigest, "InvalidArgument".into())),
        Some(&(REQUESTS / 10))
    );
    assert_eq!(
        outcomes.get(&(Kind::UnknownKey, "NotFound".into())),
        Some(&(REQUESTS / 10))
    );
    assert!(
        rss_peak < MAX_RSS_KIB,
        "peak resident memory {rss_peak} KiB"
    );

    // Every signature a client received has an OK record in the audit log.
    drop(server);
    let audit = token.dir.path().join("audit");
    let mut recorded = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&audit).expect("audit directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "jsonl") {
            let text = std::fs::read_to_string(&path).expect("audit file");
            for line in text.lines() {
                let record: Value = serde_json::from_str(line).expect("JSON record");
                if record["outcome"] == "OK" {
                    recorded.insert(record["request_id"].as_str().unwrap_or("").to_owned());
                }
            }
        }
    }
    let missing: Vec<&String> = signed.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "signed without an OK record: {missing:?}"
    );
}
