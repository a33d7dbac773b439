//! `hallmark tokens list` against a real SoftHSM token made by
//! `softhsm/dev-token.sh`. The expected slot ID, label and serial come
//! from SoftHSM's own `softhsm2-util --show-slots`.

mod common;

use std::process::{Command, Output};

use common::{FaultControl, HALLMARK, TestToken};

/// Exit code for a configuration problem (EX_USAGE).
const EXIT_CONFIG: i32 = 64;

/// SoftHSM 2.6's manufacturer ID and model, in every token it makes.
const SOFTHSM_MANUFACTURER: &str = "SoftHSM project";
const SOFTHSM_MODEL: &str = "SoftHSM v2";

/// One token as `softhsm2-util --show-slots` describes it.
#[derive(Debug, PartialEq, Eq)]
struct Shown {
    slot_id: String,
    label: String,
    serial: String,
    initialized: bool,
}

/// Reads every slot from `softhsm2-util --show-slots`.
fn softhsm_slots(token: &TestToken) -> Vec<Shown> {
    let output = Command::new("softhsm2-util")
        .arg("--show-slots")
        .env("SOFTHSM2_CONF", token.dir.path().join("softhsm2.conf"))
        .output()
        .expect("softhsm2-util runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let mut slots = Vec::new();
    for block in text.split("\nSlot ").skip(1) {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|line| line.trim().strip_prefix(name))
                .map(|value| value.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in {block}"))
        };
        slots.push(Shown {
            slot_id: block.lines().next().expect("slot line").trim().to_owned(),
            label: field("Label:"),
            serial: field("Serial number:"),
            initialized: field("Initialized:") == "yes",
        });
    }
    slots
}

/// Runs `hallmark` with `args` and extra environment, with no log level
/// or configuration inherited from the test's own environment.
fn hallmark(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(HALLMARK)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("HALLMARK_CONFIG")
        .env_remove("HALLMARK_PKCS11_MODULE")
        .env_remove("HALLMARK_PKCS11_URI")
        .envs(env.iter().copied())
        .output()
        .expect("hallmark runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("UTF-8")
}

/// Splits a table row into its cells, which two or more spaces separate.
fn cells(row: &str) -> Vec<String> {
    row.split("  ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .map(str::to_owned)
        .collect()
}

fn module_of(token: &TestToken) -> String {
    let text = std::fs::read_to_string(token.config()).expect("config readable");
    text.lines()
        .find_map(|line| line.strip_prefix("module = "))
        .expect("module line")
        .trim_matches('"')
        .to_owned()
}

#[test]
fn table_shows_label_and_serial() {
    let token = TestToken::without_key();
    let shown = softhsm_slots(&token);
    let ours = shown
        .iter()
        .find(|s| s.initialized)
        .expect("one initialized");
    let free = shown.iter().find(|s| !s.initialized).expect("a free slot");
    let config = token.config();

    let output = hallmark(
        &[
            "tokens",
            "list",
            "--config",
            config.to_str().expect("UTF-8"),
        ],
        &[],
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
    let text = stdout(&output);
    let rows: Vec<Vec<String>> = text.lines().map(cells).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(
        rows[0],
        [
            "SLOT",
            "LABEL",
            "SERIAL",
            "MANUFACTURER",
            "MODEL",
            "INITIALIZED",
            "USER PIN"
        ]
    );
    assert_eq!(
        rows[1],
        [
            ours.slot_id.as_str(),
            ours.label.as_str(),
            ours.serial.as_str(),
            SOFTHSM_MANUFACTURER,
            SOFTHSM_MODEL,
            "yes",
            "yes"
        ]
    );
    assert_eq!(
        rows[2],
        [
            free.slot_id.as_str(),
            "-",
            "-",
            SOFTHSM_MANUFACTURER,
            SOFTHSM_MODEL,
            "no",
            "no"
        ]
    );
    assert!(ours.label.starts_with("hallmark-dev-"), "{ours:?}");
    assert_eq!(ours.serial.len(), 16, "{ours:?}");
}

#[test]
fn json_with_module_flag() {
    let token = TestToken::without_key();
    let shown = softhsm_slots(&token);
    let ours = shown
        .iter()
        .find(|s| s.initialized)
        .expect("one initialized");
    let module = module_of(&token);
    let softhsm_conf = token.dir.path().join("softhsm2.conf");

    let output = hallmark(
        &["tokens", "list", "--module", &module, "--json"],
        &[("SOFTHSM2_CONF", softhsm_conf.to_str().expect("UTF-8"))],
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let slot_id: u64 = ours.slot_id.parse().expect("decimal slot ID");
    assert_eq!(
        lines[0],
        serde_json::json!({
            "slot_id": slot_id,
            "slot_description": format!("SoftHSM slot ID {slot_id:#x}"),
            "token_present": true,
            "label": ours.label,
            "serial": ours.serial,
            "manufacturer": SOFTHSM_MANUFACTURER,
            "model": SOFTHSM_MODEL,
            "initialized": true,
            "user_pin_initialized": true,
            "uri": format!(
                "pkcs11:token={};serial={}?module-path={module}",
                ours.label, ours.serial
            ),
        })
    );
    assert_eq!(lines[1]["initialized"], false);
    assert_eq!(lines[1]["uri"], serde_json::Value::Null);
}

/// The URI that `--json` prints selects the token when used as `hsm.uri`.
#[test]
fn printed_uri_configures_the_token() {
    let token = TestToken::without_key();
    let config = token.config();
    let config_text = config.to_str().expect("UTF-8");
    let listed = hallmark(&["tokens", "list", "--config", config_text, "--json"], &[]);
    let first: serde_json::Value =
        serde_json::from_str(stdout(&listed).lines().next().expect("one line")).expect("JSON");
    let uri = first["uri"].as_str().expect("a URI").to_owned();

    let text = std::fs::read_to_string(&config).expect("config readable");
    let text: String = text
        .lines()
        .filter(|line| !line.starts_with("module = ") && !line.starts_with("token_label = "))
        .map(|line| format!("{line}\n"))
        .collect::<String>()
        .replacen("[hsm]\n", &format!("[hsm]\nuri = \"{uri}\"\n"), 1);
    std::fs::write(&config, text).expect("config writable");

    let output = hallmark(&["keys", "list", "--config", config_text], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!(
            "token.label={}",
            first["label"].as_str().expect("label")
        )),
        "{}",
        stderr(&output)
    );
}

/// Listing reads public token information only: it opens no session and
/// never logs in. The fault module forwards every call to SoftHSM and
/// counts them.
#[test]
fn listing_does_not_log_in() {
    let token = TestToken::without_key();
    let control = FaultControl::new(&token);
    let env = control.env();
    let mut pairs: Vec<(&str, &str)> = env
        .iter()
        .filter(|(name, _)| *name != "HALLMARK_PKCS11_MODULE")
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let softhsm_conf = token.dir.path().join("softhsm2.conf");
    pairs.push(("SOFTHSM2_CONF", softhsm_conf.to_str().expect("UTF-8")));
    let module = common::faults_module().to_str().expect("UTF-8");

    let output = hallmark(&["tokens", "list", "--module", module], &pairs);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let label = &softhsm_slots(&token)[0].label;
    assert!(
        stdout(&output).contains(label.as_str()),
        "{}",
        stdout(&output)
    );
    assert!(
        control.calls("C_GetTokenInfo") >= 1,
        "{:?}",
        control.counts()
    );
    assert_eq!(control.calls("C_OpenSession"), 0, "{:?}", control.counts());
    assert_eq!(control.calls("C_Login"), 0, "{:?}", control.counts());
}

#[test]
fn missing_module_exits_64() {
    let missing = "/nonexistent/libpkcs11.so";
    let output = hallmark(&["tokens", "list", "--module", missing], &[]);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        stderr(&output),
        format!("error: PKCS#11 module {missing} does not exist; check --module\n")
    );
}

/// A directory given as the module gets the module's own check, with the
/// advice pointing at the flag rather than at hsm.module.
#[test]
fn module_directory_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = dir.path().to_str().expect("UTF-8");
    let output = hallmark(&["tokens", "list", "--module", directory], &[]);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        stderr(&output),
        format!(
            "error: PKCS#11 module {directory} is a directory, not a PKCS#11 library file; check \
             --module\n"
        )
    );
}

#[test]
fn config_without_module_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hallmark.toml");
    std::fs::write(&config, "[hsm]\ntoken_label = \"x\"\n").expect("written");
    let config = config.to_str().expect("UTF-8");

    let output = hallmark(&["tokens", "list", "--config", config], &[]);

    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        stderr(&output),
        format!(
            "error: invalid configuration in {config}:\n  - hsm.module is missing: set it to the \
             PKCS#11 library path (or set HALLMARK_PKCS11_MODULE, or module-path in hsm.uri), \
             or give --module\n"
        )
    );
}

/// `[hsm.module_env]` is checked before it is set and the module loads:
/// a name that the operating system rejects and an empty value exit 64.
#[test]
fn unusable_module_env_exits_64() {
    let token = TestToken::without_key();
    let dir = token.dir.path();
    let config = dir.join("module-env.toml");
    std::fs::write(
        &config,
        format!(
            "[hsm]\nmodule = \"{}\"\n[hsm.module_env]\n\"A=B\" = \"x\"\n\
             SOFTHSM2_CONF = \"\"\n",
            module_of(&token)
        ),
    )
    .expect("written");
    let config = config.to_str().expect("UTF-8");

    let output = hallmark(&["tokens", "list", "--config", config], &[]);

    assert_eq!(
        stderr(&output),
        format!(
            "error: invalid configuration in {config}:\n  - hsm.module_env: \"A=B\" is not an \
             environment variable name: it must not be empty or contain \"=\" or a NUL \
             character\n  - hsm.module_env.SOFTHSM2_CONF: the value is empty; set a value or \
             remove the key\n"
        )
    );
    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(stdout(&output), "");
}

/// Without a configuration file, `HALLMARK_PKCS11_MODULE` names the
/// module, and the module's own environment comes from the shell.
#[test]
fn module_from_environment_without_config() {
    let token = TestToken::without_key();
    let ours = softhsm_slots(&token)
        .into_iter()
        .find(|s| s.initialized)
        .expect("one initialized");
    let module = module_of(&token);
    let softhsm_conf = token.dir.path().join("softhsm2.conf");
    let empty = tempfile::tempdir().expect("tempdir");

    let output = Command::new(HALLMARK)
        .args(["tokens", "list", "--json"])
        .current_dir(empty.path())
        .env_remove("RUST_LOG")
        .env_remove("HALLMARK_CONFIG")
        .env_remove("HALLMARK_PKCS11_URI")
        .env("HALLMARK_PKCS11_MODULE", &module)
        .env("SOFTHSM2_CONF", &softhsm_conf)
        .output()
        .expect("hallmark runs");

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let first: serde_json::Value =
        serde_json::from_str(stdout(&output).lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["label"], ours.label.as_str());
    assert_eq!(first["serial"], ours.serial.as_str());
}

/// The module-path of `HALLMARK_PKCS11_URI` names the module too, and
/// without either variable the message names the variables to set.
#[test]
fn no_config_and_no_module_exits_64() {
    let token = TestToken::without_key();
    let module = module_of(&token);
    let softhsm_conf = token.dir.path().join("softhsm2.conf");
    let empty = tempfile::tempdir().expect("tempdir");
    let run = |env: &[(&str, &str)]| {
        Command::new(HALLMARK)
            .args(["tokens", "list"])
            .current_dir(empty.path())
            .env_remove("RUST_LOG")
            .env_remove("HALLMARK_CONFIG")
            .env_remove("HALLMARK_PKCS11_MODULE")
            .env_remove("HALLMARK_PKCS11_URI")
            .env("SOFTHSM2_CONF", &softhsm_conf)
            .envs(env.iter().copied())
            .output()
            .expect("hallmark runs")
    };

    let uri = format!("pkcs11:?module-path={module}");
    let from_uri = run(&[("HALLMARK_PKCS11_URI", &uri)]);
    assert_eq!(from_uri.status.code(), Some(0), "{}", stderr(&from_uri));
    assert_eq!(
        stdout(&from_uri).lines().count(),
        3,
        "{}",
        stdout(&from_uri)
    );

    let neither = run(&[]);
    assert_eq!(neither.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        stderr(&neither),
        "error: invalid configuration:\n  - no PKCS#11 module: no configuration file was \
         found, and neither HALLMARK_PKCS11_MODULE nor the module-path of HALLMARK_PKCS11_URI \
         is set; give --module PATH or --config FILE, or set HALLMARK_PKCS11_MODULE\n"
    );

    // A file named by --config must exist, even with the variable set.
    let missing = empty.path().join("hallmark.toml");
    let output = hallmark(
        &[
            "tokens",
            "list",
            "--config",
            missing.to_str().expect("UTF-8"),
        ],
        &[("HALLMARK_PKCS11_MODULE", &module)],
    );
    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        stderr(&output),
        format!(
            "error: invalid configuration in {}:\n  - cannot read the file: No such file or \
             directory (os error 2)\n",
            missing.display()
        )
    );
}

#[test]
fn module_and_config_conflict() {
    let output = hallmark(
        &["tokens", "list", "--module", "/a.so", "--config", "/b.toml"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("'--module <PATH>' cannot be used with '--config <FILE>'"),
        "{}",
        stderr(&output)
    );
}
