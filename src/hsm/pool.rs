//! A fixed-size pool of PKCS#11 sessions, and the token connection under
//! it, which the pool rebuilds when the token fails.
//!
//! A `cryptoki::Session` is `Send` but not `Sync`, and a PKCS#11 session runs
//! one operation at a time. The pool hands each request a session of its own
//! and runs the blocking call on one of its signing threads, one thread per
//! session (see [`super::threads`]). The session goes back to the pool when
//! its guard drops, which happens on the signing thread after the call has
//! returned, so a client that cancels its request can never put back a
//! session whose operation is still running. A session whose call failed is
//! closed rather than put back, because a failed operation may leave it in a
//! state that the next caller would inherit.
//!
//! # Generations
//!
//! Every connection to the token has a generation number. Object handles
//! are only meaningful within the connection that found them. Callers that
//! cache handles therefore pass their generation to
//! [`SessionPool::run_at`], which rejects work from an older generation:
//! on a newer connection the same handle numbers may name other objects.
//!
//! # Reconnecting
//!
//! [`SessionPool::reconnect`] first takes every session permit, so that no
//! call is in flight, then closes the sessions, finalizes the module and
//! opens it again. A module such as SoftHSM reads its token only when it is
//! initialized, so this is the only way to see a token that came back. While
//! the token cannot be opened the pool is disconnected: work fails at once
//! with [`HsmError::Disconnected`], and the owner retries the connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::threads::{Claim, Job, Threads};
use super::{Access, HsmError, Recovery, Token};
use crate::config::HsmConfig;

/// Maximum wait for in-flight calls to return before a reconnection. A
/// call that takes longer is stuck in the module, and finalizing the module
/// under it is unsafe, so the reconnection fails and is retried later.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest time between two reconnections that requests cause. A token
/// that fails again sooner is left to the owner's retries with backoff.
const MIN_RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// Maximum wait at shutdown for in-flight calls before the sessions are
/// closed. The requests that made them have passed the drain deadline
/// already, so this wait is short.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// When a request's work is no longer wanted: its deadline, and a flag
/// that turns true when its client goes away. Work that has not reached
/// the token by then is dropped instead of sent.
#[derive(Clone, Debug, Default)]
pub struct Abandon {
    deadline: Option<Instant>,
    gone: Option<watch::Receiver<bool>>,
    /// Turns true when the service stops waiting for requests in progress.
    stopping: Option<watch::Receiver<bool>>,
    /// Whether the work goes ahead of the queued requests.
    urgent: bool,
}

impl Abandon {
    /// Work that is wanted however long it takes, such as checkpoints.
    pub fn never() -> Self {
        Self::default()
    }

    /// Work that is wanted however long it takes and goes ahead of the
    /// requests queued for a session, such as audit checkpoints, which
    /// would otherwise miss their time limit whenever requests fill the
    /// queue.
    pub fn never_and_first() -> Self {
        Self {
            urgent: true,
            ..Self::default()
        }
    }

    /// Work wanted until `deadline`, and while `gone` stays false.
    pub fn new(deadline: Option<Instant>, gone: watch::Receiver<bool>) -> Self {
        Self {
            deadline,
            gone: Some(gone),
            stopping: None,
            urgent: false,
        }
    }

    /// Also gives the work up once `stopping` turns true, as when the
    /// service shuts down and its drain deadline has passed.
    pub fn or_when_stopping(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// Returns the reason to drop the work now, if there is one.
    pub fn check(&self) -> Result<(), HsmError> {
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(HsmError::Abandoned { deadline: true });
        }
        let set = |flag: &Option<watch::Receiver<bool>>| flag.as_ref().is_some_and(|f| *f.borrow());
        if set(&self.gone) {
            return Err(HsmError::Abandoned { deadline: false });
        }
        if set(&self.stopping) {
            return Err(HsmError::Stopping);
        }
        Ok(())
    }

    /// Completes when the work is no longer wanted; never, for
    /// [`Abandon::never`].
    async fn wait(&self) {
        let deadline = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = deadline => {}
            () = wait_set(self.gone.clone()) => {}
            () = wait_set(self.stopping.clone()) => {}
        }
    }
}

/// Completes when `flag` turns true; never, without a flag or once its
/// sender is gone.
async fn wait_set(flag: Option<watch::Receiver<bool>>) {
    if let Some(mut flag) = flag
        && flag.wait_for(|set| *set).await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
}

/// The state of the token connection, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// The generation of the current connection.
    pub generation: u64,
    /// The reason the token cannot be used, while it cannot.
    pub fault: Option<String>,
}

/// A pool of read-only sessions on one token.
pub struct SessionPool {
    config: HsmConfig,
    link: Mutex<Link>,
    permits: Arc<Semaphore>,
    size: usize,
    /// The threads that make the blocking calls, one per session.
    threads: Arc<Threads>,
    /// Serializes reconnections and re-logins.
    recovering: tokio::sync::Mutex<()>,
    status: watch::Sender<LinkStatus>,
    reconnects: AtomicU64,
    /// Set when the token rejected the PIN or reported it locked. Each
    /// further login would count towards locking it, so the pool stops
    /// trying until the service restarts with a corrected PIN.
    pin_rejected: AtomicBool,
    /// When the last reconnection succeeded.
    last_reconnect: Mutex<Option<Instant>>,
}

/// The current connection, or the reason there is none.
struct Link {
    token: Option<Arc<Token>>,
    idle: Vec<Session>,
    generation: u64,
}

impl SessionPool {
    /// Opens the token that `config` names and `size` sessions on it.
    ///
    /// Blocks: call it from a blocking thread.
    pub fn open(config: &HsmConfig, size: usize) -> Result<Arc<Self>, HsmError> {
        let token = Token::open(config)?;
        Self::with_token(config, token, size)
    }

    /// Opens `size` sessions on `token`, which was opened from `config`.
    pub fn with_token(
        config: &HsmConfig,
        token: Token,
        size: usize,
    ) -> Result<Arc<Self>, HsmError> {
        let idle = open_sessions(&token, size)?;
        let threads = Threads::start("hsm-session", size)?;
        let (status, _) = watch::channel(LinkStatus {
            generation: 1,
            fault: None,
        });
        Ok(Arc::new(Self {
            config: config.clone(),
            link: Mutex::new(Link {
                token: Some(Arc::new(token)),
                idle,
                generation: 1,
            }),
            permits: Arc::new(Semaphore::new(size)),
            size,
            threads,
            recovering: tokio::sync::Mutex::new(()),
            status,
            reconnects: AtomicU64::new(0),
            pin_rejected: AtomicBool::new(false),
            last_reconnect: Mutex::new(None),
        }))
    }

    /// The number of sessions in the pool.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The number of sessions not lent out right now.
    pub fn idle(&self) -> usize {
        self.permits.available_permits()
    }

    /// Returns the generation of the current connection.
    pub fn generation(&self) -> u64 {
        self.status.borrow().generation
    }

    /// Returns the reason the token cannot be used, or `None` while it can.
    pub fn fault(&self) -> Option<String> {
        self.status.borrow().fault.clone()
    }

    /// Watches the connection's generation and fault.
    pub fn subscribe(&self) -> watch::Receiver<LinkStatus> {
        self.status.subscribe()
    }

    /// Returns the number of reconnections that succeeded since the pool opened.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Waits for a free session and runs `work` with it on a blocking
    /// thread. Returns the generation of the connection it ran on.
    pub async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<(T, u64), HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> Result<T, HsmError> + Send + 'static,
    {
        self.run_inner(None, &Abandon::never(), work).await
    }

    /// Like [`SessionPool::run`], but only on the connection of
    /// `generation`: work that uses object handles found on an earlier
    /// connection fails with [`HsmError::StaleGeneration`] instead. Work
    /// that `abandon` drops while it waits for a session fails with
    /// [`HsmError::Abandoned`] and never reaches the token.
    pub async fn run_at<T, F>(
        self: &Arc<Self>,
        generation: u64,
        abandon: &Abandon,
        work: F,
    ) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> Result<T, HsmError> + Send + 'static,
    {
        self.run_inner(Some(generation), abandon, work)
            .await
            .map(|(value, _)| value)
    }

    /// Like [`SessionPool::run_at`], for work that makes several calls and
    /// keeps what the calls before a failure produced. `work` returns its
    /// value and the error that ended it early, if one did; the session is
    /// then closed rather than put back.
    pub async fn run_partial_at<T, F>(
        self: &Arc<Self>,
        generation: u64,
        abandon: &Abandon,
        work: F,
    ) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> (T, Option<HsmError>) + Send + 'static,
    {
        self.lend(Some(generation), abandon, move |session| {
            let (value, failure) = work(session);
            (Ok(value), failure.is_some())
        })
        .await
        .map(|(value, _)| value)
    }

    async fn run_inner<T, F>(
        self: &Arc<Self>,
        generation: Option<u64>,
        abandon: &Abandon,
        work: F,
    ) -> Result<(T, u64), HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> Result<T, HsmError> + Send + 'static,
    {
        self.lend(generation, abandon, move |session| {
            let result = work(session);
            let failed = result.is_err();
            (result, failed)
        })
        .await
    }

    /// Lends a session to `work` on a signing thread. `work` returns its
    /// result and whether the session must be closed instead of put back.
    ///
    /// The work waits in the threads' queue, not here: a thread that
    /// finishes a call takes the next job itself. Work never reaches the
    /// token if `abandon` drops it, or the caller drops this future, before
    /// a thread starts it. Work that has started is waited for, so its
    /// result is never lost unless the caller drops this future.
    async fn lend<T, F>(
        self: &Arc<Self>,
        generation: Option<u64>,
        abandon: &Abandon,
        work: F,
    ) -> Result<(T, u64), HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> (Result<T, HsmError>, bool) + Send + 'static,
    {
        // Fail fast while disconnected, rather than queue for a session
        // that cannot exist.
        if let Some(fault) = self.fault() {
            return Err(HsmError::Disconnected { reason: fault });
        }
        abandon.check()?;
        let claim = Arc::new(Claim::default());
        let (reply, mut result) = oneshot::channel();
        let job = {
            let (pool, claim, abandon) = (Arc::clone(self), Arc::clone(&claim), abandon.clone());
            let runtime = tokio::runtime::Handle::current();
            move || {
                let outcome = pool.lend_here(generation, &abandon, &claim, &runtime, work);
                if let Some(outcome) = outcome {
                    let _ = reply.send(outcome);
                }
            }
        };
        let job = Job::new(Arc::clone(&claim), job);
        if abandon.urgent {
            self.threads.submit_first(job)?;
        } else {
            self.threads.submit(job)?;
        }
        // A caller that drops this future, as a timeout around it does,
        // gives the job up as well, so that the token never signs for a
        // caller that has stopped waiting.
        let _dropped = GiveUpOnDrop(&self.threads, &claim);
        let finished = |outcome: Result<_, oneshot::error::RecvError>| {
            outcome
                .unwrap_or_else(|_| Err(HsmError::TaskFailed("the signing thread failed".into())))
        };
        tokio::select! {
            outcome = &mut result => return finished(outcome),
            () = abandon.wait() => {}
        }
        if self.threads.give_up(&claim) {
            return Err(abandon
                .check()
                .err()
                .unwrap_or(HsmError::Abandoned { deadline: true }));
        }
        finished(result.await)
    }

    /// The signing thread's side of [`SessionPool::lend`]: waits for a
    /// session permit, claims the job and runs it. Returns `None` if the
    /// caller gave the job up first, because then no caller reads a result.
    fn lend_here<T, F>(
        self: Arc<Self>,
        generation: Option<u64>,
        abandon: &Abandon,
        claim: &Claim,
        runtime: &tokio::runtime::Handle,
        work: F,
    ) -> Option<Result<(T, u64), HsmError>>
    where
        F: FnOnce(&Session) -> (Result<T, HsmError>, bool),
    {
        // Every thread holds at most one permit, so there is one free for
        // this thread unless a reconnection or rotation holds some.
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => {
                return claim
                    .start()
                    .then(|| Err(HsmError::TaskFailed("session pool closed".into())));
            }
            Err(TryAcquireError::NoPermits) => {
                let permits = Arc::clone(&self.permits);
                let waited = runtime.block_on(async {
                    tokio::select! {
                        permit = permits.acquire_owned() => Some(permit),
                        () = abandon.wait() => None,
                    }
                });
                match waited {
                    Some(Ok(permit)) => permit,
                    Some(Err(_)) => {
                        return claim
                            .start()
                            .then(|| Err(HsmError::TaskFailed("session pool closed".into())));
                    }
                    // The caller gives the job up as well, unless it has
                    // been claimed, which only this thread does.
                    None => {
                        return claim.start().then(|| {
                            Err(abandon
                                .check()
                                .err()
                                .unwrap_or(HsmError::Abandoned { deadline: true }))
                        });
                    }
                }
            }
        };
        if !claim.start() {
            return None;
        }
        // The job may have waited in the queue past its deadline.
        if let Err(abandoned) = abandon.check() {
            return Some(Err(abandoned));
        }
        let outcome = PooledSession::take(self, permit, generation).map(|lent| {
            let (result, discard) = work(lent.session());
            let generation = lent.generation;
            if discard {
                lent.discard();
            }
            result.map(|value| (value, generation))
        });
        Some(outcome.and_then(|result| result))
    }

    /// Runs `work` with the token itself, for rare administrative work such
    /// as rotation, while holding one session permit so that a
    /// reconnection waits for it.
    pub async fn run_with_token<T, F>(self: &Arc<Self>, work: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Token) -> Result<T, HsmError> + Send + 'static,
    {
        if let Some(fault) = self.fault() {
            return Err(HsmError::Disconnected { reason: fault });
        }
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| HsmError::TaskFailed("session pool closed".into()))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let token = pool
                .lock_link()?
                .token
                .clone()
                .ok_or_else(|| pool.disconnected())?;
            work(&token)
        })
        .await
        .map_err(|e| HsmError::TaskFailed(e.to_string()))?
    }

    /// Recovers from `error`, which work on the connection of `generation`
    /// returned, as its [`Recovery`] class requires: logs in again, or
    /// reconnects. Several callers that saw the same failure cause one
    /// recovery: a caller whose generation is already out of date returns
    /// at once.
    pub async fn recover(
        self: &Arc<Self>,
        error: &HsmError,
        generation: u64,
    ) -> Result<(), HsmError> {
        match error.recovery() {
            Recovery::Relogin => {
                let _guard = self.recovering.lock().await;
                if self.generation() != generation {
                    return self.connected();
                }
                match self.relogin().await {
                    Ok(()) => Ok(()),
                    Err(relogin) => {
                        warn!(error = %relogin, "logging in again failed; reconnecting to the token");
                        self.reconnect_locked().await
                    }
                }
            }
            Recovery::Reconnect => self.reconnect(generation).await,
            Recovery::None | Recovery::Retry | Recovery::Lookup => self.connected(),
        }
    }

    /// Closes the connection of `generation` and opens the token again,
    /// unless another caller already replaced that connection.
    ///
    /// A token that fails again within [`MIN_RECONNECT_INTERVAL`] of a
    /// reconnection is not reconnected at once: the pool is marked
    /// unavailable instead, so that health turns NOT_SERVING and the
    /// owner's retries with backoff take over, rather than every request
    /// reconnecting.
    pub async fn reconnect(self: &Arc<Self>, generation: u64) -> Result<(), HsmError> {
        let _guard = self.recovering.lock().await;
        if self.generation() != generation && self.fault().is_none() {
            return Ok(());
        }
        let recent = self
            .last_reconnect
            .lock()
            .map_err(|_| HsmError::Poisoned)?
            .is_some_and(|at| at.elapsed() < MIN_RECONNECT_INTERVAL);
        if recent && self.fault().is_none() {
            let reason = format!(
                "the token failed again within {} s of a reconnection",
                MIN_RECONNECT_INTERVAL.as_secs()
            );
            warn!(%reason, "not reconnecting at once; retrying with backoff");
            self.status
                .send_modify(|status| status.fault = Some(reason.clone()));
            return Err(HsmError::Disconnected { reason });
        }
        self.reconnect_locked().await
    }

    /// Closes the connection and opens the token again, however recently
    /// that was last done. For the owner's retries, which have their own
    /// backoff.
    pub async fn retry_connection(self: &Arc<Self>) -> Result<(), HsmError> {
        let _guard = self.recovering.lock().await;
        self.reconnect_locked().await
    }

    /// Reconnects. The caller must have locked `recovering`.
    async fn reconnect_locked(self: &Arc<Self>) -> Result<(), HsmError> {
        if self.pin_rejected.load(Ordering::Acquire) {
            return Err(self.disconnected());
        }
        let size = u32::try_from(self.size).unwrap_or(u32::MAX);
        let permits = Arc::clone(&self.permits);
        let drained =
            match tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many_owned(size)).await {
                Ok(Ok(drained)) => drained,
                Ok(Err(_)) => return Err(HsmError::TaskFailed("session pool closed".into())),
                Err(_) => {
                    // A call stuck in the module blocks the reconnection. The
                    // token is failing, so stop serving; the owner tries again
                    // once the call has returned.
                    let reason = format!(
                        "PKCS#11 calls still running after {} s; not reconnecting under them",
                        DRAIN_TIMEOUT.as_secs()
                    );
                    warn!(%reason, "cannot reconnect to the token yet");
                    self.status
                        .send_modify(|status| status.fault = Some(reason.clone()));
                    return Err(HsmError::Disconnected { reason });
                }
            };
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _drained = drained;
            pool.replace_connection()
        })
        .await
        .map_err(|e| HsmError::TaskFailed(e.to_string()))?
    }

    /// Closes the current connection and opens a new one. Every permit is
    /// held, so no session is lent out.
    fn replace_connection(&self) -> Result<(), HsmError> {
        let mut link = self.lock_link()?;
        let old = link.token.take();
        let sessions = std::mem::take(&mut link.idle);
        let generation = link.generation + 1;
        link.generation = generation;
        drop(link);

        for session in sessions {
            // The token may be gone; a failed close loses nothing.
            let _ = session.close();
        }
        if let Some(token) = old {
            match Arc::try_unwrap(token) {
                Ok(token) => {
                    if let Err(error) = token.close() {
                        self.finalize_again(&error);
                    }
                }
                // Finalizing under another user of the context would break
                // it, and initializing again without finalizing would not
                // reread the token.
                Err(_) => warn!("the token is still in use; opening it without finalizing"),
            }
        }

        let opened = Token::open(&self.config).and_then(|token| {
            let sessions = open_sessions(&token, self.size)?;
            Ok((token, sessions))
        });
        let mut link = self.lock_link()?;
        match opened {
            Ok((token, sessions)) => {
                link.token = Some(Arc::new(token));
                link.idle = sessions;
                drop(link);
                self.reconnects.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.last_reconnect.lock() {
                    *last = Some(Instant::now());
                }
                info!(generation, "reconnected to the token");
                self.status.send_replace(LinkStatus {
                    generation,
                    fault: None,
                });
                Ok(())
            }
            Err(error) => {
                drop(link);
                let error = match error {
                    HsmError::PinIncorrect { .. } | HsmError::PinLocked { .. } => {
                        self.pin_rejected.store(true, Ordering::Release);
                        error!(%error, "the token rejected the PIN; not logging in again until restart");
                        HsmError::TaskFailed(format!(
                            "{error}; restart the service once the PIN is corrected"
                        ))
                    }
                    other => other,
                };
                // The owner retries with backoff; only the first failure
                // of an outage is worth a warning.
                if self.fault().is_none() {
                    warn!(%error, "cannot open the token; signing fails until it can");
                } else {
                    debug!(%error, "the token still cannot be opened");
                }
                self.status.send_replace(LinkStatus {
                    generation,
                    fault: Some(error.to_string()),
                });
                Err(HsmError::Disconnected {
                    reason: error.to_string(),
                })
            }
        }
    }

    /// Finalizes the module once more after `C_Finalize` failed with
    /// `error`, so that the next connection reads the token afresh. If
    /// that fails too, the next connection uses the module as it is.
    fn finalize_again(&self, error: &HsmError) {
        warn!(%error, "finalizing the module failed; finalizing it again before reconnecting");
        if let Err(again) = super::finalize_module(&self.config.module) {
            warn!(
                error = %again,
                "finalizing the module failed again; reconnecting to the module as it is, \
                 which may not read the token afresh"
            );
        }
    }

    /// Waits for in-flight calls, then closes every session and finalizes
    /// the module. Work submitted afterwards fails with
    /// [`HsmError::Disconnected`].
    pub async fn close(self: &Arc<Self>) {
        let _guard = self.recovering.lock().await;
        let size = u32::try_from(self.size).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            CLOSE_WAIT,
            Arc::clone(&self.permits).acquire_many_owned(size),
        )
        .await;
        let Ok(Ok(drained)) = drained else {
            warn!("PKCS#11 calls still running at shutdown; leaving the token open");
            return;
        };
        let pool = Arc::clone(self);
        let closed = tokio::task::spawn_blocking(move || {
            let _drained = drained;
            let (token, sessions) = match pool.link.lock() {
                Ok(mut link) => (link.token.take(), std::mem::take(&mut link.idle)),
                Err(_) => return None,
            };
            pool.status
                .send_modify(|status| status.fault = Some("the service is stopping".into()));
            for session in sessions {
                let _ = session.close();
            }
            let connected = token.is_some();
            if let Some(token) = token.and_then(|token| Arc::try_unwrap(token).ok())
                && let Err(error) = token.close()
            {
                warn!(%error, "finalizing the module at shutdown failed");
            }
            Some(connected)
        })
        .await;
        match closed {
            Ok(Some(true)) => info!("token sessions closed"),
            Ok(Some(false)) => info!("the token was not connected; no sessions to close"),
            Ok(None) => warn!("session pool lock poisoned; the token's sessions were not closed"),
            Err(error) => warn!(%error, "closing the token sessions failed"),
        }
    }

    /// Logs in again on the connection's login session. Object handles may
    /// not survive a lost login, so the generation moves on.
    async fn relogin(self: &Arc<Self>) -> Result<(), HsmError> {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let token = pool
                .lock_link()?
                .token
                .clone()
                .ok_or_else(|| pool.disconnected())?;
            token.with_admin_session(|session| {
                match session.login(UserType::User, Some(&pool.config.pin.to_auth_pin())) {
                    Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
                    Err(error) => Err(HsmError::pkcs11("C_Login", error)),
                }
            })?;
            let mut link = pool.lock_link()?;
            link.generation += 1;
            let generation = link.generation;
            drop(link);
            info!(generation, "logged in to the token again");
            pool.status.send_replace(LinkStatus {
                generation,
                fault: None,
            });
            Ok(())
        })
        .await
        .map_err(|e| HsmError::TaskFailed(e.to_string()))?
    }

    fn connected(&self) -> Result<(), HsmError> {
        match self.fault() {
            Some(reason) => Err(HsmError::Disconnected { reason }),
            None => Ok(()),
        }
    }

    fn disconnected(&self) -> HsmError {
        HsmError::Disconnected {
            reason: self
                .fault()
                .unwrap_or_else(|| "the token is not connected".into()),
        }
    }

    fn lock_link(&self) -> Result<std::sync::MutexGuard<'_, Link>, HsmError> {
        self.link.lock().map_err(|_| HsmError::Poisoned)
    }
}

impl Drop for SessionPool {
    fn drop(&mut self) {
        self.threads.close();
    }
}

/// Gives a queued job up when dropped. Once the job has started, or its
/// caller has given it up already, dropping it changes nothing.
struct GiveUpOnDrop<'a>(&'a Threads, &'a Claim);

impl Drop for GiveUpOnDrop<'_> {
    fn drop(&mut self) {
        self.0.give_up(self.1);
    }
}

fn open_sessions(token: &Token, size: usize) -> Result<Vec<Session>, HsmError> {
    (0..size)
        .map(|_| token.open_session(Access::ReadOnly))
        .collect()
}

/// A session lent out by the pool, with the permit that reserves it.
/// Dropping it returns the session to the pool, unless the connection was
/// replaced in the meantime.
pub struct PooledSession {
    pool: Arc<SessionPool>,
    session: Option<Session>,
    generation: u64,
    _permit: OwnedSemaphorePermit,
}

impl PooledSession {
    fn take(
        pool: Arc<SessionPool>,
        permit: OwnedSemaphorePermit,
        expected: Option<u64>,
    ) -> Result<Self, HsmError> {
        let (idle, token, generation) = {
            let mut link = pool.lock_link()?;
            if let Some(expected) = expected
                && expected != link.generation
            {
                return Err(HsmError::StaleGeneration {
                    expected,
                    current: link.generation,
                });
            }
            (link.idle.pop(), link.token.clone(), link.generation)
        };
        // The permit guarantees a slot, but a discarded session leaves the
        // slot empty until it is reopened here.
        let session = match (idle, token) {
            (Some(session), _) => session,
            (None, Some(token)) => token.open_session(Access::ReadOnly)?,
            (None, None) => return Err(pool.disconnected()),
        };
        Ok(Self {
            pool,
            session: Some(session),
            generation,
            _permit: permit,
        })
    }

    /// The lent session.
    pub fn session(&self) -> &Session {
        // `session` is only `None` after `discard`, which consumes the guard.
        self.session
            .as_ref()
            .expect("session present until discard")
    }

    /// Closes the session instead of returning it to the pool.
    pub fn discard(mut self) {
        if let Some(session) = self.session.take()
            && let Err(error) = session.close()
        {
            warn!(%error, "closing a failed session also failed");
        }
    }
}

impl Drop for PooledSession {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        match self.pool.link.lock() {
            Ok(mut link) if link.generation == self.generation => link.idle.push(session),
            // The connection was replaced while this session was out; it
            // belongs to the old one.
            Ok(_) => drop(session),
            Err(_) => warn!("session pool lock poisoned; dropping a session"),
        }
    }
}
