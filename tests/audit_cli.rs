//! `hallmark audit verify` and `hallmark audit find` on a log written
//! through the library, run as the real binary without a configuration
//! file, as an operator would run them on copied audit files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hallmark::audit::{
    AuditConfig, AuditLog, CheckpointSignature, CheckpointStatement, HashAlgorithm, SignError,
    SignEvent,
};
use hallmark::verify::algorithm::{Algorithm, SignatureEncoding, VerifyingKey};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::Value;

fn event(request_id: &str, key_id: &str) -> SignEvent {
    SignEvent {
        caller: "uid:1000".into(),
        key_name: "fraud-model".into(),
        key_id: key_id.into(),
        key_version: 1,
        digest: vec![7; 32],
        hash_algorithm: Some(HashAlgorithm::Sha256),
        request_id: request_id.into(),
        outcome: tonic::Code::Ok,
    }
}

fn sign(key: &p256::ecdsa::SigningKey, statement: &CheckpointStatement) -> CheckpointSignature {
    let digest = statement.digest_for(Algorithm::EcdsaP256Sha256);
    let signature: p256::ecdsa::Signature = key.sign_prehash(&digest).expect("a prehash signs");
    CheckpointSignature {
        key_id: VerifyingKey::P256(*key.verifying_key()).key_id(),
        key_version: 0,
        algorithm: Algorithm::EcdsaP256Sha256,
        signature: signature.to_bytes().to_vec(),
        encoding: SignatureEncoding::P1363,
    }
}

/// Writes two sign records, a checkpoint and a third sign record, in files
/// of about one record each, and returns the files.
async fn write_log(directory: &Path, key: &p256::ecdsa::SigningKey) -> Vec<PathBuf> {
    let config = AuditConfig {
        max_file_bytes: 1,
        ..AuditConfig::new(directory)
    };
    let log = AuditLog::open(config).expect("opens");
    log.append(event("req-1", "kid-a")).await.expect("appends");
    log.append(event("req-2", "kid-b")).await.expect("appends");
    let signer =
        |statement: CheckpointStatement| async move { Ok::<_, SignError>(sign(key, &statement)) };
    log.checkpoint(signer).await.expect("checkpoints");
    log.append(event("req-3", "kid-a")).await.expect("appends");
    log.close().await.expect("closes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
        .expect("lists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

/// Runs `hallmark audit ARGS...` in `directory`, which has no
/// configuration file.
fn hallmark_audit(directory: &Path, args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .current_dir(directory)
        .env_remove("HALLMARK_CONFIG")
        .arg("audit")
        .args(args)
        .args(files)
        .output()
        .expect("hallmark runs")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

#[tokio::test]
async fn verify_checks_chain_and_checkpoint() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let key = p256::ecdsa::SigningKey::from_slice(&[9; 32]).expect("valid scalar");
    let mut files = write_log(&dir.path().join("audit"), &key).await;
    assert_eq!(files.len(), 4, "one record per file");
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("encodes");
    std::fs::write(dir.path().join("keys.pem"), pem).expect("writes");

    // Files given out of order are sorted by their first seq.
    files.reverse();
    let output = hallmark_audit(dir.path(), &["verify", "--keys", "keys.pem"], &files);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let summary = stdout_json(&output);
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["records"], 4);
    assert_eq!(summary["checkpoints_verified"], 1);

    // Removing the file with record 2 breaks record 3, the checkpoint.
    files.retain(|path| !path.ends_with("audit-000002.jsonl"));
    let output = hallmark_audit(dir.path(), &["verify", "--keys", "keys.pem"], &files);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let summary = stdout_json(&output);
    assert_eq!(summary["status"], "broken");
    assert_eq!(summary["seq"], 3);

    let missing = [dir.path().join("absent.jsonl")];
    let output = hallmark_audit(dir.path(), &["verify"], &missing);
    assert_eq!(output.status.code(), Some(66), "{output:?}");
}

#[tokio::test]
async fn find_prints_records_of_one_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let key = p256::ecdsa::SigningKey::from_slice(&[9; 32]).expect("valid scalar");
    let files = write_log(dir.path(), &key).await;

    let output = hallmark_audit(dir.path(), &["find", "--key-id", "kid-a"], &files);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let request_ids: Vec<String> = text
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("a JSON line");
            record["request_id"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(request_ids, ["req-1", "req-3"]);
}

/// A reader that closes stdout early ends the output without an error:
/// `find` exits 0, and `verify` still reports a broken chain.
#[tokio::test]
async fn closed_stdout_keeps_exit_codes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let key = p256::ecdsa::SigningKey::from_slice(&[9; 32]).expect("valid scalar");
    let mut files = write_log(dir.path(), &key).await;
    let to_closed_pipe = |args: &[&str], files: &[PathBuf]| {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        Command::new(env!("CARGO_BIN_EXE_hallmark"))
            .current_dir(dir.path())
            .env_remove("HALLMARK_CONFIG")
            .arg("audit")
            .args(args)
            .args(files)
            .stdout(writer)
            .output()
            .expect("hallmark runs")
    };

    let found = to_closed_pipe(&["find", "--key-id", "kid-a"], &files);
    assert_eq!(String::from_utf8_lossy(&found.stderr), "");
    assert_eq!(found.status.code(), Some(0));

    files.retain(|path| !path.ends_with("audit-000002.jsonl"));
    let verified = to_closed_pipe(&["verify"], &files);
    assert!(
        String::from_utf8_lossy(&verified.stderr).starts_with("error: broken audit log: "),
        "{verified:?}"
    );
    assert_eq!(verified.status.code(), Some(1), "{verified:?}");
}
