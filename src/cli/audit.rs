//! `hallmark audit`: verify audit files and search their sign records.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::Target;
use super::input::EXIT_NO_INPUT;
use super::verify::fetch_list_keys;
use super::{EXIT_CONFIG, EXIT_IO, EXIT_UNAVAILABLE, output};
use crate::audit::check::{self, ChainStart, CheckError, CheckReport};
use crate::audit::{Body, Record};
use crate::verify::algorithm::Algorithm;
use crate::verify::{DEFAULT_FETCH_TIMEOUT, KeySet, KeySetError, PemParameters, parse_rfc3339};

/// Exit code when a record is broken, or when `find` skipped a line that
/// is not a record.
pub const EXIT_BROKEN: u8 = 1;

/// Audit log commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and the signed checkpoints of audit files, and
    /// print a summary as JSON. Exits 1 at the first broken record, 66 when
    /// a file cannot be read, and 64 or 69 when the key set is invalid or
    /// unavailable.
    Verify(VerifyArgs),
    /// Print the sign records that match every filter given, as JSON lines.
    /// It does not verify the chain, so run `hallmark audit verify` first.
    Find(FindArgs),
}

/// Options of `hallmark audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Source of the published keys, as for `hallmark verify --keys`.
    /// Without it, checkpoint signatures are reported as unchecked.
    #[arg(long, value_name = "SOURCE")]
    pub keys: Option<String>,
    /// Algorithm of RSA keys read from PEM, which does not state one.
    #[arg(long, value_parser = ["rsa-pss-sha256", "rsa-pkcs1-sha256"])]
    pub rsa_algorithm: Option<String>,
    /// PSS salt length in bytes of RSA-PSS keys read from PEM.
    #[arg(long, default_value_t = 32)]
    pub pss_salt_length: usize,
    /// Accept checkpoints signed by versions of this key name only: the
    /// server's audit.checkpoint_key. Any other key could have been used
    /// through Sign to forge a checkpoint.
    #[arg(long, value_name = "KEY_NAME", requires = "keys")]
    pub checkpoint_key: Option<String>,
    /// Accept files that begin after seq 1, for a log whose older files
    /// were archived. The first record's prev is then not checked.
    #[arg(long)]
    pub partial: bool,
    /// Audit files in any order. They are sorted by their first seq.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Options of `hallmark audit find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// Only records of this key ID. Key IDs are base64url, so about one in
    /// 64 starts with `-`; such a value is still read as the key ID.
    #[arg(long, value_name = "KEY_ID", allow_hyphen_values = true)]
    pub key_id: Option<String>,
    /// Only records written at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub since: Option<SystemTime>,
    /// Only records written before this RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub until: Option<SystemTime>,
    /// Audit files in any order. They are sorted by their first seq.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Runs an `audit` subcommand.
pub fn run(command: &AuditCommand) -> ExitCode {
    let mut stdout = output::Stdout::lock();
    let code = match command {
        AuditCommand::Verify(args) => verify(args, &mut stdout),
        AuditCommand::Find(args) => find(args, &mut stdout),
    };
    ExitCode::from(code)
}

fn verify(args: &VerifyArgs, out: &mut dyn Write) -> u8 {
    let keys = match &args.keys {
        Some(source) => match read_key_set(source, args) {
            Ok(keys) => Some(match &args.checkpoint_key {
                Some(name) => keys.only_key_name(name),
                None => keys,
            }),
            Err((error, code)) => {
                stderr_line!("error: {error}");
                return code;
            }
        },
        None => None,
    };
    let start = if args.partial {
        ChainStart::Anywhere
    } else {
        ChainStart::Genesis
    };
    let checked = check::sort_files(&args.files)
        .and_then(|files| check::check_files(&files, keys.as_ref(), start));
    let (summary, code) = match checked {
        Ok(report) => {
            print_notes(&report, keys.is_some());
            (report_json(&report), 0)
        }
        Err(CheckError::Broken(broken)) => {
            stderr_line!("error: broken audit log: {broken}");
            let summary = json!({
                "status": "broken",
                "file": broken.file.display().to_string(),
                "line": broken.line,
                "seq": broken.seq,
                "problem": broken.problem,
            });
            (summary, EXIT_BROKEN)
        }
        Err(error @ CheckError::Unreadable { .. }) => {
            stderr_line!("error: {error}");
            return EXIT_NO_INPUT;
        }
    };
    if writeln!(out, "{summary}").is_err() {
        return EXIT_IO;
    }
    code
}

/// Reads the key set of `--keys`, or returns the error and its exit code.
fn read_key_set(source: &str, args: &VerifyArgs) -> Result<KeySet, (String, u8)> {
    let list_keys_target = source
        .strip_prefix("grpc://")
        .or_else(|| source.starts_with("unix:").then_some(source));
    let read = match list_keys_target {
        Some(target) => {
            let target = Target::parse(target).map_err(|error| (error, EXIT_CONFIG))?;
            fetch_list_keys(&target, source)
        }
        None => {
            let pem = PemParameters {
                rsa_algorithm: args
                    .rsa_algorithm
                    .as_deref()
                    .and_then(|name| Algorithm::parse(name).ok()),
                pss_salt_length: Some(args.pss_salt_length),
            };
            KeySet::fetch(source, DEFAULT_FETCH_TIMEOUT, pem)
        }
    };
    read.map_err(|error| {
        let code = match error {
            KeySetError::Unavailable { .. } => EXIT_UNAVAILABLE,
            KeySetError::Invalid { .. } => EXIT_CONFIG,
        };
        (error.to_string(), code)
    })
}

fn report_json(report: &CheckReport) -> serde_json::Value {
    json!({
        "status": "ok",
        "files": report.files,
        "records": report.records,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "head": report.head.map(|head| head.to_string()),
        "checkpoints": report.checkpoints,
        "checkpoints_verified": report.checkpoints_verified,
        "checkpoints_unchecked": report.checkpoints_unchecked,
        "last_verified_checkpoint": report.last_verified_checkpoint,
    })
}

/// Prints to standard error what an intact log still leaves unproven.
fn print_notes(report: &CheckReport, keys_given: bool) {
    if let Some((path, line)) = &report.unterminated_tail {
        stderr_line!(
            "note: {} line {line} is unterminated, from a crash or a write in progress; it \
             was skipped",
            path.display()
        );
    }
    if !keys_given && report.checkpoints > 0 {
        stderr_line!(
            "note: {} checkpoint signatures were not checked; pass --keys to check them",
            report.checkpoints
        );
    }
    if report.records == 0 {
        stderr_line!(
            "note: the files hold no records; files that were emptied or replaced by empty \
             ones look the same"
        );
    }
    let last = report.last_seq.unwrap_or(0);
    match report.last_verified_checkpoint {
        _ if !keys_given => {}
        None if report.records > 0 => stderr_line!(
            "note: no checkpoint verified, so records removed from the end would not be detected"
        ),
        Some(covered) if last > covered => stderr_line!(
            "note: the {} records after seq {covered} are not covered by a verified \
             checkpoint, so removing them would not be detected",
            last - covered
        ),
        _ => {}
    }
}

fn find(args: &FindArgs, out: &mut dyn Write) -> u8 {
    let files = match check::sort_files(&args.files) {
        Ok(files) => files,
        Err(error) => {
            stderr_line!("error: {error}");
            return EXIT_NO_INPUT;
        }
    };
    let mut skipped = 0;
    let mut output_failed = false;
    for path in &files {
        let found = |record: Record, line: &[u8]| {
            if matches_filters(args, &record) {
                let written = out.write_all(line).and_then(|()| out.write_all(b"\n"));
                output_failed |= written.is_err();
            }
        };
        let invalid = |number: usize, problem: String| {
            skipped += 1;
            warn_skipped(path, number, &problem);
        };
        if let Err(error) = check::read_records(path, found, invalid) {
            stderr_line!("error: cannot read {}: {error}", path.display());
            return EXIT_NO_INPUT;
        }
    }
    if output_failed || out.flush().is_err() {
        return EXIT_IO;
    }
    if skipped > 0 {
        stderr_line!("{skipped} lines were not audit records and were skipped");
        return EXIT_BROKEN;
    }
    0
}

fn warn_skipped(path: &Path, number: usize, problem: &str) {
    stderr_line!(
        "warning: {} line {number} is not an audit record and was skipped: {problem}",
        path.display()
    );
}

fn matches_filters(args: &FindArgs, record: &Record) -> bool {
    let Body::Sign(event) = &record.body else {
        return false;
    };
    let key_matches = args.key_id.as_ref().is_none_or(|id| *id == event.key_id);
    let after_since = args.since.is_none_or(|since| record.time >= since);
    let before_until = args.until.is_none_or(|until| record.time < until);
    key_matches && after_since && before_until
}

#[cfg(test)]
mod tests {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    use serde_json::Value;

    use super::*;
    use crate::audit::test_support::{TestKey, audit_files, config, event};
    use crate::audit::{AuditLog, HashAlgorithm};

    /// Writes a log of three sign records, a checkpoint and one more sign
    /// record, the last by another key ID.
    async fn write_log(directory: &Path, key: &TestKey) -> Vec<PathBuf> {
        let log = AuditLog::open(config(directory)).expect("opens");
        for n in 1..=3 {
            log.append(event(n)).await.expect("appends");
        }
        log.checkpoint(key.signer()).await.expect("checkpoints");
        let mut other = event(5);
        other.key_id = "kid-2".into();
        other.hash_algorithm = Some(HashAlgorithm::Sha384);
        log.append(other).await.expect("appends");
        log.close().await.expect("closes");
        audit_files(directory)
    }

    fn verify_args(files: Vec<PathBuf>, keys: Option<String>) -> VerifyArgs {
        VerifyArgs {
            keys,
            rsa_algorithm: None,
            checkpoint_key: None,
            pss_salt_length: 32,
            partial: false,
            files,
        }
    }

    fn run_verify(args: &VerifyArgs) -> (u8, Value) {
        let mut out = Vec::new();
        let code = verify(args, &mut out);
        let summary = serde_json::from_slice(&out).unwrap_or(Value::Null);
        (code, summary)
    }

    fn pem_file(directory: &Path, key: &TestKey) -> String {
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key encodes");
        let path = directory.join("keys.pem");
        std::fs::write(&path, pem).expect("writes");
        path.display().to_string()
    }

    #[tokio::test]
    async fn verify_reports_an_intact_log() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let key = TestKey::new(3);
        let files = write_log(&dir.path().join("audit"), &key).await;

        let (code, summary) = run_verify(&verify_args(files.clone(), None));
        assert_eq!(code, 0);
        assert_eq!(summary["status"], "ok");
        assert_eq!(summary["records"], 5);
        assert_eq!(summary["checkpoints_unchecked"], 1);

        let keys = pem_file(dir.path(), &key);
        let (code, summary) = run_verify(&verify_args(files, Some(keys)));
        assert_eq!(code, 0);
        assert_eq!(summary["checkpoints_verified"], 1);
        assert_eq!(summary["last_verified_checkpoint"], 4);
    }

    #[tokio::test]
    async fn verify_reports_the_first_broken_record() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = write_log(dir.path(), &TestKey::new(3)).await;
        let text = std::fs::read_to_string(&files[0]).expect("reads");
        std::fs::write(&files[0], text.replace("req-2", "req-7")).expect("writes");

        let (code, summary) = run_verify(&verify_args(files, None));
        assert_eq!(code, EXIT_BROKEN);
        assert_eq!(summary["status"], "broken");
        assert_eq!(summary["line"], 3);
        assert_eq!(summary["seq"], 3);
    }

    #[tokio::test]
    async fn verify_with_the_wrong_key_is_broken() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = write_log(&dir.path().join("audit"), &TestKey::new(3)).await;
        let keys = pem_file(dir.path(), &TestKey::new(4));
        let (code, summary) = run_verify(&verify_args(files, Some(keys)));
        assert_eq!(code, EXIT_BROKEN);
        assert_eq!(summary["line"], 4);
    }

    #[test]
    fn verify_of_a_missing_file_is_no_input() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let missing = dir.path().join("audit-000001.jsonl");
        let (code, _) = run_verify(&verify_args(vec![missing], None));
        assert_eq!(code, EXIT_NO_INPUT);
    }

    #[test]
    fn verify_with_missing_keys_is_unavailable() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let keys = dir.path().join("absent.json").display().to_string();
        let (code, _) = run_verify(&verify_args(Vec::new(), Some(keys)));
        assert_eq!(code, EXIT_UNAVAILABLE);
    }

    fn run_find(files: &[PathBuf], key_id: Option<&str>, since: Option<SystemTime>) -> Vec<Value> {
        let args = FindArgs {
            key_id: key_id.map(str::to_owned),
            since,
            until: None,
            files: files.to_vec(),
        };
        let mut out = Vec::new();
        assert_eq!(find(&args, &mut out), 0);
        String::from_utf8(out)
            .expect("UTF-8 output")
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON lines"))
            .collect()
    }

    #[tokio::test]
    async fn find_prints_matching_sign_records() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = write_log(dir.path(), &TestKey::new(3)).await;

        let all = run_find(&files, None, None);
        let seqs: Vec<_> = all.iter().map(|record| record["seq"].clone()).collect();
        assert_eq!(seqs, [1, 2, 3, 5], "checkpoints are left out");

        let by_key = run_find(&files, Some("kid-2"), None);
        assert_eq!(by_key.len(), 1);
        assert_eq!(by_key[0]["hash_algorithm"], "sha384");

        let third = parse_rfc3339(all[2]["time"].as_str().expect("a time")).expect("RFC 3339");
        let since = run_find(&files, None, Some(third));
        assert_eq!(since.len(), 2);
        let args = FindArgs {
            key_id: None,
            since: None,
            until: Some(third),
            files: files.clone(),
        };
        let mut out = Vec::new();
        assert_eq!(find(&args, &mut out), 0);
        assert_eq!(String::from_utf8_lossy(&out).lines().count(), 2);
    }

    #[tokio::test]
    async fn find_skips_lines_that_are_not_records() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = write_log(dir.path(), &TestKey::new(3)).await;
        let text = std::fs::read_to_string(&files[0]).expect("reads");
        std::fs::write(&files[0], format!("garbage\n{text}")).expect("writes");
        let args = FindArgs {
            key_id: None,
            since: None,
            until: None,
            files,
        };
        let mut out = Vec::new();
        assert_eq!(find(&args, &mut out), EXIT_BROKEN);
        assert_eq!(String::from_utf8_lossy(&out).lines().count(), 4);
    }
}
