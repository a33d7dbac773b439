//! `hallmark bench`: signs the same digests straight through PKCS#11 and
//! through a real `hallmark serve`, and measures both.
//!
//! For each key the run has these configurations, in this order, each
//! with the same random digests ([`setup`]):
//!
//! - `raw`: one thread per session, as many sessions as the service's
//!   pool, each calling `C_SignInit` and `C_Sign` on the token key
//!   ([`raw`]);
//! - `raw-checked`: the same, plus the service's own encoding and
//!   signature self-check after each `C_Sign`, so that the price of the
//!   check shows as its throughput ratio to `raw`;
//! - `tcp-audit-on`, `tcp-audit-off`, `unix-audit-on`, `unix-audit-off`:
//!   a `hallmark serve` child process per configuration, on loopback TCP
//!   or a Unix socket, with the audit log on or off, driven by concurrent
//!   gRPC clients that call Sign ([`service`], [`load`]);
//! - `tcp-batch-audit-on` and the others with `-batch-`: the same with
//!   SignBatch requests of `--batch-size` digests;
//! - `raw-1`, `unix-1-audit-off`, `unix-1-audit-on`, `tcp-1-audit-off`:
//!   one raw thread, or one gRPC client calling Sign, for the latency that
//!   the service adds to `C_Sign`.
//!
//! Service configurations run only for the audit settings of `--audit`.
//! The throughput configurations sign `--requests` digests each, and the
//! single-client ones `--latency-requests`. Every service configuration
//! also measures its child's start-up time, from spawning it to its first
//! SERVING health response. The results are a Markdown table and a JSON
//! document ([`Report`]).

mod load;
mod machine;
mod markdown;
mod measure;
mod raw;
mod report;
mod service;
mod setup;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

pub use machine::Machine;
pub use measure::{Latency, Memory};
pub use report::{
    AddedLatency, AuditRatio, Configuration, KeyReport, Report, SelfCheckCost, Settings, Startup,
};

use crate::config::Config;
use crate::hsm::{HsmError, Token};
use crate::keys::{self, KeyName, KeyVersion};
use crate::pb;
use load::Calls;
use measure::{Progress, ServiceRun};
use service::Service;
use setup::{Kind, Rpc, ServiceSetup, Spec};

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
    #[error("the service rejected a {rpc} request before timing began: {reason}")]
    WarmUp {
        /// The gRPC method.
        rpc: &'static str,
        /// The gRPC code and message of the call or of its item.
        reason: String,
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
    /// Digests per throughput configuration.
    pub requests: usize,
    /// Digests per single-client configuration.
    pub latency_requests: usize,
    /// Concurrent gRPC clients per service throughput configuration.
    pub clients: usize,
    /// Digests per SignBatch request, at most the service's
    /// `signing.max_batch`.
    pub batch_size: usize,
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
            latency_requests: plan.latency_requests,
            sessions: config.hsm.sessions,
            clients: plan.clients,
            batch_size: plan.batch_size,
            channels: "one channel (HTTP/2 connection) per client",
            warm_up: "one request per raw thread and per client, with one digest, not counted",
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
    /// Runs every configuration of the key in turn.
    fn run(&mut self, version: &KeyVersion) -> Result<KeyReport, BenchError> {
        let specs = setup::configurations(self.plan, self.sessions);
        let count = specs.iter().map(|spec| spec.requests).max().unwrap_or(0);
        let all = Arc::new(random_digests(count, version.algorithm.digest_len())?);
        let mut configurations = Vec::with_capacity(specs.len());
        for spec in &specs {
            // Every configuration signs the first digests of the same set.
            let digests = if spec.requests == all.len() {
                Arc::clone(&all)
            } else {
                Arc::new(all[..spec.requests].to_vec())
            };
            configurations.push(self.run_one(version, spec, digests)?);
        }
        Ok(KeyReport::new(version, configurations))
    }

    /// Runs one configuration.
    fn run_one(
        &mut self,
        version: &KeyVersion,
        spec: &Spec,
        digests: Arc<Vec<Vec<u8>>>,
    ) -> Result<Configuration, BenchError> {
        match spec.kind {
            Kind::Raw(after) => {
                let claimed = Arc::new(AtomicUsize::new(0));
                let _progress = self.progress(version, spec, &claimed);
                let timed = raw::run(self.token, version, spec.workers, after, &digests, &claimed)?;
                Ok(Configuration::raw(spec, &timed))
            }
            Kind::Service(setup) => {
                let run = self.run_service(version, spec, setup, digests)?;
                Ok(Configuration::service(
                    spec,
                    setup,
                    self.plan.batch_size,
                    &run,
                ))
            }
        }
    }

    /// Starts a service child for one configuration, measures it, reads
    /// its memory and stops it.
    fn run_service(
        &mut self,
        version: &KeyVersion,
        spec: &Spec,
        setup: ServiceSetup,
        digests: Arc<Vec<Vec<u8>>>,
    ) -> Result<ServiceRun, BenchError> {
        let ServiceSetup {
            transport,
            audit,
            rpc,
        } = setup;
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
        let calls = self.calls(version, rpc);
        let claimed = Arc::new(AtomicUsize::new(0));
        let (startup, timed) = self.runtime.block_on(async {
            let startup = service.wait_serving(START_TIMEOUT).await?;
            let mut channels = Vec::with_capacity(spec.workers);
            for _ in 0..spec.workers {
                channels.push(service.connect().await?);
            }
            let _progress = self.progress(version, spec, &claimed);
            let timed = load::drive(
                channels,
                calls,
                digests,
                Arc::clone(&claimed),
                service.pid(),
            )
            .await?;
            Ok::<_, BenchError>((startup, timed))
        })?;
        let memory = measure::process_memory(service.pid()).map_err(|source| BenchError::Io {
            context: format!("cannot read /proc/{}/status", service.pid()),
            source,
        })?;
        let status = service.stop()?;
        if !status.success() {
            self.warnings.push(format!(
                "the service for {} {} at {} stopped with {status}; its last log \
                 lines:\n{}",
                version.name,
                spec.name,
                service.addr(),
                service.log_text()
            ));
        }
        Ok(ServiceRun {
            timed,
            memory,
            startup,
        })
    }

    /// Returns the requests, without their digests, that the clients of a
    /// service configuration send.
    fn calls(&self, version: &KeyVersion, rpc: Rpc) -> Calls {
        let hash_algorithm = version.algorithm.hash_algorithm() as i32;
        let key_name = version.name.to_string();
        let signature_encoding = pb::SignatureEncoding::Unspecified as i32;
        match rpc {
            Rpc::Sign => Calls::Sign(pb::SignRequest {
                digest: Vec::new(),
                hash_algorithm,
                key_name,
                request_id: String::new(),
                signature_encoding,
            }),
            Rpc::SignBatch => Calls::SignBatch {
                template: pb::SignBatchRequest {
                    items: Vec::new(),
                    hash_algorithm,
                    key_name,
                    signature_encoding,
                },
                size: self.plan.batch_size,
            },
            Rpc::HealthCheck => Calls::HealthCheck,
        }
    }

    fn progress(&self, version: &KeyVersion, spec: &Spec, claimed: &Arc<AtomicUsize>) -> Progress {
        Progress::start(
            format!("{} {}", version.name, spec.name),
            spec.requests,
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
