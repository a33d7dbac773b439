//! Stopping `hallmark serve` with SIGTERM and SIGINT.
//!
//! A graceful shutdown lets requests in flight finish and verify, refuses
//! new ones, ends the audit log with a checkpoint over every record, closes
//! every PKCS#11 session, finalizes the module and exits 0. A second
//! signal ends the process at once with 128 plus the signal's number. A
//! signal during start-up stops it cleanly, and a stop while the token is
//! unavailable explains why no final checkpoint was written. The
//! fault-injecting module slows PKCS#11 calls down so that work is still
//! in progress when the signal arrives.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{FaultControl, HALLMARK, TestServer, TestToken, public_key};
use hallmark::pb::{self, SignRequest};
use rsa::Pss;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic_health::pb::health_check_response::ServingStatus;

/// Requests in flight when SIGTERM arrives.
const IN_FLIGHT: usize = 4;

/// Exit code after a second SIGTERM: 128 + 15.
const EXIT_SIGTERM: i32 = 143;

/// Exit code after a second signal that is SIGINT: 128 + 2.
const EXIT_SIGINT: i32 = 130;

/// The log message of a stop forced by a second signal.
const SECOND_SIGNAL_LOG: &str = "second signal: stopping without waiting for requests in \
                                 progress, the final audit checkpoint or the token";

/// The log message of a final checkpoint that the token could not sign.
const UNSIGNED_CHECKPOINT_LOG: &str = "the final audit checkpoint could not be signed because \
                                       the token is unavailable; the records since the last \
                                       checkpoint are intact, and the first checkpoint after \
                                       the next start covers them";

/// Maximum time from a second signal to the exit. The process exits as
/// soon as it reads the signal; the margin is for loaded CI runners.
const FORCED_EXIT: Duration = Duration::from_secs(2);

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

/// A `hallmark serve` process that may not have bound its listeners yet,
/// killed on drop.
struct Process {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `hallmark serve` on `token` with loopback TCP listeners on
    /// ports that the OS chooses, and extra environment.
    fn start(token: &TestToken, env: &[(&str, String)]) -> Self {
        let mut child = Command::new(HALLMARK)
            .current_dir(token.dir.path())
            .arg("serve")
            .arg("--config")
            .arg(token.config())
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hallmark serve starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("log lock").push(line);
            }
        });
        Self { child, log }
    }

    fn signal(&self, name: &str) {
        send_signal(self.child.id(), name);
    }

    /// Waits up to `limit` for the process to exit, and returns its status
    /// and its whole log.
    fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("child status readable") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "hallmark serve still running after {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        (status, self.log_text_after_exit())
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Returns the log once the reader thread has taken the last lines
    /// from the pipe of a process that exited.
    fn log_text_after_exit(&self) -> String {
        std::thread::sleep(Duration::from_millis(200));
        self.log_text()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends the signal `name` (`TERM`, `INT`) to `pid` with kill(1).
fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Waits until the fault module has counted a call of `function`, which it
/// does before it delays the call.
fn wait_for_call(control: &FaultControl, function: &str, process: &Process) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while control.calls(function) == 0 {
        assert!(
            Instant::now() < deadline,
            "{function} was never called; log:\n{}",
            process.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn audit_file(token: &TestToken) -> PathBuf {
    token.dir.path().join("audit").join("audit-000001.jsonl")
}

/// Reads every complete line of the token's first audit file.
fn audit_records(token: &TestToken) -> Vec<Value> {
    let text = std::fs::read_to_string(audit_file(token)).expect("audit file readable");
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|line| serde_json::from_str(line).expect("each complete line is JSON"))
        .collect()
}

/// Runs `hallmark audit verify --keys KEYS FILE`.
fn audit_verify(keys: &Path, file: &Path) -> Output {
    Command::new(HALLMARK)
        .env_remove("HALLMARK_CONFIG")
        .args(["audit", "verify", "--keys"])
        .arg(keys)
        .arg(file)
        .output()
        .expect("hallmark runs")
}

/// Saves the server's JWKS document in the token's directory and returns
/// its path.
async fn save_jwks(server: &TestServer, token: &TestToken) -> PathBuf {
    let path = token.dir.path().join("jwks.json");
    let document = server.jwks().await;
    std::fs::write(&path, document.to_string()).expect("JWKS file writable");
    path
}

/// Starts a server on `token` without faults, stops it with SIGTERM, and
/// returns its log. Its final checkpoint seals the records of earlier runs.
async fn restart_and_stop(token: &TestToken) -> String {
    let server = TestServer::start(token);
    server.wait_serving(Duration::from_secs(30)).await;
    let log = Arc::clone(&server.log);
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("wait task completes");
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().expect("log").join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    log
}

/// Checks that `hallmark audit verify` accepts the audit file, that its
/// last record is a verified checkpoint over every record before it, and
/// that `records` records precede that checkpoint.
fn assert_sealed(token: &TestToken, keys: &Path, records: usize) {
    let all = audit_records(token);
    assert_eq!(all.len(), records + 1, "{all:?}");
    let last = &all[records];
    assert_eq!(last["kind"], "checkpoint", "{last}");
    assert_eq!(last["records"], records, "{last}");
    let output = audit_verify(keys, &audit_file(token));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "audit verify printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert_eq!(summary["status"], "ok", "{summary}");
    assert_eq!(summary["records"], records + 1, "{summary}");
    assert_eq!(
        summary["last_verified_checkpoint"],
        records + 1,
        "{summary}"
    );
}

/// Signs `request_id` on `server` and returns the response.
async fn sign(server: &TestServer, request_id: &str) -> Result<pb::SignResponse, tonic::Status> {
    server
        .client()
        .await
        .sign(request(request_id))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn second_sigterm_exits_143_at_once() {
    let token = TestToken::new(2048, "digest");
    let control = FaultControl::new(&token);
    let server = control.start_server(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let keys = save_jwks(&server, &token).await;
    for n in 0..3 {
        sign(&server, &format!("acknowledged-{n}"))
            .await
            .unwrap_or_else(|status| panic!("request {n} failed: {status:?}"));
    }

    // Each signature now takes at least 8 s, far longer than the test
    // waits for the forced exit.
    control.set(&["C_Sign delay_ms=4000"]);
    let channel = server.channel().await;
    let mut in_flight = Vec::new();
    for n in 0..2 {
        let mut client = pb::signer_service_client::SignerServiceClient::new(channel.clone());
        in_flight.push(tokio::spawn(async move {
            client.sign(request(&format!("in-flight-{n}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_signal(server.pid(), "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server
            .log_text()
            .contains("shutting down signal=\"SIGTERM\""),
        "{}",
        server.log_text()
    );
    let second = Instant::now();
    send_signal(server.pid(), "TERM");
    let log = Arc::clone(&server.log);
    let status = tokio::task::spawn_blocking(move || server.wait_exit())
        .await
        .expect("wait task completes");
    let elapsed = second.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().expect("log").join("\n");

    assert_eq!(status.code(), Some(EXIT_SIGTERM), "{log}");
    assert!(elapsed < FORCED_EXIT, "exit took {elapsed:?}; log:\n{log}");
    let forced = format!("{SECOND_SIGNAL_LOG} signal=\"SIGTERM\" exit_code=143");
    assert!(log.contains(&forced), "{log}");
    assert!(!log.contains("stopped"), "{log}");
    for task in in_flight {
        let result = task.await.expect("task completes");
        assert!(result.is_err(), "an in-flight request got {result:?}");
    }

    // The acknowledged records are in the log, and the forced exit wrote
    // no checkpoint.
    let records = audit_records(&token);
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().expect("request_id"))
        .collect();
    assert_eq!(
        ids,
        ["acknowledged-0", "acknowledged-1", "acknowledged-2"],
        "{records:?}"
    );
    assert!(records.iter().all(|r| r["outcome"] == "OK"), "{records:?}");

    // The next start continues the chain, and its final checkpoint covers
    // the records of the stopped run.
    restart_and_stop(&token).await;
    assert_sealed(&token, &keys, 3);
}

#[test]
fn sigterm_during_start_up_exits_0() {
    let token = TestToken::new(2048, "digest");
    let control = FaultControl::new(&token);
    control.set(&["C_Login delay_ms=1500"]);
    let mut process = Process::start(&token, &control.env());
    wait_for_call(&control, "C_Login", &process);

    process.signal("TERM");
    let (status, log) = process.wait_exit(Duration::from_secs(10));

    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains(
            "stop requested during start-up; stopping once the current step ends \
             signal=\"SIGTERM\""
        ),
        "{log}"
    );
    assert!(log.contains("token closed"), "{log}");
    assert!(log.contains("stopped during start-up"), "{log}");
    assert!(!log.contains("listening"), "{log}");
    assert!(!log.contains("error"), "{log}");
    // The login finished, and then the login session was closed and the
    // module finalized.
    let counts = control.counts();
    assert_eq!(counts["C_Login"].calls, 1, "{counts:?}");
    assert_eq!(
        counts["C_CloseSession"].calls, counts["C_OpenSession"].calls,
        "{counts:?}"
    );
    assert_eq!(counts["C_Finalize"].calls, 1, "{counts:?}");
}

/// A start-up step that hangs is given the drain timeout to end. After it,
/// the process exits without waiting for the step.
#[test]
fn hung_start_up_stops_after_drain_timeout() {
    let token = TestToken::new(2048, "digest");
    let config = std::fs::read_to_string(token.config()).expect("config readable");
    let config = config.replacen("[server]\n", "[server]\ndrain_timeout = \"1s\"\n", 1);
    std::fs::write(token.config(), config).expect("config writable");
    let control = FaultControl::new(&token);
    control.set(&["C_Login delay_ms=60000"]);
    let mut process = Process::start(&token, &control.env());
    wait_for_call(&control, "C_Login", &process);

    process.signal("TERM");
    let (status, log) = process.wait_exit(Duration::from_secs(10));

    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains(
            "start-up did not stop within the drain timeout; exiting without closing the token \
             timeout=1s"
        ),
        "{log}"
    );
    assert!(log.contains("stopped during start-up"), "{log}");
    assert_eq!(control.calls("C_Finalize"), 0);
}

#[test]
fn second_signal_during_start_up_exits_130() {
    let token = TestToken::new(2048, "digest");
    let control = FaultControl::new(&token);
    control.set(&["C_Login delay_ms=60000"]);
    let mut process = Process::start(&token, &control.env());
    wait_for_call(&control, "C_Login", &process);

    process.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    process.signal("INT");
    let (status, log) = process.wait_exit(Duration::from_secs(10));

    assert_eq!(status.code(), Some(EXIT_SIGINT), "{log}");
    assert!(second.elapsed() < FORCED_EXIT, "{log}");
    assert!(
        log.contains("stop requested during start-up; stopping once the current step ends"),
        "{log}"
    );
    let forced = format!("{SECOND_SIGNAL_LOG} signal=\"SIGINT\" exit_code=130");
    assert!(log.contains(&forced), "{log}");
    assert!(!log.contains("stopped during start-up"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_token_unavailable_explains_checkpoint() {
    let token = TestToken::new(2048, "digest");
    let control = FaultControl::new(&token);
    let server = control.start_server(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let keys = save_jwks(&server, &token).await;
    sign(&server, "before-outage")
        .await
        .expect("Sign succeeds before the outage");

    // The token fails and cannot be opened again.
    control.set(&[
        "C_Sign CKR_DEVICE_REMOVED times=1",
        "C_Initialize CKR_DEVICE_ERROR",
    ]);
    let failed = sign(&server, "outage")
        .await
        .expect_err("the token is gone");
    assert_eq!(failed.code(), tonic::Code::Unavailable, "{failed:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.health("").await != ServingStatus::NotServing {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stopping = Instant::now();
    let log = Arc::clone(&server.log);
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("wait task completes");
    let elapsed = stopping.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().expect("log").join("\n");

    assert_eq!(status.code(), Some(0), "{log}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}: {log}");
    let line = log
        .lines()
        .find(|line| line.contains(UNSIGNED_CHECKPOINT_LOG))
        .unwrap_or_else(|| panic!("no final checkpoint warning:\n{log}"));
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains("first_seq=1 last_seq=2"), "{line}");
    assert!(
        line.contains("fault=C_Initialize failed: DeviceError"),
        "{line}"
    );
    assert!(!log.contains("retrying at the next interval"), "{log}");
    assert!(
        log.contains("the token was not connected; no sessions to close"),
        "{log}"
    );
    assert!(!log.contains("token sessions closed"), "{log}");
    let records = audit_records(&token);
    let outcomes: Vec<&Value> = records.iter().map(|r| &r["outcome"]).collect();
    assert_eq!(outcomes, ["OK", "UNAVAILABLE"], "{records:?}");

    // With the token back, the next run's final checkpoint covers both.
    let log = restart_and_stop(&token).await;
    assert!(
        log.contains("final audit checkpoint written seq=3"),
        "{log}"
    );
    assert_sealed(&token, &keys, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_stops_at_the_drain_deadline_and_is_sealed() {
    let token = TestToken::new(2048, "digest");
    let config = std::fs::read_to_string(token.config()).expect("config");
    let config = config.replacen("[server]\n", "[server]\ndrain_timeout = \"1s\"\n", 1);
    std::fs::write(token.config(), config).expect("config written");
    let control = FaultControl::new(&token);
    let server = control.start_server(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let keys = save_jwks(&server, &token).await;
    // Each signature makes two C_Sign calls, so 100 digests take 10 s.
    control.set(&["C_Sign delay_ms=50"]);
    let items: Vec<pb::SignBatchItem> = (0..100)
        .map(|n| pb::SignBatchItem {
            digest: Sha256::digest(format!("batch-{n}")).to_vec(),
            request_id: format!("batch-{n}"),
        })
        .collect();
    let mut client = server.client().await;
    let batch = tokio::spawn(async move {
        client
            .sign_batch(pb::SignBatchRequest {
                items,
                hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
                key_name: String::new(),
                signature_encoding: 0,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    send_signal(server.pid(), "TERM");
    let log = Arc::clone(&server.log);
    let status = tokio::task::spawn_blocking(move || server.wait_exit())
        .await
        .expect("wait task completes");
    let took = started.elapsed();
    let text = log.lock().expect("log").join("\n");
    assert_eq!(status.code(), Some(0), "{text}");
    // The drain deadline, one more signature, the records and the
    // checkpoint: far less than the 9.5 s the batch had left.
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}; log:\n{text}"
    );

    // The client still gets its answer: the digests signed before the
    // deadline, and UNAVAILABLE for the rest, which it can send again.
    let response = batch
        .await
        .expect("client task ends")
        .expect("the batch is answered")
        .into_inner();
    let public_key = public_key(&key_der(&keys));
    let signed = response
        .results
        .iter()
        .take_while(|r| r.error.is_none())
        .count();
    assert!((1..100).contains(&signed), "{signed} signed; log:\n{text}");
    for (n, result) in response.results.iter().enumerate() {
        if n < signed {
            public_key
                .verify(
                    Pss::new_with_salt::<Sha256>(32),
                    &Sha256::digest(format!("batch-{n}")),
                    &result.signature,
                )
                .expect("signature verifies");
        } else {
            let error = result.error.as_ref().expect("not signed");
            assert_eq!(error.code, tonic::Code::Unavailable as i32, "{result:?}");
            assert_eq!(
                error.message,
                "the service is stopping and did not sign this digest; send it again"
            );
        }
    }

    // Every item has a record with the outcome its client saw, and the
    // final checkpoint seals them all.
    let records = audit_records(&token);
    let outcomes: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "sign")
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    let mut expected = vec!["OK"; signed];
    expected.resize(100, "UNAVAILABLE");
    assert_eq!(outcomes, expected);
    assert_sealed(&token, &keys, 100);
}

/// Reads the DER public key of the only key in a saved JWKS document.
fn key_der(jwks: &Path) -> Vec<u8> {
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(jwks).expect("JWKS readable")).expect("JSON");
    let key = &document["keys"][0];
    let decode = |field: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key[field].as_str().expect("member present"))
            .expect("base64url")
    };
    let public = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&decode("n")),
        rsa::BigUint::from_bytes_be(&decode("e")),
    )
    .expect("RSA key");
    use rsa::pkcs8::EncodePublicKey as _;
    public.to_public_key_der().expect("DER").into_vec()
}

/// The log reader, such as `hallmark serve 2>&1 | tee FILE` or a log
/// shipper, can go away while the service runs. Logging must not stop the
/// service: a SIGTERM afterwards still drains, seals the audit log with a
/// final checkpoint and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_seals_audit_without_log_reader() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let mut child = Command::new(HALLMARK)
        .current_dir(token.dir.path())
        .args(["serve", "--config"])
        .arg(token.config())
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hallmark serve starts");

    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let mut grpc_addr = None;
    for line in lines.by_ref() {
        let line = line.expect("log line readable");
        if line.contains("listening") && line.contains("kind=\"grpc\"") {
            let start = line.find("addr=").expect("addr logged") + "addr=".len();
            grpc_addr = Some(line[start..].split(' ').next().expect("addr").to_owned());
        }
        if line.contains("INFO hallmark::server: serving") {
            break;
        }
    }
    let grpc_addr = grpc_addr.expect("the gRPC address is logged");

    let mut client =
        pb::signer_service_client::SignerServiceClient::connect(format!("http://{grpc_addr}"))
            .await
            .expect("connects");
    client
        .sign(request("before-the-reader-left"))
        .await
        .expect("signs");

    // The reader closes its end of the pipe.
    drop(lines);
    send_signal(child.id(), "TERM");
    let limit = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        assert!(Instant::now() < limit, "serve did not stop within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");

    let records = audit_records(&token);
    let last = records.last().expect("records written");
    assert_eq!(last["kind"], "checkpoint", "{records:?}");
    assert_eq!(last["records"], 1, "{last}");
}
