//! A bounded cache of accepted signatures, optionally kept on disk, so that
//! a signed output is accepted once within its freshness window.
//!
//! The on-disk form is the one the Python client writes: one line per entry,
//! `EXPIRY_UNIX_SECONDS ENTRY_ID`, appended and fsynced before
//! [`ReplayCache::insert`] returns. Opening the file reads it back, drops
//! expired and unreadable lines, and rewrites it atomically. The file is
//! compacted the same way when it has grown by twice the capacity. One
//! process at a time holds it, through an exclusive lock on `PATH.lock`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::time::unix_micros;

/// A failure to open or write the on-disk replay cache.
#[derive(Debug, thiserror::Error)]
pub enum ReplayCacheError {
    /// The capacity is zero.
    #[error("the replay cache size must be at least 1")]
    ZeroCapacity,
    /// The path exists but is not a regular file. Replacing it by a rename
    /// would destroy a device or follow an attacker's symlink, and a FIFO
    /// would block the open forever.
    #[error("replay cache path {path} exists but is not a regular file; choose a file path")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Another process has the cache file open.
    #[error(
        "replay cache file {path} is in use by another verifier; give each consumer process \
         its own replay cache file"
    )]
    Locked {
        /// The cache file.
        path: PathBuf,
    },
    /// The file or its directory cannot be read or written.
    #[error("replay cache file {path}: {source}")]
    Io {
        /// The cache file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Remembers entry IDs until they expire, holding at most `capacity` of
/// them. When full it drops the least recently used entry, so the
/// capacity should exceed the number of outputs accepted within one
/// time-to-live.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    /// Entry ID to (expiry in Unix microseconds, use sequence number).
    entries: HashMap<String, (i64, u64)>,
    /// Use sequence number to entry ID, oldest first.
    order: BTreeMap<u64, String>,
    next_sequence: u64,
    disk: Option<Disk>,
}

#[derive(Debug)]
struct Disk {
    path: PathBuf,
    file: File,
    /// Held for the cache's lifetime; dropping it releases the lock.
    _lock: File,
    appended: usize,
}

impl ReplayCache {
    /// Creates an in-memory cache.
    pub fn in_memory(capacity: usize) -> Result<Self, ReplayCacheError> {
        if capacity == 0 {
            return Err(ReplayCacheError::ZeroCapacity);
        }
        Ok(Self {
            capacity,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_sequence: 0,
            disk: None,
        })
    }

    /// Opens a cache kept in `path`, loading the entries still live at
    /// `now`. The directory is created when missing.
    pub fn open(capacity: usize, path: &Path, now: SystemTime) -> Result<Self, ReplayCacheError> {
        let mut cache = Self::in_memory(capacity)?;
        let io_error = |source| ReplayCacheError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        for candidate in [
            path.to_owned(),
            sibling(path, ".lock"),
            sibling(path, ".tmp"),
        ] {
            match std::fs::symlink_metadata(&candidate) {
                Ok(metadata) if !metadata.file_type().is_file() => {
                    return Err(ReplayCacheError::NotAFile { path: candidate });
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(error)),
            }
        }
        let lock = OpenOptions::new()
            .create(true)
            .append(true)
            .open(sibling(path, ".lock"))
            .map_err(io_error)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ReplayCacheError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io_error(error)),
        }
        let now = unix_micros(now);
        match File::open(path) {
            Ok(file) => {
                for line in BufReader::new(file).split(b'\n') {
                    let line = line.map_err(io_error)?;
                    if let Some((expires, id)) = parse_line(&line)
                        && expires > now
                    {
                        cache.remember(id, expires);
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(error)),
        }
        let file = cache.rewrite(path).map_err(io_error)?;
        cache.disk = Some(Disk {
            path: path.to_owned(),
            file,
            _lock: lock,
            appended: 0,
        });
        Ok(cache)
    }

    /// Records `id` until `now + ttl`. Returns `false`, and records
    /// nothing, when `id` is already recorded and unexpired.
    ///
    /// # Errors
    ///
    /// A failure to append to the file. The entry is then kept in memory,
    /// so this process still refuses the replay.
    pub fn insert(
        &mut self,
        id: &str,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<bool, ReplayCacheError> {
        let now = unix_micros(now);
        if let Some(&(expires, _)) = self.entries.get(id)
            && expires > now
        {
            self.remember(id.to_owned(), expires);
            return Ok(false);
        }
        self.drop_expired(now);
        let expires = now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        self.remember(id.to_owned(), expires);
        self.append(id, expires)?;
        Ok(true)
    }

    /// Returns the number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records `id` as the most recently used entry, evicting the least
    /// recently used ones beyond the capacity.
    fn remember(&mut self, id: String, expires: i64) {
        if let Some((_, sequence)) = self.entries.get(&id) {
            self.order.remove(sequence);
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.order.insert(sequence, id.clone());
        self.entries.insert(id, (expires, sequence));
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    /// Drops expired entries from the least recently used end. Every entry
    /// gets the same time-to-live, so they expire roughly in that order.
    fn drop_expired(&mut self, now: i64) {
        while let Some((&sequence, id)) = self.order.first_key_value() {
            if self
                .entries
                .get(id)
                .is_some_and(|&(expires, _)| expires > now)
            {
                return;
            }
            let id = id.clone();
            self.order.remove(&sequence);
            self.entries.remove(&id);
        }
    }

    fn append(&mut self, id: &str, expires: i64) -> Result<(), ReplayCacheError> {
        let Some(disk) = self.disk.as_mut() else {
            return Ok(());
        };
        let line = format_line(expires, id);
        let written = disk
            .file
            .write_all(line.as_bytes())
            .and_then(|()| disk.file.sync_data());
        let path = disk.path.clone();
        written.map_err(|source| ReplayCacheError::Io {
            path: path.clone(),
            source,
        })?;
        disk.appended += 1;
        if disk.appended > 2 * self.capacity {
            let file = self
                .rewrite(&path)
                .map_err(|source| ReplayCacheError::Io { path, source })?;
            if let Some(disk) = self.disk.as_mut() {
                disk.file = file;
                disk.appended = 0;
            }
        }
        Ok(())
    }

    /// Replaces the file with the live entries through a synced temporary
    /// file and a rename, and returns it opened for appending.
    fn rewrite(&self, path: &Path) -> io::Result<File> {
        let staging = sibling(path, ".tmp");
        let mut file = File::create(&staging)?;
        let mut text = String::new();
        for id in self.order.values() {
            if let Some(&(expires, _)) = self.entries.get(id) {
                text.push_str(&format_line(expires, id));
            }
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&staging, path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // A directory sync makes the rename durable; some file systems
            // refuse it, and the data itself is already synced.
            let _ = File::open(parent).and_then(|dir| dir.sync_all());
        }
        OpenOptions::new().append(true).open(path)
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn format_line(expires_micros: i64, id: &str) -> String {
    let seconds = expires_micros.div_euclid(1_000_000);
    let fraction = expires_micros.rem_euclid(1_000_000);
    format!("{seconds}.{fraction:06} {id}\n")
}

/// Reads `SECONDS[.FRACTION] ID`, the form both clients write. Lines in
/// any other form are skipped: a torn last line after a crash is expected.
fn parse_line(line: &[u8]) -> Option<(i64, String)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    let (expiry, id) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (whole, fraction) = expiry.split_once('.').unwrap_or((expiry, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    let kept = &fraction[..fraction.len().min(6)];
    let micros = if kept.is_empty() {
        0
    } else {
        kept.parse::<i64>().ok()? * 10_i64.pow(6 - kept.len() as u32)
    };
    Some((
        seconds.checked_mul(1_000_000)?.checked_add(micros)?,
        id.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn an_entry_is_accepted_once_until_it_expires() {
        let mut cache = ReplayCache::in_memory(10).expect("capacity is positive");
        assert!(cache.insert("a", at(1_000), TTL).expect("in memory"));
        assert!(!cache.insert("a", at(1_059), TTL).expect("in memory"));
        assert!(cache.insert("a", at(1_060), TTL).expect("in memory"));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_least_recently_used_entry_is_evicted() {
        let mut cache = ReplayCache::in_memory(2).expect("capacity is positive");
        assert!(cache.insert("a", at(1_000), TTL).expect("in memory"));
        assert!(cache.insert("b", at(1_001), TTL).expect("in memory"));
        // A refused replay of "a" makes it the most recent, so "b" goes.
        assert!(!cache.insert("a", at(1_002), TTL).expect("in memory"));
        assert!(cache.insert("c", at(1_003), TTL).expect("in memory"));
        assert_eq!(cache.len(), 2);
        assert!(!cache.insert("a", at(1_004), TTL).expect("in memory"));
        assert!(cache.insert("b", at(1_005), TTL).expect("in memory"));
    }

    #[test]
    fn zero_capacity_is_refused() {
        assert!(matches!(
            ReplayCache::in_memory(0),
            Err(ReplayCacheError::ZeroCapacity)
        ));
    }

    #[test]
    fn entries_survive_reopening_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("nested/replay.cache");
        {
            let mut cache = ReplayCache::open(10, &path, at(1_000)).expect("opens");
            assert!(cache.insert("kept", at(1_000), TTL).expect("appends"));
            assert!(cache.insert("short", at(900), TTL).expect("appends"));
        }
        let text = std::fs::read_to_string(&path).expect("file exists");
        assert_eq!(text, "1060.000000 kept\n960.000000 short\n");

        let mut cache = ReplayCache::open(10, &path, at(1_000)).expect("reopens");
        assert_eq!(cache.len(), 1);
        assert!(!cache.insert("kept", at(1_001), TTL).expect("appends"));
        assert!(cache.insert("short", at(1_001), TTL).expect("appends"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("file exists"),
            "1060.000000 kept\n1061.000000 short\n"
        );
    }

    #[test]
    fn torn_and_foreign_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("replay.cache");
        std::fs::write(
            &path,
            "2000.5 python\nnot-a-number x\n2000 a b\n\u{fffd}\n2000.000000 torn",
        )
        .expect("writes");
        let mut cache = ReplayCache::open(10, &path, at(1_000)).expect("opens");
        assert_eq!(cache.len(), 2);
        assert!(!cache.insert("python", at(1_000), TTL).expect("appends"));
        assert!(!cache.insert("torn", at(1_000), TTL).expect("appends"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("file exists"),
            "2000.500000 python\n2000.000000 torn\n"
        );
    }

    #[test]
    fn paths_that_are_not_files_are_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let target = dir.path().join("target");
        std::fs::write(&target, "precious\n").expect("writes");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let refused = ReplayCache::open(10, &link, at(1_000));
        assert!(matches!(refused, Err(ReplayCacheError::NotAFile { path }) if path == link));
        assert_eq!(
            std::fs::read_to_string(&target).expect("target remains"),
            "precious\n"
        );

        let directory = dir.path().join("cache");
        std::fs::create_dir(&directory).expect("creates");
        let refused = ReplayCache::open(10, &directory, at(1_000));
        assert!(matches!(refused, Err(ReplayCacheError::NotAFile { .. })));
        assert!(ReplayCache::open(10, Path::new("/dev/null"), at(1_000)).is_err());
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("replay.cache");
        let _first = ReplayCache::open(10, &path, at(1_000)).expect("opens");
        let second = ReplayCache::open(10, &path, at(1_000));
        assert!(matches!(second, Err(ReplayCacheError::Locked { .. })));
    }

    #[test]
    fn the_file_is_compacted_after_growing() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("replay.cache");
        let mut cache = ReplayCache::open(2, &path, at(1_000)).expect("opens");
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            assert!(
                cache
                    .insert(id, at(1_000 + i as u64), TTL)
                    .expect("appends")
            );
        }
        // Five appends exceed twice the capacity, so the file contains only
        // the two entries still in the cache.
        assert_eq!(
            std::fs::read_to_string(&path).expect("file exists"),
            "1063.000000 d\n1064.000000 e\n"
        );
    }
}
