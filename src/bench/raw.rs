//! The raw configurations: `C_SignInit` and `C_Sign` on the token key
//! straight through PKCS#11, with no gRPC, policy or audit log in between,
//! and with or without the service's self-check after each signature.
//!
//! A run opens a number of sessions and runs one OS thread per session,
//! as the service's pool runs one signing thread per session.
//! The mechanism and the token input are the ones the service builds, from
//! [`crate::keys::algorithm`], and the self-check is the service's own
//! function, [`keys::check_signature`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use super::BenchError;
use super::measure::{self, Tally, Timed};
use crate::hsm::{Access, HsmError, Token};
use crate::keys::algorithm::{self, Algorithm, SignatureEncoding};
use crate::keys::{self, KeyVersion};
use crate::pb;

/// The work that a raw worker does after each `C_Sign`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterSign {
    /// Nothing, so that the figures are the token's alone.
    Nothing,
    /// The service's handling of every signature before it returns it:
    /// encoding as the bench's Sign requests ask, and verification with
    /// the public key ([`keys::check_signature`]).
    SelfCheck,
}

/// The key and mechanism parameters that every raw worker signs with.
#[derive(Clone, Copy)]
struct SignSpec {
    algorithm: Algorithm,
    salt_len: Option<usize>,
    private: ObjectHandle,
}

impl SignSpec {
    /// Builds the mechanism. It contains raw pointers and is not `Send`, so
    /// each thread builds its own, as the service does.
    fn mechanism(self) -> Result<Mechanism<'static>, BenchError> {
        algorithm::mechanism(self.algorithm, self.salt_len)
            .map_err(|error| BenchError::Key(error.to_string()))
    }

    fn sign(
        self,
        session: &Session,
        mechanism: &Mechanism,
        input: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        session
            .sign(mechanism, self.private, input)
            .map_err(|e| HsmError::pkcs11("C_Sign", e))
    }
}

/// Signs every digest once with the active version `key`, on `threads`
/// sessions of `token`, each on its own thread, and runs `after` after
/// each signature.
///
/// Before timing starts, each session signs one digest, which is not
/// counted, so that a key that cannot sign fails here with its PKCS#11
/// error. `claimed` counts the requests taken so far; it must start at 0.
pub fn run(
    token: &Token,
    key: &KeyVersion,
    threads: usize,
    after: AfterSign,
    digests: &[Vec<u8>],
    claimed: &Arc<AtomicUsize>,
) -> Result<Timed, BenchError> {
    let spec = SignSpec {
        algorithm: key.algorithm,
        salt_len: key.salt_len,
        private: key.private,
    };
    let inputs = digests
        .iter()
        .map(|digest| algorithm::token_input(spec.algorithm, digest))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| BenchError::Key(error.to_string()))?;
    let first = inputs
        .first()
        .ok_or_else(|| BenchError::Key("no digests to sign".into()))?;

    let mechanism = spec.mechanism()?;
    let mut sessions = Vec::with_capacity(threads);
    for _ in 0..threads {
        let session = token.open_session(Access::ReadOnly)?;
        spec.sign(&session, &mechanism, first)?;
        sessions.push(session);
    }

    let job = Job {
        spec,
        key,
        after,
        inputs: &inputs,
        digests,
        claimed,
    };
    // The workers and this thread start together, so the clock starts
    // when the first request can begin.
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = sessions
            .into_iter()
            .map(|session| {
                let (start, job) = (&start, &job);
                scope.spawn(move || worker(&session, job, start))
            })
            .collect();
        let bench_cpu = measure::process_cpu(std::process::id());
        start.wait();
        let started = Instant::now();
        let mut tally = Tally::default();
        let mut failure = None;
        for worker in workers {
            match worker.join() {
                Ok(Ok(done)) => tally.merge(done),
                Ok(Err(error)) => failure = Some(error),
                Err(_) => failure = Some(BenchError::WorkerPanicked),
            }
        }
        let elapsed = started.elapsed();
        let bench_cpu = cpu_since(bench_cpu)?;
        match failure {
            Some(error) => Err(error),
            None => Ok(Timed {
                elapsed,
                tally,
                bench_cpu,
                service_cpu: None,
            }),
        }
    })
}

/// The state that every worker of one run shares.
struct Job<'a> {
    spec: SignSpec,
    key: &'a KeyVersion,
    after: AfterSign,
    /// The token input for each digest, at the digest's index.
    inputs: &'a [Vec<u8>],
    digests: &'a [Vec<u8>],
    claimed: &'a AtomicUsize,
}

/// Signs digests on one session until every digest has been claimed.
///
/// The latency of a request covers `C_Sign` and, with
/// [`AfterSign::SelfCheck`], the check, which is also timed on its own.
fn worker(session: &Session, job: &Job, start: &Barrier) -> Result<Tally, BenchError> {
    let mechanism = job.spec.mechanism();
    // The bench's Sign requests leave the encoding unspecified, which the
    // service treats as this one.
    let encoding = SignatureEncoding::from(pb::SignatureEncoding::Unspecified);
    // Every thread reaches the barrier, even one that cannot build the
    // mechanism, so that the others are not left waiting.
    start.wait();
    let mechanism = mechanism?;
    let mut tally = Tally::default();
    loop {
        let index = job.claimed.fetch_add(1, Ordering::Relaxed);
        let (Some(input), Some(digest)) = (job.inputs.get(index), job.digests.get(index)) else {
            break;
        };
        let started = Instant::now();
        let mut result = job
            .spec
            .sign(session, &mechanism, input)
            .map_err(|error| error.to_string());
        if job.after == AfterSign::SelfCheck
            && let Ok(raw) = result
        {
            let checking = Instant::now();
            let checked = keys::check_signature(job.key, digest, raw, encoding);
            tally.record_check(checking.elapsed());
            result = checked.map_err(|error| error.to_string());
        }
        tally.record(started.elapsed(), result.err());
    }
    Ok(tally)
}

/// Returns the CPU time this process used since `before` was read.
fn cpu_since(before: std::io::Result<Duration>) -> Result<Duration, BenchError> {
    let read = |result: std::io::Result<Duration>| {
        result.map_err(|source| BenchError::Io {
            context: "cannot read /proc/self/stat".into(),
            source,
        })
    };
    let before = read(before)?;
    let after = read(measure::process_cpu(std::process::id()))?;
    Ok(after.saturating_sub(before))
}
