//! A fixed-size pool of PKCS#11 sessions for signing.
//!
//! A `cryptoki::Session` is `Send` but not `Sync`, and a PKCS#11 session runs
//! one operation at a time. The pool hands each request a session of its own
//! and runs the blocking call on tokio's blocking threads. The session goes
//! back to the pool when its guard drops, which happens on the blocking
//! thread after the call has returned, so a client that cancels its request
//! can never put back a session whose operation is still running.

use std::sync::{Arc, Mutex};

use cryptoki::session::Session;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use super::{Access, HsmError, Token};

/// A pool of read-only sessions on one token.
pub struct SessionPool {
    token: Arc<Token>,
    idle: Mutex<Vec<Session>>,
    permits: Arc<Semaphore>,
    size: usize,
}

impl SessionPool {
    /// Opens `size` sessions on `token`.
    pub fn open(token: Arc<Token>, size: usize) -> Result<Arc<Self>, HsmError> {
        let sessions = (0..size)
            .map(|_| token.open_session(Access::ReadOnly))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            token,
            idle: Mutex::new(sessions),
            permits: Arc::new(Semaphore::new(size)),
            size,
        }))
    }

    /// The token that the sessions belong to.
    pub fn token(&self) -> &Arc<Token> {
        &self.token
    }

    /// The number of sessions in the pool.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The number of sessions not lent out right now.
    pub fn idle(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits for a free session and runs `work` with it on a blocking thread.
    ///
    /// A session whose call failed because the session or token broke is
    /// closed instead of returned, and a fresh one replaces it on next use.
    pub async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> Result<T, HsmError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| HsmError::TaskFailed("session pool closed".into()))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let lent = PooledSession::take(pool, permit)?;
            let result = work(lent.session());
            if let Err(error) = &result
                && error.is_token_unavailable()
            {
                lent.discard();
            }
            result
        })
        .await
        .map_err(|e| HsmError::TaskFailed(e.to_string()))?
    }
}

/// A session lent out by the pool, with the permit that reserves it.
/// Dropping it returns the session to the pool.
pub struct PooledSession {
    pool: Arc<SessionPool>,
    session: Option<Session>,
    _permit: OwnedSemaphorePermit,
}

impl PooledSession {
    fn take(pool: Arc<SessionPool>, permit: OwnedSemaphorePermit) -> Result<Self, HsmError> {
        let idle = pool.idle.lock().map_err(|_| HsmError::Poisoned)?.pop();
        // The permit guarantees a slot, but a discarded session leaves the
        // slot empty until it is reopened here.
        let session = match idle {
            Some(session) => session,
            None => pool.token.open_session(Access::ReadOnly)?,
        };
        Ok(Self {
            pool,
            session: Some(session),
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
        match self.pool.idle.lock() {
            Ok(mut idle) => idle.push(session),
            Err(_) => warn!("session pool lock poisoned; dropping a session"),
        }
    }
}
