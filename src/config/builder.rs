//! The [`Builder`] that turns the file as written into a [`Config`]: it
//! picks each value from its highest layer, records where it came from,
//! and collects every problem instead of stopping at the first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::document::Rejected;
use super::raw::{self, RawConfig, RawLog, RawServer, RawTls};
use super::sources::{Source, Sources};
use super::{
    Config, DEFAULT_DRAIN_TIMEOUT, DEFAULT_LISTEN, DEFAULT_LOG_LEVEL, DEFAULT_MAX_BATCH,
    DEFAULT_MAX_PENDING, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_METRICS_LISTEN,
    DEFAULT_REFRESH_INTERVAL, DEFAULT_ROTATION_CHECK_INTERVAL, DEFAULT_SOCKET_MODE, Environment,
    ListenAddr, LogConfig, LogFormat, MAX_DURATION, MAX_MAX_BATCH, MAX_MAX_PENDING,
    MIN_REFRESH_INTERVAL, NotUnicode, Overrides, TlsFiles, files, format_duration, parse_duration,
};

/// How much of the outside world loading looks at. Each depth checks what
/// the one before it checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Depth {
    /// Check the values, and read the PIN, which the token needs.
    Values,
    /// Also read the TLS files and build the TLS settings from them, as
    /// `serve` does, so that `serve` reports an unusable certificate or key
    /// before it opens the token.
    TlsFiles,
    /// Also check that every file and directory that `serve` uses exists
    /// and is readable, or writable where `serve` writes: the module, the
    /// audit directory and the Unix socket's directory.
    Files,
}

/// Collects problems while turning a [`RawConfig`] into a [`Config`].
pub(super) struct Builder<'a> {
    pub(super) base_dir: &'a Path,
    pub(super) env: &'a dyn Environment,
    overrides: &'a Overrides,
    pub(super) depth: Depth,
    pub(super) problems: Vec<String>,
    pub(super) sources: Sources,
    /// Keys whose file values the structs rejected, already reported.
    rejected: Vec<String>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        base_dir: &'a Path,
        env: &'a dyn Environment,
        overrides: &'a Overrides,
        depth: Depth,
    ) -> Self {
        Self {
            base_dir,
            env,
            overrides,
            depth,
            problems: Vec::new(),
            sources: Sources::default(),
            rejected: Vec::new(),
        }
    }

    /// Records the problems of the values that the file's structure
    /// rejected, and the keys they were at.
    pub(super) fn reject(&mut self, rejected: Vec<Rejected>) {
        for Rejected { key, problem } in rejected {
            self.problems.push(problem);
            self.rejected.push(key);
        }
    }

    /// Returns whether the file's value of `key`, or of a table that
    /// contains it, was rejected. A value that is then missing was already
    /// reported, so it is not reported as missing too.
    pub(super) fn rejected(&self, key: &str) -> bool {
        self.rejected.iter().any(|rejected| {
            key.strip_prefix(rejected.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    pub(super) fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }

    /// Records a problem with the value of `key`, naming the variable or
    /// flag that set it. A value that is then missing is not reported as
    /// missing too.
    pub(super) fn invalid(&mut self, key: &str, error: impl std::fmt::Display) {
        let label = self.sources.label(key);
        self.problem(format!("{label}: {error}"));
        self.rejected.push(key.to_owned());
    }

    /// Returns the value of `key` from its highest layer (flag, then
    /// environment variable, then file), and records its source. `parse`
    /// reads the text of a flag or variable, after [`check_text`]; a
    /// problem names the layer.
    pub(super) fn pick<T>(
        &mut self,
        key: &'static str,
        file: Option<T>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let setting = raw::find(key);
        debug_assert!(setting.is_some(), "{key} is missing from SETTINGS");
        let flag = setting
            .and_then(|s| s.flag)
            .and_then(|flag| Some((Source::Flag(flag), self.overrides.get(key)?.to_owned())));
        let layered = match flag {
            Some(flag) => Some(flag),
            None => self.env_value(key, setting.and_then(|s| s.env)).ok()?,
        };
        match layered {
            Some((source, text)) => {
                self.sources.set(key, source);
                check_text(&text, source)
                    .and_then(|()| parse(&text))
                    .map_err(|error| self.invalid(key, error))
                    .ok()
            }
            None => {
                if file.is_some() {
                    self.sources.set(key, Source::File);
                }
                file
            }
        }
    }

    /// Reads the variable `name` that overrides `key`. A value that is not
    /// UTF-8 is a problem, and then the file's value is not used either.
    fn env_value(
        &mut self,
        key: &'static str,
        name: Option<&'static str>,
    ) -> Result<Option<(Source, String)>, NotUnicode> {
        let Some(name) = name else {
            return Ok(None);
        };
        match self.env.var(name) {
            Ok(value) => Ok(value.map(|value| (Source::Env(name), value))),
            Err(NotUnicode) => {
                self.sources.set(key, Source::Env(name));
                self.invalid(key, super::not_unicode_problem(name));
                Err(NotUnicode)
            }
        }
    }

    /// [`Builder::pick`] for a value that every layer writes as text. The
    /// file's text gets the same [`check_text`] as that of the other layers.
    pub(super) fn pick_text(&mut self, key: &'static str, file: Option<String>) -> Option<String> {
        // An empty label or serial would select an uninitialized slot, or
        // nothing, far from the setting that caused it.
        let text = self.pick(key, file, |text| Ok(text.to_owned()))?;
        self.checked_file_text(key, &text).then_some(text)
    }

    /// [`Builder::pick`] for a path. Relative paths from the file or the
    /// environment are resolved against the file's directory; the command
    /// line makes its own paths absolute first.
    pub(super) fn pick_path(
        &mut self,
        key: &'static str,
        file: Option<PathBuf>,
    ) -> Option<PathBuf> {
        let path = self.pick(key, file, |text| Ok(PathBuf::from(text)))?;
        // A path from the file is UTF-8, because TOML text is.
        let text = path.to_str().unwrap_or_default();
        self.checked_file_text(key, text)
            .then(|| self.base_dir.join(path))
    }

    /// Checks the text of `key` when the file set it. [`Builder::pick`]
    /// has checked that of the other layers.
    pub(super) fn checked_file_text(&mut self, key: &str, text: &str) -> bool {
        let source = self.sources.get(key);
        if source != Source::File {
            return true;
        }
        match check_text(text, source) {
            Ok(()) => true,
            Err(error) => {
                self.invalid(key, error);
                false
            }
        }
    }

    /// Returns a value that only the file sets, and records its source.
    pub(super) fn file_value<T>(&mut self, key: impl Into<String>, file: Option<T>) -> Option<T> {
        if file.is_some() {
            self.sources.set(key, Source::File);
        }
        file
    }

    pub(super) fn build(mut self, raw: RawConfig) -> Result<Config, Vec<String>> {
        let RawServer {
            listen,
            metrics_listen,
            reflection,
            max_request_bytes,
            drain_timeout,
            socket_mode,
            allow_insecure_tcp,
            health_listen,
            max_pending,
            tls,
        } = raw.server;
        let listen = self.listen(listen);
        let metrics_listen = self.metrics_listen(metrics_listen);
        let health_listen = self.health_listen(health_listen);
        let reflection = self
            .pick("server.reflection", reflection, parse_bool)
            .unwrap_or(true);
        let max_request_bytes = self
            .file_value("server.max_request_bytes", max_request_bytes)
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if !(256..=4 * 1024 * 1024).contains(&max_request_bytes) {
            self.problem(format!(
                "server.max_request_bytes: {max_request_bytes} is outside 256..=4194304"
            ));
        }
        let drain_timeout = self
            .pick_text("server.drain_timeout", drain_timeout)
            .and_then(|text| self.duration("server.drain_timeout", &text))
            .unwrap_or(DEFAULT_DRAIN_TIMEOUT);

        let hsm = self.hsm(raw.hsm);
        let keys = self.keys(raw.keys);
        let default_key = self.default_key(raw.signing.default_key, &keys);
        let refresh_interval = self
            .pick_text("signing.refresh_interval", raw.signing.refresh_interval)
            .and_then(|text| {
                self.duration_at_least("signing.refresh_interval", &text, MIN_REFRESH_INTERVAL)
            })
            .unwrap_or(DEFAULT_REFRESH_INTERVAL);
        for (name, policy) in &keys {
            if policy.verify_grace < refresh_interval {
                self.problem(format!(
                    "keys.{name}.verify_grace must be at least signing.refresh_interval, \
                     because an instance may sign with a retired version until its next refresh"
                ));
            }
        }
        let wait_for_default_key = self
            .file_value(
                "signing.wait_for_default_key",
                raw.signing.wait_for_default_key,
            )
            .unwrap_or(false);
        let max_batch = self.file_value("signing.max_batch", raw.signing.max_batch);
        let rotation_enabled = self
            .file_value("rotation.enabled", raw.rotation.enabled)
            .unwrap_or(false);
        let rotation_check_interval = self
            .file_value("rotation.check_interval", raw.rotation.check_interval)
            .and_then(|text| {
                self.duration_at_least("rotation.check_interval", &text, Duration::from_secs(1))
            })
            .unwrap_or(DEFAULT_ROTATION_CHECK_INTERVAL);

        let socket_mode = self.socket_mode(socket_mode);
        let allow_insecure_tcp = self
            .file_value("server.allow_insecure_tcp", allow_insecure_tcp)
            .unwrap_or(false);
        let tls = tls.and_then(|raw| self.tls(raw));
        self.check_transport(listen.as_ref(), tls.as_ref(), allow_insecure_tcp);
        let max_pending = self
            .file_value("server.max_pending", max_pending)
            .unwrap_or(DEFAULT_MAX_PENDING);
        if !(1..=MAX_MAX_PENDING).contains(&max_pending) {
            self.problem(format!(
                "server.max_pending: {max_pending} is outside 1..={MAX_MAX_PENDING}"
            ));
        }
        // Unset, the batch limit follows a small admission limit down.
        let max_batch = max_batch.unwrap_or(DEFAULT_MAX_BATCH.min(max_pending.max(1)));
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
        let checkpoint_key = self.checkpoint_key(raw.audit.checkpoint_key.clone(), &keys);
        if checkpoint_key.is_some() && checkpoint_key == default_key {
            self.problem(
                "audit.checkpoint_key must differ from signing.default_key, because callers \
                 can sign any digest with the default key",
            );
        }
        let audit = self.audit(raw.audit);
        let log = self.log(raw.log);

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
                log,
                sources: self.sources,
            }),
            _ => Err(vec![
                "internal error: a value failed without a message".into(),
            ]),
        }
    }

    fn listen(&mut self, file: Option<String>) -> Option<ListenAddr> {
        let text = self
            .pick_text("server.listen", file)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let mut listen = ListenAddr::parse(&text)
            .map_err(|error| self.invalid("server.listen", error))
            .ok()?;
        // A relative socket path follows the rule of every other path: from
        // a flag it is relative to the working directory, otherwise to the
        // configuration file's directory.
        if let ListenAddr::Unix(path) = &mut listen
            && path.is_relative()
            && !matches!(self.sources.get("server.listen"), Source::Flag(_))
        {
            *path = self.base_dir.join(&*path);
        }
        if let (Depth::Files, ListenAddr::Unix(path)) = (self.depth, &listen)
            && let Err(error) = files::check_socket_path(path)
        {
            self.invalid("server.listen", error);
        }
        Some(listen)
    }

    fn metrics_listen(&mut self, file: Option<String>) -> Option<std::net::SocketAddr> {
        let text = self
            .pick_text("server.metrics_listen", file)
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        text.parse()
            .map_err(|_| {
                self.invalid(
                    "server.metrics_listen",
                    format!("{text:?} is not host:port with an IP address"),
                )
            })
            .ok()
    }

    fn health_listen(&mut self, file: Option<String>) -> Option<std::net::SocketAddr> {
        let text = self.pick_text("server.health_listen", file)?;
        text.parse()
            .map_err(|_| {
                self.invalid(
                    "server.health_listen",
                    format!("{text:?} is not host:port with an IP address"),
                )
            })
            .ok()
    }

    /// Rejects TLS on a Unix socket, and plain text on a TCP address that
    /// other hosts can reach unless the operator allowed it.
    fn check_transport(
        &mut self,
        listen: Option<&ListenAddr>,
        tls: Option<&TlsFiles>,
        allow_insecure_tcp: bool,
    ) {
        if tls.is_some() && matches!(listen, Some(ListenAddr::Unix(_))) {
            self.problem(
                "server.tls applies to TCP listeners; a Unix socket identifies callers by \
                 their uid",
            );
        }
        if let Some(ListenAddr::Tcp(addr)) = listen
            && !addr.ip().is_loopback()
            && tls.is_none()
            && !allow_insecure_tcp
        {
            let label = self.sources.label("server.listen");
            self.problem(format!(
                "{label}: {addr} is not a loopback address and server.tls is not set, \
                 so any host that reaches it could sign; configure server.tls, listen on a \
                 Unix socket or loopback, or set server.allow_insecure_tcp = true"
            ));
        }
    }

    fn tls(&mut self, raw: RawTls) -> Option<TlsFiles> {
        let problems_before = self.problems.len();
        let mut file = |name: &str, path: Option<PathBuf>| {
            let key = format!("server.tls.{name}");
            let Some(path) = self.file_value(&key, path) else {
                if self.rejected(&key) {
                    return None;
                }
                self.problem(format!(
                    "{key} is missing; mutual TLS needs cert_file, key_file and client_ca_file"
                ));
                return None;
            };
            let path = self.base_dir.join(path);
            if self.depth >= Depth::TlsFiles
                && let Err(error) = files::check_readable(&path)
            {
                self.problem(format!("{key}: {error}"));
            }
            Some(path)
        };
        let cert = file("cert_file", raw.cert_file);
        let key = file("key_file", raw.key_file);
        let client_ca = file("client_ca_file", raw.client_ca_file);
        let files = TlsFiles {
            cert: cert?,
            key: key?,
            client_ca: client_ca?,
        };
        // Parse the files only when all three could be read.
        if self.depth >= Depth::TlsFiles
            && self.problems.len() == problems_before
            && let Err(error) = files::server_tls(&files)
        {
            self.problem(format!("server.tls: {error}"));
        }
        Some(files)
    }

    fn socket_mode(&mut self, text: Option<String>) -> u32 {
        let Some(text) = self.file_value("server.socket_mode", text) else {
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

    pub(super) fn log(&mut self, raw: RawLog) -> LogConfig {
        let level = self
            .pick_text("log.level", raw.level)
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        if let Err(error) = super::check_log_level(&level) {
            self.invalid("log.level", error);
        }
        let format_text = self.pick_text("log.format", raw.format);
        let format = match format_text.as_deref().map(LogFormat::parse) {
            None => LogFormat::Text,
            Some(Ok(format)) => format,
            Some(Err(error)) => {
                self.invalid("log.format", error);
                LogFormat::Text
            }
        };
        LogConfig { level, format }
    }

    /// Parses the duration at `key`, which must not exceed [`MAX_DURATION`].
    pub(super) fn duration(&mut self, key: &str, text: &str) -> Option<Duration> {
        let parsed = parse_duration(text)
            .map_err(|error| self.invalid(key, error))
            .ok()?;
        if parsed > MAX_DURATION {
            self.invalid(
                key,
                format!(
                    "{text:?} is longer than the maximum of {}",
                    format_duration(MAX_DURATION)
                ),
            );
            return None;
        }
        Some(parsed)
    }

    /// Parses a duration that must be at least `min`.
    pub(super) fn duration_at_least(
        &mut self,
        key: &str,
        text: &str,
        min: Duration,
    ) -> Option<Duration> {
        let parsed = self.duration(key, text)?;
        if parsed < min {
            self.invalid(
                key,
                format!(
                    "{text:?} is shorter than the minimum of {}",
                    format_duration(min)
                ),
            );
            return None;
        }
        Some(parsed)
    }
}

/// Rejects an empty value, and one that starts or ends with whitespace.
/// Such a value is rarely meant and fails far from its cause, as a label
/// that matches no token or a path that does not exist. `source` chooses
/// the advice.
fn check_text(text: &str, source: Source) -> Result<(), String> {
    if text.is_empty() {
        let fix = match source {
            Source::Env(name) => format!("set a value or unset {name}"),
            Source::Flag(flag) => format!("give {flag} a value or leave it out"),
            Source::File | Source::Default | Source::Uri => {
                "set a value or remove the key".to_owned()
            }
        };
        return Err(format!("the value is empty; {fix}"));
    }
    if text.trim() != text {
        // A PKCS#11 URI may carry a pin-value, which is rejected on its own
        // later and must never be shown.
        let shown = if text.to_ascii_lowercase().contains("pin-value") {
            "the value".to_owned()
        } else {
            format!("{text:?}")
        };
        return Err(format!("{shown} starts or ends with whitespace; remove it"));
    }
    Ok(())
}

/// Reads a boolean from an environment variable or flag.
fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// Reads a whole number from an environment variable or flag.
pub(super) fn parse_count(text: &str) -> Result<usize, String> {
    text.parse().map_err(|error: std::num::ParseIntError| {
        if *error.kind() == std::num::IntErrorKind::PosOverflow {
            format!("{text:?} is too large")
        } else {
            format!("{text:?} is not a whole number")
        }
    })
}
