//! The file as written: the serde structs that read it, and [`SETTINGS`],
//! the table of every key they accept with the environment variable and
//! the flag that override it.
//!
//! The documentation test reads the table. A unit test below checks it
//! against the keys that the structs accept, so a key added to a struct
//! and not to the table fails the tests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{
    ENV_AUDIT_DIR, ENV_DEFAULT_KEY, ENV_DRAIN_TIMEOUT, ENV_HEALTH_LISTEN, ENV_LISTEN,
    ENV_LOG_FORMAT, ENV_LOG_LEVEL, ENV_METRICS_LISTEN, ENV_MODULE, ENV_PIN_FILE, ENV_PKCS11_URI,
    ENV_REFLECTION, ENV_REFRESH_INTERVAL, ENV_SESSIONS, ENV_TOKEN_LABEL, ENV_TOKEN_SERIAL,
};

/// One configuration key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The dotted key as written in the file. `<name>` stands for a key
    /// name in `keys.<name>.*`, `<VAR>` for a variable name in
    /// `hsm.module_env.<VAR>`, and `callers[]` for each `[[callers]]` entry.
    pub key: &'static str,
    /// The environment variable that overrides the file, if any.
    pub env: Option<&'static str>,
    /// The command-line flag that overrides the environment, if any.
    pub flag: Option<&'static str>,
    /// A valid TOML value for the key, used by the tests that set every key.
    pub sample: &'static str,
}

const fn file_only(key: &'static str, sample: &'static str) -> Setting {
    Setting {
        key,
        env: None,
        flag: None,
        sample,
    }
}

const fn layered(
    key: &'static str,
    env: &'static str,
    flag: &'static str,
    sample: &'static str,
) -> Setting {
    Setting {
        key,
        env: Some(env),
        flag: Some(flag),
        sample,
    }
}

/// Every key that the configuration file accepts, in file order.
pub const SETTINGS: &[Setting] = &[
    layered(
        "server.listen",
        ENV_LISTEN,
        "--listen",
        "\"127.0.0.1:50051\"",
    ),
    layered(
        "server.metrics_listen",
        ENV_METRICS_LISTEN,
        "--metrics-listen",
        "\"127.0.0.1:9464\"",
    ),
    layered(
        "server.health_listen",
        ENV_HEALTH_LISTEN,
        "--health-listen",
        "\"127.0.0.1:8081\"",
    ),
    layered("server.reflection", ENV_REFLECTION, "--reflection", "true"),
    file_only("server.max_request_bytes", "65536"),
    layered(
        "server.drain_timeout",
        ENV_DRAIN_TIMEOUT,
        "--drain-timeout",
        "\"10s\"",
    ),
    file_only("server.socket_mode", "\"0660\""),
    file_only("server.allow_insecure_tcp", "false"),
    file_only("server.max_pending", "1024"),
    file_only("server.tls.cert_file", "\"tls/server.pem\""),
    file_only("server.tls.key_file", "\"tls/server.key\""),
    file_only("server.tls.client_ca_file", "\"tls/client-ca.pem\""),
    layered(
        "hsm.uri",
        ENV_PKCS11_URI,
        "--pkcs11-uri",
        "\"pkcs11:token=hallmark\"",
    ),
    layered(
        "hsm.module",
        ENV_MODULE,
        "--module",
        "\"/usr/lib/softhsm/libsofthsm2.so\"",
    ),
    layered(
        "hsm.token_label",
        ENV_TOKEN_LABEL,
        "--token-label",
        "\"hallmark\"",
    ),
    layered(
        "hsm.token_serial",
        ENV_TOKEN_SERIAL,
        "--token-serial",
        "\"9a5998f62339a02b\"",
    ),
    layered(
        "hsm.pin_file",
        ENV_PIN_FILE,
        "--pin-file",
        "\"/run/secrets/hallmark/pin\"",
    ),
    layered("hsm.sessions", ENV_SESSIONS, "--sessions", "2"),
    file_only("hsm.module_env.<VAR>", "\"/etc/softhsm/softhsm2.conf\""),
    layered(
        "signing.default_key",
        ENV_DEFAULT_KEY,
        "--default-key",
        "\"default\"",
    ),
    layered(
        "signing.refresh_interval",
        ENV_REFRESH_INTERVAL,
        "--refresh-interval",
        "\"30s\"",
    ),
    file_only("signing.wait_for_default_key", "false"),
    file_only("signing.max_batch", "256"),
    file_only("keys.<name>.algorithm", "\"rsa-pss-sha256\""),
    file_only("keys.<name>.bits", "4096"),
    file_only("keys.<name>.salt", "\"digest\""),
    file_only("keys.<name>.rotation_period", "\"90d\""),
    file_only("keys.<name>.prepublish", "\"7d\""),
    file_only("keys.<name>.verify_grace", "\"30d\""),
    file_only("rotation.enabled", "false"),
    file_only("rotation.check_interval", "\"1m\""),
    file_only("audit.enabled", "true"),
    layered(
        "audit.directory",
        ENV_AUDIT_DIR,
        "--audit-dir",
        "\"/var/lib/hallmark/audit\"",
    ),
    file_only("audit.max_file_bytes", "67108864"),
    file_only("audit.append_timeout", "\"2s\""),
    file_only("audit.checkpoint_interval", "\"60s\""),
    file_only("audit.checkpoint_key", "\"audit\""),
    layered("log.level", ENV_LOG_LEVEL, "--log-level", "\"info\""),
    layered("log.format", ENV_LOG_FORMAT, "--log-format", "\"text\""),
    file_only("callers[].name", "\"fraud-model\""),
    file_only("callers[].uid", "1000"),
    file_only(
        "callers[].spiffe_id",
        "\"spiffe://example.org/ns/fraud/sa/scorer\"",
    ),
    file_only("callers[].cn", "\"fraud-scorer\""),
    file_only("callers[].keys", "[\"default\"]"),
    file_only("callers[].rate", "500.0"),
    file_only("callers[].burst", "1000"),
];

/// Returns the table entry of `key`, written as in [`SETTINGS`].
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.key == key)
}

/// The file as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) hsm: RawHsm,
    #[serde(default)]
    pub(super) signing: RawSigning,
    #[serde(default)]
    pub(super) keys: BTreeMap<String, RawKey>,
    #[serde(default)]
    pub(super) rotation: RawRotation,
    #[serde(default)]
    pub(super) callers: Vec<RawCaller>,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) enabled: Option<bool>,
    pub(super) directory: Option<PathBuf>,
    pub(super) max_file_bytes: Option<u64>,
    pub(super) append_timeout: Option<String>,
    pub(super) checkpoint_interval: Option<String>,
    pub(super) checkpoint_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCaller {
    pub(super) name: Option<String>,
    pub(super) uid: Option<u32>,
    pub(super) spiffe_id: Option<String>,
    pub(super) cn: Option<String>,
    pub(super) keys: Option<Vec<String>>,
    pub(super) rate: Option<f64>,
    pub(super) burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRotation {
    pub(super) enabled: Option<bool>,
    pub(super) check_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) metrics_listen: Option<String>,
    pub(super) reflection: Option<bool>,
    pub(super) max_request_bytes: Option<usize>,
    pub(super) drain_timeout: Option<String>,
    pub(super) socket_mode: Option<String>,
    pub(super) allow_insecure_tcp: Option<bool>,
    pub(super) health_listen: Option<String>,
    pub(super) max_pending: Option<usize>,
    pub(super) tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHsm {
    pub(super) uri: Option<String>,
    pub(super) module: Option<PathBuf>,
    pub(super) token_label: Option<String>,
    pub(super) token_serial: Option<String>,
    pub(super) pin_file: Option<PathBuf>,
    pub(super) sessions: Option<usize>,
    #[serde(default)]
    pub(super) module_env: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    pub(super) default_key: Option<String>,
    pub(super) refresh_interval: Option<String>,
    pub(super) wait_for_default_key: Option<bool>,
    pub(super) max_batch: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) algorithm: Option<String>,
    pub(super) bits: Option<u32>,
    pub(super) salt: Option<toml::Value>,
    pub(super) rotation_period: Option<String>,
    pub(super) prepublish: Option<String>,
    pub(super) verify_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) format: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Returns a file that sets every key of [`SETTINGS`] to its sample
    /// value, with `<name>` as `default` and `<VAR>` as `SOFTHSM2_CONF`.
    fn every_key() -> String {
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for setting in SETTINGS {
            let key = setting
                .key
                .replace("<name>", "default")
                .replace("<VAR>", "SOFTHSM2_CONF");
            let (table, field) = key.rsplit_once('.').expect("every key has a table");
            tables
                .entry(table.to_owned())
                .or_default()
                .push(format!("{field} = {}", setting.sample));
        }
        let mut text = String::new();
        for (table, lines) in tables {
            let header = match table.strip_suffix("[]") {
                Some(array) => format!("[[{array}]]"),
                None => format!("[{table}]"),
            };
            text.push_str(&format!("{header}\n{}\n\n", lines.join("\n")));
        }
        text
    }

    /// Returns the table paths of the file, in the notation of
    /// [`SETTINGS`], with the field names listed under each.
    fn listed_fields() -> BTreeMap<String, BTreeSet<String>> {
        let mut tables: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for setting in SETTINGS {
            let parts: Vec<&str> = setting.key.split('.').collect();
            for depth in 0..parts.len() {
                let table = parts[..depth].join(".");
                tables
                    .entry(table)
                    .or_default()
                    .insert(parts[depth].to_owned());
            }
        }
        tables
    }

    /// Returns the fields that the parser accepts in `table`, read from
    /// serde's message for an unknown field: "unknown field `x`, expected
    /// one of `a`, `b`" or "expected `a`".
    fn accepted_fields(table: &str) -> BTreeSet<String> {
        let text = match table {
            "" => "unlisted_field = 1\n".to_owned(),
            "callers[]" => "[[callers]]\nunlisted_field = 1\n".to_owned(),
            _ => format!(
                "[{}]\nunlisted_field = 1\n",
                table.replace("<name>", "default")
            ),
        };
        let error = toml::from_str::<RawConfig>(&text)
            .expect_err("an unlisted field is rejected")
            .to_string();
        assert!(
            error.contains("unknown field `unlisted_field`"),
            "{table}: {error}"
        );
        let expected = error
            .split_once("expected")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_listed_key_parses() {
        let text = every_key();
        if let Err(error) = toml::from_str::<RawConfig>(&text) {
            panic!("the parser rejects a listed key in\n{text}\n{error}");
        }
        assert_eq!(text.matches(" = ").count(), SETTINGS.len(), "{text}");
    }

    #[test]
    fn parser_accepts_only_listed_keys() {
        for (table, listed) in listed_fields() {
            // Any variable name is accepted in hsm.module_env.
            if table == "hsm.module_env" {
                continue;
            }
            // Key names under [keys] are chosen by the operator.
            if table == "keys" {
                assert_eq!(listed, BTreeSet::from(["<name>".to_owned()]));
                continue;
            }
            let table_name = if table.is_empty() {
                "the top level"
            } else {
                &table
            };
            let fields = listed
                .iter()
                .map(|field| field.trim_end_matches("[]").to_owned())
                .collect::<BTreeSet<_>>();
            assert_eq!(
                accepted_fields(&table),
                fields,
                "keys of {table_name}: the parser (left) and SETTINGS (right) differ"
            );
        }
    }

    #[test]
    fn keys_are_unique() {
        let mut seen = BTreeSet::new();
        for setting in SETTINGS {
            assert!(seen.insert(setting.key), "{} is listed twice", setting.key);
        }
    }
}
