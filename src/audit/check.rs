//! Verification of audit files: the hash chain, the checkpoints, and the
//! checkpoint signatures.
//!
//! [`check_files`] reads the files in chain order and stops at the first
//! broken record. A record is broken when its line does not parse, or when
//! its `seq` does not follow the previous record's. It is also broken when
//! its `prev` is not the SHA-256 of the previous line, or when it is a
//! checkpoint whose `records`, `head` or signature is wrong. So editing,
//! deleting or reordering records breaks the record after the change.
//!
//! The chain alone does not stop someone who rewrites every record after
//! the change. Signed checkpoints do, because the rewriter cannot sign new
//! ones. Records after the last checkpoint have no such protection, and
//! removing records from the end of the log is not detectable by the
//! chain. [`CheckReport::last_verified_checkpoint`] is the last record
//! that a verified signature covers.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::files::{Line, LineReader};
use super::record::{Body, ChainHash, Checkpoint, Record};
use crate::verify::algorithm;
use crate::verify::{KeySet, Lookup};

/// The record at which the checked files must begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainStart {
    /// At the first record of the log: seq 1, with a `prev` of zeros. This
    /// also detects the removal of the first records.
    Genesis,
    /// At any record, for a log whose older files were archived or
    /// removed. The first record's `prev` is then taken on trust.
    Anywhere,
}

/// The first broken record found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} line {line}{}: {problem}", file.display(), seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
pub struct Broken {
    /// The file that contains it.
    pub file: PathBuf,
    /// Its 1-based line number in the file.
    pub line: usize,
    /// Its `seq`, when the line parses.
    pub seq: Option<u64>,
    /// The defect found.
    pub problem: String,
}

/// A failure of [`check_files`] to produce a report.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A file cannot be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A record is broken.
    #[error("broken audit log: {0}")]
    Broken(#[from] Broken),
}

/// The findings of [`check_files`] on a log without broken records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Number of files read.
    pub files: usize,
    /// Number of records, of both kinds.
    pub records: u64,
    /// Number of checkpoint records.
    pub checkpoints: u64,
    /// Number of checkpoints whose signature verified.
    pub checkpoints_verified: u64,
    /// Number of checkpoints whose signature was not checked because no
    /// key set was given.
    pub checkpoints_unchecked: u64,
    /// The first record's `seq`, or `None` when there are no records.
    pub first_seq: Option<u64>,
    /// The last record's `seq`.
    pub last_seq: Option<u64>,
    /// The hash of the last record's line: the chain head.
    pub head: Option<ChainHash>,
    /// The `seq` of the last checkpoint whose signature verified. The
    /// records up to it are covered by a signature.
    pub last_verified_checkpoint: Option<u64>,
    /// An unterminated last line of the last file, with its line number.
    /// A writer that crashed mid-write, or that is writing now, leaves
    /// one. It was never acknowledged, so it is reported and skipped.
    pub unterminated_tail: Option<(PathBuf, usize)>,
}

/// A problem with one record, before the file and line are known.
#[derive(Debug)]
pub(super) struct Problem {
    /// The record's `seq`, when it parses.
    pub(super) seq: Option<u64>,
    /// The defect found.
    pub(super) text: String,
}

/// Follows the hash chain one line at a time.
#[derive(Debug)]
pub(super) struct Chain {
    start: ChainStart,
    /// The `seq` and `prev` that the next record must have.
    next: Option<(u64, ChainHash)>,
}

impl Chain {
    /// Starts a chain whose first record must match `start`.
    pub(super) fn new(start: ChainStart) -> Self {
        Self { start, next: None }
    }

    /// Checks that `line` parses and continues the chain, and advances it.
    /// Checks a checkpoint's `records` and `head` but not its signature.
    pub(super) fn accept(&mut self, line: &[u8]) -> Result<Record, Problem> {
        let record = Record::parse(line).map_err(|text| Problem { seq: None, text })?;
        let problem = |text: String| Problem {
            seq: Some(record.seq),
            text,
        };
        self.check_link(&record).map_err(problem)?;
        if let Body::Checkpoint(checkpoint) = &record.body {
            check_checkpoint_fields(&record, checkpoint).map_err(problem)?;
        }
        let Some(next_seq) = record.seq.checked_add(1) else {
            return Err(problem("seq has reached its maximum".into()));
        };
        self.next = Some((next_seq, ChainHash::of_line(line)));
        Ok(record)
    }

    /// Checks that `record` has the `seq` and `prev` the chain expects.
    fn check_link(&self, record: &Record) -> Result<(), String> {
        let Some((seq, prev)) = self.next else {
            let is_genesis = record.seq == 1 && record.prev == ChainHash::GENESIS;
            if self.start == ChainStart::Genesis && !is_genesis {
                return Err(format!(
                    "the log starts at seq {} instead of seq 1 with a prev of zeros; records \
                     before it are missing (check a log whose older files were removed as a \
                     partial log)",
                    record.seq
                ));
            }
            return Ok(());
        };
        if record.seq != seq {
            return Err(format!(
                "seq {} where {seq} was expected; a record is missing, repeated or out of order",
                record.seq
            ));
        }
        if record.prev != prev {
            return Err(
                "prev does not match the SHA-256 of the previous line; that line was \
                        changed, removed or moved"
                    .into(),
            );
        }
        Ok(())
    }
}

fn check_checkpoint_fields(record: &Record, checkpoint: &Checkpoint) -> Result<(), String> {
    // A record's seq is at least 1, so this cannot underflow.
    let before = record.seq - 1;
    if checkpoint.records != before {
        return Err(format!(
            "the checkpoint states {} records but {before} records precede it",
            checkpoint.records
        ));
    }
    if checkpoint.head != record.prev {
        return Err("the checkpoint's head differs from its prev".into());
    }
    Ok(())
}

/// Checks a checkpoint's signature against `keys`.
///
/// The key must be in the key set, usable, and of the algorithm and
/// version the checkpoint names. A key's validity window is not checked,
/// because a checkpoint stays valid after its key stops signing.
fn verify_checkpoint(
    record: &Record,
    checkpoint: &Checkpoint,
    keys: &KeySet,
) -> Result<(), String> {
    let signed = &checkpoint.signature;
    let key_id = &signed.key_id;
    let key = match keys.lookup(key_id) {
        Lookup::Usable(key) => key,
        Lookup::Unusable(entry) => return Err(entry.problem.clone()),
        Lookup::Revoked(_) => {
            return Err(format!(
                "the checkpoint is signed by key {key_id}, which is revoked, so its signature \
                 proves nothing"
            ));
        }
        Lookup::Unknown => {
            return Err(format!(
                "the checkpoint is signed by key {key_id}, which is not in the key set; give \
                 a key set that contains it"
            ));
        }
    };
    if key.algorithm != signed.algorithm {
        return Err(format!(
            "the checkpoint names algorithm {} but key {key_id} is {}",
            signed.algorithm, key.algorithm
        ));
    }
    // Version 0 means unknown, as for PEM keys.
    if key.version != 0 && signed.key_version != key.version {
        return Err(format!(
            "the checkpoint names key_version {} but key {key_id} is version {}",
            signed.key_version, key.version
        ));
    }
    let digest = checkpoint
        .statement(record.seq, record.time)
        .digest_for(key.algorithm);
    algorithm::verify(
        &key.public_key,
        key.algorithm,
        key.pss_salt_length,
        &digest,
        &signed.signature,
        signed.encoding,
    )
    .map_err(|error| format!("the checkpoint signature does not verify: {error}"))
}

/// Checks `files`, in the order given, as one log. Without `keys`, the
/// checkpoint signatures are counted as unchecked.
///
/// # Errors
///
/// [`CheckError::Unreadable`] for a file that cannot be read, and
/// [`CheckError::Broken`] for the first broken record.
pub fn check_files(
    files: &[PathBuf],
    keys: Option<&KeySet>,
    start: ChainStart,
) -> Result<CheckReport, CheckError> {
    let mut chain = Chain::new(start);
    let mut report = CheckReport::default();
    for (index, path) in files.iter().enumerate() {
        let is_last_file = index + 1 == files.len();
        check_file(path, is_last_file, keys, &mut chain, &mut report)?;
        report.files += 1;
    }
    Ok(report)
}

fn check_file(
    path: &Path,
    is_last_file: bool,
    keys: Option<&KeySet>,
    chain: &mut Chain,
    report: &mut CheckReport,
) -> Result<(), CheckError> {
    let unreadable = |source| CheckError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let mut reader = LineReader::new(File::open(path).map_err(unreadable)?);
    while let Some(line) = reader.next_line().map_err(unreadable)? {
        let broken = |seq, problem: String| Broken {
            file: path.to_owned(),
            line: reader.number(),
            seq,
            problem,
        };
        let bytes = match line {
            Line::Complete(bytes) => bytes,
            Line::TooLong => {
                let problem = format!(
                    "the line is longer than {} bytes, which no record can be",
                    super::record::MAX_LINE_BYTES
                );
                return Err(broken(None, problem).into());
            }
            Line::Unterminated if is_last_file => {
                report.unterminated_tail = Some((path.to_owned(), reader.number()));
                break;
            }
            Line::Unterminated => {
                let problem = "the file ends in an unterminated line, but it is not the last \
                               file; the line was cut short"
                    .to_owned();
                return Err(broken(None, problem).into());
            }
        };
        let record = chain
            .accept(&bytes)
            .map_err(|problem| broken(problem.seq, problem.text))?;
        if let Body::Checkpoint(checkpoint) = &record.body {
            report.checkpoints += 1;
            match keys {
                Some(keys) => {
                    verify_checkpoint(&record, checkpoint, keys)
                        .map_err(|problem| broken(Some(record.seq), problem))?;
                    report.checkpoints_verified += 1;
                    report.last_verified_checkpoint = Some(record.seq);
                }
                None => report.checkpoints_unchecked += 1,
            }
        }
        report.records += 1;
        report.first_seq.get_or_insert(record.seq);
        report.last_seq = Some(record.seq);
        report.head = Some(ChainHash::of_line(&bytes));
    }
    Ok(())
}

/// Puts audit files in chain order: by the `seq` of their first line, and
/// by name for files whose first line has none, such as an empty file.
///
/// # Errors
///
/// [`CheckError::Unreadable`] for a file that cannot be read.
pub fn sort_files(files: &[PathBuf]) -> Result<Vec<PathBuf>, CheckError> {
    let mut keyed = Vec::with_capacity(files.len());
    for path in files {
        let first_seq = first_seq(path).map_err(|source| CheckError::Unreadable {
            path: path.clone(),
            source,
        })?;
        keyed.push((
            first_seq.unwrap_or(u64::MAX),
            path.file_name().map(|n| n.to_owned()),
            path,
        ));
    }
    keyed.sort();
    Ok(keyed.into_iter().map(|(_, _, path)| path.clone()).collect())
}

fn first_seq(path: &Path) -> io::Result<Option<u64>> {
    #[derive(serde::Deserialize)]
    struct SeqField {
        seq: u64,
    }
    let mut reader = LineReader::new(File::open(path)?);
    Ok(match reader.next_line()? {
        Some(Line::Complete(bytes)) => serde_json::from_slice::<SeqField>(&bytes)
            .ok()
            .map(|field| field.seq),
        _ => None,
    })
}

/// Reads the records of one file for searching, without checking the
/// chain. Calls `found` with each record and its line, and `invalid` with
/// the number of each complete line that is not a record. An unterminated
/// last line is skipped, since no writer acknowledged it.
///
/// # Errors
///
/// The error from opening or reading the file.
pub fn read_records(
    path: &Path,
    mut found: impl FnMut(Record, &[u8]),
    mut invalid: impl FnMut(usize, String),
) -> io::Result<()> {
    let mut reader = LineReader::new(File::open(path)?);
    while let Some(line) = reader.next_line()? {
        match line {
            Line::Complete(bytes) => match Record::parse(&bytes) {
                Ok(record) => found(record, &bytes),
                Err(problem) => invalid(reader.number(), problem),
            },
            Line::TooLong => invalid(reader.number(), "the line is too long".into()),
            Line::Unterminated => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::audit::record::CheckpointStatement;
    use crate::audit::test_support::{TestKey, event};

    /// Builds a chained log of `count` records whose seqs in `checkpoints`
    /// are checkpoints signed by `key`.
    fn build_lines(key: &TestKey, count: u64, checkpoints: &[u64]) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        let mut prev = ChainHash::GENESIS;
        for seq in 1..=count {
            let time = UNIX_EPOCH + Duration::from_secs(1_780_000_000 + seq);
            let body = if checkpoints.contains(&seq) {
                let statement = CheckpointStatement {
                    seq,
                    time,
                    records: seq - 1,
                    head: prev,
                };
                Body::Checkpoint(Checkpoint {
                    records: seq - 1,
                    head: prev,
                    signature: key.sign(&statement),
                })
            } else {
                Body::Sign(event(seq as usize))
            };
            let line = Record {
                seq,
                time,
                prev,
                body,
            }
            .to_line();
            prev = ChainHash::of_line(line.as_bytes());
            lines.push(line);
        }
        lines
    }

    /// Recomputes `prev`, and a checkpoint's `head`, from line `from` on,
    /// as someone rewriting the log after an edit would.
    fn rechain(lines: &mut [String], from: usize) {
        for i in from..lines.len() {
            let mut record = Record::parse(lines[i].as_bytes()).expect("a valid record");
            record.prev = ChainHash::of_line(lines[i - 1].as_bytes());
            if let Body::Checkpoint(checkpoint) = &mut record.body {
                checkpoint.head = record.prev;
            }
            lines[i] = record.to_line();
        }
    }

    fn write_file(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
        let path = dir.join(name);
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        std::fs::write(&path, text).expect("writes");
        path
    }

    fn check_lines(lines: &[String], keys: Option<&KeySet>) -> Result<CheckReport, CheckError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = write_file(dir.path(), "audit-000001.jsonl", lines);
        check_files(&[path], keys, ChainStart::Genesis)
    }

    fn broken(result: Result<CheckReport, CheckError>) -> Broken {
        match result {
            Err(CheckError::Broken(broken)) => broken,
            other => panic!("expected a broken record, got {other:?}"),
        }
    }

    #[test]
    fn intact_log_verifies() {
        let key = TestKey::new(1);
        let lines = build_lines(&key, 6, &[4]);
        let report = check_lines(&lines, Some(&key.key_set())).expect("verifies");
        assert_eq!(report.records, 6);
        assert_eq!(report.checkpoints_verified, 1);
        assert_eq!(report.last_verified_checkpoint, Some(4));
        assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(6)));
        assert_eq!(report.head, Some(ChainHash::of_line(lines[5].as_bytes())));
        assert_eq!(report.unterminated_tail, None);
    }

    #[test]
    fn edited_record_is_detected() {
        let key = TestKey::new(1);
        let mut lines = build_lines(&key, 5, &[]);
        lines[1] = lines[1].replace("req-2", "req-9");
        let found = broken(check_lines(&lines, None));
        assert_eq!((found.line, found.seq), (3, Some(3)));
        assert!(found.problem.contains("prev does not match"), "{found}");
    }

    #[test]
    fn deleted_record_is_detected() {
        let key = TestKey::new(1);
        let mut lines = build_lines(&key, 5, &[]);
        lines.remove(2);
        let found = broken(check_lines(&lines, None));
        assert_eq!((found.line, found.seq), (3, Some(4)));
        assert!(
            found.problem.contains("seq 4 where 3 was expected"),
            "{found}"
        );
    }

    #[test]
    fn swapped_records_are_detected() {
        let key = TestKey::new(1);
        let mut lines = build_lines(&key, 5, &[]);
        lines.swap(1, 2);
        let found = broken(check_lines(&lines, None));
        assert_eq!((found.line, found.seq), (2, Some(3)));
        assert!(
            found.problem.contains("seq 3 where 2 was expected"),
            "{found}"
        );
    }

    #[test]
    fn rewritten_chain_fails_the_checkpoint_signature() {
        let key = TestKey::new(1);
        let mut lines = build_lines(&key, 6, &[4]);
        lines[1] = lines[1].replace("req-2", "req-9");
        rechain(&mut lines, 2);

        // The chain alone cannot tell: this is what checkpoints are for.
        let unchecked = check_lines(&lines, None).expect("the chain is consistent");
        assert_eq!(unchecked.checkpoints_unchecked, 1);

        let found = broken(check_lines(&lines, Some(&key.key_set())));
        assert_eq!((found.line, found.seq), (4, Some(4)));
        assert!(found.problem.contains("does not verify"), "{found}");
    }

    #[test]
    fn checkpoint_by_unknown_key_is_broken() {
        let key = TestKey::new(1);
        let lines = build_lines(&key, 3, &[3]);
        let found = broken(check_lines(&lines, Some(&TestKey::new(2).key_set())));
        assert_eq!(found.line, 3);
        assert!(found.problem.contains("not in the key set"), "{found}");
    }

    #[test]
    fn checkpoint_with_wrong_count_is_broken() {
        let key = TestKey::new(1);
        let mut lines = build_lines(&key, 3, &[3]);
        let mut record = Record::parse(lines[2].as_bytes()).expect("a valid record");
        if let Body::Checkpoint(checkpoint) = &mut record.body {
            checkpoint.records = 5;
        }
        lines[2] = record.to_line();
        let found = broken(check_lines(&lines, None));
        assert_eq!(found.line, 3);
        assert!(found.problem.contains("states 5 records"), "{found}");
    }

    #[test]
    fn missing_first_record_needs_a_partial_check() {
        let key = TestKey::new(1);
        let lines = build_lines(&key, 4, &[]);
        let found = broken(check_lines(&lines[1..], None));
        assert_eq!((found.line, found.seq), (1, Some(2)));
        assert!(found.problem.contains("starts at seq 2"), "{found}");

        let dir = tempfile::tempdir().expect("temporary directory");
        let path = write_file(dir.path(), "audit-000002.jsonl", &lines[1..]);
        let report = check_files(&[path], None, ChainStart::Anywhere).expect("verifies");
        assert_eq!(report.first_seq, Some(2));
    }

    #[test]
    fn files_are_sorted_and_checked_as_one_chain() {
        let key = TestKey::new(1);
        let lines = build_lines(&key, 6, &[]);
        let dir = tempfile::tempdir().expect("temporary directory");
        let first = write_file(dir.path(), "audit-000001.jsonl", &lines[..2]);
        let second = write_file(dir.path(), "audit-000002.jsonl", &lines[2..4]);
        let third = write_file(dir.path(), "audit-000003.jsonl", &lines[4..]);
        let empty = write_file(dir.path(), "audit-000004.jsonl", &[]);

        let shuffled = [empty.clone(), third.clone(), first.clone(), second.clone()];
        let sorted = sort_files(&shuffled).expect("reads");
        assert_eq!(sorted, [first.clone(), second, third.clone(), empty]);
        let report = check_files(&sorted, None, ChainStart::Genesis).expect("verifies");
        assert_eq!((report.files, report.records), (4, 6));

        // A whole file missing breaks the first record after it.
        let found = broken(check_files(
            &[first, third.clone()],
            None,
            ChainStart::Genesis,
        ));
        assert_eq!(found.file, third);
        assert_eq!((found.line, found.seq), (1, Some(5)));
    }

    #[test]
    fn unterminated_line_is_skipped_only_at_the_end() {
        let key = TestKey::new(1);
        let lines = build_lines(&key, 4, &[]);
        let dir = tempfile::tempdir().expect("temporary directory");
        let first = write_file(dir.path(), "audit-000001.jsonl", &lines[..2]);
        let second = write_file(dir.path(), "audit-000002.jsonl", &lines[2..]);
        let torn_text = format!("{}\n{}", lines[2], &lines[3][..20]);
        std::fs::write(&second, &torn_text).expect("writes");

        let files = [first.clone(), second.clone()];
        let report = check_files(&files, None, ChainStart::Genesis).expect("verifies");
        assert_eq!(report.last_seq, Some(3));
        assert_eq!(report.unterminated_tail, Some((second.clone(), 2)));

        let first_text = std::fs::read_to_string(&first).expect("reads");
        std::fs::write(&first, first_text.trim_end()).expect("writes");
        let found = broken(check_files(&files, None, ChainStart::Genesis));
        assert_eq!((found.file, found.line), (first, 2));
    }

    #[test]
    fn missing_file_is_unreadable() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let missing = dir.path().join("audit-000001.jsonl");
        let result = check_files(&[missing], None, ChainStart::Genesis);
        assert!(
            matches!(result, Err(CheckError::Unreadable { .. })),
            "{result:?}"
        );
    }
}
