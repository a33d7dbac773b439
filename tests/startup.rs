//! Start-up failures of `hallmark serve`. Each test breaks one thing about
//! the module, the token, the PIN, the SoftHSM configuration or the keys,
//! and runs the real binary against a real SoftHSM token. It checks the
//! exit code and the message on stderr, and that the service exited before
//! it bound a listener.
//!
//! Exit codes follow sysexits.h: 64 (EX_USAGE) for a configuration problem
//! and 69 (EX_UNAVAILABLE) for a token that cannot be used.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{FaultControl, HALLMARK, TestServer, TestToken, sample};
use hallmark::pb::{HashAlgorithm, SignRequest, SignatureEncoding};
use tonic_health::pb::health_check_response::ServingStatus;

/// Exit code for a configuration problem (EX_USAGE).
const EXIT_CONFIG: i32 = 64;
/// Exit code for a token that cannot be used (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: i32 = 69;

/// How long a failing start may take. Every failure here is found within
/// a second on an idle machine; the margin is for loaded CI runners.
const PROMPT: Duration = Duration::from_secs(10);

/// A user ID that no account on the test machine has. When the tests run
/// as root, which reads every file whatever its mode, `setpriv` runs the
/// server under this ID so that a file with mode 000 is unreadable.
const OTHER_UID: u32 = 48_213;

/// Returns the path of a shared library that is not a PKCS#11 module: the
/// C library, where Debian's libc6 installs it for this architecture.
fn not_pkcs11_library() -> String {
    format!("/lib/{}-linux-gnu/libc.so.6", std::env::consts::ARCH)
}

/// The outcome of a `hallmark serve` that exited.
struct Exited {
    /// The exit code.
    code: i32,
    /// Everything the process wrote to stderr: log lines and the message.
    stderr: String,
}

impl Exited {
    /// Returns the message that `hallmark serve` prints before it exits:
    /// the text from the line that starts with `error: ` to the end.
    fn message(&self) -> &str {
        let start = if self.stderr.starts_with("error: ") {
            Some(0)
        } else {
            self.stderr.find("\nerror: ").map(|at| at + 1)
        };
        match start {
            Some(start) => &self.stderr[start..],
            None => panic!("no `error:` line on stderr:\n{}", self.stderr),
        }
    }
}

/// How to run the server process.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RunAs {
    /// As the test's own user.
    Tester,
    /// As a user that cannot read files with mode 000: [`OTHER_UID`] when
    /// the tests run as root, else the test's own user.
    Unprivileged,
}

/// Runs `hallmark serve` on `token` with extra environment, expecting it
/// to exit before it binds, and returns its exit code and stderr.
///
/// The test binds both listen addresses itself while the server runs. A
/// server that got as far as binding would fail there with exit code 74
/// and "cannot listen", which the exact exit code checks in the tests and
/// the checks below both catch; without a bind, it logs no "listening"
/// line either.
fn serve_until_exit(token: &TestToken, env: &[(&str, &str)], run_as: RunAs) -> Exited {
    let grpc = TcpListener::bind("127.0.0.1:0").expect("gRPC port reserved");
    let metrics = TcpListener::bind("127.0.0.1:0").expect("metrics port reserved");
    let grpc_addr = grpc.local_addr().expect("bound address").to_string();
    let metrics_addr = metrics.local_addr().expect("bound address").to_string();

    let mut command = match run_as {
        RunAs::Unprivileged if running_as_root() => {
            let mut command = Command::new("setpriv");
            command.args([
                &format!("--reuid={OTHER_UID}"),
                &format!("--regid={OTHER_UID}"),
                "--clear-groups",
                HALLMARK,
            ]);
            command
        }
        RunAs::Unprivileged | RunAs::Tester => Command::new(HALLMARK),
    };
    let mut child = command
        .current_dir(token.dir.path())
        .arg("serve")
        .arg("--config")
        .arg(token.config())
        .args(["--listen", &grpc_addr, "--metrics-listen", &metrics_addr])
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hallmark serve starts");
    let mut stderr_pipe = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status readable") {
            break status;
        }
        if started.elapsed() > PROMPT {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = reader.join().expect("stderr reader finishes");
            panic!("hallmark serve still running after {PROMPT:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = reader.join().expect("stderr reader finishes");
    drop((grpc, metrics));

    let code = status
        .code()
        .unwrap_or_else(|| panic!("hallmark serve killed by a signal ({status}):\n{stderr}"));
    assert!(
        !stderr.contains("listening"),
        "hallmark serve bound a listener before it failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("cannot listen"),
        "hallmark serve tried to bind before it failed:\n{stderr}"
    );
    Exited { code, stderr }
}

/// Returns whether this process runs as root. The owner of `/proc/self` is
/// the effective user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// Replaces the configuration line that starts with `prefix` with `line`.
fn replace_config_line(token: &TestToken, prefix: &str, line: &str) {
    let path = token.config();
    let text = std::fs::read_to_string(&path).expect("config readable");
    let mut replaced = false;
    let lines: Vec<&str> = text
        .lines()
        .map(|current| {
            if !replaced && current.starts_with(prefix) {
                replaced = true;
                line
            } else {
                current
            }
        })
        .collect();
    assert!(replaced, "no line starts with {prefix:?} in:\n{text}");
    std::fs::write(&path, lines.join("\n") + "\n").expect("config writable");
}

/// Adds `line` to the start of the configuration table `table`.
fn add_to_table(token: &TestToken, table: &str, line: &str) {
    let path = token.config();
    let text = std::fs::read_to_string(&path).expect("config readable");
    let header = format!("[{table}]\n");
    assert!(text.contains(&header), "no {header:?} in:\n{text}");
    let text = text.replacen(&header, &format!("{header}{line}\n"), 1);
    std::fs::write(path, text).expect("config writable");
}

/// Points `[hsm.module_env] SOFTHSM2_CONF` at `path`.
fn set_softhsm_conf(token: &TestToken, path: &Path) {
    let line = format!("SOFTHSM2_CONF = \"{}\"", path.display());
    replace_config_line(token, "SOFTHSM2_CONF = ", &line);
}

/// Writes a SoftHSM configuration file `name` in the token's directory
/// with `text`, and returns its path.
fn write_softhsm_conf(token: &TestToken, name: &str, text: &str) -> std::path::PathBuf {
    let path = token.dir.path().join(name);
    std::fs::write(&path, text).expect("SoftHSM configuration writable");
    path
}

/// Returns the path of the token's SoftHSM configuration file, as
/// dev-token.sh writes it.
fn softhsm_conf(token: &TestToken) -> std::path::PathBuf {
    token.dir.path().join("softhsm2.conf")
}

/// Reads the value of the `name = "..."` line of the configuration.
fn config_value(token: &TestToken, name: &str) -> String {
    let text = std::fs::read_to_string(token.config()).expect("config readable");
    let prefix = format!("{name} = ");
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    value.trim_matches('"').to_owned()
}

/// Runs `softhsm2-util` with the token's SoftHSM configuration.
fn softhsm_util(token: &TestToken, args: &[&str]) -> String {
    let output = Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", softhsm_conf(token))
        .output()
        .expect("softhsm2-util runs");
    assert!(
        output.status.success(),
        "softhsm2-util {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Returns the serial numbers of the initialized tokens in the token's
/// SoftHSM directory. SoftHSM shows its free slot with a blank serial.
fn token_serials(token: &TestToken) -> Vec<String> {
    softhsm_util(token, &["--show-slots"])
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Serial number:"))
        .map(|serial| serial.trim().to_owned())
        .filter(|serial| !serial.is_empty())
        .collect()
}

/// Gives the token's directory and every file in it to [`OTHER_UID`], so
/// that the server can read them when it runs as that user.
fn give_to_other_user(token: &TestToken) {
    fn chown_tree(path: &Path) {
        std::os::unix::fs::chown(path, Some(OTHER_UID), Some(OTHER_UID)).expect("chown works");
        if path.is_dir() {
            for entry in std::fs::read_dir(path).expect("directory readable") {
                chown_tree(&entry.expect("directory entry").path());
            }
        }
    }
    if running_as_root() {
        chown_tree(token.dir.path());
    }
}

/// Sets the permission bits of `path`.
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod works");
}

/// Builds a Sign request for the default key.
fn sign_request() -> SignRequest {
    SignRequest {
        digest: vec![7; 32],
        hash_algorithm: HashAlgorithm::Sha256 as i32,
        key_name: String::new(),
        request_id: String::new(),
        signature_encoding: SignatureEncoding::Der as i32,
    }
}

// ---------------------------------------------------------------------
// The PKCS#11 module
// ---------------------------------------------------------------------

#[test]
fn module_path_missing_exits_64() {
    let token = TestToken::without_key();
    let missing = token.dir.path().join("no-such-module.so");
    replace_config_line(
        &token,
        "module = ",
        &format!("module = \"{}\"", missing.display()),
    );

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains("set hsm.module"), "{message}");
}

#[test]
fn module_text_file_exits_64() {
    let token = TestToken::without_key();
    let text_file = token.dir.path().join("module.so");
    std::fs::write(&text_file, "not a shared library\n").expect("file writable");
    replace_config_line(
        &token,
        "module = ",
        &format!("module = \"{}\"", text_file.display()),
    );

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains(&text_file.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("is not a loadable PKCS#11 library"),
        "{message}"
    );
    assert!(message.contains("check hsm.module"), "{message}");
}

#[test]
fn module_not_pkcs11_library_exits_64() {
    let library = not_pkcs11_library();
    assert!(Path::new(&library).is_file(), "{library} is missing");
    let token = TestToken::without_key();
    replace_config_line(&token, "module = ", &format!("module = \"{library}\""));

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(message.contains(&library), "{message}");
    assert!(
        message.contains("is not a loadable PKCS#11 library"),
        "{message}"
    );
    assert!(message.contains("check hsm.module"), "{message}");
}

/// The loader's own reason distinguishes a library without the PKCS#11
/// entry point from a file that is not a library, or from a real module
/// whose dependencies are missing.
#[test]
fn module_load_message_gives_reason() {
    let library = not_pkcs11_library();
    let token = TestToken::without_key();
    replace_config_line(&token, "module = ", &format!("module = \"{library}\""));

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(message.contains("C_GetFunctionList"), "{message}");
}

/// `HALLMARK_PKCS11_MODULE` overrides `hsm.module`, so the advice names
/// it too.
#[test]
fn module_from_environment_names_variable() {
    let token = TestToken::without_key();
    let missing = token.dir.path().join("no-such-module.so");
    let missing_text = missing.display().to_string();

    let exited = serve_until_exit(
        &token,
        &[("HALLMARK_PKCS11_MODULE", &missing_text)],
        RunAs::Tester,
    );

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(message.contains(&missing_text), "{message}");
    assert!(message.contains("HALLMARK_PKCS11_MODULE"), "{message}");
}

/// Runs the server with `hsm.module` set to `module`, expects exit 64, and
/// returns the message.
fn module_message(token: &TestToken, module: &Path) -> String {
    replace_config_line(
        token,
        "module = ",
        &format!("module = \"{}\"", module.display()),
    );
    let exited = serve_until_exit(token, &[], RunAs::Tester);
    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    exited.message().to_owned()
}

#[test]
fn module_directory_exits_64() {
    let token = TestToken::without_key();
    let directory = token.dir.path().join("modules");
    std::fs::create_dir(&directory).expect("directory created");

    let message = module_message(&token, &directory);

    let expected = format!(
        "error: PKCS#11 module {} is a directory, not a PKCS#11 library file; set hsm.module",
        directory.display()
    );
    assert!(message.starts_with(&expected), "{message}");
}

#[test]
fn module_symlink_loop_exits_64() {
    let token = TestToken::without_key();
    let first = token.dir.path().join("first.so");
    let second = token.dir.path().join("second.so");
    std::os::unix::fs::symlink(&second, &first).expect("symbolic link created");
    std::os::unix::fs::symlink(&first, &second).expect("symbolic link created");

    let message = module_message(&token, &first);

    let expected = format!(
        "error: PKCS#11 module {} is a symbolic link loop; set hsm.module",
        first.display()
    );
    assert!(message.starts_with(&expected), "{message}");
}

#[test]
fn module_dangling_symlink_exits_64() {
    let token = TestToken::without_key();
    let link = token.dir.path().join("module.so");
    let target = token.dir.path().join("removed.so");
    std::os::unix::fs::symlink(&target, &link).expect("symbolic link created");

    let message = module_message(&token, &link);

    let expected = format!(
        "error: PKCS#11 module {} is a symbolic link to {}, which does not exist; set hsm.module",
        link.display(),
        target.display()
    );
    assert!(message.starts_with(&expected), "{message}");
}

// ---------------------------------------------------------------------
// Choosing the token
// ---------------------------------------------------------------------

#[test]
fn unknown_label_lists_tokens_and_exits_64() {
    let token = TestToken::without_key();
    let label = config_value(&token, "token_label");
    let serial = token_serials(&token).remove(0);
    replace_config_line(&token, "token_label = ", "token_label = \"no-such-token\"");

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains("no token with label \"no-such-token\""),
        "{message}"
    );
    let present = format!("tokens present: label \"{label}\" serial \"{serial}\"");
    assert!(message.contains(&present), "{message}");
}

#[test]
fn unknown_serial_lists_tokens_and_exits_64() {
    let token = TestToken::without_key();
    let label = config_value(&token, "token_label");
    let serial = token_serials(&token).remove(0);
    replace_config_line(
        &token,
        "token_label = ",
        "token_serial = \"0123456789abcdef\"",
    );

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains("no token with serial \"0123456789abcdef\""),
        "{message}"
    );
    let present = format!("tokens present: label \"{label}\" serial \"{serial}\"");
    assert!(message.contains(&present), "{message}");
}

/// With no initialized token at all, the token is missing rather than
/// misnamed, so the exit code is 69.
#[test]
fn label_without_any_token_exits_69() {
    let token = TestToken::without_key();
    let label = config_value(&token, "token_label");
    let empty = token.dir.path().join("empty-tokens");
    std::fs::create_dir(&empty).expect("directory created");
    let conf = write_softhsm_conf(
        &token,
        "empty.conf",
        &format!("directories.tokendir = {}\n", empty.display()),
    );
    set_softhsm_conf(&token, &conf);

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_UNAVAILABLE, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains(&format!("no token with label \"{label}\"")),
        "{message}"
    );
    assert!(message.contains("tokens present: none"), "{message}");
}

#[test]
fn ambiguous_label_exits_64() {
    let token = TestToken::without_key();
    let label = config_value(&token, "token_label");
    softhsm_util(
        &token,
        &[
            "--init-token",
            "--free",
            "--label",
            &label,
            "--so-pin",
            "12345678",
            "--pin",
            "87654321",
        ],
    );

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains(&format!("2 tokens match label \"{label}\"")),
        "{message}"
    );
    assert!(
        message.contains("set hsm.token_serial to choose one"),
        "{message}"
    );
}

/// To set `hsm.token_serial`, as the message advises, the operator needs
/// the serial numbers of the tokens that match.
#[test]
fn ambiguous_label_lists_serials() {
    let token = TestToken::without_key();
    let label = config_value(&token, "token_label");
    softhsm_util(
        &token,
        &[
            "--init-token",
            "--free",
            "--label",
            &label,
            "--so-pin",
            "12345678",
            "--pin",
            "87654321",
        ],
    );
    let serials = token_serials(&token);
    assert_eq!(serials.len(), 2, "{serials:?}");

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    for serial in &serials {
        assert!(message.contains(serial.as_str()), "{serial}: {message}");
    }
}

/// SoftHSM always shows one free slot whose token is not initialized and
/// has a blank label and serial number. `token_serial = ""` would select
/// it, so the configuration rejects the empty value before the token is
/// opened. `tests/token_uninitialized.rs` checks how such a token is
/// reported.
#[test]
fn empty_serial_exits_64() {
    let token = TestToken::without_key();
    replace_config_line(&token, "token_label = ", "token_serial = \"\"");

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains("  - hsm.token_serial: the value is empty; set a value or remove the key"),
        "{message}"
    );
}

// ---------------------------------------------------------------------
// The PIN
// ---------------------------------------------------------------------

#[test]
fn wrong_pin_exits_64() {
    let token = TestToken::without_key();
    let label = config_value(&token, "token_label");
    let pin_file = token.dir.path().join("user.pin");
    std::fs::write(&pin_file, "not-the-pin\n").expect("PIN file writable");

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains(&format!("user PIN rejected by token \"{label}\"")),
        "{message}"
    );
    assert!(
        message.contains("check the PIN in hsm.pin_file"),
        "{message}"
    );
    assert!(!message.contains("not-the-pin"), "PIN leaked: {message}");
}

/// The PIN itself must not appear, so its source is the value to name:
/// the setting and the file that was read.
#[test]
fn wrong_pin_names_pin_file() {
    let token = TestToken::without_key();
    let pin_file = token.dir.path().join("user.pin");
    std::fs::write(&pin_file, "not-the-pin\n").expect("PIN file writable");

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    let expected = format!(
        "check the PIN in hsm.pin_file ({}), and note that each failed login counts towards \
         locking the PIN\n",
        pin_file.display()
    );
    assert!(message.contains(&expected), "{message}");
    assert!(!message.contains("HALLMARK_PIN"), "{message}");
}

#[test]
fn wrong_pin_from_environment_names_variable() {
    let token = TestToken::without_key();

    let exited = serve_until_exit(&token, &[("HALLMARK_PIN", "not-the-pin")], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains("check the PIN in HALLMARK_PIN, and note"),
        "{message}"
    );
    assert!(!message.contains("hsm.pin_file"), "{message}");
    assert!(!message.contains("not-the-pin"), "PIN leaked: {message}");
}

/// A space after the PIN is sent to the token, which rejects the PIN, so
/// the message points at it.
#[test]
fn pin_with_trailing_space_gets_hint() {
    let token = TestToken::without_key();
    let pin_file = token.dir.path().join("user.pin");
    let pin = std::fs::read_to_string(&pin_file).expect("PIN file readable");
    std::fs::write(&pin_file, format!("{} \n", pin.trim_end())).expect("PIN file writable");

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(message.contains("user PIN rejected by token"), "{message}");
    assert!(
        message.contains(
            "; the PIN starts or ends with a space, tab or line break, which the token takes as \
             part of the PIN: remove it unless the PIN contains it\n"
        ),
        "{message}"
    );
}

/// A wrong PIN without whitespace gets no whitespace hint.
#[test]
fn wrong_pin_gets_no_whitespace_hint() {
    let token = TestToken::without_key();
    let pin_file = token.dir.path().join("user.pin");
    std::fs::write(&pin_file, "not-the-pin\n").expect("PIN file writable");

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    assert!(
        !exited.message().contains("space, tab or line break"),
        "{}",
        exited.message()
    );
}

/// A PIN file saved with a Windows line ending (CR LF) works: the CR is
/// part of the line ending.
#[tokio::test]
async fn pin_file_with_crlf_serves() {
    let token = TestToken::new(2048, "digest");
    let pin_file = token.dir.path().join("user.pin");
    let pin = std::fs::read_to_string(&pin_file).expect("PIN file readable");
    std::fs::write(&pin_file, format!("{}\r\n", pin.trim_end())).expect("PIN file writable");

    let server = TestServer::start(&token);

    server.wait_serving(PROMPT).await;
}

/// Opening a FIFO for reading waits for a writer, so start-up would hang.
#[test]
fn pin_file_fifo_exits_64() {
    let token = TestToken::without_key();
    let fifo = token.dir.path().join("pin.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let fifo_text = fifo.display().to_string();

    let exited = serve_until_exit(&token, &[("HALLMARK_PIN_FILE", &fifo_text)], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    let expected = format!(
        "hsm.pin_file (HALLMARK_PIN_FILE): {fifo_text} is a FIFO (named pipe), not a regular \
         file; point it at a file that contains the user PIN"
    );
    assert!(message.contains(&expected), "{message}");
}

#[test]
fn pin_file_directory_exits_64() {
    let token = TestToken::without_key();
    let directory = token.dir.path().join("pins");
    std::fs::create_dir(&directory).expect("directory created");
    replace_config_line(
        &token,
        "pin_file = ",
        &format!("pin_file = \"{}\"", directory.display()),
    );

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    let expected = format!(
        "hsm.pin_file: {} is a directory, not a regular file",
        directory.display()
    );
    assert!(message.contains(&expected), "{message}");
}

/// SoftHSM 2.6.1 never locks a user PIN: a wrong login only sets
/// CKF_USER_PIN_COUNT_LOW (`Token::loginUser` in SoftHSM's
/// src/lib/slot_mgr/Token.cpp). The fault module returns CKR_PIN_LOCKED
/// from C_Login instead, as a token with a locked PIN does.
#[test]
fn locked_pin_exits_69() {
    let token = TestToken::without_key();
    let label = config_value(&token, "token_label");
    let control = FaultControl::new(&token);
    control.set(&["C_Login CKR_PIN_LOCKED"]);
    let env = control.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let exited = serve_until_exit(&token, &env, RunAs::Tester);

    assert_eq!(exited.code, EXIT_UNAVAILABLE, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains(&format!("user PIN of token \"{label}\" is locked")),
        "{message}"
    );
    assert!(
        message.contains("the security officer must reset it"),
        "{message}"
    );
    let login = control.counts()["C_Login"];
    assert!(login.failed >= 1, "{login:?}");
}

// ---------------------------------------------------------------------
// The SoftHSM configuration and token directory
// ---------------------------------------------------------------------

#[test]
fn softhsm_conf_missing_exits_64() {
    let token = TestToken::without_key();
    let missing = token.dir.path().join("no-such-softhsm2.conf");
    set_softhsm_conf(&token, &missing);

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    let expected = format!(
        "SoftHSM's configuration {} (SOFTHSM2_CONF, set by hsm.module_env or the environment) \
         cannot be read",
        missing.display()
    );
    assert!(message.contains(&expected), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
}

/// Runs the server as [`OTHER_UID`] when the tests run as root, because
/// root reads a file whatever its mode.
#[test]
fn softhsm_conf_unreadable_exits_64() {
    let token = TestToken::without_key();
    let conf = softhsm_conf(&token);
    give_to_other_user(&token);
    set_mode(&conf, 0o000);

    let exited = serve_until_exit(&token, &[], RunAs::Unprivileged);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    let expected = format!("SoftHSM's configuration {} (SOFTHSM2_CONF", conf.display());
    assert!(message.contains(&expected), "{message}");
    assert!(message.contains("Permission denied"), "{message}");
}

/// SoftHSM 2.6.1 does not fail without `directories.tokendir`: it falls
/// back to its built-in directory, /var/lib/softhsm/tokens on Debian, and
/// the configured token is missing there. The message names the file and
/// the line to add.
#[test]
fn softhsm_conf_without_tokendir_exits_64() {
    let token = TestToken::without_key();
    let label = config_value(&token, "token_label");
    let conf = write_softhsm_conf(&token, "no-tokendir.conf", "objectstore.backend = file\n");
    set_softhsm_conf(&token, &conf);

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    let expected = format!(
        "error: no token with label \"{label}\": SoftHSM's configuration {} has no \
         directories.tokendir line, so SoftHSM read its built-in token directory",
        conf.display()
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(
        message.contains(
            "add `directories.tokendir = DIR` to that file, with the directory that contains the \
             token"
        ),
        "{message}"
    );
}

#[test]
fn token_directory_missing_exits_69() {
    let token = TestToken::without_key();
    let missing = token.dir.path().join("no-such-tokens");
    let conf = write_softhsm_conf(
        &token,
        "missing-dir.conf",
        &format!("directories.tokendir = {}\n", missing.display()),
    );
    set_softhsm_conf(&token, &conf);

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_UNAVAILABLE, "{}", exited.stderr);
    let message = exited.message();
    let expected = format!(
        "SoftHSM's token directory {} (directories.tokendir in {}) cannot be read",
        missing.display(),
        conf.display()
    );
    assert!(message.contains(&expected), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
}

/// Runs the server as [`OTHER_UID`] when the tests run as root, because
/// root reads a directory whatever its mode.
#[test]
fn token_directory_unreadable_exits_69() {
    let token = TestToken::without_key();
    let tokens = token.dir.path().join("tokens");
    give_to_other_user(&token);
    set_mode(&tokens, 0o000);

    let exited = serve_until_exit(&token, &[], RunAs::Unprivileged);

    assert_eq!(exited.code, EXIT_UNAVAILABLE, "{}", exited.stderr);
    let message = exited.message();
    let expected = format!(
        "SoftHSM's token directory {} (directories.tokendir in {}) cannot be read",
        tokens.display(),
        softhsm_conf(&token).display()
    );
    assert!(message.contains(&expected), "{message}");
    assert!(message.contains("Permission denied"), "{message}");
}

// ---------------------------------------------------------------------
// Mechanisms and keys
// ---------------------------------------------------------------------

/// The service calls C_GetMechanismInfo for the mechanism of each
/// configured key. The fault module returns CKR_MECHANISM_INVALID, as a
/// token without that mechanism does.
#[test]
fn mechanism_missing_exits_69() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let control = FaultControl::new(&token);
    control.set(&["C_GetMechanismInfo CKR_MECHANISM_INVALID"]);
    let env = control.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let exited = serve_until_exit(&token, &env, RunAs::Tester);

    assert_eq!(exited.code, EXIT_UNAVAILABLE, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains(
            "the token does not offer CKM_ECDSA, which key \"default\" (ecdsa-p256-sha256) needs"
        ),
        "{message}"
    );
    assert!(
        message.contains("choose another algorithm for keys.default"),
        "{message}"
    );
    let info = control.counts()["C_GetMechanismInfo"];
    assert!(info.failed >= 1, "{info:?}");
}

#[test]
fn default_key_missing_exits_64_with_hint() {
    let token = TestToken::without_key();

    let exited = serve_until_exit(&token, &[], RunAs::Tester);

    assert_eq!(exited.code, EXIT_CONFIG, "{}", exited.stderr);
    let message = exited.message();
    assert!(
        message.contains("the default key \"default\" has no active version in the token"),
        "{message}"
    );
    assert!(
        message.contains("`hallmark keys create --name default`"),
        "{message}"
    );
    assert!(
        message.contains("signing.wait_for_default_key = true"),
        "{message}"
    );

    // The command from the message, with a small key to keep the test fast.
    let created = token.hallmark(&["keys", "create", "--name", "default", "--bits", "2048"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let server = TestServer::start(&token);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(server.wait_serving(PROMPT));
}

#[tokio::test]
async fn default_key_missing_with_wait_serves_not_serving() {
    let token = TestToken::without_key();
    add_to_table(&token, "signing", "wait_for_default_key = true");

    let server = TestServer::start(&token);

    assert_eq!(server.health("").await, ServingStatus::NotServing);
    assert_eq!(
        server.health("hallmark.v1.SignerService").await,
        ServingStatus::NotServing
    );
    let metrics = server.metrics().await;
    assert_eq!(sample(&metrics, "hallmark_token_ready"), Some(0.0));
    let error = server
        .client()
        .await
        .sign(sign_request())
        .await
        .expect_err("no active default key");
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
}
