//! `hallmark bench`: the options, the run and its output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{ConfigArgs, EXIT_CONFIG, EXIT_IO, EXIT_UNAVAILABLE, hsm_exit_code};
use crate::bench::{self, Audit, BenchError, Plan, Report};
use crate::config::Config;

/// Maximum requests per configuration. Each request keeps its digest and its
/// latency in memory until the report is made.
const MAX_REQUESTS: u64 = 1_000_000;

/// Maximum number of concurrent gRPC clients.
const MAX_CLIENTS: u64 = 4096;

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
    /// Sign requests per configuration, not counting one warm-up request
    /// per thread or client.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_REQUESTS))]
    pub requests: u64,
    /// Concurrent gRPC clients, each with its own connection; defaults to
    /// twice hsm.sessions, so that every session stays busy while
    /// responses travel back.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_CLIENTS))]
    pub clients: Option<u64>,
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
    print!("{}", report.table());
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(path) = &args.json
        && let Err(error) = write_json(&report, path)
    {
        return report_error(&error);
    }
    let failed: u64 = report
        .keys
        .iter()
        .flat_map(|key| &key.configurations)
        .map(|configuration| configuration.errors)
        .sum();
    if failed > 0 {
        eprintln!("error: {failed} requests failed; the table counts them under errors");
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
    let exe = std::env::current_exe().map_err(|source| BenchError::Io {
        context: "cannot find the hallmark binary to start as the service".into(),
        source,
    })?;
    Ok(Plan {
        exe,
        config_path: args.config.config.clone(),
        keys,
        requests: usize::try_from(args.requests).unwrap_or(usize::MAX),
        clients,
        audit: args.audit.modes(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    })
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
    eprintln!("error: {error}");
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
