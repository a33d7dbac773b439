//! `hallmark bench`: signs the same digests straight through PKCS#11 and
//! through a real `hallmark serve`, and measures both.
//!
//! For each key the run has these configurations, each with the same
//! random digests:
//!
//! - `raw`: one thread per session, as many sessions as the service's
//!   pool, each calling `C_SignInit` and `C_Sign` on the token key
//!   ([`raw`]);
//! - `tcp-audit-on`, `tcp-audit-off`, `unix-audit-on`, `unix-audit-off`:
//!   a `hallmark serve` child process per configuration, on loopback TCP
//!   or a Unix socket, with the audit log on or off, driven by concurrent
//!   gRPC clients ([`service`], [`load`]).
//!
//! Every configuration sends the same fixed number of requests. The
//! results are a Markdown table and a JSON document ([`Report`]).

mod load;
mod machine;
mod markdown;
mod measure;
mod raw;
mod report;
mod service;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

pub use machine::Machine;
pub use measure::{Latency, Memory};
pub use report::{AuditRatio, Configuration, KeyReport, Report, Settings};

use crate::config::Config;
use crate::hsm::{HsmError, Token};
use crate::keys::{self, KeyName, KeyVersion};
use crate::pb;
use measure::{Progress, Timed};
use service::Service;

/// How long a service child gets to bind and report SERVING. Start-up
/// opens the token and reads every key, which takes well under a second
/// with SoftHSM.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A failure that stopped a run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options or the configuration do not allow the run. User error.
    #[error("{0}")]
    Config(String),
    /// A key cannot sign as the run requires: it has no active version,
    /// or its parameters do not fit.
    #[error("{0}")]
    Key(String),
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// The operation that failed.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A service child exited before it reported SERVING.
    #[error("the service process exited during start-up ({status}); its last log lines:\n{log}")]
    ServiceExited {
        /// The child's exit status.
        status: ExitStatus,
        /// The last lines of the child's stderr.
        log: String,
    },
    /// A service child did not report SERVING in time. It was killed.
    #[error("the service did not report SERVING within {waited:?}; its last log lines:\n{log}")]
    ServiceTimeout {
        /// How long the bench waited.
        waited: Duration,
        /// The last lines of the child's stderr.
        log: String,
    },
    /// A connection to a service child failed.
    #[error("cannot connect to the service at {addr}: {source}; its last log lines:\n{log}")]
    Connect {
        /// The child's gRPC address.
        addr: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
        /// The last lines of the child's stderr.
        log: String,
    },
    /// The service rejected the untimed request that precedes timing, so
    /// every timed request would fail the same way.
    #[error("the service rejected a Sign request before timing began: {code}: {message}")]
    WarmUp {
        /// The gRPC status code.
        code: &'static str,
        /// The status message.
        message: String,
    },
    /// A raw thread or client task panicked. This is a bug in the bench.
    #[error("a bench worker panicked")]
    WorkerPanicked,
}

/// The transport between the gRPC clients and a service child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Loopback TCP, `127.0.0.1`.
    Tcp,
    /// A Unix socket in the run's temporary directory.
    Unix,
}

impl Transport {
    /// Returns the name used in configuration names and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Unix => "unix",
        }
    }
}

/// Whether the service's audit log is on in a service configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audit {
    /// `audit.enabled = true`, writing into the run's temporary directory.
    On,
    /// `audit.enabled = false`.
    Off,
}

impl Audit {
    /// Returns the name used in configuration names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// The keys and settings of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The `hallmark` binary to start as the service.
    pub exe: PathBuf,
    /// The configuration file that `config` was loaded from.
    pub config_path: PathBuf,
    /// The keys to measure, in order.
    pub keys: Vec<KeyName>,
    /// Requests per configuration.
    pub requests: usize,
    /// Concurrent gRPC clients per service configuration.
    pub clients: usize,
    /// The audit settings to run the service with, in order.
    pub audit: Vec<Audit>,
    /// The command line, for the report.
    pub command: String,
}

/// Resolves the requested key names, or every configured key except the
/// checkpoint key when none is requested.
pub fn select_keys(config: &Config, requested: &[String]) -> Result<Vec<KeyName>, BenchError> {
    let checkpoint = config.checkpoint_key.as_ref();
    if requested.is_empty() {
        let names: Vec<KeyName> = config
            .keys
            .keys()
            .filter(|name| Some(*name) != checkpoint)
            .cloned()
            .collect();
        if names.is_empty() {
            return Err(BenchError::Config(
                "the configuration has no key that Sign accepts; add a [keys.NAME] table".into(),
            ));
        }
        return Ok(names);
    }
    let mut names = Vec::new();
    for text in requested {
        let name = KeyName::parse(text).map_err(BenchError::Config)?;
        if !config.keys.contains_key(&name) {
            let configured: Vec<&str> = config.keys.keys().map(KeyName::as_str).collect();
            return Err(BenchError::Config(format!(
                "key \"{name}\" is not configured; the configuration has {}",
                configured.join(", ")
            )));
        }
        if Some(&name) == checkpoint {
            return Err(BenchError::Config(format!(
                "key \"{name}\" is audit.checkpoint_key, which Sign rejects; choose another key"
            )));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Runs every configuration of every key in `plan`, one after another.
pub fn run(plan: &Plan, config: &Config) -> Result<Report, BenchError> {
    let date = rfc3339_now();
    let token = Token::open(&config.hsm)?;
    let machine = Machine::describe(&config.hsm.module);
    let snapshot = keys::list_versions(&token, &config.keys)?;
    let versions = plan
        .keys
        .iter()
        .map(|name| active_version(&snapshot, name))
        .collect::<Result<Vec<_>, _>>()?;
    // Without it the service never reports SERVING, and every service
    // configuration would wait for START_TIMEOUT and fail.
    if snapshot.active(&config.default_key).is_none() {
        let name = &config.default_key;
        return Err(BenchError::Key(format!(
            "the default key \"{name}\" (signing.default_key) has no active version, so the \
             service would never report SERVING; create one with `hallmark keys create --name \
             {name}`"
        )));
    }
    let workdir = WorkDir::create()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            context: "cannot start the async runtime".into(),
            source,
        })?;

    let mut bench = KeyBench {
        plan,
        sessions: config.hsm.sessions,
        token: &token,
        runtime: &runtime,
        workdir: &workdir,
        runs: 0,
        warnings: Vec::new(),
    };
    let mut reports = Vec::with_capacity(versions.len());
    for version in &versions {
        reports.push(bench.run(version)?);
    }
    let warnings = bench.warnings;
    Ok(Report {
        hallmark_version: env!("CARGO_PKG_VERSION"),
        build_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        date,
        command: plan.command.clone(),
        machine,
        settings: Settings {
            requests: plan.requests,
            sessions: config.hsm.sessions,
            clients: plan.clients,
            channels: "one channel (HTTP/2 connection) per client",
            warm_up: "one request per raw thread and per client, not counted",
        },
        keys: reports,
        warnings,
    })
}

/// Returns the version of `name` that signs, as the service would choose it.
fn active_version(
    snapshot: &keys::Snapshot,
    name: &KeyName,
) -> Result<Arc<KeyVersion>, BenchError> {
    if let Some(problem) = snapshot.conflict(name) {
        return Err(BenchError::Key(problem.to_owned()));
    }
    let version = snapshot.active(name).cloned().ok_or_else(|| {
        BenchError::Key(format!(
            "key \"{name}\" has no active version in the token; create one with \
             `hallmark keys create --name {name}`"
        ))
    })?;
    if version.algorithm == keys::algorithm::Algorithm::RsaPssSha256 && version.salt_len.is_none() {
        return Err(BenchError::Key(format!(
            "the salt configured for key \"{name}\" does not fit version {}",
            version.version
        )));
    }
    Ok(version)
}

/// The state shared by the configurations of every key.
struct KeyBench<'a> {
    plan: &'a Plan,
    sessions: usize,
    token: &'a Token,
    runtime: &'a tokio::runtime::Runtime,
    workdir: &'a WorkDir,
    /// Service runs so far, which numbers their directories.
    runs: usize,
    warnings: Vec<String>,
}

impl KeyBench<'_> {
    /// Runs the raw configuration and then each service configuration.
    fn run(&mut self, version: &KeyVersion) -> Result<KeyReport, BenchError> {
        let digests = Arc::new(random_digests(
            self.plan.requests,
            version.algorithm.digest_len(),
        )?);
        let claimed = Arc::new(AtomicUsize::new(0));
        let timed = {
            let _progress = self.progress(version, "raw", &claimed);
            raw::run(self.token, version, self.sessions, &digests, &claimed)?
        };
        let raw = Configuration::raw(self.sessions, self.plan.requests, &timed);
        let raw_throughput = raw.throughput_per_second;
        let mut configurations = vec![raw];
        for transport in [Transport::Tcp, Transport::Unix] {
            for &audit in &self.plan.audit {
                let (timed, memory) = self.run_service(version, &digests, transport, audit)?;
                configurations.push(Configuration::service(
                    (transport, audit),
                    self.plan.clients,
                    self.plan.requests,
                    &timed,
                    memory,
                    raw_throughput,
                ));
            }
        }
        Ok(KeyReport {
            key_name: version.name.to_string(),
            algorithm: version.algorithm.as_str(),
            bits: version.bits,
            key_id: version.key_id.clone(),
            audit_ratios: AuditRatio::pair(&configurations),
            configurations,
        })
    }

    /// Starts a service child for one configuration, measures it, reads
    /// its memory and stops it.
    fn run_service(
        &mut self,
        version: &KeyVersion,
        digests: &Arc<Vec<Vec<u8>>>,
        transport: Transport,
        audit: Audit,
    ) -> Result<(Timed, Memory), BenchError> {
        self.runs += 1;
        let dir = self.workdir.path.join(format!("run-{}", self.runs));
        create_private_dir(&dir)?;
        let audit_dir = dir.join("audit");
        let table = service::derive_config(
            &self.plan.config_path,
            (audit == Audit::On).then_some(audit_dir.as_path()),
        )?;
        let config_file = dir.join("hallmark.toml");
        std::fs::write(&config_file, table.to_string()).map_err(|source| BenchError::Io {
            context: format!("cannot write {}", config_file.display()),
            source,
        })?;

        let mut service = Service::start(
            &self.plan.exe,
            &config_file,
            transport,
            &dir.join("grpc.sock"),
            START_TIMEOUT,
        )?;
        let template = pb::SignRequest {
            digest: Vec::new(),
            hash_algorithm: version.algorithm.hash_algorithm() as i32,
            key_name: version.name.to_string(),
            request_id: String::new(),
            signature_encoding: pb::SignatureEncoding::Unspecified as i32,
        };
        let claimed = Arc::new(AtomicUsize::new(0));
        let label = format!(
            "{transport}-audit-{audit}",
            transport = transport.as_str(),
            audit = audit.as_str()
        );
        let timed = self.runtime.block_on(async {
            service.wait_serving(START_TIMEOUT).await?;
            let mut channels = Vec::with_capacity(self.plan.clients);
            for _ in 0..self.plan.clients {
                channels.push(service.connect().await?);
            }
            let _progress = self.progress(version, &label, &claimed);
            load::drive(
                channels,
                template,
                Arc::clone(digests),
                Arc::clone(&claimed),
                service.pid(),
            )
            .await
        })?;
        let memory = measure::process_memory(service.pid()).map_err(|source| BenchError::Io {
            context: format!("cannot read /proc/{}/status", service.pid()),
            source,
        })?;
        let status = service.stop()?;
        if !status.success() {
            self.warnings.push(format!(
                "the service for {} {label} at {} stopped with {status}; its last log \
                 lines:\n{}",
                version.name,
                service.addr(),
                service.log_text()
            ));
        }
        Ok((timed, memory))
    }

    fn progress(&self, version: &KeyVersion, label: &str, claimed: &Arc<AtomicUsize>) -> Progress {
        Progress::start(
            format!("{} {label}", version.name),
            self.plan.requests,
            Arc::clone(claimed),
        )
    }
}

/// Reads `count` random digests of `len` bytes from the kernel's CSPRNG.
fn random_digests(count: usize, len: usize) -> Result<Vec<Vec<u8>>, BenchError> {
    let mut bytes = vec![0u8; count * len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .map_err(|source| BenchError::Io {
            context: "cannot read random digests from /dev/urandom".into(),
            source,
        })?;
    Ok(bytes.chunks_exact(len).map(<[u8]>::to_vec).collect())
}

/// Returns the current time in RFC 3339, to the second.
fn rfc3339_now() -> String {
    let mut now = prost_types::Timestamp::from(SystemTime::now());
    now.nanos = 0;
    now.to_string()
}

/// The run's temporary directory, removed with everything in it when
/// dropped. It contains each service run's configuration, Unix socket and
/// audit log.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create() -> Result<Self, BenchError> {
        let path = std::env::temp_dir().join(format!("hallmark-bench-{}", std::process::id()));
        create_private_dir(&path)?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in the temporary directory
        // does no harm.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Creates a directory that only the current user can read.
fn create_private_dir(path: &Path) -> Result<(), BenchError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|source| BenchError::Io {
            context: format!("cannot create {}", path.display()),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_random_and_sized() {
        let digests = random_digests(3, 48).expect("random bytes");
        assert_eq!(digests.len(), 3);
        assert!(digests.iter().all(|d| d.len() == 48));
        assert_ne!(digests[0], digests[1]);
    }

    #[test]
    fn date_has_whole_seconds() {
        let date = rfc3339_now();
        assert!(date.ends_with('Z'), "{date}");
        assert!(!date.contains('.'), "{date}");
    }
}
