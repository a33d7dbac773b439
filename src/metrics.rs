//! Prometheus metrics, served in text format on a separate HTTP port.
//!
//! Label values come only from configured key names and gRPC code names,
//! never from client input, so the number of series stays bounded.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

/// Histogram buckets in seconds, from 50 µs, because a fast key signs in
/// well under a millisecond, up to 10 s for a slow network HSM.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// The service's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    /// `hallmark_sign_requests_total{key_name,code}`.
    pub sign_requests: IntCounterVec,
    /// `hallmark_sign_duration_seconds{key_name}`: time from request to
    /// response inside the service.
    pub sign_duration: HistogramVec,
    /// `hallmark_sign_batch_duration_seconds{key_name}`: time from a
    /// SignBatch request to its response. Each of its digests also counts
    /// in `hallmark_sign_requests_total`.
    pub sign_batch_duration: HistogramVec,
    /// `hallmark_hsm_sign_duration_seconds{key_name}`: time of the C_Sign
    /// call, including the wait for a pooled session.
    pub hsm_sign_duration: HistogramVec,
    /// `hallmark_signature_self_check_failures_total{key_name}`.
    pub self_check_failures: IntCounterVec,
    /// `hallmark_token_ready`: 1 while the token is open and the default key
    /// is found.
    pub token_ready: IntGauge,
    /// `hallmark_token_reconnects_total`: connections to the token that
    /// were closed and opened again after a fault.
    pub token_reconnects: IntCounter,
    /// `hallmark_sessions{state}`: pooled sessions by `idle` and `in_use`.
    pub sessions: IntGaugeVec,
    /// `hallmark_key_versions{key_name,state}`: published key versions.
    pub key_versions: IntGaugeVec,
    /// `hallmark_key_age_seconds{key_name}`: age of the active version.
    pub key_age: GaugeVec,
    /// `hallmark_key_rotation_due_seconds{key_name}`: time until the active
    /// version is due to rotate; negative when overdue.
    pub key_rotation_due: GaugeVec,
    /// `hallmark_key_rotations_total{key_name}`: versions that became active.
    pub rotations: IntCounterVec,
    /// `hallmark_key_revocations_total{key_name}`: versions that were revoked.
    pub revocations: IntCounterVec,
    /// `hallmark_caller_requests_total{caller,outcome}`: policy decisions
    /// by configured caller name (or `local`, or `unknown`) and outcome
    /// (`allowed`, `denied`, `rate_limited`).
    pub caller_requests: IntCounterVec,
    /// `hallmark_audit_healthy`: 1 while the audit log can be written, or
    /// when it is turned off.
    pub audit_healthy: IntGauge,
    /// `hallmark_audit_write_failures_total`: Sign requests refused, or
    /// not recorded, because the audit log could not be written.
    pub audit_write_failures: IntCounter,
    /// `hallmark_audit_last_seq`: the sequence number of the last record.
    pub audit_last_seq: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let sign_requests = IntCounterVec::new(
            Opts::new(
                "hallmark_sign_requests_total",
                "Digests to sign, from Sign and SignBatch, by key name and gRPC code.",
            ),
            &["key_name", "code"],
        )?;
        let sign_duration = HistogramVec::new(
            HistogramOpts::new(
                "hallmark_sign_duration_seconds",
                "Time to answer a Sign request, from receipt to response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["key_name"],
        )?;
        let sign_batch_duration = HistogramVec::new(
            HistogramOpts::new(
                "hallmark_sign_batch_duration_seconds",
                "Time to answer a SignBatch request, from receipt to response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["key_name"],
        )?;
        let hsm_sign_duration = HistogramVec::new(
            HistogramOpts::new(
                "hallmark_hsm_sign_duration_seconds",
                "Time spent in the token's C_Sign, including the wait for a session.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["key_name"],
        )?;
        let self_check_failures = IntCounterVec::new(
            Opts::new(
                "hallmark_signature_self_check_failures_total",
                "Signatures from the token that failed verification and were discarded.",
            ),
            &["key_name"],
        )?;
        let token_ready = IntGauge::new(
            "hallmark_token_ready",
            "1 while the token is logged in and the default key is found, else 0.",
        )?;
        let token_reconnects = IntCounter::new(
            "hallmark_token_reconnects_total",
            "Times the token connection was closed and opened again after a fault.",
        )?;
        let sessions = IntGaugeVec::new(
            Opts::new("hallmark_sessions", "Pooled PKCS#11 sessions by state."),
            &["state"],
        )?;
        let key_versions = IntGaugeVec::new(
            Opts::new(
                "hallmark_key_versions",
                "Published key versions by key name and state.",
            ),
            &["key_name", "state"],
        )?;
        let key_age = GaugeVec::new(
            Opts::new(
                "hallmark_key_age_seconds",
                "Age of the active key version, by key name.",
            ),
            &["key_name"],
        )?;
        let key_rotation_due = GaugeVec::new(
            Opts::new(
                "hallmark_key_rotation_due_seconds",
                "Seconds until the active key version is due to rotate; negative when overdue.",
            ),
            &["key_name"],
        )?;
        let rotations = IntCounterVec::new(
            Opts::new(
                "hallmark_key_rotations_total",
                "Key versions seen to become active, by key name.",
            ),
            &["key_name"],
        )?;
        let revocations = IntCounterVec::new(
            Opts::new(
                "hallmark_key_revocations_total",
                "Key versions seen to be revoked, by key name.",
            ),
            &["key_name"],
        )?;
        let caller_requests = IntCounterVec::new(
            Opts::new(
                "hallmark_caller_requests_total",
                "Caller policy decisions by caller name and outcome.",
            ),
            &["caller", "outcome"],
        )?;
        let audit_healthy = IntGauge::new(
            "hallmark_audit_healthy",
            "1 while the audit log can be written or is turned off, 0 while signing is stopped by it.",
        )?;
        let audit_write_failures = IntCounter::new(
            "hallmark_audit_write_failures_total",
            "Sign requests whose audit record could not be written.",
        )?;
        let audit_last_seq = IntGauge::new(
            "hallmark_audit_last_seq",
            "Sequence number of the last audit record written.",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "hallmark_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        registry.register(Box::new(sign_requests.clone()))?;
        registry.register(Box::new(sign_duration.clone()))?;
        registry.register(Box::new(sign_batch_duration.clone()))?;
        registry.register(Box::new(hsm_sign_duration.clone()))?;
        registry.register(Box::new(self_check_failures.clone()))?;
        registry.register(Box::new(token_ready.clone()))?;
        registry.register(Box::new(token_reconnects.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        registry.register(Box::new(key_versions.clone()))?;
        registry.register(Box::new(key_age.clone()))?;
        registry.register(Box::new(key_rotation_due.clone()))?;
        registry.register(Box::new(rotations.clone()))?;
        registry.register(Box::new(revocations.clone()))?;
        registry.register(Box::new(caller_requests.clone()))?;
        registry.register(Box::new(audit_healthy.clone()))?;
        registry.register(Box::new(audit_write_failures.clone()))?;
        registry.register(Box::new(audit_last_seq.clone()))?;
        registry.register(Box::new(build_info))?;
        Ok(Self {
            registry,
            sign_requests,
            sign_duration,
            sign_batch_duration,
            hsm_sign_duration,
            self_check_failures,
            token_ready,
            token_reconnects,
            sessions,
            key_versions,
            key_age,
            key_rotation_due,
            rotations,
            revocations,
            caller_requests,
            audit_healthy,
            audit_write_failures,
            audit_last_seq,
        })
    }

    /// Pre-creates the request counters of a key name with the codes that
    /// most dashboards chart, so that rates start from zero.
    pub fn register_key(&self, key_name: &str) {
        for code in [
            "OK",
            "INVALID_ARGUMENT",
            "FAILED_PRECONDITION",
            "UNAVAILABLE",
            "INTERNAL",
        ] {
            self.sign_requests.with_label_values(&[key_name, code]);
        }
        self.self_check_failures.with_label_values(&[key_name]);
        self.rotations.with_label_values(&[key_name]);
        self.revocations.with_label_values(&[key_name]);
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Serves the admin HTTP endpoints on `listener` until `shutdown`
/// completes: `GET /metrics` and `GET /.well-known/jwks.json`.
///
/// `refresh` runs before each scrape to update gauges that are cheaper to
/// compute on demand, and `jwks` builds the key set document.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    refresh: impl Fn() + Send + Sync + 'static,
    jwks: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let refresh = Arc::new(refresh);
    let jwks = Arc::new(jwks);
    let router = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                let refresh = Arc::clone(&refresh);
                async move {
                    refresh();
                    match metrics.encode() {
                        Ok(text) => (
                            StatusCode::OK,
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(error) => {
                            tracing::error!(%error, "encoding metrics failed");
                            StatusCode::INTERNAL_SERVER_ERROR.into_response()
                        }
                    }
                }
            }),
        )
        .route(
            "/.well-known/jwks.json",
            get(move || {
                let jwks = Arc::clone(&jwks);
                async move {
                    (
                        StatusCode::OK,
                        [
                            (header::CONTENT_TYPE, "application/jwk-set+json"),
                            (header::CACHE_CONTROL, "max-age=60"),
                        ],
                        jwks().to_string(),
                    )
                }
            }),
        );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
