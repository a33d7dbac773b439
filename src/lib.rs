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
//! `hallmark` binary.

pub mod canon;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod hsm;
pub mod keys;
pub mod metrics;
pub mod secret;
pub mod server;

/// Generated protobuf types and gRPC stubs for `hallmark.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("hallmark.v1");

    /// Encoded file descriptor set of `hallmark.v1`, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("hallmark_descriptor");
}
