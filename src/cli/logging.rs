//! Log set-up on stderr: human-readable lines or JSON, at the configured
//! level unless `RUST_LOG` is set.

use tracing_subscriber::EnvFilter;

use super::Cli;
use crate::config::{
    self, DEFAULT_LOG_LEVEL, ENV_LOG_FORMAT, ENV_LOG_LEVEL, ENV_RUST_LOG, LogConfig, LogFormat,
};

/// Returns the log settings of a command that reads no configuration file:
/// the flags, then `HALLMARK_LOG_LEVEL` and `HALLMARK_LOG_FORMAT`, then the
/// defaults.
///
/// # Errors
///
/// A message naming the flag or variable whose value is invalid.
pub fn settings_without_file(cli: &Cli) -> Result<LogConfig, String> {
    let (level, level_source) = match (&cli.log_level, std::env::var(ENV_LOG_LEVEL)) {
        (Some(level), _) => (level.clone(), "--log-level"),
        (None, Ok(level)) => (level, ENV_LOG_LEVEL),
        (None, Err(_)) => (DEFAULT_LOG_LEVEL.to_owned(), "the default"),
    };
    config::check_log_level(&level).map_err(|error| format!("{level_source}: {error}"))?;
    let format = match (&cli.log_format, std::env::var(ENV_LOG_FORMAT)) {
        (Some(format), _) => LogFormat::parse(format).map_err(|e| format!("--log-format: {e}"))?,
        (None, Ok(format)) => {
            LogFormat::parse(&format).map_err(|e| format!("{ENV_LOG_FORMAT}: {e}"))?
        }
        (None, Err(_)) => LogFormat::Text,
    };
    Ok(LogConfig { level, format })
}

/// Installs the global tracing subscriber, writing to stderr. `RUST_LOG`,
/// when set and valid, replaces `settings.level`.
pub fn init(settings: &LogConfig) {
    let from_env = std::env::var(ENV_RUST_LOG)
        .ok()
        .map(|directives| (EnvFilter::builder().parse(&directives), directives));
    let (filter, rejected) = match from_env {
        Some((Ok(filter), _)) => (filter, None),
        Some((Err(error), directives)) => (configured_filter(settings), Some((directives, error))),
        None => (configured_filter(settings), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
