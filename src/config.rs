//! Configuration: a TOML file, then `HALLMARK_*` environment variables, then
//! command-line flags, each layer overriding the one before.
//!
//! Loading checks every value and reports all problems together, so that an
//! operator fixes a file in one pass. The annotated `hallmark.example.toml`
//! at the repository root documents each key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::audit::AuditConfig;
use crate::caller::{CallerRule, KeyScope, RateLimit, Selector};
use crate::keys::algorithm::Algorithm;
use crate::keys::{KeyName, SaltSetting};
use crate::secret::Pin;

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

/// Default gRPC address: loopback only, because a sidecar serves its own pod.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default metrics address: loopback only, so that scraping is opted into.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
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

/// Environment variable that overrides `audit.directory`.
pub const ENV_AUDIT_DIR: &str = "HALLMARK_AUDIT_DIR";

/// Default audit log directory, the conventional place for a service's
/// persistent state.
pub const DEFAULT_AUDIT_DIR: &str = "/var/lib/hallmark/audit";

/// Default permission bits of the Unix socket: owner and group, so that a
/// model container sharing the group can connect and other users cannot.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// Default most Sign requests admitted at once. A signature takes from
/// tens of microseconds to tens of milliseconds on an HSM, so 1024 queued
/// requests are already seconds of work. More would only add latency.
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// Upper bound of `server.max_pending`.
pub const MAX_MAX_PENDING: usize = 1 << 20;

/// Default most digests in one SignBatch call. A batch holds one session
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSelector {
    /// Token label (CK_TOKEN_INFO.label, trailing blanks ignored).
    pub label: Option<String>,
    /// Token serial number (CK_TOKEN_INFO.serialNumber, trailing blanks ignored).
    pub serial: Option<String>,
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.label, &self.serial) {
            (Some(label), Some(serial)) => write!(f, "label {label:?} and serial {serial:?}"),
            (Some(label), None) => write!(f, "label {label:?}"),
            (None, Some(serial)) => write!(f, "serial {serial:?}"),
            (None, None) => write!(f, "no selector"),
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
}

/// The origin of the user PIN: an environment variable or a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// The `HALLMARK_PIN` environment variable.
    Environment,
    /// The file that `HALLMARK_PIN_FILE` names.
    EnvironmentFile(PathBuf),
    /// The file that `hsm.pin_file` names.
    ConfigFile(PathBuf),
}

impl std::fmt::Display for PinSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Environment => f.write_str(ENV_PIN),
            Self::EnvironmentFile(path) => write!(f, "{ENV_PIN_FILE} ({})", path.display()),
            Self::ConfigFile(path) => write!(f, "hsm.pin_file ({})", path.display()),
        }
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
    /// Most digests in one SignBatch call.
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
    /// Most Sign requests admitted at once, queued for a session or
    /// signing; more fail fast with RESOURCE_EXHAUSTED.
    pub max_pending: usize,
    /// The configured callers; empty means the default policy.
    pub callers: Vec<CallerRule>,
    /// The audit log settings, or `None` when `audit.enabled = false`.
    pub audit: Option<AuditConfig>,
    /// The key that signs audit checkpoints and nothing else, or `None` to
    /// sign them with the default key.
    pub checkpoint_key: Option<KeyName>,
}

impl Config {
    /// Returns the policy of a configured key name.
    pub fn policy(&self, name: &KeyName) -> Option<&KeyPolicy> {
        self.keys.get(name)
    }
}

/// Command-line values that override the file and the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<String>,
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

/// The file as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    hsm: RawHsm,
    #[serde(default)]
    signing: RawSigning,
    #[serde(default)]
    keys: BTreeMap<String, RawKey>,
    #[serde(default)]
    rotation: RawRotation,
    #[serde(default)]
    callers: Vec<RawCaller>,
    #[serde(default)]
    audit: RawAudit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    enabled: Option<bool>,
    directory: Option<PathBuf>,
    max_file_bytes: Option<u64>,
    append_timeout: Option<String>,
    checkpoint_interval: Option<String>,
    checkpoint_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    name: Option<String>,
    uid: Option<u32>,
    spiffe_id: Option<String>,
    cn: Option<String>,
    keys: Option<Vec<String>>,
    rate: Option<f64>,
    burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    enabled: Option<bool>,
    check_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    metrics_listen: Option<String>,
    reflection: Option<bool>,
    max_request_bytes: Option<usize>,
    drain_timeout: Option<String>,
    socket_mode: Option<String>,
    allow_insecure_tcp: Option<bool>,
    health_listen: Option<String>,
    max_pending: Option<usize>,
    tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHsm {
    module: Option<PathBuf>,
    token_label: Option<String>,
    token_serial: Option<String>,
    pin_file: Option<PathBuf>,
    sessions: Option<usize>,
    #[serde(default)]
    module_env: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    default_key: Option<String>,
    refresh_interval: Option<String>,
    wait_for_default_key: Option<bool>,
    max_batch: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    algorithm: Option<String>,
    bits: Option<u32>,
    salt: Option<toml::Value>,
    rotation_period: Option<String>,
    prepublish: Option<String>,
    verify_grace: Option<String>,
}

/// Source of environment values, so that tests need not touch the process
/// environment.
pub trait Environment {
    /// Returns the value of a variable, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Loads the configuration file at `path`, applies environment and flag
/// overrides, and validates the result.
pub fn load(
    path: &Path,
    env: &dyn Environment,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        path: Some(path.to_owned()),
        problems: vec![format!("cannot read the file: {error}")],
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, base_dir, env, overrides).map_err(|problems| ConfigError {
        path: Some(path.to_owned()),
        problems,
    })
}

/// Parses and validates configuration text. Relative paths in the file are
/// resolved against `base_dir`.
pub fn parse(
    text: &str,
    base_dir: &Path,
    env: &dyn Environment,
    overrides: &Overrides,
) -> Result<Config, Vec<String>> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| vec![error.to_string()])?;
    Builder::new(base_dir, env, overrides).build(raw)
}

/// Collects problems while turning a [`RawConfig`] into a [`Config`].
struct Builder<'a> {
    base_dir: &'a Path,
    env: &'a dyn Environment,
    overrides: &'a Overrides,
    problems: Vec<String>,
}

impl<'a> Builder<'a> {
    fn new(base_dir: &'a Path, env: &'a dyn Environment, overrides: &'a Overrides) -> Self {
        Self {
            base_dir,
            env,
            overrides,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }

    /// Picks the flag, then the environment variable, then the file value.
    fn layered(
        &self,
        flag: Option<&String>,
        env_name: &str,
        file: Option<String>,
    ) -> Option<String> {
        flag.cloned().or_else(|| self.env.var(env_name)).or(file)
    }

    fn build(mut self, raw: RawConfig) -> Result<Config, Vec<String>> {
        let listen_text = self
            .layered(
                self.overrides.listen.as_ref(),
                ENV_LISTEN,
                raw.server.listen,
            )
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = ListenAddr::parse(&listen_text)
            .map_err(|e| self.problem(format!("server.listen: {e}")))
            .ok();

        let metrics_listen = self.metrics_listen(raw.server.metrics_listen);
        let health_listen = self
            .env
            .var(ENV_HEALTH_LISTEN)
            .or(raw.server.health_listen)
            .and_then(|text| {
                text.parse()
                    .map_err(|_| {
                        self.problem(format!(
                            "server.health_listen: {text:?} is not host:port with an IP address"
                        ))
                    })
                    .ok()
            });
        let reflection = self.reflection(raw.server.reflection);
        let max_request_bytes = raw
            .server
            .max_request_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if !(256..=4 * 1024 * 1024).contains(&max_request_bytes) {
            self.problem(format!(
                "server.max_request_bytes: {max_request_bytes} is outside 256..=4194304"
            ));
        }

        let drain_timeout = match raw.server.drain_timeout {
            None => DEFAULT_DRAIN_TIMEOUT,
            Some(text) => self
                .duration("server.drain_timeout", &text)
                .unwrap_or(DEFAULT_DRAIN_TIMEOUT),
        };
        let hsm = self.hsm(raw.hsm);
        let keys = self.keys(raw.keys);
        let default_key = self.default_key(raw.signing.default_key, &keys);
        let refresh_text = self
            .env
            .var(ENV_REFRESH_INTERVAL)
            .or(raw.signing.refresh_interval);
        let refresh_interval = match refresh_text {
            None => DEFAULT_REFRESH_INTERVAL,
            Some(text) => self
                .duration_at_least("signing.refresh_interval", &text, MIN_REFRESH_INTERVAL)
                .unwrap_or(DEFAULT_REFRESH_INTERVAL),
        };

        for (name, policy) in &keys {
            if policy.verify_grace < refresh_interval {
                self.problem(format!(
                    "keys.{name}.verify_grace must be at least signing.refresh_interval, \
                     because an instance may sign with a retired version until its next refresh"
                ));
            }
        }
        let wait_for_default_key = raw.signing.wait_for_default_key.unwrap_or(false);
        let rotation_enabled = raw.rotation.enabled.unwrap_or(false);
        let rotation_check_interval = match raw.rotation.check_interval {
            None => DEFAULT_ROTATION_CHECK_INTERVAL,
            Some(text) => self
                .duration_at_least("rotation.check_interval", &text, Duration::from_secs(1))
                .unwrap_or(DEFAULT_ROTATION_CHECK_INTERVAL),
        };

        let socket_mode = self.socket_mode(raw.server.socket_mode);
        let allow_insecure_tcp = raw.server.allow_insecure_tcp.unwrap_or(false);
        let tls = raw.server.tls.and_then(|raw| self.tls(raw));
        if tls.is_some() && matches!(listen, Some(ListenAddr::Unix(_))) {
            self.problem(
                "server.tls applies to TCP listeners; a Unix socket identifies callers by \
                 their uid",
            );
        }
        if let Some(ListenAddr::Tcp(addr)) = &listen
            && !addr.ip().is_loopback()
            && tls.is_none()
            && !allow_insecure_tcp
        {
            self.problem(format!(
                "server.listen: {addr} is not a loopback address and server.tls is not set, \
                 so any host that reaches it could sign; configure server.tls, listen on a \
                 Unix socket or loopback, or set server.allow_insecure_tcp = true"
            ));
        }
        let max_pending = raw.server.max_pending.unwrap_or(DEFAULT_MAX_PENDING);
        if !(1..=MAX_MAX_PENDING).contains(&max_pending) {
            self.problem(format!(
                "server.max_pending: {max_pending} is outside 1..={MAX_MAX_PENDING}"
            ));
        }
        // Unset, the batch limit follows a small admission limit down.
        let max_batch = raw
            .signing
            .max_batch
            .unwrap_or(DEFAULT_MAX_BATCH.min(max_pending.max(1)));
        if !(1..=MAX_MAX_BATCH).contains(&max_batch) {
            self.problem(format!(
                "signing.max_batch: {max_batch} is outside 1..={MAX_MAX_BATCH}"
            ));
        }
        if max_batch <= MAX_MAX_BATCH && max_batch > max_pending {
            self.problem(format!(
                "signing.max_batch ({max_batch}) is larger than server.max_pending \
                 ({max_pending}), so a full batch could never be admitted; lower max_batch or \
                 raise max_pending"
            ));
        }
        let callers = self.callers(raw.callers, &keys);
        let checkpoint_key = self.checkpoint_key(raw.audit.checkpoint_key.as_deref(), &keys);
        if checkpoint_key.is_some() && checkpoint_key == default_key {
            self.problem(
                "audit.checkpoint_key must differ from signing.default_key, because callers \
                 can sign any digest with the default key",
            );
        }
        let audit = self.audit(raw.audit);

        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        // Every `None` below was recorded as a problem above.
        match (listen, metrics_listen, hsm, default_key) {
            (Some(listen), Some(metrics_listen), Some(hsm), Some(default_key)) => Ok(Config {
                listen,
                metrics_listen,
                health_listen,
                reflection,
                max_request_bytes,
                drain_timeout,
                hsm,
                default_key,
                refresh_interval,
                wait_for_default_key,
                max_batch,
                keys,
                rotation_enabled,
                rotation_check_interval,
                socket_mode,
                allow_insecure_tcp,
                tls,
                max_pending,
                callers,
                audit,
                checkpoint_key,
            }),
            _ => Err(vec![
                "internal error: a value failed without a message".into(),
            ]),
        }
    }

    fn checkpoint_key(
        &mut self,
        name: Option<&str>,
        keys: &BTreeMap<KeyName, KeyPolicy>,
    ) -> Option<KeyName> {
        let name = name?;
        match KeyName::parse(name) {
            Ok(key) if keys.contains_key(&key) => Some(key),
            _ => {
                self.problem(format!(
                    "audit.checkpoint_key: {name:?} is not a configured key name; add a \
                     [keys.{name}] table"
                ));
                None
            }
        }
    }

    fn audit(&mut self, raw: RawAudit) -> Option<AuditConfig> {
        if !raw.enabled.unwrap_or(true) {
            return None;
        }
        let directory = self
            .env
            .var(ENV_AUDIT_DIR)
            .map(PathBuf::from)
            .or(raw.directory)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_DIR));
        let mut audit = AuditConfig::new(self.base_dir.join(directory));
        if let Some(bytes) = raw.max_file_bytes {
            audit.max_file_bytes = bytes;
        }
        if let Some(text) = raw.append_timeout
            && let Some(timeout) =
                self.duration_at_least("audit.append_timeout", &text, Duration::from_millis(10))
        {
            audit.append_timeout = timeout;
            // Checkpoint signing must leave queued appends time to finish.
            audit.checkpoint_sign_timeout = timeout / 2;
        }
        if let Some(text) = raw.checkpoint_interval
            && let Some(interval) =
                self.duration_at_least("audit.checkpoint_interval", &text, Duration::from_secs(1))
        {
            audit.checkpoint_interval = interval;
        }
        if let Err(error) = audit.validate() {
            self.problem(format!("audit: {error}"));
        }
        Some(audit)
    }

    fn tls(&mut self, raw: RawTls) -> Option<TlsFiles> {
        let mut file = |name: &str, path: Option<PathBuf>| {
            if path.is_none() {
                self.problem(format!(
                    "server.tls.{name} is missing; mutual TLS needs cert_file, key_file and \
                     client_ca_file"
                ));
            }
            path.map(|p| self.base_dir.join(p))
        };
        let cert = file("cert_file", raw.cert_file);
        let key = file("key_file", raw.key_file);
        let client_ca = file("client_ca_file", raw.client_ca_file);
        Some(TlsFiles {
            cert: cert?,
            key: key?,
            client_ca: client_ca?,
        })
    }

    fn socket_mode(&mut self, text: Option<String>) -> u32 {
        let Some(text) = text else {
            return DEFAULT_SOCKET_MODE;
        };
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        let octal = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(digits, 8).ok().filter(|_| octal) {
            Some(mode) if mode <= 0o777 && mode & 0o600 == 0o600 => mode,
            _ => {
                self.problem(format!(
                    "server.socket_mode: {text:?} is not an octal mode from 0600 to 0777 that \
                     lets the owner read and write, such as \"0660\""
                ));
                DEFAULT_SOCKET_MODE
            }
        }
    }

    fn callers(
        &mut self,
        raw: Vec<RawCaller>,
        keys: &BTreeMap<KeyName, KeyPolicy>,
    ) -> Vec<CallerRule> {
        let mut rules: Vec<CallerRule> = Vec::new();
        for (index, caller) in raw.into_iter().enumerate() {
            let at = format!("callers[{index}]");
            if let Some(rule) = self.caller(&at, caller, keys) {
                if rules.iter().any(|r| r.name == rule.name) {
                    self.problem(format!("{at}.name: {:?} is used twice", rule.name));
                } else if rules.iter().any(|r| r.selector == rule.selector) {
                    self.problem(format!("{at}: another caller has the same identity"));
                } else {
                    rules.push(rule);
                }
            }
        }
        rules
    }

    fn caller(
        &mut self,
        at: &str,
        raw: RawCaller,
        keys: &BTreeMap<KeyName, KeyPolicy>,
    ) -> Option<CallerRule> {
        let name = match raw.name.as_deref().map(KeyName::parse) {
            Some(Ok(name)) => name.as_str().to_owned(),
            Some(Err(e)) => {
                self.problem(format!(
                    "{at}.name: {}",
                    e.replace("key name", "caller name")
                ));
                return None;
            }
            None => {
                self.problem(format!(
                    "{at}.name is missing; name each caller for metrics"
                ));
                return None;
            }
        };
        let selector = match (raw.uid, raw.spiffe_id, raw.cn) {
            (Some(uid), None, None) => Selector::Uid(uid),
            (None, Some(id), None) if id.starts_with("spiffe://") && id.len() > 9 => {
                Selector::SpiffeId(id)
            }
            (None, Some(id), None) => {
                self.problem(format!(
                    "{at}.spiffe_id: {id:?} does not start with spiffe://"
                ));
                return None;
            }
            (None, None, Some(cn)) if !cn.is_empty() => Selector::CommonName(cn),
            _ => {
                self.problem(format!(
                    "{at}: give exactly one identity: uid (a Unix socket peer), spiffe_id or \
                     cn (a TLS client certificate)"
                ));
                return None;
            }
        };
        let scope = match raw.keys.as_deref() {
            None | Some([]) => {
                self.problem(format!(
                    "{at}.keys is missing; list the key names the caller may use, or [\"*\"]"
                ));
                return None;
            }
            Some([all]) if all == "*" => KeyScope::All,
            Some(names) => {
                let mut scope = std::collections::BTreeSet::new();
                for name in names {
                    match KeyName::parse(name) {
                        Ok(key) if keys.contains_key(&key) => {
                            scope.insert(key);
                        }
                        _ => self
                            .problem(format!("{at}.keys: {name:?} is not a configured key name")),
                    }
                }
                KeyScope::Names(scope)
            }
        };
        let rate = match (raw.rate, raw.burst) {
            (None, None) => None,
            (None, Some(_)) => {
                self.problem(format!("{at}.burst needs {at}.rate"));
                None
            }
            (Some(rate), burst) if rate.is_finite() && rate > 0.0 => Some(RateLimit {
                per_second: rate,
                // A burst of one second's worth, and at least one request.
                burst: burst.unwrap_or_else(|| rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32),
            }),
            (Some(rate), _) => {
                self.problem(format!(
                    "{at}.rate: {rate} is not a positive number of requests per second"
                ));
                None
            }
        };
        if rate.is_some_and(|r| r.burst == 0) {
            self.problem(format!("{at}.burst must be at least 1"));
        }
        Some(CallerRule {
            name,
            selector,
            keys: scope,
            rate,
        })
    }

    fn metrics_listen(&mut self, file: Option<String>) -> Option<std::net::SocketAddr> {
        let text = self
            .layered(
                self.overrides.metrics_listen.as_ref(),
                ENV_METRICS_LISTEN,
                file,
            )
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        text.parse()
            .map_err(|_| {
                self.problem(format!(
                    "server.metrics_listen: {text:?} is not host:port with an IP address"
                ))
            })
            .ok()
    }

    fn reflection(&mut self, file: Option<bool>) -> bool {
        match self.env.var(ENV_REFLECTION).as_deref() {
            None => file.unwrap_or(true),
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => {
                self.problem(format!("{ENV_REFLECTION}: {other:?} is not true or false"));
                true
            }
        }
    }

    fn hsm(&mut self, raw: RawHsm) -> Option<HsmConfig> {
        let module = self
            .env
            .var(ENV_MODULE)
            .map(PathBuf::from)
            .or(raw.module)
            .map(|p| self.base_dir.join(p));
        if module.is_none() {
            self.problem(format!(
                "hsm.module is missing: set it to the PKCS#11 library path, for example \
                 /usr/lib/softhsm/libsofthsm2.so (or set {ENV_MODULE})"
            ));
        }

        let token = TokenSelector {
            label: self.env.var(ENV_TOKEN_LABEL).or(raw.token_label),
            serial: self.env.var(ENV_TOKEN_SERIAL).or(raw.token_serial),
        };
        if token.label.is_none() && token.serial.is_none() {
            self.problem("hsm: set token_label or token_serial to choose the token");
        }

        let sessions = self
            .env
            .var(ENV_SESSIONS)
            .map(|text| {
                text.parse::<usize>().unwrap_or_else(|_| {
                    self.problem(format!("{ENV_SESSIONS}: {text:?} is not a whole number"));
                    0
                })
            })
            .or(raw.sessions)
            .unwrap_or_else(default_sessions);
        if !(1..=MAX_SESSIONS).contains(&sessions) {
            self.problem(format!(
                "hsm.sessions: {sessions} is outside 1..={MAX_SESSIONS}"
            ));
        }

        let pin = self.pin(raw.pin_file);
        let module_env = raw.module_env;
        let (pin, pin_source) = pin?;
        Some(HsmConfig {
            module: module?,
            token,
            pin,
            pin_source,
            sessions,
            module_env,
        })
    }

    fn pin(&mut self, file: Option<PathBuf>) -> Option<(Pin, PinSource)> {
        if let Some(value) = self.env.var(ENV_PIN) {
            let pin = self.checked_pin(Pin::new(value), ENV_PIN)?;
            return Some((pin, PinSource::Environment));
        }
        let (path, source) = match (self.env.var(ENV_PIN_FILE), file) {
            (Some(path), _) => {
                let path = self.base_dir.join(path);
                (path.clone(), PinSource::EnvironmentFile(path))
            }
            (None, Some(path)) => {
                let path = self.base_dir.join(path);
                (path.clone(), PinSource::ConfigFile(path))
            }
            (None, None) => {
                self.problem(format!(
                    "hsm.pin_file is missing: point it at a file that contains the user PIN \
                     (or set {ENV_PIN_FILE} or {ENV_PIN})"
                ));
                return None;
            }
        };
        let setting = match source {
            PinSource::EnvironmentFile(_) => ENV_PIN_FILE,
            _ => "hsm.pin_file",
        };
        // Reading a FIFO would wait for a writer, and a device may never
        // end, so only a regular file is read.
        if let Ok(metadata) = std::fs::metadata(&path)
            && !metadata.is_file()
        {
            self.problem(format!(
                "{setting}: {} is {}, not a regular file; point it at a file that contains the \
                 user PIN",
                path.display(),
                describe_file_type(&metadata.file_type())
            ));
            return None;
        }
        match Pin::from_file(&path) {
            Ok(pin) => {
                let pin = self.checked_pin(pin, &path.display().to_string())?;
                Some((pin, source))
            }
            Err(error) => {
                self.problem(format!(
                    "{setting}: cannot read {}: {error}",
                    path.display()
                ));
                None
            }
        }
    }

    fn checked_pin(&mut self, pin: Pin, source: &str) -> Option<Pin> {
        if pin.is_empty() {
            self.problem(format!("the user PIN from {source} is empty"));
            return None;
        }
        Some(pin)
    }

    fn keys(&mut self, raw: BTreeMap<String, RawKey>) -> BTreeMap<KeyName, KeyPolicy> {
        let mut keys = BTreeMap::new();
        for (name, raw_key) in raw {
            let key_name = match KeyName::parse(&name) {
                Ok(key_name) => key_name,
                Err(error) => {
                    self.problem(format!("keys.{name}: {error}"));
                    continue;
                }
            };
            let policy = self.key_policy(&name, raw_key);
            keys.insert(key_name, policy);
        }
        keys
    }

    fn key_policy(&mut self, name: &str, raw: RawKey) -> KeyPolicy {
        let mut policy = KeyPolicy::default();
        if let Some(text) = raw.algorithm {
            match Algorithm::parse(&text) {
                Ok(algorithm) => policy.algorithm = algorithm,
                Err(error) => self.problem(format!("keys.{name}.algorithm: {error}")),
            }
        }
        if let Some(bits) = raw.bits {
            if matches!(bits, 2048 | 3072 | 4096) {
                policy.bits = bits;
            } else {
                self.problem(format!(
                    "keys.{name}.bits: {bits} is not 2048, 3072 or 4096"
                ));
            }
        }
        if let Some(value) = raw.salt {
            match SaltSetting::from_toml(&value) {
                Ok(salt) => policy.salt = salt,
                Err(error) => self.problem(format!("keys.{name}.salt: {error}")),
            }
        }
        // Every supported modulus leaves room for this salt: the smallest,
        // RSA-2048, allows at most 222 bytes with SHA-256.
        let is_pss = policy.algorithm == Algorithm::RsaPssSha256;
        if let (true, SaltSetting::Bytes(len)) = (is_pss, policy.salt) {
            let max = SaltSetting::max_len(policy.bits);
            if len as usize > max {
                self.problem(format!(
                    "keys.{name}.salt: {len} bytes does not fit an RSA-{} key, whose maximum \
                     PSS salt with SHA-256 is {max}; use \"digest\" (32) or \"max\"",
                    policy.bits
                ));
            }
        }
        if let Some(text) = raw.rotation_period {
            let key = format!("keys.{name}.rotation_period");
            if let Some(d) = self.duration_at_least(&key, &text, Duration::from_secs(1)) {
                policy.rotation_period = d;
            }
        }
        if let Some(text) = raw.prepublish
            && let Some(d) = self.duration(&format!("keys.{name}.prepublish"), &text)
        {
            policy.prepublish = d;
        }
        if policy.prepublish >= policy.rotation_period {
            self.problem(format!(
                "keys.{name}.prepublish must be shorter than keys.{name}.rotation_period, \
                 so that each version signs for a while before its successor is published"
            ));
        }
        if let Some(text) = raw.verify_grace
            && let Some(d) = self.duration(&format!("keys.{name}.verify_grace"), &text)
        {
            policy.verify_grace = d;
        }
        policy
    }

    fn default_key(
        &mut self,
        file: Option<String>,
        keys: &BTreeMap<KeyName, KeyPolicy>,
    ) -> Option<KeyName> {
        let text = self
            .env
            .var(ENV_DEFAULT_KEY)
            .or(file)
            .unwrap_or_else(|| "default".into());
        let name = KeyName::parse(&text)
            .map_err(|e| self.problem(format!("signing.default_key: {e}")))
            .ok()?;
        if !keys.contains_key(&name) {
            self.problem(format!(
                "signing.default_key: {text:?} has no [keys.{text}] table; add one \
                 (an empty table takes every default)"
            ));
            return None;
        }
        Some(name)
    }

    fn duration(&mut self, key: &str, text: &str) -> Option<Duration> {
        let parsed = parse_duration(text)
            .map_err(|e| self.problem(format!("{key}: {e}")))
            .ok()?;
        if parsed > MAX_DURATION {
            self.problem(format!(
                "{key}: {text:?} is longer than the maximum of 36500d"
            ));
            return None;
        }
        Some(parsed)
    }

    /// Parses a duration that must be at least `min`.
    fn duration_at_least(&mut self, key: &str, text: &str, min: Duration) -> Option<Duration> {
        let parsed = self.duration(key, text)?;
        if parsed < min {
            self.problem(format!(
                "{key}: {text:?} is shorter than the minimum of {min:?}"
            ));
            return None;
        }
        Some(parsed)
    }
}

/// Returns the number of cores, the default session pool size.
fn default_sessions() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Parses a human duration: a whole number followed by `ms`, `s`, `m`, `h`
/// or `d`, for example `90d` or `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit; write for example 90d, 12h, 30s or 500ms"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
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
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MINIMAL: &str = r#"
        [hsm]
        module = "/usr/lib/softhsm/libsofthsm2.so"
        token_label = "t"
        [keys.default]
    "#;

    fn parse_with(
        text: &str,
        env_pairs: &[(&str, &str)],
        overrides: &Overrides,
    ) -> Result<Config, Vec<String>> {
        let mut vars = env(env_pairs);
        vars.entry(ENV_PIN.into()).or_insert_with(|| "1234".into());
        parse(text, Path::new("/etc/hallmark"), &vars, overrides)
    }

    #[test]
    fn minimal_file_takes_defaults() {
        let config = parse_with(MINIMAL, &[], &Overrides::default()).expect("valid");
        assert_eq!(
            config.listen,
            ListenAddr::parse(DEFAULT_LISTEN).expect("valid")
        );
        assert_eq!(config.metrics_listen.to_string(), DEFAULT_METRICS_LISTEN);
        assert!(config.reflection);
        assert_eq!(config.default_key.as_str(), "default");
        let policy = config.keys.values().next().expect("one key");
        assert_eq!(policy, &KeyPolicy::default());
        assert_eq!(config.hsm.pin.expose(), "1234");
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let text = format!("[server]\nlisten = \"127.0.0.1:1\"\n{MINIMAL}");
        let from_env = parse_with(&text, &[(ENV_LISTEN, "127.0.0.1:2")], &Overrides::default())
            .expect("valid");
        assert_eq!(from_env.listen.to_string(), "127.0.0.1:2");

        let flags = Overrides {
            listen: Some("unix:/tmp/h.sock".into()),
            metrics_listen: None,
        };
        let from_flag = parse_with(&text, &[(ENV_LISTEN, "127.0.0.1:2")], &flags).expect("valid");
        assert_eq!(from_flag.listen, ListenAddr::Unix("/tmp/h.sock".into()));
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
            [server]
            listen = "nowhere"
            [hsm]
            sessions = 0
            [signing]
            default_key = "missing"
            [keys.default]
            bits = 1024
            salt = 300
            rotation_period = "90 days"
        "#;
        let problems = parse_with(text, &[], &Overrides::default()).expect_err("invalid");
        let joined = problems.join("\n");
        for needle in [
            "server.listen",
            "hsm.module is missing",
            "token_label or token_serial",
            "hsm.sessions: 0",
            "keys.default.bits: 1024",
            "keys.default.rotation_period",
            "signing.default_key: \"missing\"",
        ] {
            assert!(joined.contains(needle), "{needle:?} not in:\n{joined}");
        }
        assert_eq!(problems.len(), 7, "{joined}");
    }

    #[test]
    fn oversized_salt_is_rejected() {
        let text = MINIMAL.replace("[keys.default]", "[keys.default]\nbits = 2048\nsalt = 223");
        let problems = parse_with(&text, &[], &Overrides::default()).expect_err("invalid");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("maximum PSS salt with SHA-256 is 222"),
            "{problems:?}"
        );

        let fits = MINIMAL.replace("[keys.default]", "[keys.default]\nbits = 2048\nsalt = 222");
        let config = parse_with(&fits, &[], &Overrides::default()).expect("valid");
        assert_eq!(
            config.keys.values().next().map(|p| p.salt),
            Some(SaltSetting::Bytes(222))
        );
    }

    #[test]
    fn max_batch_has_a_default_and_bounds() {
        let config = parse_with(MINIMAL, &[], &Overrides::default()).expect("valid");
        assert_eq!(config.max_batch, DEFAULT_MAX_BATCH);
        let text = format!("[server]\nmax_pending = 8\n{MINIMAL}");
        let config = parse_with(&text, &[], &Overrides::default()).expect("valid");
        assert_eq!(config.max_batch, 8);
        let text = format!("[signing]\nmax_batch = 16\n{MINIMAL}");
        let config = parse_with(&text, &[], &Overrides::default()).expect("valid");
        assert_eq!(config.max_batch, 16);
        let text = format!("[server]\nmax_pending = 100\n[signing]\nmax_batch = 101\n{MINIMAL}");
        let problems = parse_with(&text, &[], &Overrides::default()).expect_err("invalid");
        assert_eq!(
            problems,
            vec![
                "signing.max_batch (101) is larger than server.max_pending (100), so a full \
                 batch could never be admitted; lower max_batch or raise max_pending"
                    .to_owned()
            ]
        );
        for bad in [0, MAX_MAX_BATCH + 1] {
            let text = format!("[signing]\nmax_batch = {bad}\n{MINIMAL}");
            let problems = parse_with(&text, &[], &Overrides::default()).expect_err("invalid");
            assert_eq!(
                problems,
                vec![format!("signing.max_batch: {bad} is outside 1..=4096")]
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = format!("{MINIMAL}\nbitz = 2048");
        let problems = parse_with(&text, &[], &Overrides::default()).expect_err("invalid");
        assert!(problems[0].contains("unknown field `bitz`"), "{problems:?}");
    }

    #[test]
    fn example_file_is_valid() {
        let text = include_str!("../hallmark.example.toml");
        let config = parse_with(text, &[], &Overrides::default()).expect("example parses");
        assert_eq!(config.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        assert_eq!(config.refresh_interval, DEFAULT_REFRESH_INTERVAL);
        assert_eq!(config.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(config.keys.values().next(), Some(&KeyPolicy::default()));
    }

    #[test]
    fn callers_and_server_limits_parse() {
        let text = format!(
            "[server]\nsocket_mode = \"0600\"\nmax_pending = 8\n[signing]\nmax_batch = 8\n{MINIMAL}\n\
             [[callers]]\nname = \"fraud-model\"\nuid = 1000\nkeys = [\"default\"]\nrate = 2.5\n\n\
             [[callers]]\nname = \"ops\"\nuid = 0\nkeys = [\"*\"]\n"
        );
        let config = parse_with(&text, &[], &Overrides::default()).expect("valid");
        assert_eq!(config.socket_mode, 0o600);
        assert_eq!(config.max_pending, 8);
        assert_eq!(config.callers.len(), 2);
        assert_eq!(config.callers[0].name, "fraud-model");
        assert_eq!(config.callers[0].selector, Selector::Uid(1000));
        assert_eq!(
            config.callers[0].rate,
            Some(RateLimit {
                per_second: 2.5,
                burst: 3
            })
        );
        assert_eq!(config.callers[1].keys, KeyScope::All);
        assert_eq!(config.callers[1].rate, None);
    }

    #[test]
    fn bad_callers_are_reported_together() {
        let text = format!(
            "[server]\nsocket_mode = \"0o0o660\"\nlisten = \"0.0.0.0:50051\"\n{MINIMAL}\n\
             [[callers]]\nuid = 1\nkeys = [\"default\"]\n\n\
             [[callers]]\nname = \"a\"\nuid = 2\nkeys = [\"nope\"]\n\n\
             [[callers]]\nname = \"b\"\nuid = 5\ncn = \"client\"\nkeys = [\"*\"]\n\n\
             [[callers]]\nname = \"c\"\nuid = 3\nkeys = [\"*\"]\nrate = -1.0\n"
        );
        let problems = parse_with(&text, &[], &Overrides::default()).expect_err("invalid");
        assert_eq!(
            problems,
            [
                "server.socket_mode: \"0o0o660\" is not an octal mode from 0600 to 0777 that lets \
                 the owner read and write, such as \"0660\"",
                "server.listen: 0.0.0.0:50051 is not a loopback address and server.tls is not \
                 set, so any host that reaches it could sign; configure server.tls, listen on a \
                 Unix socket or loopback, or set server.allow_insecure_tcp = true",
                "callers[0].name is missing; name each caller for metrics",
                "callers[1].keys: \"nope\" is not a configured key name",
                "callers[2]: give exactly one identity: uid (a Unix socket peer), spiffe_id or \
                 cn (a TLS client certificate)",
                "callers[3].rate: -1 is not a positive number of requests per second",
            ]
        );
        let insecure = text.replace("listen = ", "allow_insecure_tcp = true\nlisten = ");
        let problems = parse_with(&insecure, &[], &Overrides::default()).expect_err("invalid");
        assert!(
            !problems.iter().any(|p| p.starts_with("server.listen")),
            "{problems:?}"
        );
    }

    #[test]
    fn checkpoint_key_must_be_its_own_configured_key() {
        let with = |value: &str| format!("{MINIMAL}\n[audit]\ncheckpoint_key = \"{value}\"\n");
        let problems = parse_with(&with("default"), &[], &Overrides::default()).expect_err("same");
        assert_eq!(
            problems,
            [
                "audit.checkpoint_key must differ from signing.default_key, because callers can \
              sign any digest with the default key"
            ]
        );
        let problems = parse_with(&with("audit"), &[], &Overrides::default()).expect_err("none");
        assert_eq!(
            problems,
            [
                "audit.checkpoint_key: \"audit\" is not a configured key name; add a \
              [keys.audit] table"
            ]
        );
    }

    #[test]
    fn duration_bounds_are_enforced() {
        let text = MINIMAL.replace(
            "[keys.default]",
            "[signing]\nrefresh_interval = \"0ms\"\n[keys.default]\nrotation_period = \"200000000000000d\"",
        );
        let problems = parse_with(&text, &[], &Overrides::default()).expect_err("invalid");
        let joined = problems.join("\n");
        assert!(
            joined.contains("signing.refresh_interval: \"0ms\" is shorter than the minimum"),
            "{joined}"
        );
        assert!(
            joined.contains("keys.default.rotation_period: \"200000000000000d\" is too long")
                || joined.contains("is longer than the maximum of 36500d"),
            "{joined}"
        );
    }

    #[test]
    fn grace_shorter_than_refresh_is_rejected() {
        let text = MINIMAL.replace("[keys.default]", "[keys.default]\nverify_grace = \"10s\"");
        let problems = parse_with(&text, &[], &Overrides::default()).expect_err("invalid");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("keys.default.verify_grace must be at least"));

        let ok = parse_with(
            &text,
            &[(ENV_REFRESH_INTERVAL, "10s")],
            &Overrides::default(),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("90").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            ListenAddr::parse("unix:/run/h.sock"),
            Ok(ListenAddr::Unix("/run/h.sock".into()))
        );
        assert!(ListenAddr::parse("unix:").is_err());
        assert!(ListenAddr::parse("localhost:50051").is_err());
        assert_eq!(
            ListenAddr::parse("[::1]:5").map(|a| a.to_string()),
            Ok("[::1]:5".into())
        );
    }
}
