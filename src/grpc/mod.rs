//! The gRPC front end: request validation, the `SignerService`
//! implementation, and the mapping of internal errors to gRPC statuses.

mod request;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, watch};
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, error, instrument, warn};

use crate::audit::{AuditLog, HashAlgorithm, SignEvent};
use crate::caller::{Decision, Identity, Policy};
use crate::config::Config;
use crate::hsm::{Abandon, HsmError};
use crate::keys::{KeyName, KeyState, KeyVersion, SignError, Signer};
use crate::metrics::Metrics;
use crate::pb;

pub use request::{
    BatchItem, BatchParams, SignParams, echoed_request_id, validate_batch, validate_sign,
};
pub use status::code_name;

/// Implements `hallmark.v1.SignerService`.
pub struct SignerApi {
    inner: Arc<Inner>,
}

/// The service's state, shared with the task that serves each Sign
/// request.
struct Inner {
    signer: Arc<Signer>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    policy: Policy,
    /// Admission permits: one per Sign request between admission and the
    /// response, so that a burst fails fast instead of growing a queue.
    pending: Semaphore,
    /// The audit log, or `None` when it is disabled.
    audit: Option<Arc<AuditLog>>,
    /// Set when the service stops waiting for requests in progress: work
    /// that has not reached the token yet is given up.
    stopping: watch::Sender<bool>,
    /// One permit per request task, from admission to its audit record,
    /// so that shutdown can wait for every record before the final
    /// checkpoint.
    tasks: Arc<Semaphore>,
}

/// Permits of [`Inner::tasks`]: far more than can ever run at once.
const TASK_SLOTS: u32 = 1 << 30;

/// The requests that a service is working on, for shutdown.
#[derive(Clone)]
pub struct InFlight {
    inner: Arc<Inner>,
}

impl InFlight {
    /// Gives up the work of every request in progress that has not reached
    /// the token, such as the rest of a batch, and waits up to `limit` for
    /// every request task to write its audit record and end. Returns the
    /// number of tasks still running at the limit.
    pub async fn stop(&self, limit: Duration) -> usize {
        self.inner.stopping.send_replace(true);
        let tasks = &self.inner.tasks;
        match tokio::time::timeout(limit, tasks.acquire_many(TASK_SLOTS)).await {
            Ok(Ok(all)) => {
                all.forget();
                tasks.close();
                0
            }
            _ => (TASK_SLOTS as usize).saturating_sub(tasks.available_permits()),
        }
    }
}

impl SignerApi {
    /// Creates the service.
    pub fn new(
        signer: Arc<Signer>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        audit: Option<Arc<AuditLog>>,
    ) -> Self {
        let policy = Policy::new(config.callers.clone());
        for caller in policy.caller_labels() {
            for outcome in ["allowed", "denied", "rate_limited"] {
                metrics
                    .caller_requests
                    .with_label_values(&[&caller, outcome]);
            }
        }
        Self {
            inner: Arc::new(Inner {
                pending: Semaphore::new(config.max_pending),
                stopping: watch::channel(false).0,
                tasks: Arc::new(Semaphore::new(TASK_SLOTS as usize)),
                signer,
                config,
                metrics,
                policy,
                audit,
            }),
        }
    }

    /// Runs a signing request's `work` to the end, and returns its result.
    ///
    /// While the client waits, the work runs in the handler's own task, so
    /// a request costs no extra task and no extra wake-up. tonic drops the
    /// handler's future when the client cancels or its deadline passes.
    /// The work then moves to a task of its own, which runs it to the end
    /// and records whatever the token did. The flag that `work` receives
    /// turns true once the client no longer waits for the response.
    async fn run_to_end<T, F, Fut>(&self, rpc: &'static str, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>, watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>> + Send + 'static,
    {
        let (gone_sender, client_gone) = watch::channel(false);
        let mut waiting = SetOnDrop(Some(gone_sender));
        let inner = Arc::clone(&self.inner);
        let slot = inner.task_slot()?;
        let running = work(inner, client_gone);
        let result = match (Detaching::new(async move {
            let _slot = slot;
            running.await
        }))
        .await
        {
            Ok(result) => result,
            Err(Panicked) => {
                error!(rpc, "the request's work panicked");
                Err(Status::internal("the request failed inside the service"))
            }
        };
        waiting.0 = None;
        result
    }

    /// Returns the handle that shutdown uses to end the requests in progress.
    pub fn in_flight(&self) -> InFlight {
        InFlight {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Inner {
    /// Returns the status for a request that would take the signatures in
    /// progress or queued over `server.max_pending`.
    fn over_admission_limit(&self) -> Status {
        Status::resource_exhausted(format!(
            "the service has {} signatures in progress or queued, its limit; retry with backoff",
            self.config.max_pending
        ))
    }

    /// Takes a task slot for a request, or refuses it once shutdown has
    /// stopped waiting for requests.
    fn task_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        Arc::clone(&self.tasks)
            .try_acquire_owned()
            .map_err(|_| Status::unavailable("the service is stopping; retry on another instance"))
    }

    /// Validates, authorizes, signs and records one Sign request.
    ///
    /// Runs to the end even when the client goes away, so that a signature
    /// that the token made is always recorded: as `CANCELLED`, with the
    /// key that made it, when the client was gone before the record was
    /// written.
    async fn sign(
        &self,
        request: Request<pb::SignRequest>,
        client_gone: watch::Receiver<bool>,
    ) -> Result<pb::SignResponse, Status> {
        let validated = validate_sign(request.get_ref(), &self.config);
        // Metric labels use the configured name, or "unknown" for anything else.
        let metric_key = match &validated {
            Ok(params) => params.key_name.as_str().to_owned(),
            Err(_) => label_for_raw_name(&request.get_ref().key_name, &self.config),
        };
        let mut outcome = Outcome::new(&self.metrics, metric_key);
        let identity = Identity::of(&request);
        let deadline = grpc_timeout(request.metadata()).map(|t| outcome.started + t);
        let abandon =
            Abandon::new(deadline, client_gone.clone()).or_when_stopping(self.stopping.subscribe());
        let mut caller = String::new();
        let result = match &validated {
            Ok(params) => {
                let span = tracing::Span::current();
                span.record("request_id", params.request_id.as_str());
                span.record("key_name", params.key_name.as_str());
                self.admit_and_sign(&identity, params, &abandon, &mut caller)
                    .await
            }
            Err(status) => Err(status.clone()),
        };
        // The audit record and the metric carry the same code, decided once.
        let client_left = *client_gone.borrow();
        let code = delivered(
            result
                .as_ref()
                .map_or_else(Status::code, |_| tonic::Code::Ok),
            client_left,
        );
        let result = self
            .record(result, |result| {
                let mut event = audit_event(request.get_ref(), &identity, &caller, result);
                event.outcome = code;
                vec![event]
            })
            .await;

        outcome.code = Some(match &result {
            Ok(_) => code,
            // The record could not be written, so the signature is withheld.
            Err(status) => delivered(status.code(), client_left),
        });
        result
    }

    /// Records the audit events that `events` builds for a request's
    /// result, with one sync, before its response is sent. A signature
    /// whose record cannot be written is withheld: the caller gets
    /// UNAVAILABLE instead, so that nothing signed goes unrecorded. Without
    /// an audit log the events are not built.
    async fn record<T>(
        &self,
        result: Result<T, Status>,
        events: impl FnOnce(&Result<T, Status>) -> Vec<SignEvent>,
    ) -> Result<T, Status> {
        let Some(audit) = &self.audit else {
            return result;
        };
        match audit.append_all(events(&result)).await {
            Ok(_) => result,
            Err(error) => {
                self.metrics.audit_write_failures.inc();
                debug!(%error, "audit record not written");
                match result {
                    Ok(_) => Err(Status::unavailable(
                        "the audit log cannot be written, so no signature is returned; \
                         retry with backoff",
                    )),
                    failed => failed,
                }
            }
        }
    }

    /// Checks the caller against the policy, and counts the decision.
    fn authorize(&self, identity: &Identity, key: &KeyName) -> Result<String, Status> {
        self.authorize_many(identity, key, 1)
    }

    /// Authorizes, admits and signs one validated request.
    async fn admit_and_sign(
        &self,
        identity: &Identity,
        params: &SignParams,
        abandon: &Abandon,
        caller: &mut String,
    ) -> Result<pb::SignResponse, Status> {
        // A caller that can sign any digest with a key can forge checkpoints
        // made with it, so the checkpoint key signs nothing else.
        if self.config.checkpoint_key.as_ref() == Some(&params.key_name) {
            return Err(Status::permission_denied(format!(
                "key {:?} signs audit checkpoints only",
                params.key_name.as_str()
            )));
        }
        *caller = self.authorize(identity, &params.key_name)?;
        let _permit = self
            .pending
            .try_acquire()
            .map_err(|_| self.over_admission_limit())?;
        // A request whose client has stopped waiting is not sent to the
        // HSM; the session pool checks again after its wait for a session.
        if let Err(HsmError::Abandoned { deadline }) = abandon.check() {
            return Err(if deadline {
                Status::deadline_exceeded("the request's deadline passed before signing began")
            } else {
                Status::cancelled("the client went away before signing began")
            });
        }
        self.sign_checked(params, abandon).await
    }

    async fn sign_checked(
        &self,
        params: &SignParams,
        abandon: &Abandon,
    ) -> Result<pb::SignResponse, Status> {
        let signed = self
            .signer
            .sign(
                &params.key_name,
                params.digest.clone(),
                params.encoding,
                abandon,
            )
            .await?;
        debug!(
            key_id = %signed.key.key_id,
            version = signed.key.version,
            "signed"
        );
        Ok(pb::SignResponse {
            signature: signed.signature,
            key: Some(key_version_message(&signed.key, false)),
            signed_at: Some(prost_types::Timestamp::from(signed.signed_at)),
            request_id: params.request_id.clone(),
            signature_encoding: signed.encoding.map_or(
                pb::SignatureEncoding::Unspecified,
                pb::SignatureEncoding::from,
            ) as i32,
        })
    }
}

impl Inner {
    /// Validates, authorizes, signs and records one SignBatch request.
    ///
    /// Every item gets an audit record, written together with one sync,
    /// and counts as one digest in the request metrics. Like
    /// [`Inner::sign`], it runs to the end when the client goes away.
    async fn sign_batch(
        &self,
        request: Request<pb::SignBatchRequest>,
        client_gone: watch::Receiver<bool>,
    ) -> Result<pb::SignBatchResponse, Status> {
        let started = Instant::now();
        let validated = validate_batch(request.get_ref(), &self.config);
        let metric_key = match &validated {
            Ok(params) => params.key_name.as_str().to_owned(),
            Err(_) => label_for_raw_name(&request.get_ref().key_name, &self.config),
        };
        let identity = Identity::of(&request);
        let deadline = grpc_timeout(request.metadata()).map(|t| started + t);
        let abandon =
            Abandon::new(deadline, client_gone.clone()).or_when_stopping(self.stopping.subscribe());
        let mut caller = String::new();
        let result = match &validated {
            Ok(params) => {
                tracing::Span::current().record("key_name", params.key_name.as_str());
                self.admit_and_sign_batch(
                    &identity,
                    request.get_ref(),
                    params,
                    &abandon,
                    &mut caller,
                )
                .await
            }
            Err(status) => Err(status.clone()),
        };
        let client_left = *client_gone.borrow();
        let result = self
            .record(result, |result| {
                batch_events(request.get_ref(), &identity, &caller, result, client_left)
            })
            .await;

        let codes: Vec<tonic::Code> = match &result {
            Ok(response) => response
                .results
                .iter()
                .map(|item| {
                    let code = item
                        .error
                        .as_ref()
                        .map_or(tonic::Code::Ok, |e| tonic::Code::from(e.code));
                    delivered(code, client_left)
                })
                .collect(),
            Err(status) => vec![status.code(); request.get_ref().items.len().max(1)],
        };
        for code in codes {
            self.metrics
                .sign_requests
                .with_label_values(&[metric_key.as_str(), code_name(code)])
                .inc();
        }
        self.metrics
            .sign_batch_duration
            .with_label_values(&[metric_key.as_str()])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Authorizes, admits and signs the valid items of a batch.
    async fn admit_and_sign_batch(
        &self,
        identity: &Identity,
        request: &pb::SignBatchRequest,
        params: &BatchParams,
        abandon: &Abandon,
        caller: &mut String,
    ) -> Result<pb::SignBatchResponse, Status> {
        if self.config.checkpoint_key.as_ref() == Some(&params.key_name) {
            return Err(Status::permission_denied(format!(
                "key {:?} signs audit checkpoints only",
                params.key_name.as_str()
            )));
        }
        let valid: Vec<&BatchItem> = params
            .items
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .collect();
        // Every item counts, valid or not, because every item costs an
        // audit record. There are at most signing.max_batch items.
        let count = u32::try_from(params.items.len()).unwrap_or(u32::MAX);
        *caller = self.authorize_many(identity, &params.key_name, count.max(1))?;
        // Each digest holds an admission permit, so that batches and single
        // requests share one bound on the work in progress.
        let _permits = self
            .pending
            .try_acquire_many(count.max(1))
            .map_err(|_| self.over_admission_limit())?;
        if let Err(HsmError::Abandoned { deadline }) = abandon.check() {
            return Err(if deadline {
                Status::deadline_exceeded("the request's deadline passed before signing began")
            } else {
                Status::cancelled("the client went away before signing began")
            });
        }
        let digests: Vec<Vec<u8>> = valid.iter().map(|item| item.digest.clone()).collect();
        // The key is checked against the hash algorithm even when no item
        // is valid, so that a mismatch always refuses the whole batch.
        let batch = self
            .signer
            .sign_batch(
                &params.key_name,
                params.digest_len,
                digests,
                params.encoding,
                abandon,
            )
            .await?;
        let mut signed = (!valid.is_empty()).then_some(batch);
        let mut outcomes = signed
            .as_mut()
            .map(|batch| std::mem::take(&mut batch.results).into_iter());
        let mut shared: Option<(Arc<SignError>, pb::ItemError)> = None;
        let results = params
            .items
            .iter()
            .zip(&request.items)
            .map(|(item, sent)| {
                let request_id = echoed_request_id(&sent.request_id);
                let outcome = match item {
                    Err(status) => Err(item_error(status)),
                    Ok(_) => match outcomes.as_mut().and_then(Iterator::next) {
                        Some(Ok(signature)) => Ok(signature),
                        Some(Err(error)) => Err(shared_item_error(&mut shared, error)),
                        None => Err(pb::ItemError {
                            code: tonic::Code::Internal as i32,
                            message: "the digest was not signed".into(),
                        }),
                    },
                };
                match outcome {
                    Ok(signature) => pb::SignBatchResult {
                        request_id,
                        signature,
                        error: None,
                    },
                    Err(error) => pb::SignBatchResult {
                        request_id,
                        signature: Vec::new(),
                        error: Some(error),
                    },
                }
            })
            .collect();
        let (key, signed_at, encoding) = match &signed {
            Some(batch) => (
                Some(key_version_message(&batch.key, false)),
                Some(prost_types::Timestamp::from(batch.signed_at)),
                batch.encoding,
            ),
            None => (None, None, None),
        };
        Ok(pb::SignBatchResponse {
            results,
            key,
            signed_at,
            signature_encoding: encoding.map_or(
                pb::SignatureEncoding::Unspecified,
                pb::SignatureEncoding::from,
            ) as i32,
        })
    }

    /// Checks the caller against the policy for `count` signatures, and
    /// counts the decision.
    fn authorize_many(
        &self,
        identity: &Identity,
        key: &KeyName,
        count: u32,
    ) -> Result<String, Status> {
        let decision = self.policy.check_many(identity, key, count, Instant::now());
        self.metrics
            .caller_requests
            .with_label_values(&[decision.caller(), decision.outcome()])
            .inc();
        match decision {
            Decision::Allowed { caller } => Ok(caller),
            Decision::Denied { caller } => {
                warn!(%identity, caller, key_name = %key, "caller denied");
                Err(Status::permission_denied(format!(
                    "this caller may not sign with key {:?}",
                    key.as_str()
                )))
            }
            Decision::RateLimited { caller } if count == 1 => Err(Status::resource_exhausted(
                format!("caller {caller:?} is over its rate limit; retry with backoff"),
            )),
            Decision::RateLimited { caller } => Err(Status::resource_exhausted(format!(
                "caller {caller:?} is over its rate limit for a batch of {count}; retry with \
                 backoff, or send smaller batches if the batch exceeds the caller's burst"
            ))),
        }
    }
}

/// Returns the code that the audit log and the metrics record for a
/// result with `code`. A signature made for a client that has gone was
/// never delivered, so it counts as `CANCELLED`. A refusal keeps its own
/// code: the service decided it whether or not the client still waits.
fn delivered(code: tonic::Code, client_left: bool) -> tonic::Code {
    if client_left && code == tonic::Code::Ok {
        tonic::Code::Cancelled
    } else {
        code
    }
}

/// Converts a failed item's status to its wire form.
fn item_error(status: &Status) -> pb::ItemError {
    pb::ItemError {
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}

/// Converts a signing error to an item error, once per shared error, so
/// that a failure shared by many items is logged once.
fn shared_item_error(
    last: &mut Option<(Arc<SignError>, pb::ItemError)>,
    error: Arc<SignError>,
) -> pb::ItemError {
    if let Some((seen, converted)) = last
        && Arc::ptr_eq(seen, &error)
    {
        return converted.clone();
    }
    let converted = item_error(&Status::from(error.as_ref()));
    *last = Some((error, converted.clone()));
    converted
}

/// Builds the audit records of a batch: one per item, or one for a batch
/// refused whole, with the call's code.
fn batch_events(
    request: &pb::SignBatchRequest,
    identity: &Identity,
    caller: &str,
    result: &Result<pb::SignBatchResponse, Status>,
    client_left: bool,
) -> Vec<SignEvent> {
    let caller = if caller.is_empty() {
        identity.to_string()
    } else {
        format!("{caller} {identity}")
    };
    let hash_algorithm = match pb::HashAlgorithm::try_from(request.hash_algorithm) {
        Ok(pb::HashAlgorithm::Sha256 | pb::HashAlgorithm::Unspecified) => {
            Some(HashAlgorithm::Sha256)
        }
        Ok(pb::HashAlgorithm::Sha384) => Some(HashAlgorithm::Sha384),
        _ => None,
    };
    let key = result.as_ref().ok().and_then(|r| r.key.as_ref());
    let event = |item: &pb::SignBatchItem, outcome: tonic::Code, signed: bool| SignEvent {
        caller: caller.clone(),
        key_name: match key {
            Some(key) => key.key_name.clone(),
            None => capped(&request.key_name),
        },
        key_id: key
            .filter(|_| signed)
            .map(|k| k.key_id.clone())
            .unwrap_or_default(),
        key_version: key.filter(|_| signed).map_or(0, |k| k.version),
        digest: item
            .digest
            .iter()
            .take(MAX_AUDITED_DIGEST_BYTES)
            .copied()
            .collect(),
        hash_algorithm,
        request_id: capped(&item.request_id),
        outcome: delivered(outcome, client_left),
    };
    // A batch refused whole gets one record, whatever its size, so that
    // refused batches cannot fill the audit disk faster than refused Sign
    // requests. It carries the first item's digest and request ID.
    let first = request.items.first().cloned().unwrap_or_default();
    match result {
        Ok(response) => request
            .items
            .iter()
            .zip(&response.results)
            .map(|(item, result)| {
                let code = result
                    .error
                    .as_ref()
                    .map_or(tonic::Code::Ok, |e| tonic::Code::from(e.code));
                event(item, code, result.error.is_none())
            })
            .collect(),
        Err(status) => vec![event(&first, status.code(), false)],
    }
}

#[tonic::async_trait]
impl pb::signer_service_server::SignerService for SignerApi {
    #[instrument(skip_all, fields(request_id, key_name))]
    async fn sign(
        &self,
        request: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        self.run_to_end("Sign", |inner, client_gone| async move {
            inner.sign(request, client_gone).await
        })
        .await
        .map(Response::new)
    }

    #[instrument(skip_all, fields(key_name))]
    async fn sign_batch(
        &self,
        request: Request<pb::SignBatchRequest>,
    ) -> Result<Response<pb::SignBatchResponse>, Status> {
        self.run_to_end("SignBatch", |inner, client_gone| async move {
            inner.sign_batch(request, client_gone).await
        })
        .await
        .map(Response::new)
    }

    #[instrument(skip_all)]
    async fn list_keys(
        &self,
        _request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let snapshot = self.inner.signer.snapshot();
        let keys = snapshot
            .published(SystemTime::now())
            .map(|version| key_version_message(version, true))
            .collect();
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }
}

/// A request's work, polled in the handler's task until the handler is
/// dropped. Dropped before the work finishes, it spawns the rest of the
/// work as a task of its own, in the request's span, so the work always
/// runs to the end.
struct Detaching<Fut: std::future::Future + Send + 'static> {
    work: Option<std::pin::Pin<Box<Fut>>>,
    span: tracing::Span,
}

/// The work panicked; the panic was caught and the work dropped.
#[derive(Debug)]
struct Panicked;

impl<Fut: std::future::Future + Send + 'static> Detaching<Fut> {
    fn new(work: Fut) -> Self {
        Self {
            work: Some(Box::pin(work)),
            span: tracing::Span::current(),
        }
    }
}

impl<Fut> std::future::Future for Detaching<Fut>
where
    Fut: std::future::Future + Send + 'static,
{
    type Output = Result<Fut::Output, Panicked>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        use std::task::Poll;
        // A finished future is not polled again, but if it were, it would
        // report nothing rather than panic.
        let Some(work) = self.work.as_mut() else {
            return Poll::Pending;
        };
        // A panic in the work fails this request with INTERNAL, as a
        // panicking task would, and leaves the connection open.
        let polled = catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                self.work = None;
                Poll::Ready(Ok(output))
            }
            Err(_) => {
                self.work = None;
                Poll::Ready(Err(Panicked))
            }
        }
    }
}

impl<Fut: std::future::Future + Send + 'static> Drop for Detaching<Fut> {
    fn drop(&mut self) {
        // Outside a runtime, as while the runtime itself shuts down,
        // nothing could run the work, and it is dropped with the handler.
        if let (Some(work), Ok(runtime)) = (self.work.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(
                async move {
                    work.await;
                }
                .instrument(self.span.clone()),
            );
        }
    }
}

/// Sets its flag when dropped, unless emptied first.
struct SetOnDrop(Option<watch::Sender<bool>>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.send_replace(true);
        }
    }
}

/// Records a Sign request in the metrics when dropped. A request dropped
/// before it has a code counts as `CANCELLED`.
struct Outcome<'a> {
    metrics: &'a Metrics,
    key_label: String,
    started: Instant,
    code: Option<tonic::Code>,
}

impl<'a> Outcome<'a> {
    fn new(metrics: &'a Metrics, key_label: String) -> Self {
        Self {
            metrics,
            key_label,
            started: Instant::now(),
            code: None,
        }
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        self.metrics
            .sign_requests
            .with_label_values(&[self.key_label.as_str(), code_name(code)])
            .inc();
        self.metrics
            .sign_duration
            .with_label_values(&[self.key_label.as_str()])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Builds the audit record of a Sign request from the request and the
/// service's response.
fn audit_event(
    request: &pb::SignRequest,
    identity: &Identity,
    caller: &str,
    result: &Result<pb::SignResponse, Status>,
) -> SignEvent {
    let key = result.as_ref().ok().and_then(|r| r.key.as_ref());
    // UNSPECIFIED means SHA-256, as in validation and in batch records.
    let hash_algorithm = match pb::HashAlgorithm::try_from(request.hash_algorithm) {
        Ok(pb::HashAlgorithm::Sha256 | pb::HashAlgorithm::Unspecified) => {
            Some(HashAlgorithm::Sha256)
        }
        Ok(pb::HashAlgorithm::Sha384) => Some(HashAlgorithm::Sha384),
        _ => None,
    };
    SignEvent {
        caller: if caller.is_empty() {
            identity.to_string()
        } else {
            format!("{caller} {identity}")
        },
        key_name: key.map_or_else(|| capped(&request.key_name), |k| k.key_name.clone()),
        key_id: key.map(|k| k.key_id.clone()).unwrap_or_default(),
        key_version: key.map_or(0, |k| k.version),
        digest: request
            .digest
            .iter()
            .take(MAX_AUDITED_DIGEST_BYTES)
            .copied()
            .collect(),
        hash_algorithm,
        request_id: capped(&request.request_id),
        outcome: match result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        },
    }
}

/// Maximum client-supplied text kept in an audit record, in characters.
/// Valid key names and request IDs are at most 128 bytes, so anything
/// longer was rejected. Keeping all of it would let a caller that may not
/// sign fill the audit disk faster.
const MAX_AUDITED_TEXT_CHARS: usize = 128;

/// Most digest bytes kept in an audit record: a SHA-384 digest.
const MAX_AUDITED_DIGEST_BYTES: usize = 48;

/// Returns `text` cut to [`MAX_AUDITED_TEXT_CHARS`] characters.
fn capped(text: &str) -> String {
    text.chars().take(MAX_AUDITED_TEXT_CHARS).collect()
}

/// Reads the client's deadline from the `grpc-timeout` header: an integer
/// of at most eight digits and a unit, `H`, `M`, `S`, `m`, `u` or `n`.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// Returns the metric label for a key name that failed validation.
fn label_for_raw_name(raw: &str, config: &Config) -> String {
    if raw.is_empty() {
        return config.default_key.as_str().to_owned();
    }
    match KeyName::parse(raw) {
        Ok(name) if config.keys.contains_key(&name) => name.as_str().to_owned(),
        _ => KeyName::UNKNOWN.to_owned(),
    }
}

/// Converts a key version to its wire form. The public key is included
/// only where requested, because Sign responses stay small.
pub fn key_version_message(version: &KeyVersion, with_public_key: bool) -> pb::KeyVersion {
    let (der, pem) = if with_public_key {
        (version.spki_der.clone(), version.spki_pem.clone())
    } else {
        (Vec::new(), String::new())
    };
    pb::KeyVersion {
        key_id: version.key_id.clone(),
        key_name: version.name.as_str().to_owned(),
        version: version.version,
        state: state_message(version.state) as i32,
        algorithm: pb::SignatureAlgorithm::from(version.algorithm) as i32,
        pss_salt_length: version
            .salt_len
            .and_then(|len| u32::try_from(len).ok())
            .unwrap_or(0),
        key_bits: version.bits,
        created_at: Some(version.created_at.into()),
        activates_at: Some(version.activates_at.into()),
        rotates_at: Some(version.rotates_at.into()),
        verify_until: Some(version.verify_until.into()),
        public_key_der: der,
        public_key_pem: pem,
        previous_key_id: version.previous_key_id.clone().unwrap_or_default(),
        next_key_id: version.next_key_id.clone().unwrap_or_default(),
    }
}

fn state_message(state: KeyState) -> pb::KeyState {
    match state {
        KeyState::Next => pb::KeyState::Next,
        KeyState::Active => pb::KeyState::Active,
        KeyState::Retired => pb::KeyState::Retired,
        KeyState::Revoked => pb::KeyState::Revoked,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::{Detaching, Panicked};

    #[tokio::test]
    async fn finished_work_returns_its_output() {
        let output = Detaching::new(async { 7 }).await;
        assert!(matches!(output, Ok(7)));
    }

    #[tokio::test]
    async fn panicking_work_is_reported() {
        let output = Detaching::new(async {
            panic!("injected");
        })
        .await;
        assert!(matches!(output, Err(Panicked)));
    }

    #[tokio::test]
    async fn dropped_work_runs_to_the_end() {
        let (started_tx, started) = oneshot::channel();
        let (release_tx, release) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        let handler = tokio::spawn(Detaching::new(async move {
            started_tx.send(()).expect("test waits");
            release.await.expect("test releases");
            done_tx.send(42).expect("test waits");
        }));
        started.await.expect("work started");
        // The handler goes away, as tonic drops it when the client
        // cancels; the work goes on in a task of its own.
        handler.abort();
        assert!(handler.await.expect_err("aborted").is_cancelled());
        release_tx.send(()).expect("work still waits");
        let finished = tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("work finished in time");
        assert_eq!(finished.expect("work sent its result"), 42);
    }
}
