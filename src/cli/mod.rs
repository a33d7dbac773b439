//! Command-line interface: argument parsing, the key commands, the client
//! commands `sign` and `verify`, the audit log commands, `bench`, and the
//! operator commands `config` and `tokens`.

pub mod audit;
pub mod bench;
mod client;
pub mod config;
mod input;
pub mod logging;
mod output;
pub mod sign;
pub mod tokens;
pub mod verify;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand};

use crate::config::{self as settings, Config, ConfigError, ENV_CONFIG, Overrides};
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
    /// Log output format. Overrides log.format and HALLMARK_LOG_FORMAT.
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Log level (off, error, warn, info, debug, trace) or directives such
    /// as info,hallmark=debug. Overrides log.level and HALLMARK_LOG_LEVEL;
    /// RUST_LOG, when set, wins over all of them.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the signing service.
    Serve(SettingsArgs),
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
    /// Check the configuration or print its effective values.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// List the slots and tokens of a PKCS#11 module.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
}

/// Options shared by every command that reads the configuration.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration file.
    #[arg(long, short = 'c', env = ENV_CONFIG, default_value = "hallmark.toml")]
    pub config: PathBuf,
}

/// Flags that override the configuration file and the `HALLMARK_*`
/// environment variables. Each names the key it overrides.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Configuration overrides")]
pub struct OverrideArgs {
    /// gRPC listen address: host:port, or unix:PATH for a Unix socket
    /// [server.listen].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address (host:port) of GET /metrics and the JWKS [server.metrics_listen].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Plain-text TCP address (host:port) that serves only gRPC health
    /// checks [server.health_listen].
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<String>,
    /// Serve gRPC reflection: true or false [server.reflection].
    #[arg(long, value_name = "BOOL")]
    pub reflection: Option<String>,
    /// Time that requests in progress get after SIGTERM, such as 10s
    /// [server.drain_timeout].
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// RFC 7512 pkcs11: URI of the token, and optionally of the module and
    /// PIN file [hsm.uri].
    #[arg(long, value_name = "URI")]
    pub pkcs11_uri: Option<String>,
    /// Path of the PKCS#11 library [hsm.module].
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// Label of the token to use [hsm.token_label].
    #[arg(long, value_name = "LABEL")]
    pub token_label: Option<String>,
    /// Serial number of the token to use [hsm.token_serial].
    #[arg(long, value_name = "SERIAL")]
    pub token_serial: Option<String>,
    /// File that contains the user PIN [hsm.pin_file].
    #[arg(long, value_name = "PATH")]
    pub pin_file: Option<PathBuf>,
    /// Number of PKCS#11 sessions in the signing pool [hsm.sessions].
    #[arg(long, value_name = "COUNT")]
    pub sessions: Option<String>,
    /// Key name used when a request names none [signing.default_key].
    #[arg(long, value_name = "NAME")]
    pub default_key: Option<String>,
    /// Interval between re-reads of the token's keys, such as 30s
    /// [signing.refresh_interval].
    #[arg(long, value_name = "DURATION")]
    pub refresh_interval: Option<String>,
    /// Directory of the audit log [audit.directory].
    #[arg(long, value_name = "PATH")]
    pub audit_dir: Option<PathBuf>,
}

/// The configuration file and the flags that override it.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub overrides: OverrideArgs,
}

impl SettingsArgs {
    /// Returns the flag values as [`Overrides`], with the global log flags
    /// of `cli`. Paths become absolute here, because the configuration
    /// resolves relative paths against its own directory, and a path typed
    /// on the command line is relative to the working directory.
    pub fn overrides(&self, cli: &Cli) -> Overrides {
        let flags = &self.overrides;
        Overrides {
            listen: flags.listen.clone(),
            metrics_listen: flags.metrics_listen.clone(),
            health_listen: flags.health_listen.clone(),
            reflection: flags.reflection.clone(),
            drain_timeout: flags.drain_timeout.clone(),
            pkcs11_uri: flags.pkcs11_uri.clone(),
            module: flags.module.as_deref().map(absolute),
            token_label: flags.token_label.clone(),
            token_serial: flags.token_serial.clone(),
            pin_file: flags.pin_file.as_deref().map(absolute),
            sessions: flags.sessions.clone(),
            default_key: flags.default_key.clone(),
            refresh_interval: flags.refresh_interval.clone(),
            audit_dir: flags.audit_dir.as_deref().map(absolute),
            ..cli.log_overrides()
        }
    }
}

/// Returns `path` made absolute against the working directory, as text.
fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .to_string_lossy()
        .into_owned()
}

/// Key management commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new key version. It signs at once if the name has no
    /// active version, and is published as NEXT otherwise.
    Create {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: SettingsArgs,
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
        config: SettingsArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the rotation schedule once: publish NEXT versions that are due
    /// and promote them when due. Suitable for a scheduled job.
    Rotate {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: SettingsArgs,
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
        config: SettingsArgs,
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
        config: SettingsArgs,
    },
}

impl Cli {
    /// Returns the global log flags as [`Overrides`].
    pub fn log_overrides(&self) -> Overrides {
        Overrides {
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
            ..Overrides::default()
        }
    }

    /// Returns the configuration file and flag overrides of the command,
    /// or `None` for the commands that read no whole configuration.
    pub fn config_source(&self) -> Option<(&PathBuf, Overrides)> {
        Some(match &self.command {
            Command::Serve(args) => (&args.config.config, args.overrides(self)),
            Command::Keys(
                KeysCommand::Create { config, .. }
                | KeysCommand::List { config, .. }
                | KeysCommand::Rotate { config, .. }
                | KeysCommand::Revoke { config, .. }
                | KeysCommand::DestroyExpired { config },
            ) => (&config.config.config, config.overrides(self)),
            Command::Bench(args) => (&args.config.config, self.log_overrides()),
            Command::Sign(_)
            | Command::Verify(_)
            | Command::Audit(_)
            | Command::Config(_)
            | Command::Tokens(_) => return None,
        })
    }
}

/// Loads the configuration named by the command, or returns `None` for a
/// command that reads none. For `serve`, this also reads the TLS files, so
/// that a problem with them exits 64 before the token is opened, with the
/// reason that `config check` gives.
pub fn load_config(cli: &Cli) -> Option<Result<Config, ConfigError>> {
    let (path, overrides) = cli.config_source()?;
    let depth = match cli.command {
        Command::Serve(_) => settings::Depth::TlsFiles,
        _ => settings::Depth::Values,
    };
    Some(settings::load_to_depth(
        path,
        &settings::ProcessEnv,
        &overrides,
        depth,
    ))
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
        logging::error(&error);
        ExitCode::from(EXIT_CONFIG)
    })?;
    match config.policy(&name) {
        Some(policy) => Ok((name, policy)),
        None => {
            logging::error(&format_args!(
                "key \"{name}\" is not configured; add a [keys.{name}] table first"
            ));
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Prints one line per change, or `idle` when there was none.
fn report_transitions(result: Result<Vec<keys::Transition>, HsmError>, idle: &str) -> ExitCode {
    match result {
        Ok(done) => {
            let written = output::write_with(|out| {
                if done.is_empty() {
                    writeln!(out, "{idle}")?;
                }
                for transition in done {
                    writeln!(out, "{transition}")?;
                }
                Ok(())
            });
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => code,
            }
        }
        Err(error @ HsmError::NotFound { .. }) => {
            logging::error(&format_args!(
                "{error}; `hallmark keys list` shows the key IDs"
            ));
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
        logging::error(&format_args!(
            "keys.{name}.salt = {} does not fit an RSA-{bits} key; choose a larger key or a shorter salt",
            policy.salt
        ));
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
    if let Err(code) = output::write_with(|out| write_versions(out, &snapshot, json)) {
        return code;
    }
    for problem in snapshot.problems() {
        stderr_line!("warning: {problem}");
    }
    ExitCode::SUCCESS
}

/// Writes the versions of `snapshot` as a table, or as JSON lines.
fn write_versions(out: &mut dyn Write, snapshot: &keys::Snapshot, json: bool) -> io::Result<()> {
    if !json {
        writeln!(
            out,
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
        )?;
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
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
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
            )?;
        }
    }
    Ok(())
}

/// Prints an HSM error and returns the matching exit code.
pub fn report_hsm(error: &HsmError) -> ExitCode {
    logging::error(error);
    ExitCode::from(hsm_exit_code(error))
}

/// Returns the exit code for an HSM error: a wrong module path, token
/// selector, PIN or SoftHSM configuration is a configuration problem
/// (64); anything else means that the token is unavailable (69).
pub fn hsm_exit_code(error: &HsmError) -> u8 {
    match error {
        HsmError::ModuleMissing { .. }
        | HsmError::ModuleNotFile { .. }
        | HsmError::ModuleLoad { .. }
        | HsmError::TokenAmbiguous { .. }
        | HsmError::SoftHsmTokenDirectoryUnset { .. }
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
