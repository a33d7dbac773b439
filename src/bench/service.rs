//! A `hallmark serve` child process for the service configurations: its
//! configuration file, start-up and its duration, health and shutdown.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{BenchError, Transport};
use crate::config::{ENV_AUDIT_DIR, ENV_HEALTH_LISTEN};

/// Lines of the child's stderr kept for error messages.
const LOG_TAIL_LINES: usize = 40;

/// How often start-up and shutdown are checked.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How often health is checked until the child reports SERVING. The
/// start-up time is measured at the first SERVING response, so it is at most
/// this much late, plus one health call.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// How long the child gets to exit after SIGTERM before it is killed. The
/// service's default drain timeout is 10 s, and the bench has closed its
/// connections by then.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Maximum time one Sign request may take before the client gives up, so
/// that a stalled service cannot hang the bench.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes the configuration of one service run: the user's file with the
/// audit log switched on (into `audit_dir`) or off, and with what a
/// plaintext loopback benchmark cannot use or must not change removed:
///
/// - `server.tls`, because the clients connect without TLS, and TLS does
///   not apply to a Unix socket;
/// - `server.health_listen`, whose fixed port could clash between runs;
/// - `[[callers]]`, so that every local client may sign on both
///   transports, as with no policy;
/// - rotation, so that the bench never changes the keys in the token.
///
/// Relative paths in the user's file are resolved against its directory,
/// as `hallmark serve` does, because the new file lives elsewhere.
pub fn derive_config(original: &Path, audit_dir: Option<&Path>) -> Result<toml::Table, BenchError> {
    let text = std::fs::read_to_string(original).map_err(|source| BenchError::Io {
        context: format!("cannot read {}", original.display()),
        source,
    })?;
    let mut table: toml::Table = text.parse().map_err(|error| {
        BenchError::Config(format!("{} is not valid TOML: {error}", original.display()))
    })?;
    let base_dir = original.parent().unwrap_or(Path::new("."));

    if let Some(hsm) = table.get_mut("hsm").and_then(toml::Value::as_table_mut) {
        for key in ["module", "pin_file"] {
            if let Some(toml::Value::String(path)) = hsm.get_mut(key) {
                *path = path_text(&base_dir.join(&*path))?;
            }
        }
    }
    if let Some(server) = table.get_mut("server").and_then(toml::Value::as_table_mut) {
        server.remove("tls");
        server.remove("health_listen");
    }
    table.remove("callers");

    let rotation = section(&mut table, "rotation")?;
    rotation.insert("enabled".into(), false.into());
    let audit = section(&mut table, "audit")?;
    match audit_dir {
        Some(dir) => {
            audit.insert("enabled".into(), true.into());
            audit.insert("directory".into(), path_text(dir)?.into());
        }
        None => {
            audit.insert("enabled".into(), false.into());
        }
    }
    Ok(table)
}

/// Returns the table `name`, created if missing.
fn section<'a>(table: &'a mut toml::Table, name: &str) -> Result<&'a mut toml::Table, BenchError> {
    table
        .entry(name)
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .ok_or_else(|| BenchError::Config(format!("[{name}] in the configuration is not a table")))
}

fn path_text(path: &Path) -> Result<String, BenchError> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        BenchError::Config(format!(
            "{} is not valid UTF-8, which a TOML string requires",
            path.display()
        ))
    })
}

/// The address that the child's gRPC listener bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAddr {
    /// Loopback TCP.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The last lines of the child's stderr, with JSON log lines shortened to
/// their level, message and fields.
type LogTail = Arc<Mutex<VecDeque<String>>>;

/// A running `hallmark serve` child. Dropping it kills the child.
pub struct Service {
    child: Child,
    addr: ServiceAddr,
    log: LogTail,
    /// The thread that reads stderr. It ends when the child exits.
    reader: Option<std::thread::JoinHandle<()>>,
    /// When the child was spawned.
    spawned: Instant,
}

impl Service {
    /// Starts `exe serve --config config` on `transport` (a Unix socket at
    /// `socket` for [`Transport::Unix`]) and waits until its gRPC listener
    /// is bound.
    pub fn start(
        exe: &Path,
        config: &Path,
        transport: Transport,
        socket: &Path,
        timeout: Duration,
    ) -> Result<Self, BenchError> {
        let listen = match transport {
            Transport::Tcp => "127.0.0.1:0".to_owned(),
            Transport::Unix => format!("unix:{}", path_text(socket)?),
        };
        let spawned = Instant::now();
        let mut child = Command::new(exe)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config)
            .args(["--listen", &listen, "--metrics-listen", "127.0.0.1:0"])
            // Per-request logs are at debug level, and writing them would
            // be part of what is measured.
            .env("RUST_LOG", "info")
            .env_remove(ENV_AUDIT_DIR)
            .env_remove(ENV_HEALTH_LISTEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| BenchError::Io {
                context: format!("cannot start {} serve", exe.display()),
                source,
            })?;
        let log = LogTail::default();
        let (bound_tx, bound_rx) = mpsc::channel();
        let reader = child.stderr.take().map(|stderr| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || read_log(stderr, &log, &bound_tx))
        });
        let mut service = Self {
            child,
            addr: ServiceAddr::Unix(socket.to_owned()),
            log,
            reader,
            spawned,
        };
        let deadline = Instant::now() + timeout;
        loop {
            match bound_rx.recv_timeout(POLL_INTERVAL) {
                Ok(addr) => {
                    service.addr = addr;
                    return Ok(service);
                }
                Err(RecvTimeoutError::Timeout) => service.check_running(deadline, timeout)?,
                // stderr closed: the child is exiting.
                Err(RecvTimeoutError::Disconnected) => {
                    service.wait_exit(timeout)?;
                    service.check_running(deadline, timeout)?;
                }
            }
        }
    }

    /// Returns the child's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the address that the child serves gRPC on.
    pub fn addr(&self) -> &ServiceAddr {
        &self.addr
    }

    /// Opens a new connection to the child.
    pub async fn connect(&self) -> Result<Channel, BenchError> {
        let connect_error = |source| BenchError::Connect {
            addr: self.addr.to_string(),
            source,
            log: self.log_text(),
        };
        match &self.addr {
            ServiceAddr::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
                .map_err(connect_error)?
                .timeout(REQUEST_TIMEOUT)
                .connect()
                .await
                .map_err(connect_error),
            ServiceAddr::Unix(path) => {
                let path = path.clone();
                // The URI only sets :authority; the connector dials the
                // socket.
                Endpoint::from_static("http://localhost")
                    .timeout(REQUEST_TIMEOUT)
                    .connect_with_connector(tower::service_fn(move |_| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
                    .map_err(connect_error)
            }
        }
    }

    /// Waits until the child's health service reports SERVING for the
    /// whole server, and returns the time from spawning the child to that
    /// response: the service's start-up time.
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<Duration, BenchError> {
        let deadline = Instant::now() + timeout;
        let mut health = HealthClient::new(self.connect().await?);
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|response| response.into_inner().status);
            if status.is_ok_and(|status| status == ServingStatus::Serving as i32) {
                return Ok(self.spawned.elapsed());
            }
            self.check_running(deadline, timeout)?;
            tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
        }
    }

    /// Stops the child with SIGTERM, kills it if it has not exited after
    /// [`STOP_TIMEOUT`], and returns its exit status.
    pub fn stop(&mut self) -> Result<ExitStatus, BenchError> {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            // The child may have exited already, which the wait below reports.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                Ok(None) => {
                    self.kill();
                    break self
                        .child
                        .wait()
                        .map_err(|source| self.wait_error(source))?;
                }
                Err(source) => return Err(self.wait_error(source)),
            }
        };
        self.join_reader();
        Ok(status)
    }

    /// Returns the last lines the child wrote to stderr.
    pub fn log_text(&self) -> String {
        match self.log.lock() {
            Ok(lines) => lines.iter().cloned().collect::<Vec<_>>().join("\n"),
            Err(_) => String::new(),
        }
    }

    /// Fails if the child has exited or `deadline` has passed.
    fn check_running(&mut self, deadline: Instant, timeout: Duration) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.join_reader();
                Err(BenchError::ServiceExited {
                    status,
                    log: self.log_text(),
                })
            }
            Ok(None) if Instant::now() >= deadline => {
                self.kill();
                Err(BenchError::ServiceTimeout {
                    waited: timeout,
                    log: self.log_text(),
                })
            }
            Ok(None) => Ok(()),
            Err(source) => Err(self.wait_error(source)),
        }
    }

    /// Waits up to `timeout` for a child that closed its stderr to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
                Err(source) => return Err(self.wait_error(source)),
            }
        }
        Ok(())
    }

    /// Waits for the stderr reader of an exited child. The reader ends at
    /// the end of stderr, so afterwards the log contains the last lines.
    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            // A panic in the reader costs only log lines.
            let _ = reader.join();
        }
    }

    fn kill(&mut self) {
        // Fails only if the child has already exited.
        let _ = self.child.kill();
    }

    fn wait_error(&self, source: std::io::Error) -> BenchError {
        BenchError::Io {
            context: format!("cannot wait for the service process {}", self.child.id()),
            source,
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads the child's stderr until it closes, keeps its last lines, and
/// sends the gRPC address once the listener reports it.
fn read_log(
    stderr: impl std::io::Read,
    log: &Mutex<VecDeque<String>>,
    bound: &mpsc::Sender<ServiceAddr>,
) {
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        if let Some(addr) = parsed.as_ref().and_then(grpc_addr) {
            // The receiver is gone once start-up is over.
            let _ = bound.send(addr);
        }
        let readable = parsed.as_ref().map_or(line.clone(), short_line);
        if let Ok(mut lines) = log.lock() {
            if lines.len() == LOG_TAIL_LINES {
                lines.pop_front();
            }
            lines.push_back(readable);
        }
    }
}

/// Returns the address of a JSON log line `listening` with `kind=grpc`.
fn grpc_addr(line: &serde_json::Value) -> Option<ServiceAddr> {
    let fields = line.get("fields")?;
    if fields.get("message")? != "listening" || fields.get("kind")? != "grpc" {
        return None;
    }
    let addr = fields.get("addr")?.as_str()?;
    match addr.strip_prefix("unix:") {
        Some(path) => Some(ServiceAddr::Unix(PathBuf::from(path))),
        None => addr.parse().ok().map(ServiceAddr::Tcp),
    }
}

/// Formats a JSON log line as `LEVEL message key=value ...`.
fn short_line(line: &serde_json::Value) -> String {
    let level = line.get("level").and_then(|l| l.as_str()).unwrap_or("");
    let mut text = level.to_owned();
    if let Some(fields) = line.get("fields").and_then(|f| f.as_object()) {
        if let Some(message) = fields.get("message").and_then(|m| m.as_str()) {
            text.push(' ');
            text.push_str(message);
        }
        for (name, value) in fields.iter().filter(|(name, _)| *name != "message") {
            // Strings without their JSON quotes, other values as JSON.
            let _ = match value.as_str() {
                Some(value) => write!(text, " {name}={value}"),
                None => write!(text, " {name}={value}"),
            };
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("hallmark.toml");
        std::fs::write(&path, text).expect("config written");
        path
    }

    #[test]
    fn derived_config_switches_audit_and_resolves_paths() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let original = write_config(
            dir.path(),
            r#"
[server]
listen = "127.0.0.1:50051"
health_listen = "127.0.0.1:8081"
[server.tls]
cert_file = "cert.pem"
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
pin_file = "user.pin"
[audit]
directory = "audit"
[[callers]]
uid = 1000
[keys.default]
algorithm = "ed25519"
"#,
        );
        let audit_dir = dir.path().join("bench-audit");
        let on = derive_config(&original, Some(&audit_dir)).expect("derived");
        let expected_pin = dir.path().join("user.pin");
        assert_eq!(on["hsm"]["pin_file"].as_str(), expected_pin.to_str());
        assert_eq!(
            on["hsm"]["module"].as_str(),
            Some("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(on["audit"]["enabled"].as_bool(), Some(true));
        assert_eq!(on["audit"]["directory"].as_str(), audit_dir.to_str());
        assert_eq!(on["rotation"]["enabled"].as_bool(), Some(false));
        assert!(on["server"].get("tls").is_none());
        assert!(on["server"].get("health_listen").is_none());
        assert_eq!(on["server"]["listen"].as_str(), Some("127.0.0.1:50051"));
        assert!(on.get("callers").is_none());
        assert_eq!(on["keys"]["default"]["algorithm"].as_str(), Some("ed25519"));

        let off = derive_config(&original, None).expect("derived");
        assert_eq!(off["audit"]["enabled"].as_bool(), Some(false));
        assert_eq!(off["audit"]["directory"].as_str(), Some("audit"));
    }

    #[test]
    fn derived_config_rejects_bad_input() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let missing = derive_config(&dir.path().join("absent.toml"), None);
        assert!(matches!(missing, Err(BenchError::Io { .. })));
        let original = write_config(dir.path(), "audit = 3\n");
        let not_table = derive_config(&original, None);
        assert!(matches!(not_table, Err(BenchError::Config(_))));
        let original = write_config(dir.path(), "[hsm\n");
        assert!(matches!(
            derive_config(&original, None),
            Err(BenchError::Config(_))
        ));
    }

    #[test]
    fn listening_lines_give_the_address() {
        let tcp: serde_json::Value = serde_json::from_str(
            r#"{"level":"INFO","fields":{"message":"listening","kind":"grpc","addr":"127.0.0.1:4321"}}"#,
        )
        .expect("JSON");
        assert_eq!(
            grpc_addr(&tcp),
            Some(ServiceAddr::Tcp("127.0.0.1:4321".parse().expect("address")))
        );
        // serde_json orders object members by name.
        assert_eq!(
            short_line(&tcp),
            "INFO listening addr=127.0.0.1:4321 kind=grpc"
        );
        let unix: serde_json::Value = serde_json::from_str(
            r#"{"fields":{"message":"listening","kind":"grpc","addr":"unix:/tmp/h.sock","mode":"0660"}}"#,
        )
        .expect("JSON");
        assert_eq!(
            grpc_addr(&unix),
            Some(ServiceAddr::Unix("/tmp/h.sock".into()))
        );
        let metrics: serde_json::Value = serde_json::from_str(
            r#"{"fields":{"message":"listening","kind":"metrics","addr":"127.0.0.1:9464"}}"#,
        )
        .expect("JSON");
        assert_eq!(grpc_addr(&metrics), None);
    }
}
