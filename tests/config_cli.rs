//! The operator commands `config check`, `config print` and `--version`,
//! the log settings, and a token chosen by `hsm.uri`, each run as the
//! real binary against a real SoftHSM token.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{HALLMARK, TestServer, TestToken};

/// Exit code for a configuration problem (EX_USAGE).
const EXIT_CONFIG: i32 = 64;

/// The log line that every command which opens the token writes at info.
const TOKEN_OPENED: &str = "token opened and logged in";

/// Runs `hallmark` with `args`, without the log and configuration
/// variables of the test's own environment, plus `env`.
fn hallmark(args: &[&str], env: &[(&str, &str)]) -> Output {
    hallmark_with(
        args,
        env.iter().map(|(name, value)| (*name, OsStr::new(value))),
    )
}

/// [`hallmark`] with variables whose values need not be UTF-8.
fn hallmark_with<'a>(args: &[&str], env: impl IntoIterator<Item = (&'a str, &'a OsStr)>) -> Output {
    hallmark_command(args, env).output().expect("hallmark runs")
}

/// Returns the command that [`hallmark_with`] runs.
fn hallmark_command<'a>(
    args: &[&str],
    env: impl IntoIterator<Item = (&'a str, &'a OsStr)>,
) -> Command {
    let mut command = Command::new(HALLMARK);
    command.args(args);
    remove_settings_from_env(&mut command);
    command.envs(env);
    command
}

/// Keeps the log and configuration variables of the test's own
/// environment from `command`.
fn remove_settings_from_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "RUST_LOG" || name.starts_with("HALLMARK_") {
            command.env_remove(name.as_ref());
        }
    }
}

/// Runs [`hallmark`] with stdout on a pipe whose read end is already
/// closed, as after `| head -0`, so that every write to stdout fails with
/// EPIPE. Logging is off, so stderr shows only errors.
fn hallmark_to_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    hallmark_command(args, [("HALLMARK_LOG_LEVEL", OsStr::new("off"))])
        .stdout(writer)
        .output()
        .expect("hallmark runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("UTF-8")
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Replaces every line that starts with `prefix` with `line`, or removes
/// it when `line` is empty.
fn replace_line(token: &TestToken, prefix: &str, line: &str) {
    let path = token.config();
    let text = std::fs::read_to_string(&path).expect("config readable");
    assert!(
        text.lines().any(|l| l.starts_with(prefix)),
        "{prefix:?} not in {text}"
    );
    let replaced: Vec<&str> = text
        .lines()
        .map(|current| {
            if current.starts_with(prefix) {
                line
            } else {
                current
            }
        })
        .collect();
    std::fs::write(path, replaced.join("\n") + "\n").expect("config writable");
}

fn config_value(token: &TestToken, name: &str) -> String {
    let text = std::fs::read_to_string(token.config()).expect("config readable");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim_matches('"')
        .to_owned()
}

// ---------------------------------------------------------------------
// config check
// ---------------------------------------------------------------------

#[test]
fn check_accepts_dev_token_config() {
    let token = TestToken::without_key();
    let config = token.config();

    let output = hallmark(&["config", "check", "--config", path_text(&config)], &[]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("{}: the configuration is valid\n", config.display())
    );
    assert_eq!(stderr(&output), "");
}

#[test]
fn check_reports_every_problem() {
    let token = TestToken::without_key();
    let dir = token.dir.path();
    let missing_module = dir.join("missing.so");
    replace_line(
        &token,
        "module = ",
        &format!("module = \"{}\"", missing_module.display()),
    );
    replace_line(&token, "pin_file = ", "pin_file = \"no-such-pin\"");
    replace_line(
        &token,
        "listen = ",
        "listen = \"unix:/nonexistent-dir/h.sock\"",
    );
    token.append_config("[server.tls]\ncert_file = \"cert.pem\"\n");
    let config = token.config();

    let output = hallmark(
        &[
            "config",
            "check",
            "--config",
            path_text(&config),
            "--sessions",
            "0",
        ],
        &[("HALLMARK_REFRESH_INTERVAL", "soon")],
    );

    assert_eq!(
        output.status.code(),
        Some(EXIT_CONFIG),
        "{}",
        stdout(&output)
    );
    assert_eq!(stdout(&output), "");
    let problems = [
        "server.listen: the directory /nonexistent-dir of the socket does not exist; create it \
         first"
            .to_owned(),
        format!("hsm.module: {} does not exist", missing_module.display()),
        "hsm.sessions (--sessions): 0 is outside 1..=256".to_owned(),
        format!(
            "hsm.pin_file: cannot read {}: No such file or directory (os error 2)",
            dir.join("no-such-pin").display()
        ),
        "signing.refresh_interval (HALLMARK_REFRESH_INTERVAL): \"soon\" does not start with a \
         whole number"
            .to_owned(),
        format!(
            "server.tls.cert_file: {} does not exist",
            dir.join("cert.pem").display()
        ),
        "server.tls.key_file is missing; mutual TLS needs cert_file, key_file and client_ca_file"
            .to_owned(),
        "server.tls.client_ca_file is missing; mutual TLS needs cert_file, key_file and \
         client_ca_file"
            .to_owned(),
    ];
    assert_eq!(
        stderr(&output),
        format!(
            "error: invalid configuration in {}:\n  - {}\n",
            config.display(),
            problems.join("\n  - ")
        )
    );
}

/// Unknown keys, values of the wrong type and invalid log settings from
/// the environment are reported together with the other problems.
#[test]
fn check_reports_structure_and_log_problems() {
    let token = TestToken::without_key();
    token.append_config(
        "[rotation]\nenabld = true\ncheck_interval = 60\n[[callers]]\nname = \"model\"\n\
         uid = \"1000\"\nkeys = [\"default\"]\n",
    );
    let config = token.config();

    let output = hallmark(
        &[
            "config",
            "check",
            "--config",
            path_text(&config),
            "--sessions",
            "0",
        ],
        &[
            ("HALLMARK_LOG_LEVEL", "bogus"),
            ("HALLMARK_LOG_FORMAT", "xml"),
        ],
    );

    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(stdout(&output), "");
    let problems = [
        "callers[0].uid: invalid type: string \"1000\", expected a whole number from 0 to \
         4294967295",
        "rotation.check_interval: invalid type: integer `60`, expected a string",
        "rotation.enabld: unknown key; expected `enabled` or `check_interval`",
        "hsm.sessions (--sessions): 0 is outside 1..=256",
        "log.level (HALLMARK_LOG_LEVEL): \"bogus\" is not a log level; use off, error, warn, \
         info, debug or trace, or directives such as \"info,hallmark=debug\"",
        "log.format (HALLMARK_LOG_FORMAT): \"xml\" is not text or json",
    ];
    assert_eq!(
        stderr(&output),
        format!(
            "error: invalid configuration in {}:\n  - {}\n",
            config.display(),
            problems.join("\n  - ")
        )
    );
}

/// A file that is not TOML cannot be checked further, and the problems
/// state that.
#[test]
fn check_of_syntax_error_says_nothing_else_ran() {
    let token = TestToken::without_key();
    token.append_config("[server\n");
    let config = token.config();

    let output = hallmark(
        &["config", "check", "--config", path_text(&config)],
        &[("HALLMARK_LOG_LEVEL", "bogus")],
    );

    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    let text = stderr(&output);
    assert!(
        text.starts_with(&format!(
            "error: invalid configuration in {}:\n  - TOML parse error at line ",
            config.display()
        )),
        "{text}"
    );
    assert!(
        text.ends_with(
            "\n  - no other setting was checked, because the file is not valid TOML; fix the \
             syntax and check again\n"
        ),
        "{text}"
    );
    assert!(!text.contains("bogus"), "{text}");
}

/// A PIN file given by mistake as the configuration file is not valid
/// TOML. The syntax error names the line and column but never quotes it.
#[test]
fn syntax_error_never_quotes_the_file() {
    let token = TestToken::without_key();
    let pin_file = token.dir.path().join("user.pin");
    let pin = std::fs::read_to_string(&pin_file).expect("PIN file readable");

    let output = hallmark(&["config", "check", "--config", path_text(&pin_file)], &[]);

    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    let text = stderr(&output);
    assert!(
        text.contains("\n  - TOML parse error at line 1, column "),
        "{text}"
    );
    assert!(!text.contains(pin.trim()), "{text}");
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
}

/// A `HALLMARK_*` value that is not UTF-8 is rejected with the name of
/// its variable. The PIN's value is never shown, and the PIN file is not
/// read in its place.
#[test]
fn check_rejects_non_unicode_variables() {
    let token = TestToken::without_key();
    let config = token.config();
    let pin = b"pin-\xff\xfe-7391";

    let output = hallmark_with(
        &["config", "check", "--config", path_text(&config)],
        [
            ("HALLMARK_PIN", OsStr::from_bytes(pin)),
            ("HALLMARK_DRAIN_TIMEOUT", OsStr::from_bytes(b"10\xe9s")),
        ],
    );

    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        stderr(&output),
        format!(
            "error: invalid configuration in {}:\n  - server.drain_timeout \
             (HALLMARK_DRAIN_TIMEOUT): the value is not valid UTF-8; set it to UTF-8 text or \
             unset HALLMARK_DRAIN_TIMEOUT\n  - HALLMARK_PIN: the value is not valid UTF-8; set \
             it to UTF-8 text or unset HALLMARK_PIN\n",
            config.display()
        )
    );
    let raw = [output.stdout.as_slice(), output.stderr.as_slice()].concat();
    assert!(!raw.windows(4).any(|w| w == b"7391"), "the PIN leaked");

    let served = hallmark_with(
        &["serve", "--config", path_text(&config)],
        [("HALLMARK_PIN", OsStr::from_bytes(pin))],
    );
    assert_eq!(served.status.code(), Some(EXIT_CONFIG));
    assert!(
        stderr(&served).contains("  - HALLMARK_PIN: the value is not valid UTF-8"),
        "{}",
        stderr(&served)
    );
}

/// Empty variables, an audit directory on /proc and a label longer than
/// the PKCS#11 field stop `serve` before it opens the token.
#[test]
fn serve_rejects_unusable_values() {
    let token = TestToken::without_key();
    let config = token.config();
    let label = "hallmark-".repeat(4);

    let output = hallmark(
        &["serve", "--config", path_text(&config)],
        &[
            ("HALLMARK_AUDIT_DIR", "/proc/self/audit"),
            ("HALLMARK_TOKEN_LABEL", &label),
            ("HALLMARK_PKCS11_MODULE", ""),
        ],
    );

    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    let problems = [
        "hsm.module (HALLMARK_PKCS11_MODULE): the value is empty; set a value or unset \
         HALLMARK_PKCS11_MODULE"
            .to_owned(),
        format!(
            "hsm.token_label (HALLMARK_TOKEN_LABEL): {label:?} is 36 bytes long, but a token \
             label has at most 32 bytes, so no token can match; `hallmark tokens list` shows \
             the tokens"
        ),
        "audit.directory (HALLMARK_AUDIT_DIR): /proc/self/audit is on /proc, a kernel file \
         system that cannot keep the audit files; choose a directory on persistent storage, \
         such as /var/lib/hallmark/audit"
            .to_owned(),
    ];
    assert_eq!(
        stderr(&output),
        format!(
            "error: invalid configuration in {}:\n  - {}\n",
            config.display(),
            problems.join("\n  - ")
        )
    );
    assert!(!stderr(&output).contains(TOKEN_OPENED));
}

/// `serve` itself reports only the problems that loading finds, and the
/// missing module later, when it opens the token. `config check` finds the
/// module at once.
#[test]
fn check_finds_missing_module() {
    let token = TestToken::without_key();
    let missing_module = token.dir.path().join("missing.so");
    replace_line(
        &token,
        "module = ",
        &format!("module = \"{}\"", missing_module.display()),
    );
    let config = token.config();

    let checked = hallmark(&["config", "check", "--config", path_text(&config)], &[]);
    let listed = hallmark(&["keys", "list", "--config", path_text(&config)], &[]);

    assert_eq!(checked.status.code(), Some(EXIT_CONFIG));
    assert_eq!(listed.status.code(), Some(EXIT_CONFIG));
    assert!(
        stderr(&listed).contains(&format!(
            "PKCS#11 module {} does not exist",
            missing_module.display()
        )),
        "{}",
        stderr(&listed)
    );
}

#[test]
fn check_rejects_uri_conflict() {
    let token = TestToken::without_key();
    let config = token.config();
    let uri = "pkcs11:token=other";

    let output = hallmark(
        &[
            "config",
            "check",
            "--config",
            path_text(&config),
            "--pkcs11-uri",
            uri,
        ],
        &[],
    );

    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        stderr(&output),
        format!(
            "error: invalid configuration in {}:\n  - hsm.uri (--pkcs11-uri) sets the token \
             label with token=, and hsm.token_label sets it too; remove one of them\n",
            config.display()
        )
    );
}

#[test]
fn check_of_missing_file_exits_64() {
    let output = hallmark(
        &["config", "check", "--config", "/nonexistent/hallmark.toml"],
        &[],
    );
    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        stderr(&output),
        "error: invalid configuration in /nonexistent/hallmark.toml:\n  - cannot read the file: \
         No such file or directory (os error 2)\n"
    );
}

/// Runs `hallmark ARGS...` like [`hallmark`], with at most 1 GiB of
/// address space, and kills it after ten seconds. Reading a FIFO or an
/// endless device then fails the test instead of hanging it or filling the
/// machine's memory.
fn hallmark_bounded(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -v 1048576 && exec \"$@\"", "sh", HALLMARK])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    remove_settings_from_env(&mut command);
    let child = command
        .envs(env.iter().copied())
        .spawn()
        .expect("hallmark runs");
    common::output_within(
        child,
        Duration::from_secs(10),
        &format!("hallmark {args:?}"),
    )
}

/// A FIFO would make the read wait for a writer, and a device such as
/// /dev/zero never ends, so the configuration must be a regular file.
#[test]
fn config_must_be_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("hallmark.toml");
    let mkfifo = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(mkfifo.success());
    let fifo = path_text(&fifo);
    let advice = "but the configuration must be a regular file; point --config or \
                  HALLMARK_CONFIG at the configuration file";

    for (args, env, path, kind) in [
        (
            vec!["config", "check", "--config", fifo],
            vec![],
            fifo,
            "a FIFO (named pipe)",
        ),
        (
            vec!["serve"],
            vec![("HALLMARK_CONFIG", fifo)],
            fifo,
            "a FIFO (named pipe)",
        ),
        (
            vec!["keys", "list", "--config", "/dev/zero"],
            vec![],
            "/dev/zero",
            "a character device",
        ),
        (
            vec!["tokens", "list", "--config", "/dev/zero"],
            vec![],
            "/dev/zero",
            "a character device",
        ),
    ] {
        let output = hallmark_bounded(&args, &env);
        assert_eq!(
            stderr(&output),
            format!("error: invalid configuration in {path}:\n  - {path} is {kind}, {advice}\n"),
            "{args:?}"
        );
        assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{args:?}");
    }
}

/// A file larger than 1 MiB is not read.
#[test]
fn oversized_config_exits_64() {
    let token = TestToken::without_key();
    let padding = format!("# {}\n", "x".repeat(98)).repeat(10_486);
    token.append_config(&padding);
    let config = token.config();
    let size = std::fs::metadata(&config).expect("config exists").len();
    assert!(size > 1024 * 1024, "{size} bytes");

    let output = hallmark_bounded(&["config", "check", "--config", path_text(&config)], &[]);

    assert_eq!(
        stderr(&output),
        format!(
            "error: invalid configuration in {0}:\n  - {0} is larger than the maximum of 1 MiB \
             for a configuration file; point --config or HALLMARK_CONFIG at the configuration \
             file\n",
            config.display()
        )
    );
    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
}

// ---------------------------------------------------------------------
// config print
// ---------------------------------------------------------------------

/// Returns the printed `field = value` lines with their source comment,
/// without the padding between them.
fn printed_values(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (assignment, source) = line.split_once("  # ")?;
            Some((assignment.trim_end().to_owned(), source.to_owned()))
        })
        .collect()
}

#[test]
fn print_names_each_layer() {
    let token = TestToken::without_key();
    let config = token.config();
    let pin = std::fs::read_to_string(token.dir.path().join("user.pin")).expect("PIN");
    let audit_dir = token.dir.path().join("audit-from-env");

    let output = hallmark(
        &[
            "--log-format",
            "json",
            "config",
            "print",
            "--config",
            path_text(&config),
            "--listen",
            "127.0.0.1:7000",
            "--sessions",
            "3",
        ],
        &[
            ("HALLMARK_AUDIT_DIR", path_text(&audit_dir)),
            ("HALLMARK_LISTEN", "127.0.0.1:6000"),
        ],
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let values = printed_values(&text);
    let label = config_value(&token, "token_label");
    let expected = [
        ("listen = \"127.0.0.1:7000\"".to_owned(), "flag --listen"),
        ("metrics_listen = \"127.0.0.1:9464\"".to_owned(), "file"),
        ("reflection = true".to_owned(), "default"),
        (format!("token_label = \"{label}\""), "file"),
        (
            format!(
                "pin_file = \"{}\"",
                token.dir.path().join("user.pin").display()
            ),
            "file",
        ),
        ("sessions = 3".to_owned(), "flag --sessions"),
        (
            format!("directory = \"{}\"", audit_dir.display()),
            "env HALLMARK_AUDIT_DIR",
        ),
        ("format = \"json\"".to_owned(), "flag --log-format"),
        ("level = \"info\"".to_owned(), "default"),
    ];
    for (assignment, source) in expected {
        let pair = (assignment, source.to_owned());
        assert!(values.contains(&pair), "{pair:?} not in\n{text}");
    }
    assert!(!text.contains(pin.trim()), "the PIN leaked:\n{text}");
    assert!(text.starts_with(&format!(
        "# Effective configuration from {}.\n",
        config.display()
    )));
}

#[test]
fn print_hides_pin_from_environment() {
    let token = TestToken::without_key();
    let config = token.config();
    let pin = "7391-secret-pin";

    let output = hallmark(
        &["config", "print", "--config", path_text(&config)],
        &[("HALLMARK_PIN", pin)],
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains(pin), "the PIN leaked:\n{text}");
    assert!(
        text.contains(
            "# the PIN is read from the HALLMARK_PIN environment variable, which takes \
             precedence over any PIN file; its value is not shown\n"
        ),
        "{text}"
    );
    assert!(!text.contains("pin_file = "), "{text}");
}

/// The printed configuration is valid TOML with the effective values,
/// also for text that needs escapes and keys that need quotes, and it
/// loads back to the same values.
#[test]
fn print_reads_back() {
    let token = TestToken::without_key();
    let config = token.config();
    let label = "lab\"el\\x\ny";
    let module_env_key = "VENDOR.CONF PATH";
    let module_env_value = "/etc/vendor \"a\".conf\tb";
    let label_toml = r#""lab\"el\\x\ny""#;
    replace_line(
        &token,
        "token_label = ",
        &format!("token_label = {label_toml}"),
    );
    let softhsm_conf = config_value(&token, "SOFTHSM2_CONF");
    replace_line(
        &token,
        "SOFTHSM2_CONF = ",
        &format!(
            "SOFTHSM2_CONF = \"{softhsm_conf}\"\n\"{module_env_key}\" = {}",
            r#""/etc/vendor \"a\".conf\tb""#
        ),
    );

    let output = hallmark(
        &[
            "config",
            "print",
            "--config",
            path_text(&config),
            "--sessions",
            "3",
        ],
        &[("HALLMARK_DRAIN_TIMEOUT", "90s")],
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    let read: toml::Table = printed
        .parse()
        .unwrap_or_else(|error| panic!("not TOML: {error}\n{printed}"));
    assert_eq!(
        read["hsm"]["token_label"].as_str(),
        Some(label),
        "{printed}"
    );
    assert_eq!(
        read["hsm"]["module_env"][module_env_key].as_str(),
        Some(module_env_value),
        "{printed}"
    );
    assert_eq!(read["hsm"]["sessions"].as_integer(), Some(3));
    assert_eq!(read["server"]["drain_timeout"].as_str(), Some("90s"));
    let values = printed_values(&printed);
    for (assignment, source) in [
        (
            r#""VENDOR.CONF PATH" = "/etc/vendor \"a\".conf\tb""#,
            "file",
        ),
        ("SOFTHSM2_CONF = ", "file"),
        (r#"token_label = "lab\"el\\x\ny""#, "file"),
    ] {
        assert!(
            values
                .iter()
                .any(|(a, s)| a.starts_with(assignment) && s == source),
            "{assignment:?} from {source} not in\n{printed}"
        );
    }

    let reprinted_path = token.dir.path().join("printed.toml");
    std::fs::write(&reprinted_path, &printed).expect("written");
    let checked = hallmark(
        &["config", "check", "--config", path_text(&reprinted_path)],
        &[],
    );
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
    let reprinted = hallmark(
        &["config", "print", "--config", path_text(&reprinted_path)],
        &[],
    );
    assert_eq!(reprinted.status.code(), Some(0), "{}", stderr(&reprinted));
    let assignments = |text: &str| -> Vec<String> {
        printed_values(text)
            .into_iter()
            .map(|(assignment, _)| assignment)
            .collect()
    };
    assert_eq!(assignments(&stdout(&reprinted)), assignments(&printed));
}

/// File paths are printed absolute, so that the output, saved next to
/// the configuration and read from another working directory, names the
/// same files, also for paths that start with `..`.
#[test]
fn print_paths_read_back_elsewhere() {
    let token = TestToken::without_key();
    let root = token.dir.path();
    let conf = root.join("conf");
    std::fs::create_dir_all(root.join("lib")).expect("directory created");
    std::fs::create_dir_all(root.join("pki")).expect("directory created");
    std::fs::create_dir_all(root.join("audit")).expect("directory created");
    std::fs::create_dir(&conf).expect("directory created");
    std::fs::write(root.join("lib/p11.so"), "").expect("written");
    for name in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(root.join("pki").join(name), "").expect("written");
    }
    replace_line(&token, "module = ", "module = \"../lib/p11.so\"");
    replace_line(&token, "pin_file = ", "pin_file = \"../user.pin\"");
    replace_line(&token, "directory = ", "directory = \"../audit\"");
    token.append_config(
        "[server.tls]\ncert_file = \"../pki/cert.pem\"\nkey_file = \"../pki/key.pem\"\n\
         client_ca_file = \"../pki/ca.pem\"\n",
    );
    std::fs::rename(token.config(), conf.join("hallmark.toml")).expect("moved");
    let expected = [
        (["hsm", "module"], root.join("lib/p11.so")),
        (["hsm", "pin_file"], root.join("user.pin")),
        (["audit", "directory"], root.join("audit")),
        (["tls", "cert_file"], root.join("pki/cert.pem")),
        (["tls", "key_file"], root.join("pki/key.pem")),
        (["tls", "client_ca_file"], root.join("pki/ca.pem")),
    ];
    let print = |working: &Path, config: &str| {
        let output = hallmark_command(&["config", "print", "--config", config], [])
            .current_dir(working)
            .output()
            .expect("hallmark runs");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        stdout(&output)
    };
    let check = |printed: &str| {
        let read: toml::Table = printed
            .parse()
            .unwrap_or_else(|error| panic!("not TOML: {error}\n{printed}"));
        for ([table, field], file) in &expected {
            let table = match *table {
                "tls" => &read["server"]["tls"],
                name => &read[name],
            };
            let value = table[*field].as_str().expect("a path");
            assert!(Path::new(value).is_absolute(), "{field} = {value:?}");
            assert_eq!(
                std::fs::canonicalize(value).ok(),
                std::fs::canonicalize(file).ok(),
                "{field} = {value:?}"
            );
        }
    };

    let printed = print(root, "conf/hallmark.toml");
    check(&printed);
    std::fs::write(conf.join("printed.toml"), &printed).expect("written");

    check(&print(&conf, "printed.toml"));
    check(&print(&root.join("lib"), "../conf/printed.toml"));
}

#[test]
fn print_of_invalid_config_exits_64() {
    let token = TestToken::without_key();
    let config = token.config();
    let output = hallmark(
        &["config", "print", "--config", path_text(&config)],
        &[("HALLMARK_REFLECTION", "maybe")],
    );
    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        stderr(&output),
        format!(
            "error: invalid configuration in {}:\n  - server.reflection (HALLMARK_REFLECTION): \
             \"maybe\" is not true or false\n",
            config.display()
        )
    );
}

// ---------------------------------------------------------------------
// Output to a closed pipe or a full disk
// ---------------------------------------------------------------------

/// A reader that closes stdout early ends the output without an error,
/// and the exit code still reports the command's work: the key created by
/// `keys rotate --force` is in the token afterwards.
#[test]
fn closed_stdout_exits_quietly() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let config = token.config();
    let config = path_text(&config);

    for args in [
        vec!["config", "check", "--config", config],
        vec!["config", "print", "--config", config],
        vec!["tokens", "list", "--config", config],
        vec!["tokens", "list", "--json", "--config", config],
        vec!["keys", "list", "--config", config],
        vec!["keys", "list", "--json", "--config", config],
        vec!["keys", "rotate", "--force", "--config", config],
    ] {
        let output = hallmark_to_closed_pipe(&args);
        assert_eq!(stderr(&output), "", "{args:?}");
        assert_eq!(output.status.code(), Some(0), "{args:?}");
    }

    let listed = hallmark(&["keys", "list", "--json", "--config", config], &[]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let states: Vec<String> = stdout(&listed)
        .lines()
        .map(|line| {
            let version: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            version["state"].as_str().expect("a state").to_owned()
        })
        .collect();
    assert_eq!(states, ["retired", "active"], "{}", stdout(&listed));
}

/// A reader that closes stderr early, as `2>&1 | head -1` can, loses the
/// error line but not the exit code.
#[test]
fn closed_stderr_keeps_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.toml");
    for command in [["config", "check"], ["keys", "list"], ["tokens", "list"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut args = command.to_vec();
        args.extend(["--config", path_text(&missing)]);
        let output = hallmark_command(&args, [])
            .stderr(writer)
            .output()
            .expect("hallmark runs");
        assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{args:?}");
    }
}

/// Any other write error is reported, with exit code 74.
#[test]
fn full_stdout_exits_74() {
    let token = TestToken::without_key();
    let config = token.config();
    let config = path_text(&config);
    let full = || std::fs::File::create("/dev/full").expect("/dev/full opens");

    for args in [
        vec!["config", "check", "--config", config],
        vec!["config", "print", "--config", config],
        vec!["tokens", "list", "--config", config],
        vec!["keys", "list", "--config", config],
    ] {
        let output = hallmark_command(&args, [("HALLMARK_LOG_LEVEL", OsStr::new("off"))])
            .stdout(full())
            .output()
            .expect("hallmark runs");
        assert_eq!(
            stderr(&output),
            "error: cannot write to stdout: No space left on device (os error 28)\n",
            "{args:?}"
        );
        assert_eq!(output.status.code(), Some(74), "{args:?}");
    }
}

// ---------------------------------------------------------------------
// --version
// ---------------------------------------------------------------------

/// Returns the commit that the build embeds: `HALLMARK_GIT_COMMIT` when
/// set (cargo rebuilds when it changes), else the checkout's HEAD from
/// git, else `unknown`.
fn expected_commit() -> String {
    if let Ok(commit) = std::env::var("HALLMARK_GIT_COMMIT")
        && !commit.trim().is_empty()
    {
        return commit.trim().to_owned();
    }
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[test]
fn version_names_commit_and_features() {
    let output = hallmark(&["--version"], &[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output),
        format!(
            "hallmark {} (commit {}, features: server)\n",
            env!("CARGO_PKG_VERSION"),
            expected_commit()
        )
    );
}

// ---------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------

/// Runs `hallmark keys list` on `token`, which opens the token and logs
/// [`TOKEN_OPENED`] at info, and returns stderr.
fn keys_list_log(token: &TestToken, flags: &[&str], env: &[(&str, &str)]) -> String {
    let config = token.config();
    let mut args = flags.to_vec();
    args.extend(["keys", "list", "--config", path_text(&config)]);
    let output = hallmark(&args, env);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stderr(&output)
}

#[test]
fn log_level_comes_from_config_unless_rust_log() {
    let token = TestToken::without_key();
    let default = keys_list_log(&token, &[], &[]);
    assert!(default.contains(TOKEN_OPENED), "{default}");

    token.append_config("[log]\nlevel = \"warn\"\n");
    let quiet = keys_list_log(&token, &[], &[]);
    assert!(!quiet.contains(TOKEN_OPENED), "{quiet}");

    let from_rust_log = keys_list_log(&token, &[], &[("RUST_LOG", "info")]);
    assert!(from_rust_log.contains(TOKEN_OPENED), "{from_rust_log}");

    let from_flag = keys_list_log(&token, &["--log-level", "info"], &[]);
    assert!(from_flag.contains(TOKEN_OPENED), "{from_flag}");

    let from_env = keys_list_log(&token, &[], &[("HALLMARK_LOG_LEVEL", "debug")]);
    assert!(from_env.contains(TOKEN_OPENED), "{from_env}");
}

#[test]
fn json_logs_from_flag_or_config() {
    let token = TestToken::without_key();
    let label = config_value(&token, "token_label");
    let check = |log: &str| {
        let line = log
            .lines()
            .find(|line| line.contains(TOKEN_OPENED))
            .unwrap_or_else(|| panic!("no {TOKEN_OPENED:?} in {log}"));
        let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(record["level"], "INFO");
        assert_eq!(record["fields"]["message"], TOKEN_OPENED);
        assert_eq!(record["fields"]["token.label"], label.as_str());
    };

    check(&keys_list_log(&token, &["--log-format", "json"], &[]));
    check(&keys_list_log(
        &token,
        &[],
        &[("HALLMARK_LOG_FORMAT", "json")],
    ));
    token.append_config("[log]\nformat = \"json\"\n");
    check(&keys_list_log(&token, &[], &[]));

    let text = keys_list_log(&token, &["--log-format", "text"], &[]);
    let line = text
        .lines()
        .find(|line| line.contains(TOKEN_OPENED))
        .expect("logged");
    assert!(
        serde_json::from_str::<serde_json::Value>(line).is_err(),
        "{line}"
    );
    assert!(line.contains(&format!("token.label={label}")), "{line}");
}

/// A command without a configuration file reports every invalid log
/// setting at once.
#[test]
fn invalid_log_settings_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit-000001.jsonl");
    std::fs::write(&file, "").expect("written");
    let output = hallmark(
        &[
            "--log-level",
            "verbose",
            "audit",
            "verify",
            path_text(&file),
        ],
        &[("HALLMARK_LOG_FORMAT", "xml")],
    );
    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        stderr(&output),
        "error: invalid configuration:\n  - log.level (--log-level): \"verbose\" is not a log \
         level; use off, error, warn, info, debug or trace, or directives such as \
         \"info,hallmark=debug\"\n  - log.format (HALLMARK_LOG_FORMAT): \"xml\" is not text or \
         json\n"
    );
}

#[test]
fn non_unicode_log_level_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit-000001.jsonl");
    std::fs::write(&file, "").expect("written");
    let output = hallmark_with(
        &["audit", "verify", path_text(&file)],
        [("HALLMARK_LOG_LEVEL", OsStr::from_bytes(b"de\xffbug"))],
    );
    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        stderr(&output),
        "error: invalid configuration:\n  - log.level (HALLMARK_LOG_LEVEL): the value is not \
         valid UTF-8; set it to UTF-8 text or unset HALLMARK_LOG_LEVEL\n"
    );
}

/// An empty `RUST_LOG` counts as unset, so the configured level applies.
#[test]
fn empty_rust_log_is_unset() {
    let token = TestToken::without_key();
    let default = keys_list_log(&token, &[], &[("RUST_LOG", "")]);
    assert!(default.contains(TOKEN_OPENED), "{default}");

    token.append_config("[log]\nlevel = \"warn\"\n");
    let quiet = keys_list_log(&token, &[], &[("RUST_LOG", " ")]);
    assert!(!quiet.contains(TOKEN_OPENED), "{quiet}");
}

/// Returns the only line of `text` as a JSON error record, after checking
/// its level.
fn json_error(text: &str) -> serde_json::Value {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "not one line:\n{text}");
    let record: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(record["level"], "ERROR", "{record}");
    assert!(record["timestamp"].is_string(), "{record}");
    record
}

/// With JSON logs, an error that stops a command is one JSON log line,
/// from the flag, the variable or the file, and the exit code stays.
#[test]
fn fatal_errors_follow_json_format() {
    let token = TestToken::without_key();
    let config = token.config();
    let config_text = path_text(&config);
    let expected = format!(
        "invalid configuration in {}:\n  - server.reflection (HALLMARK_REFLECTION): \"maybe\" \
         is not true or false",
        config.display()
    );

    let from_flag = hallmark(
        &["--log-format", "json", "serve", "--config", config_text],
        &[("HALLMARK_REFLECTION", "maybe")],
    );
    assert_eq!(from_flag.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        json_error(&stderr(&from_flag))["fields"]["message"],
        expected
    );

    let from_env = hallmark(
        &["keys", "list", "--config", config_text],
        &[
            ("HALLMARK_REFLECTION", "maybe"),
            ("HALLMARK_LOG_FORMAT", "json"),
            ("HALLMARK_LOG_LEVEL", "off"),
        ],
    );
    assert_eq!(from_env.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        json_error(&stderr(&from_env))["fields"]["message"],
        expected
    );

    token.append_config("[log]\nformat = \"json\"\n");
    let from_file = hallmark(
        &["serve", "--config", config_text],
        &[("HALLMARK_REFLECTION", "maybe")],
    );
    assert_eq!(from_file.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        json_error(&stderr(&from_file))["fields"]["message"],
        expected
    );

    // Text from the flag wins over the file.
    let text = hallmark(
        &["--log-format", "text", "serve", "--config", config_text],
        &[("HALLMARK_REFLECTION", "maybe")],
    );
    assert_eq!(stderr(&text), format!("error: {expected}\n"));
}

/// A token error of `serve`, after logging has started, is one JSON line
/// too, whatever the log level.
#[test]
fn serve_token_error_is_one_json_line() {
    let token = TestToken::without_key();
    let config = token.config();
    let missing = token.dir.path().join("missing.so");

    let output = hallmark(
        &[
            "--log-format",
            "json",
            "--log-level",
            "off",
            "serve",
            "--config",
            path_text(&config),
            "--module",
            path_text(&missing),
        ],
        &[],
    );

    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    let record = json_error(&stderr(&output));
    let message = record["fields"]["message"].as_str().expect("a message");
    assert!(
        message.starts_with(&format!(
            "PKCS#11 module {} does not exist",
            missing.display()
        )),
        "{record}"
    );
}

#[test]
fn log_settings_error_is_json_when_format_is() {
    let output = hallmark(
        &[
            "--log-format",
            "json",
            "--log-level",
            "verbose",
            "tokens",
            "list",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(EXIT_CONFIG));
    assert_eq!(
        json_error(&stderr(&output))["fields"]["message"],
        "invalid configuration:\n  - log.level (--log-level): \"verbose\" is not a log level; \
         use off, error, warn, info, debug or trace, or directives such as \
         \"info,hallmark=debug\""
    );
}

// ---------------------------------------------------------------------
// A token chosen by hsm.uri
// ---------------------------------------------------------------------

#[tokio::test]
async fn serve_with_uri_only() {
    let token = TestToken::new(2048, "digest");
    let label = config_value(&token, "token_label");
    let module = config_value(&token, "module");
    let pin_file = config_value(&token, "pin_file");
    replace_line(&token, "module = ", "");
    replace_line(&token, "pin_file = ", "");
    let encoded_label = label.replace('-', "%2D");
    replace_line(
        &token,
        "token_label = ",
        &format!(
            "uri = \"pkcs11:token={encoded_label}?module-path={module}&pin-source=file:{pin_file}\""
        ),
    );

    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;

    let log = server.log_text();
    assert!(
        log.contains(&format!("token.label={label}")),
        "the URI chose another token:\n{log}"
    );
    let response = server
        .client()
        .await
        .sign(hallmark::pb::SignRequest {
            digest: vec![7; 32],
            hash_algorithm: hallmark::pb::HashAlgorithm::Sha256 as i32,
            ..Default::default()
        })
        .await
        .expect("Sign succeeds");
    assert!(!response.into_inner().signature.is_empty());
}
