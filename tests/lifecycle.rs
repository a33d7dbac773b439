//! Key lifecycle against real SoftHSM tokens: the CLI, the schedule, state
//! recovery after restarts and crashes, several instances on one token, and
//! rotation under load.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{HALLMARK, TestServer, TestToken, public_key};
use hallmark::pb::signer_service_client::SignerServiceClient;
use hallmark::pb::{self, KeyState, SignRequest};
use rsa::Pss;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// One line of `hallmark keys list --json`.
fn list(token: &TestToken) -> Vec<Value> {
    let output = token.hallmark(&["keys", "list", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

fn states(token: &TestToken) -> Vec<(u64, String)> {
    list(token)
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().expect("version"),
                v["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}

fn key_id_of(token: &TestToken, version: u64) -> String {
    list(token)
        .into_iter()
        .find(|v| v["version"].as_u64() == Some(version))
        .and_then(|v| v["key_id"].as_str().map(str::to_owned))
        .expect("version listed")
}

/// Runs `hallmark` and returns stdout, asserting the exit code.
fn run(token: &TestToken, args: &[&str], code: i32) -> String {
    let output = token.hallmark(args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "hallmark {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sign_request(digest: Vec<u8>) -> SignRequest {
    SignRequest {
        digest,
        hash_algorithm: 0,
        key_name: String::new(),
        request_id: String::new(),
        signature_encoding: 0,
    }
}

/// Signs one digest and returns the key ID that signed it.
async fn signing_key_id(client: &mut SignerServiceClient<Channel>) -> String {
    client
        .sign(sign_request(vec![5; 32]))
        .await
        .expect("Sign succeeds")
        .into_inner()
        .key
        .expect("key")
        .key_id
}

#[test]
fn cli_rotates_revokes_and_reports() {
    let token = TestToken::new(2048, "digest");
    assert_eq!(states(&token), vec![(1, "active".into())]);
    assert_eq!(run(&token, &["keys", "rotate"], 0), "nothing is due\n");

    let created = run(&token, &["keys", "create"], 0);
    assert!(
        created.starts_with("created default version 2 ("),
        "{created}"
    );
    assert!(created.ends_with(") as next\n"), "{created}");
    let listed = list(&token);
    assert_eq!(listed[0]["next_key_id"], listed[1]["key_id"]);
    assert_eq!(listed[1]["previous_key_id"], listed[0]["key_id"]);
    // The NEXT version is scheduled to take over when version 1 rotates.
    assert_eq!(listed[1]["activates_at"], listed[0]["rotates_at"]);

    let rotated = run(&token, &["keys", "rotate", "--force"], 0);
    let v1 = key_id_of(&token, 1);
    let v2 = key_id_of(&token, 2);
    assert_eq!(
        rotated,
        format!("activated default version 2 ({v2})\nretired default version 1 ({v1})\n")
    );
    assert_eq!(
        states(&token),
        vec![(1, "retired".into()), (2, "active".into())]
    );

    let revoked = run(&token, &["keys", "revoke", &v2], 0);
    let v3 = key_id_of(&token, 3);
    assert_eq!(
        revoked,
        format!("created default version 3 ({v3}) as active\nrevoked default version 2 ({v2})\n")
    );
    assert_eq!(
        states(&token),
        vec![
            (1, "retired".into()),
            (2, "revoked".into()),
            (3, "active".into())
        ]
    );
    assert_eq!(
        run(&token, &["keys", "revoke", &v2], 0),
        "already revoked\n"
    );

    let output = token.hallmark(&["keys", "revoke", "no-such-key-id"]);
    assert_eq!(output.status.code(), Some(65));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("no key version with key ID no-such-key-id in the token"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        run(&token, &["keys", "destroy-expired"], 0),
        "nothing has expired\n"
    );
}

/// Seconds since the epoch of an RFC 3339 timestamp printed by `keys list`.
fn epoch_seconds(text: &str) -> u64 {
    let timestamp: prost_types::Timestamp = text.parse().expect("RFC 3339");
    u64::try_from(timestamp.seconds).expect("after 1970")
}

fn sleep_until_epoch(seconds: u64) {
    let target = UNIX_EPOCH + Duration::from_secs(seconds);
    if let Ok(wait) = target.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
}

#[test]
fn schedule_publishes_promotes_and_destroys() {
    let token = TestToken::new(2048, "digest");
    token.append_config("rotation_period = \"8s\"\nprepublish = \"4s\"\nverify_grace = \"2s\"\n");
    set_refresh_interval(&token, "1s");
    let start = epoch_seconds(list(&token)[0]["activates_at"].as_str().expect("time"));

    assert_eq!(run(&token, &["keys", "rotate"], 0), "nothing is due\n");

    // Four seconds before version 1 is due, version 2 is published as NEXT.
    sleep_until_epoch(start + 5);
    let published = run(&token, &["keys", "rotate"], 0);
    assert!(
        published.starts_with("created default version 2 ("),
        "{published}"
    );
    assert!(published.ends_with(") as next\n"), "{published}");
    let next = &list(&token)[1];
    assert_eq!(
        epoch_seconds(next["activates_at"].as_str().expect("time")),
        start + 8
    );

    sleep_until_epoch(start + 9);
    let promoted = run(&token, &["keys", "rotate"], 0);
    assert!(
        promoted.starts_with("activated default version 2"),
        "{promoted}"
    );
    assert!(promoted.contains("retired default version 1"), "{promoted}");
    let retired = &list(&token)[0];
    let verify_until = epoch_seconds(retired["verify_until"].as_str().expect("time"));
    assert_eq!(
        verify_until,
        epoch_seconds(retired["rotates_at"].as_str().expect("time")) + 2
    );

    sleep_until_epoch(verify_until + 1);
    let destroyed = run(&token, &["keys", "destroy-expired"], 0);
    assert!(
        destroyed.starts_with("destroyed default version 1"),
        "{destroyed}"
    );
    assert_eq!(states(&token), vec![(2, "active".into())]);
}

/// The fields that must survive a restart, per key ID.
fn published_state(keys: &[pb::KeyVersion]) -> BTreeMap<String, String> {
    keys.iter()
        .map(|k| {
            (
                k.key_id.clone(),
                format!(
                    "{} v{} state {} created {:?} activates {:?} rotates {:?} until {:?}",
                    k.key_name,
                    k.version,
                    k.state,
                    k.created_at,
                    k.activates_at,
                    k.rotates_at,
                    k.verify_until
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn restart_with_empty_directory_recovers_state() {
    let token = TestToken::new(2048, "digest");
    run(&token, &["keys", "rotate", "--force"], 0);
    let v2 = key_id_of(&token, 2);
    run(&token, &["keys", "revoke", &v2], 0);
    run(&token, &["keys", "create"], 0);

    let before = {
        let server = TestServer::start(&token);
        server.wait_serving(Duration::from_secs(30)).await;
        let mut client = server.client().await;
        client
            .list_keys(pb::ListKeysRequest {})
            .await
            .expect("ListKeys")
            .into_inner()
            .keys
    };
    assert_eq!(
        before.len(),
        4,
        "retired, revoked, active and next versions"
    );
    let states: Vec<i32> = before.iter().map(|k| k.state).collect();
    assert_eq!(
        states,
        vec![
            KeyState::Retired as i32,
            KeyState::Revoked as i32,
            KeyState::Active as i32,
            KeyState::Next as i32
        ]
    );

    let empty = tempfile::tempdir().expect("temporary directory");
    let server = TestServer::start_in(&token, "127.0.0.1:0", &[], empty.path());
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;
    let after = client
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys")
        .into_inner()
        .keys;
    assert_eq!(published_state(&after), published_state(&before));
    assert_eq!(
        std::fs::read_dir(empty.path()).expect("readable").count(),
        0
    );
}

#[tokio::test]
async fn jwks_separates_revoked_keys() {
    let token = TestToken::new(2048, "digest");
    run(&token, &["keys", "rotate", "--force"], 0);
    let v1 = key_id_of(&token, 1);
    run(&token, &["keys", "revoke", &v1], 0);
    let v2 = key_id_of(&token, 2);

    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let jwks = server.jwks().await;
    let keys = jwks["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], v2.as_str());
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "PS256");
    assert_eq!(keys[0]["use"], "sig");
    assert_eq!(keys[0]["hallmark_state"], "active");
    assert_eq!(keys[0]["hallmark_pss_salt_length"], 32);
    let revoked = jwks["hallmark_revoked"].as_array().expect("revoked array");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["kid"], v1.as_str());
    assert!(
        revoked[0].get("n").is_none(),
        "no key material for revoked keys"
    );
}

#[tokio::test]
async fn max_salt_keys_have_no_jose_alg() {
    let token = TestToken::new(2048, "max");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let jwks = server.jwks().await;
    assert!(jwks["keys"][0].get("alg").is_none(), "{jwks}");
    assert_eq!(jwks["keys"][0]["hallmark_pss_salt_length"], 222);
}

/// Appends a refresh interval to the token's `[signing]` table.
fn set_refresh_interval(token: &TestToken, interval: &str) {
    let path = token.config();
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replace(
        "[signing]\n",
        &format!("[signing]\nrefresh_interval = \"{interval}\"\n"),
    );
    std::fs::write(path, text).expect("config written");
}

/// Signs until `client`'s instance signs with `key_id`.
///
/// The instances re-read the token every 300 ms. The bound is ten times
/// that, because SoftHSM can show another process's new objects late on
/// a loaded machine.
async fn wait_for_signing_key(client: &mut SignerServiceClient<Channel>, key_id: &str) {
    let started = Instant::now();
    loop {
        let signed = client.sign(sign_request(vec![5; 32])).await;
        if let Ok(response) = &signed
            && response.get_ref().key.as_ref().map(|k| k.key_id.as_str()) == Some(key_id)
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "instance still signs with another version after 3 s: {signed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn instances_follow_rotation_and_revocation() {
    let token = TestToken::new(2048, "digest");
    set_refresh_interval(&token, "300ms");
    // Instances share the token but not an audit log: each log has one
    // writer.
    let servers: Vec<TestServer> = (0..3)
        .map(|i| {
            let audit = token.dir.path().join(format!("audit-{i}"));
            let audit = audit.to_str().unwrap_or_default().to_owned();
            TestServer::start_with(&token, "127.0.0.1:0", &[("HALLMARK_AUDIT_DIR", &audit)])
        })
        .collect();
    let mut clients = Vec::new();
    for server in &servers {
        server.wait_serving(Duration::from_secs(30)).await;
        clients.push(server.client().await);
    }
    let v1 = key_id_of(&token, 1);
    for client in &mut clients {
        assert_eq!(signing_key_id(client).await, v1);
    }

    run(&token, &["keys", "rotate", "--force"], 0);
    let v2 = key_id_of(&token, 2);
    for client in &mut clients {
        wait_for_signing_key(client, &v2).await;
    }

    run(&token, &["keys", "revoke", &v2], 0);
    let v3 = key_id_of(&token, 3);
    for (client, server) in clients.iter_mut().zip(&servers) {
        wait_for_signing_key(client, &v3).await;
        let jwks = server.jwks().await;
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert_eq!(kids, vec![v1.as_str(), v3.as_str()]);
        assert_eq!(jwks["hallmark_revoked"][0]["kid"], v2.as_str());
    }
}

#[tokio::test]
async fn forced_rotations_under_load_never_fail() {
    const ROTATIONS: usize = 100;
    const CLIENTS: usize = 4;

    let token = TestToken::new(2048, "digest");
    set_refresh_interval(&token, "200ms");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let channel = server.channel().await;

    let stop = Arc::new(AtomicBool::new(false));
    let signed = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for worker in 0..CLIENTS {
        let mut client = SignerServiceClient::new(channel.clone());
        let stop = Arc::clone(&stop);
        let signed = Arc::clone(&signed);
        let failures = Arc::clone(&failures);
        load.push(tokio::spawn(async move {
            let mut key_ids = std::collections::BTreeSet::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let digest = Sha256::digest(format!("{worker}-{n}")).to_vec();
                let response = match client.sign(sign_request(digest.clone())).await {
                    Ok(response) => response.into_inner(),
                    Err(status) => {
                        let at = SystemTime::now();
                        failures.lock().expect("lock").push(format!(
                            "request {worker}-{n} at {at:?}: {:?} {}",
                            status.code(),
                            status.message()
                        ));
                        continue;
                    }
                };
                // The key set published when the response arrived must
                // verify the signature.
                let keys = client
                    .list_keys(pb::ListKeysRequest {})
                    .await
                    .expect("ListKeys succeeds")
                    .into_inner()
                    .keys;
                let key_id = response.key.expect("key").key_id;
                let Some(published) = keys.iter().find(|k| k.key_id == key_id) else {
                    let listed: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
                    failures.lock().expect("lock").push(format!(
                        "{key_id} signed {worker}-{n} but ListKeys then listed {listed:?}"
                    ));
                    continue;
                };
                public_key(&published.public_key_der)
                    .verify(
                        Pss::new_with_salt::<Sha256>(32),
                        &digest,
                        &response.signature,
                    )
                    .unwrap_or_else(|e| panic!("request {worker}-{n} does not verify: {e}"));
                key_ids.insert(key_id);
                signed.fetch_add(1, Ordering::Relaxed);
            }
            key_ids
        }));
    }

    let config = token.config();
    let rotations = tokio::task::spawn_blocking(move || {
        for i in 0..ROTATIONS {
            let output = Command::new(HALLMARK)
                .args(["keys", "rotate", "--force", "--config"])
                .arg(&config)
                .env("RUST_LOG", "warn")
                .output()
                .expect("hallmark runs");
            assert!(
                output.status.success(),
                "rotation {i}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    });
    rotations.await.expect("rotations complete");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut used = std::collections::BTreeSet::new();
    for task in load {
        used.extend(task.await.expect("load task completes"));
    }
    let failures = failures.lock().expect("lock").clone();
    let warnings: Vec<String> = server
        .log_text()
        .lines()
        .filter(|line| {
            line.contains("WARN") || line.contains("ERROR") || line.contains("now active")
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "server log, warnings and activations:\n{}",
        warnings.join("\n")
    );
    let total = signed.load(Ordering::Relaxed);
    eprintln!(
        "{total} signatures across {ROTATIONS} rotations, {} key versions used",
        used.len()
    );
    assert!(
        used.len() > ROTATIONS / 4,
        "signing followed the rotations: {} versions",
        used.len()
    );
    assert_eq!(list(&token).len(), ROTATIONS + 1);
    let body = server.metrics().await;
    assert_eq!(
        common::sample(
            &body,
            r#"hallmark_sign_requests_total{code="OK",key_name="default"}"#
        ),
        Some(total as f64)
    );
}

/// Runs `hallmark keys ARGS` until it reaches the lifecycle step `step`,
/// then kills it with SIGKILL.
fn kill_at_step(token: &TestToken, args: &[&str], step: &str) {
    let mut child = Command::new(HALLMARK)
        .args(args)
        .arg("--config")
        .arg(token.config())
        .env("HALLMARK_TEST_PAUSE_AT", step)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hallmark starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let marker = format!("paused at lifecycle step {step}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reached = false;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains(&marker) {
            reached = true;
            break;
        }
        assert!(Instant::now() < deadline, "step {step} not reached");
    }
    assert!(reached, "hallmark {args:?} ended before step {step}");
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("child reaped");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(9)
    );
}

#[tokio::test]
async fn crash_at_each_rotation_step_recovers() {
    /// A lifecycle step, whether a NEXT version exists before the forced
    /// rotation, and the states that the interrupted run leaves.
    type Case = (&'static str, bool, Vec<(u64, &'static str)>);
    let cases: [Case; 4] = [
        ("generated", false, vec![(1, "active")]),
        ("labelled", false, vec![(1, "active"), (2, "active")]),
        ("activated", true, vec![(1, "active"), (2, "active")]),
        ("retired", true, vec![(1, "retired"), (2, "active")]),
    ];
    for (step, with_next, interrupted) in cases {
        let token = TestToken::new(2048, "digest");
        if with_next {
            run(&token, &["keys", "create"], 0);
        }
        kill_at_step(&token, &["keys", "rotate", "--force"], step);
        let left: Vec<(u64, String)> = interrupted
            .iter()
            .map(|(version, state)| (*version, state.to_string()))
            .collect();
        assert_eq!(states(&token), left, "state after a crash at {step}");

        // A plain instance still serves: the newest ACTIVE version signs and
        // an interrupted generation is ignored.
        let server = TestServer::start(&token);
        server.wait_serving(Duration::from_secs(30)).await;
        let mut client = server.client().await;
        let newest_active = left
            .iter()
            .filter(|(_, state)| state == "active")
            .map(|(version, _)| *version)
            .max()
            .expect("an active version");
        assert_eq!(
            signing_key_id(&mut client).await,
            key_id_of(&token, newest_active),
            "after a crash at {step}"
        );
        drop(client);
        drop(server);

        // The rotator completes the run at start: one ACTIVE version, no
        // pending objects.
        token.append_config("\n[rotation]\nenabled = true\n");
        let server = TestServer::start(&token);
        server.wait_serving(Duration::from_secs(30)).await;
        let actives: Vec<u64> = states(&token)
            .into_iter()
            .filter(|(_, state)| state == "active")
            .map(|(version, _)| version)
            .collect();
        assert_eq!(
            actives.len(),
            1,
            "after recovery from {step}: {:?}",
            states(&token)
        );
        let output = token.hallmark(&["keys", "list"]);
        let warnings = String::from_utf8_lossy(&output.stderr);
        assert!(
            !warnings.contains("warning:"),
            "after recovery from {step}: {warnings}"
        );
        let mut client = server.client().await;
        assert_eq!(
            signing_key_id(&mut client).await,
            key_id_of(&token, actives[0]),
            "after recovery from {step}"
        );
    }
}

#[tokio::test]
async fn service_rotates_on_schedule() {
    let token = TestToken::new(2048, "digest");
    token.append_config("rotation_period = \"4s\"\nprepublish = \"2s\"\n");
    token.append_config("\n[rotation]\nenabled = true\ncheck_interval = \"1s\"\n");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let mut client = server.client().await;
    let v1 = key_id_of(&token, 1);
    assert_eq!(signing_key_id(&mut client).await, v1);

    // Version 2 is published two seconds before it takes over, and then signs.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut published_ahead = false;
    loop {
        let keys = client
            .list_keys(pb::ListKeysRequest {})
            .await
            .expect("ListKeys")
            .into_inner()
            .keys;
        if keys.iter().any(|k| k.state == KeyState::Next as i32) {
            published_ahead = true;
        }
        if signing_key_id(&mut client).await != v1 {
            break;
        }
        assert!(Instant::now() < deadline, "no rotation after 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        published_ahead,
        "version 2 was published as NEXT before it signed"
    );
    assert_eq!(signing_key_id(&mut client).await, key_id_of(&token, 2));
    let body = server.metrics().await;
    assert_eq!(
        common::sample(&body, r#"hallmark_key_rotations_total{key_name="default"}"#),
        Some(1.0)
    );
    assert_eq!(
        common::sample(
            &body,
            r#"hallmark_key_versions{key_name="default",state="retired"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn versions_keep_their_salt() {
    let token = TestToken::new(2048, "digest");
    run(&token, &["keys", "rotate", "--force"], 0);
    let path = token.config();
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, text.replace("salt = \"digest\"", "salt = \"max\"")).expect("config");
    run(&token, &["keys", "rotate", "--force"], 0);

    let salts: Vec<(u64, u64)> = list(&token)
        .iter()
        .map(|v| {
            let version = v["version"].as_u64().expect("version");
            (version, v["pss_salt_length"].as_u64().expect("salt"))
        })
        .collect();
    assert_eq!(salts, vec![(1, 32), (2, 32), (3, 222)]);
}

#[test]
fn second_next_version_is_not_created() {
    let token = TestToken::new(2048, "digest");
    let first = run(&token, &["keys", "create"], 0);
    assert!(first.ends_with(") as next\n"), "{first}");
    assert_eq!(
        run(&token, &["keys", "create"], 0),
        "nothing created: the key already has a NEXT version\n"
    );
    assert_eq!(
        states(&token),
        vec![(1, "active".into()), (2, "next".into())]
    );
}

#[tokio::test]
async fn jwks_reports_revocation_time() {
    let token = TestToken::new(2048, "digest");
    run(&token, &["keys", "rotate", "--force"], 0);
    let v1 = key_id_of(&token, 1);
    // Retirement and revocation fall in different seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run(&token, &["keys", "revoke", &v1], 0);

    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    let jwks = server.jwks().await;
    let revoked = &jwks["hallmark_revoked"][0];
    assert_eq!(revoked["kid"], v1.as_str());
    let retired_at = list(&token)[0]["rotates_at"]
        .as_str()
        .expect("time")
        .to_owned();
    let revoked_at = revoked["hallmark_revoked_at"].as_str().expect("time");
    assert!(
        epoch_seconds(revoked_at) > epoch_seconds(&retired_at),
        "revocation time {revoked_at} is after retirement {retired_at}"
    );
}

#[test]
fn concurrent_rotations_leave_one_copy() {
    let token = TestToken::new(2048, "digest");
    for round in 0..4 {
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(HALLMARK)
                    .args(["keys", "rotate", "--force", "--config"])
                    .arg(token.config())
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("hallmark starts")
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().expect("hallmark ends");
            let stderr = String::from_utf8_lossy(&output.stderr);
            match output.status.code() {
                Some(0) => {}
                Some(75) => assert!(
                    stderr.contains("at the same time; run the command again"),
                    "{stderr}"
                ),
                // Both processes may also collide on the token files while
                // reading, which SoftHSM reports as an unavailable token.
                Some(69) => {}
                other => panic!("round {round}: exit {other:?}: {stderr}"),
            }
        }
        let listed = states(&token);
        let actives = listed.iter().filter(|(_, s)| s == "active").count();
        assert!(actives >= 1, "round {round}: {listed:?}");
    }

    // Whatever the interleaving, one scheduled run leaves one signing copy.
    run(&token, &["keys", "rotate"], 0);
    let listed = states(&token);
    let signing: Vec<u64> = listed
        .iter()
        .filter(|(_, s)| s == "active" || s == "next")
        .map(|(v, _)| *v)
        .collect();
    assert_eq!(signing.len(), 1, "{listed:?}");
}
