//! The fault-injecting PKCS#11 module (`tests/pkcs11-faults`) between the
//! real server and a real SoftHSM token. The module forwards, counts and
//! fails calls as its control file specifies, and these tests record how
//! the service responds to each fault: the status that clients see, the
//! log line, and how the service recovers. One test removes the real
//! SoftHSM token directory instead.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{CallCount, FaultControl, TestServer, TestToken, public_key, sample};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use hallmark::pb::{self, SignRequest};
use rsa::{Pss, RsaPublicKey};
use sha2::{Digest, Sha256};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

/// The PSS salt length of the default key that `TestToken::new` creates
/// with the `digest` salt setting.
const SALT_LEN: usize = 32;

/// The message that `From<SignError> for Status` returns for a token that
/// is gone or a session that broke.
const UNAVAILABLE_MESSAGE: &str = "the signing token is unavailable; retry later";

/// The log message of a first failed attempt that the service retries.
const RETRY_LOG: &str = "signing failed; recovering and retrying once";

/// The log message of a reconnection that opened the token again.
const RECONNECTED_LOG: &str = "reconnected to the token";

/// The gRPC health service names that the server reports: the whole
/// server, and the signer service.
const HEALTH_SERVICES: [&str; 2] = ["", "hallmark.v1.SignerService"];

/// The metric that is 1 while the token is open and the default key signs.
const TOKEN_READY: &str = "hallmark_token_ready";

/// The gauge of pooled sessions that no request holds.
const IDLE_SESSIONS: &str = r#"hallmark_sessions{state="idle"}"#;

/// The gauge of pooled sessions that requests hold.
const IN_USE_SESSIONS: &str = r#"hallmark_sessions{state="in_use"}"#;

/// Maximum wait for a log line that the server wrote before it responded.
const LOG_WAIT: Duration = Duration::from_secs(2);

/// Pool size for the tests that count sessions. `hsm.sessions` defaults
/// to the number of cores, so these tests set it with `HALLMARK_SESSIONS`.
const SESSIONS: usize = 3;

/// Environment variable with the module that the mechanism probe loads.
/// Only [`probe_mechanisms`] sets it, so the probe does nothing when a run
/// includes the ignored tests.
const PROBE_MODULE: &str = "HALLMARK_FAULTS_PROBE_MODULE";

/// A server with the fault module. Fields drop in order, so the server
/// stops before the token directory is removed.
struct Fixture {
    server: TestServer,
    control: FaultControl,
    token: TestToken,
    public_key: RsaPublicKey,
}

/// Starts a server on a new RSA-2048 token with the fault module and an
/// empty control file, and fetches the default key's public key.
async fn start() -> Fixture {
    start_with(&[]).await
}

/// Like [`start`], with extra environment for the server.
async fn start_with(extra_env: &[(&str, &str)]) -> Fixture {
    let token = TestToken::new(2048, "digest");
    let control = FaultControl::new(&token);
    let env = control.env();
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.extend_from_slice(extra_env);
    let server = TestServer::start_with(&token, "127.0.0.1:0", &pairs);
    server.wait_serving(Duration::from_secs(30)).await;
    let public_key = default_public_key(&server).await;
    Fixture {
        server,
        control,
        token,
        public_key,
    }
}

/// Fetches the public key of the one key version that the server lists.
async fn default_public_key(server: &TestServer) -> RsaPublicKey {
    let keys = server
        .client()
        .await
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1, "{keys:?}");
    public_key(&keys[0].public_key_der)
}

fn digest_of(request_id: &str) -> Vec<u8> {
    Sha256::digest(request_id.as_bytes()).to_vec()
}

fn sign_request(request_id: &str) -> SignRequest {
    SignRequest {
        digest: digest_of(request_id),
        hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
        key_name: String::new(),
        request_id: request_id.into(),
        signature_encoding: 0,
    }
}

/// Sends one Sign request with the digest of `request_id` to `server`.
async fn sign_on(server: &TestServer, request_id: &str) -> Result<pb::SignResponse, Status> {
    let mut client = server.client().await;
    client
        .sign(sign_request(request_id))
        .await
        .map(|response| response.into_inner())
}

/// Checks that `signature` is the default key's signature of the digest of
/// `request_id`.
fn verify(public_key: &RsaPublicKey, request_id: &str, signature: &[u8]) {
    public_key
        .verify(
            Pss::new_with_salt::<Sha256>(SALT_LEN),
            &digest_of(request_id),
            signature,
        )
        .unwrap_or_else(|error| panic!("signature of {request_id} does not verify: {error}"));
}

/// Signs on `server` and checks the signature with `public_key`.
async fn sign_and_verify_on(server: &TestServer, public_key: &RsaPublicKey, request_id: &str) {
    let response = sign_on(server, request_id).await.unwrap_or_else(|status| {
        panic!(
            "Sign {request_id} failed: {status:?}; log:\n{}",
            server.log_text()
        )
    });
    verify(public_key, request_id, &response.signature);
}

/// Returns the number of lines of the server's log that contain every
/// one of `texts`.
fn log_lines_with_all(server: &TestServer, texts: &[&str]) -> usize {
    server
        .log_text()
        .lines()
        .filter(|line| texts.iter().all(|text| line.contains(text)))
        .count()
}

/// Waits up to [`LOG_WAIT`] until at least `expected` lines of the
/// server's log contain every one of `texts`, and returns how many do.
/// The log reaches the test through a pipe and a thread, so a line that
/// the server wrote before it sent a response can arrive after the
/// response.
async fn logged(server: &TestServer, texts: &[&str], expected: usize) -> usize {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let count = log_lines_with_all(server, texts);
        if count >= expected || Instant::now() >= deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Returns the health status of every name in [`HEALTH_SERVICES`].
async fn health_of(server: &TestServer) -> [ServingStatus; 2] {
    [
        server.health(HEALTH_SERVICES[0]).await,
        server.health(HEALTH_SERVICES[1]).await,
    ]
}

/// Waits until every health service name reports `expected`. Panics with
/// the log after `timeout`.
async fn wait_health(server: &TestServer, expected: ServingStatus, timeout: Duration) {
    let started = Instant::now();
    loop {
        let statuses = health_of(server).await;
        if statuses == [expected; 2] {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "health is {statuses:?}, not {expected:?}, after {timeout:?}; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one sample from the server's metrics.
async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    sample(&server.metrics().await, series)
}

/// Waits until the metric `series` has `expected` as its value. Panics
/// with the exposition after `timeout`.
async fn wait_metric(server: &TestServer, series: &str, expected: f64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let exposition = server.metrics().await;
        if sample(&exposition, series) == Some(expected) {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{series} is not {expected} after {timeout:?}:\n{exposition}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns the calls of `function` in `counts`, zero if it has none.
fn count_of(counts: &BTreeMap<String, CallCount>, function: &str) -> CallCount {
    counts.get(function).copied().unwrap_or_default()
}

/// Returns a count of `calls` calls, `failed` of which returned an
/// injected value.
fn call_count(calls: u64, failed: u64) -> CallCount {
    CallCount { calls, failed }
}

/// Returns the calls of `function` made between two reads of the counts.
fn calls_since(
    before: &BTreeMap<String, CallCount>,
    after: &BTreeMap<String, CallCount>,
    function: &str,
) -> CallCount {
    let before = count_of(before, function);
    let after = count_of(after, function);
    CallCount {
        calls: after.calls - before.calls,
        failed: after.failed - before.failed,
    }
}

/// Returns the sessions that are open in the real module, by the counts:
/// every `C_OpenSession` that succeeded minus every `C_CloseSession`.
/// `C_Finalize` closes the sessions that are left without a count, so the
/// result is exact only while nothing was open at a `C_Finalize`.
fn open_sessions(counts: &BTreeMap<String, CallCount>) -> u64 {
    let opened = count_of(counts, "C_OpenSession");
    let closed = count_of(counts, "C_CloseSession");
    (opened.calls - opened.failed) - (closed.calls - closed.failed)
}

impl Fixture {
    /// Sends one Sign request with the digest of `request_id`.
    async fn sign(&self, request_id: &str) -> Result<pb::SignResponse, Status> {
        sign_on(&self.server, request_id).await
    }

    /// Signs and checks the signature with the default key's public key.
    async fn sign_and_verify(&self, request_id: &str) {
        sign_and_verify_on(&self.server, &self.public_key, request_id).await;
    }

    /// Returns whether a line of the server's log contains `text` now.
    /// Use it to check that a line is absent, because [`Fixture::logged`]
    /// waits for lines that are expected.
    fn log_contains(&self, text: &str) -> bool {
        log_lines_with_all(&self.server, &[text]) > 0
    }

    /// Waits for at least `expected` log lines that contain every one of
    /// `texts`, and returns how many do. See [`logged`].
    async fn logged(&self, texts: &[&str], expected: usize) -> usize {
        logged(&self.server, texts, expected).await
    }

    /// Returns the server's log, for assertion messages.
    fn log(&self) -> String {
        self.server.log_text()
    }
}

/// Asserts that `result` is the status of a token that is unavailable.
fn assert_unavailable(result: Result<pb::SignResponse, Status>) {
    let status = result.expect_err("Sign fails");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), UNAVAILABLE_MESSAGE);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_control_forwards_every_call() {
    let fixture = start().await;
    let started = fixture.control.counts();
    // The module's counts file exists only if cryptoki used its function
    // list, and the service logs in once at start.
    assert_eq!(started["C_Initialize"].calls, 1, "{started:?}");
    assert_eq!(started["C_Login"].calls, 1, "{started:?}");
    assert!(
        started.values().all(|count| count.failed == 0),
        "{started:?}"
    );
    // Nothing signs before the first request.
    assert!(!started.contains_key("C_Sign"), "{started:?}");

    for request_id in ["forward-1", "forward-2", "forward-3"] {
        fixture.sign_and_verify(request_id).await;
    }

    // cryptoki's `Session::sign` calls C_Sign twice per signature: once
    // for the length and once for the signature.
    let counts = fixture.control.counts();
    assert_eq!(counts["C_SignInit"].calls, 3, "{counts:?}");
    assert_eq!(counts["C_Sign"].calls, 6, "{counts:?}");
    assert!(counts.values().all(|count| count.failed == 0), "{counts:?}");

    // A graceful stop writes a final audit checkpoint that covers the
    // three records, and the checkpoint is signed with the default key.
    let Fixture {
        server,
        control,
        token: _token,
        ..
    } = fixture;
    assert!(server.terminate().success());
    let stopped = control.counts();
    assert_eq!(stopped["C_SignInit"].calls, 4, "{stopped:?}");
    assert_eq!(stopped["C_Sign"].calls, 8, "{stopped:?}");
}

/// Fails the first `C_Sign` of one request with `rv` and checks that the
/// service closes that session and retries once on another, without
/// reconnecting. Then fails both attempts of a request and checks that
/// the client gets UNAVAILABLE. `rv_name` is the return value as the log
/// prints it.
async fn assert_session_fault_retried(rv: &str, rv_name: &str) {
    let fixture = start().await;
    let before = fixture.control.counts();
    fixture.control.set(&[&format!("C_Sign {rv} times=1")]);

    fixture.sign_and_verify("session-fault-once").await;
    let once = fixture.control.counts();
    // The failed attempt made C_SignInit and the length query, and the
    // retry made C_SignInit and both C_Sign calls.
    let sign_inits = calls_since(&before, &once, "C_SignInit");
    assert_eq!(sign_inits, call_count(2, 0), "{once:?}");
    let signs = calls_since(&before, &once, "C_Sign");
    assert_eq!(signs, call_count(3, 1), "{once:?}");
    // The pool closed the failed session, and nothing else.
    let closes = calls_since(&before, &once, "C_CloseSession");
    assert_eq!(closes.calls, 1, "{once:?}");
    for function in ["C_Finalize", "C_Initialize", "C_Login"] {
        assert_eq!(calls_since(&before, &once, function).calls, 0, "{function}");
    }
    let failure = format!("C_Sign failed: {rv_name}");
    assert_eq!(
        fixture
            .logged(&[RETRY_LOG, &failure, "recovery=Retry"], 1)
            .await,
        1,
        "{}",
        fixture.log()
    );

    // When the retry fails the same way, the client gets UNAVAILABLE.
    fixture.control.set(&[&format!("C_Sign {rv} times=2")]);
    assert_unavailable(fixture.sign("session-fault-twice").await);
    let twice = fixture.control.counts();
    let sign_inits = calls_since(&once, &twice, "C_SignInit");
    assert_eq!(sign_inits, call_count(2, 0), "{twice:?}");
    let signs = calls_since(&once, &twice, "C_Sign");
    assert_eq!(signs, call_count(2, 2), "{twice:?}");
    assert_eq!(calls_since(&once, &twice, "C_CloseSession").calls, 2);
    assert_eq!(calls_since(&once, &twice, "C_Initialize").calls, 0);
    assert_eq!(
        fixture
            .logged(&["signing failed in the token", &failure], 1)
            .await,
        1,
        "{}",
        fixture.log()
    );
    assert_eq!(
        health_of(&fixture.server).await,
        [ServingStatus::Serving; 2]
    );

    fixture.sign_and_verify("after-session-fault").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_session_handle_is_retried_once() {
    assert_session_fault_retried("CKR_SESSION_HANDLE_INVALID", "SessionHandleInvalid").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_session_is_retried_once() {
    assert_session_fault_retried("CKR_SESSION_CLOSED", "SessionClosed").await;
}

/// Fails one `C_Sign` with `rv` and checks that the service reconnects:
/// it finalizes the module, initializes it, logs in, reads the keys again
/// and signs with the retry. Health is still SERVING afterwards.
async fn assert_reconnects_after(rv: &str, rv_name: &str) {
    let fixture = start().await;
    let before = fixture.control.counts();
    assert_eq!(count_of(&before, "C_Initialize").calls, 1, "{before:?}");
    assert_eq!(count_of(&before, "C_Finalize").calls, 0, "{before:?}");
    fixture.control.set(&[&format!("C_Sign {rv} times=1")]);

    fixture.sign_and_verify("reconnect").await;
    let after = fixture.control.counts();
    let sign_inits = calls_since(&before, &after, "C_SignInit");
    assert_eq!(sign_inits, call_count(2, 0), "{after:?}");
    let signs = calls_since(&before, &after, "C_Sign");
    assert_eq!(signs, call_count(3, 1), "{after:?}");
    for function in ["C_Finalize", "C_Initialize", "C_Login"] {
        let count = calls_since(&before, &after, function);
        assert_eq!(count, call_count(1, 0), "{function}");
    }
    assert!(
        calls_since(&before, &after, "C_FindObjectsInit").calls > 0,
        "the keys were not read again: {after:?}"
    );
    let failure = format!("C_Sign failed: {rv_name}");
    assert_eq!(
        fixture
            .logged(&[RETRY_LOG, &failure, "recovery=Reconnect"], 1)
            .await,
        1,
        "{}",
        fixture.log()
    );
    assert_eq!(
        fixture.logged(&[RECONNECTED_LOG, "generation=2"], 1).await,
        1,
        "{}",
        fixture.log()
    );
    assert_eq!(
        health_of(&fixture.server).await,
        [ServingStatus::Serving; 2]
    );
    assert_eq!(metric(&fixture.server, TOKEN_READY).await, Some(1.0));

    // The next request uses the new connection as it is.
    fixture.sign_and_verify("after-reconnect").await;
    let later = fixture.control.counts();
    assert_eq!(calls_since(&after, &later, "C_Initialize").calls, 0);
    let signs = calls_since(&after, &later, "C_Sign");
    assert_eq!(signs, call_count(2, 0), "{later:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn device_error_reconnects_and_signs() {
    assert_reconnects_after("CKR_DEVICE_ERROR", "DeviceError").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_device_reconnects_and_signs() {
    assert_reconnects_after("CKR_DEVICE_REMOVED", "DeviceRemoved").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_token_reconnects_and_signs() {
    assert_reconnects_after("CKR_TOKEN_NOT_PRESENT", "TokenNotPresent").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_login_logs_in_again() {
    let fixture = start().await;
    let before = fixture.control.counts();
    fixture
        .control
        .set(&["C_Sign CKR_USER_NOT_LOGGED_IN times=1"]);

    fixture.sign_and_verify("login-lost").await;
    let after = fixture.control.counts();
    // SoftHSM never lost the login, so the second C_Login returns
    // CKR_USER_ALREADY_LOGGED_IN, which the service takes as success.
    let logins = calls_since(&before, &after, "C_Login");
    assert_eq!(logins, call_count(1, 0), "{after:?}");
    assert_eq!(calls_since(&before, &after, "C_Initialize").calls, 0);
    assert_eq!(calls_since(&before, &after, "C_Finalize").calls, 0);
    let sign_inits = calls_since(&before, &after, "C_SignInit");
    assert_eq!(sign_inits, call_count(2, 0), "{after:?}");
    let signs = calls_since(&before, &after, "C_Sign");
    assert_eq!(signs, call_count(3, 1), "{after:?}");
    assert_eq!(
        fixture
            .logged(
                &[
                    RETRY_LOG,
                    "C_Sign failed: UserNotLoggedIn",
                    "recovery=Relogin"
                ],
                1
            )
            .await,
        1,
        "{}",
        fixture.log()
    );
    assert_eq!(
        fixture.logged(&["logged in to the token again"], 1).await,
        1,
        "{}",
        fixture.log()
    );
    assert!(!fixture.log_contains(RECONNECTED_LOG), "{}", fixture.log());

    fixture.sign_and_verify("after-login-lost").await;
    assert_eq!(
        calls_since(&after, &fixture.control.counts(), "C_Login").calls,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_login_again_reconnects() {
    let fixture = start().await;
    let before = fixture.control.counts();
    fixture.control.set(&[
        "C_Sign CKR_USER_NOT_LOGGED_IN times=1",
        "C_Login CKR_DEVICE_ERROR times=1",
    ]);

    fixture.sign_and_verify("login-fails").await;
    let after = fixture.control.counts();
    // The C_Login on the login session fails, and the reconnection logs
    // in on a new one.
    let logins = calls_since(&before, &after, "C_Login");
    assert_eq!(logins, call_count(2, 1), "{after:?}");
    for function in ["C_Finalize", "C_Initialize"] {
        let count = calls_since(&before, &after, function);
        assert_eq!(count, call_count(1, 0), "{function}");
    }
    let signs = calls_since(&before, &after, "C_Sign");
    assert_eq!(signs, call_count(3, 1), "{after:?}");
    assert_eq!(
        fixture
            .logged(
                &[
                    "logging in again failed; reconnecting to the token",
                    "C_Login failed: DeviceError"
                ],
                1
            )
            .await,
        1,
        "{}",
        fixture.log()
    );
    assert_eq!(fixture.logged(&[RECONNECTED_LOG], 1).await, 1);
    assert_eq!(
        health_of(&fixture.server).await,
        [ServingStatus::Serving; 2]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_key_handle_after_login_fails_once() {
    let fixture = start().await;
    let before = fixture.control.counts();
    // The first attempt loses the login. The retry, after the new login
    // and a new read of the keys, finds its key handle invalid in
    // C_SignInit, where SoftHSM reports a key handle that names nothing.
    fixture.control.set(&[
        "C_Sign CKR_USER_NOT_LOGGED_IN times=1",
        "C_SignInit CKR_KEY_HANDLE_INVALID skip=1 times=1",
    ]);

    // The service retries once, so the second failure reaches the client.
    assert_unavailable(fixture.sign("stale-after-login").await);
    let after = fixture.control.counts();
    assert_eq!(calls_since(&before, &after, "C_Login").calls, 1);
    let sign_inits = calls_since(&before, &after, "C_SignInit");
    assert_eq!(sign_inits, call_count(2, 1), "{after:?}");
    let signs = calls_since(&before, &after, "C_Sign");
    assert_eq!(signs, call_count(1, 1), "{after:?}");
    assert!(
        calls_since(&before, &after, "C_FindObjectsInit").calls > 0,
        "the keys were not read again after the login: {after:?}"
    );
    assert_eq!(
        fixture.logged(&["logged in to the token again"], 1).await,
        1
    );
    assert_eq!(
        fixture
            .logged(&["signing failed in the token", "KeyHandleInvalid"], 1)
            .await,
        1,
        "{}",
        fixture.log()
    );
    assert_eq!(
        health_of(&fixture.server).await,
        [ServingStatus::Serving; 2]
    );

    // The handles are valid, so the next request signs without a read.
    let finds = count_of(&after, "C_FindObjectsInit").calls;
    fixture.sign_and_verify("after-stale").await;
    let later = fixture.control.counts();
    let sign_inits = calls_since(&after, &later, "C_SignInit");
    assert_eq!(sign_inits, call_count(1, 0), "{later:?}");
    assert_eq!(count_of(&later, "C_FindObjectsInit").calls, finds);
}

/// Makes one `C_Sign` fail with `CKR_DEVICE_REMOVED` while `open_rules`
/// keep the token from opening again, and checks the outage: Sign fails
/// at once with UNAVAILABLE, health is NOT_SERVING and
/// `hallmark_token_ready` is 0. Then removes the rules and checks that the
/// same server serves and signs again.
async fn assert_outage_ends(open_rules: &[&str], open_failure: &str) {
    let fixture = start().await;
    let before = fixture.control.counts();
    let mut rules = vec!["C_Sign CKR_DEVICE_REMOVED times=1"];
    rules.extend_from_slice(open_rules);
    fixture.control.set(&rules);

    assert_unavailable(fixture.sign("outage-first").await);
    let failed = fixture.control.counts();
    let signs = calls_since(&before, &failed, "C_Sign");
    assert_eq!(signs, call_count(1, 1), "{failed:?}");
    // The failed connection is finalized, and so is every attempt whose
    // C_Initialize succeeded before a later step failed, so that the
    // next attempt initializes the module afresh. The retry loop may be
    // between the two calls of an attempt when the counts are read.
    let initialized = calls_since(&before, &failed, "C_Initialize");
    let finalized = calls_since(&before, &failed, "C_Finalize").calls;
    let successful = initialized.calls - initialized.failed;
    assert!(
        (successful.max(1)..=1 + successful).contains(&finalized),
        "{finalized} finalized after {successful} initialized: {failed:?}"
    );
    assert_eq!(
        fixture
            .logged(
                &[
                    "cannot open the token; signing fails until it can",
                    open_failure
                ],
                1
            )
            .await,
        1,
        "{}",
        fixture.log()
    );

    wait_health(
        &fixture.server,
        ServingStatus::NotServing,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(metric(&fixture.server, TOKEN_READY).await, Some(0.0));
    assert_eq!(
        fixture
            .logged(&["the token or its keys cannot be read; not serving"], 1)
            .await,
        1,
        "{}",
        fixture.log()
    );

    // While the token is gone, requests fail without reaching it, and
    // neither they nor the reconnection attempts log again.
    let log_lines = fixture.log().lines().count();
    for request_id in ["outage-second", "outage-third", "outage-fourth"] {
        assert_unavailable(fixture.sign(request_id).await);
    }
    let during = fixture.control.counts();
    assert_eq!(calls_since(&failed, &during, "C_SignInit").calls, 0);
    // The refresh loop keeps trying, at once and then after 250 ms,
    // 500 ms, 1 s and so on: two attempts after the request's own.
    let deadline = Instant::now() + Duration::from_secs(5);
    while count_of(&fixture.control.counts(), "C_Initialize").calls < 4 {
        assert!(Instant::now() < deadline, "{:?}", fixture.control.counts());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        fixture.log().lines().count(),
        log_lines,
        "{}",
        fixture.log()
    );

    fixture.control.set(&[]);
    wait_health(
        &fixture.server,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(metric(&fixture.server, TOKEN_READY).await, Some(1.0));
    fixture.sign_and_verify("after-outage").await;
    assert_eq!(
        fixture.logged(&[RECONNECTED_LOG], 1).await,
        1,
        "{}",
        fixture.log()
    );
    assert_eq!(
        fixture.logged(&["default key found; serving"], 2).await,
        2,
        "{}",
        fixture.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_initialize_stops_serving_until_it_works() {
    assert_outage_ends(
        &["C_Initialize CKR_DEVICE_ERROR"],
        "C_Initialize failed: DeviceError",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absent_token_stops_serving_until_it_returns() {
    assert_outage_ends(
        &["C_OpenSession CKR_TOKEN_NOT_PRESENT"],
        "C_OpenSession failed: TokenNotPresent",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_token_directory_stops_serving_until_restored() {
    // The real SoftHSM module, without the fault module.
    let token = TestToken::new(2048, "digest");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let public_key = default_public_key(&server).await;
    sign_and_verify_on(&server, &public_key, "before-removal").await;

    // SoftHSM 2.6 drops every object of a token whose directory disappears,
    // and fails C_Initialize while the directory is missing.
    let tokens = token.dir.path().join("tokens");
    let moved = token.dir.path().join("tokens.moved");
    std::fs::rename(&tokens, &moved).expect("token directory can be renamed");
    assert_unavailable(sign_on(&server, "removed").await);
    // The failed lookup reads the keys again, finds the active version
    // gone, and reconnects, which fails without the directory.
    for line in [
        "active key versions vanished from the token; reconnecting",
        "cannot open the token; signing fails until it can",
    ] {
        assert_eq!(
            logged(&server, &[line], 1).await,
            1,
            "{}",
            server.log_text()
        );
    }
    wait_health(&server, ServingStatus::NotServing, Duration::from_secs(5)).await;
    assert_eq!(metric(&server, TOKEN_READY).await, Some(0.0));
    // The process is alive and waiting for the token: no restart needed.
    assert_eq!(server.health("liveness").await, ServingStatus::Serving);
    assert_unavailable(sign_on(&server, "still-removed").await);

    std::fs::rename(&moved, &tokens).expect("token directory can be renamed back");
    wait_health(&server, ServingStatus::Serving, Duration::from_secs(15)).await;
    assert_eq!(metric(&server, TOKEN_READY).await, Some(1.0));
    sign_and_verify_on(&server, &public_key, "after-restore").await;
    assert_eq!(
        logged(&server, &[RECONNECTED_LOG], 1).await,
        1,
        "{}",
        server.log_text()
    );
}

/// The log message of a `C_Finalize` that failed during a reconnection.
const FINALIZE_FAILED_LOG: &str =
    "finalizing the module failed; finalizing it again before reconnecting";

/// The log message of a second `C_Finalize` that failed too.
const FINALIZE_FAILED_AGAIN_LOG: &str = "finalizing the module failed again; reconnecting to \
                                         the module as it is, which may not read the token \
                                         afresh";

/// Makes one `C_Sign` fail with `CKR_DEVICE_REMOVED` and `C_Finalize`
/// fail as `finalize_rule` sets, and checks that the service reconnects,
/// signs and serves. Returns the counts before and after the request.
async fn assert_reconnects_despite_finalize(
    finalize_rule: &str,
) -> (
    Fixture,
    BTreeMap<String, CallCount>,
    BTreeMap<String, CallCount>,
) {
    let fixture = start().await;
    let before = fixture.control.counts();
    fixture
        .control
        .set(&["C_Sign CKR_DEVICE_REMOVED times=1", finalize_rule]);

    fixture.sign_and_verify("finalize-fails").await;

    let after = fixture.control.counts();
    assert_eq!(
        calls_since(&before, &after, "C_Initialize"),
        call_count(1, 0),
        "{after:?}"
    );
    assert_eq!(
        fixture
            .logged(
                &[
                    " WARN ",
                    FINALIZE_FAILED_LOG,
                    "C_Finalize failed: GeneralError"
                ],
                1
            )
            .await,
        1,
        "{}",
        fixture.log()
    );
    assert_eq!(
        fixture.logged(&[RECONNECTED_LOG, "generation=2"], 1).await,
        1,
        "{}",
        fixture.log()
    );
    assert_eq!(
        health_of(&fixture.server).await,
        [ServingStatus::Serving; 2]
    );
    assert_eq!(metric(&fixture.server, TOKEN_READY).await, Some(1.0));
    fixture.sign_and_verify("after-finalize-fails").await;
    (fixture, before, after)
}

/// A module whose `C_Finalize` fails once is finalized again before the
/// reconnection initializes it, so that it reads the token afresh.
#[tokio::test(flavor = "multi_thread")]
async fn failed_finalize_is_retried_before_reconnecting() {
    let (fixture, before, after) =
        assert_reconnects_despite_finalize("C_Finalize CKR_GENERAL_ERROR times=1").await;

    assert_eq!(
        calls_since(&before, &after, "C_Finalize"),
        call_count(2, 1),
        "{after:?}"
    );
    assert!(
        !fixture.log_contains(FINALIZE_FAILED_AGAIN_LOG),
        "{}",
        fixture.log()
    );
}

/// A module whose `C_Finalize` always fails is still initialized, and the
/// reconnection goes on with it as it is.
#[tokio::test(flavor = "multi_thread")]
async fn failing_finalize_still_reconnects() {
    let (fixture, before, after) =
        assert_reconnects_despite_finalize("C_Finalize CKR_GENERAL_ERROR").await;

    assert_eq!(
        calls_since(&before, &after, "C_Finalize"),
        call_count(2, 2),
        "{after:?}"
    );
    assert_eq!(
        fixture
            .logged(&[" WARN ", FINALIZE_FAILED_AGAIN_LOG], 1)
            .await,
        1,
        "{}",
        fixture.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_signs_share_one_reconnect() {
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 4;
    let sessions = SESSIONS.to_string();
    let fixture = start_with(&[("HALLMARK_SESSIONS", &sessions)]).await;
    assert_eq!(
        metric(&fixture.server, IDLE_SESSIONS).await,
        Some(SESSIONS as f64)
    );
    let before = fixture.control.counts();
    // Each request makes two C_Sign calls, so the fault hits a request
    // of the second or third round, while other requests are in flight.
    fixture
        .control
        .set(&["C_Sign CKR_DEVICE_REMOVED skip=20 times=1"]);

    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let mut signer = fixture.server.client().await;
        clients.spawn(async move {
            let mut results = Vec::new();
            for round in 0..ROUNDS {
                let request_id = format!("client-{client}-round-{round}");
                let result = signer
                    .sign(sign_request(&request_id))
                    .await
                    .map(|response| response.into_inner());
                results.push((request_id, result));
            }
            results
        });
    }
    let mut signed = 0;
    while let Some(results) = clients.join_next().await {
        for (request_id, result) in results.expect("client task finishes") {
            match result {
                Ok(response) => {
                    verify(&fixture.public_key, &request_id, &response.signature);
                    signed += 1;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{request_id}: {status:?}");
                    assert_eq!(status.message(), UNAVAILABLE_MESSAGE, "{request_id}");
                }
            }
        }
    }

    let after = fixture.control.counts();
    let signs = calls_since(&before, &after, "C_Sign");
    assert_eq!(signs.failed, 1, "{after:?}");
    for function in ["C_Finalize", "C_Initialize", "C_Login"] {
        let count = calls_since(&before, &after, function);
        assert_eq!(count, call_count(1, 0), "{function}");
    }
    assert_eq!(
        fixture.logged(&[RECONNECTED_LOG], 1).await,
        1,
        "{}",
        fixture.log()
    );
    // Every request signed: the one that met the fault, after the
    // reconnection, and those that held handles from the old connection,
    // after a new read of the keys.
    assert_eq!(signed, CLIENTS * ROUNDS, "{}", fixture.log());
    wait_metric(
        &fixture.server,
        IDLE_SESSIONS,
        SESSIONS as f64,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(metric(&fixture.server, IN_USE_SESSIONS).await, Some(0.0));
    // The pool's sessions and the login session, and no other.
    assert_eq!(open_sessions(&after), SESSIONS as u64 + 1, "{after:?}");
    assert_eq!(
        health_of(&fixture.server).await,
        [ServingStatus::Serving; 2]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_signs_leave_no_active_operation() {
    let sessions = SESSIONS.to_string();
    let fixture = start_with(&[("HALLMARK_SESSIONS", &sessions)]).await;
    let before = fixture.control.counts();
    // The first C_Sign of each request below sleeps longer than its client
    // waits, so every session of the pool is inside C_Sign when its client
    // goes away.
    let slow = format!("C_Sign delay_ms=1200 times={SESSIONS}");
    fixture.control.set(&[&slow]);

    let mut cancelled = tokio::task::JoinSet::new();
    for index in 0..SESSIONS {
        let mut signer = fixture.server.client().await;
        cancelled.spawn(async move {
            let request_id = format!("cancelled-{index}");
            if index % 2 == 0 {
                // A deadline: tonic's server drops the request.
                let mut request = tonic::Request::new(sign_request(&request_id));
                request.set_timeout(Duration::from_millis(400));
                let status = signer.sign(request).await.expect_err("deadline passes");
                assert_eq!(status.code(), Code::Cancelled, "{status:?}");
            } else {
                // The client drops the call, which resets the stream.
                let call = signer.sign(sign_request(&request_id));
                let outcome = tokio::time::timeout(Duration::from_millis(400), call).await;
                assert!(outcome.is_err(), "Sign returned before 400 ms: {outcome:?}");
            }
        });
    }
    while let Some(joined) = cancelled.join_next().await {
        joined.expect("cancelled request task finishes");
    }

    // The blocking calls run on after the clients left. They have ended
    // once every request made its second C_Sign call.
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls_since(&before, &fixture.control.counts(), "C_Sign").calls < 2 * SESSIONS as u64 {
        assert!(Instant::now() < deadline, "{:?}", fixture.control.counts());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_metric(
        &fixture.server,
        IDLE_SESSIONS,
        SESSIONS as f64,
        Duration::from_secs(5),
    )
    .await;
    let cancelled_series = r#"hallmark_sign_requests_total{code="CANCELLED",key_name="default"}"#;
    wait_metric(
        &fixture.server,
        cancelled_series,
        SESSIONS as f64,
        Duration::from_secs(5),
    )
    .await;

    // As many requests as sessions, each held in C_Sign long enough that
    // every one needs a session of its own.
    let slow = format!("C_Sign delay_ms=200 times={SESSIONS}");
    fixture.control.set(&[&slow]);
    let settled = fixture.control.counts();
    let mut requests = tokio::task::JoinSet::new();
    for index in 0..SESSIONS {
        let mut signer = fixture.server.client().await;
        let public_key = fixture.public_key.clone();
        requests.spawn(async move {
            let request_id = format!("after-cancel-{index}");
            let response = signer
                .sign(sign_request(&request_id))
                .await
                .unwrap_or_else(|status| panic!("Sign {request_id} failed: {status:?}"));
            verify(&public_key, &request_id, &response.into_inner().signature);
        });
    }
    while let Some(joined) = requests.join_next().await {
        joined.expect("request task finishes");
    }

    // One C_SignInit per request: none met an active operation and retried.
    let after = fixture.control.counts();
    let sign_inits = calls_since(&settled, &after, "C_SignInit");
    assert_eq!(sign_inits, call_count(SESSIONS as u64, 0), "{after:?}");
    let signs = calls_since(&settled, &after, "C_Sign");
    assert_eq!(signs, call_count(2 * SESSIONS as u64, 0), "{after:?}");
    assert!(
        !fixture.log_contains("OperationActive"),
        "{}",
        fixture.log()
    );
    assert!(!fixture.log_contains(RETRY_LOG), "{}", fixture.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_key_handle_is_retried_once() {
    let fixture = start().await;
    fixture
        .control
        .set(&["C_Sign CKR_KEY_HANDLE_INVALID times=1"]);
    let finds_before = fixture.control.calls("C_FindObjectsInit");

    // The first attempt fails, the service re-reads the token and the
    // second attempt signs.
    fixture.sign_and_verify("key-invalid-once").await;
    assert_eq!(
        fixture
            .logged(&["C_Sign failed: KeyHandleInvalid"], 1)
            .await,
        1
    );
    let retried = fixture.control.counts();
    assert_eq!(retried["C_SignInit"].calls, 2, "{retried:?}");
    assert_eq!(retried["C_Sign"].calls, 3, "{retried:?}");
    assert_eq!(retried["C_Sign"].failed, 1, "{retried:?}");
    assert!(
        retried["C_FindObjectsInit"].calls > finds_before,
        "the token was not read again: {retried:?}"
    );

    // A second failure in a row is returned to the client.
    fixture
        .control
        .set(&["C_Sign CKR_KEY_HANDLE_INVALID times=2"]);
    assert_unavailable(fixture.sign("key-invalid-twice").await);
    let failed = fixture.control.counts();
    assert_eq!(failed["C_SignInit"].calls, 4, "{failed:?}");
    assert_eq!(failed["C_Sign"].failed, 3, "{failed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_sign_misses_the_deadline() {
    let fixture = start().await;
    // Each Sign request makes two C_Sign calls, so it takes at least
    // 800 ms, well past the 300 ms deadline.
    fixture.control.set(&["C_Sign delay_ms=400"]);

    let mut request = tonic::Request::new(sign_request("slow"));
    request.set_timeout(Duration::from_millis(300));
    let mut client = fixture.server.client().await;
    let status = client.sign(request).await.expect_err("deadline passes");
    // tonic's server enforces the grpc-timeout header itself and returns
    // CANCELLED, not DEADLINE_EXCEEDED, because the request had already
    // passed the service's own deadline check before C_Sign began.
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(status.message(), "Timeout expired");
    assert_eq!(fixture.control.counts()["C_Sign"].failed, 0);

    // The client can see the status before the server has dropped the
    // request and counted it.
    let cancelled = r#"hallmark_sign_requests_total{code="CANCELLED",key_name="default"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut metrics = fixture.server.metrics().await;
    while sample(&metrics, cancelled).is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = fixture.server.metrics().await;
    }
    assert_eq!(sample(&metrics, cancelled), Some(1.0), "{metrics}");

    fixture.control.set(&[]);
    fixture.sign_and_verify("after-slow").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rules_are_reported_once() {
    let fixture = start().await;
    fixture.control.set(&[
        "C_Sing CKR_DEVICE_ERROR",
        "C_Sign CKR_NO_SUCH_VALUE",
        "C_Sign times=1",
        "# the second C_Sign of the next request, the one with the buffer",
        "C_Sign 0x30 skip=1 times=1",
    ]);

    // CKR_DEVICE_ERROR makes the service reconnect and sign again.
    fixture.sign_and_verify("numeric").await;
    let counts = fixture.control.counts();
    assert_eq!(counts["C_Sign"].calls, 4, "{counts:?}");
    assert_eq!(counts["C_Sign"].failed, 1, "{counts:?}");
    assert_eq!(counts["C_Initialize"].calls, 2, "{counts:?}");

    // The file has not changed since, so a further call neither reports
    // the lines again nor resets the rule's counts.
    fixture.sign_and_verify("after-numeric").await;
    let counts = fixture.control.counts();
    assert_eq!(counts["C_Sign"].calls, 6, "{counts:?}");
    assert_eq!(counts["C_Sign"].failed, 1, "{counts:?}");
    for reported in [
        "line 1 ignored: unknown PKCS#11 function: C_Sing CKR_DEVICE_ERROR",
        "line 2 ignored: unknown word: C_Sign CKR_NO_SUCH_VALUE",
        "line 3 ignored: a rule needs a return value, delay_ms= or drop=: C_Sign times=1",
    ] {
        assert_eq!(
            fixture.logged(&[reported], 1).await,
            1,
            "{reported:?} in:\n{}",
            fixture.server.log_text()
        );
    }
    assert_eq!(fixture.logged(&["hallmark-faults:"], 3).await, 3);
}

#[test]
fn failed_login_stops_the_server() {
    let token = TestToken::new(2048, "digest");
    let control = FaultControl::new(&token);
    control.set(&["C_Login CKR_PIN_INCORRECT"]);

    // The log goes to a file, because a server that keeps running would
    // fill a pipe that the test reads only after the exit.
    let log_path = token.dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log file can be created");
    let mut child = std::process::Command::new(common::HALLMARK)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0", "--config"])
        .arg(token.config())
        .envs(control.env())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("hallmark serve starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for hallmark serve") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hallmark serve still runs 30 s after a failed login");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log_path).expect("log file readable");
    assert_eq!(
        status.code(),
        Some(i32::from(hallmark::cli::EXIT_CONFIG)),
        "{stderr}"
    );
    assert!(
        stderr.contains("user PIN rejected by token"),
        "unexpected output:\n{stderr}"
    );
    let counts = control.counts();
    assert_eq!(counts["C_Login"].calls, 1, "{counts:?}");
    assert_eq!(counts["C_Login"].failed, 1, "{counts:?}");
}

/// Runs this test binary again with only [`mechanism_list_probe`] and
/// returns the mechanisms that it printed in each of its two rounds.
fn probe_mechanisms(token: &TestToken, control: &FaultControl) -> [Vec<u64>; 2] {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "mechanism_list_probe",
            "--ignored",
            "--nocapture",
        ])
        .env("SOFTHSM2_CONF", token.dir.path().join("softhsm2.conf"))
        .env(PROBE_MODULE, common::faults_module())
        .envs(control.env())
        .output()
        .expect("probe runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "probe failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut rounds = [Vec::new(), Vec::new()];
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("round ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let [round, "mechanism", hex] = fields[..] else {
            panic!("malformed probe line {line:?}");
        };
        let round: usize = round.parse().expect("round number");
        let hex = hex.strip_prefix("0x").expect("hex mechanism");
        rounds[round].push(u64::from_str_radix(hex, 16).expect("hex mechanism"));
    }
    rounds
}

#[test]
fn mechanism_list_hides_dropped_mechanism() {
    const CKM_ECDSA: u64 = 0x1041;
    const CKM_RSA_PKCS_PSS: u64 = 0x0d;
    let token = TestToken::without_key();
    let control = FaultControl::new(&token);

    let [all, again] = probe_mechanisms(&token, &control);
    assert!(all.contains(&CKM_ECDSA), "{all:x?}");
    assert!(all.contains(&CKM_RSA_PKCS_PSS), "{all:x?}");
    assert_eq!(again, all);

    // cryptoki calls C_GetMechanismList twice per list, so the rule acts
    // on the first round only. The second round loads the module again,
    // which keeps the rule's count because the module is never unloaded.
    control.set(&["C_GetMechanismList drop=CKM_ECDSA drop=0xd times=2"]);
    let [dropped, restored] = probe_mechanisms(&token, &control);
    let expected: Vec<u64> = all
        .iter()
        .copied()
        .filter(|&mechanism| mechanism != CKM_ECDSA && mechanism != CKM_RSA_PKCS_PSS)
        .collect();
    assert_eq!(dropped, expected);
    assert_eq!(restored, all);
    let counts = control.counts();
    assert_eq!(counts["C_GetMechanismList"].calls, 4, "{counts:?}");
    assert_eq!(counts["C_Initialize"].calls, 2, "{counts:?}");
    assert_eq!(counts["C_Finalize"].calls, 2, "{counts:?}");
}

/// Prints the mechanisms of the first token in two rounds. Each round loads
/// the module through cryptoki, initializes it, lists the mechanisms and
/// finalizes it. The probe runs as a child process of
/// [`mechanism_list_hides_dropped_mechanism`], which sets the environment
/// that SoftHSM and the module read when they load. Without that
/// environment it does nothing.
#[test]
#[ignore = "runs as a child process of mechanism_list_hides_dropped_mechanism"]
fn mechanism_list_probe() {
    let Ok(module) = std::env::var(PROBE_MODULE) else {
        return;
    };
    for round in 0..2 {
        let pkcs11 = Pkcs11::new(&module).expect("module loads");
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("initialize");
        let slot = pkcs11.get_slots_with_token().expect("slot list")[0];
        for mechanism in pkcs11.get_mechanism_list(slot).expect("mechanism list") {
            println!("round {round} mechanism {:#x}", *mechanism);
        }
        pkcs11.finalize().expect("finalize");
    }
}

// The tests below record behaviour that looks wrong. Each is ignored, and
// its reason states what the service does instead.

#[tokio::test(flavor = "multi_thread")]
async fn rejected_pin_is_not_tried_again() {
    let fixture = start().await;
    fixture.control.set(&[
        "C_Sign CKR_USER_NOT_LOGGED_IN times=1",
        "C_Login CKR_PIN_INCORRECT",
    ]);

    assert_unavailable(fixture.sign("pin-rejected").await);
    wait_health(
        &fixture.server,
        ServingStatus::NotServing,
        Duration::from_secs(5),
    )
    .await;
    let rejected = count_of(&fixture.control.counts(), "C_Login").failed;
    // Each failed login counts towards locking the user PIN, and only the
    // security officer can unlock it. At start-up, a rejected PIN makes
    // the service exit instead of retrying.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = fixture.control.counts();
    assert_eq!(count_of(&later, "C_Login").failed, rejected, "{later:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_found_again_after_failed_reopen() {
    // The fault module keeps SoftHSM loaded across reconnections, like any
    // module that something else in the process holds. SoftHSM reads its
    // token directory only in C_Initialize.
    let fixture = start().await;
    let tokens = fixture.token.dir.path().join("tokens");
    let token_dir = std::fs::read_dir(&tokens)
        .expect("token directory readable")
        .next()
        .expect("one token")
        .expect("token entry readable")
        .path();
    let moved = fixture.token.dir.path().join("token.moved");

    // Without the token's own directory, C_Initialize succeeds but finds no
    // token, so the reconnection fails after initializing the module.
    std::fs::rename(&token_dir, &moved).expect("token can be moved");
    assert_unavailable(fixture.sign("token-moved").await);
    wait_health(
        &fixture.server,
        ServingStatus::NotServing,
        Duration::from_secs(5),
    )
    .await;

    std::fs::rename(&moved, &token_dir).expect("token can be moved back");
    wait_health(
        &fixture.server,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;
    fixture.sign_and_verify("token-back").await;
}

/// Starts a server that re-reads its keys every 500 ms, makes every
/// `C_FindObjectsInit` fail with `CKR_DEVICE_ERROR` from then on, and
/// waits until health is NOT_SERVING.
async fn start_with_failing_reads() -> Fixture {
    let fixture = start_with(&[("HALLMARK_REFRESH_INTERVAL", "500ms")]).await;
    fixture.control.set(&["C_FindObjectsInit CKR_DEVICE_ERROR"]);
    wait_health(
        &fixture.server,
        ServingStatus::NotServing,
        Duration::from_secs(5),
    )
    .await;
    fixture
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_key_read_reconnects() {
    let fixture = start_with_failing_reads().await;
    // Sign requests still succeed on the connection that the refresh loop
    // reads from, so only a reconnection by the loop itself can end it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while count_of(&fixture.control.counts(), "C_Initialize").calls < 2 {
        assert!(
            Instant::now() < deadline,
            "no reconnection 5 s after a failed read: {:?}\n{}",
            fixture.control.counts(),
            fixture.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_key_read_warns_once() {
    let fixture = start_with_failing_reads().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fixture
            .logged(&["the token or its keys cannot be read; not serving"], 1)
            .await,
        1,
        "{}",
        fixture.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_key_read_names_its_cause() {
    let fixture = start_with_failing_reads().await;
    assert_eq!(fixture.logged(&["; not serving"], 1).await, 1);
    assert_eq!(
        log_lines_with_all(&fixture.server, &["default key has no active version"]),
        0,
        "{}",
        fixture.log()
    );
}

/// Rules that hold the first `C_Sign` call in the module for 12 s, longer
/// than the 10 s that a reconnection waits for running calls, and fail the
/// second with `CKR_DEVICE_REMOVED`.
const STUCK_CALL_RULES: [&str; 2] = [
    "C_Sign delay_ms=12000 times=1",
    "C_Sign CKR_DEVICE_REMOVED skip=1 times=1",
];

/// Sets [`STUCK_CALL_RULES`], starts a Sign request, and waits until its
/// first `C_Sign` call is held in the module.
async fn start_stuck_sign(fixture: &Fixture) -> tokio::task::JoinHandle<Result<(), Status>> {
    fixture.control.set(&STUCK_CALL_RULES);
    let mut signer = fixture.server.client().await;
    let stuck = tokio::spawn(async move { signer.sign(sign_request("stuck")).await.map(|_| ()) });
    let deadline = Instant::now() + Duration::from_secs(5);
    while count_of(&fixture.control.counts(), "C_Sign").calls < 1 {
        assert!(Instant::now() < deadline, "the stuck request never signed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stuck
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_behind_stuck_call_is_unavailable() {
    let fixture = start().await;
    let stuck = start_stuck_sign(&fixture).await;

    let status = fixture
        .sign("device-removed")
        .await
        .expect_err("the device was removed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), UNAVAILABLE_MESSAGE);
    stuck
        .await
        .expect("stuck request task finishes")
        .expect("the stuck request signs");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "while a reconnection waits for a stuck call, every other request waits too, up to \
            10 s, even with a session free"]
async fn reconnect_behind_stuck_call_lets_others_answer() {
    let fixture = start_with(&[("HALLMARK_SESSIONS", "3")]).await;
    let stuck = start_stuck_sign(&fixture).await;
    let failing = {
        let mut signer = fixture.server.client().await;
        tokio::spawn(async move { signer.sign(sign_request("device-removed")).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while count_of(&fixture.control.counts(), "C_Sign").failed < 1 {
        assert!(Instant::now() < deadline, "the fault was never injected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Two sessions are free. A signature or an error will do, as long as
    // it arrives before the reconnection gives up.
    let started = Instant::now();
    let _ = fixture.sign("during-drain").await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "a request waited {waited:?} behind the reconnection"
    );
    let _ = failing.await;
    let _ = stuck.await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_sign_init_is_logged_as_sign_init() {
    let fixture = start().await;
    fixture
        .control
        .set(&["C_SignInit CKR_KEY_HANDLE_INVALID times=1"]);

    fixture.sign_and_verify("sign-init-fails").await;
    assert_eq!(
        fixture
            .logged(&["C_SignInit failed: KeyHandleInvalid"], 1)
            .await,
        1,
        "{}",
        fixture.log()
    );
}

/// A token that opens but fails every signature must not be reconnected
/// by every request: after one reconnection the pool stops serving and
/// retries with a growing backoff, and it serves again once the token
/// signs.
#[tokio::test(flavor = "multi_thread")]
async fn failing_token_backs_off() {
    let fixture = start().await;
    let before = fixture.control.counts();
    fixture.control.set(&["C_Sign CKR_DEVICE_ERROR"]);

    let deadline = Instant::now() + Duration::from_secs(4);
    let mut failures = 0;
    // Between retries the service reports the outage. Each retry's
    // reconnection succeeds (only C_Sign fails), so the outage must be
    // seen while requests keep failing, not after they stop.
    let mut outage_seen = false;
    while Instant::now() < deadline {
        let status = fixture.sign("always-failing").await.expect_err("fails");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        failures += 1;
        if !outage_seen && health_of(&fixture.server).await == [ServingStatus::NotServing; 2] {
            outage_seen = metric(&fixture.server, TOKEN_READY).await == Some(0.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        outage_seen,
        "NOT_SERVING with hallmark_token_ready 0 never seen"
    );
    let during = fixture.control.counts();
    let initialized = calls_since(&before, &during, "C_Initialize").calls;
    // One reconnection by the first request, then retries after 0.25,
    // 0.5, 1 and 2 s: far fewer than the requests.
    assert!(
        (1..=6).contains(&initialized),
        "{initialized} reconnections for {failures} requests: {during:?}"
    );
    assert!(failures > 50, "{failures} requests");

    fixture.control.set(&[]);
    wait_health(
        &fixture.server,
        ServingStatus::Serving,
        Duration::from_secs(20),
    )
    .await;
    fixture.sign_and_verify("after-backoff").await;
}

/// Sends a SignBatch of the digests of `request_ids` to the fixture's
/// server with the default key.
async fn sign_batch(fixture: &Fixture, request_ids: &[String]) -> pb::SignBatchResponse {
    let request = pb::SignBatchRequest {
        items: request_ids
            .iter()
            .map(|id| pb::SignBatchItem {
                digest: digest_of(id),
                request_id: id.clone(),
            })
            .collect(),
        hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
        key_name: String::new(),
        signature_encoding: 0,
    };
    fixture
        .server
        .client()
        .await
        .sign_batch(request)
        .await
        .unwrap_or_else(|status| panic!("SignBatch failed: {status:?}; log:\n{}", fixture.log()))
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_resumes_on_a_fresh_session_after_an_invalidated_one() {
    let fixture = start().await;
    let ids: Vec<String> = (0..5).map(|n| format!("batch-{n}")).collect();
    let before = fixture.control.counts();
    // Each signature is one C_SignInit and two C_Sign calls (length, then
    // signature): the fifth C_Sign is the third digest's first call.
    fixture
        .control
        .set(&["C_Sign CKR_SESSION_HANDLE_INVALID skip=4 times=1"]);
    let response = sign_batch(&fixture, &ids).await;
    for (id, result) in ids.iter().zip(&response.results) {
        assert_eq!(result.error, None, "{id}");
        verify(&fixture.public_key, id, &result.signature);
    }
    let after = fixture.control.counts();
    // Two digests signed, the third failed, then three signed on a new
    // session: no digest was signed twice.
    assert_eq!(calls_since(&before, &after, "C_SignInit"), call_count(6, 0));
    assert_eq!(calls_since(&before, &after, "C_Sign"), call_count(11, 1));
    // The session whose handle broke was closed, not put back.
    assert_eq!(
        calls_since(&before, &after, "C_CloseSession"),
        call_count(1, 0)
    );
    assert_eq!(
        fixture
            .logged(
                &["signing a batch failed; recovering and retrying the rest once"],
                1
            )
            .await,
        1,
        "{}",
        fixture.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_keeps_what_was_signed_before_the_token_failed() {
    let fixture = start().await;
    let ids: Vec<String> = (0..4).map(|n| format!("kept-{n}")).collect();
    // The second digest's first C_Sign, and every call after it, fail.
    fixture.control.set(&["C_Sign CKR_DEVICE_ERROR skip=2"]);
    let response = sign_batch(&fixture, &ids).await;
    assert_eq!(response.results[0].error, None);
    verify(&fixture.public_key, &ids[0], &response.results[0].signature);
    for result in &response.results[1..] {
        let error = result.error.as_ref().expect("the token failed");
        assert_eq!(error.code, Code::Unavailable as i32, "{result:?}");
        assert_eq!(error.message, UNAVAILABLE_MESSAGE);
        assert!(result.signature.is_empty());
    }
    // The signed digest has its key; the others carry none in the audit
    // log, and the request counter shows one OK and three UNAVAILABLE.
    let metrics = fixture.server.metrics().await;
    let count = |code: &str| {
        sample(
            &metrics,
            &format!(r#"hallmark_sign_requests_total{{code="{code}",key_name="default"}}"#),
        )
    };
    assert_eq!(count("OK"), Some(1.0), "{metrics}");
    assert_eq!(count("UNAVAILABLE"), Some(3.0), "{metrics}");
}
