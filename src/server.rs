//! The `serve` command: start-up, listeners, the key refresh loop and
//! shutdown.
//!
//! Start-up is linear. The token is opened and its keys are read before any
//! socket is bound, so a configuration or token problem ends the process
//! with a clear message and nothing half-started. Health reports SERVING
//! only once the default key's active version is found, and the refresh
//! loop keeps that true as keys change in the token.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{debug, error, info, warn};

use crate::audit::{
    AuditError, AuditLog, CheckpointSignature, CheckpointStatement, FinalCheckpoint,
    SignError as AuditSignError,
};
use crate::config::{Config, ListenAddr};
use crate::grpc::SignerApi;
use crate::hsm::{Abandon, HsmError, Recovery, SessionPool, Token};
use crate::keys::algorithm::SignatureEncoding;
use crate::keys::{self, KeyName, KeyState, RotateMode, Signer, Snapshot, salt_problems};
use crate::metrics::{self, Metrics};
use crate::pb;
use crate::pb::signer_service_server::SignerServiceServer;
use crate::signals::{self, StopRequest, StopSignal};

/// How often the token is re-read while the default key is missing.
const MISSING_KEY_RETRY: Duration = Duration::from_secs(1);
/// Maximum wait at shutdown for Sign tasks to release the audit log.
const AUDIT_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long shutdown waits for idle connections to let go of the audit
/// log once every request has ended.
const IDLE_AUDIT_CLOSE_WAIT: Duration = Duration::from_millis(250);

/// How long shutdown waits, after the drain, for requests in progress to
/// stop and write their audit records. A request stops before its next
/// PKCS#11 call, so only a call that hangs in the module outlasts this.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(3);
/// First wait before opening an unavailable token again; each failure
/// doubles it up to [`RECONNECT_BACKOFF_MAX`].
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Maximum wait between attempts to open an unavailable token.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Most concurrent HTTP/2 streams on one connection: far more than one
/// client needs in flight, given the admission limit.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Largest accepted HTTP/2 header list, in bytes. A Sign request's
/// headers are a few hundred bytes.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Most streams a client may reset before the server stops accepting
/// them: a defence against rapid-reset floods.
const MAX_PENDING_RESET_STREAMS: usize = 64;

/// The health service name that reports whether the process is alive,
/// whatever the state of the token or the audit log.
pub const LIVENESS_SERVICE: &str = "liveness";

/// How often the audit log's health is checked, and a failed log is
/// retried: readiness follows a disk fault or its repair within this time.
const AUDIT_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// A failure that stopped the service or prevented its start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration does not fit the token's contents, or its TLS
    /// files changed since loading and can no longer be used.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    /// The token could not be used.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// A socket could not be bound or served.
    #[error("{context}: {source}")]
    Io {
        /// The operation that failed.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Building the reflection service or the metrics failed.
    #[error("start-up failed: {0}")]
    Setup(String),
    /// The audit log could not be opened.
    #[error("cannot open the audit log: {0}")]
    Audit(#[from] AuditError),
}

/// The gRPC listener, bound before serving starts.
pub enum GrpcListener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix domain socket listener.
    Unix(UnixListener),
}

/// Both listeners of the service.
pub struct Listeners {
    /// The gRPC listener.
    pub grpc: GrpcListener,
    /// The metrics listener.
    pub metrics: TcpListener,
    /// The health-only listener, when configured.
    pub health: Option<TcpListener>,
}

impl Listeners {
    /// Binds both addresses from the configuration and logs each one,
    /// with the real port where port 0 was requested.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let grpc = match &config.listen {
            ListenAddr::Tcp(addr) => {
                if !addr.ip().is_loopback() && config.tls.is_none() {
                    warn!(
                        addr = %addr,
                        "serving gRPC over plain TCP on a non-loopback address: any host that \
                         reaches it can sign (server.allow_insecure_tcp is set)"
                    );
                }
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Io {
                        context: format!("cannot listen on {addr}"),
                        source,
                    })?;
                let bound = listener.local_addr().map_err(|source| ServeError::Io {
                    context: "cannot read the bound gRPC address".into(),
                    source,
                })?;
                info!(kind = "grpc", addr = %bound, "listening");
                GrpcListener::Tcp(listener)
            }
            ListenAddr::Unix(path) => {
                let listener = bind_unix(path).await?;
                // The socket file is created with the process umask; set the
                // configured mode before the first client can connect.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode))
                    .map_err(|source| ServeError::Io {
                        context: format!("cannot set the mode of unix:{}", path.display()),
                        source,
                    })?;
                info!(
                    kind = "grpc",
                    addr = %config.listen,
                    mode = format!("{:04o}", config.socket_mode),
                    "listening"
                );
                GrpcListener::Unix(listener)
            }
        };
        let metrics = TcpListener::bind(config.metrics_listen)
            .await
            .map_err(|source| ServeError::Io {
                context: format!("cannot listen on {} for metrics", config.metrics_listen),
                source,
            })?;
        let bound = metrics.local_addr().map_err(|source| ServeError::Io {
            context: "cannot read the bound metrics address".into(),
            source,
        })?;
        info!(kind = "metrics", addr = %bound, "listening");
        let health = match config.health_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Io {
                        context: format!("cannot listen on {addr} for health checks"),
                        source,
                    })?;
                let bound = listener.local_addr().map_err(|source| ServeError::Io {
                    context: "cannot read the bound health address".into(),
                    source,
                })?;
                info!(kind = "health", addr = %bound, "listening");
                Some(listener)
            }
            None => None,
        };
        Ok(Self {
            grpc,
            metrics,
            health,
        })
    }
}

/// Logs a warning when the process runs as root. A signer needs no
/// privilege, and as root a compromise reaches the whole host. The owner
/// of `/proc/self` is the process's effective user.
pub fn warn_if_root() {
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        warn!("running as root; run hallmark as an unprivileged user");
    }
}

/// Binds a Unix socket, replacing a stale socket file left by a crash but
/// never one that another process still serves.
async fn bind_unix(path: &std::path::Path) -> Result<UnixListener, ServeError> {
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err(ServeError::Io {
                context: format!("cannot listen on unix:{}", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the path exists and is not a socket; choose another path",
                ),
            });
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::Io {
                context: format!("cannot listen on unix:{}", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process is serving this socket; stop it or choose another path",
                ),
            });
        }
        warn!(path = %path.display(), "removing stale socket file");
        std::fs::remove_file(path).map_err(|source| ServeError::Io {
            context: format!("cannot remove stale socket {}", path.display()),
            source,
        })?;
    }
    UnixListener::bind(path).map_err(|source| ServeError::Io {
        context: format!("cannot listen on unix:{}", path.display()),
        source,
    })
}

/// Opens the token, reads the keys, opens the audit log, binds, and serves
/// until `stop` reports the first signal.
///
/// A signal during start-up stops it once the current step ends. What was
/// opened by then is closed, the token's module finalized included, and
/// this returns `Ok`. A step that does not end within the drain timeout,
/// such as a PKCS#11 call that hangs, is left behind.
pub async fn serve(config: Arc<Config>, stop: StopRequest) -> Result<(), ServeError> {
    let mut watch = stop.clone();
    let mut starting = tokio::spawn(start(Arc::clone(&config), stop.clone()));
    let started = tokio::select! {
        joined = &mut starting => joined.map_err(|e| ServeError::Setup(e.to_string()))??,
        signal = signals::requested(&mut watch) => {
            return stop_during_start(&config, signal, starting).await;
        }
    };
    let Some(Started {
        prepared,
        listeners,
    }) = started
    else {
        info!("stopped during start-up");
        return Ok(());
    };
    let mut stop = stop;
    let shutdown = async move { signals::requested(&mut stop).await };
    run(config, prepared, listeners, shutdown).await
}

/// Waits up to the drain timeout for start-up to notice the stop and close
/// what it opened.
async fn stop_during_start(
    config: &Config,
    signal: StopSignal,
    starting: tokio::task::JoinHandle<Result<Option<Started>, ServeError>>,
) -> Result<(), ServeError> {
    info!(
        signal = signal.name(),
        "stop requested during start-up; stopping once the current step ends"
    );
    let wait = config.drain_timeout;
    match tokio::time::timeout(wait, starting).await {
        Ok(Ok(Ok(None))) => {}
        // Start-up finished just as the signal arrived.
        Ok(Ok(Ok(Some(started)))) => started.close(config).await,
        Ok(Ok(Err(error))) => return Err(error),
        Ok(Err(error)) => return Err(ServeError::Setup(error.to_string())),
        Err(_) => warn!(
            timeout = ?wait,
            "start-up did not stop within the drain timeout; exiting without closing the token"
        ),
    }
    info!("stopped during start-up");
    Ok(())
}

/// The token, keys and audit log that start-up opened, and its listeners.
struct Started {
    prepared: Prepared,
    listeners: Listeners,
}

impl Started {
    async fn close(self, config: &Config) {
        self.prepared.close().await;
        drop(self.listeners);
        if let ListenAddr::Unix(path) = &config.listen {
            remove_own_socket(path);
        }
    }
}

/// Opens the token, prepares the service and binds, checking for a stop
/// after each step. Returns `None` when it stopped, after closing what it
/// had opened.
async fn start(config: Arc<Config>, stop: StopRequest) -> Result<Option<Started>, ServeError> {
    let stopped = || stop.borrow().is_some();
    let hsm_config = config.hsm.clone();
    let token = tokio::task::spawn_blocking(move || Token::open(&hsm_config))
        .await
        .map_err(|e| HsmError::TaskFailed(e.to_string()))??;
    if stopped() {
        close_token(token).await;
        return Ok(None);
    }
    let prepared = prepare(&config, token).await?;
    if stopped() {
        prepared.close().await;
        return Ok(None);
    }
    let listeners = Listeners::bind(&config).await?;
    let started = Started {
        prepared,
        listeners,
    };
    if stopped() {
        started.close(&config).await;
        return Ok(None);
    }
    Ok(Some(started))
}

/// Closes a token that no pool owns yet: its login session, and the module.
async fn close_token(token: Token) {
    match tokio::task::spawn_blocking(move || token.close()).await {
        Ok(Ok(())) => info!("token closed"),
        Ok(Err(error)) => warn!(%error, "closing the token failed"),
        Err(error) => warn!(%error, "closing the token failed"),
    }
}

/// The opened token with its pool and keys, and the audit log, ready to
/// serve.
pub struct Prepared {
    signer: Arc<Signer>,
    metrics: Arc<Metrics>,
    audit: Option<Arc<AuditLog>>,
}

impl Prepared {
    /// Closes the audit log and the token without serving.
    async fn close(self) {
        if let Some(log) = self.audit {
            close_audit(log, true).await;
        }
        self.signer.pool().close().await;
    }
}

/// Opens the pool on `token`, reads the keys, and checks that each
/// configured salt fits its key.
async fn prepare(config: &Config, token: Token) -> Result<Prepared, ServeError> {
    let metrics = Arc::new(Metrics::new().map_err(|e| ServeError::Setup(e.to_string()))?);
    for name in config.keys.keys() {
        metrics.register_key(name.as_str());
    }
    let hsm = config.hsm.clone();
    let pool =
        tokio::task::spawn_blocking(move || SessionPool::with_token(&hsm, token, hsm.sessions))
            .await
            .map_err(|e| HsmError::TaskFailed(e.to_string()))??;
    let signer = Arc::new(Signer::new(pool, config.keys.clone(), Arc::clone(&metrics)));
    if config.rotation_enabled {
        // The rotator completes or cleans up whatever an interrupted run left
        // in the token before anything signs.
        run_rotation(config, &signer).await?;
    }
    let snapshot = signer.refresh().await?;
    let problems = salt_problems(&snapshot, &config.keys);
    if !problems.is_empty() {
        return Err(ServeError::Config(problems));
    }
    check_mechanisms(config, &signer, &snapshot).await?;
    if snapshot.active(&config.default_key).is_none() && !config.wait_for_default_key {
        let name = &config.default_key;
        let mut problems = vec![format!(
            "the default key \"{name}\" has no active version in the token; create one with \
             `hallmark keys create --name {name}`, or set signing.wait_for_default_key = true \
             to start without it"
        )];
        // Objects of the key that exist but cannot be used explain why.
        let label = format!("name={name};");
        problems.extend(
            snapshot
                .problems()
                .iter()
                .filter(|problem| problem.contains(&label))
                .cloned(),
        );
        return Err(ServeError::Config(problems));
    }
    log_keys(config, &snapshot);
    let audit = match config.audit.clone() {
        Some(settings) => {
            let directory = settings.directory.clone();
            let log = tokio::task::spawn_blocking(move || AuditLog::open(settings))
                .await
                .map_err(|e| ServeError::Setup(e.to_string()))??;
            info!(directory = %directory.display(), next_seq = log.stats().last_seq + 1, "audit log open");
            Some(Arc::new(log))
        }
        None => {
            warn!("the audit log is disabled (audit.enabled = false); signatures are not recorded");
            None
        }
    };
    Ok(Prepared {
        signer,
        metrics,
        audit,
    })
}

/// Checks that the token offers the signing mechanism of every configured
/// algorithm and of every active version, so that a token without one
/// fails at start rather than at the first request.
async fn check_mechanisms(
    config: &Config,
    signer: &Signer,
    snapshot: &Snapshot,
) -> Result<(), HsmError> {
    let mut needed: Vec<(&KeyName, keys::algorithm::Algorithm)> = config
        .keys
        .iter()
        .map(|(name, policy)| (name, policy.algorithm))
        .collect();
    needed.extend(
        config
            .keys
            .keys()
            .filter_map(|name| snapshot.active(name).map(|v| (name, v.algorithm))),
    );
    let needed: Vec<(String, keys::algorithm::Algorithm)> = needed
        .into_iter()
        .map(|(name, algorithm)| (name.to_string(), algorithm))
        .collect();
    signer
        .pool()
        .run_with_token(move |token| {
            for (name, algorithm) in needed {
                let mechanism = keys::algorithm::mechanism_type(algorithm);
                if !token.offers(mechanism)? {
                    return Err(HsmError::MechanismMissing {
                        mechanism: mechanism.to_string(),
                        key: name,
                        algorithm: algorithm.as_str(),
                    });
                }
            }
            Ok(())
        })
        .await
}

fn log_keys(config: &Config, snapshot: &Snapshot) {
    for name in config.keys.keys() {
        match snapshot.active(name) {
            Some(version) => info!(
                key_name = %name,
                version = version.version,
                key_id = %version.key_id,
                bits = version.bits,
                "active key found"
            ),
            None => warn!(key_name = %name, "no active version in the token"),
        }
    }
}

/// Serves until `shutdown` completes with the signal that stops it.
async fn run(
    config: Arc<Config>,
    prepared: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = StopSignal> + Send + 'static,
) -> Result<(), ServeError> {
    let Prepared {
        signer,
        metrics,
        audit,
    } = prepared;
    let readiness = Arc::new(Readiness::default());
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    // A liveness probe checks this name. It stays SERVING while the
    // process runs, because a restart cannot bring back a token or a disk
    // that the service is already waiting for.
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    health
        .set_not_serving::<SignerServiceServer<SignerApi>>()
        .await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let refresher = tokio::spawn(refresh_loop(
        Arc::clone(&config),
        Arc::clone(&signer),
        Arc::clone(&metrics),
        (health.clone(), Arc::clone(&readiness)),
        stop_rx.clone(),
    ));
    // The final checkpoint waits until in-flight requests have drained,
    // so that it covers every record of a returned signature.
    let (drained_tx, drained_rx) = tokio::sync::watch::channel(false);
    let checkpoint_key = match &config.checkpoint_key {
        Some(key) => key.clone(),
        None => {
            if audit.is_some() {
                warn!(
                    key_name = %config.default_key,
                    "audit checkpoints are signed with the default key, which callers can also \
                     use to sign any digest; set audit.checkpoint_key to a key of its own"
                );
            }
            config.default_key.clone()
        }
    };
    // Without an audit log nothing can fail to be written, and the gauge
    // must not raise the alert that watches it.
    if audit.is_none() {
        metrics.audit_healthy.set(1);
    }
    let audit_tasks = audit.as_ref().map(|log| {
        let mut stop_checkpoints = drained_rx.clone();
        let checkpoints = {
            let log = Arc::clone(log);
            let sign = checkpoint_signer(Arc::clone(&signer), checkpoint_key.clone());
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop_checkpoints.wait_for(|stopped| *stopped).await;
                };
                log.run_checkpoints(sign, stopped).await
            })
        };
        let watcher = tokio::spawn(audit_watch_loop(
            Arc::clone(log),
            checkpoint_signer(Arc::clone(&signer), checkpoint_key.clone()),
            Arc::clone(&metrics),
            (health.clone(), Arc::clone(&readiness)),
            stop_rx.clone(),
        ));
        (checkpoints, watcher)
    });

    // Gauges that depend on the clock are computed at each scrape.
    let gauges = {
        let signer = Arc::clone(&signer);
        let metrics = Arc::clone(&metrics);
        let config = Arc::clone(&config);
        let audit = audit.clone();
        move || {
            update_session_gauges(&signer, &metrics);
            update_key_gauges(&config, &signer.snapshot(), &metrics);
            if let Some(log) = &audit {
                metrics.audit_healthy.set(i64::from(log.is_healthy()));
                metrics
                    .audit_last_seq
                    .set(i64::try_from(log.stats().last_seq).unwrap_or(i64::MAX));
            }
        }
    };
    let jwks = {
        let signer = Arc::clone(&signer);
        move || keys::jwks::document(&signer.snapshot(), SystemTime::now())
    };
    if config.rotation_enabled {
        tokio::spawn(rotation_loop(
            Arc::clone(&config),
            Arc::clone(&signer),
            stop_rx.clone(),
        ));
    }
    let mut metrics_stop = stop_rx.clone();
    let metrics_task = tokio::spawn(metrics::serve(
        listeners.metrics,
        Arc::clone(&metrics),
        gauges,
        jwks,
        async move {
            let _ = metrics_stop.wait_for(|stopped| *stopped).await;
        },
    ));

    // Kubelet probes reach this listener without TLS or the Unix socket;
    // it serves grpc.health.v1 and nothing else.
    let health_task = listeners.health.map(|listener| {
        let service = health_service.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await
        })
    });
    let api = SignerApi::new(
        Arc::clone(&signer),
        Arc::clone(&config),
        metrics,
        audit.clone(),
    );
    let in_flight = api.in_flight();
    let signer_service = SignerServiceServer::new(api)
        .max_decoding_message_size(config.max_request_bytes)
        .max_encoding_message_size(1024 * 1024);
    // Both reflection versions are served: v1alpha is what older grpcurl
    // releases and Python's grpcio-reflection client ask for.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection, reflection_alpha) = if config.reflection {
        (
            Some(
                reflection_builder()
                    .build_v1()
                    .map_err(|e| ServeError::Setup(e.to_string()))?,
            ),
            Some(
                reflection_builder()
                    .build_v1alpha()
                    .map_err(|e| ServeError::Setup(e.to_string()))?,
            ),
        )
    } else {
        (None, None)
    };
    // HTTP/2 lets one connection open streams without end, and each costs
    // memory before the policy runs, so streams per connection and header
    // sizes are bounded.
    let mut builder = Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESET_STREAMS));
    if let Some(files) = &config.tls {
        // Loading checked the files before the token was opened. This
        // reads them again, so a file changed since then is reported here.
        let tls = files
            .server_tls()
            .map_err(|problem| ServeError::Config(vec![format!("server.tls: {problem}")]))?;
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServeError::Setup(format!("invalid TLS settings: {e}")))?;
        info!(client_ca = %files.client_ca.display(), "serving gRPC over mutual TLS");
    }
    let router = builder
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_optional_service(reflection_alpha)
        .add_service(signer_service);

    let health_on_stop = health.clone();
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel();
    let stopping = async move {
        let signal = shutdown.await;
        info!(signal = signal.name(), "shutting down");
        health_on_stop
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health_on_stop
            .set_not_serving::<SignerServiceServer<SignerApi>>()
            .await;
        let _ = stop_tx.send(true);
        let _ = draining_tx.send(());
    };
    // Graceful shutdown waits for every client to close its connection, and
    // an idle HTTP/2 client may never do so. The drain deadline bounds it.
    let drain_timeout = config.drain_timeout;
    let drain_deadline = async move {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(drain_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    info!("serving");
    let serving = async move {
        match listeners.grpc {
            GrpcListener::Tcp(listener) => {
                router
                    .serve_with_incoming_shutdown(without_delay(listener), stopping)
                    .await
            }
            GrpcListener::Unix(listener) => {
                router
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopping)
                    .await
            }
        }
    };
    let served = tokio::select! {
        served = serving => served,
        () = drain_deadline => {
            warn!(timeout = ?drain_timeout,
                "drain deadline passed; giving up the work of requests in progress");
            Ok(())
        }
    };
    // Requests still running, such as a long batch, stop before their next
    // signature, and their audit records are written before the final
    // checkpoint, which then covers them.
    let unfinished = in_flight.stop(IN_FLIGHT_WAIT).await;
    if unfinished > 0 {
        warn!(
            requests = unfinished,
            wait = ?IN_FLIGHT_WAIT,
            "requests still in progress after the wait; the final checkpoint may not cover \
             their audit records, but none of them has returned a signature"
        );
    }
    refresher.abort();
    if let Some(task) = health_task {
        match task.await {
            Ok(Err(error)) => warn!(%error, "health listener failed"),
            Err(error) => warn!(%error, "health task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some((checkpoints, watcher)) = audit_tasks {
        // Serving has stopped, so the checkpoint task writes its final
        // checkpoint and returns.
        let _ = drained_tx.send(true);
        watcher.abort();
        match checkpoints.await {
            Ok(last) => log_final_checkpoint(last, signer.pool().fault()),
            Err(error) => warn!(%error, "audit checkpoint task failed"),
        }
    }
    drop(in_flight);
    if let Some(log) = audit {
        close_audit(log, unfinished == 0).await;
    }
    signer.pool().close().await;
    match metrics_task.await {
        Ok(Err(error)) => warn!(%error, "metrics server failed"),
        Err(error) => warn!(%error, "metrics task failed"),
        Ok(Ok(())) => {}
    }
    if let ListenAddr::Unix(path) = &config.listen {
        remove_own_socket(path);
    }
    served?;
    info!("stopped");
    Ok(())
}

/// Flushes and closes the audit log once every other holder has let go.
/// Sign tasks whose clients left before the drain deadline still hold it
/// until they have written their records, so this waits up to
/// [`AUDIT_CLOSE_WAIT`] for them.
async fn close_audit(mut log: Arc<AuditLog>, requests_done: bool) {
    // Once every request task has ended, no record can still arrive: only
    // idle connections hold the log, and every record is already synced.
    let wait = if requests_done {
        IDLE_AUDIT_CLOSE_WAIT
    } else {
        AUDIT_CLOSE_WAIT
    };
    let deadline = Instant::now() + wait;
    loop {
        match Arc::try_unwrap(log) {
            Ok(log) => {
                match log.close().await {
                    Ok(()) => info!("audit log closed"),
                    Err(error) => error!(%error, "closing the audit log failed"),
                }
                return;
            }
            Err(shared) if Instant::now() < deadline => {
                log = shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The writer still syncs every acknowledged record; only the
            // wait for queued ones is skipped.
            Err(_) if requests_done => {
                info!("idle connections still hold the audit log; every record is synced");
                return;
            }
            Err(_) => {
                warn!("the audit log is still in use at shutdown; not waiting for it");
                return;
            }
        }
    }
}

/// Logs the outcome of the final audit checkpoint. `token_fault` is the reason
/// the token cannot be used, if it cannot.
fn log_final_checkpoint(last: FinalCheckpoint, token_fault: Option<String>) {
    match last {
        FinalCheckpoint::Written { seq } => info!(seq, "final audit checkpoint written"),
        FinalCheckpoint::NotNeeded => {}
        FinalCheckpoint::Failed {
            error,
            first_unsealed,
            last_seq,
        } => match token_fault {
            Some(fault) => warn!(
                %fault,
                first_seq = first_unsealed,
                last_seq,
                "the final audit checkpoint could not be signed because the token is \
                 unavailable; the records since the last checkpoint are intact, and the first \
                 checkpoint after the next start covers them"
            ),
            None => warn!(
                %error,
                first_seq = first_unsealed,
                last_seq,
                "the final audit checkpoint failed; the first checkpoint after the next start \
                 covers the records since the last one"
            ),
        },
    }
}

/// Returns the function that signs audit checkpoints with the active
/// version of the default key.
fn checkpoint_signer(
    signer: Arc<Signer>,
    key: KeyName,
) -> impl FnMut(
    CheckpointStatement,
) -> Pin<Box<dyn Future<Output = Result<CheckpointSignature, AuditSignError>> + Send>>
+ Send
+ 'static {
    move |statement| {
        let signer = Arc::clone(&signer);
        let key = key.clone();
        Box::pin(async move {
            let snapshot = signer.snapshot();
            let active = snapshot
                .active(&key)
                .ok_or_else(|| format!("key {key} has no active version to sign a checkpoint"))?;
            let digest = statement.digest_for(active.algorithm);
            let signed = signer
                .sign(
                    &key,
                    digest,
                    SignatureEncoding::Der,
                    &Abandon::never_and_first(),
                )
                .await?;
            Ok(CheckpointSignature {
                key_id: signed.key.key_id.clone(),
                key_version: signed.key.version,
                algorithm: signed.key.algorithm,
                signature: signed.signature,
                encoding: signed.encoding.unwrap_or_default(),
            })
        })
    }
}

/// Whether the service can sign: the default key is ready and, when it is
/// on, the audit log can be written. Health reports SERVING only when both
/// hold.
#[derive(Debug)]
struct Readiness {
    keys: AtomicBool,
    audit: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            keys: AtomicBool::new(false),
            audit: AtomicBool::new(true),
        }
    }
}

impl Readiness {
    async fn publish(&self, health: &HealthReporter) {
        let ready = self.keys.load(Ordering::Acquire) && self.audit.load(Ordering::Acquire);
        set_health(health, ready).await;
    }
}

/// Watches the audit log's health. While writes fail it tries a checkpoint
/// each interval, so that the log recovers without waiting for a request,
/// and readiness follows the outcome.
async fn audit_watch_loop<S>(
    log: Arc<AuditLog>,
    mut sign: S,
    metrics: Arc<Metrics>,
    (health, readiness): (HealthReporter, Arc<Readiness>),
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: FnMut(
        CheckpointStatement,
    )
        -> Pin<Box<dyn Future<Output = Result<CheckpointSignature, AuditSignError>> + Send>>,
{
    let mut was_healthy = true;
    loop {
        let mut healthy = log.is_healthy();
        if !healthy {
            healthy = log.checkpoint(&mut sign).await.is_ok() && log.is_healthy();
        }
        if healthy != was_healthy {
            if healthy {
                info!("the audit log is writable again; signing resumes");
            } else {
                error!("the audit log cannot be written; signing stops until it can");
            }
            metrics.audit_healthy.set(i64::from(healthy));
            readiness.audit.store(healthy, Ordering::Release);
            readiness.publish(&health).await;
            was_healthy = healthy;
        }
        tokio::select! {
            _ = tokio::time::sleep(AUDIT_WATCH_INTERVAL) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Removes the socket file at `path` on shutdown, but only if it is still a
/// socket: another process may have replaced it with something else.
fn remove_own_socket(path: &std::path::Path) {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && let Err(error) = std::fs::remove_file(path) {
        warn!(%error, path = %path.display(), "cannot remove the socket file");
    }
}

/// Keeps readiness true to the token: re-reads the keys on an interval,
/// reconnects with capped exponential backoff while the token cannot be
/// opened, retries quickly while the default key is missing, and
/// re-evaluates at once whenever a request changes the snapshot or the
/// connection.
async fn refresh_loop(
    config: Arc<Config>,
    signer: Arc<Signer>,
    metrics: Arc<Metrics>,
    (health, readiness): (HealthReporter, Arc<Readiness>),
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let pool = Arc::clone(signer.pool());
    let mut link = pool.subscribe();
    let mut snapshots = signer.subscribe();
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut ready_since: Option<Instant> = None;
    let mut was_ready = false;
    // The first pass evaluates the snapshot that start-up read.
    let mut read_now = false;
    loop {
        // Reconnect only when the backoff has run out: a wake-up because a
        // request marked the token unavailable does not count as a retry.
        if read_now && let Some(fault) = pool.fault() {
            match pool.retry_connection().await {
                Ok(()) => read_now = true,
                Err(error) => debug!(%error, previous = %fault, "the token is still unavailable"),
            }
        }
        let mut read_failed = None;
        if read_now && pool.fault().is_none() {
            let generation = pool.generation();
            if let Err(error) = signer.refresh().await {
                // Requests may not reach the token while health reports
                // NOT_SERVING, so the loop recovers from a failed read
                // itself instead of waiting for a request to do so.
                if error.recovery() != Recovery::None
                    && let Err(recovery) = pool.recover(&error, generation).await
                {
                    debug!(error = %recovery, "recovering after a failed key read failed");
                }
                read_failed = Some(error.to_string());
            }
        }
        let fault = pool.fault().or_else(|| read_failed.clone());
        let snapshot = signer.snapshot();
        let default_key = &config.default_key;
        if let Some(problem) = snapshot.conflict(default_key) {
            warn!(%problem, "default key has conflicting objects");
        }
        let ready = fault.is_none()
            && snapshot.active(default_key).is_some()
            && snapshot.conflict(default_key).is_none();
        if ready != was_ready {
            readiness.keys.store(ready, Ordering::Release);
            readiness.publish(&health).await;
            metrics.token_ready.set(i64::from(ready));
            match (&fault, ready) {
                (_, true) => info!(key_name = %default_key, "default key found; serving"),
                (Some(fault), false) => {
                    warn!(%fault, "the token or its keys cannot be read; not serving");
                }
                (None, false) => {
                    warn!(key_name = %default_key, "default key has no active version; not serving");
                }
            }
            was_ready = ready;
        }
        // The backoff starts again only once the token has worked for a
        // while, so that a token that fails right after each reconnection
        // is retried less and less often.
        if ready {
            let since = *ready_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= RECONNECT_BACKOFF_MAX {
                backoff = RECONNECT_BACKOFF_MIN;
            }
        } else {
            ready_since = None;
        }
        let wait = if fault.is_some() {
            let wait = backoff;
            backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            wait
        } else if ready {
            config.refresh_interval
        } else {
            MISSING_KEY_RETRY
        };
        link.borrow_and_update();
        snapshots.borrow_and_update();
        read_now = tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            // A request saw the connection fail or come back, or re-read
            // the keys: evaluate again now, without another read.
            Ok(()) = link.changed() => false,
            Ok(()) = snapshots.changed() => false,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
    }
}

/// The connections of `listener`, each with Nagle's algorithm off.
///
/// tonic's own `tcp_nodelay` setting applies only to listeners that it
/// binds itself. With Nagle's algorithm on, a response written in two parts
/// waits for the client's delayed acknowledgement, up to 40 ms on Linux,
/// which capped a TCP client at about 25 requests a second.
fn without_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, "cannot turn off Nagle's algorithm on a connection");
        }
        Ok(stream)
    })
}

async fn set_health(health: &HealthReporter, ready: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    if ready {
        health.set_serving::<SignerServiceServer<SignerApi>>().await;
    } else {
        health
            .set_not_serving::<SignerServiceServer<SignerApi>>()
            .await;
    }
}

/// Runs the rotation schedule and destroys expired versions, once.
async fn run_rotation(config: &Config, signer: &Signer) -> Result<(), HsmError> {
    let policies = config.keys.clone();
    signer
        .pool()
        .run_with_token(move |token| {
            let now = SystemTime::now();
            keys::rotate(token, &policies, RotateMode::Scheduled, now)?;
            keys::destroy_expired(token, &policies, now)
        })
        .await?;
    Ok(())
}

/// Checks the rotation schedule on an interval and re-reads the token after
/// each check, so that this instance signs with the new version at once.
async fn rotation_loop(
    config: Arc<Config>,
    signer: Arc<Signer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.rotation_check_interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if let Err(error) = run_rotation(&config, &signer).await {
            warn!(%error, "scheduled key rotation failed; retrying at the next check");
            continue;
        }
        if let Err(error) = signer.refresh().await {
            warn!(%error, "re-reading keys after rotation failed");
        }
    }
}

fn update_key_gauges(config: &Config, snapshot: &Snapshot, metrics: &Metrics) {
    metrics.key_versions.reset();
    let now = SystemTime::now();
    let published: Vec<_> = snapshot.published(now).collect();
    for name in config.keys.keys() {
        if let Some(active) = snapshot.active(name) {
            metrics
                .key_age
                .with_label_values(&[name.as_str()])
                .set(signed_seconds(active.created_at, now));
            metrics
                .key_rotation_due
                .with_label_values(&[name.as_str()])
                .set(-signed_seconds(active.rotates_at, now));
        } else {
            // Without an active version the last values would mislead.
            let _ = metrics.key_age.remove_label_values(&[name.as_str()]);
            let _ = metrics
                .key_rotation_due
                .remove_label_values(&[name.as_str()]);
        }
    }
    for name in config.keys.keys() {
        for state in [
            KeyState::Next,
            KeyState::Active,
            KeyState::Retired,
            KeyState::Revoked,
        ] {
            let count = published
                .iter()
                .filter(|v| &v.name == name && v.state == state)
                .count();
            metrics
                .key_versions
                .with_label_values(&[name.as_str(), state.as_str()])
                .set(count as i64);
        }
    }
}

/// Returns `now - then` in seconds, negative when `then` is in the future.
fn signed_seconds(then: SystemTime, now: SystemTime) -> f64 {
    match now.duration_since(then) {
        Ok(elapsed) => elapsed.as_secs_f64(),
        Err(ahead) => -ahead.duration().as_secs_f64(),
    }
}

fn update_session_gauges(signer: &Signer, metrics: &Metrics) {
    let pool = signer.pool();
    let idle = pool.idle();
    metrics
        .sessions
        .with_label_values(&["idle"])
        .set(idle as i64);
    metrics
        .sessions
        .with_label_values(&["in_use"])
        .set(pool.size().saturating_sub(idle) as i64);
    let reconnects = pool.reconnects();
    let counted = metrics.token_reconnects.get();
    metrics
        .token_reconnects
        .inc_by(reconnects.saturating_sub(counted));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        use tokio_stream::StreamExt;

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("bound address");
        let mut incoming = Box::pin(without_delay(listener));
        let _client = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let accepted = incoming
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(accepted.nodelay().expect("reads TCP_NODELAY"));
    }
}
