//! Tests of the audit log as a whole: the writer, rotation, recovery on
//! open, failures and checkpoints. The files it writes are checked with
//! [`super::check::check_files`].

use std::path::Path;
use std::time::{Duration, Instant};

use super::check::{ChainStart, CheckReport, check_files};
use super::record::{Body, ChainHash};
use super::test_support::{TestKey, audit_files, config, event, read_lines, read_records};
use super::{AuditConfig, AuditError, AuditLog, SignError};

fn check(directory: &Path) -> CheckReport {
    check_files(&audit_files(directory), None, ChainStart::Genesis).expect("the chain is intact")
}

#[test]
fn audit_log_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<AuditLog>();
}

#[tokio::test]
async fn appends_build_a_chain() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = AuditLog::open(config(dir.path())).expect("opens");
    for n in 1..=3 {
        assert_eq!(log.append(event(n)).await.expect("appends"), n as u64);
    }
    assert_eq!(log.stats().records_written, 3);
    assert_eq!(log.stats().last_seq, 3);
    log.close().await.expect("closes");

    let lines = read_lines(dir.path());
    let records = read_records(dir.path());
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].prev, ChainHash::GENESIS);
    for i in 1..3 {
        assert_eq!(records[i].seq, i as u64 + 1);
        assert_eq!(records[i].prev, ChainHash::of_line(lines[i - 1].as_bytes()));
    }
    assert_eq!(records[2].body, Body::Sign(event(3)));
    assert_eq!(check(dir.path()).records, 3);
}

#[tokio::test]
async fn a_group_of_appends_is_one_sync() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = AuditLog::open(config(dir.path())).expect("opens");
    assert_eq!(log.append(event(1)).await.expect("appends"), 1);
    let syncs = log.stats().syncs;
    let seqs = log
        .append_all((2..=5).map(event).collect())
        .await
        .expect("appends");
    assert_eq!(seqs, vec![2, 3, 4, 5]);
    assert_eq!(log.stats().syncs, syncs + 1);
    // A group that fails is written not at all, and the next continues the
    // chain from the last acknowledged record.
    log.inject_write_failures(1);
    assert!(log.append_all(vec![event(6), event(7)]).await.is_err());
    assert_eq!(
        log.append_all(vec![event(8)]).await.expect("appends"),
        vec![6]
    );
    log.close().await.expect("closes");

    let records = read_records(dir.path());
    let bodies: Vec<Body> = records.iter().map(|r| r.body.clone()).collect();
    let expected: Vec<Body> = [1, 2, 3, 4, 5, 8]
        .into_iter()
        .map(|n| Body::Sign(event(n)))
        .collect();
    assert_eq!(bodies, expected);
    assert_eq!(check(dir.path()).records, 6);
}

#[tokio::test]
async fn files_are_private_to_the_user_and_group() {
    use std::os::unix::fs::PermissionsExt;

    let parent = tempfile::tempdir().expect("temporary directory");
    let directory = parent.path().join("audit");
    let log = AuditLog::open(config(&directory)).expect("opens");
    log.append(event(1)).await.expect("appends");
    log.close().await.expect("closes");

    // The process's umask still applies to what the log creates.
    let status = std::fs::read_to_string("/proc/self/status").expect("reads");
    let umask = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))
        .and_then(|value| u32::from_str_radix(value.trim(), 8).ok())
        .expect("umask");
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&directory), 0o750 & !umask);
    let mut created = Vec::new();
    for entry in std::fs::read_dir(&directory).expect("lists") {
        let path = entry.expect("entry").path();
        created.push((path.file_name().expect("name").to_owned(), mode(&path)));
    }
    created.sort();
    assert_eq!(
        created,
        [
            ("audit-000001.jsonl".into(), 0o640 & !umask),
            ("audit.lock".into(), 0o640 & !umask)
        ]
    );
}

#[tokio::test]
async fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = AuditLog::open(config(dir.path())).expect("opens");
    log.append(event(1)).await.expect("appends");
    log.append(event(2)).await.expect("appends");
    log.close().await.expect("closes");

    let log = AuditLog::open(config(dir.path())).expect("reopens");
    assert_eq!(log.stats().last_seq, 2);
    assert_eq!(log.append(event(3)).await.expect("appends"), 3);
    log.close().await.expect("closes");
    assert_eq!(check(dir.path()).last_seq, Some(3));
}

#[tokio::test]
async fn rotation_continues_the_chain_across_files() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // Room for about two records per file.
    let settings = AuditConfig {
        max_file_bytes: 600,
        ..config(dir.path())
    };
    let log = AuditLog::open(settings.clone()).expect("opens");
    for n in 1..=7 {
        log.append(event(n)).await.expect("appends");
    }
    log.close().await.expect("closes");

    let files = audit_files(dir.path());
    assert!(files.len() >= 3, "{} files", files.len());
    let names: Vec<_> = files.iter().filter_map(|p| p.file_name()).collect();
    assert_eq!(names[0], "audit-000001.jsonl");
    assert_eq!(names[1], "audit-000002.jsonl");
    let report = check(dir.path());
    assert_eq!(report.files, files.len());
    assert_eq!(report.records, 7);

    // Reopening appends to the newest file, which then rotates too.
    let log = AuditLog::open(settings).expect("reopens");
    assert_eq!(log.append(event(8)).await.expect("appends"), 8);
    log.close().await.expect("closes");
    assert_eq!(check(dir.path()).records, 8);
}

#[tokio::test]
async fn torn_tail_is_saved_and_cut_on_open() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = AuditLog::open(config(dir.path())).expect("opens");
    log.append(event(1)).await.expect("appends");
    log.append(event(2)).await.expect("appends");
    log.close().await.expect("closes");
    let path = dir.path().join("audit-000001.jsonl");
    let intact = std::fs::read(&path).expect("reads");
    let torn = b"{\"seq\":3,\"time\":\"2026-";
    std::fs::write(&path, [intact.as_slice(), torn].concat()).expect("writes");

    let log = AuditLog::open(config(dir.path())).expect("reopens past the torn line");
    assert_eq!(std::fs::read(&path).expect("reads"), intact);
    let side_files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("lists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains(".jsonl.torn-"))
        .collect();
    assert_eq!(side_files.len(), 1);
    let saved = std::fs::read(&side_files[0]).expect("reads");
    assert_eq!(saved, [torn.as_slice(), b"\n"].concat());

    assert_eq!(log.append(event(3)).await.expect("appends"), 3);
    log.close().await.expect("closes");
    assert_eq!(check(dir.path()).records, 3);
}

#[tokio::test]
async fn invalid_middle_line_stops_open() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = AuditLog::open(config(dir.path())).expect("opens");
    for n in 1..=3 {
        log.append(event(n)).await.expect("appends");
    }
    log.close().await.expect("closes");
    let path = dir.path().join("audit-000001.jsonl");
    let lines = read_lines(dir.path());

    let garbled = format!("{}\nnot json\n{}\n", lines[0], lines[2]);
    std::fs::write(&path, &garbled).expect("writes");
    match AuditLog::open(config(dir.path())) {
        Err(AuditError::Corrupt {
            path: named, line, ..
        }) => {
            assert_eq!(named, path);
            assert_eq!(line, 2);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(&path).expect("reads"),
        garbled,
        "a refused open changes nothing"
    );

    // A valid line that breaks the chain is refused the same way.
    let skipped = format!("{}\n{}\n", lines[0], lines[2]);
    std::fs::write(&path, skipped).expect("writes");
    let error = AuditLog::open(config(dir.path())).expect_err("refuses the gap");
    assert!(
        matches!(error, AuditError::Corrupt { line: 2, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("audit-000001.jsonl line 2"),
        "{error}"
    );
}

#[tokio::test]
async fn empty_newest_file_resumes_from_the_one_before() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = AuditLog::open(config(dir.path())).expect("opens");
    log.append(event(1)).await.expect("appends");
    log.close().await.expect("closes");
    // A crash right after a rotation leaves the next file empty.
    std::fs::write(dir.path().join("audit-000002.jsonl"), b"").expect("writes");

    let log = AuditLog::open(config(dir.path())).expect("reopens");
    assert_eq!(log.append(event(2)).await.expect("appends"), 2);
    log.close().await.expect("closes");
    let second = std::fs::read_to_string(dir.path().join("audit-000002.jsonl")).expect("reads");
    assert!(second.contains("\"seq\":2,"), "{second}");
    assert_eq!(check(dir.path()).records, 2);
}

#[tokio::test]
async fn second_writer_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let _first = AuditLog::open(config(dir.path())).expect("opens");
    let second = AuditLog::open(config(dir.path()));
    assert!(
        matches!(second, Err(AuditError::Locked { .. })),
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_contiguous_seqs() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = std::sync::Arc::new(AuditLog::open(config(dir.path())).expect("opens"));
    let tasks: Vec<_> = (0..400)
        .map(|n| {
            let log = std::sync::Arc::clone(&log);
            tokio::spawn(async move { log.append(event(n)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("the task runs").expect("appends"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
    let stats = log.stats();
    assert_eq!(stats.records_written, 400);
    assert!(stats.syncs <= 400);

    let log = std::sync::Arc::into_inner(log).expect("every task is done");
    log.close().await.expect("closes");
    let mut request_ids: Vec<_> = read_records(dir.path())
        .into_iter()
        .filter_map(|record| match record.body {
            Body::Sign(event) => Some(event.request_id),
            Body::Checkpoint(_) => None,
        })
        .collect();
    request_ids.sort_unstable();
    let mut expected: Vec<_> = (0..400).map(|n| format!("req-{n}")).collect();
    expected.sort_unstable();
    assert_eq!(request_ids, expected, "every record is present once");
    assert_eq!(check(dir.path()).records, 400);
}

#[tokio::test]
async fn waiting_appends_share_one_sync() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = std::sync::Arc::new(AuditLog::open(config(dir.path())).expect("opens"));
    let release = log.stall_writer();
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let log = std::sync::Arc::clone(&log);
            tokio::spawn(async move { log.append(event(n)).await })
        })
        .collect();
    // Let every task queue its record before the writer resumes.
    // The stall command counts as one.
    while log.submitted() < 51 {
        tokio::task::yield_now().await;
    }
    drop(release);
    for task in tasks {
        task.await.expect("the task runs").expect("appends");
    }
    let stats = log.stats();
    assert_eq!(stats.records_written, 50);
    assert_eq!(stats.syncs, 1, "one batch, one sync");
}

#[tokio::test]
async fn stalled_writer_times_out_appends() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let timeout = Duration::from_millis(300);
    let settings = AuditConfig {
        append_timeout: timeout,
        checkpoint_sign_timeout: Duration::from_millis(100),
        ..config(dir.path())
    };
    let log = AuditLog::open(settings).expect("opens");
    let release = log.stall_writer();

    let started = Instant::now();
    let result = log.append(event(1)).await;
    let waited = started.elapsed();
    assert!(
        matches!(result, Err(AuditError::TimedOut { .. })),
        "{result:?}"
    );
    assert!(waited >= timeout, "returned after {waited:?}");
    assert!(waited < timeout * 3, "returned after {waited:?}");
    assert!(
        !log.is_healthy(),
        "a timed-out append marks the log unhealthy"
    );

    // Once the writer resumes, the queued record is written after all.
    drop(release);
    assert_eq!(log.append(event(2)).await.expect("appends"), 2);
    assert!(log.is_healthy());
    log.close().await.expect("closes");
    assert_eq!(check(dir.path()).records, 2);
}

#[tokio::test]
async fn full_queue_fails_fast() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let settings = AuditConfig {
        queue_capacity: 2,
        ..config(dir.path())
    };
    let log = std::sync::Arc::new(AuditLog::open(settings).expect("opens"));
    let release = log.stall_writer();
    let queued: Vec<_> = (1..=2)
        .map(|n| {
            let log = std::sync::Arc::clone(&log);
            tokio::spawn(async move { log.append(event(n)).await })
        })
        .collect();
    while log.submitted() < 3 {
        tokio::task::yield_now().await;
    }

    let started = Instant::now();
    let result = log.append(event(3)).await;
    assert!(
        matches!(result, Err(AuditError::Overloaded { capacity: 2 })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(100));

    drop(release);
    for task in queued {
        task.await.expect("the task runs").expect("appends");
    }
}

#[tokio::test]
async fn failed_rotation_is_retried_when_the_fault_clears() {
    let parent = tempfile::tempdir().expect("temporary directory");
    let directory = parent.path().join("audit");
    let moved = parent.path().join("audit.moved");
    // Every batch after the first starts a new file, so each one needs to
    // create a file in the directory.
    let settings = AuditConfig {
        max_file_bytes: 1,
        ..config(&directory)
    };
    let log = AuditLog::open(settings).expect("opens");
    assert_eq!(log.append(event(1)).await.expect("appends"), 1);

    // A regular file where the directory was makes file creation fail
    // with ENOTDIR, even for root.
    std::fs::rename(&directory, &moved).expect("moves the directory");
    std::fs::write(&directory, b"").expect("puts a file in its place");
    let result = log.append(event(2)).await;
    let Err(AuditError::Io { path, .. }) = result else {
        panic!("expected an I/O error, got {result:?}");
    };
    assert_eq!(
        path,
        directory.join("audit-000002.jsonl"),
        "the file not created"
    );
    assert!(!log.is_healthy());
    assert_eq!(log.stats().write_failures, 1);

    std::fs::remove_file(&directory).expect("removes the file");
    std::fs::rename(&moved, &directory).expect("restores the directory");
    assert_eq!(log.append(event(3)).await.expect("appends"), 2);
    assert!(log.is_healthy());
    log.close().await.expect("closes");

    let records = read_records(&directory);
    let ids: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Sign(event) => Some(event.request_id.as_str()),
            Body::Checkpoint(_) => None,
        })
        .collect();
    assert_eq!(ids, ["req-1", "req-3"], "the failed record is absent");
    assert_eq!(check(&directory).files, 2);
}

#[tokio::test]
async fn failed_write_is_cut_before_the_next_batch() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = AuditLog::open(config(dir.path())).expect("opens");
    log.append(event(1)).await.expect("appends");

    log.inject_write_failures(1);
    let result = log.append(event(2)).await;
    assert!(matches!(result, Err(AuditError::Io { .. })), "{result:?}");
    assert!(!log.is_healthy());
    let path = dir.path().join("audit-000001.jsonl");
    let partial = std::fs::read_to_string(&path).expect("reads");
    assert!(
        partial.contains("{\"seq\":2,"),
        "half the failed line is on disk: {partial}"
    );

    assert_eq!(log.append(event(3)).await.expect("appends"), 2);
    assert!(log.is_healthy());
    log.close().await.expect("closes");
    let text = std::fs::read_to_string(&path).expect("reads");
    assert!(!text.contains("req-2"), "{text}");
    assert!(text.contains("req-3"), "{text}");
    assert_eq!(check(dir.path()).records, 2);
    let saved = std::fs::read_dir(dir.path())
        .expect("lists")
        .filter_map(|entry| entry.ok())
        .find(|entry| entry.file_name().to_string_lossy().contains(".torn-"))
        .expect("the cut bytes are saved");
    let saved = std::fs::read_to_string(saved.path()).expect("reads");
    assert!(saved.starts_with("{\"seq\":2,"), "{saved}");
}

#[tokio::test]
async fn checkpoint_is_signed_and_verifies() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let key = TestKey::new(7);
    let log = AuditLog::open(config(dir.path())).expect("opens");
    log.append(event(1)).await.expect("appends");
    log.append(event(2)).await.expect("appends");
    assert_eq!(log.checkpoint(key.signer()).await.expect("checkpoints"), 3);
    assert_eq!(log.stats().last_checkpoint_seq, 3);
    log.append(event(4)).await.expect("appends");
    log.close().await.expect("closes");

    let lines = read_lines(dir.path());
    let records = read_records(dir.path());
    let Body::Checkpoint(checkpoint) = &records[2].body else {
        panic!("record 3 is a checkpoint: {:?}", records[2]);
    };
    assert_eq!(checkpoint.records, 2);
    assert_eq!(checkpoint.head, ChainHash::of_line(lines[1].as_bytes()));
    assert!(lines[2].contains("\"signature_encoding\":\"der\""));

    let files = audit_files(dir.path());
    let report = check_files(&files, Some(&key.key_set()), ChainStart::Genesis).expect("verifies");
    assert_eq!(report.checkpoints_verified, 1);
    assert_eq!(report.last_verified_checkpoint, Some(3));
    let unchecked = check_files(&files, None, ChainStart::Genesis).expect("verifies");
    assert_eq!(unchecked.checkpoints_unchecked, 1);
    assert_eq!(unchecked.checkpoints_verified, 0);

    // The checkpoint survives a reopen as the newest one.
    let log = AuditLog::open(config(dir.path())).expect("reopens");
    assert_eq!(log.stats().last_checkpoint_seq, 3);
}

#[tokio::test]
async fn failed_signing_writes_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = AuditLog::open(config(dir.path())).expect("opens");
    let failing = |_| async { Err::<_, SignError>("the token is unavailable".into()) };
    let result = log.checkpoint(failing).await;
    assert!(
        matches!(result, Err(AuditError::CheckpointSigning(_))),
        "{result:?}"
    );

    let key = TestKey::new(7);
    let empty = |statement| {
        let mut signed = key.sign(&statement);
        signed.signature.clear();
        async move { Ok::<_, SignError>(signed) }
    };
    let result = log.checkpoint(empty).await;
    assert!(
        matches!(result, Err(AuditError::CheckpointSigning(_))),
        "{result:?}"
    );
    assert_eq!(log.append(event(1)).await.expect("appends"), 1);
}

#[tokio::test]
async fn slow_signing_times_out_and_frees_the_writer() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let settings = AuditConfig {
        append_timeout: Duration::from_secs(2),
        checkpoint_sign_timeout: Duration::from_millis(100),
        ..config(dir.path())
    };
    let log = AuditLog::open(settings).expect("opens");
    let key = TestKey::new(7);
    let slow = |statement| {
        let signed = key.sign(&statement);
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, SignError>(signed)
        }
    };
    let started = Instant::now();
    let result = log.checkpoint(slow).await;
    let Err(AuditError::CheckpointSigning(error)) = result else {
        panic!("expected a signing failure, got {result:?}");
    };
    assert!(error.to_string().contains("within 100ms"), "{error}");
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(log.append(event(1)).await.expect("appends"), 1);
}

#[tokio::test]
async fn periodic_checkpoints_skip_an_idle_log() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let settings = AuditConfig {
        checkpoint_interval: Duration::from_millis(50),
        ..config(dir.path())
    };
    let log = std::sync::Arc::new(AuditLog::open(settings).expect("opens"));
    let key = std::sync::Arc::new(TestKey::new(7));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let (log, key) = (std::sync::Arc::clone(&log), std::sync::Arc::clone(&key));
        tokio::spawn(async move {
            let sign = |statement| std::future::ready(Ok(key.sign(&statement)));
            log.run_checkpoints(sign, async {
                let _ = stopped.await;
            })
            .await
        })
    };

    log.append(event(1)).await.expect("appends");
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.stats().last_checkpoint_seq != 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(log.stats().last_checkpoint_seq, 2);
    // Several intervals pass without records, so no checkpoint is added.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(log.stats().last_seq, 2);

    // Stopping writes a last checkpoint over the records since.
    log.append(event(3)).await.expect("appends");
    let _ = stop.send(());
    let last = runner.await.expect("the runner stops");
    assert!(
        matches!(last, super::FinalCheckpoint::Written { seq: 4 }),
        "{last:?}"
    );
    assert_eq!(log.stats().last_checkpoint_seq, 4);
    let log = std::sync::Arc::into_inner(log).expect("the runner is done");
    log.close().await.expect("closes");
    let files = audit_files(dir.path());
    let report = check_files(&files, Some(&key.key_set()), ChainStart::Genesis).expect("verifies");
    assert_eq!(report.checkpoints_verified, 2);
}

/// Tools such as `sed -i`, editors and log rotators replace the file by a
/// rename, and `rm` unlinks it; the open handle would keep writing to the
/// old file, so records would vanish. Each case stops writing instead.
#[tokio::test]
async fn replaced_or_removed_files_stop_writing() {
    for replace in [true, false] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = AuditLog::open(config(dir.path())).expect("opens");
        log.append(event(1)).await.expect("appends");
        let path = audit_files(dir.path())[0].clone();
        if replace {
            let copy = dir.path().join("copy");
            std::fs::copy(&path, &copy).expect("copies");
            std::fs::rename(&copy, &path).expect("renames");
        } else {
            std::fs::remove_file(&path).expect("removes");
        }
        let error = log.append(event(2)).await.expect_err("the file changed");
        assert!(matches!(error, AuditError::Io { .. }), "{error}");
        assert!(!log.is_healthy());
        // Nothing after the first record was written anywhere.
        assert_eq!(log.stats().last_seq, 1);
        let _ = log.close().await;
    }
}

/// A checkpoint that cannot be signed at shutdown, as when the token is
/// gone, leaves the records in place, and the first checkpoint of the next
/// process that opens the log covers them.
#[tokio::test]
async fn failed_final_checkpoint_is_covered_after_reopening() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = AuditLog::open(config(dir.path())).expect("opens");
    log.append(event(1)).await.expect("appends");
    log.append(event(2)).await.expect("appends");
    let unavailable = |_statement| {
        std::future::ready(Err::<super::CheckpointSignature, SignError>(
            "the token is unavailable".into(),
        ))
    };

    let last = log.run_checkpoints(unavailable, async {}).await;

    let super::FinalCheckpoint::Failed {
        error,
        first_unsealed,
        last_seq,
    } = last
    else {
        panic!("the final checkpoint did not fail: {last:?}");
    };
    assert_eq!(
        error.to_string(),
        "signing the audit checkpoint failed: the token is unavailable"
    );
    assert_eq!(first_unsealed, 1);
    assert_eq!(last_seq, 2);
    log.close().await.expect("closes");

    let log = AuditLog::open(config(dir.path())).expect("opens again");
    assert_eq!(log.stats().last_seq, 2);
    assert_eq!(log.stats().last_checkpoint_seq, 0);
    let key = TestKey::new(7);
    let sign = |statement| std::future::ready(Ok(key.sign(&statement)));
    let last = log.run_checkpoints(sign, async {}).await;
    assert!(
        matches!(last, super::FinalCheckpoint::Written { seq: 3 }),
        "{last:?}"
    );
    log.close().await.expect("closes");
    let records = read_records(dir.path());
    let Body::Checkpoint(checkpoint) = &records[2].body else {
        panic!("record 3 is not a checkpoint: {:?}", records[2]);
    };
    assert_eq!(checkpoint.records, 2);
    let files = audit_files(dir.path());
    let report = check_files(&files, Some(&key.key_set()), ChainStart::Genesis).expect("verifies");
    assert_eq!(report.checkpoints_verified, 1);
}
