//! The gRPC side of a service configuration: concurrent clients that send
//! Sign or SignBatch requests until every digest has been signed.
//!
//! Each client is a task with a channel of its own, so each has its own
//! HTTP/2 connection and the clients do not queue behind one connection's
//! dispatch task. Several processes that each call the sidecar, or one
//! process with a channel per worker, look the same to the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::BenchError;
use super::measure::{self, Tally, Timed};
use crate::grpc::code_name;
use crate::pb;
use crate::pb::signer_service_client::SignerServiceClient;

/// The requests that the clients send.
#[derive(Clone, Debug)]
pub enum Calls {
    /// One Sign request per digest. The template has no digest.
    Sign(pb::SignRequest),
    /// SignBatch requests of `size` digests, the last one possibly fewer.
    /// The template has no items.
    SignBatch {
        /// The request without its items.
        template: pb::SignBatchRequest,
        /// Digests per request.
        size: usize,
    },
    /// One health check per digest, which signs nothing. A SERVING status
    /// counts as the digest's result.
    HealthCheck,
}

impl Calls {
    /// Returns the gRPC method's name.
    pub fn rpc(&self) -> &'static str {
        match self {
            Self::Sign(_) => "Sign",
            Self::SignBatch { .. } => "SignBatch",
            Self::HealthCheck => "Health/Check",
        }
    }

    /// Returns the number of digests that one request takes.
    fn size(&self) -> usize {
        match self {
            Self::Sign(_) | Self::HealthCheck => 1,
            Self::SignBatch { size, .. } => (*size).max(1),
        }
    }
}

/// Sends every digest over `channels`, one client task per channel, and
/// measures the requests.
///
/// Before timing starts, each client sends one request with the first
/// digest alone, which is not counted, so that a request the service
/// rejects fails here with its status. `claimed` counts the digests taken
/// so far; it must start at 0. `service_pid` is the process whose CPU time
/// is measured.
pub async fn drive(
    channels: Vec<Channel>,
    calls: Calls,
    digests: Arc<Vec<Vec<u8>>>,
    claimed: Arc<AtomicUsize>,
    service_pid: u32,
) -> Result<Timed, BenchError> {
    let first = digests
        .first()
        .ok_or_else(|| BenchError::Key("no digests to sign".into()))?;
    let mut clients = Vec::with_capacity(channels.len());
    for channel in channels {
        let mut client = Client {
            signer: SignerServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
        };
        let warm_up = |reason| BenchError::WarmUp {
            rpc: calls.rpc(),
            reason,
        };
        let outcome = send(&mut client, &calls, std::slice::from_ref(first))
            .await
            .map_err(|status| {
                warm_up(format!(
                    "{}: {}",
                    code_name(status.code()),
                    status.message()
                ))
            })?;
        if let Some((kind, message)) = outcome.errors.into_iter().next() {
            return Err(warm_up(format!("{kind}: {message}")));
        }
        clients.push(client);
    }

    let own_pid = std::process::id();
    let cpu_before = (cpu(own_pid)?, cpu(service_pid)?);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for client in clients {
        tasks.spawn(client_loop(
            client,
            calls.clone(),
            Arc::clone(&digests),
            Arc::clone(&claimed),
        ));
    }
    let mut tally = Tally::default();
    while let Some(done) = tasks.join_next().await {
        tally.merge(done.map_err(|_| BenchError::WorkerPanicked)?);
    }
    let elapsed = started.elapsed();
    let bench_cpu = cpu(own_pid)?.saturating_sub(cpu_before.0);
    let service_cpu = cpu(service_pid)?.saturating_sub(cpu_before.1);
    Ok(Timed {
        elapsed,
        tally,
        bench_cpu,
        service_cpu: Some(service_cpu),
    })
}

/// Sends requests until every digest has been claimed.
async fn client_loop(
    mut client: Client,
    calls: Calls,
    digests: Arc<Vec<Vec<u8>>>,
    claimed: Arc<AtomicUsize>,
) -> Tally {
    let size = calls.size();
    let mut tally = Tally::default();
    loop {
        let first = claimed.fetch_add(size, Ordering::Relaxed);
        if first >= digests.len() {
            break;
        }
        let batch = &digests[first..digests.len().min(first + size)];
        match send(&mut client, &calls, batch).await {
            Ok(outcome) => tally.record_returned(
                outcome.elapsed,
                outcome.signatures,
                outcome.errors.into_iter().map(|(kind, _)| kind),
            ),
            Err(status) => {
                tally.record_failed(code_name(status.code()).to_owned(), batch.len() as u64);
            }
        }
    }
    tally
}

/// One client's stubs, which share its connection.
struct Client {
    signer: SignerServiceClient<Channel>,
    health: HealthClient<Channel>,
}

/// The signatures and failed items of one response.
struct Outcome {
    /// How long the request took.
    elapsed: Duration,
    /// Digests that got a signature.
    signatures: usize,
    /// The error kind and message of each digest that got none.
    errors: Vec<(String, String)>,
}

/// Sends one request for `digests` and classifies the response, or returns
/// the status of a call that failed as a whole.
async fn send(
    client: &mut Client,
    calls: &Calls,
    digests: &[Vec<u8>],
) -> Result<Outcome, tonic::Status> {
    let started = Instant::now();
    let results = match calls {
        Calls::Sign(template) => {
            let request = pb::SignRequest {
                digest: digests.first().cloned().unwrap_or_default(),
                ..template.clone()
            };
            let response = client.signer.sign(request).await?;
            vec![Ok(response.into_inner().signature)]
        }
        Calls::SignBatch { template, .. } => {
            let items = digests
                .iter()
                .map(|digest| pb::SignBatchItem {
                    digest: digest.clone(),
                    request_id: String::new(),
                })
                .collect();
            let request = pb::SignBatchRequest {
                items,
                ..template.clone()
            };
            let response = client.signer.sign_batch(request).await?;
            response
                .into_inner()
                .results
                .into_iter()
                .map(|result| match result.error {
                    Some(error) => Err(error),
                    None => Ok(result.signature),
                })
                .collect()
        }
        Calls::HealthCheck => {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            let status = client.health.check(request).await?.into_inner().status;
            if status == ServingStatus::Serving as i32 {
                vec![Ok(vec![1])]
            } else {
                vec![Err(pb::ItemError {
                    code: tonic::Code::Unavailable as i32,
                    message: format!("health status {status}, not SERVING"),
                })]
            }
        }
    };
    Ok(classify(started.elapsed(), digests.len(), results))
}

/// Counts the signatures and the failed items of a response to a request
/// for `expected` digests.
///
/// A SignBatch item that failed is counted as `item CODE`. An item that the
/// response lacks, or whose signature is empty, is counted as `item without
/// a signature`.
fn classify(
    elapsed: Duration,
    expected: usize,
    results: Vec<Result<Vec<u8>, pb::ItemError>>,
) -> Outcome {
    let mut outcome = Outcome {
        elapsed,
        signatures: 0,
        errors: Vec::new(),
    };
    let mut results = results.into_iter();
    for index in 0..expected {
        match results.next() {
            Some(Ok(signature)) if !signature.is_empty() => outcome.signatures += 1,
            Some(Err(error)) => outcome.errors.push((
                format!("item {}", code_name(tonic::Code::from(error.code))),
                error.message,
            )),
            Some(Ok(_)) | None => outcome.errors.push((
                "item without a signature".into(),
                format!("the response has no signature for item {index}"),
            )),
        }
    }
    outcome
}

fn cpu(pid: u32) -> Result<Duration, BenchError> {
    measure::process_cpu(pid).map_err(|source| BenchError::Io {
        context: format!("cannot read /proc/{pid}/stat"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified_per_item() {
        let elapsed = Duration::from_micros(250);
        let failed = pb::ItemError {
            code: 13,
            message: "self-check failed".into(),
        };
        let results = vec![
            Ok(vec![1; 64]),
            Err(failed),
            Ok(Vec::new()),
            Ok(vec![2; 64]),
        ];
        let outcome = classify(elapsed, 5, results);
        assert_eq!(outcome.elapsed, elapsed);
        assert_eq!(outcome.signatures, 2);
        let kinds: Vec<&str> = outcome.errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "item INTERNAL",
                "item without a signature",
                "item without a signature"
            ]
        );
        assert_eq!(outcome.errors[0].1, "self-check failed");
        assert_eq!(
            outcome.errors[2].1,
            "the response has no signature for item 4"
        );
    }

    #[test]
    fn batch_calls_take_their_size() {
        let sign = Calls::Sign(pb::SignRequest::default());
        assert_eq!((sign.rpc(), sign.size()), ("Sign", 1));
        let batch = Calls::SignBatch {
            template: pb::SignBatchRequest::default(),
            size: 64,
        };
        assert_eq!((batch.rpc(), batch.size()), ("SignBatch", 64));
    }
}
