//! Command-line interface: argument parsing, the key commands, the client
//! commands `sign` and `verify`, the audit log commands and `bench`.

pub mod audit;
pub mod bench;
mod client;
mod input;
pub mod sign;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, ConfigError, ENV_CONFIG, Overrides};
use crate::hsm::{HsmError, Token};
use crate::keys::{self, KeyName};
use crate::server::ServeError;

/// Exit code for a configuration problem (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for an unavailable token (sysexits EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for a key ID that matches no version (sysexits EX_DATAERR).
pub const EXIT_NOT_FOUND: u8 = 65;
/// Exit code for an operation undone because another process made the same
/// change at the same time; running it again succeeds (sysexits EX_TEMPFAIL).
pub const EXIT_RETRY: u8 = 75;
/// Exit code for a failure to bind or serve (sysexits EX_IOERR).
pub const EXIT_IO: u8 = 74;

/// The text of `hallmark --version`: the package version, the git commit
/// it was built from (`unknown` outside a git checkout) and the enabled
/// cargo features. `build.rs` sets both variables.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HALLMARK_GIT_COMMIT"),
    ", features: ",
    env!("HALLMARK_FEATURES"),
    ")"
);

/// Hallmark: a gRPC signing sidecar whose keys never leave the HSM.
#[derive(Debug, Parser)]
#[command(name = "hallmark", version = VERSION, about)]
pub struct Cli {
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the signing service.
    Serve(ServeArgs),
    /// Manage signing keys in the token.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign manifests with a running Hallmark and print the signed outputs.
    Sign(sign::SignArgs),
    /// Verify signed outputs and print a verdict for each; exits 1 if any
    /// is rejected.
    Verify(verify::VerifyArgs),
    /// Verify audit log files or search their records.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Measure signing through PKCS#11 directly and through `hallmark
    /// serve` over TCP and a Unix socket, with the audit log on and off.
    Bench(bench::BenchArgs),
}

/// Options shared by every command that reads the configuration.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration file.
    #[arg(long, short = 'c', env = ENV_CONFIG, default_value = "hallmark.toml")]
    pub config: PathBuf,
}

/// Options of `hallmark serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArgs,
    /// gRPC listen address: host:port, or unix:PATH for a Unix socket.
    #[arg(long)]
    pub listen: Option<String>,
    /// Metrics listen address (host:port) for GET /metrics.
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

/// Key management commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new key version. It signs at once if the name has no
    /// active version, and is published as NEXT otherwise.
    Create {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: ConfigArgs,
        /// Key name; defaults to signing.default_key.
        #[arg(long)]
        name: Option<String>,
        /// RSA modulus size in bits; defaults to keys.<name>.bits.
        #[arg(long, value_parser = ["2048", "3072", "4096"])]
        bits: Option<String>,
    },
    /// List the key versions in the token.
    List {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: ConfigArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the rotation schedule once: publish NEXT versions that are due
    /// and promote them when due. Suitable for a scheduled job.
    Rotate {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: ConfigArgs,
        /// Rotate only this key name; defaults to every configured name.
        #[arg(long)]
        name: Option<String>,
        /// Make a new version sign now, whatever the schedule.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a key version. Verifiers must reject it from now on, and a
    /// revoked active version is replaced at once.
    Revoke {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: ConfigArgs,
        /// Key ID of the version to revoke, as `hallmark keys list` prints it.
        /// It may start with `-`, as base64url key IDs sometimes do.
        #[arg(allow_hyphen_values = true)]
        key_id: String,
    },
    /// Destroy retired and revoked versions whose verify-until time has
    /// passed, and remove interrupted key generations.
    DestroyExpired {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: ConfigArgs,
    },
}

impl Command {
    /// Returns the configuration file and flag overrides of this command,
    /// or `None` for the client commands, which read no configuration.
    pub fn config_source(&self) -> Option<(&PathBuf, Overrides)> {
        Some(match self {
            Command::Serve(args) => (
                &args.config.config,
                Overrides {
                    listen: args.listen.clone(),
                    metrics_listen: args.metrics_listen.clone(),
                },
            ),
            Command::Keys(
                KeysCommand::Create { config, .. }
                | KeysCommand::List { config, .. }
                | KeysCommand::Rotate { config, .. }
                | KeysCommand::Revoke { config, .. }
                | KeysCommand::DestroyExpired { config },
            ) => (&config.config, Overrides::default()),
            Command::Bench(args) => (&args.config.config, Overrides::default()),
            Command::Sign(_) | Command::Verify(_) | Command::Audit(_) => return None,
        })
    }
}

/// Loads the configuration named by the command, or returns `None` for a
/// command that reads none.
pub fn load_config(command: &Command) -> Option<Result<Config, ConfigError>> {
    let (path, overrides) = command.config_source()?;
    Some(config::load(path, &config::ProcessEnv, &overrides))
}

/// Runs a `keys` subcommand. These are short, blocking administrative
/// operations, so they run without an async runtime.
pub fn run_keys(command: &KeysCommand, config: &Config) -> ExitCode {
    let token = match Token::open(&config.hsm) {
        Ok(token) => token,
        Err(error) => return report_hsm(&error),
    };
    let now = SystemTime::now();
    match command {
        KeysCommand::Create { name, bits, .. } => {
            create(&token, config, name.as_deref(), bits.as_deref())
        }
        KeysCommand::List { json, .. } => list(&token, config, *json),
        KeysCommand::Rotate { name, force, .. } => {
            let policies = match name {
                None => config.keys.clone(),
                Some(name) => match configured(config, name) {
                    Ok((name, policy)) => [(name, policy.clone())].into(),
                    Err(code) => return code,
                },
            };
            let mode = if *force {
                keys::RotateMode::Force
            } else {
                keys::RotateMode::Scheduled
            };
            report_transitions(keys::rotate(&token, &policies, mode, now), "nothing is due")
        }
        KeysCommand::Revoke { key_id, .. } => report_transitions(
            keys::revoke(&token, &config.keys, key_id, now),
            "already revoked",
        ),
        KeysCommand::DestroyExpired { .. } => report_transitions(
            keys::destroy_expired(&token, &config.keys, now),
            "nothing has expired",
        ),
    }
}

/// Resolves a key name given on the command line to its configured policy.
fn configured<'a>(
    config: &'a Config,
    name: &str,
) -> Result<(KeyName, &'a crate::config::KeyPolicy), ExitCode> {
    let name = KeyName::parse(name).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    match config.policy(&name) {
        Some(policy) => Ok((name, policy)),
        None => {
            eprintln!("error: key \"{name}\" is not configured; add a [keys.{name}] table first");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Prints one line per change, or `idle` when there was none.
fn report_transitions(result: Result<Vec<keys::Transition>, HsmError>, idle: &str) -> ExitCode {
    match result {
        Ok(done) if done.is_empty() => {
            println!("{idle}");
            ExitCode::SUCCESS
        }
        Ok(done) => {
            for transition in done {
                println!("{transition}");
            }
            ExitCode::SUCCESS
        }
        Err(error @ HsmError::NotFound { .. }) => {
            eprintln!("error: {error}; `hallmark keys list` shows the key IDs");
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Err(error) => report_hsm(&error),
    }
}

fn create(token: &Token, config: &Config, name: Option<&str>, bits: Option<&str>) -> ExitCode {
    let name = name.unwrap_or(config.default_key.as_str()).to_owned();
    let (name, policy) = match configured(config, &name) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let bits = bits.and_then(|b| b.parse().ok()).unwrap_or(policy.bits);
    let is_pss = policy.algorithm == keys::algorithm::Algorithm::RsaPssSha256;
    if is_pss && policy.salt.len_for(bits).is_none() {
        eprintln!(
            "error: keys.{name}.salt = {} does not fit an RSA-{bits} key; choose a larger key or a shorter salt",
            policy.salt
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    report_transitions(
        keys::create_version(token, &name, policy, bits, SystemTime::now()),
        "nothing created: the key already has a NEXT version",
    )
}

fn list(token: &Token, config: &Config, json: bool) -> ExitCode {
    let snapshot = match keys::list_versions(token, &config.keys) {
        Ok(snapshot) => snapshot,
        Err(error) => return report_hsm(&error),
    };
    if !json {
        println!(
            "{:<16} {:>7} {:<8} {:<44} {:>5} {:<20} {:<20} {:<20} {:<20}",
            "NAME",
            "VERSION",
            "STATE",
            "KEY ID",
            "BITS",
            "CREATED",
            "ACTIVATES",
            "ROTATES",
            "VERIFY UNTIL"
        );
    }
    for version in snapshot.versions() {
        let created = prost_types::Timestamp::from(version.created_at).to_string();
        let activates = prost_types::Timestamp::from(version.activates_at).to_string();
        let rotates = prost_types::Timestamp::from(version.rotates_at).to_string();
        let until = prost_types::Timestamp::from(version.verify_until).to_string();
        if json {
            let line = serde_json::json!({
                "key_name": version.name.as_str(),
                "version": version.version,
                "state": version.state.as_str(),
                "algorithm": version.algorithm.as_str(),
                "key_id": version.key_id,
                "bits": version.bits,
                "pss_salt_length": version.salt_len,
                "created_at": created,
                "activates_at": activates,
                "previous_key_id": version.previous_key_id,
                "next_key_id": version.next_key_id,
                "rotates_at": rotates,
                "verify_until": until,
            });
            println!("{line}");
        } else {
            println!(
                "{:<16} {:>7} {:<8} {:<44} {:>5} {:<20} {:<20} {:<20} {:<20}",
                version.name.as_str(),
                version.version,
                version.state.as_str(),
                version.key_id,
                version.bits,
                created,
                activates,
                rotates,
                until
            );
        }
    }
    for problem in snapshot.problems() {
        eprintln!("warning: {problem}");
    }
    ExitCode::SUCCESS
}

/// Prints an HSM error and returns the matching exit code.
pub fn report_hsm(error: &HsmError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(hsm_exit_code(error))
}

/// Returns the exit code for an HSM error: a wrong module path, token
/// selector, PIN or SoftHSM configuration is a configuration problem
/// (64); anything else means that the token is unavailable (69).
pub fn hsm_exit_code(error: &HsmError) -> u8 {
    match error {
        HsmError::ModuleMissing { .. }
        | HsmError::ModuleLoad { .. }
        | HsmError::TokenAmbiguous { .. }
        | HsmError::PinIncorrect { .. }
        | HsmError::Initialize {
            misconfigured: true,
            ..
        } => EXIT_CONFIG,
        // A wrong label or serial is a configuration mistake when other
        // tokens are present; with none present, the token is missing.
        HsmError::TokenNotFound { available, .. } if !available.is_empty() => EXIT_CONFIG,
        HsmError::ConcurrentChange { .. } => EXIT_RETRY,
        _ => EXIT_UNAVAILABLE,
    }
}

/// Returns the exit code for a failure of `serve`.
pub fn serve_exit_code(error: &ServeError) -> u8 {
    match error {
        ServeError::Config(_) => EXIT_CONFIG,
        ServeError::Hsm(hsm) => hsm_exit_code(hsm),
        ServeError::Io { .. }
        | ServeError::Transport(_)
        | ServeError::Setup(_)
        | ServeError::Audit(_) => EXIT_IO,
    }
}
