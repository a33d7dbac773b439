//! Finding where the log ends when it is opened.
//!
//! The newest file is read to its end. Its last line may be torn, cut
//! short by a crash during a write that was never acknowledged: those
//! bytes are moved to a side file and cut off. Any other invalid line, or
//! a line that breaks the chain, stops the open, because writing on would
//! extend a broken chain and an operator must look first.

use std::fs::File;
use std::path::Path;

use tracing::warn;

use super::AuditError;
use super::check::{Chain, ChainStart};
use super::files::{self, Line, LineReader};
use super::record::{Body, ChainHash};

/// The position at which the writer resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Resume {
    /// Index of the file to append to.
    pub(super) index: u64,
    /// Length of that file, all of it complete records.
    pub(super) file_len: u64,
    /// The next record's `seq`.
    pub(super) next_seq: u64,
    /// The next record's `prev`.
    pub(super) head: ChainHash,
    /// The `seq` of the newest checkpoint in the newest file with records,
    /// or 0 when it has none.
    pub(super) last_checkpoint_seq: u64,
}

impl Resume {
    /// Returns the position of an empty log.
    fn empty() -> Self {
        Self {
            index: 1,
            file_len: 0,
            next_seq: 1,
            head: ChainHash::GENESIS,
            last_checkpoint_seq: 0,
        }
    }
}

/// The end of one file's chain.
#[derive(Clone, Copy, Debug)]
struct Tip {
    seq: u64,
    hash: ChainHash,
    last_checkpoint_seq: u64,
}

/// The result of reading one file.
#[derive(Debug)]
struct Scan {
    /// The last record, or `None` for a file without records.
    tip: Option<Tip>,
    /// Length of the file up to the end of its last complete line.
    complete_len: u64,
    /// The number of an unterminated last line.
    torn_line: Option<usize>,
}

/// Finds where the log in `directory` ends, cutting off a torn last line
/// of the newest file.
pub(super) fn resume(directory: &Path) -> Result<Resume, AuditError> {
    let listed = files::list_files(directory).map_err(|e| AuditError::io(directory, e))?;
    let Some((newest_index, newest)) = listed.last() else {
        return Ok(Resume::empty());
    };
    let scan = scan_file(newest)?;
    if scan.torn_line.is_some() {
        cut_torn_tail(newest, scan.complete_len)?;
    }
    let mut resume = Resume {
        index: *newest_index,
        file_len: scan.complete_len,
        ..Resume::empty()
    };
    // A rotation that crashed before the first write leaves the newest
    // file empty. The chain then ends in the newest earlier file.
    let mut tip = scan.tip;
    for (_, path) in listed.iter().rev().skip(1) {
        if tip.is_some() {
            break;
        }
        let earlier = scan_file(path)?;
        if let Some(line) = earlier.torn_line {
            return Err(corrupt(
                path,
                line,
                "the file ends in an unterminated line, but it is not the newest file".into(),
            ));
        }
        tip = earlier.tip;
    }
    if let Some(tip) = tip {
        resume.next_seq = tip.seq + 1;
        resume.head = tip.hash;
        resume.last_checkpoint_seq = tip.last_checkpoint_seq;
    }
    Ok(resume)
}

/// Reads a whole file, checking each complete line and the chain within
/// the file.
fn scan_file(path: &Path) -> Result<Scan, AuditError> {
    let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
    let mut reader = LineReader::new(file);
    let mut chain = Chain::new(ChainStart::Anywhere);
    let mut scan = Scan {
        tip: None,
        complete_len: 0,
        torn_line: None,
    };
    while let Some(line) = reader.next_line().map_err(|e| AuditError::io(path, e))? {
        let bytes = match line {
            Line::Complete(bytes) => bytes,
            Line::Unterminated => {
                scan.torn_line = Some(reader.number());
                break;
            }
            Line::TooLong => {
                return Err(corrupt(
                    path,
                    reader.number(),
                    "the line is too long".into(),
                ));
            }
        };
        let record = chain
            .accept(&bytes)
            .map_err(|problem| corrupt(path, reader.number(), problem.text))?;
        let previous_checkpoint = scan.tip.map_or(0, |tip| tip.last_checkpoint_seq);
        scan.tip = Some(Tip {
            seq: record.seq,
            hash: ChainHash::of_line(&bytes),
            last_checkpoint_seq: match record.body {
                Body::Checkpoint(_) => record.seq,
                Body::Sign(_) => previous_checkpoint,
            },
        });
        scan.complete_len = reader.start() + bytes.len() as u64 + 1;
    }
    Ok(scan)
}

fn cut_torn_tail(path: &Path, keep: u64) -> Result<(), AuditError> {
    let cut = files::cut_tail(path, keep).map_err(|e| AuditError::io(path, e))?;
    if let Some((side_file, bytes)) = cut {
        warn!(
            file = %path.display(),
            side_file = %side_file.display(),
            bytes,
            "cut a torn last line, written before a crash and never acknowledged, \
             into a side file"
        );
    }
    Ok(())
}

fn corrupt(path: &Path, line: usize, problem: String) -> AuditError {
    AuditError::Corrupt {
        path: path.to_owned(),
        line,
        problem,
    }
}
