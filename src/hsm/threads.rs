//! Threads that make the session pool's blocking PKCS#11 calls.
//!
//! The pool keeps one thread per session. Each thread takes the oldest
//! queued job as soon as its last one returns, so a session never waits for
//! the async runtime to schedule the next request before the token gets it.
//! With tokio's blocking pool, the request that waits next is woken on a
//! runtime thread first, and that thread competes for a core with the
//! other sessions' signatures; on an HSM-bound key the sessions then sit
//! idle between requests.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tracing::error;

use super::HsmError;

/// A unit of work for a signing thread.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// The queue that the threads share.
pub(super) struct Threads {
    queue: Mutex<Queue>,
    ready: Condvar,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Threads {
    /// Starts `count` threads named after `name`.
    pub(super) fn start(name: &str, count: usize) -> Result<Arc<Self>, HsmError> {
        let threads = Arc::new(Self {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for index in 0..count {
            let shared = Arc::clone(&threads);
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || shared.serve())
                .map_err(|e| {
                    threads.close();
                    HsmError::TaskFailed(format!("cannot start a signing thread: {e}"))
                })?;
        }
        Ok(threads)
    }

    /// Queues `job` behind the jobs already waiting.
    pub(super) fn submit(&self, job: Job) -> Result<(), HsmError> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(HsmError::TaskFailed(
                "the signing threads have stopped".into(),
            ));
        }
        queue.jobs.push_back(job);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// Lets the threads finish the queued jobs, then end.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn serve(&self) {
        loop {
            let job = {
                let mut queue = self.lock();
                loop {
                    if let Some(job) = queue.jobs.pop_front() {
                        break job;
                    }
                    if queue.closed {
                        return;
                    }
                    queue = self
                        .ready
                        .wait(queue)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
            };
            // A job reports its result through a channel whose sender it
            // owns. If it panics, the sender drops and its caller gets an
            // error, and the thread goes on with the next job.
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                error!("a PKCS#11 call panicked; its request fails");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Jobs run outside the lock, so a panic cannot poison it while the
        // queue is in an inconsistent state.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether a queued job has started, or its caller gave it up first.
/// Exactly one of the two sides wins, so a job that started is always
/// waited for, and a job that was given up never reaches the token.
#[derive(Debug, Default)]
pub(super) struct Claim(AtomicU8);

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const GIVEN_UP: u8 = 2;

impl Claim {
    /// Marks the job started; false if its caller gave it up.
    pub(super) fn start(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Gives the job up; false if it has started already.
    pub(super) fn give_up(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn submit(threads: &Threads, job: impl FnOnce() + Send + 'static) {
        threads.submit(Box::new(job)).expect("queue open");
    }

    #[test]
    fn queue_runs_jobs_in_order() {
        let threads = Threads::start("test-order", 1).expect("thread started");
        let (tx, rx) = mpsc::channel();
        for n in 0..50 {
            let tx = tx.clone();
            submit(&threads, move || tx.send(n).expect("receiver open"));
        }
        let seen: Vec<i32> = (0..50).map(|_| rx.recv().expect("job ran")).collect();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        threads.close();
    }

    #[test]
    fn thread_survives_a_panicking_job() {
        let threads = Threads::start("test-panic", 1).expect("thread started");
        submit(&threads, || panic!("injected"));
        let (tx, rx) = mpsc::channel();
        submit(&threads, move || tx.send(7).expect("receiver open"));
        assert_eq!(rx.recv().expect("job ran"), 7);
        threads.close();
    }

    #[test]
    fn closed_queue_runs_only_queued_jobs() {
        let threads = Threads::start("test-close", 1).expect("thread started");
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new(std::sync::Barrier::new(2));
        let running = Arc::clone(&gate);
        submit(&threads, move || {
            running.wait();
        });
        let queued = tx.clone();
        submit(&threads, move || queued.send(1).expect("receiver open"));
        threads.close();

        let rejected = threads.submit(Box::new(move || tx.send(2).expect("receiver open")));
        assert!(matches!(rejected, Err(HsmError::TaskFailed(_))));
        gate.wait();
        assert_eq!(rx.recv().expect("queued job ran"), 1);
        assert!(rx.recv().is_err(), "the rejected job must not run");
    }

    #[test]
    fn claim_goes_to_one_side() {
        let started = Claim::default();
        assert!(started.start());
        assert!(!started.give_up());

        let given_up = Claim::default();
        assert!(given_up.give_up());
        assert!(!given_up.start());
    }
}
