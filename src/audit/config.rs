//! Settings of the audit log and their defaults.

use std::path::PathBuf;
use std::time::Duration;

use super::AuditError;

/// Default size at which a file is left for a new one: 64 MiB, an
/// estimated 150,000 sign records of about 450 bytes (a thumbprint key ID,
/// a SHA-256 digest and a UUID request ID). Rotation is then rare, and each
/// file can still be copied and verified on its own.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Default time an append waits for its record to be synced. A healthy
/// sync takes milliseconds, so only a stalled disk reaches it.
pub const DEFAULT_APPEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Default number of records that may wait for the writer. It bounds the
/// memory held for a slow disk to a few MiB.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// Default time between checkpoints. It bounds the records that no
/// signature covers to about a minute's worth, for one token signature
/// a minute.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// Default time a checkpoint's signing function may take. The writer waits
/// for it and writes nothing else meanwhile, so it is half the append
/// timeout: appends queued behind a stalled signature still have time to
/// be written.
pub const DEFAULT_CHECKPOINT_SIGN_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of an [`super::AuditLog`]. [`AuditConfig::new`] gives the
/// defaults above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// Directory of the audit files, created when missing.
    pub directory: PathBuf,
    /// Size in bytes at which the current file is left and the next record
    /// starts a new one. A file exceeds it by at most one batch.
    pub max_file_bytes: u64,
    /// Maximum time an append waits for its record to be durable.
    pub append_timeout: Duration,
    /// Maximum number of appends and checkpoints waiting for the writer;
    /// beyond it appends fail at once.
    pub queue_capacity: usize,
    /// Time between the checkpoints of
    /// [`super::AuditLog::run_checkpoints`].
    pub checkpoint_interval: Duration,
    /// Maximum time a checkpoint's signing function may take. It must be
    /// shorter than the append timeout.
    pub checkpoint_sign_timeout: Duration,
}

impl AuditConfig {
    /// Returns the default settings for a log in `directory`.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            append_timeout: DEFAULT_APPEND_TIMEOUT,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            checkpoint_sign_timeout: DEFAULT_CHECKPOINT_SIGN_TIMEOUT,
        }
    }

    /// Checks every setting and reports all problems in one error.
    ///
    /// # Errors
    ///
    /// [`AuditError::InvalidConfig`] listing each value out of range.
    pub fn validate(&self) -> Result<(), AuditError> {
        let mut problems = Vec::new();
        if self.directory.as_os_str().is_empty() {
            problems.push("the directory must not be empty".to_owned());
        }
        if self.max_file_bytes == 0 {
            problems.push("the maximum file size must be positive".to_owned());
        }
        if self.append_timeout.is_zero() {
            problems.push("the append timeout must be positive".to_owned());
        }
        if self.queue_capacity == 0 {
            problems.push("the queue capacity must be at least 1".to_owned());
        }
        if self.checkpoint_interval.is_zero() {
            problems.push("the checkpoint interval must be positive".to_owned());
        }
        if self.checkpoint_sign_timeout.is_zero()
            || self.checkpoint_sign_timeout >= self.append_timeout
        {
            problems.push(
                "the checkpoint sign timeout must be positive and shorter than the append \
                 timeout, because appends wait while a checkpoint is signed"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(AuditError::InvalidConfig(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(
            AuditConfig::new("/var/lib/hallmark/audit")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let config = AuditConfig {
            directory: PathBuf::new(),
            max_file_bytes: 0,
            append_timeout: Duration::from_secs(1),
            queue_capacity: 0,
            checkpoint_interval: Duration::ZERO,
            checkpoint_sign_timeout: Duration::from_secs(1),
        };
        let Err(AuditError::InvalidConfig(message)) = config.validate() else {
            panic!("an invalid configuration was accepted");
        };
        for part in [
            "directory",
            "maximum file size",
            "queue capacity",
            "checkpoint interval",
            "sign timeout",
        ] {
            assert!(message.contains(part), "{part} missing from: {message}");
        }
    }
}
