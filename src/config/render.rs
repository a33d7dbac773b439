//! The effective configuration as TOML, for `hallmark config print`. Each
//! value ends with a comment that names its source. The PIN is never
//! written, only the file or variable it comes from.
//!
//! The output is itself a valid configuration file: values that `hsm.uri`
//! set are written as comments, so that reading the output back does not
//! set them twice.

use std::path::Path;
use std::time::Duration;

use super::{Config, KeyPolicy, ListenAddr, Source};
use crate::caller::{CallerRule, KeyScope, Selector};
use crate::keys::{KeyName, SaltSetting};

/// One line of a table.
enum Line {
    /// `field = value`, followed by its source. A value that `hsm.uri`
    /// set is commented out. `field` is the name as [`Config::sources`]
    /// records it, quoted when written if TOML needs it.
    Value {
        field: String,
        value: String,
        source: Source,
    },
    /// A comment on its own.
    Note(String),
}

/// One `[table]` or `[[array]]` entry.
struct Table<'a> {
    header: String,
    /// The dotted prefix of the table's keys in [`Config::sources`].
    prefix: String,
    config: &'a Config,
    lines: Vec<Line>,
}

impl<'a> Table<'a> {
    fn new(config: &'a Config, header: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            header: header.into(),
            prefix: prefix.into(),
            config,
            lines: Vec::new(),
        }
    }

    fn value(&mut self, field: &str, value: String) {
        let source = self.config.sources.get(&format!("{}.{field}", self.prefix));
        self.lines.push(Line::Value {
            field: field.to_owned(),
            value,
            source,
        });
    }

    fn note(&mut self, text: impl Into<String>) {
        self.lines.push(Line::Note(text.into()));
    }

    /// Writes the table with the source comments aligned.
    fn write(&self, out: &mut String) {
        out.push_str(&format!("\n{}\n", self.header));
        let assignments: Vec<(String, Option<Source>)> = self
            .lines
            .iter()
            .map(|line| match line {
                Line::Value {
                    field,
                    value,
                    source,
                } => {
                    let mark = if *source == Source::Uri { "# " } else { "" };
                    (format!("{mark}{} = {value}", key(field)), Some(*source))
                }
                Line::Note(text) => (format!("# {}", comment(text)), None),
            })
            .collect();
        let width = assignments
            .iter()
            .filter(|(_, source)| source.is_some())
            .map(|(text, _)| text.chars().count())
            .max()
            .unwrap_or(0);
        for (text, source) in assignments {
            match source {
                Some(source) => out.push_str(&format!("{text:<width$}  # {source}\n")),
                None => out.push_str(&format!("{text}\n")),
            }
        }
    }
}

/// Renders `config`, loaded from `file`, as TOML with the source of each
/// value. `rust_log` is the value of `RUST_LOG`, which replaces
/// `log.level` when set.
pub fn render(config: &Config, file: &Path, rust_log: Option<&str>) -> String {
    let mut out = format!(
        "# Effective configuration from {}.\n\
         # The comment after each value names its source: default, file,\n\
         # env VARIABLE, flag --FLAG, or hsm.uri. The PIN is never shown.\n",
        comment(&file.display().to_string())
    );

    let mut tables = vec![server(config)];
    tables.extend(tls(config));
    tables.push(hsm(config));
    if !config.hsm.module_env.is_empty() {
        let mut table = Table::new(config, "[hsm.module_env]", "hsm.module_env");
        for (name, value) in &config.hsm.module_env {
            table.value(name, string(value));
        }
        tables.push(table);
    }
    tables.push(signing(config));
    tables.push(rotation(config));
    tables.push(audit(config));
    tables.push(log(config, rust_log));

    for (name, policy) in &config.keys {
        tables.push(key_table(config, name, policy));
    }
    for (index, caller) in config.callers.iter().enumerate() {
        tables.push(caller_table(config, index, caller));
    }

    for table in tables {
        table.write(&mut out);
    }
    out
}

fn server(config: &Config) -> Table<'_> {
    let mut table = Table::new(config, "[server]", "server");
    let listen = match &config.listen {
        ListenAddr::Unix(socket) => {
            let absolute = std::path::absolute(socket).unwrap_or_else(|_| socket.clone());
            format!("unix:{}", absolute.to_string_lossy())
        }
        ListenAddr::Tcp(addr) => addr.to_string(),
    };
    table.value("listen", string(&listen));
    table.value("metrics_listen", string(&config.metrics_listen.to_string()));
    match config.health_listen {
        Some(addr) => table.value("health_listen", string(&addr.to_string())),
        None => table.note("health_listen is not set"),
    }
    table.value("reflection", config.reflection.to_string());
    table.value("max_request_bytes", config.max_request_bytes.to_string());
    table.value("drain_timeout", duration(config.drain_timeout));
    table.value(
        "socket_mode",
        string(&format!("{:04o}", config.socket_mode)),
    );
    table.value("allow_insecure_tcp", config.allow_insecure_tcp.to_string());
    table.value("max_pending", config.max_pending.to_string());
    if config.tls.is_none() && matches!(config.listen, ListenAddr::Tcp(_)) {
        table.note("server.tls is not set: gRPC is served in plain text");
    }
    table
}

fn tls(config: &Config) -> Option<Table<'_>> {
    let files = config.tls.as_ref()?;
    let mut table = Table::new(config, "[server.tls]", "server.tls");
    table.value("cert_file", path(&files.cert));
    table.value("key_file", path(&files.key));
    table.value("client_ca_file", path(&files.client_ca));
    Some(table)
}

fn hsm(config: &Config) -> Table<'_> {
    let hsm = &config.hsm;
    let mut table = Table::new(config, "[hsm]", "hsm");
    if let Some(uri) = &hsm.uri {
        table.value("uri", string(uri));
    }
    table.value("module", path(&hsm.module));
    let token = &hsm.token;
    for (field, value) in [
        ("token_label", &token.label),
        ("token_serial", &token.serial),
    ] {
        if let Some(value) = value {
            table.value(field, string(value));
        }
    }
    for (attribute, value) in [
        ("manufacturer", &token.manufacturer),
        ("model", &token.model),
    ] {
        if let Some(value) = value {
            table.note(format!("hsm.uri selects the token {attribute} {value:?}"));
        }
    }
    match hsm.pin_source.file() {
        Some(file) => table.value("pin_file", path(file)),
        None => table.note(format!(
            "the PIN is read from the {} environment variable, which takes precedence over \
             any PIN file; its value is not shown",
            super::ENV_PIN
        )),
    }
    table.value("sessions", hsm.sessions.to_string());
    table
}

fn signing(config: &Config) -> Table<'_> {
    let mut table = Table::new(config, "[signing]", "signing");
    table.value("default_key", string(config.default_key.as_str()));
    table.value("refresh_interval", duration(config.refresh_interval));
    table.value(
        "wait_for_default_key",
        config.wait_for_default_key.to_string(),
    );
    table.value("max_batch", config.max_batch.to_string());
    table
}

fn rotation(config: &Config) -> Table<'_> {
    let mut table = Table::new(config, "[rotation]", "rotation");
    table.value("enabled", config.rotation_enabled.to_string());
    table.value("check_interval", duration(config.rotation_check_interval));
    table
}

fn audit(config: &Config) -> Table<'_> {
    let mut table = Table::new(config, "[audit]", "audit");
    let Some(audit) = &config.audit else {
        table.value("enabled", "false".to_owned());
        return table;
    };
    table.value("enabled", "true".to_owned());
    table.value("directory", path(&audit.directory));
    table.value("max_file_bytes", audit.max_file_bytes.to_string());
    table.value("append_timeout", duration(audit.append_timeout));
    table.value("checkpoint_interval", duration(audit.checkpoint_interval));
    match &config.checkpoint_key {
        Some(name) => table.value("checkpoint_key", string(name.as_str())),
        None => table.note("checkpoint_key is not set: the default key signs checkpoints"),
    }
    table
}

fn log<'a>(config: &'a Config, rust_log: Option<&str>) -> Table<'a> {
    let mut table = Table::new(config, "[log]", "log");
    table.value("level", string(&config.log.level));
    if let Some(directives) = rust_log {
        table.note(format!("RUST_LOG={directives:?} is set and replaces level"));
    }
    table.value("format", string(config.log.format.as_str()));
    table
}

fn key_table<'a>(config: &'a Config, name: &KeyName, policy: &KeyPolicy) -> Table<'a> {
    let header = format!("[keys.{}]", key(name.as_str()));
    let mut table = Table::new(config, header, format!("keys.{name}"));
    table.value("algorithm", string(policy.algorithm.as_str()));
    table.value("bits", policy.bits.to_string());
    let salt = match policy.salt {
        SaltSetting::Bytes(count) => count.to_string(),
        named => string(&named.to_string()),
    };
    table.value("salt", salt);
    table.value("rotation_period", duration(policy.rotation_period));
    table.value("prepublish", duration(policy.prepublish));
    table.value("verify_grace", duration(policy.verify_grace));
    table
}

fn caller_table<'a>(config: &'a Config, index: usize, caller: &CallerRule) -> Table<'a> {
    let mut table = Table::new(config, "[[callers]]", format!("callers[{index}]"));
    // Every caller comes from the file, and each of these keys is required.
    let from_file = |field: &str, value: String| Line::Value {
        field: field.to_owned(),
        value,
        source: Source::File,
    };
    table.lines.push(from_file("name", string(&caller.name)));
    let identity = match &caller.selector {
        Selector::Uid(uid) => from_file("uid", uid.to_string()),
        Selector::SpiffeId(id) => from_file("spiffe_id", string(id)),
        Selector::CommonName(cn) => from_file("cn", string(cn)),
    };
    table.lines.push(identity);
    let keys = match &caller.keys {
        KeyScope::All => vec![toml::Value::String("*".to_owned())],
        KeyScope::Names(names) => names
            .iter()
            .map(|name| toml::Value::String(name.as_str().to_owned()))
            .collect(),
    };
    table
        .lines
        .push(from_file("keys", toml::Value::Array(keys).to_string()));
    match caller.rate {
        Some(rate) => {
            let per_second = toml::Value::Float(rate.per_second).to_string();
            table.lines.push(from_file("rate", per_second));
            table.value("burst", rate.burst.to_string());
        }
        None => table.note("no rate limit"),
    }
    table
}

/// Formats a duration in the largest unit that `parse_duration` reads back
/// exactly: `90d`, `12h`, `1m`, `30s` or `250ms`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs();
    let units = [(86_400, "d"), (3_600, "h"), (60, "m")];
    for (size, unit) in units {
        if seconds >= size && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

fn duration(value: Duration) -> String {
    string(&format_duration(value))
}

/// Writes `text` as a TOML basic string on one line, so that a value
/// that `hsm.uri` set stays within its comment line.
fn string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str(r#"\""#),
            '\\' => quoted.push_str(r"\\"),
            '\n' => quoted.push_str(r"\n"),
            '\r' => quoted.push_str(r"\r"),
            '\t' => quoted.push_str(r"\t"),
            c if c.is_control() => quoted.push_str(&format!(r"\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Escapes the control characters of comment text, which a line break
/// would otherwise end.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Writes a path as a TOML string, made absolute against the working
/// directory. A loaded relative path is relative to the working directory,
/// but read back from a saved output it would be relative to the directory
/// of that file.
fn path(value: &Path) -> String {
    let absolute = std::path::absolute(value).unwrap_or_else(|_| value.to_owned());
    string(&absolute.to_string_lossy())
}

/// Writes a table or field name bare when TOML allows it, else quoted.
fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { name.to_owned() } else { string(name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_in_largest_unit() {
        let cases = [
            (Duration::from_secs(90 * 86_400), "90d"),
            (Duration::from_secs(36 * 3_600), "36h"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(0), "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
        ];
        for (value, text) in cases {
            assert_eq!(format_duration(value), text);
            assert_eq!(super::super::parse_duration(text), Ok(value), "{text}");
        }
    }

    #[test]
    fn keys_are_quoted_when_needed() {
        assert_eq!(key("SOFTHSM2_CONF"), "SOFTHSM2_CONF");
        assert_eq!(key("fraud.v2"), "\"fraud.v2\"");
        assert_eq!(key("A B\n"), r#""A B\n""#);
    }

    #[test]
    fn strings_stay_on_one_line() {
        let cases = [
            ("plain", r#""plain""#),
            ("say \"hi\"", r#""say \"hi\"""#),
            ("C:\\dir", r#""C:\\dir""#),
            ("a\nb\r\tc", r#""a\nb\r\tc""#),
            ("bell\u{7}del\u{7f}", r#""bell\u0007del\u007F""#),
            ("ünïcode", r#""ünïcode""#),
        ];
        for (text, written) in cases {
            assert_eq!(string(text), written, "{text:?}");
            let read: toml::Table = format!("v = {written}").parse().expect("valid TOML");
            assert_eq!(read["v"].as_str(), Some(text));
        }
        assert_eq!(comment("a\nb"), r"a\nb");
    }
}
