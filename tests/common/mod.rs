//! Test harness: a real SoftHSM token per test, created by
//! `softhsm/dev-token.sh` in a temporary directory, and a real `hallmark
//! serve` process on a real socket.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hallmark::pb::signer_service_client::SignerServiceClient;
use hyper_util::rt::TokioIo;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The `hallmark` binary built for this test run.
pub const HALLMARK: &str = env!("CARGO_BIN_EXE_hallmark");

/// How long a server gets to report SERVING.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A throwaway token in its own directory.
pub struct TestToken {
    pub dir: tempfile::TempDir,
}

impl TestToken {
    /// Creates a token with a default key of `bits` bits and `salt` setting.
    pub fn new(bits: u32, salt: &str) -> Self {
        Self::create(&["--key-bits", &bits.to_string(), "--salt", salt])
    }

    /// Creates a token whose default key signs with `algorithm`, with
    /// RSA-2048 for the RSA algorithms.
    pub fn with_algorithm(algorithm: &str) -> Self {
        Self::create(&["--algorithm", algorithm, "--key-bits", "2048"])
    }

    /// Creates a token with configuration but no key.
    pub fn without_key() -> Self {
        Self::create(&["--no-key"])
    }

    fn create(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("softhsm/dev-token.sh");
        let output = Command::new(script)
            .args(args)
            .arg(dir.path())
            .env("HALLMARK_BIN", HALLMARK)
            .output()
            .expect("dev-token.sh runs");
        assert!(
            output.status.success(),
            "dev-token.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("hallmark.toml")
    }

    /// Appends TOML text to the configuration.
    pub fn append_config(&self, text: &str) {
        let path = self.config();
        let mut config = std::fs::read_to_string(&path).expect("config readable");
        config.push('\n');
        config.push_str(text);
        std::fs::write(path, config).expect("config writable");
    }

    /// Runs `hallmark` with `args` against this token's configuration.
    pub fn hallmark(&self, args: &[&str]) -> std::process::Output {
        Command::new(HALLMARK)
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .expect("hallmark runs")
    }
}

/// A running `hallmark serve` process, stopped by PID on drop.
pub struct TestServer {
    child: Child,
    pub grpc_addr: String,
    pub metrics_addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts the server on loopback TCP with OS-chosen ports and waits
    /// until both listeners are bound.
    pub fn start(token: &TestToken) -> Self {
        Self::start_with(token, "127.0.0.1:0", &[])
    }

    /// Starts the server with a `--listen` value and extra environment.
    pub fn start_with(token: &TestToken, listen: &str, env: &[(&str, &str)]) -> Self {
        Self::start_in(token, listen, env, token.dir.path())
    }

    /// Starts the server with the working directory `cwd`.
    pub fn start_in(token: &TestToken, listen: &str, env: &[(&str, &str)], cwd: &Path) -> Self {
        let mut child = Command::new(HALLMARK)
            .current_dir(cwd)
            .arg("serve")
            .arg("--config")
            .arg(token.config())
            .args(["--listen", listen, "--metrics-listen", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hallmark serve starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                log_writer.lock().expect("log lock").push(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let mut grpc_addr = None;
        let mut metrics_addr = None;
        while grpc_addr.is_none() || metrics_addr.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(remaining).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "server did not bind in time; log:\n{}",
                    log.lock().expect("log").join("\n")
                )
            });
            if line.contains("listening") {
                let addr = field(&line, "addr=").expect("listening line has addr");
                if line.contains("kind=\"grpc\"") {
                    grpc_addr = Some(addr);
                } else if line.contains("kind=\"metrics\"") {
                    metrics_addr = Some(addr);
                }
            }
        }
        Self {
            child,
            grpc_addr: grpc_addr.expect("set above"),
            metrics_addr: metrics_addr.expect("set above"),
            log,
        }
    }

    /// Returns the server's process ID.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A gRPC channel to the server, over TCP or a Unix socket.
    pub async fn channel(&self) -> Channel {
        match self.grpc_addr.strip_prefix("unix:") {
            Some(path) => {
                let path = PathBuf::from(path);
                Endpoint::from_static("http://localhost")
                    .connect_with_connector(tower::service_fn(move |_| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
                    .expect("unix socket connects")
            }
            None => Endpoint::from_shared(format!("http://{}", self.grpc_addr))
                .expect("valid uri")
                .connect()
                .await
                .expect("tcp connects"),
        }
    }

    pub async fn client(&self) -> SignerServiceClient<Channel> {
        SignerServiceClient::new(self.channel().await)
    }

    /// The health status of `service` ("" for the whole server).
    pub async fn health(&self, service: &str) -> ServingStatus {
        let mut client = HealthClient::new(self.channel().await);
        let response = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check answers");
        ServingStatus::try_from(response.into_inner().status).expect("known status")
    }

    /// Waits until the server reports SERVING, or panics after `timeout`.
    pub async fn wait_serving(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.health("").await != ServingStatus::Serving {
            assert!(
                Instant::now() < deadline,
                "server not SERVING after {timeout:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fetches /metrics and returns the body.
    pub async fn metrics(&self) -> String {
        self.http_get("/metrics").await
    }

    /// Fetches the JWKS document.
    pub async fn jwks(&self) -> serde_json::Value {
        let body = self.http_get("/.well-known/jwks.json").await;
        serde_json::from_str(&body).expect("JWKS is JSON")
    }

    /// Fetches `path` from the admin HTTP port and returns the body of a
    /// 200 response.
    pub async fn http_get(&self, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.metrics_addr)
            .await
            .expect("metrics port connects");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .expect("request written");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response read");
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_owned()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Waits for the server to exit by itself, for example after a signal
    /// that the test sent.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("server exits")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().expect("server exits")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Extracts `name=value` from a log line, where the value ends at a space.
fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(name)? + name.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

/// Waits for `child` to exit and returns its output. A child that still
/// runs after `limit` is killed, and the test fails naming `what`.
pub fn output_within(
    mut child: std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("child status readable").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("killed child exits");
            panic!("{what} still ran after {limit:?}: {output:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("child exits")
}

/// Parses an SPKI DER public key with the `rsa` crate.
pub fn public_key(der: &[u8]) -> RsaPublicKey {
    RsaPublicKey::from_public_key_der(der).expect("valid SPKI")
}

/// Reads the value of one sample line from a Prometheus exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Loads SoftHSM into the test process with the token's configuration and
/// logs in on a read-write session. SoftHSM reads its configuration once
/// per process, so a test binary that calls this must run one test.
pub fn open_session(token: &TestToken) -> cryptoki::session::Session {
    let dir = token.dir.path();
    let config = std::fs::read_to_string(token.config()).expect("config");
    let module = config
        .lines()
        .find_map(|l| l.strip_prefix("module = "))
        .expect("module line")
        .trim_matches('"')
        .to_owned();
    // SAFETY: this binary runs one test, so no other thread reads the
    // environment while it is set.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
    };
    let pin = std::fs::read_to_string(dir.join("user.pin")).expect("pin");

    let pkcs11 = cryptoki::context::Pkcs11::new(module).expect("module loads");
    pkcs11
        .initialize(cryptoki::context::CInitializeArgs::new(
            cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
        ))
        .expect("initialize");
    let slot = pkcs11.get_slots_with_token().expect("slots")[0];
    let session = pkcs11.open_rw_session(slot).expect("session");
    session
        .login(
            cryptoki::session::UserType::User,
            Some(&cryptoki::types::AuthPin::from(pin.trim())),
        )
        .expect("login");
    session
}

/// Compiles the fault-injecting PKCS#11 module `tests/pkcs11-faults/faults.c`
/// once per test binary and returns the path of the shared library.
///
/// Every test binary compiles its own copy under a name of its own and
/// renames it into place, so binaries that start at the same time never
/// load a half-written file. A process that already loaded the library
/// keeps the old file.
pub fn faults_module() -> &'static Path {
    static MODULE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODULE.get_or_init(compile_faults_module)
}

fn compile_faults_module() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pkcs11-faults/faults.c");
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pkcs11-faults");
    std::fs::create_dir_all(&directory).expect("module directory can be created");
    let module = directory.join("libhallmark-faults.so");
    let partial = directory.join(format!(
        "libhallmark-faults.so.{}.partial",
        std::process::id()
    ));
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = Command::new(&compiler)
        .args(["-std=c99", "-shared", "-fPIC", "-O1", "-Wall", "-Werror"])
        .args(["-fvisibility=hidden", "-pthread", "-Wl,-z,nodelete"])
        .args(p11_kit_cflags())
        .arg("-o")
        .arg(&partial)
        .arg(&source)
        .arg("-ldl")
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run the C compiler {compiler:?} ({error}); install gcc")
        });
    assert!(
        output.status.success(),
        "compiling {} failed; scripts/install-deps.sh installs gcc and libp11-kit-dev:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &module).expect("compiled module can be renamed into place");
    module
}

/// Returns the compiler flags that find `<p11-kit/pkcs11.h>`: those from
/// `pkg-config`, else the Debian include directory of libp11-kit-dev.
fn p11_kit_cflags() -> Vec<String> {
    let from_pkg_config = Command::new("pkg-config")
        .args(["--cflags", "p11-kit-1"])
        .output()
        .ok()
        .filter(|output| output.status.success());
    match from_pkg_config {
        Some(output) => String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        None => vec!["-I/usr/include/p11-kit-1".to_owned()],
    }
}

/// Call counts of one PKCS#11 function, from the fault module's counts file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCount {
    /// Calls that the application made.
    pub calls: u64,
    /// Calls that returned a return value injected by a rule.
    pub failed: u64,
}

/// The control and counts files of the fault-injecting module for one
/// server, in the token's directory.
///
/// The server loads the module in place of the token's configured module
/// (`HALLMARK_PKCS11_MODULE`), and the module forwards to the configured
/// one. `tests/pkcs11-faults/README.md` describes the rules.
pub struct FaultControl {
    control: PathBuf,
    counts: PathBuf,
    real_module: PathBuf,
}

impl FaultControl {
    /// Creates an empty control file for a server on `token`, so that the
    /// module forwards every call until [`FaultControl::set`] adds rules.
    pub fn new(token: &TestToken) -> Self {
        let control = Self {
            control: token.dir.path().join("faults.control"),
            counts: token.dir.path().join("faults.counts"),
            real_module: configured_module(token),
        };
        control.set(&[]);
        control
    }

    /// Returns the environment that makes `hallmark serve` load the fault
    /// module and makes the module use these files.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Path| p.display().to_string();
        vec![
            ("HALLMARK_PKCS11_MODULE", path(faults_module())),
            ("HALLMARK_FAULTS_MODULE", path(&self.real_module)),
            ("HALLMARK_FAULTS_CONTROL", path(&self.control)),
            ("HALLMARK_FAULTS_COUNTS", path(&self.counts)),
        ]
    }

    /// Starts `hallmark serve` on `token` with the fault module, on
    /// loopback TCP.
    pub fn start_server(&self, token: &TestToken) -> TestServer {
        let env = self.env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        TestServer::start_with(token, "127.0.0.1:0", &pairs)
    }

    /// Replaces the rules, one per line. The file is written under another
    /// name and renamed into place, so the module never reads half of it.
    /// The module sees a new inode, reads the file again and resets every
    /// rule's `times=` and `skip=`.
    pub fn set(&self, rules: &[&str]) {
        let mut text = rules.join("\n");
        text.push('\n');
        let partial = self.control.with_extension("control.partial");
        std::fs::write(&partial, text).expect("control file writable");
        std::fs::rename(&partial, &self.control).expect("control file can be renamed");
    }

    /// Reads the counts file: the calls of each function that the server
    /// made so far. The module rewrites the file at each call, so it is
    /// current as soon as a response arrives.
    pub fn counts(&self) -> BTreeMap<String, CallCount> {
        let text = match std::fs::read_to_string(&self.counts) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => panic!("cannot read {}: {error}", self.counts.display()),
        };
        text.lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [name, calls, failed] = fields[..] else {
                    panic!("malformed counts line {line:?}");
                };
                let number = |field: &str| -> u64 {
                    field
                        .parse()
                        .unwrap_or_else(|_| panic!("malformed counts line {line:?}"))
                };
                let count = CallCount {
                    calls: number(calls),
                    failed: number(failed),
                };
                (name.to_owned(), count)
            })
            .collect()
    }

    /// Returns the calls of `function` so far, 0 if it was never called.
    pub fn calls(&self, function: &str) -> u64 {
        self.counts().get(function).map_or(0, |count| count.calls)
    }
}

/// Reads the `module = ...` line of the token's configuration.
fn configured_module(token: &TestToken) -> PathBuf {
    let config = std::fs::read_to_string(token.config()).expect("config readable");
    let module = config
        .lines()
        .find_map(|line| line.strip_prefix("module = "))
        .expect("config has a module line");
    PathBuf::from(module.trim_matches('"'))
}
