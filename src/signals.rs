//! SIGTERM and SIGINT for `hallmark serve`.
//!
//! The first signal requests a graceful stop: during start-up the service
//! stops once the current step ends, and while serving it drains. A second
//! signal ends the process at once with 128 plus the signal's number, the
//! code a shell reports for a process that the signal killed.
//!
//! A forced exit loses no acknowledged audit record, because the writer
//! syncs each record before it acknowledges it. A line that the exit cut
//! short was never acknowledged, and the next start moves it to a side
//! file. The final checkpoint is not written, and the first checkpoint
//! after the next start covers the records since the last one.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tracing::warn;

/// A signal that stops the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM, as Kubernetes and systemd send.
    Terminate,
    /// SIGINT, as Ctrl-C sends.
    Interrupt,
}

impl StopSignal {
    /// Returns the signal's name, such as `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        }
    }

    /// Returns the exit code of a stop forced by a second signal: 128 plus
    /// the signal's number (SIGTERM is 15 and SIGINT is 2).
    pub fn forced_exit_code(self) -> u8 {
        match self {
            Self::Terminate => 143,
            Self::Interrupt => 130,
        }
    }
}

/// The first stop signal, as the parts of the service that stop see it:
/// `None` until it arrives.
pub type StopRequest = watch::Receiver<Option<StopSignal>>;

/// Waits until `stop` reports a signal and returns it. If the sender is
/// gone without a signal, it waits forever.
pub async fn requested(stop: &mut StopRequest) -> StopSignal {
    let signal = match stop.wait_for(Option::is_some).await {
        Ok(signal) => *signal,
        Err(_) => None,
    };
    match signal {
        Some(signal) => signal,
        None => std::future::pending().await,
    }
}

/// Handlers for SIGTERM and SIGINT, installed when this is created. From
/// then on neither signal kills the process by its default action.
pub struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    /// Installs the handlers. Must run inside a Tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Spawns the task that owns the handlers and returns the receiver of
    /// the first signal. The second signal ends the process at once.
    pub fn watch(mut self) -> StopRequest {
        let (sender, receiver) = watch::channel(None);
        tokio::spawn(async move {
            let first = self.next().await;
            let _ = sender.send(Some(first));
            let second = self.next().await;
            exit_now(second);
        });
        receiver
    }

    async fn next(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.terminate.recv() => StopSignal::Terminate,
            _ = self.interrupt.recv() => StopSignal::Interrupt,
        }
    }
}

/// Ends the process at once, after a second signal.
fn exit_now(signal: StopSignal) -> ! {
    let code = signal.forced_exit_code();
    warn!(
        signal = signal.name(),
        exit_code = code,
        "second signal: stopping without waiting for requests in progress, the final audit \
         checkpoint or the token"
    );
    // `_exit` skips the handlers that `exit` runs, among them the static
    // destructors of a C++ PKCS#11 module such as SoftHSM. Those would
    // free the module's state under a thread that is still inside one of
    // its calls.
    // SAFETY: `_exit` takes a plain integer, touches no memory of this
    // process and does not return.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(i32::from(code))
    }
}
