//! Threads that make the session pool's blocking PKCS#11 calls.
//!
//! The pool keeps one thread per session. Each thread takes the oldest
//! queued job as soon as its last one returns, so a session does not wait
//! for the async runtime to schedule the next request before the token gets
//! it. With tokio's blocking pool, the request that waits next is woken on a
//! runtime thread first. That thread competes for a core with the other
//! sessions' signatures, so on an HSM-bound key the sessions sit idle
//! between requests.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tracing::error;

use super::HsmError;

/// A unit of work for a signing thread, with the claim that records whether
/// its caller still wants it.
pub(super) struct Job {
    claim: Arc<Claim>,
    run: Box<dyn FnOnce() + Send>,
}

impl Job {
    pub(super) fn new(claim: Arc<Claim>, run: impl FnOnce() + Send + 'static) -> Self {
        Self {
            claim,
            run: Box::new(run),
        }
    }
}

/// Given-up jobs that may stay queued before the queue drops them, unless
/// they are fewer than half of it.
const GIVEN_UP_SLACK: usize = 64;

/// The queue that the threads share.
pub(super) struct Threads {
    queue: Mutex<Queue>,
    ready: Condvar,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Jobs in `jobs` whose callers gave them up. They hold the request's
    /// data until dropped, and admission no longer counts them, so the
    /// queue drops them once they are many.
    given_up: usize,
    closed: bool,
}

impl Threads {
    /// Starts `count` threads named after `name`.
    pub(super) fn start(name: &str, count: usize) -> Result<Arc<Self>, HsmError> {
        let threads = Arc::new(Self {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                given_up: 0,
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
        self.enqueue(job, false)
    }

    /// Queues `job` ahead of the jobs already waiting.
    pub(super) fn submit_first(&self, job: Job) -> Result<(), HsmError> {
        self.enqueue(job, true)
    }

    fn enqueue(&self, job: Job, first: bool) -> Result<(), HsmError> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(HsmError::TaskFailed(
                "the signing threads have stopped".into(),
            ));
        }
        if first {
            queue.jobs.push_front(job);
        } else {
            queue.jobs.push_back(job);
        }
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// Gives up, for its caller, the queued job that `claim` belongs to.
    /// Returns false if a thread started the job first.
    pub(super) fn give_up(&self, claim: &Claim) -> bool {
        if !claim.give_up() {
            return false;
        }
        let mut queue = self.lock();
        queue.given_up += 1;
        if queue.given_up > GIVEN_UP_SLACK && queue.given_up * 2 > queue.jobs.len() {
            queue.jobs.retain(|job| !job.claim.is_given_up());
            queue.given_up = 0;
        }
        true
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
                        if job.claim.is_given_up() {
                            queue.given_up = queue.given_up.saturating_sub(1);
                            continue;
                        }
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
            if catch_unwind(AssertUnwindSafe(job.run)).is_err() {
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
    fn give_up(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn is_given_up(&self) -> bool {
        self.0.load(Ordering::Acquire) == GIVEN_UP
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn submit(threads: &Threads, job: impl FnOnce() + Send + 'static) {
        threads
            .submit(Job::new(Arc::default(), job))
            .expect("queue open");
    }

    /// Occupies the thread of a one-thread queue until the barrier is
    /// passed a second time.
    fn hold(threads: &Threads) -> Arc<std::sync::Barrier> {
        let gate = Arc::new(std::sync::Barrier::new(2));
        let inside = Arc::clone(&gate);
        submit(threads, move || {
            inside.wait();
            inside.wait();
        });
        gate.wait();
        gate
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

        let rejected = threads.submit(Job::new(Arc::default(), move || {
            tx.send(2).expect("receiver open")
        }));
        assert!(matches!(rejected, Err(HsmError::TaskFailed(_))));
        gate.wait();
        assert_eq!(rx.recv().expect("queued job ran"), 1);
        assert!(rx.recv().is_err(), "the rejected job must not run");
    }

    #[test]
    fn first_job_runs_before_queued_ones() {
        let threads = Threads::start("test-first", 1).expect("thread started");
        let gate = hold(&threads);
        let (tx, rx) = mpsc::channel();
        for n in 1..=3 {
            let tx = tx.clone();
            submit(&threads, move || tx.send(n).expect("receiver open"));
        }
        threads
            .submit_first(Job::new(Arc::default(), move || {
                tx.send(0).expect("receiver open")
            }))
            .expect("queue open");
        gate.wait();

        let ran: Vec<i32> = rx.iter().collect();
        assert_eq!(ran, [0, 1, 2, 3]);
        threads.close();
    }

    #[test]
    fn given_up_jobs_never_run() {
        let threads = Threads::start("test-given-up", 1).expect("thread started");
        let gate = hold(&threads);
        let (tx, rx) = mpsc::channel();
        let mut claims = Vec::new();
        for n in 0..10 {
            let claim = Arc::new(Claim::default());
            let tx = tx.clone();
            let job = Job::new(Arc::clone(&claim), move || {
                tx.send(n).expect("receiver open")
            });
            threads.submit(job).expect("queue open");
            claims.push(claim);
        }
        for claim in claims.iter().step_by(2) {
            assert!(threads.give_up(claim));
        }
        drop(tx);
        gate.wait();

        let ran: Vec<i32> = rx.iter().collect();
        assert_eq!(ran, [1, 3, 5, 7, 9]);
        threads.close();
    }

    #[test]
    fn queue_drops_given_up_jobs() {
        let threads = Threads::start("test-compact", 1).expect("thread started");
        let gate = hold(&threads);
        let data = Arc::new(());
        let queued = 1000;
        let mut claims = Vec::new();
        for _ in 0..queued {
            let claim = Arc::new(Claim::default());
            let payload = Arc::clone(&data);
            threads
                .submit(Job::new(Arc::clone(&claim), move || drop(payload)))
                .expect("queue open");
            claims.push(claim);
        }
        assert_eq!(Arc::strong_count(&data), 1 + queued);

        for claim in &claims[..queued - 10] {
            assert!(threads.give_up(claim));
        }
        // The queue keeps at most its slack of given-up jobs, or half of
        // what it holds, and drops their data with them.
        let remaining = threads.lock().jobs.len();
        assert!(remaining <= 10 + GIVEN_UP_SLACK, "{remaining} jobs remain");
        assert_eq!(Arc::strong_count(&data), 1 + remaining);

        gate.wait();
        threads.close();
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
