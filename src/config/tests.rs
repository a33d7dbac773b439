//! Tests of loading: defaults, layers, validation and problem messages.

use super::*;
use crate::caller::{KeyScope, RateLimit, Selector};

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
    let from_env =
        parse_with(&text, &[(ENV_LISTEN, "127.0.0.1:2")], &Overrides::default()).expect("valid");
    assert_eq!(from_env.listen.to_string(), "127.0.0.1:2");

    let flags = Overrides {
        listen: Some("unix:/tmp/h.sock".into()),
        ..Overrides::default()
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
    assert_eq!(
        problems,
        [
            "keys.default.bitz: unknown key; expected one of `algorithm`, `bits`, `salt`, \
             `rotation_period`, `prepublish`, `verify_grace`"
        ]
    );
}

/// Values of the wrong type and unknown keys are reported with the
/// problems of the values that were read, and a rejected value is not
/// also reported as missing.
#[test]
fn structure_problems_join_the_others() {
    let text = r#"
        [server]
        listn = "127.0.0.1:1"
        drain_timeout = "soon"
        [hsm]
        module = 5
        token_label = ["t"]
        pin_file = false
        [keys]
        default = 3
        [[callers]]
        name = "model"
        uid = "root"
        keys = "default"
        [server.tls]
        cert_file = 1
    "#;
    let problems = parse(
        text,
        Path::new("/etc/hallmark"),
        &env(&[(ENV_LOG_LEVEL, "bogus"), (ENV_LOG_FORMAT, "xml")]),
        &Overrides::default(),
    )
    .expect_err("invalid");
    assert_eq!(
        problems,
        [
            "callers[0].keys: invalid type: string \"default\", expected an array",
            "callers[0].uid: invalid type: string \"root\", expected a whole number from 0 to \
             4294967295",
            "hsm.module: invalid type: integer `5`, expected a path string",
            "hsm.pin_file: invalid type: boolean `false`, expected a path string",
            "hsm.token_label: invalid type: sequence, expected a string",
            "keys.default: invalid type: integer `3`, expected a table",
            "server.listn: unknown key; expected one of `listen`, `metrics_listen`, \
             `reflection`, `max_request_bytes`, `drain_timeout`, `socket_mode`, \
             `allow_insecure_tcp`, `health_listen`, `max_pending`, `tls`",
            "server.tls.cert_file: invalid type: integer `1`, expected a path string",
            "server.drain_timeout: \"soon\" does not start with a whole number",
            "server.tls.key_file is missing; mutual TLS needs cert_file, key_file and \
             client_ca_file",
            "server.tls.client_ca_file is missing; mutual TLS needs cert_file, key_file and \
             client_ca_file",
            "log.level (HALLMARK_LOG_LEVEL): \"bogus\" is not a log level; use off, error, \
             warn, info, debug or trace, or directives such as \"info,hallmark=debug\"",
            "log.format (HALLMARK_LOG_FORMAT): \"xml\" is not text or json",
        ]
    );
}

#[test]
fn example_file_is_valid() {
    let text = include_str!("../../hallmark.example.toml");
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
    assert_eq!(
        problems,
        [
            "keys.default.rotation_period: \"200000000000000d\" is longer than the maximum of \
             36500d",
            "signing.refresh_interval: \"0ms\" is shorter than the minimum of 100ms",
        ]
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
}

/// An overflowing number, a missing number and whitespace each get their
/// own message.
#[test]
fn duration_errors_name_the_cause() {
    let cases = [
        (
            "99999999999999999999d",
            "\"99999999999999999999d\" is longer than the maximum of 36500d",
        ),
        (
            "999999999999999999d",
            "\"999999999999999999d\" is longer than the maximum of 36500d",
        ),
        ("d", "\"d\" does not start with a whole number"),
        (" 30s", "\" 30s\" starts or ends with whitespace; remove it"),
        (
            "30s\n",
            "\"30s\\n\" starts or ends with whitespace; remove it",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(parse_duration(text), Err(message.to_owned()), "{text:?}");
    }
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

/// Returns the text that an environment variable or flag would hold for
/// the sample TOML value of a setting.
fn sample_text(setting: &Setting) -> String {
    match setting.sample.parse::<toml::Value>() {
        Ok(toml::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => {
            let document = format!("value = {}", setting.sample);
            let table: toml::Table = document.parse().expect("sample is a TOML value");
            match &table["value"] {
                toml::Value::String(text) => text.clone(),
                other => other.to_string(),
            }
        }
    }
}

/// A file with the module and keys but no token selector, so that each
/// token setting can come from another layer alone.
const NO_SELECTOR: &str = r#"
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
[keys.default]
[keys.audit]
"#;

/// Returns a valid layer value for `setting`: its sample, except for the
/// PIN file, which must exist.
fn layer_value(setting: &Setting, pin_file: &Path) -> String {
    match setting.key {
        "hsm.pin_file" => pin_file.display().to_string(),
        _ => sample_text(setting),
    }
}

/// Parses [`NO_SELECTOR`] with a token serial from the environment and
/// the PIN from `pin_file`, plus `vars` and `flags`.
fn parse_layers(
    vars: &[(&str, String)],
    flags: &Overrides,
    pin_file: &Path,
) -> Result<Config, Vec<String>> {
    let mut all: BTreeMap<String, String> = BTreeMap::new();
    all.insert(ENV_TOKEN_SERIAL.into(), "0".into());
    all.insert(ENV_PIN_FILE.into(), pin_file.display().to_string());
    for (name, value) in vars {
        all.insert((*name).to_owned(), value.clone());
    }
    parse(NO_SELECTOR, Path::new("/etc/hallmark"), &all, flags)
}

fn pin_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pin");
    std::fs::write(&path, "1234\n").expect("PIN written");
    (dir, path)
}

/// Each layer that can name the PIN file gives its own source, so that a
/// rejected PIN names the setting to fix.
#[test]
fn pin_source_names_the_layer() {
    let (_dir, pin_file) = pin_dir();
    let path = pin_file.display().to_string();
    let text = format!(
        "[hsm]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"t\"\n\
         pin_file = \"{path}\"\n[keys.default]\n"
    );
    let load = |text: &str, pairs: &[(&str, &str)], overrides: &Overrides| {
        parse(text, Path::new("/etc/hallmark"), &env(pairs), overrides)
            .expect("valid")
            .hsm
            .pin_source
    };
    let from_file = load(&text, &[], &Overrides::default());
    assert_eq!(from_file, PinSource::ConfigFile(pin_file.clone()));
    assert_eq!(from_file.to_string(), format!("hsm.pin_file ({path})"));

    let from_env = load(MINIMAL, &[(ENV_PIN_FILE, &path)], &Overrides::default());
    assert_eq!(from_env, PinSource::EnvironmentFile(pin_file.clone()));
    assert_eq!(from_env.to_string(), format!("HALLMARK_PIN_FILE ({path})"));

    let flags = Overrides {
        pin_file: Some(path.clone()),
        ..Overrides::default()
    };
    let from_flag = load(MINIMAL, &[(ENV_PIN_FILE, "/nowhere")], &flags);
    assert_eq!(from_flag, PinSource::FlagFile(pin_file.clone()));
    assert_eq!(from_flag.to_string(), format!("--pin-file ({path})"));

    let variable = load(&text, &[(ENV_PIN, "5678")], &Overrides::default());
    assert_eq!(variable, PinSource::Environment);
    assert_eq!(variable.to_string(), "HALLMARK_PIN");
    assert_eq!(variable.file(), None);
}

/// A PIN file that is not a regular file is refused before it is read,
/// naming the setting that chose it.
#[test]
fn pin_file_must_be_a_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().display().to_string();
    let problems = parse(
        MINIMAL,
        Path::new("/etc/hallmark"),
        &env(&[(ENV_PIN_FILE, &path)]),
        &Overrides::default(),
    )
    .expect_err("invalid");
    assert_eq!(
        problems,
        vec![format!(
            "hsm.pin_file (HALLMARK_PIN_FILE): {path} is a directory, not a regular file; point \
             it at a file that contains the user PIN"
        )]
    );
}

#[test]
fn every_variable_is_read() {
    let (_dir, pin_file) = pin_dir();
    for setting in SETTINGS {
        let Some(name) = setting.env else { continue };
        let value = layer_value(setting, &pin_file);
        let config = parse_layers(&[(name, value.clone())], &Overrides::default(), &pin_file)
            .unwrap_or_else(|problems| panic!("{name}={value}: {problems:?}"));
        assert_eq!(
            config.sources.get(setting.key),
            Source::Env(name),
            "{name} does not set {}",
            setting.key
        );
    }
}

/// Sets the field of `flags` that overrides `key`.
fn set_flag(flags: &mut Overrides, key: &str, value: String) {
    let field = match key {
        "server.listen" => &mut flags.listen,
        "server.metrics_listen" => &mut flags.metrics_listen,
        "server.health_listen" => &mut flags.health_listen,
        "server.reflection" => &mut flags.reflection,
        "server.drain_timeout" => &mut flags.drain_timeout,
        "hsm.uri" => &mut flags.pkcs11_uri,
        "hsm.module" => &mut flags.module,
        "hsm.token_label" => &mut flags.token_label,
        "hsm.token_serial" => &mut flags.token_serial,
        "hsm.pin_file" => &mut flags.pin_file,
        "hsm.sessions" => &mut flags.sessions,
        "signing.default_key" => &mut flags.default_key,
        "signing.refresh_interval" => &mut flags.refresh_interval,
        "audit.directory" => &mut flags.audit_dir,
        "log.level" => &mut flags.log_level,
        "log.format" => &mut flags.log_format,
        other => panic!("{other} has a flag in SETTINGS but no field in Overrides"),
    };
    *field = Some(value);
}

#[test]
fn every_flag_is_read_and_beats_the_variable() {
    let (_dir, pin_file) = pin_dir();
    for setting in SETTINGS {
        let Some(flag) = setting.flag else { continue };
        let env = setting.env.expect("every flag has a variable");
        let value = layer_value(setting, &pin_file);
        let mut flags = Overrides::default();
        set_flag(&mut flags, setting.key, value.clone());
        assert_eq!(flags.get(setting.key), Some(value.as_str()));
        // The variable contains an invalid value, so the flag must win.
        let vars = [(env, "\u{1}invalid".to_owned())];
        let config = parse_layers(&vars, &flags, &pin_file)
            .unwrap_or_else(|problems| panic!("{flag} {value}: {problems:?}"));
        assert_eq!(config.sources.get(setting.key), Source::Flag(flag));
    }
}

#[test]
fn layers_override_in_order() {
    let (_dir, pin_file) = pin_dir();
    let drain = |vars: &[(&str, String)], flag: Option<&str>, file: &str| {
        let flags = Overrides {
            drain_timeout: flag.map(str::to_owned),
            ..Overrides::default()
        };
        let text = format!("{file}\n{NO_SELECTOR}");
        let mut all: BTreeMap<String, String> =
            [(ENV_TOKEN_SERIAL.to_owned(), "0".to_owned())].into();
        all.insert(ENV_PIN_FILE.into(), pin_file.display().to_string());
        for (name, value) in vars {
            all.insert((*name).to_owned(), value.clone());
        }
        let config = parse(&text, Path::new("/"), &all, &flags).expect("valid");
        (
            config.drain_timeout,
            config.sources.get("server.drain_timeout"),
        )
    };
    let file = "[server]\ndrain_timeout = \"20s\"";
    let env = [(ENV_DRAIN_TIMEOUT, "30s".to_owned())];
    assert_eq!(
        drain(&[], None, ""),
        (DEFAULT_DRAIN_TIMEOUT, Source::Default)
    );
    assert_eq!(
        drain(&[], None, file),
        (Duration::from_secs(20), Source::File)
    );
    assert_eq!(
        drain(&env, None, file),
        (Duration::from_secs(30), Source::Env(ENV_DRAIN_TIMEOUT))
    );
    assert_eq!(
        drain(&env, Some("40s"), file),
        (Duration::from_secs(40), Source::Flag("--drain-timeout"))
    );
}

#[test]
fn layer_problems_name_the_variable_and_flag() {
    let flags = Overrides {
        sessions: Some("many".into()),
        listen: Some("nowhere".into()),
        ..Overrides::default()
    };
    let vars = [
        (ENV_REFLECTION, "yes"),
        (ENV_DRAIN_TIMEOUT, "10"),
        (ENV_DEFAULT_KEY, "Bad Name"),
        (ENV_LOG_FORMAT, "xml"),
    ];
    let problems = parse_with(MINIMAL, &vars, &flags).expect_err("invalid");
    assert_eq!(
        problems,
        [
            "server.listen (--listen): \"nowhere\" is not host:port (an IP address and port) \
             or unix:PATH",
            "server.reflection (HALLMARK_REFLECTION): \"yes\" is not true or false",
            "server.drain_timeout (HALLMARK_DRAIN_TIMEOUT): \"10\" has no unit; write for \
             example 90d, 12h, 30s or 500ms",
            "hsm.sessions (--sessions): \"many\" is not a whole number",
            "signing.default_key (HALLMARK_DEFAULT_KEY): \"Bad Name\" is not a valid key name: \
             use 1 to 63 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or \
             digit",
            "log.format (HALLMARK_LOG_FORMAT): \"xml\" is not text or json",
        ]
    );
}

#[test]
fn flag_paths_are_not_rebased() {
    let (_dir, pin_file) = pin_dir();
    let flags = Overrides {
        module: Some("/opt/hsm/p11.so".into()),
        ..Overrides::default()
    };
    let config = parse_layers(&[], &flags, &pin_file).expect("valid");
    assert_eq!(config.hsm.module, PathBuf::from("/opt/hsm/p11.so"));
    let vars = [(ENV_MODULE, "lib/p11.so".to_owned())];
    let config = parse_layers(&vars, &Overrides::default(), &pin_file).expect("valid");
    assert_eq!(config.hsm.module, PathBuf::from("/etc/hallmark/lib/p11.so"));
}

#[test]
fn log_settings_parse() {
    let config = parse_with(MINIMAL, &[], &Overrides::default()).expect("valid");
    assert_eq!(config.log, LogConfig::default());
    let text = format!("[log]\nlevel = \"warn,hallmark=debug\"\nformat = \"json\"\n{MINIMAL}");
    let config = parse_with(&text, &[], &Overrides::default()).expect("valid");
    assert_eq!(
        config.log,
        LogConfig {
            level: "warn,hallmark=debug".into(),
            format: LogFormat::Json,
        }
    );
    let text = format!("[log]\nlevel = \"loud\"\n{MINIMAL}");
    let problems = parse_with(&text, &[], &Overrides::default()).expect_err("invalid");
    assert_eq!(
        problems,
        [
            "log.level: \"loud\" is not a log level; use off, error, warn, info, debug or trace, \
             or directives such as \"info,hallmark=debug\""
        ]
    );
}

#[test]
fn log_levels_are_checked() {
    for valid in ["info", "WARN", "off", "hallmark=debug", "info,tower=warn"] {
        assert_eq!(check_log_level(valid), Ok(()), "{valid}");
    }
    for invalid in [
        "",
        "loud",
        "hallmark=loud",
        "info,,debug",
        "hallmark",
        "info, tower=warn",
    ] {
        assert!(check_log_level(invalid).is_err(), "{invalid}");
    }
}

const URI_BASE: &str = r#"
[keys.default]
"#;

#[test]
fn uri_sets_module_token_and_pin() {
    let (_dir, pin_file) = pin_dir();
    let text = format!(
        "[hsm]\nuri = \"pkcs11:token=dev%20token;serial=42;model=SoftHSM%20v2\
         ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:{}\"\n{URI_BASE}",
        pin_file.display()
    );
    let config = parse(&text, Path::new("/"), &env(&[]), &Overrides::default()).expect("valid");
    assert_eq!(
        config.hsm.module,
        PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
    );
    assert_eq!(
        config.hsm.token,
        TokenSelector {
            label: Some("dev token".into()),
            serial: Some("42".into()),
            manufacturer: None,
            model: Some("SoftHSM v2".into()),
        }
    );
    assert_eq!(config.hsm.pin.expose(), "1234");
    assert_eq!(config.hsm.pin_source, PinSource::UriFile(pin_file));
    for key in [
        "hsm.module",
        "hsm.token_label",
        "hsm.token_serial",
        "hsm.pin_file",
    ] {
        assert_eq!(config.sources.get(key), Source::Uri, "{key}");
    }
    assert_eq!(config.sources.get("hsm.uri"), Source::File);
}

#[test]
fn uri_conflicts_are_reported() {
    let text = r#"
        [hsm]
        uri = "pkcs11:token=a;serial=1?module-path=/lib/p11.so&pin-source=file:/run/pin"
        module = "/lib/other.so"
        token_label = "b"
        pin_file = "/run/other-pin"
        [keys.default]
    "#;
    let vars = [(ENV_TOKEN_SERIAL, "2")];
    let problems = parse_with(text, &vars, &Overrides::default()).expect_err("conflicts");
    assert_eq!(
        problems,
        [
            "hsm.uri sets the module with module-path=, and hsm.module sets it too; remove one \
             of them",
            "hsm.uri sets the token label with token=, and hsm.token_label sets it too; remove \
             one of them",
            "hsm.uri sets the token serial with serial=, and hsm.token_serial \
             (HALLMARK_TOKEN_SERIAL) sets it too; remove one of them",
            "hsm.uri sets the PIN file with pin-source=, and hsm.pin_file sets it too; remove \
             one of them",
        ]
    );
}

#[test]
fn uri_from_variable_conflicts_with_file() {
    let vars = [(ENV_PKCS11_URI, "pkcs11:token=x")];
    let problems = parse_with(MINIMAL, &vars, &Overrides::default()).expect_err("conflict");
    assert_eq!(
        problems,
        [
            "hsm.uri (HALLMARK_PKCS11_URI) sets the token label with token=, and \
             hsm.token_label sets it too; remove one of them"
        ]
    );
}

#[test]
fn padded_uri_never_shows_its_pin_value() {
    let vars = [(ENV_PKCS11_URI, " pkcs11:token=x?pin-value=SECRET1234")];
    let problems = parse_with(MINIMAL, &vars, &Overrides::default()).expect_err("padded");
    assert_eq!(
        problems,
        ["hsm.uri (HALLMARK_PKCS11_URI): the value starts or ends with whitespace; remove it"]
    );
}

#[test]
fn uri_may_leave_the_module_to_its_key() {
    let text = "[hsm]\nuri = \"pkcs11:serial=9a59\"\nmodule = \"/lib/p11.so\"\n[keys.default]\n";
    let config = parse_with(text, &[], &Overrides::default()).expect("valid");
    assert_eq!(config.hsm.module, PathBuf::from("/lib/p11.so"));
    assert_eq!(config.hsm.token.serial.as_deref(), Some("9a59"));
    assert_eq!(config.sources.get("hsm.module"), Source::File);
}

#[test]
fn invalid_uri_is_the_only_hsm_problem() {
    let text = "[hsm]\nuri = \"pkcs11:token=t?pin-value=1234\"\n[keys.default]\n";
    let problems = parse(text, Path::new("/"), &env(&[]), &Overrides::default())
        .expect_err("pin-value is rejected");
    assert_eq!(
        problems,
        [
            "hsm.uri: pin-value is rejected, because a PIN in a URI shows up in logs, shell \
             histories and process lists; use pin-source=file:PATH, hsm.pin_file or the \
             HALLMARK_PIN environment variable"
        ]
    );
}

#[test]
fn selector_matches_every_attribute() {
    let selector = TokenSelector {
        label: Some("a".into()),
        model: Some("m".into()),
        ..TokenSelector::default()
    };
    assert!(selector.matches("a", "1", "maker", "m"));
    assert!(!selector.matches("a", "1", "maker", "other"));
    assert!(!selector.matches("b", "1", "maker", "m"));
    assert_eq!(selector.to_string(), "label \"a\" and model \"m\"");
    let three = TokenSelector {
        serial: Some("1".into()),
        manufacturer: Some("maker".into()),
        ..selector
    };
    assert_eq!(
        three.to_string(),
        "label \"a\", serial \"1\", manufacturer \"maker\" and model \"m\""
    );
}

#[test]
fn file_depth_checks_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    std::fs::write(base.join("pin"), "1234").expect("PIN written");
    std::fs::write(base.join("cert.pem"), "not a certificate").expect("written");
    std::fs::write(base.join("key.pem"), "not a key").expect("written");
    std::fs::write(base.join("audit"), "a file").expect("written");
    let text = r#"
        [server]
        listen = "127.0.0.1:50051"
        [server.tls]
        cert_file = "cert.pem"
        key_file = "key.pem"
        client_ca_file = "missing-ca.pem"
        [hsm]
        module = "missing.so"
        token_label = "t"
        pin_file = "pin"
        [audit]
        directory = "audit"
        [keys.default]
    "#;
    let values = parse_to_depth(text, base, &env(&[]), &Overrides::default(), Depth::Values);
    assert!(values.is_ok(), "{values:?}");
    let problems = parse_to_depth(text, base, &env(&[]), &Overrides::default(), Depth::Files)
        .expect_err("missing files");
    let shown = |name: &str| base.join(name).display().to_string();
    assert_eq!(
        problems,
        [
            format!("hsm.module: {} does not exist", shown("missing.so")),
            format!(
                "server.tls.client_ca_file: {} does not exist",
                shown("missing-ca.pem")
            ),
            format!("audit.directory: {} is not a directory", shown("audit")),
        ]
    );
}

#[test]
fn file_depth_parses_tls_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    for name in ["pin", "module.so", "cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(base.join(name), "1234").expect("written");
    }
    let text = r#"
        [server.tls]
        cert_file = "cert.pem"
        key_file = "key.pem"
        client_ca_file = "ca.pem"
        [hsm]
        module = "module.so"
        token_label = "t"
        pin_file = "pin"
        [audit]
        directory = "audit"
        [keys.default]
    "#;
    let problems = parse_to_depth(text, base, &env(&[]), &Overrides::default(), Depth::Files)
        .expect_err("the PEM files hold no PEM");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("server.tls: the PEM files are not a valid TLS identity and CA"),
        "{problems:?}"
    );
}

/// `serve` loads to [`Depth::TlsFiles`]: the TLS files are read and
/// parsed, and the module and audit directory are left to start-up.
#[test]
fn tls_depth_checks_only_tls_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    for name in ["pin", "cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(base.join(name), "1234").expect("written");
    }
    std::fs::write(base.join("audit"), "a file").expect("written");
    let text = r#"
        [server.tls]
        cert_file = "cert.pem"
        key_file = "key.pem"
        client_ca_file = "missing-ca.pem"
        [hsm]
        module = "missing.so"
        token_label = "t"
        pin_file = "pin"
        [audit]
        directory = "audit"
        [keys.default]
    "#;
    let depth = Depth::TlsFiles;
    let problems = parse_to_depth(text, base, &env(&[]), &Overrides::default(), depth)
        .expect_err("the CA file is missing");
    assert_eq!(
        problems,
        [format!(
            "server.tls.client_ca_file: {} does not exist",
            base.join("missing-ca.pem").display()
        )]
    );

    let text = text.replace("missing-ca.pem", "ca.pem");
    let problems = parse_to_depth(&text, base, &env(&[]), &Overrides::default(), depth)
        .expect_err("the PEM files hold no PEM");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("server.tls: the PEM files are not a valid TLS identity and CA"),
        "{problems:?}"
    );
}

#[test]
fn module_alone_loads_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hallmark.toml");
    std::fs::write(
        &path,
        "[hsm]\nmodule = \"lib/p11.so\"\n[hsm.module_env]\nSOFTHSM2_CONF = \"/etc/s.conf\"\n",
    )
    .expect("written");
    let (module, module_env) =
        load_module(&path, &env(&[]), &Overrides::default()).expect("module found");
    assert_eq!(module, dir.path().join("lib/p11.so"));
    assert_eq!(
        module_env,
        BTreeMap::from([("SOFTHSM2_CONF".to_owned(), "/etc/s.conf".to_owned())])
    );

    let vars = env(&[(ENV_PKCS11_URI, "pkcs11:?module-path=/opt/p11.so")]);
    std::fs::write(&path, "[keys.default]\n").expect("written");
    let (module, _) = load_module(&path, &vars, &Overrides::default()).expect("module found");
    assert_eq!(module, PathBuf::from("/opt/p11.so"));

    let error = load_module(&path, &env(&[]), &Overrides::default()).expect_err("no module");
    assert_eq!(
        error.problems,
        [
            "hsm.module is missing: set it to the PKCS#11 library path (or set \
             HALLMARK_PKCS11_MODULE, or module-path in hsm.uri), or give --module"
        ]
    );
}

#[test]
fn config_file_size_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hallmark.toml");
    let table = "[hsm]\nmodule = \"/opt/p11.so\"\n";
    let limit = usize::try_from(MAX_CONFIG_BYTES).expect("fits");
    let mut text = format!("{table}#");
    text.push_str(&"x".repeat(limit - text.len()));
    std::fs::write(&path, &text).expect("written");

    let (module, _) = load_module(&path, &env(&[]), &Overrides::default()).expect("read whole");
    assert_eq!(module, PathBuf::from("/opt/p11.so"));

    text.push('x');
    std::fs::write(&path, &text).expect("written");
    let error = load_module(&path, &env(&[]), &Overrides::default()).expect_err("too large");
    assert_eq!(
        error.problems,
        [format!(
            "{} is larger than the maximum of 1 MiB for a configuration file; point --config or \
             HALLMARK_CONFIG at the configuration file",
            path.display()
        )]
    );

    let error = load(dir.path(), &env(&[]), &Overrides::default()).expect_err("a directory");
    assert_eq!(
        error.problems,
        [format!(
            "{} is a directory, but the configuration must be a regular file; point --config or \
             HALLMARK_CONFIG at the configuration file",
            dir.path().display()
        )]
    );
}

/// Splits printed lines into the assignment and its source comment,
/// without the alignment padding between them.
fn assignments(printed: &str) -> Vec<(String, String)> {
    printed
        .lines()
        .filter_map(|line| {
            let (assignment, source) = line.split_once("  # ")?;
            Some((assignment.trim_end().to_owned(), source.to_owned()))
        })
        .collect()
}

fn pair(assignment: &str, source: &str) -> (String, String) {
    (assignment.to_owned(), source.to_owned())
}

#[test]
fn print_shows_sources_and_reads_back() {
    let (_dir, pin_file) = pin_dir();
    let text = format!(
        "[server]\nmax_pending = 8\n[hsm]\nmodule = \"/lib/p11.so\"\ntoken_label = \"t\"\n\
         pin_file = \"{}\"\nsessions = 3\n[hsm.module_env]\nSOFTHSM2_CONF = \"/etc/s.conf\"\n\
         [keys.default]\nbits = 2048\n[keys.\"fraud.v2\"]\nalgorithm = \"ed25519\"\n\
         [[callers]]\nname = \"model\"\nuid = 1000\nkeys = [\"default\"]\nrate = 2.5\n",
        pin_file.display()
    );
    let vars = env(&[(ENV_LISTEN, "unix:/run/h.sock")]);
    let flags = Overrides {
        drain_timeout: Some("15s".into()),
        ..Overrides::default()
    };
    let config = parse(&text, Path::new("/etc/hallmark"), &vars, &flags).expect("valid");
    let printed = render(&config, Path::new("/etc/hallmark/hallmark.toml"), None);
    let found = assignments(&printed);
    for expected in [
        pair("listen = \"unix:/run/h.sock\"", "env HALLMARK_LISTEN"),
        pair("drain_timeout = \"15s\"", "flag --drain-timeout"),
        pair("max_pending = 8", "file"),
        pair("reflection = true", "default"),
        pair(&format!("pin_file = \"{}\"", pin_file.display()), "file"),
        pair("sessions = 3", "file"),
        pair("SOFTHSM2_CONF = \"/etc/s.conf\"", "file"),
        pair("bits = 2048", "file"),
        pair("algorithm = \"ed25519\"", "file"),
        pair("rate = 2.5", "file"),
        pair("burst = 3", "default"),
    ] {
        assert!(found.contains(&expected), "{expected:?} not in\n{printed}");
    }
    let lines: Vec<&str> = printed.lines().collect();
    for expected in [
        "# health_listen is not set",
        "[keys.\"fraud.v2\"]",
        "[[callers]]",
    ] {
        assert!(lines.contains(&expected), "{expected:?} not in\n{printed}");
    }
    // Within a table the source comments start in one column.
    let server: Vec<usize> = lines
        .iter()
        .skip_while(|line| **line != "[server]")
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.find("  # "))
        .collect();
    assert_eq!(server.len(), 8, "{printed}");
    assert!(
        server.iter().all(|column| *column == server[0]),
        "{printed}"
    );
    assert!(!printed.contains("1234"), "the PIN leaked:\n{printed}");

    let again = parse(&printed, Path::new("/"), &env(&[]), &Overrides::default())
        .expect("the printed configuration is valid");
    let reprinted = render(&again, Path::new("/etc/hallmark/hallmark.toml"), None);
    let values = |text: &str| -> Vec<String> {
        assignments(text)
            .into_iter()
            .map(|(assignment, _)| assignment)
            .collect()
    };
    assert_eq!(values(&reprinted), values(&printed));
}

#[test]
fn print_hides_uri_values_and_pin() {
    let text = "[hsm]\nuri = \"pkcs11:token=t?module-path=/lib/p11.so\"\n[keys.default]\n";
    let config = parse_with(text, &[], &Overrides::default()).expect("valid");
    let printed = render(&config, Path::new("hallmark.toml"), Some("debug"));
    let found = assignments(&printed);
    for expected in [
        pair("uri = \"pkcs11:token=t?module-path=/lib/p11.so\"", "file"),
        pair("# module = \"/lib/p11.so\"", "hsm.uri"),
        pair("# token_label = \"t\"", "hsm.uri"),
    ] {
        assert!(found.contains(&expected), "{expected:?} not in\n{printed}");
    }
    let lines: Vec<&str> = printed.lines().collect();
    for expected in [
        "# the PIN is read from the HALLMARK_PIN environment variable, which takes precedence \
         over any PIN file; its value is not shown",
        "# RUST_LOG=\"debug\" is set and replaces level",
    ] {
        assert!(lines.contains(&expected), "{expected:?} not in\n{printed}");
    }
    assert!(!printed.contains("1234"), "the PIN leaked:\n{printed}");
}

#[test]
fn module_environment_must_be_settable() {
    let text = format!(
        "{MINIMAL}\n[hsm.module_env]\n\"A=B\" = \"x\"\n\"\" = \"y\"\nGOOD = \"a\\u0000b\"\n"
    );
    // MINIMAL's [keys.default] precedes the table, so the table is last.
    let problems = parse_with(&text, &[], &Overrides::default()).expect_err("invalid");
    let about_env: Vec<&String> = problems
        .iter()
        .filter(|p| p.contains("hsm.module_env"))
        .collect();
    assert_eq!(about_env.len(), 3, "{problems:?}");
    assert!(
        about_env
            .iter()
            .any(|p| p.contains("\"A=B\" is not an environment variable name")),
        "{problems:?}"
    );
    assert!(
        about_env
            .iter()
            .any(|p| p.contains("the value contains a NUL character")),
        "{problems:?}"
    );
}

/// Values in `[hsm.module_env]` get the empty and whitespace check of
/// every other string value, also when `tokens list` reads only the module.
#[test]
fn module_environment_values_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hallmark.toml");
    let table = "[hsm.module_env]\nEMPTY = \"\"\nPADDED = \" /etc/s.conf\"\n\
                 \"TAB.NAME\" = \"/etc/s.conf\\t\"\nGOOD = \"/etc/s.conf\"\n";
    let expected = [
        "hsm.module_env.EMPTY: the value is empty; set a value or remove the key",
        "hsm.module_env.PADDED: \" /etc/s.conf\" starts or ends with whitespace; remove it",
        "hsm.module_env.TAB.NAME: \"/etc/s.conf\\t\" starts or ends with whitespace; remove \
         it",
    ];

    let problems =
        parse_with(&format!("{MINIMAL}\n{table}"), &[], &Overrides::default()).expect_err("bad");
    assert_eq!(problems, expected);

    std::fs::write(&path, format!("[hsm]\nmodule = \"/lib/p11.so\"\n{table}")).expect("written");
    let error = load_module(&path, &env(&[]), &Overrides::default()).expect_err("bad");
    assert_eq!(error.problems, expected);
}

/// `tokens list` sets `[hsm.module_env]` before it loads the module, so an
/// unusable variable name is rejected there too.
#[test]
fn module_only_rejects_unsettable_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hallmark.toml");
    let text = "[hsm]\nmodule = \"/lib/p11.so\"\n[hsm.module_env]\n\"A=B\" = \"x\"\n\
                GOOD = \"a\\u0000b\"\n";
    std::fs::write(&path, text).expect("written");

    let error = load_module(&path, &env(&[]), &Overrides::default()).expect_err("bad");

    assert_eq!(
        error.problems,
        [
            "hsm.module_env: \"A=B\" is not an environment variable name: it must not be empty \
             or contain \"=\" or a NUL character",
            "hsm.module_env.GOOD: the value contains a NUL character, which an environment \
             variable cannot hold",
        ]
    );
}

#[test]
fn empty_token_label_or_serial_is_refused() {
    for (key, var) in [
        ("hsm.token_label", "HALLMARK_TOKEN_LABEL"),
        ("hsm.token_serial", "HALLMARK_TOKEN_SERIAL"),
    ] {
        let problems =
            parse_with(MINIMAL, &[(var, "")], &Overrides::default()).expect_err("invalid");
        assert_eq!(
            problems,
            [format!(
                "{key} ({var}): the value is empty; set a value or unset {var}"
            )]
        );
    }
}

/// Empty values and values with whitespace at an edge are rejected from
/// every layer, with advice that fits the layer, and are not reported as
/// missing too.
#[test]
fn empty_and_padded_values_are_rejected() {
    let (_dir, pin_file) = pin_dir();
    let vars = [
        (ENV_AUDIT_DIR, String::new()),
        (ENV_MODULE, String::new()),
        (ENV_LOG_FORMAT, "json ".to_owned()),
        (ENV_REFLECTION, " true".to_owned()),
    ];
    let flags = Overrides {
        drain_timeout: Some("10s\t".into()),
        default_key: Some(String::new()),
        ..Overrides::default()
    };
    let problems = parse_layers(&vars, &flags, &pin_file).expect_err("invalid");
    assert_eq!(
        problems,
        [
            "server.reflection (HALLMARK_REFLECTION): \" true\" starts or ends with \
             whitespace; remove it",
            "server.drain_timeout (--drain-timeout): \"10s\\t\" starts or ends with \
             whitespace; remove it",
            "hsm.module (HALLMARK_PKCS11_MODULE): the value is empty; set a value or unset \
             HALLMARK_PKCS11_MODULE",
            "signing.default_key (--default-key): the value is empty; give --default-key a \
             value or leave it out",
            "audit.directory (HALLMARK_AUDIT_DIR): the value is empty; set a value or unset \
             HALLMARK_AUDIT_DIR",
            "log.format (HALLMARK_LOG_FORMAT): \"json \" starts or ends with whitespace; \
             remove it",
        ]
    );

    let text = "[hsm]\nmodule = \"\"\ntoken_label = \"t \"\n[keys.default]\n";
    let problems = parse_with(text, &[], &Overrides::default()).expect_err("invalid");
    assert_eq!(
        problems,
        [
            "hsm.module: the value is empty; set a value or remove the key",
            "hsm.token_label: \"t \" starts or ends with whitespace; remove it",
        ]
    );
}

/// A relative path is resolved against the directory of the file once,
/// also when that directory is itself relative, as that of `--config
/// t/hallmark.toml` is.
#[test]
fn relative_paths_resolve_once() {
    // Cargo runs unit tests in the package directory.
    let dir = tempfile::Builder::new()
        .prefix("relative-paths-")
        .tempdir_in(".")
        .expect("tempdir");
    let working = std::env::current_dir().expect("working directory");
    let base = dir.path().strip_prefix(&working).expect("below it");
    std::fs::write(base.join("pin"), "1234").expect("PIN written");
    let text = "[hsm]\nmodule = \"lib/p11.so\"\ntoken_label = \"t\"\npin_file = \"pin\"\n\
                [audit]\ndirectory = \"audit\"\n[keys.default]\n";
    let config = parse(text, base, &env(&[]), &Overrides::default()).expect("valid");
    assert_eq!(config.hsm.module, base.join("lib/p11.so"));
    assert_eq!(
        config.hsm.pin_source,
        PinSource::ConfigFile(base.join("pin"))
    );
    assert_eq!(
        config.audit.expect("audit on").directory,
        base.join("audit")
    );
}

/// A relative Unix socket path from the file or the environment is
/// relative to the file's directory, like other paths. One from a flag
/// stays relative to the working directory.
#[test]
fn relative_socket_path_follows_its_layer() {
    // parse_with reads the file from /etc/hallmark.
    let text = format!("[server]\nlisten = \"unix:run/h.sock\"\n{MINIMAL}");
    let socket = |env: &[(&str, &str)], overrides: &Overrides| {
        parse_with(&text, env, overrides).expect("valid").listen
    };
    assert_eq!(
        socket(&[], &Overrides::default()),
        ListenAddr::Unix(PathBuf::from("/etc/hallmark/run/h.sock"))
    );
    assert_eq!(
        socket(&[(ENV_LISTEN, "unix:env.sock")], &Overrides::default()),
        ListenAddr::Unix(PathBuf::from("/etc/hallmark/env.sock"))
    );
    let flags = Overrides {
        listen: Some("unix:flag.sock".into()),
        ..Overrides::default()
    };
    assert_eq!(
        socket(&[], &flags),
        ListenAddr::Unix(PathBuf::from("flag.sock"))
    );
    assert_eq!(
        socket(&[(ENV_LISTEN, "unix:/abs/h.sock")], &Overrides::default()),
        ListenAddr::Unix(PathBuf::from("/abs/h.sock"))
    );
}

/// Selector values longer than their CK_TOKEN_INFO field match no token,
/// so they are rejected, from any layer and from `hsm.uri`.
#[test]
fn oversized_token_selectors_are_rejected() {
    let label = "l".repeat(33);
    let serial = "s".repeat(17);
    let problems = parse_with(
        MINIMAL,
        &[(ENV_TOKEN_LABEL, &label), (ENV_TOKEN_SERIAL, &serial)],
        &Overrides::default(),
    )
    .expect_err("invalid");
    assert_eq!(
        problems,
        [
            format!(
                "hsm.token_label (HALLMARK_TOKEN_LABEL): {label:?} is 33 bytes long, but a \
                 token label has at most 32 bytes, so no token can match; `hallmark tokens \
                 list` shows the tokens"
            ),
            format!(
                "hsm.token_serial (HALLMARK_TOKEN_SERIAL): {serial:?} is 17 bytes long, but a \
                 token serial number has at most 16 bytes, so no token can match; `hallmark \
                 tokens list` shows the tokens"
            ),
        ]
    );

    // 32 bytes fit, also when some characters take two bytes.
    let fits = "é".repeat(16);
    let config =
        parse_with(MINIMAL, &[(ENV_TOKEN_LABEL, &fits)], &Overrides::default()).expect("valid");
    assert_eq!(config.hsm.token.label.as_deref(), Some(fits.as_str()));

    let model = "m".repeat(17);
    let text =
        format!("[hsm]\nuri = \"pkcs11:token=t;model={model}?module-path=/p.so\"\n{URI_BASE}");
    let problems = parse_with(&text, &[], &Overrides::default()).expect_err("invalid");
    assert_eq!(
        problems,
        [format!(
            "the model in hsm.uri: {model:?} is 17 bytes long, but a token model has at most 16 \
             bytes, so no token can match; `hallmark tokens list` shows the tokens"
        )]
    );
}

/// An audit directory on /proc or /sys is rejected when values are
/// checked, which `serve` does too.
#[test]
fn kernel_audit_directory_is_rejected() {
    for (directory, root) in [("/proc/self/audit", "/proc"), ("/var/../sys/audit", "/sys")] {
        let problems = parse_with(
            MINIMAL,
            &[(ENV_AUDIT_DIR, directory)],
            &Overrides::default(),
        )
        .expect_err("invalid");
        assert_eq!(
            problems,
            [format!(
                "audit.directory (HALLMARK_AUDIT_DIR): {directory} is on {root}, a kernel file \
                 system that cannot keep the audit files; choose a directory on persistent \
                 storage, such as /var/lib/hallmark/audit"
            )]
        );
    }
}

/// An environment whose variables may contain bytes that are not UTF-8.
struct RawEnv(BTreeMap<&'static str, std::ffi::OsString>);

impl Environment for RawEnv {
    fn var(&self, name: &str) -> Result<Option<String>, NotUnicode> {
        match self.0.get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(|text| Some(text.to_owned()))
                .ok_or(NotUnicode),
        }
    }
}

/// A variable that is not UTF-8 is a problem that names it and does not
/// show its value, and the file's value does not take its place.
#[test]
fn non_unicode_variables_are_rejected() {
    use std::os::unix::ffi::OsStringExt;

    let (_dir, pin_file) = pin_dir();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\n[hsm]\nmodule = \"/p.so\"\ntoken_label = \"t\"\n\
         pin_file = \"{}\"\n[keys.default]\n",
        pin_file.display()
    );
    let bytes = |value: &[u8]| std::ffi::OsString::from_vec(value.to_vec());
    let vars = RawEnv(BTreeMap::from([
        (ENV_PIN, bytes(b"12\xff34")),
        (ENV_LISTEN, bytes(b"127.0.0.1:\xfe")),
        (ENV_MODULE, bytes(b"/opt/\xc0.so")),
    ]));
    let problems = parse(&text, Path::new("/"), &vars, &Overrides::default()).expect_err("invalid");
    assert_eq!(
        problems,
        [
            "server.listen (HALLMARK_LISTEN): the value is not valid UTF-8; set it to UTF-8 \
             text or unset HALLMARK_LISTEN",
            "hsm.module (HALLMARK_PKCS11_MODULE): the value is not valid UTF-8; set it to \
             UTF-8 text or unset HALLMARK_PKCS11_MODULE",
            "HALLMARK_PIN: the value is not valid UTF-8; set it to UTF-8 text or unset \
             HALLMARK_PIN",
        ]
    );
}
