//! Caller identity and policy over real sockets: Unix peer credentials
//! decide who may sign, rate limits and the admission limit fail fast with
//! RESOURCE_EXHAUSTED, and each decision is counted by caller name.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestServer, TestToken, sample};
use hallmark::pb::{HashAlgorithm, SignRequest, SignatureEncoding};
use tonic::Code;

/// A user ID that no account on the test machine has; `setpriv` runs the
/// client under it without creating the user.
const OTHER_UID: u32 = 48_213;

fn request() -> SignRequest {
    SignRequest {
        digest: vec![7; 32],
        hash_algorithm: HashAlgorithm::Sha256 as i32,
        key_name: String::new(),
        request_id: String::new(),
        signature_encoding: SignatureEncoding::Der as i32,
    }
}

/// Adds lines to the `[server]` table of the token's configuration.
fn set_server_options(token: &TestToken, lines: &str) {
    let path = token.config();
    let text = std::fs::read_to_string(&path).expect("config readable");
    let text = text.replacen("[server]\n", &format!("[server]\n{lines}\n"), 1);
    std::fs::write(path, text).expect("config writable");
}

/// Runs `hallmark sign` under `uid` against the socket, with one manifest.
fn sign_as(uid: u32, socket: &std::path::Path) -> std::process::Output {
    let mut child = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            env!("CARGO_BIN_EXE_hallmark"),
            "sign",
            "--manifest",
            "-",
            "--target",
            &format!("unix:{}", socket.display()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv runs");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let manifest = format!(
            "{{\"prediction\": \"fraud\", \"timestamp\": \"{}\"}}\n",
            hallmark::verify::format_rfc3339(std::time::SystemTime::now())
        );
        stdin.write_all(manifest.as_bytes()).expect("writes");
    }
    child.wait_with_output().expect("setpriv finishes")
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_peers_are_allowed_or_denied_by_uid() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    set_server_options(&token, "socket_mode = \"0666\"");
    token.append_config(
        "[[callers]]\nname = \"model\"\nuid = 0\nkeys = [\"default\"]\n\n\
         [[callers]]\nname = \"other-model\"\nuid = 1\nkeys = [\"default\"]\n",
    );
    // The other user must be able to reach the socket through the directory.
    std::fs::set_permissions(token.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let socket = token.dir.path().join("hallmark.sock");
    let server = TestServer::start_with(&token, &format!("unix:{}", socket.display()), &[]);
    server.wait_serving(Duration::from_secs(30)).await;

    let mode = std::fs::metadata(&socket)
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666);

    let allowed = sign_as(0, &socket);
    assert_eq!(allowed.status.code(), Some(0), "{allowed:?}");
    assert_eq!(String::from_utf8_lossy(&allowed.stdout).lines().count(), 1);

    let denied = sign_as(OTHER_UID, &socket);
    assert_eq!(denied.status.code(), Some(77), "{denied:?}");
    assert_eq!(denied.stdout, b"");
    assert_eq!(
        String::from_utf8_lossy(&denied.stderr),
        "error: line 1: Sign failed: PermissionDenied: this caller may not sign with key \
         \"default\"\n"
    );

    let metrics = server.metrics().await;
    let count = |caller: &str, outcome: &str| {
        sample(
            &metrics,
            &format!("hallmark_caller_requests_total{{caller=\"{caller}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(count("model", "allowed"), Some(1.0));
    assert_eq!(count("unknown", "denied"), Some(1.0));
    assert_eq!(count("other-model", "allowed"), Some(0.0));
    // The raw identity never becomes a label.
    assert!(!metrics.contains(&OTHER_UID.to_string()), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_socket_mode_is_owner_and_group() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let socket = token.dir.path().join("hallmark.sock");
    let server = TestServer::start_with(&token, &format!("unix:{}", socket.display()), &[]);
    server.wait_serving(Duration::from_secs(30)).await;
    let mode = std::fs::metadata(&socket)
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_over_its_rate_is_refused() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    // Over loopback TCP the test client has no uid, so the rule names the
    // server's own uid and the test signs over the Unix socket.
    token.append_config(
        "[[callers]]\nname = \"batch\"\nuid = 0\nkeys = [\"*\"]\nrate = 0.5\nburst = 3\n",
    );
    let socket = token.dir.path().join("hallmark.sock");
    let server = TestServer::start_with(&token, &format!("unix:{}", socket.display()), &[]);
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(match client.sign(request()).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        });
    }
    assert_eq!(
        codes,
        [
            Code::Ok,
            Code::Ok,
            Code::Ok,
            Code::ResourceExhausted,
            Code::ResourceExhausted
        ]
    );
    let status = client
        .sign(request())
        .await
        .expect_err("still over the rate");
    assert_eq!(
        status.message(),
        "caller \"batch\" is over its rate limit; retry with backoff"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "hallmark_caller_requests_total{caller=\"batch\",outcome=\"rate_limited\"}"
        ),
        Some(3.0)
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS line")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_beyond_the_admission_limit_fails_fast() {
    let token = TestToken::new(4096, "digest");
    set_server_options(&token, "max_pending = 2");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let client = server.client().await;

    let burst = |n: usize| {
        let client = client.clone();
        async move {
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..n {
                let mut client = client.clone();
                calls.spawn(async move { client.sign(request()).await.map(|_| ()) });
            }
            calls.join_all().await
        }
    };
    // A first burst of the same size warms up the allocator, connection
    // buffers and the audit queue; the second must then reuse that memory.
    let _ = burst(2_000).await;
    let before = rss_kib(server.pid());
    let results = burst(2_000).await;
    let after = rss_kib(server.pid());

    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok + exhausted, 2_000, "only OK and RESOURCE_EXHAUSTED");
    assert!(ok >= 2, "{ok} signed");
    assert!(exhausted >= 1_000, "{exhausted} refused");
    // A rejected request keeps no memory after its response, so a repeated
    // burst does not grow memory.
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_deadline_never_reaches_the_hsm() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;
    let mut expired = tonic::Request::new(request());
    // The header alone, without a client-side timer: the deadline has
    // passed by the time the server admits the request.
    expired
        .metadata_mut()
        .insert("grpc-timeout", "1n".parse().expect("valid header"));
    // The status comes from whichever check runs first: tonic's own
    // grpc-timeout timer (CANCELLED) or the admission check
    // (DEADLINE_EXCEEDED).
    let status = client.sign(expired).await.expect_err("deadline passed");
    let answers = [
        (Code::Cancelled, "Timeout expired"),
        (
            Code::DeadlineExceeded,
            "the request's deadline passed before signing began",
        ),
    ];
    assert!(
        answers.contains(&(status.code(), status.message())),
        "{status:?}"
    );
    let metrics = server.metrics().await;
    // No C_Sign ran, so the HSM histogram has no series at all.
    assert!(
        !metrics.contains("hallmark_hsm_sign_duration_seconds_count"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_health_listener_serves_health_only() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    set_server_options(&token, "health_listen = \"127.0.0.1:0\"");
    let socket = token.dir.path().join("hallmark.sock");
    let server = TestServer::start_with(&token, &format!("unix:{}", socket.display()), &[]);
    server.wait_serving(Duration::from_secs(30)).await;
    let log = server.log_text();
    let line = log
        .lines()
        .find(|line| line.contains("kind=\"health\""))
        .expect("the health listener is logged");
    let addr = line
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the line has an address");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .connect()
        .await
        .expect("connects");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let liveness = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .expect("liveness answers")
        .into_inner()
        .status;
    assert_eq!(
        liveness,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut signer = hallmark::pb::signer_service_client::SignerServiceClient::new(channel);
    let refused = signer.sign(request()).await.expect_err("no Sign here");
    assert_eq!(refused.code(), Code::Unimplemented);
}
