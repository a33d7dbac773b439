//! `hallmark bench`: the options, the run and its output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{ConfigArgs, EXIT_CONFIG, EXIT_IO, EXIT_UNAVAILABLE, hsm_exit_code, output};
use crate::bench::{self, Audit, BenchError, Plan, Report};
use crate::config::{Config, MAX_MAX_BATCH};

/// Maximum requests per configuration. Each request keeps its digest and its
/// latency in memory until the report is made.
const MAX_REQUESTS: u64 = 1_000_000;

/// Maximum number of concurrent gRPC clients.
const MAX_CLIENTS: u64 = 4096;

/// Default digests per SignBatch request: large enough that the per-call
/// overhead is spread thin, and well under the default `signing.max_batch`
/// of 256.
const DEFAULT_BATCH_SIZE: usize = 64;

/// Default cap on the requests of the single-client configurations when
/// `--latency-requests` is not given. One client signs one digest at a
/// time, so these configurations take longer per digest than the others.
const DEFAULT_LATENCY_REQUESTS_CAP: usize = 2000;

/// Exit code when the run finished but some requests failed, so that its
/// figures do not describe a working service.
const EXIT_REQUESTS_FAILED: u8 = 1;

/// Options of `hallmark bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArgs,
    /// Key name to measure; repeat for several keys. Defaults to every
    /// configured key except audit.checkpoint_key.
    #[arg(long = "key", value_name = "NAME")]
    pub keys: Vec<String>,
    /// Digests to sign in each throughput configuration, not counting one
    /// warm-up request per thread or client.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_REQUESTS))]
    pub requests: u64,
    /// Digests to sign in each single-client configuration (raw-1 and the
    /// service with one client); defaults to --requests, but at most 2000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_REQUESTS))]
    pub latency_requests: Option<u64>,
    /// Concurrent gRPC clients, each with its own connection; defaults to
    /// twice hsm.sessions, so that every session stays busy while
    /// responses travel back.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_CLIENTS))]
    pub clients: Option<u64>,
    /// Digests per SignBatch request in the batch configurations; at most
    /// the service's signing.max_batch, and --clients times this at most
    /// server.max_pending (or --requests, if fewer). Defaults to 64, or to
    /// the largest size within those limits if that is smaller.
    #[arg(long, value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=MAX_MAX_BATCH as u64))]
    pub batch_size: Option<u64>,
    /// Run the service with the audit log on, off, or both (one run each).
    #[arg(long, value_enum, default_value_t = AuditChoice::Both)]
    pub audit: AuditChoice,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// Values of `--audit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuditChoice {
    /// Only with the audit log on.
    On,
    /// Only with the audit log off.
    Off,
    /// With the audit log on, then off, and their throughput ratio.
    Both,
}

impl AuditChoice {
    fn modes(self) -> Vec<Audit> {
        match self {
            Self::On => vec![Audit::On],
            Self::Off => vec![Audit::Off],
            Self::Both => vec![Audit::On, Audit::Off],
        }
    }
}

/// Runs the bench, prints the table on stdout and writes the JSON file.
/// Exits with 1 when any request failed, after printing the results.
pub fn run(args: &BenchArgs, config: &Config) -> ExitCode {
    let plan = match plan(args, config) {
        Ok(plan) => plan,
        Err(error) => return report_error(&error),
    };
    let report = match bench::run(&plan, config) {
        Ok(report) => report,
        Err(error) => return report_error(&error),
    };
    // The JSON file is written even when the table cannot be, so that the
    // measurements are kept.
    let printed = output::print(&report.table());
    for warning in &report.warnings {
        stderr_line!("warning: {warning}");
    }
    if let Some(path) = &args.json
        && let Err(error) = write_json(&report, path)
    {
        return report_error(&error);
    }
    if let Err(code) = printed {
        return code;
    }
    let failed: u64 = report
        .keys
        .iter()
        .flat_map(|key| &key.configurations)
        .map(|configuration| configuration.errors)
        .sum();
    if failed > 0 {
        stderr_line!("error: {failed} requests failed; the table counts them under errors");
        return ExitCode::from(EXIT_REQUESTS_FAILED);
    }
    ExitCode::SUCCESS
}

fn plan(args: &BenchArgs, config: &Config) -> Result<Plan, BenchError> {
    let keys = bench::select_keys(config, &args.keys)?;
    let clients = match args.clients {
        Some(clients) => usize::try_from(clients).unwrap_or(usize::MAX),
        None => config.hsm.sessions.saturating_mul(2),
    };
    if clients > config.max_pending {
        return Err(BenchError::Config(format!(
            "--clients {clients} exceeds server.max_pending = {}, so the service would reject \
             requests with RESOURCE_EXHAUSTED; lower --clients or raise server.max_pending",
            config.max_pending
        )));
    }
    let batch_size = match args.batch_size {
        Some(size) => usize::try_from(size).unwrap_or(usize::MAX),
        None => default_batch_size(config.max_batch, config.max_pending, clients),
    };
    if batch_size > config.max_batch {
        return Err(BenchError::Config(format!(
            "--batch-size {batch_size} exceeds signing.max_batch = {}, so the service would \
             reject every SignBatch request with INVALID_ARGUMENT; lower --batch-size or raise \
             signing.max_batch",
            config.max_batch
        )));
    }
    let requests = usize::try_from(args.requests).unwrap_or(usize::MAX);
    // Each digest of a batch takes one of server.max_pending's permits
    // while its batch is in progress or queued.
    let batch_digests = clients.saturating_mul(batch_size).min(requests);
    if batch_digests > config.max_pending {
        return Err(BenchError::Config(format!(
            "{clients} clients with --batch-size {batch_size} would keep {batch_digests} digests \
             in progress, more than server.max_pending = {}, which counts each digest of a \
             batch, so the service would reject SignBatch requests with RESOURCE_EXHAUSTED; \
             lower --batch-size or --clients, or raise server.max_pending",
            config.max_pending
        )));
    }
    let latency_requests = match args.latency_requests {
        Some(count) => usize::try_from(count).unwrap_or(usize::MAX),
        None => requests.min(DEFAULT_LATENCY_REQUESTS_CAP),
    };
    let exe = std::env::current_exe().map_err(|source| BenchError::Io {
        context: "cannot find the hallmark binary to start as the service".into(),
        source,
    })?;
    Ok(Plan {
        exe,
        config_path: args.config.config.clone(),
        keys,
        requests,
        latency_requests,
        clients,
        batch_size,
        audit: args.audit.modes(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    })
}

/// Returns [`DEFAULT_BATCH_SIZE`], or less if `max_batch`
/// (`signing.max_batch`) is smaller or if `clients` batches of that size
/// would exceed `max_pending` (`server.max_pending`), which counts each
/// digest of a batch.
fn default_batch_size(max_batch: usize, max_pending: usize, clients: usize) -> usize {
    let per_client = max_pending / clients.max(1);
    DEFAULT_BATCH_SIZE.min(max_batch).min(per_client).max(1)
}

fn write_json(report: &Report, path: &std::path::Path) -> Result<(), BenchError> {
    let io_error = |source| BenchError::Io {
        context: format!("cannot write {}", path.display()),
        source,
    };
    let mut text = serde_json::to_string_pretty(report).map_err(|e| io_error(e.into()))?;
    text.push('\n');
    std::fs::write(path, text).map_err(io_error)
}

/// Prints a bench error and returns its exit code.
fn report_error(error: &BenchError) -> ExitCode {
    stderr_line!("error: {error}");
    let code = match error {
        BenchError::Config(_) | BenchError::Key(_) => EXIT_CONFIG,
        BenchError::Hsm(hsm) => hsm_exit_code(hsm),
        BenchError::ServiceExited { .. }
        | BenchError::ServiceTimeout { .. }
        | BenchError::Connect { .. }
        | BenchError::WarmUp { .. } => EXIT_UNAVAILABLE,
        BenchError::Io { .. } | BenchError::WorkerPanicked => EXIT_IO,
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_batch_size_fits_the_limits() {
        // The defaults: signing.max_batch 256, server.max_pending 1024.
        assert_eq!(default_batch_size(256, 1024, 4), 64);
        assert_eq!(default_batch_size(256, 1024, 64), 16);
        assert_eq!(default_batch_size(256, 1024, 1024), 1);
        assert_eq!(default_batch_size(8, 1024, 4), 8);
        assert_eq!(default_batch_size(100, 100, 3), 33);
    }
}
