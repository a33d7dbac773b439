//! A tamper-evident audit log of Sign requests.
//!
//! # On disk
//!
//! The log is a directory of files `audit-000001.jsonl`,
//! `audit-000002.jsonl`, ..., each a sequence of records, one JSON object
//! per line with the fields in a fixed order. Every record has:
//!
//! - `seq`: its position in the log, from 1, continuing across files;
//! - `time`: when the writer serialized it, RFC 3339 in UTC with
//!   microseconds;
//! - `kind`: `sign` or `checkpoint`;
//! - `prev`: the lowercase hex SHA-256 of the previous record's line,
//!   without its newline, or 64 zeros for the first record.
//!
//! A `sign` record then has `caller`, `key_name`, `key_id`,
//! `key_version`, `digest` (hex), `hash_algorithm` (`sha256`, `sha384` or
//! empty), `request_id` and `outcome` (a gRPC code name such as `OK`).
//! Failed and denied requests are recorded too, with empty fields where a
//! value is unknown.
//!
//! A `checkpoint` record then has `records`, the number of records before
//! it, and `head`, the hash of the line before it. It ends with a signature
//! over the [`CheckpointStatement`] by the key that was signing: `key_id`,
//! `key_version`, `algorithm`, `signature` (hex) and, for ECDSA,
//! `signature_encoding`. A checkpoint is itself a link of the chain.
//!
//! A file that reaches the configured size is left, and the next record
//! starts a new file. Other files in the directory are `audit.lock`, which
//! one writer process holds, and `audit-NNNNNN.jsonl.torn-SECONDS`, which
//! keeps bytes cut from a file's end: a line torn by a crash, or the
//! records of a write that failed.
//!
//! # Writing
//!
//! [`AuditLog::append`] returns once the record is written and synced, or
//! fails with an [`AuditError`] and never waits longer than the append
//! timeout. One writer thread takes the appends from a bounded queue in
//! batches and syncs each batch once. [`AuditLog::checkpoint`] signs the
//! chain head; [`AuditLog::run_checkpoints`] does so periodically.
//!
//! [`check::check_files`] verifies a log, and `hallmark audit verify` runs
//! it.
//!
//! # Example
//!
//! ```
//! use hallmark::audit::{AuditConfig, AuditLog, HashAlgorithm, SignEvent};
//!
//! # let dir = tempfile::tempdir()?;
//! let log = AuditLog::open(AuditConfig::new(dir.path()))?;
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! let seq = runtime.block_on(log.append(SignEvent {
//!     caller: "spiffe://example.org/scorer".into(),
//!     key_name: "fraud-model".into(),
//!     key_id: "kid".into(),
//!     key_version: 1,
//!     digest: vec![0; 32],
//!     hash_algorithm: Some(HashAlgorithm::Sha256),
//!     request_id: "req-1".into(),
//!     outcome: tonic::Code::Ok,
//! }))?;
//! assert_eq!(seq, 1);
//! runtime.block_on(log.close())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod check;
mod config;
mod files;
pub mod record;
mod recover;
mod writer;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

pub use config::{
    AuditConfig, DEFAULT_APPEND_TIMEOUT, DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_CHECKPOINT_SIGN_TIMEOUT, DEFAULT_MAX_FILE_BYTES, DEFAULT_QUEUE_CAPACITY,
};
pub use files::{LOCK_FILE_NAME, file_name, parse_file_name};
pub use record::{
    Body, ChainHash, Checkpoint, CheckpointSignature, CheckpointStatement, HashAlgorithm, Record,
    SignEvent,
};

use record::{MAX_FIELD_BYTES, MAX_SIGNATURE_BYTES};
use writer::{CheckpointRequest, Command, Settings, Shared, Writer};

/// The error a checkpoint's signing function returns.
pub type SignError = Box<dyn std::error::Error + Send + Sync>;

/// A failure of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A configuration value is out of range, which the operator must fix.
    #[error("invalid audit configuration: {0}")]
    InvalidConfig(String),
    /// Another process writes to the directory. Each process needs its own.
    #[error(
        "audit directory {} is in use by another process; give each Hallmark process its own \
         audit directory",
        directory.display()
    )]
    Locked {
        /// The audit directory.
        directory: PathBuf,
    },
    /// Reading, writing or syncing a file failed, which is the disk's or
    /// the operator's fault. An append that gets it was not recorded.
    #[error("audit file {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error, shared by every record of the
        /// failed batch.
        #[source]
        source: Arc<io::Error>,
    },
    /// On open, a line of the newest file is invalid or breaks the chain,
    /// so the log cannot be continued. An operator must inspect it.
    #[error(
        "audit file {} line {line}: {problem}; the log was not opened, so inspect the file and \
         run `hallmark audit verify` on the directory's files",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The defect found in the line.
        problem: String,
    },
    /// The queue is full, because records arrive faster than the disk
    /// takes them or the writer waits for a checkpoint signature. The
    /// record was not queued.
    #[error("the audit queue is full ({capacity} records waiting); the disk is too slow")]
    Overloaded {
        /// The queue's capacity.
        capacity: usize,
    },
    /// No acknowledgement came in time, likely because the disk stalls.
    /// The record may still be written later.
    #[error(
        "the audit writer did not answer within {}; the disk may be stalled, and the \
         record may still be written later",
        crate::verify::format_duration(*waited)
    )]
    TimedOut {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The writer thread has stopped: the log was closed, or a bug ended it.
    #[error("the audit writer has stopped")]
    Closed,
    /// The checkpoint's signing function failed, took longer than the
    /// checkpoint sign timeout, or returned an unusable signature. Nothing
    /// was written.
    #[error("signing the audit checkpoint failed: {0}")]
    CheckpointSigning(#[source] SignError),
}

impl AuditError {
    fn io(path: &Path, error: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source: Arc::new(error),
        }
    }
}

/// The outcome of the checkpoint at shutdown.
#[derive(Debug)]
pub enum FinalCheckpoint {
    /// The checkpoint was written.
    Written {
        /// Its `seq`.
        seq: u64,
    },
    /// No record was added since the last checkpoint.
    NotNeeded,
    /// The checkpoint failed. The records it would have covered stay in the
    /// log, written and synced, and the first checkpoint of the next
    /// process that opens the log covers them.
    Failed {
        /// The failure.
        error: AuditError,
        /// The `seq` of the first record after the last checkpoint.
        first_unsealed: u64,
        /// The `seq` of the last record.
        last_seq: u64,
    },
}

/// Counters for metrics and health checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records written and synced by this process, of both kinds.
    pub records_written: u64,
    /// Batches written and synced; `records_written / syncs` is the mean
    /// batch size.
    pub syncs: u64,
    /// Batches whose write, sync or file opening failed.
    pub write_failures: u64,
    /// The `seq` of the last durable record, or 0 for an empty log.
    pub last_seq: u64,
    /// The `seq` of the newest checkpoint written by this process, or else
    /// of the newest in the newest file at open; 0 when neither exists.
    pub last_checkpoint_seq: u64,
}

/// An open audit log and its writer thread. It is safe to share between
/// tasks. Dropping it lets the writer finish the queued records and stop,
/// and [`AuditLog::close`] also waits for that.
#[derive(Debug)]
pub struct AuditLog {
    queue: SyncSender<Command>,
    shared: Arc<Shared>,
    config: AuditConfig,
    thread: JoinHandle<()>,
    exited: oneshot::Receiver<()>,
}

impl AuditLog {
    /// Opens the log in the configured directory, creating the directory
    /// if needed, and starts the writer thread.
    ///
    /// The chain resumes after the last record of the newest file. A torn
    /// last line, left by a crash during a write, is moved to a side file
    /// first. This does blocking file I/O, reading the newest file whole.
    ///
    /// # Errors
    ///
    /// [`AuditError::Corrupt`] when any other line of the newest file is
    /// invalid or breaks the chain, [`AuditError::Locked`] when another
    /// process has the directory open, and [`AuditError::InvalidConfig`]
    /// or [`AuditError::Io`] otherwise.
    pub fn open(config: AuditConfig) -> Result<Self, AuditError> {
        config.validate()?;
        let directory = config.directory.clone();
        files::create_directory(&directory).map_err(|e| AuditError::io(&directory, e))?;
        let lock = files::lock_directory(&directory)
            .map_err(|e| AuditError::io(&directory, e))?
            .ok_or_else(|| AuditError::Locked {
                directory: directory.clone(),
            })?;
        let resume = recover::resume(&directory)?;
        if resume.next_seq == 1 {
            // Removing or archiving every file of a log is not detectable
            // from the directory alone, so each new chain is announced.
            warn!(
                directory = %directory.display(),
                "the audit directory holds no records; starting a new chain at seq 1"
            );
        }
        info!(
            directory = %directory.display(),
            file = file_name(resume.index),
            next_seq = resume.next_seq,
            "audit log opened"
        );

        let shared = Arc::new(Shared::new(&resume));
        let settings = Settings {
            directory: directory.clone(),
            max_file_bytes: config.max_file_bytes,
            checkpoint_sign_timeout: config.checkpoint_sign_timeout,
            batch_limit: config.queue_capacity,
        };
        let (queue, commands) = std::sync::mpsc::sync_channel(config.queue_capacity);
        let (exited_sender, exited) = oneshot::channel();
        let thread = Writer::new(settings, resume, lock, Arc::clone(&shared))
            .spawn(commands, exited_sender)
            .map_err(|e| AuditError::io(&directory, e))?;
        Ok(Self {
            queue,
            shared,
            config,
            thread,
            exited,
        })
    }

    /// Records a Sign request and returns its `seq` once the record is
    /// durable. Text fields longer than the limits are cut first; see
    /// [`SignEvent::truncate_to_limits`].
    ///
    /// # Errors
    ///
    /// [`AuditError::Overloaded`] at once when the queue is full,
    /// [`AuditError::TimedOut`] after the append timeout,
    /// [`AuditError::Io`] when the write failed, and [`AuditError::Closed`]
    /// when the writer has stopped. Must run inside a Tokio runtime with
    /// time enabled.
    pub async fn append(&self, mut event: SignEvent) -> Result<u64, AuditError> {
        event.truncate_to_limits();
        let (ack, acknowledged) = oneshot::channel();
        self.submit(Command::Append { event, ack })?;
        self.wait(acknowledged, self.config.append_timeout).await?
    }

    /// Records several Sign requests, in order, with one write and one
    /// sync, and returns their `seq`s once they are durable. Either every
    /// record is written or none is.
    ///
    /// # Errors
    ///
    /// As for [`AuditLog::append`].
    pub async fn append_all(&self, events: Vec<SignEvent>) -> Result<Vec<u64>, AuditError> {
        let mut items = Vec::with_capacity(events.len());
        let mut receivers = Vec::with_capacity(events.len());
        for mut event in events {
            event.truncate_to_limits();
            let (ack, acknowledged) = oneshot::channel();
            items.push((event, ack));
            receivers.push(acknowledged);
        }
        self.submit(Command::AppendAll(items))?;
        let timeout = self.config.append_timeout;
        let mut seqs = Vec::with_capacity(receivers.len());
        // The records are acknowledged together, so the first wait covers
        // the others, and each later one returns at once.
        for acknowledged in receivers {
            seqs.push(self.wait(acknowledged, timeout).await??);
        }
        Ok(seqs)
    }

    /// Writes a checkpoint of the records so far, signed by `sign`, and
    /// returns its `seq`.
    ///
    /// The writer writes nothing else while `sign` runs, because the
    /// statement names the record before the checkpoint. `sign` therefore
    /// has at most the checkpoint sign timeout. It receives the
    /// [`CheckpointStatement`] and must sign
    /// [`CheckpointStatement::digest_for`] its key's algorithm.
    ///
    /// # Errors
    ///
    /// As for [`AuditLog::append`], plus [`AuditError::CheckpointSigning`]
    /// when `sign` fails, takes longer than the checkpoint sign timeout, or
    /// returns a signature or key ID that is empty or too long.
    pub async fn checkpoint<F, Fut>(&self, sign: F) -> Result<u64, AuditError>
    where
        F: FnOnce(CheckpointStatement) -> Fut,
        Fut: Future<Output = Result<CheckpointSignature, SignError>>,
    {
        let (prepared_sender, prepared) = oneshot::channel();
        let (signature_sender, signature) = std::sync::mpsc::sync_channel(1);
        let (ack, acknowledged) = oneshot::channel();
        self.submit(Command::Checkpoint(CheckpointRequest {
            prepared: prepared_sender,
            signature,
            ack,
        }))?;
        let prepared = self.wait(prepared, self.config.append_timeout).await?;
        let deadline = tokio::time::Instant::from_std(prepared.deadline);
        let signed = tokio::time::timeout_at(deadline, sign(prepared.statement))
            .await
            .map_err(|_| sign_timed_out(self.config.checkpoint_sign_timeout))?
            .map_err(AuditError::CheckpointSigning)?;
        check_signature_size(&signed)?;
        // A failed send means that the writer stopped waiting at the
        // deadline. It then reports the timeout through the ack.
        let _ = signature_sender.try_send(signed);
        self.wait(acknowledged, self.config.append_timeout).await?
    }

    /// Writes a checkpoint with `sign` every checkpoint interval, and once
    /// more when `shutdown` completes, then returns the outcome of that
    /// last one. A checkpoint is skipped when no record was added since the
    /// last one. Failures before `shutdown` are logged and retried at the
    /// next interval, and the caller reports a failure of the last one.
    pub async fn run_checkpoints<S, Fut>(
        &self,
        mut sign: S,
        shutdown: impl Future<Output = ()>,
    ) -> FinalCheckpoint
    where
        S: FnMut(CheckpointStatement) -> Fut,
        Fut: Future<Output = Result<CheckpointSignature, SignError>>,
    {
        let interval = self.config.checkpoint_interval;
        let start = tokio::time::Instant::now() + interval;
        let mut ticks = tokio::time::interval_at(start, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let stopping = tokio::select! {
                () = &mut shutdown => true,
                _ = ticks.tick() => false,
            };
            let stats = self.stats();
            let outcome = if stats.last_seq == stats.last_checkpoint_seq {
                Ok(None)
            } else {
                self.checkpoint(&mut sign).await.map(Some)
            };
            if stopping {
                return self.final_checkpoint(outcome);
            }
            match outcome {
                Ok(Some(seq)) => debug!(seq, "wrote an audit checkpoint"),
                Ok(None) => {}
                Err(error) => {
                    warn!(%error, "audit checkpoint failed; retrying at the next interval");
                }
            }
        }
    }

    fn final_checkpoint(&self, outcome: Result<Option<u64>, AuditError>) -> FinalCheckpoint {
        match outcome {
            Ok(Some(seq)) => FinalCheckpoint::Written { seq },
            Ok(None) => FinalCheckpoint::NotNeeded,
            Err(error) => {
                let stats = self.stats();
                FinalCheckpoint::Failed {
                    error,
                    first_unsealed: stats.last_checkpoint_seq + 1,
                    last_seq: stats.last_seq,
                }
            }
        }
    }

    /// Returns whether the writer runs and its last write succeeded. It
    /// turns false when a write fails or an append times out, and true
    /// again when a later batch is written.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire) && !self.thread.is_finished()
    }

    /// Returns the counters.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            records_written: self.shared.records_written.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            write_failures: self.shared.write_failures.load(Ordering::Relaxed),
            last_seq: self.shared.last_seq.load(Ordering::Acquire),
            last_checkpoint_seq: self.shared.last_checkpoint_seq.load(Ordering::Acquire),
        }
    }

    /// Returns the configuration the log was opened with.
    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    /// Stops accepting records, lets the writer write those queued, and
    /// waits for it to stop, at most for the append timeout. The directory
    /// lock is released when it stops.
    ///
    /// # Errors
    ///
    /// [`AuditError::TimedOut`] when the writer is still busy after the
    /// timeout, and [`AuditError::Closed`] when it had panicked.
    pub async fn close(self) -> Result<(), AuditError> {
        let Self {
            queue,
            thread,
            exited,
            config,
            ..
        } = self;
        drop(queue);
        let waited = config.append_timeout;
        // The writer drops its end when it exits, so an error means done.
        let _ = tokio::time::timeout(waited, exited)
            .await
            .map_err(|_| AuditError::TimedOut { waited })?;
        thread.join().map_err(|_| AuditError::Closed)
    }

    fn submit(&self, command: Command) -> Result<(), AuditError> {
        self.queue.try_send(command).map_err(|error| match error {
            TrySendError::Full(_) => AuditError::Overloaded {
                capacity: self.config.queue_capacity,
            },
            TrySendError::Disconnected(_) => AuditError::Closed,
        })?;
        #[cfg(test)]
        self.shared.submitted.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    async fn wait<T>(
        &self,
        receiver: oneshot::Receiver<T>,
        limit: Duration,
    ) -> Result<T, AuditError> {
        match tokio::time::timeout(limit, receiver).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(AuditError::Closed),
            Err(_) => {
                if self.shared.healthy.swap(false, Ordering::AcqRel) {
                    warn!(
                        timeout = %crate::verify::format_duration(limit),
                        "the audit writer did not answer in time; the disk may be stalled"
                    );
                }
                Err(AuditError::TimedOut { waited: limit })
            }
        }
    }
}

/// Returns the error for a signing function that missed its deadline.
fn sign_timed_out(timeout: Duration) -> AuditError {
    let timeout = crate::verify::format_duration(timeout);
    AuditError::CheckpointSigning(format!("no signature within {timeout}").into())
}

fn check_signature_size(signed: &CheckpointSignature) -> Result<(), AuditError> {
    let problem = if signed.signature.is_empty() || signed.signature.len() > MAX_SIGNATURE_BYTES {
        format!(
            "the signature is {} bytes; it must be 1 to {MAX_SIGNATURE_BYTES}",
            signed.signature.len()
        )
    } else if signed.key_id.is_empty() || signed.key_id.len() > MAX_FIELD_BYTES {
        format!("the key ID must be 1 to {MAX_FIELD_BYTES} bytes")
    } else {
        return Ok(());
    };
    Err(AuditError::CheckpointSigning(problem.into()))
}

#[cfg(test)]
impl AuditLog {
    /// Blocks the writer, as a hung disk would, until the returned sender
    /// sends or is dropped.
    fn stall_writer(&self) -> std::sync::mpsc::Sender<()> {
        let (stalled, is_stalled) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel();
        let command = Command::Stall {
            stalled,
            release: released,
        };
        assert!(self.submit(command).is_ok(), "the queue has room");
        is_stalled.recv().expect("the writer reports the stall");
        release
    }

    /// Returns the number of commands queued so far, stalls included.
    fn submitted(&self) -> u64 {
        self.shared.submitted.load(Ordering::Acquire)
    }

    /// Makes the next `count` batches fail after writing half their bytes.
    fn inject_write_failures(&self, count: u32) {
        self.shared
            .injected_failures
            .store(count, Ordering::Release);
    }
}
