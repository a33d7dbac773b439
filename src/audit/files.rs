//! The audit directory: file names, the lock, bounded line reading, and
//! cutting unacknowledged bytes off a file's end into a side file.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::record::MAX_LINE_BYTES;

/// Name of the lock file that one writer process holds in the directory.
pub const LOCK_FILE_NAME: &str = "audit.lock";

const FILE_PREFIX: &str = "audit-";
const FILE_SUFFIX: &str = ".jsonl";
/// Minimum digits of the file index. An index past 999999 gets more.
const INDEX_DIGITS: usize = 6;

/// Returns the name of the audit file with `index`: `audit-000001.jsonl`
/// for 1.
pub fn file_name(index: u64) -> String {
    format!("{FILE_PREFIX}{index:0INDEX_DIGITS$}{FILE_SUFFIX}")
}

/// Parses a name written by [`file_name`]. Other names, including saved
/// torn tails and names with extra zeros, give `None`.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index = digits.parse().ok()?;
    (file_name(index) == name).then_some(index)
}

/// Lists the audit files in `directory`, by index.
pub(super) fn list_files(directory: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(index) = name.to_str().and_then(parse_file_name) {
            files.push((index, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Permissions of files the audit log creates: records name callers and
/// digests, so only the service's user writes them and its group reads
/// them, for a log shipper that runs as another user in the same group.
const FILE_MODE: u32 = 0o640;

/// Permissions of an audit directory that the service creates.
const DIRECTORY_MODE: u32 = 0o750;

/// Opens `path` for appending, creating it with [`FILE_MODE`] if it does
/// not exist. An existing file keeps its permissions.
pub(super) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates `directory` and its missing parents with [`DIRECTORY_MODE`].
pub(super) fn create_directory(directory: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY_MODE)
        .create(directory)
}

/// Takes the directory's exclusive lock, or returns `None` when another
/// process holds it. The lock lasts as long as the returned file is open.
pub(super) fn lock_directory(directory: &Path) -> io::Result<Option<File>> {
    let lock = open_append(&directory.join(LOCK_FILE_NAME))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(error)) => Err(error),
    }
}

/// Syncs a directory so that files created or renamed in it survive a
/// crash.
pub(super) fn sync_directory(directory: &Path) -> io::Result<()> {
    File::open(directory)?.sync_all()
}

/// One line of a file, as [`LineReader`] reads it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A line ended by a newline, without the newline.
    Complete(Vec<u8>),
    /// More than [`MAX_LINE_BYTES`] before the next newline, which no
    /// record can be.
    TooLong,
    /// Bytes at the end of the file without a newline after them.
    Unterminated,
}

/// Reads a file line by line, holding at most [`MAX_LINE_BYTES`] of it in
/// memory.
pub(super) struct LineReader<R> {
    reader: BufReader<R>,
    number: usize,
    start: u64,
    end: u64,
}

impl<R: Read> LineReader<R> {
    /// Starts reading at the beginning of `reader`.
    pub(super) fn new(reader: R) -> Self {
        Self {
            reader: BufReader::new(reader),
            number: 0,
            start: 0,
            end: 0,
        }
    }

    /// Returns the 1-based number of the line last read.
    pub(super) fn number(&self) -> usize {
        self.number
    }

    /// Returns the byte offset at which the line last read starts.
    pub(super) fn start(&self) -> u64 {
        self.start
    }

    /// Reads the next line, or returns `None` at the end of the file.
    pub(super) fn next_line(&mut self) -> io::Result<Option<Line>> {
        let mut bytes = Vec::new();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut bytes)?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        self.start = self.end;
        self.end += read as u64;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            return Ok(Some(Line::Complete(bytes)));
        }
        // Fewer bytes than the limit and no newline: the file has ended.
        if bytes.len() <= MAX_LINE_BYTES {
            return Ok(Some(Line::Unterminated));
        }
        self.skip_rest_of_line()
    }

    /// Skips to just after the next newline, or to the end of the file.
    fn skip_rest_of_line(&mut self) -> io::Result<Option<Line>> {
        let mut discarded = Vec::new();
        loop {
            discarded.clear();
            let read = (&mut self.reader)
                .take(MAX_LINE_BYTES as u64)
                .read_until(b'\n', &mut discarded)?;
            self.end += read as u64;
            if read == 0 {
                return Ok(Some(Line::Unterminated));
            }
            if discarded.last() == Some(&b'\n') {
                return Ok(Some(Line::TooLong));
            }
        }
    }
}

/// Moves every byte of `path` after the first `keep` bytes to a side file,
/// `PATH.torn-UNIX_SECONDS`, and truncates `path` to `keep` bytes. Each
/// move appends the bytes and a newline, so that two moves in the same
/// second both stay readable. The side file is synced before the
/// truncation, so a crash loses neither copy. A failed copy is undone on a
/// best-effort basis: a side file it created is removed, and one it
/// appended to is truncated to its earlier length.
///
/// Returns the side file and the number of bytes moved, or `None` when
/// the file is not longer than `keep`.
pub(super) fn cut_tail(path: &Path, keep: u64) -> io::Result<Option<(PathBuf, u64)>> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len <= keep {
        return Ok(None);
    }
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut side_name = path.as_os_str().to_owned();
    side_name.push(format!(".torn-{seconds}"));
    let side_path = PathBuf::from(side_name);

    let mut side = open_append(&side_path)?;
    let side_len = side.metadata()?.len();
    if let Err(error) = append_tail(&mut file, keep, len - keep, &mut side) {
        // A copy fails most often for lack of space, and the writer then
        // retries at every batch until space returns. Without the undo,
        // each second of such a fault would leave one empty side file. An
        // error of the undo is ignored, because the copy's error is the one
        // to report, and a leftover side file loses no record.
        let _ = if side_len == 0 {
            std::fs::remove_file(&side_path)
        } else {
            side.set_len(side_len)
        };
        return Err(error);
    }
    if let Some(directory) = path.parent() {
        sync_directory(directory)?;
    }
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(Some((side_path, len - keep)))
}

/// Appends `bytes` bytes of `file` from offset `keep`, and a newline, to
/// `side`, and syncs `side`.
fn append_tail(file: &mut File, keep: u64, bytes: u64, side: &mut File) -> io::Result<()> {
    file.seek(SeekFrom::Start(keep))?;
    io::copy(&mut Read::take(&mut *file, bytes), side)?;
    side.write_all(b"\n")?;
    side.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(1), "audit-000001.jsonl");
        assert_eq!(file_name(1_234_567), "audit-1234567.jsonl");
        assert_eq!(parse_file_name("audit-000001.jsonl"), Some(1));
        assert_eq!(parse_file_name("audit-1234567.jsonl"), Some(1_234_567));
        for other in [
            "audit-0000001.jsonl",
            "audit-1.jsonl",
            "audit-000001.jsonl.torn-1700000000",
            "audit-+00001.jsonl",
            "audit.lock",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn lines_are_read_with_their_ends() {
        let mut text = b"one\n\ntwo\n".to_vec();
        text.extend(vec![b'x'; MAX_LINE_BYTES + 1]);
        text.extend(b"\nthree\ntor");
        let mut reader = LineReader::new(text.as_slice());
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().expect("reads from memory") {
            lines.push((reader.number(), reader.start(), line));
        }
        let long_end = 9 + MAX_LINE_BYTES as u64 + 2;
        assert_eq!(
            lines,
            vec![
                (1, 0, Line::Complete(b"one".to_vec())),
                (2, 4, Line::Complete(Vec::new())),
                (3, 5, Line::Complete(b"two".to_vec())),
                (4, 9, Line::TooLong),
                (5, long_end, Line::Complete(b"three".to_vec())),
                (6, long_end + 6, Line::Unterminated),
            ]
        );
    }

    #[test]
    fn long_unterminated_end_is_one_line() {
        let text = vec![0; 3 * MAX_LINE_BYTES];
        let mut reader = LineReader::new(text.as_slice());
        assert_eq!(
            reader.next_line().expect("reads from memory"),
            Some(Line::Unterminated)
        );
        assert_eq!(reader.next_line().expect("reads from memory"), None);
    }

    #[test]
    fn cut_tail_keeps_both_parts() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(file_name(3));
        std::fs::write(&path, b"kept\ntorn").expect("writes");

        let (side, moved) = cut_tail(&path, 5)
            .expect("cuts")
            .expect("the file is longer than kept");
        assert_eq!(moved, 4);
        assert_eq!(std::fs::read(&path).expect("reads"), b"kept\n");
        assert_eq!(std::fs::read(&side).expect("reads"), b"torn\n");
        let name = side.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(name.starts_with("audit-000003.jsonl.torn-"), "{name}");

        assert_eq!(cut_tail(&path, 5).expect("nothing to cut"), None);
    }
}
