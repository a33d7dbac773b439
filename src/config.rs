//! Configuration in four layers, each overriding the one before: built-in
//! defaults, the TOML file, `HALLMARK_*` environment variables, and
//! command-line flags. [`SETTINGS`] lists every key with its variable and
//! flag, and [`Config::sources`] records which layer set each value.
//!
//! Loading checks every value and reports all problems together, so that an
//! operator fixes a file in one pass. The annotated `hallmark.example.toml`
//! at the repository root and the configuration reference in
//! `docs/operations.md` document each key.

mod builder;
mod document;
mod files;
mod pkcs11;
pub mod pkcs11_uri;
mod policy;
mod raw;
mod render;
mod sources;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::audit::AuditConfig;
use crate::caller::CallerRule;
use crate::keys::algorithm::Algorithm;
use crate::keys::{KeyName, SaltSetting};
use crate::secret::Pin;

pub use builder::Depth;
pub use pkcs11_uri::{Pkcs11Uri, UriError};
pub use raw::{SETTINGS, Setting};
pub use render::{format_duration, render};
pub use sources::{Source, Sources};

use builder::Builder;
use pkcs11::ModuleOnly;

/// Environment variable that names the configuration file.
pub const ENV_CONFIG: &str = "HALLMARK_CONFIG";
/// Environment variable that overrides `server.listen`.
pub const ENV_LISTEN: &str = "HALLMARK_LISTEN";
/// Environment variable that overrides `server.metrics_listen`.
pub const ENV_METRICS_LISTEN: &str = "HALLMARK_METRICS_LISTEN";
/// Environment variable that overrides `server.health_listen`.
pub const ENV_HEALTH_LISTEN: &str = "HALLMARK_HEALTH_LISTEN";
/// Environment variable that overrides `server.reflection` (`true` or `false`).
pub const ENV_REFLECTION: &str = "HALLMARK_REFLECTION";
/// Environment variable that overrides `hsm.module`.
pub const ENV_MODULE: &str = "HALLMARK_PKCS11_MODULE";
/// Environment variable that overrides `hsm.token_label`.
pub const ENV_TOKEN_LABEL: &str = "HALLMARK_TOKEN_LABEL";
/// Environment variable that overrides `hsm.token_serial`.
pub const ENV_TOKEN_SERIAL: &str = "HALLMARK_TOKEN_SERIAL";
/// Environment variable that overrides `hsm.pin_file`.
pub const ENV_PIN_FILE: &str = "HALLMARK_PIN_FILE";
/// Environment variable that contains the user PIN itself. It takes precedence
/// over any PIN file.
pub const ENV_PIN: &str = "HALLMARK_PIN";
/// Environment variable that overrides `hsm.sessions`.
pub const ENV_SESSIONS: &str = "HALLMARK_SESSIONS";
/// Environment variable that overrides `signing.refresh_interval`.
pub const ENV_REFRESH_INTERVAL: &str = "HALLMARK_REFRESH_INTERVAL";
/// Environment variable that overrides `signing.default_key`.
pub const ENV_DEFAULT_KEY: &str = "HALLMARK_DEFAULT_KEY";
/// Environment variable that overrides `server.drain_timeout`.
pub const ENV_DRAIN_TIMEOUT: &str = "HALLMARK_DRAIN_TIMEOUT";
/// Environment variable that overrides `hsm.uri`.
pub const ENV_PKCS11_URI: &str = "HALLMARK_PKCS11_URI";
/// Environment variable that overrides `log.level`. `RUST_LOG`, when set,
/// wins over every layer.
pub const ENV_LOG_LEVEL: &str = "HALLMARK_LOG_LEVEL";
/// Environment variable that overrides `log.format`.
pub const ENV_LOG_FORMAT: &str = "HALLMARK_LOG_FORMAT";
/// Environment variable of `tracing-subscriber`'s filter directives. When
/// set, it takes precedence over `log.level` from every layer.
pub const ENV_RUST_LOG: &str = "RUST_LOG";

/// Default gRPC address: loopback only, because a sidecar serves its own pod.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default metrics address: loopback only, so that scraping is opted into.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Default key name, used when `signing.default_key` is not set.
pub const DEFAULT_KEY_NAME: &str = "default";
/// Default log level: lifecycle events, warnings and errors, but not one
/// line per request, which is at debug level.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default cap on a decoded request. A `SignRequest` is under 300 bytes,
/// and a `SignBatchRequest` item at most 182 (a 48-byte digest and a
/// 128-byte request ID with their framing), so a batch of the default
/// 256 items fits in 46 KiB. 64 KiB is far below tonic's 4 MiB default.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Default time that in-flight requests get to finish after a shutdown
/// signal. Kubernetes waits 30 s before SIGKILL, so 10 s leaves room.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between re-reads of the token's key objects.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Default RSA modulus size: 4096 bits outlives a 90-day rotation by decades.
pub const DEFAULT_KEY_BITS: u32 = 4096;
/// Default signing period of one key version.
pub const DEFAULT_ROTATION_PERIOD: Duration = Duration::from_secs(90 * 86_400);
/// Default time that a NEXT version is published before it starts to sign,
/// so that verifiers that cache key sets for up to a week know it in time.
pub const DEFAULT_PREPUBLISH: Duration = Duration::from_secs(7 * 86_400);
/// Default interval between checks of the rotation schedule, when the
/// service rotates keys itself.
pub const DEFAULT_ROTATION_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Default time that verifiers keep accepting a version after it stops signing.
pub const DEFAULT_VERIFY_GRACE: Duration = Duration::from_secs(30 * 86_400);
/// Longest accepted duration: 100 years, far beyond any sensible rotation
/// period, and small enough that adding it to a time cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);
/// Shortest accepted refresh interval, so that re-reads cannot spin.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// Largest accepted session pool. A token rarely offers more parallelism.
pub const MAX_SESSIONS: usize = 256;
/// Largest configuration file read, in bytes: 1 MiB, about 80 times the
/// annotated `hallmark.example.toml`. A larger file is not a configuration,
/// and reading it whole could exhaust memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Environment variable that overrides `audit.directory`.
pub const ENV_AUDIT_DIR: &str = "HALLMARK_AUDIT_DIR";

/// Default audit log directory, the conventional place for a service's
/// persistent state.
pub const DEFAULT_AUDIT_DIR: &str = "/var/lib/hallmark/audit";

/// Default permission bits of the Unix socket: owner and group, so that a
/// model container sharing the group can connect and other users cannot.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// Default most signatures admitted at once, each digest of a batch
/// counting as one. A signature takes from tens of microseconds to tens of
/// milliseconds on an HSM, so 1024 queued signatures are already seconds
/// of work. More would only add latency.
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// Upper bound of `server.max_pending`.
pub const MAX_MAX_PENDING: usize = 1 << 20;

/// Default maximum digests in one SignBatch call. A batch keeps one session
/// for all its digests, so a large one delays the requests queued behind
/// it: 256 RSA-4096 signatures take about a second and a half on SoftHSM.
pub const DEFAULT_MAX_BATCH: usize = 256;

/// Upper bound of `signing.max_batch`.
pub const MAX_MAX_BATCH: usize = 4096;

/// A listen address: TCP `host:port` or a Unix domain socket `unix:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP socket address.
    Tcp(std::net::SocketAddr),
    /// A filesystem path for a Unix domain socket.
    Unix(PathBuf),
}

impl ListenAddr {
    /// Parses `host:port`, `[v6]:port` or `unix:PATH`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, as in unix:/run/hallmark/sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        text.parse()
            .map(Self::Tcp)
            .map_err(|_| format!("{text:?} is not host:port (an IP address and port) or unix:PATH"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The token selector. Slot indices are deliberately not offered,
/// because they change when tokens are added or removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSelector {
    /// Token label (CK_TOKEN_INFO.label, trailing blanks ignored).
    pub label: Option<String>,
    /// Token serial number (CK_TOKEN_INFO.serialNumber, trailing blanks ignored).
    pub serial: Option<String>,
    /// Token manufacturer ID (CK_TOKEN_INFO.manufacturerID), set only by
    /// the `manufacturer` attribute of `hsm.uri`.
    pub manufacturer: Option<String>,
    /// Token model (CK_TOKEN_INFO.model), set only by the `model`
    /// attribute of `hsm.uri`.
    pub model: Option<String>,
}

impl TokenSelector {
    /// Returns whether a token with these fields, without their trailing
    /// blanks, matches every attribute that the selector sets.
    pub fn matches(&self, label: &str, serial: &str, manufacturer: &str, model: &str) -> bool {
        let matches = |wanted: &Option<String>, actual: &str| {
            wanted.as_deref().is_none_or(|wanted| wanted == actual)
        };
        matches(&self.label, label)
            && matches(&self.serial, serial)
            && matches(&self.manufacturer, manufacturer)
            && matches(&self.model, model)
    }
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("label", &self.label),
            ("serial", &self.serial),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name} {v:?}")))
        .collect();
        match parts.as_slice() {
            [] => f.write_str("no selector"),
            [only] => f.write_str(only),
            [first @ .., last] => write!(f, "{} and {last}", first.join(", ")),
        }
    }
}

/// Signing and rotation settings of one key name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Signature algorithm of new versions.
    pub algorithm: Algorithm,
    /// RSA modulus size for new versions: 2048, 3072 or 4096.
    pub bits: u32,
    /// PSS salt length setting.
    pub salt: SaltSetting,
    /// How long a version signs before the next one takes over.
    pub rotation_period: Duration,
    /// How long a NEXT version is published before it starts to sign.
    pub prepublish: Duration,
    /// How long verifiers accept a version after it stops signing.
    pub verify_grace: Duration,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::RsaPssSha256,
            bits: DEFAULT_KEY_BITS,
            salt: SaltSetting::Digest,
            rotation_period: DEFAULT_ROTATION_PERIOD,
            prepublish: DEFAULT_PREPUBLISH,
            verify_grace: DEFAULT_VERIFY_GRACE,
        }
    }
}

/// PEM files of the server's TLS identity and of the CA that issues client
/// certificates. Every client must present a certificate from that CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// The CA certificates that client certificates must chain to.
    pub client_ca: PathBuf,
}

impl TlsFiles {
    /// Reads the PEM files and builds the server's TLS settings, or returns
    /// the problem, worded as `config check` reports it after
    /// `server.tls: `.
    pub fn server_tls(&self) -> Result<tonic::transport::ServerTlsConfig, String> {
        files::server_tls(self)
    }
}

/// Describes a file type that is not a regular file, for messages such as
/// "PATH is a directory, not a regular file".
pub fn describe_file_type(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "a file of unknown type"
    }
}

/// The origin of the user PIN, named in messages. The PIN itself is never
/// shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// The `HALLMARK_PIN` environment variable.
    Environment,
    /// The file that `HALLMARK_PIN_FILE` names.
    EnvironmentFile(PathBuf),
    /// The file that `hsm.pin_file` in the configuration file names.
    ConfigFile(PathBuf),
    /// The file that the `--pin-file` flag names.
    FlagFile(PathBuf),
    /// The file that `pin-source=file:` in `hsm.uri` names.
    UriFile(PathBuf),
}

impl PinSource {
    /// Returns the setting that named the PIN or its file, as messages
    /// name it.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::Environment => ENV_PIN,
            Self::EnvironmentFile(_) => ENV_PIN_FILE,
            Self::ConfigFile(_) => "hsm.pin_file",
            Self::FlagFile(_) => "--pin-file",
            Self::UriFile(_) => "pin-source in hsm.uri",
        }
    }

    /// Returns the file that contains the PIN, or `None` for
    /// `HALLMARK_PIN`.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Environment => None,
            Self::EnvironmentFile(path)
            | Self::ConfigFile(path)
            | Self::FlagFile(path)
            | Self::UriFile(path) => Some(path),
        }
    }
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.file() {
            None => f.write_str(self.setting()),
            Some(path) => write!(f, "{} ({})", self.setting(), path.display()),
        }
    }
}

/// Settings of the PKCS#11 module and token.
#[derive(Clone, Debug)]
pub struct HsmConfig {
    /// Path of the PKCS#11 shared library.
    pub module: PathBuf,
    /// The token to use.
    pub token: TokenSelector,
    /// The user PIN.
    pub pin: Pin,
    /// The origin of the PIN, named in messages.
    pub pin_source: PinSource,
    /// Number of pooled signing sessions.
    pub sessions: usize,
    /// Environment variables set before the module loads, such as
    /// `SOFTHSM2_CONF`.
    pub module_env: BTreeMap<String, String>,
    /// The `hsm.uri` text, when the module or token came from one.
    pub uri: Option<String>,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?} is not text or json")),
        }
    }

    /// Returns the name that [`LogFormat::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// Log settings. `RUST_LOG`, when set, replaces `level`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
    /// comma-separated `target=level` directives.
    pub level: String,
    /// The output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: DEFAULT_LOG_LEVEL.to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// The level names that `log.level` accepts, alone or after `target=`.
const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log level: a level name, or comma-separated directives that
/// each end in one, such as `info,hallmark=debug`.
///
/// `tracing-subscriber` reads a bare word as a target to log at every
/// level, so a misspelt level would turn on trace logging. This check
/// rejects such words.
pub fn check_log_level(text: &str) -> Result<(), String> {
    let directives: Vec<&str> = text.split(',').map(str::trim).collect();
    let valid = !text.trim().is_empty()
        && directives.iter().all(|directive| {
            let level = directive
                .rsplit_once('=')
                .map_or(*directive, |(_, level)| level);
            LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str())
        });
    let parses = tracing_subscriber::EnvFilter::builder().parse(text).is_ok();
    if valid && parses {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a log level; use off, error, warn, info, debug or trace, or \
             directives such as \"info,hallmark=debug\""
        ))
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// gRPC listen address.
    pub listen: ListenAddr,
    /// Prometheus metrics listen address (TCP only).
    pub metrics_listen: std::net::SocketAddr,
    /// A plain-text TCP listener that serves gRPC health checks only, for
    /// kubelet probes when the service itself is on a Unix socket.
    pub health_listen: Option<std::net::SocketAddr>,
    /// Whether gRPC server reflection is served.
    pub reflection: bool,
    /// Largest accepted request message, in bytes.
    pub max_request_bytes: usize,
    /// How long in-flight requests get to finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// PKCS#11 settings.
    pub hsm: HsmConfig,
    /// Key name used when a request names none.
    pub default_key: KeyName,
    /// Interval between re-reads of the token's key objects.
    pub refresh_interval: Duration,
    /// Whether the service starts, not serving, when the default key has no
    /// active version, instead of exiting.
    pub wait_for_default_key: bool,
    /// Maximum digests in one SignBatch call.
    pub max_batch: usize,
    /// Policy of every configured key name. Requests may only use these names.
    pub keys: BTreeMap<KeyName, KeyPolicy>,
    /// Whether this instance rotates keys on schedule. With several
    /// instances on one token, enable it on one only, or rotate with
    /// `hallmark keys rotate` from a scheduled job.
    pub rotation_enabled: bool,
    /// Interval between checks of the rotation schedule.
    pub rotation_check_interval: Duration,
    /// Permission bits of the Unix socket file.
    pub socket_mode: u32,
    /// Whether a non-loopback TCP listener without TLS is allowed.
    pub allow_insecure_tcp: bool,
    /// Mutual TLS for a TCP listener, or `None` for plain text.
    pub tls: Option<TlsFiles>,
    /// Most signatures admitted at once, queued for a session or being
    /// signed, each digest of a batch counting as one; more fail fast with
    /// RESOURCE_EXHAUSTED.
    pub max_pending: usize,
    /// The configured callers; empty means the default policy.
    pub callers: Vec<CallerRule>,
    /// The audit log settings, or `None` when `audit.enabled = false`.
    pub audit: Option<AuditConfig>,
    /// The key that signs audit checkpoints and nothing else, or `None` to
    /// sign them with the default key.
    pub checkpoint_key: Option<KeyName>,
    /// Log level and format.
    pub log: LogConfig,
    /// The layer that set each value.
    pub sources: Sources,
}

impl Config {
    /// Returns the policy of a configured key name.
    pub fn policy(&self, name: &KeyName) -> Option<&KeyPolicy> {
        self.keys.get(name)
    }
}

/// Command-line values that override the file and the environment, as
/// text, so that a bad flag is reported with every other problem. Paths
/// must already be absolute or relative to the configuration file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<String>,
    /// `--health-listen`.
    pub health_listen: Option<String>,
    /// `--reflection`.
    pub reflection: Option<String>,
    /// `--drain-timeout`.
    pub drain_timeout: Option<String>,
    /// `--pkcs11-uri`.
    pub pkcs11_uri: Option<String>,
    /// `--module`.
    pub module: Option<String>,
    /// `--token-label`.
    pub token_label: Option<String>,
    /// `--token-serial`.
    pub token_serial: Option<String>,
    /// `--pin-file`.
    pub pin_file: Option<String>,
    /// `--sessions`.
    pub sessions: Option<String>,
    /// `--default-key`.
    pub default_key: Option<String>,
    /// `--refresh-interval`.
    pub refresh_interval: Option<String>,
    /// `--audit-dir`.
    pub audit_dir: Option<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

impl Overrides {
    /// Returns the flag value for a key of [`SETTINGS`].
    pub fn get(&self, key: &str) -> Option<&str> {
        let value = match key {
            "server.listen" => &self.listen,
            "server.metrics_listen" => &self.metrics_listen,
            "server.health_listen" => &self.health_listen,
            "server.reflection" => &self.reflection,
            "server.drain_timeout" => &self.drain_timeout,
            "hsm.uri" => &self.pkcs11_uri,
            "hsm.module" => &self.module,
            "hsm.token_label" => &self.token_label,
            "hsm.token_serial" => &self.token_serial,
            "hsm.pin_file" => &self.pin_file,
            "hsm.sessions" => &self.sessions,
            "signing.default_key" => &self.default_key,
            "signing.refresh_interval" => &self.refresh_interval,
            "audit.directory" => &self.audit_dir,
            "log.level" => &self.log_level,
            "log.format" => &self.log_format,
            _ => return None,
        };
        value.as_deref()
    }
}

/// Every problem found while loading the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration{}:\n  - {}", source_suffix(.path), .problems.join("\n  - "))]
pub struct ConfigError {
    /// The file that was read, if any.
    pub path: Option<PathBuf>,
    /// One line per problem, each naming the key and the fix.
    pub problems: Vec<String>,
}

fn source_suffix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

/// The value of an environment variable is not valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotUnicode;

/// Source of environment values, so that tests need not touch the process
/// environment.
pub trait Environment {
    /// Returns the value of a variable, or `None` when it is unset.
    ///
    /// # Errors
    ///
    /// [`NotUnicode`] when the value is not valid UTF-8.
    fn var(&self, name: &str) -> Result<Option<String>, NotUnicode>;
}

/// The process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Result<Option<String>, NotUnicode> {
        match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(NotUnicode),
        }
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Result<Option<String>, NotUnicode> {
        Ok(self.get(name).cloned())
    }
}

/// Describes the problem with the variable `name` whose value is not
/// valid UTF-8, for a message that already names the variable. The value
/// is not shown, because it may be a PIN.
pub fn not_unicode_problem(name: &str) -> String {
    format!("the value is not valid UTF-8; set it to UTF-8 text or unset {name}")
}

/// Loads the configuration file at `path`, applies environment and flag
/// overrides, and validates the result.
pub fn load(
    path: &Path,
    env: &dyn Environment,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    load_to_depth(path, env, overrides, Depth::Values)
}

/// Loads the configuration like [`load`], and with [`Depth::Files`] also
/// checks the files and directories that `serve` uses.
pub fn load_to_depth(
    path: &Path,
    env: &dyn Environment,
    overrides: &Overrides,
    depth: Depth,
) -> Result<Config, ConfigError> {
    let text = read(path)?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse_to_depth(&text, base_dir, env, overrides, depth).map_err(|problems| ConfigError {
        path: Some(path.to_owned()),
        problems,
    })
}

/// Reads the PKCS#11 module path and `hsm.module_env` from the file at
/// `path`, with their overrides, without checking the rest. `hallmark
/// tokens list` uses it before a token is chosen.
///
/// # Errors
///
/// [`ConfigError`] when the file cannot be read or parsed, or when it
/// names no module.
pub fn load_module(
    path: &Path,
    env: &dyn Environment,
    overrides: &Overrides,
) -> Result<(PathBuf, BTreeMap<String, String>), ConfigError> {
    let error = |problems| ConfigError {
        path: Some(path.to_owned()),
        problems,
    };
    let text = read(path)?;
    let document = document::read(&text).map_err(error)?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let missing = format!(
        "hsm.module is missing: set it to the PKCS#11 library path (or set {ENV_MODULE}, or \
         module-path in hsm.uri), or give --module"
    );
    module_of(document, base_dir, env, overrides, missing).map_err(error)
}

/// Reads the PKCS#11 module path from `HALLMARK_PKCS11_MODULE` or from the
/// `module-path` of `HALLMARK_PKCS11_URI`, for `hallmark tokens list`
/// without a configuration file. A relative path is resolved against the
/// working directory.
///
/// # Errors
///
/// [`ConfigError`] when a variable is invalid or neither names a module.
pub fn load_module_without_file(
    env: &dyn Environment,
    overrides: &Overrides,
) -> Result<PathBuf, ConfigError> {
    let error = |problems| ConfigError {
        path: None,
        problems,
    };
    let document = document::read("").map_err(error)?;
    let missing = format!(
        "no PKCS#11 module: no configuration file was found, and neither {ENV_MODULE} nor the \
         module-path of {ENV_PKCS11_URI} is set; give --module PATH or --config FILE, or set \
         {ENV_MODULE}"
    );
    module_of(document, Path::new("."), env, overrides, missing)
        .map(|(module, _)| module)
        .map_err(error)
}

/// Returns the module and `hsm.module_env` of `document`, or the problems
/// with them, with `missing` when no layer names a module. Problems
/// outside `[hsm]` are ignored.
fn module_of(
    document: document::Document,
    base_dir: &Path,
    env: &dyn Environment,
    overrides: &Overrides,
    missing: String,
) -> Result<(PathBuf, BTreeMap<String, String>), Vec<String>> {
    let mut builder = Builder::new(base_dir, env, overrides, Depth::Values);
    let in_hsm = |key: &str| key == "hsm" || key.starts_with("hsm.");
    builder.reject(
        document
            .rejected
            .into_iter()
            .filter(|rejected| in_hsm(&rejected.key))
            .collect(),
    );
    let raw = document.raw;
    let ModuleOnly { module, module_env } = builder.module_only(raw.hsm);
    if module.is_none() && builder.problems.is_empty() {
        builder.problem(missing);
    }
    match module {
        Some(module) if builder.problems.is_empty() => Ok((module, module_env)),
        _ => Err(builder.problems),
    }
}

/// Reads the log settings from the flags in `overrides` and from the
/// environment alone, for the commands that read no configuration file.
/// Returns the settings, with the default in place of each invalid value,
/// and the problems with the flags and variables.
pub fn log_without_file(env: &dyn Environment, overrides: &Overrides) -> (LogConfig, Vec<String>) {
    let mut builder = Builder::new(Path::new("."), env, overrides, Depth::Values);
    let log = builder.log(raw::RawLog::default());
    (log, builder.problems)
}

/// Returns the log format that the flags, the environment or else the
/// file at `path` choose, as far as they can be read, so that a problem
/// that stops loading is printed in that format. Returns
/// [`LogFormat::Text`] when the chosen value cannot be read.
pub fn log_format_hint(path: &Path, env: &dyn Environment, overrides: &Overrides) -> LogFormat {
    let layered = match &overrides.log_format {
        Some(flag) => Some(flag.clone()),
        None => env.var(ENV_LOG_FORMAT).unwrap_or_default(),
    };
    let text = layered.or_else(|| {
        let document: toml::Table = read_text(path).ok()?.parse().ok()?;
        Some(document.get("log")?.get("format")?.as_str()?.to_owned())
    });
    text.and_then(|text| LogFormat::parse(&text).ok())
        .unwrap_or(LogFormat::Text)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    read_text(path).map_err(|problem| ConfigError {
        path: Some(path.to_owned()),
        problems: vec![problem],
    })
}

/// Reads the configuration file at `path` as text, or returns the problem.
/// Only a regular file of at most [`MAX_CONFIG_BYTES`] is read, because
/// opening a FIFO waits for a writer and a device such as `/dev/zero` never
/// ends.
fn read_text(path: &Path) -> Result<String, String> {
    let cannot_read = |error: std::io::Error| format!("cannot read the file: {error}");
    let metadata = std::fs::metadata(path).map_err(cannot_read)?;
    if !metadata.is_file() {
        return Err(format!(
            "{} is {}, but the configuration must be a regular file; point --config or \
             {ENV_CONFIG} at the configuration file",
            path.display(),
            describe_file_type(&metadata.file_type())
        ));
    }
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let mut bytes = Vec::new();
    // One byte more than the limit shows whether the file exceeds it, also
    // when it grew after the metadata was read.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "{} is larger than the maximum of {} MiB for a configuration file; point \
             --config or {ENV_CONFIG} at the configuration file",
            path.display(),
            MAX_CONFIG_BYTES / (1024 * 1024)
        ));
    }
    String::from_utf8(bytes)
        .map_err(|error| format!("cannot read the file: it is not valid UTF-8 ({error})"))
}

/// Parses and validates configuration text. Relative paths in the file are
/// resolved against `base_dir`.
pub fn parse(
    text: &str,
    base_dir: &Path,
    env: &dyn Environment,
    overrides: &Overrides,
) -> Result<Config, Vec<String>> {
    parse_to_depth(text, base_dir, env, overrides, Depth::Values)
}

/// [`parse`] with a choice of [`Depth`].
pub fn parse_to_depth(
    text: &str,
    base_dir: &Path,
    env: &dyn Environment,
    overrides: &Overrides,
    depth: Depth,
) -> Result<Config, Vec<String>> {
    let document = document::read(text)?;
    let mut builder = Builder::new(base_dir, env, overrides, depth);
    builder.reject(document.rejected);
    builder.build(document.raw)
}

/// Parses a human duration: a whole number followed by `ms`, `s`, `m`, `h`
/// or `d`, for example `90d` or `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() != text {
        return Err(format!(
            "{text:?} starts or ends with whitespace; remove it"
        ));
    }
    let too_long = || {
        format!(
            "{text:?} is longer than the maximum of {}",
            format_duration(MAX_DURATION)
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit; write for example 90d, 12h, 30s or 500ms"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("{text:?} does not start with a whole number"));
    }
    // Only digits remain, so the parse fails only on overflow.
    let value: u64 = number.parse().map_err(|_| too_long())?;
    let seconds_per_unit = match unit {
        "ms" => return Ok(Duration::from_millis(value)),
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} has unknown unit {unit:?}; use ms, s, m, h or d"
            ));
        }
    };
    value
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(too_long)
}

#[cfg(test)]
mod tests;
