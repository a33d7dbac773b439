//! The gRPC side of a service configuration: concurrent clients that send
//! Sign requests until every digest has been signed.
//!
//! Each client is a task with a channel of its own, so each has its own
//! HTTP/2 connection and the clients do not queue behind one connection's
//! dispatch task. Several processes that each call the sidecar, or one
//! process with a channel per worker, look the same to the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::BenchError;
use super::measure::{self, Tally, Timed};
use crate::grpc::code_name;
use crate::pb;
use crate::pb::signer_service_client::SignerServiceClient;

/// Sends one Sign request per digest over `channels`, one client task per
/// channel, and measures them.
///
/// Before timing starts, each client sends one request with the first
/// digest, which is not counted, so that a request the service rejects
/// fails here with its status. `template` is the request without its
/// digest. `claimed` counts the requests taken so far; it must start at 0.
/// `service_pid` is the process whose CPU time is measured.
pub async fn drive(
    channels: Vec<Channel>,
    template: pb::SignRequest,
    digests: Arc<Vec<Vec<u8>>>,
    claimed: Arc<AtomicUsize>,
    service_pid: u32,
) -> Result<Timed, BenchError> {
    let first = digests
        .first()
        .ok_or_else(|| BenchError::Key("no digests to sign".into()))?;
    let mut clients = Vec::with_capacity(channels.len());
    for channel in channels {
        let mut client = SignerServiceClient::new(channel);
        let request = pb::SignRequest {
            digest: first.clone(),
            ..template.clone()
        };
        client
            .sign(request)
            .await
            .map_err(|status| BenchError::WarmUp {
                code: code_name(status.code()),
                message: status.message().to_owned(),
            })?;
        clients.push(client);
    }

    let own_pid = std::process::id();
    let cpu_before = (cpu(own_pid)?, cpu(service_pid)?);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for client in clients {
        tasks.spawn(client_loop(
            client,
            template.clone(),
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

/// Signs digests until every digest has been claimed.
async fn client_loop(
    mut client: SignerServiceClient<Channel>,
    template: pb::SignRequest,
    digests: Arc<Vec<Vec<u8>>>,
    claimed: Arc<AtomicUsize>,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let index = claimed.fetch_add(1, Ordering::Relaxed);
        let Some(digest) = digests.get(index) else {
            break;
        };
        let request = pb::SignRequest {
            digest: digest.clone(),
            ..template.clone()
        };
        let started = Instant::now();
        let result = client.sign(request).await;
        let error = result
            .err()
            .map(|status| code_name(status.code()).to_owned());
        tally.record(started.elapsed(), error);
    }
    tally
}

fn cpu(pid: u32) -> Result<std::time::Duration, BenchError> {
    measure::process_cpu(pid).map_err(|source| BenchError::Io {
        context: format!("cannot read /proc/{pid}/stat"),
        source,
    })
}
