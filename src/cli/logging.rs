//! Log set-up on stderr: human-readable lines or JSON, at the configured
//! level unless `RUST_LOG` is set, and the one line that reports an error
//! that ends a command.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use super::Cli;
use crate::config::{self, DEFAULT_LOG_LEVEL, ENV_RUST_LOG, LogConfig, LogFormat, ProcessEnv};

/// Whether [`error`] writes a JSON line rather than `error: ...`.
static JSON: AtomicBool = AtomicBool::new(false);

/// Returns the log settings of a command that reads no configuration file:
/// the flags, then `HALLMARK_LOG_LEVEL` and `HALLMARK_LOG_FORMAT`, then the
/// defaults. Returns the settings, with the default in place of each
/// invalid value, and one problem per invalid value, naming its flag or
/// variable.
pub fn settings_without_file(cli: &Cli) -> (LogConfig, Vec<String>) {
    config::log_without_file(&ProcessEnv, &cli.log_overrides())
}

/// Returns the log format for reporting a configuration that cannot be
/// loaded: that of the flags, the environment or the file, as far as they
/// can be read.
pub fn format_hint(cli: &Cli) -> LogFormat {
    match cli.config_source() {
        Some((path, overrides)) => config::log_format_hint(path, &ProcessEnv, &overrides),
        None => LogFormat::Text,
    }
}

/// Sets the format of [`error`] before the subscriber is installed.
pub fn set_error_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// Returns whether errors are written as JSON lines.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writes an error that ends the command to stderr: `error: MESSAGE` with
/// text logs, or, with JSON logs, one JSON log line at level ERROR with
/// MESSAGE as its message. The line is written whatever the log level, so
/// that `off` does not hide why the command failed.
pub fn error(message: &dyn Display) {
    if !is_json() {
        stderr_line!("error: {message}");
        return;
    }
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || tracing::error!("{message}"));
}

/// The value of `RUST_LOG` when it is set and not empty.
enum RustLog {
    /// A UTF-8 value.
    Text(String),
    /// A value that is not valid UTF-8, shown with replacement characters.
    NotUnicode(String),
}

/// Reads `RUST_LOG`. An empty value counts as unset, as if the variable
/// had been cleared.
fn rust_log() -> Option<RustLog> {
    match std::env::var(ENV_RUST_LOG) {
        Ok(directives) if directives.trim().is_empty() => None,
        Ok(directives) => Some(RustLog::Text(directives)),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(value)) => {
            Some(RustLog::NotUnicode(value.to_string_lossy().into_owned()))
        }
    }
}

/// Returns the value of `RUST_LOG` when it is set, not empty and valid
/// UTF-8, which `config print` shows.
pub fn rust_log_directives() -> Option<String> {
    match rust_log()? {
        RustLog::Text(directives) => Some(directives),
        RustLog::NotUnicode(_) => None,
    }
}

/// Installs the global tracing subscriber, writing to stderr. `RUST_LOG`,
/// when set, not empty and valid, replaces `settings.level`.
pub fn init(settings: &LogConfig) {
    set_error_format(settings.format);
    let (filter, rejected) = match rust_log() {
        None => (configured_filter(settings), None),
        Some(RustLog::Text(directives)) => match EnvFilter::builder().parse(&directives) {
            Ok(filter) => (filter, None),
            Err(error) => (
                configured_filter(settings),
                Some((directives, error.to_string())),
            ),
        },
        Some(RustLog::NotUnicode(shown)) => (
            configured_filter(settings),
            Some((shown, "the value is not valid UTF-8".to_owned())),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match settings.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some((directives, error)) = rejected {
        tracing::warn!(
            rust_log = %directives,
            %error,
            level = %settings.level,
            "RUST_LOG is invalid; logging at the configured level"
        );
    }
}

/// Returns the filter for `settings.level`, which loading has checked.
fn configured_filter(settings: &LogConfig) -> EnvFilter {
    EnvFilter::builder()
        .parse(&settings.level)
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_LEVEL))
}
