//! Hallmark signs digests of ML model outputs with keys held in a PKCS#11
//! token, and serves the signatures and public keys over gRPC.
//!
//! Layers, each depending only on the ones after it:
//!
//! - [`grpc`]: request validation, the `SignerService`, and status mapping;
//! - [`keys`]: key versions, rotation metadata and signing with self-check;
//! - [`hsm`]: the PKCS#11 module, token login, session pool and objects.
//!
//! [`config`], [`metrics`] and [`server`] tie them together for the
//! `hallmark` binary, and [`audit`] keeps a tamper-evident log of Sign
//! requests. [`bench`] measures signing through PKCS#11 and through the
//! service.
//!
//! The consumer side is separate: [`verify`] checks signed outputs against
//! a published key set, and [`canon`] serializes manifests canonically.
//! Neither reaches PKCS#11. Building with `default-features = false` leaves
//! out the `server` feature and everything above that needs it.

/// Writes a line to stderr as `eprintln!` does, but carries on when stderr
/// is closed or fails, as when the reader of `2>&1 | head -1` has exited.
/// `eprintln!` panics then, which would turn any exit code into 101.
#[cfg(feature = "server")]
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[cfg(feature = "server")]
pub mod audit;
#[cfg(feature = "server")]
pub mod bench;
#[cfg(feature = "server")]
pub mod caller;
pub mod canon;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod grpc;
#[cfg(feature = "server")]
pub mod hsm;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod secret;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod signals;
pub mod verify;

/// Generated protobuf types and gRPC stubs for `hallmark.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("hallmark.v1");

    /// Encoded file descriptor set of `hallmark.v1`, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("hallmark_descriptor");
}
