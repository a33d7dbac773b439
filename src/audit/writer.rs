//! The writer thread, the only code that writes audit files.
//!
//! It waits for a command, then drains the queue, so that every append
//! waiting at that moment goes into one batch: one `write` and one
//! `sync_data` for all of them, and then an acknowledgement for each. A
//! batch that fails is acknowledged with the error and leaves the chain as
//! it was, so the next batch continues from the last acknowledged record.
//! Bytes of a failed batch that reached the file are moved to a side file
//! before the next write, as a torn tail is on open.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::AuditError;
use super::files::{self, file_name, sync_directory};
use super::record::{
    Body, ChainHash, Checkpoint, CheckpointSignature, CheckpointStatement, Record, SignEvent,
};
use super::recover::Resume;

/// The channel that receives a record's `seq` once it is durable, or the
/// error.
pub(super) type Ack = oneshot::Sender<Result<u64, AuditError>>;

/// A request to the writer thread.
pub(super) enum Command {
    /// Write a sign record.
    Append {
        /// The event to record.
        event: SignEvent,
        /// Receives the outcome.
        ack: Ack,
    },
    /// Write sign records together, in order and in the same batch, each
    /// acknowledged on its own channel.
    AppendAll(Vec<(SignEvent, Ack)>),
    /// Write a checkpoint, as [`CheckpointRequest`] describes.
    Checkpoint(CheckpointRequest),
    /// Flush, report through `stalled`, and block until `release` sends or
    /// is dropped: a disk that hangs, for tests.
    #[cfg(test)]
    Stall {
        stalled: std::sync::mpsc::Sender<()>,
        release: Receiver<()>,
    },
}

/// The exchange for one checkpoint. The writer flushes what came before,
/// sends the statement through `prepared`, and waits until the deadline
/// for the signature on `signature`, writing nothing else meanwhile. A
/// dropped `signature` sender cancels the checkpoint.
pub(super) struct CheckpointRequest {
    /// Receives the statement to sign.
    pub(super) prepared: oneshot::Sender<Prepared>,
    /// Delivers the signature.
    pub(super) signature: Receiver<CheckpointSignature>,
    /// Receives the outcome.
    pub(super) ack: Ack,
}

/// A statement for the caller to sign, and when the writer stops waiting.
pub(super) struct Prepared {
    pub(super) statement: CheckpointStatement,
    pub(super) deadline: Instant,
}

/// State that the writer updates and [`super::AuditLog`] reads.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) healthy: AtomicBool,
    pub(super) records_written: AtomicU64,
    pub(super) syncs: AtomicU64,
    pub(super) write_failures: AtomicU64,
    /// The `seq` of the last durable record, or 0.
    pub(super) last_seq: AtomicU64,
    /// The `seq` of the last checkpoint known, as [`super::AuditStats`]
    /// defines it.
    pub(super) last_checkpoint_seq: AtomicU64,
    /// Number of coming batches to fail after writing half their bytes.
    #[cfg(test)]
    pub(super) injected_failures: std::sync::atomic::AtomicU32,
    /// Number of commands queued, for tests that wait for a full queue.
    #[cfg(test)]
    pub(super) submitted: AtomicU64,
}

impl Shared {
    pub(super) fn new(resume: &Resume) -> Self {
        Self {
            healthy: AtomicBool::new(true),
            records_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            last_seq: AtomicU64::new(resume.next_seq - 1),
            last_checkpoint_seq: AtomicU64::new(resume.last_checkpoint_seq),
            #[cfg(test)]
            injected_failures: std::sync::atomic::AtomicU32::new(0),
            #[cfg(test)]
            submitted: AtomicU64::new(0),
        }
    }
}

/// An append or checkpoint waiting for the next flush.
struct Pending {
    time: SystemTime,
    body: Body,
    ack: Ack,
}

/// The writer's settings, from [`super::AuditConfig`].
pub(super) struct Settings {
    pub(super) directory: PathBuf,
    pub(super) max_file_bytes: u64,
    pub(super) checkpoint_sign_timeout: Duration,
    /// Maximum number of commands taken into one batch, so that a batch ends even while
    /// appends keep arriving.
    pub(super) batch_limit: usize,
}

/// The writer thread's state.
pub(super) struct Writer {
    settings: Settings,
    shared: Arc<Shared>,
    /// Held, never read: the directory lock lasts while this is open.
    _lock: File,
    /// Index of the current file.
    index: u64,
    /// The current file, or `None` until it is opened again after a
    /// failure.
    file: Option<File>,
    /// Bytes of the current file that are acknowledged records.
    file_len: u64,
    next_seq: u64,
    head: ChainHash,
}

impl Writer {
    pub(super) fn new(settings: Settings, resume: Resume, lock: File, shared: Arc<Shared>) -> Self {
        Self {
            settings,
            shared,
            _lock: lock,
            index: resume.index,
            file: None,
            file_len: resume.file_len,
            next_seq: resume.next_seq,
            head: resume.head,
        }
    }

    /// Starts the writer thread. It ends once every sender of `commands`
    /// is dropped and the queue is empty, and then drops `exited`.
    pub(super) fn spawn(
        self,
        commands: Receiver<Command>,
        exited: oneshot::Sender<()>,
    ) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("hallmark-audit".into())
            .spawn(move || {
                self.run(commands);
                drop(exited);
            })
    }

    fn run(mut self, commands: Receiver<Command>) {
        while let Ok(first) = commands.recv() {
            let mut pending = Vec::new();
            self.take(first, &mut pending);
            for _ in 1..self.settings.batch_limit {
                let Ok(command) = commands.try_recv() else {
                    break;
                };
                self.take(command, &mut pending);
            }
            self.flush(pending);
        }
    }

    fn take(&mut self, command: Command, pending: &mut Vec<Pending>) {
        match command {
            Command::Append { event, ack } => pending.push(Pending {
                time: now_micros(),
                body: Body::Sign(event),
                ack,
            }),
            Command::AppendAll(events) => {
                let time = now_micros();
                pending.extend(events.into_iter().map(|(event, ack)| Pending {
                    time,
                    body: Body::Sign(event),
                    ack,
                }));
            }
            Command::Checkpoint(request) => {
                self.flush(std::mem::take(pending));
                self.checkpoint(request);
            }
            #[cfg(test)]
            Command::Stall { stalled, release } => {
                self.flush(std::mem::take(pending));
                let _ = stalled.send(());
                let _ = release.recv();
            }
        }
    }

    /// Writes a checkpoint as [`CheckpointRequest`] describes.
    fn checkpoint(&mut self, request: CheckpointRequest) {
        let timeout = self.settings.checkpoint_sign_timeout;
        let statement = CheckpointStatement {
            seq: self.next_seq,
            time: now_micros(),
            records: self.next_seq - 1,
            head: self.head,
        };
        let deadline = Instant::now() + timeout;
        let prepared = Prepared {
            statement: statement.clone(),
            deadline,
        };
        if request.prepared.send(prepared).is_err() {
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let signature = match request.signature.recv_timeout(remaining) {
            Ok(signature) => signature,
            Err(RecvTimeoutError::Timeout) => {
                let _ = request.ack.send(Err(super::sign_timed_out(timeout)));
                return;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Nothing was written since the statement was made, so the flush
        // gives the record the statement's seq and prev.
        let body = Body::Checkpoint(Checkpoint {
            records: statement.records,
            head: statement.head,
            signature,
        });
        self.flush(vec![Pending {
            time: statement.time,
            body,
            ack: request.ack,
        }]);
    }

    /// Writes `pending` as one batch and acknowledges each record.
    fn flush(&mut self, pending: Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        let mut acks = Vec::with_capacity(pending.len());
        let mut seq = self.next_seq;
        let mut head = self.head;
        let mut last_checkpoint = None;
        for item in pending {
            if matches!(item.body, Body::Checkpoint(_)) {
                last_checkpoint = Some(seq);
            }
            let record = Record {
                seq,
                time: item.time,
                prev: head,
                body: item.body,
            };
            let line = record.to_line();
            head = ChainHash::of_line(line.as_bytes());
            batch.extend_from_slice(line.as_bytes());
            batch.push(b'\n');
            acks.push((seq, item.ack));
            seq += 1;
        }
        match self.write_batch(&batch) {
            Ok(()) => {
                self.next_seq = seq;
                self.head = head;
                self.report_success(acks.len(), seq - 1, last_checkpoint);
                for (seq, ack) in acks {
                    let _ = ack.send(Ok(seq));
                }
            }
            Err(error) => {
                let (path, error) = error;
                self.report_failure(&error, &path, acks.len());
                let error = Arc::new(error);
                for (_, ack) in acks {
                    let _ = ack.send(Err(AuditError::Io {
                        path: path.clone(),
                        source: Arc::clone(&error),
                    }));
                }
            }
        }
    }

    /// Appends `batch` to the current file and syncs it, rotating first
    /// when the file has reached its maximum size. An error comes with the
    /// file it concerns.
    fn write_batch(&mut self, batch: &[u8]) -> Result<(), (PathBuf, io::Error)> {
        // Reopening first cuts the bytes of a failed batch, which must not
        // stay at the end of a file that is then left behind.
        if self.file.is_none() {
            let file = self.reopen().map_err(|e| (self.current_path(), e))?;
            self.file = Some(file);
        }
        if self.file_len >= self.settings.max_file_bytes {
            let next = self.settings.directory.join(file_name(self.index + 1));
            self.start_next_file().map_err(|e| (next, e))?;
        }
        let path = self.current_path();
        if let Err(error) = self.check_same_file(&path) {
            self.file = None;
            return Err((path, error));
        }
        let file = self
            .file
            .as_mut()
            .expect("the file was opened above, and a rotation only replaces it");
        #[cfg(test)]
        if take_injected_failure(&self.shared) {
            let half = &batch[..batch.len() / 2];
            let result = file
                .write_all(half)
                .and(Err(io::Error::other("injected write failure")));
            self.file = None;
            return result.map_err(|e| (path, e));
        }
        let result = file.write_all(batch).and_then(|()| file.sync_data());
        match result {
            Ok(()) => self.file_len += batch.len() as u64,
            // After a failed fsync the kernel may have dropped the dirty
            // pages, so the handle is not trusted again.
            Err(_) => self.file = None,
        }
        result.map_err(|e| (path, e))
    }

    /// Checks that the open file is still the one at `path` and contains
    /// exactly the records written. An editor's save, `sed -i`, a log
    /// rotation tool or `rm` replaces or unlinks the file while this handle
    /// keeps writing to the old one, so records would vanish from the log.
    fn check_same_file(&self, path: &Path) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let open = file.metadata()?;
        let named = std::fs::metadata(path).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "the audit file is gone from its path ({error}); an operator must restore it"
                ),
            )
        })?;
        if open.dev() != named.dev() || open.ino() != named.ino() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the audit file was replaced by another file; an operator must restore it",
            ));
        }
        if open.len() != self.file_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the audit file is {} bytes, not the {} bytes of records written; another \
                     process changed it",
                    open.len(),
                    self.file_len
                ),
            ));
        }
        Ok(())
    }

    /// Opens the current file for appending, after cutting off any bytes
    /// past the acknowledged records.
    fn reopen(&self) -> io::Result<File> {
        let path = self.current_path();
        let file = files::open_append(&path)?;
        let len = file.metadata()?.len();
        if len < self.file_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the file is {len} bytes, shorter than the {} bytes of records written to \
                     it; something else truncated it",
                    self.file_len
                ),
            ));
        }
        if let Some((side_file, bytes)) = files::cut_tail(&path, self.file_len)? {
            warn!(
                file = %path.display(),
                side_file = %side_file.display(),
                bytes,
                "moved the records of a failed write into a side file"
            );
        }
        sync_directory(&self.settings.directory)?;
        Ok(file)
    }

    fn start_next_file(&mut self) -> io::Result<()> {
        let index = self.index + 1;
        let path = self.settings.directory.join(file_name(index));
        let file = files::open_append(&path)?;
        if file.metadata()?.len() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("the next audit file {} is not empty", path.display()),
            ));
        }
        sync_directory(&self.settings.directory)?;
        info!(file = %path.display(), seq = self.next_seq, "started a new audit file");
        self.index = index;
        self.file = Some(file);
        self.file_len = 0;
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        self.settings.directory.join(file_name(self.index))
    }

    fn report_success(&self, records: usize, last_seq: u64, checkpoint: Option<u64>) {
        let shared = &self.shared;
        shared
            .records_written
            .fetch_add(records as u64, Ordering::Relaxed);
        shared.syncs.fetch_add(1, Ordering::Relaxed);
        shared.last_seq.store(last_seq, Ordering::Release);
        if let Some(seq) = checkpoint {
            shared.last_checkpoint_seq.store(seq, Ordering::Release);
        }
        if !shared.healthy.swap(true, Ordering::AcqRel) {
            info!(seq = last_seq, "audit writes succeed again");
        }
    }

    fn report_failure(&self, error: &io::Error, path: &Path, records: usize) {
        self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
        if self.shared.healthy.swap(false, Ordering::AcqRel) {
            error!(%error, file = %path.display(), records,
                "audit write failed; records are rejected until a write succeeds");
        } else {
            debug!(%error, file = %path.display(), records, "audit write failed again");
        }
    }
}

/// Returns the current time cut to whole microseconds, the precision of a
/// record's `time`, so that a statement and its parsed record agree.
fn now_micros() -> SystemTime {
    let now = SystemTime::now();
    match now.duration_since(UNIX_EPOCH) {
        Ok(since) => UNIX_EPOCH + Duration::new(since.as_secs(), since.subsec_micros() * 1_000),
        Err(_) => now,
    }
}

#[cfg(test)]
fn take_injected_failure(shared: &Shared) -> bool {
    shared
        .injected_failures
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}
