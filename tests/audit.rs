//! The audit log as the real server writes it: every Sign request is
//! recorded before its response, no acknowledged record is lost to
//! SIGKILL, a full disk stops signing until space returns, and `hallmark
//! audit verify` finds tampering. Each test runs `hallmark serve` on its
//! own SoftHSM token with an ECDSA P-256 key, the fastest key type to
//! create and to sign with.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{HALLMARK, TestServer, TestToken, sample};
use hallmark::audit::{Body, ChainHash, Record, parse_file_name};
use hallmark::pb::signer_service_client::SignerServiceClient;
use hallmark::pb::{self, SignRequest};
use hallmark::verify::encode_hex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

/// The status message of a signature withheld because its record could not
/// be written.
const AUDIT_UNAVAILABLE: &str =
    "the audit log cannot be written, so no signature is returned; retry with backoff";

/// The problem `audit verify` reports for a record whose `prev` does not
/// hash the line before it.
const PREV_MISMATCH: &str = "prev does not match the SHA-256 of the previous line; that line \
                             was changed, removed or moved";

/// The gRPC service name of the signer, for its own health status.
const SIGNER_SERVICE: &str = "hallmark.v1.SignerService";

/// Exit code of `hallmark audit verify` for a broken record.
const EXIT_BROKEN: i32 = 1;

fn new_token() -> TestToken {
    TestToken::with_algorithm("ecdsa-p256-sha256")
}

/// Starts a server on the token and waits until it reports SERVING.
async fn start_server(token: &TestToken, env: &[(&str, &str)]) -> TestServer {
    let server = TestServer::start_with(token, "127.0.0.1:0", env);
    server.wait_serving(Duration::from_secs(30)).await;
    server
}

fn sign_request(request_id: &str, digest: Vec<u8>, key_name: &str) -> SignRequest {
    SignRequest {
        digest,
        hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
        key_name: key_name.into(),
        request_id: request_id.into(),
        signature_encoding: pb::SignatureEncoding::Der as i32,
    }
}

/// Returns a SHA-256 digest that differs for every request ID.
fn digest_of(request_id: &str) -> Vec<u8> {
    Sha256::digest(request_id.as_bytes()).to_vec()
}

/// Signs with the default key and returns the response, or the status of
/// a failure.
async fn sign(
    client: &mut SignerServiceClient<Channel>,
    request_id: &str,
) -> Result<pb::SignResponse, tonic::Status> {
    let request = sign_request(request_id, digest_of(request_id), "");
    client.sign(request).await.map(tonic::Response::into_inner)
}

/// Saves the server's JWKS document to `path`, for `audit verify --keys`.
async fn save_jwks(server: &TestServer, path: &Path) {
    let document = server.jwks().await;
    std::fs::write(path, document.to_string()).expect("JWKS file writable");
}

/// Stops the server with SIGTERM, checks that it exits with status 0, and
/// returns its log.
async fn stop_server(server: TestServer) -> String {
    let log = Arc::clone(&server.log);
    // The wait runs off the test's runtime thread, so that the client
    // connection tasks can handle the server's GOAWAY and close. Otherwise
    // the server waits for its drain timeout.
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("terminate does not panic");
    // The thread that reads the server's stderr may still hold the last
    // lines when the process has exited.
    let deadline = Instant::now() + Duration::from_secs(2);
    let text = loop {
        let text = log.lock().expect("log lock").join("\n");
        if text.contains("stopped") || Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.success(),
        "server exited with {status}; log:\n{text}"
    );
    text
}

/// Lists the audit files of `directory` in chain order, without side
/// files and the lock file.
fn audit_files(directory: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(directory)
        .expect("audit directory readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter_map(|path| {
            let index = parse_file_name(path.file_name()?.to_str()?)?;
            Some((index, path))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, path)| path).collect()
}

/// Lists the side files that hold bytes cut from an audit file's end.
fn side_files(directory: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
        .expect("audit directory readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.to_string_lossy().contains(".jsonl.torn-"))
        .collect();
    files.sort();
    files
}

/// Parses every complete line of `files` as JSON. A last line without a
/// newline is left out, as `audit verify` skips it.
fn read_records(files: &[PathBuf]) -> Vec<Value> {
    let mut records = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).expect("audit file readable");
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        for line in complete.lines() {
            let record = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{} has a line that is not JSON: {e}", path.display()));
            records.push(record);
        }
    }
    records
}

/// Returns the sign records of `records`.
fn sign_records(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["kind"] == "sign").collect()
}

/// Runs `hallmark audit ARGS... FILES...` without a configuration file, as
/// an operator would on copied audit files.
fn hallmark_audit(args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(HALLMARK)
        .env_remove("HALLMARK_CONFIG")
        .arg("audit")
        .args(args)
        .args(files)
        .output()
        .expect("hallmark runs")
}

/// Runs `hallmark audit verify --keys KEYS FILES...`.
fn audit_verify(keys: &Path, files: &[PathBuf]) -> Output {
    let keys = keys.to_str().expect("UTF-8 path");
    hallmark_audit(&["verify", "--keys", keys], files)
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}); {}", describe(output)))
}

/// Checks that `output` is a successful `audit verify` whose checkpoints
/// all verified and whose last record a verified checkpoint covers, and
/// returns its summary.
fn assert_verified(output: &Output, records: usize) -> Value {
    assert_eq!(output.status.code(), Some(0), "{}", describe(output));
    let summary = stdout_json(output);
    assert_eq!(summary["status"], "ok", "{summary}");
    assert_eq!(summary["records"], records, "{summary}");
    assert_eq!(summary["first_seq"], 1, "{summary}");
    assert_eq!(summary["last_seq"], records, "{summary}");
    assert_eq!(
        summary["checkpoints_verified"], summary["checkpoints"],
        "{summary}"
    );
    assert_eq!(summary["checkpoints_unchecked"], 0, "{summary}");
    assert_eq!(summary["last_verified_checkpoint"], records, "{summary}");
    summary
}

/// Returns the `request_id` of each record, in order.
fn request_ids(records: &[&Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["request_id"].as_str().expect("request_id").to_owned())
        .collect()
}

#[tokio::test]
async fn every_sign_request_is_recorded() {
    const SIGNED: usize = 12;
    let token = new_token();
    let server = start_server(&token, &[]).await;
    let mut client = server.client().await;

    let ok_ids: Vec<String> = (1..=SIGNED).map(|n| format!("ok-{n:02}")).collect();
    let mut key_ids = BTreeSet::new();
    for (n, id) in ok_ids.iter().enumerate() {
        // Every other request leaves hash_algorithm UNSPECIFIED, which means
        // SHA-256, so its record carries sha256 as well.
        let mut request = sign_request(id, digest_of(id), "");
        if n % 2 == 1 {
            request.hash_algorithm = pb::HashAlgorithm::Unspecified as i32;
        }
        let response = client
            .sign(request)
            .await
            .expect("Sign succeeds")
            .into_inner();
        assert_eq!(response.request_id, *id);
        let key = response.key.expect("key metadata");
        assert_eq!(key.version, 1);
        key_ids.insert(key.key_id);
    }
    assert_eq!(key_ids.len(), 1, "one key signs every request: {key_ids:?}");
    let key_id = key_ids.pop_first().expect("one key ID");

    let short = client
        .sign(sign_request("bad-digest", vec![7; 31], ""))
        .await
        .expect_err("a 31-byte digest is rejected");
    assert_eq!(short.code(), Code::InvalidArgument);
    assert_eq!(
        short.message(),
        "digest is 31 bytes; a SHA-256 digest is 32 bytes"
    );
    let unknown = client
        .sign(sign_request("bad-key", digest_of("bad-key"), "no-such-key"))
        .await
        .expect_err("an unknown key name is rejected");
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(unknown.message(), "key \"no-such-key\" is not configured");

    let metrics = server.metrics().await;
    let recorded = SIGNED + 2;
    assert_eq!(
        sample(&metrics, "hallmark_audit_last_seq"),
        Some(recorded as f64)
    );

    let keys = token.dir.path().join("jwks.json");
    save_jwks(&server, &keys).await;
    drop(client);
    let log = stop_server(server).await;
    assert!(log.contains("audit log closed"), "log:\n{log}");

    let files = audit_files(&token.dir.path().join("audit"));
    assert_eq!(files.len(), 1, "{files:?}");
    let records = read_records(&files);
    assert_verified(&audit_verify(&keys, &files), records.len());
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record["seq"], index + 1, "{record}");
    }

    // One record per request, in the order sent, with the request's fields
    // and the response's status.
    let signs = sign_records(&records);
    let mut expected_ids = ok_ids.clone();
    expected_ids.extend(["bad-digest".to_owned(), "bad-key".to_owned()]);
    assert_eq!(request_ids(&signs), expected_ids);
    for (record, id) in signs.iter().zip(&ok_ids) {
        assert_eq!(record["outcome"], "OK", "{record}");
        // The policy's caller name, then the transport identity.
        let caller = record["caller"].as_str().expect("caller");
        assert!(caller.starts_with("local tcp=127.0.0.1:"), "{record}");
        assert_eq!(record["digest"], encode_hex(&digest_of(id)), "{record}");
        assert_eq!(record["hash_algorithm"], "sha256", "{record}");
        assert_eq!(record["key_name"], "default", "{record}");
        assert_eq!(record["key_id"], key_id.as_str(), "{record}");
        assert_eq!(record["key_version"], 1, "{record}");
    }
    // A request rejected before authorization has no caller name.
    let short_record = signs[SIGNED];
    let caller = short_record["caller"].as_str().expect("caller");
    assert!(caller.starts_with("tcp=127.0.0.1:"), "{short_record}");
    assert_eq!(short_record["outcome"], "INVALID_ARGUMENT");
    assert_eq!(short_record["digest"], encode_hex(&[7; 31]));
    assert_eq!(short_record["key_name"], "");
    assert_eq!(short_record["key_id"], "");
    assert_eq!(short_record["key_version"], 0);
    let unknown_record = signs[SIGNED + 1];
    assert_eq!(unknown_record["outcome"], "NOT_FOUND");
    assert_eq!(unknown_record["digest"], encode_hex(&digest_of("bad-key")));
    assert_eq!(unknown_record["key_name"], "no-such-key");
    assert_eq!(unknown_record["key_id"], "");
    assert_eq!(unknown_record["key_version"], 0);

    // The checkpoint written at shutdown ends the log and covers every
    // record before it. The 60 s checkpoint interval does not pass in
    // this test, so it is the only one.
    let checkpoints: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "checkpoint")
        .collect();
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    let last = records.last().expect("records");
    assert_eq!(last["kind"], "checkpoint");
    assert_eq!(last["records"], records.len() - 1);
    assert_eq!(last["key_id"], key_id.as_str());
    assert_eq!(last["key_version"], 1);
    assert_eq!(last["algorithm"], "ecdsa-p256-sha256");

    // The `=` form, because a key ID may begin with `-`, which `--key-id
    // ID` does not accept; find_accepts_key_id_with_leading_hyphen shows it.
    let found = hallmark_audit(&["find", &format!("--key-id={key_id}")], &files);
    assert_eq!(found.status.code(), Some(0), "{}", describe(&found));
    let found: Vec<Value> = String::from_utf8(found.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let found: Vec<&Value> = found.iter().collect();
    assert_eq!(request_ids(&found), ok_ids);
    assert!(found.iter().all(|r| r["outcome"] == "OK"), "{found:?}");
}

/// Signs with unique request IDs until a request fails, and returns the
/// IDs of the requests that succeeded and the failure.
async fn sign_until_failure(
    mut client: SignerServiceClient<Channel>,
    worker: usize,
) -> (Vec<String>, tonic::Status) {
    let mut acknowledged = Vec::new();
    for n in 0.. {
        let id = format!("w{worker}-{n}");
        let outcome = tokio::time::timeout(Duration::from_secs(10), sign(&mut client, &id));
        match outcome.await {
            Ok(Ok(response)) => {
                assert_eq!(response.request_id, id);
                acknowledged.push(id);
            }
            Ok(Err(status)) => return (acknowledged, status),
            Err(_) => panic!("request {id} timed out after 10 s"),
        }
    }
    unreachable!("the loop returns at the first failure")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_record() {
    const CLIENTS: usize = 4;
    let token = new_token();
    let directory = token.dir.path().join("audit");
    let keys = token.dir.path().join("jwks.json");
    let server = start_server(&token, &[]).await;
    save_jwks(&server, &keys).await;

    let mut workers = Vec::new();
    for worker in 0..CLIENTS {
        let client = server.client().await;
        workers.push(tokio::spawn(sign_until_failure(client, worker)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let mut acknowledged = Vec::new();
    for worker in workers {
        let (ids, failure) = worker.await.expect("the worker does not panic");
        // Only the kill ends a worker, with the transport error of the
        // broken connection rather than a status that the server sent.
        assert!(
            matches!(failure.code(), Code::Unavailable | Code::Unknown),
            "{failure:?}"
        );
        acknowledged.extend(ids);
    }
    // Dropping the server reaps the killed process, which releases the
    // directory lock.
    drop(server);
    assert!(
        acknowledged.len() >= 20,
        "only {} requests succeeded before the kill",
        acknowledged.len()
    );

    // A kill leaves at most one unterminated line at the end, and verify
    // skips it, so verify needs no server to cut it first. No checkpoint
    // was written: the interval is 60 s, and SIGKILL skips the final one.
    let files = audit_files(&directory);
    let records = read_records(&files);
    let output = audit_verify(&keys, &files);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["records"], records.len(), "{summary}");
    assert_eq!(summary["checkpoints"], 0, "{summary}");

    let signs = sign_records(&records);
    assert!(signs.iter().all(|r| r["outcome"] == "OK"), "{signs:?}");
    let recorded: HashSet<&str> = signs
        .iter()
        .map(|r| r["request_id"].as_str().expect("request_id"))
        .collect();
    assert_eq!(recorded.len(), signs.len(), "each request is recorded once");
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !recorded.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not recorded: {missing:?}"
    );
    // Each client waits for a response before its next request, so at most
    // one request per client was recorded without a response.
    assert!(
        recorded.len() <= acknowledged.len() + CLIENTS,
        "{} recorded, {} acknowledged",
        recorded.len(),
        acknowledged.len()
    );

    // A kill during a write leaves a torn last line. A kill rarely lands
    // inside a write, so a torn line is appended here as a crash leaves it.
    let newest = files.last().expect("an audit file");
    let text = std::fs::read_to_string(newest).expect("audit file readable");
    let torn = format!("{{\"seq\":{},\"time\":\"2026-", records.len() + 1);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .expect("audit file writable");
    file.write_all(torn.as_bytes()).expect("appends");
    drop(file);
    let torn_line = text.matches('\n').count() + 1;
    let output = audit_verify(&keys, &files);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let note = format!(
        "note: {} line {torn_line} is unterminated, from a crash or a write in progress; it was \
         skipped",
        newest.display()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&note), "{stderr}");

    // A restarted server cuts the torn line into a side file and continues
    // the chain after the last complete record.
    let server = start_server(&token, &[]).await;
    let mut client = server.client().await;
    sign(&mut client, "after-restart")
        .await
        .expect("Sign succeeds after the restart");
    drop(client);
    let log = stop_server(server).await;
    assert!(log.contains("cut a torn last line"), "log:\n{log}");
    let sides = side_files(&directory);
    assert_eq!(sides.len(), 1, "{sides:?}");
    let side = std::fs::read_to_string(&sides[0]).expect("side file readable");
    assert!(side.ends_with(&format!("{torn}\n")), "side file: {side:?}");

    let files = audit_files(&directory);
    let after = read_records(&files);
    assert_verified(&audit_verify(&keys, &files), after.len());
    assert_eq!(
        after.len(),
        records.len() + 2,
        "one sign record and a checkpoint"
    );
    let resumed = &after[records.len()];
    assert_eq!(resumed["request_id"], "after-restart");
    assert_eq!(resumed["seq"], records.len() + 1);
}

/// A tmpfs mounted for one test, unmounted by path when dropped.
struct Tmpfs {
    path: PathBuf,
    mounted: bool,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (a `mount -o size=` value) on `path`. This
    /// needs root, and fails the test when mounting fails.
    fn mount(path: &Path, size: &str) -> Self {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("the mount command runs");
        assert!(
            output.status.success(),
            "mounting a {size} tmpfs on {} failed, and this test needs one to fill: run it as \
             root on Linux; {}",
            path.display(),
            describe(&output)
        );
        Self {
            path: path.to_owned(),
            mounted: true,
        }
    }

    fn unmount(&mut self) -> Output {
        self.mounted = false;
        Command::new("umount")
            .arg(&self.path)
            .output()
            .expect("the umount command runs")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            let output = self.unmount();
            if !output.status.success() {
                eprintln!(
                    "unmounting {} failed: {}",
                    self.path.display(),
                    describe(&output)
                );
            }
        }
    }
}

/// Writes zeros to a new file at `path` until the filesystem is full, and
/// returns the number of bytes written.
fn fill_filesystem(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler file created");
    let chunk = vec![0; 16 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => panic!("write returned 0 before the filesystem was full"),
            Ok(bytes) => written += bytes as u64,
            Err(error) if error.kind() == std::io::ErrorKind::StorageFull => return written,
            Err(error) => panic!("writing the filler failed: {error}"),
        }
    }
}

/// Polls the server's health until it is `expected`, or panics after
/// `timeout`.
async fn wait_health(server: &TestServer, expected: ServingStatus, timeout: Duration) {
    let started = Instant::now();
    loop {
        let status = server.health("").await;
        if status == expected {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "health is {status:?}, not {expected:?}, after {timeout:?}; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn full_disk_stops_signing_until_space_returns() {
    let mount_point = tempfile::tempdir().expect("temporary directory");
    let mut tmpfs = Tmpfs::mount(mount_point.path(), "512k");
    let directory = mount_point.path().join("audit");
    let filler = mount_point.path().join("filler");
    let token = new_token();
    let audit_env = directory.to_str().expect("UTF-8 path");
    let server = start_server(&token, &[("HALLMARK_AUDIT_DIR", audit_env)]).await;
    let mut client = server.client().await;

    let mut acknowledged = Vec::new();
    for n in 1..=3 {
        let id = format!("before-{n}");
        sign(&mut client, &id).await.expect("Sign succeeds");
        acknowledged.push(id);
    }

    let filled = fill_filesystem(&filler);
    assert!(filled > 256 * 1024, "only {filled} bytes filled the tmpfs");
    // The last page of the audit file may still have room for a few
    // records, so signing fails once that room is used.
    let mut rejected = None;
    for n in 1..=20 {
        let id = format!("full-{n}");
        match sign(&mut client, &id).await {
            Ok(_) => acknowledged.push(id),
            Err(status) => {
                rejected = Some((id, status));
                break;
            }
        }
    }
    let (_, status) = rejected.expect("Sign fails on a full disk within 20 requests");
    let rejected_seq = acknowledged.len() + 1;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), AUDIT_UNAVAILABLE);

    wait_health(&server, ServingStatus::NotServing, Duration::from_secs(2)).await;
    assert_eq!(
        server.health(SIGNER_SERVICE).await,
        ServingStatus::NotServing
    );
    // The counter counts Sign requests, not the failed checkpoints that
    // the server writes to probe for recovery.
    let metrics = server.metrics().await;
    assert_eq!(
        sample(&metrics, "hallmark_audit_write_failures_total"),
        Some(1.0)
    );
    assert_eq!(sample(&metrics, "hallmark_audit_healthy"), Some(0.0));
    let again = sign(&mut client, "still-full")
        .await
        .expect_err("Sign fails while the disk is full");
    assert_eq!(again.code(), Code::Unavailable);
    assert_eq!(again.message(), AUDIT_UNAVAILABLE);
    let metrics = server.metrics().await;
    assert_eq!(
        sample(&metrics, "hallmark_audit_write_failures_total"),
        Some(2.0)
    );

    // The server probes for recovery every 500 ms, and each probe first
    // tries to cut the failed write's bytes into a side file named after
    // the current second. Holding the fault for 2 s makes the probes span
    // several seconds, so that a failed cut that left a file would show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.health("").await, ServingStatus::NotServing);
    std::fs::remove_file(&filler).expect("filler removed");
    wait_health(&server, ServingStatus::Serving, Duration::from_secs(5)).await;
    assert_eq!(server.health(SIGNER_SERVICE).await, ServingStatus::Serving);
    sign(&mut client, "after-1")
        .await
        .expect("Sign succeeds once the disk has space");
    acknowledged.push("after-1".to_owned());
    let metrics = server.metrics().await;
    assert_eq!(sample(&metrics, "hallmark_audit_healthy"), Some(1.0));

    let keys = token.dir.path().join("jwks.json");
    save_jwks(&server, &keys).await;
    drop(client);
    stop_server(server).await;

    // The records of the failed writes were cut from the chain, so it
    // verifies, and it contains a record for each signature returned and
    // for no other request.
    let files = audit_files(&directory);
    let records = read_records(&files);
    assert_verified(&audit_verify(&keys, &files), records.len());
    let signs = sign_records(&records);
    assert_eq!(request_ids(&signs), acknowledged);
    assert!(signs.iter().all(|r| r["outcome"] == "OK"), "{signs:?}");
    // The server probes with a checkpoint, and the first one written ends
    // the fault, before "after-1" was sent. Shutdown writes the other.
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().expect("kind"))
        .collect();
    let mut expected_kinds = vec!["sign"; acknowledged.len() - 1];
    expected_kinds.extend(["checkpoint", "sign", "checkpoint"]);
    assert_eq!(kinds, expected_kinds);

    // The write that hit the full disk may have stored part of its record,
    // which went to one side file once space returned. The cuts that
    // failed during the fault leave no file.
    let sides = side_files(&directory);
    assert!(sides.len() <= 1, "{sides:?}");
    for side in &sides {
        let text = std::fs::read_to_string(side).expect("side file readable");
        let start = format!("{{\"seq\":{rejected_seq},");
        assert!(text.starts_with(&start), "{}: {text:?}", side.display());
        assert!(text.ends_with('\n'), "{}: {text:?}", side.display());
    }

    let unmounted = tmpfs.unmount();
    assert!(unmounted.status.success(), "{}", describe(&unmounted));
}

/// Copies `lines` as an audit file into a new directory under `parent`,
/// after `tamper` changes them, and returns the file.
fn tampered_copy(
    parent: &Path,
    name: &str,
    lines: &[String],
    tamper: impl FnOnce(&mut Vec<String>),
) -> PathBuf {
    let mut lines = lines.to_vec();
    tamper(&mut lines);
    let directory = parent.join(name);
    std::fs::create_dir(&directory).expect("directory created");
    let path = directory.join("audit-000001.jsonl");
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(&path, text).expect("tampered file writable");
    path
}

/// Checks that `audit verify` rejects `file` at `line` and `seq` with
/// `problem`.
fn assert_broken(keys: &Path, file: &Path, line: usize, seq: usize, problem: &str) {
    let output = audit_verify(keys, &[file.to_owned()]);
    assert_eq!(
        output.status.code(),
        Some(EXIT_BROKEN),
        "{}",
        describe(&output)
    );
    let summary = stdout_json(&output);
    assert_eq!(summary["status"], "broken", "{summary}");
    assert_eq!(
        summary["file"],
        file.to_str().expect("UTF-8 path"),
        "{summary}"
    );
    assert_eq!(summary["line"], line, "{summary}");
    assert_eq!(summary["seq"], seq, "{summary}");
    assert_eq!(summary["problem"], problem, "{summary}");
    let expected = format!(
        "error: broken audit log: {} line {line} (seq {seq}): {problem}\n",
        file.display()
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), expected);
}

#[tokio::test]
async fn verify_finds_tampering() {
    let token = new_token();
    let server = start_server(&token, &[]).await;
    let mut client = server.client().await;
    for n in 1..=5 {
        sign(&mut client, &format!("t-{n}"))
            .await
            .expect("Sign succeeds");
    }
    let keys = token.dir.path().join("jwks.json");
    save_jwks(&server, &keys).await;
    drop(client);
    stop_server(server).await;

    let files = audit_files(&token.dir.path().join("audit"));
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("audit file readable");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 6, "five sign records and a checkpoint");
    assert!(
        lines[2].contains(r#""request_id":"t-3","outcome":"OK""#),
        "{}",
        lines[2]
    );
    assert_verified(&audit_verify(&keys, &files), 6);
    let work = tempfile::tempdir().expect("temporary directory");

    // An edited record still parses, so the break shows at the next record,
    // whose prev no longer hashes it.
    let edited = tampered_copy(work.path(), "edited", &lines, |lines| {
        lines[2] = lines[2].replace(r#""outcome":"OK""#, r#""outcome":"PERMISSION_DENIED""#);
    });
    assert_broken(&keys, &edited, 4, 4, PREV_MISMATCH);

    let missing = "seq 4 where 3 was expected; a record is missing, repeated or out of order";
    let deleted = tampered_copy(work.path(), "deleted", &lines, |lines| {
        lines.remove(2);
    });
    assert_broken(&keys, &deleted, 3, 4, missing);

    let swapped = tampered_copy(work.path(), "swapped", &lines, |lines| lines.swap(2, 3));
    assert_broken(&keys, &swapped, 3, 4, missing);

    // Rewriting every later prev and the checkpoint's head hides the edit
    // from the chain, but not from the checkpoint's signature.
    let rechained = tampered_copy(work.path(), "rechained", &lines, |lines| {
        let mut prev = ChainHash::of_line(lines[1].as_bytes());
        for line in &mut lines[2..] {
            let mut record = Record::parse(line.as_bytes()).expect("a record");
            record.prev = prev;
            match &mut record.body {
                Body::Sign(event) if record.seq == 3 => event.outcome = Code::PermissionDenied,
                Body::Sign(_) => {}
                Body::Checkpoint(checkpoint) => checkpoint.head = prev,
            }
            *line = record.to_line();
            prev = ChainHash::of_line(line.as_bytes());
        }
    });
    let unsigned = hallmark_audit(&["verify"], std::slice::from_ref(&rechained));
    assert_eq!(unsigned.status.code(), Some(0), "{}", describe(&unsigned));
    assert_broken(
        &keys,
        &rechained,
        6,
        6,
        "the checkpoint signature does not verify: ecdsa-p256-sha256 signature does not verify",
    );
}

/// Key IDs are base64url SHA-256 thumbprints, so one in 64 begins with `-`,
/// and `--key-id ID` must take such an ID as a value.
#[test]
fn find_accepts_key_id_with_leading_hyphen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("audit-000001.jsonl");
    std::fs::write(&file, "").expect("empty audit file writable");
    let key_id = "-If_n59zqbeUwbQUkXP5Z1RxMAAjfHzeZP1GTIsBTnU";
    let output = hallmark_audit(&["find", "--key-id", key_id], &[file]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(output.stdout.is_empty(), "{}", describe(&output));
}

/// With audit.checkpoint_key, checkpoints use a key that Sign refuses, and
/// `audit verify --checkpoint-key` accepts checkpoints by that key only:
/// a caller who can sign with the default key cannot forge one.
#[tokio::test(flavor = "multi_thread")]
async fn a_dedicated_checkpoint_key_cannot_sign_requests() {
    let token = new_token();
    let config = std::fs::read_to_string(token.config()).expect("config readable");
    let config = config.replacen("[audit]\n", "[audit]\ncheckpoint_key = \"audit\"\n", 1)
        + "\n[keys.audit]\nalgorithm = \"ecdsa-p256-sha256\"\n";
    std::fs::write(token.config(), config).expect("config writable");
    let created = token.hallmark(&["keys", "create", "--name", "audit"]);
    assert!(created.status.success(), "{created:?}");

    let server = start_server(&token, &[]).await;
    let mut client = server.client().await;
    sign(&mut client, "by-default-key")
        .await
        .expect("the default key signs");
    let refused = client
        .sign(sign_request("by-audit-key", digest_of("x"), "audit"))
        .await
        .expect_err("the checkpoint key is refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "key \"audit\" signs audit checkpoints only"
    );
    let jwks = token.dir.path().join("jwks.json");
    save_jwks(&server, &jwks).await;
    drop(client);
    stop_server(server).await;

    let files = audit_files(&token.dir.path().join("audit"));
    let records = read_records(&files);
    let checkpoint = records.last().expect("a final checkpoint");
    assert_eq!(checkpoint["kind"], "checkpoint");
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(&jwks).expect("JWKS")).expect("JSON");
    let audit_kid = document["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["hallmark_key_name"] == "audit"))
        .and_then(|k| k["kid"].as_str())
        .expect("the audit key is published")
        .to_owned();
    assert_eq!(checkpoint["key_id"], audit_kid.as_str());

    let keys = jwks.to_str().expect("UTF-8 path");
    let accepted = hallmark_audit(
        &["verify", "--keys", keys, "--checkpoint-key", "audit"],
        &files,
    );
    assert_eq!(accepted.status.code(), Some(0), "{}", describe(&accepted));
    // The same log, restricted to the default key's checkpoints,
    // fails: a checkpoint by any other key proves nothing.
    let refused = hallmark_audit(
        &["verify", "--keys", keys, "--checkpoint-key", "default"],
        &files,
    );
    assert_eq!(
        refused.status.code(),
        Some(EXIT_BROKEN),
        "{}",
        describe(&refused)
    );
}
