//! Command-line interface: argument parsing and the key commands.

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
/// Exit code for a failure to bind or serve (sysexits EX_IOERR).
pub const EXIT_IO: u8 = 74;

/// Hallmark: a gRPC signing sidecar whose keys never leave the HSM.
#[derive(Debug, Parser)]
#[command(name = "hallmark", version, about)]
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
    /// Generate a new key version in the token and make it the one that signs.
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
}

impl Command {
    /// The configuration file and flag overrides of this command.
    pub fn config_source(&self) -> (&PathBuf, Overrides) {
        match self {
            Command::Serve(args) => (
                &args.config.config,
                Overrides {
                    listen: args.listen.clone(),
                    metrics_listen: args.metrics_listen.clone(),
                },
            ),
            Command::Keys(
                KeysCommand::Create { config, .. } | KeysCommand::List { config, .. },
            ) => (&config.config, Overrides::default()),
        }
    }
}

/// Loads the configuration named by the command.
pub fn load_config(command: &Command) -> Result<Config, ConfigError> {
    let (path, overrides) = command.config_source();
    config::load(path, &config::ProcessEnv, &overrides)
}

/// Runs a `keys` subcommand. These are short, blocking administrative
/// operations, so they run without an async runtime.
pub fn run_keys(command: &KeysCommand, config: &Config) -> ExitCode {
    let token = match Token::open(&config.hsm) {
        Ok(token) => token,
        Err(error) => return report_hsm(&error),
    };
    match command {
        KeysCommand::Create { name, bits, .. } => {
            create(&token, config, name.as_deref(), bits.as_deref())
        }
        KeysCommand::List { json, .. } => list(&token, config, *json),
    }
}

fn create(token: &Token, config: &Config, name: Option<&str>, bits: Option<&str>) -> ExitCode {
    let name = match name.map(KeyName::parse).transpose() {
        Ok(name) => name.unwrap_or_else(|| config.default_key.clone()),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(policy) = config.policy(&name) else {
        eprintln!("error: key {name:?} is not configured; add a [keys.{name}] table first");
        return ExitCode::from(EXIT_CONFIG);
    };
    let bits = bits.and_then(|b| b.parse().ok()).unwrap_or(policy.bits);
    if policy.salt.len_for(bits).is_none() {
        eprintln!(
            "error: keys.{name}.salt = {} does not fit an RSA-{bits} key; choose a larger key or a shorter salt",
            policy.salt
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    match keys::create_version(token, &name, bits, SystemTime::now()) {
        Ok((version, key_id)) => {
            println!(
                "created key {name} version {version} (RSA-{bits}), key ID {key_id}; it is now active"
            );
            ExitCode::SUCCESS
        }
        Err(error) => report_hsm(&error),
    }
}

fn list(token: &Token, config: &Config, json: bool) -> ExitCode {
    let snapshot = match keys::list_versions(token, &config.keys) {
        Ok(snapshot) => snapshot,
        Err(error) => return report_hsm(&error),
    };
    if !json {
        println!(
            "{:<16} {:>7} {:<8} {:<44} {:>5} {:<20} {:<20} {:<20}",
            "NAME", "VERSION", "STATE", "KEY ID", "BITS", "CREATED", "ROTATES", "VERIFY UNTIL"
        );
    }
    for version in snapshot.versions() {
        let created = prost_types::Timestamp::from(version.created_at).to_string();
        let rotates = prost_types::Timestamp::from(version.rotates_at).to_string();
        let until = prost_types::Timestamp::from(version.verify_until).to_string();
        if json {
            let line = serde_json::json!({
                "key_name": version.name.as_str(),
                "version": version.version,
                "state": version.state.as_str(),
                "key_id": version.key_id,
                "bits": version.bits,
                "pss_salt_length": version.salt_len,
                "created_at": created,
                "rotates_at": rotates,
                "verify_until": until,
            });
            println!("{line}");
        } else {
            println!(
                "{:<16} {:>7} {:<8} {:<44} {:>5} {:<20} {:<20} {:<20}",
                version.name.as_str(),
                version.version,
                version.state.as_str(),
                version.key_id,
                version.bits,
                created,
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

/// The exit code for an HSM error: a wrong module path or selector is a
/// configuration problem, anything else means the token is unavailable.
pub fn hsm_exit_code(error: &HsmError) -> u8 {
    match error {
        HsmError::ModuleMissing { .. }
        | HsmError::ModuleLoad { .. }
        | HsmError::TokenAmbiguous { .. } => EXIT_CONFIG,
        _ => EXIT_UNAVAILABLE,
    }
}

/// The exit code for a failure of `serve`.
pub fn serve_exit_code(error: &ServeError) -> u8 {
    match error {
        ServeError::Config(_) => EXIT_CONFIG,
        ServeError::Hsm(hsm) => hsm_exit_code(hsm),
        ServeError::Io { .. } | ServeError::Transport(_) | ServeError::Setup(_) => EXIT_IO,
    }
}
