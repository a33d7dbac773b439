//! The one place where internal errors become gRPC statuses.
//!
//! Details are logged server-side; clients get the code and a short message
//! that never carries PKCS#11 internals.

use tonic::{Code, Status};
use tracing::error;

use crate::hsm::HsmError;
use crate::keys::SignError;

/// Maps a signing failure to the status returned to the client:
///
/// | error | code |
/// |---|---|
/// | digest length does not match the key's algorithm | `INVALID_ARGUMENT` |
/// | no active version, salt does not fit | `FAILED_PRECONDITION` |
/// | token gone, session broken, pool closed, service stopping | `UNAVAILABLE` |
/// | self-check failure, other PKCS#11 failure | `INTERNAL` |
impl From<SignError> for Status {
    fn from(error: SignError) -> Self {
        Self::from(&error)
    }
}

impl From<&SignError> for Status {
    fn from(error: &SignError) -> Self {
        match error {
            SignError::DigestMismatch { .. } => Status::invalid_argument(error.to_string()),
            SignError::Algorithm(failure) => {
                error!(error = %failure, "encoding or checking a signature failed");
                Status::internal("the signature could not be encoded or checked; it was discarded")
            }
            SignError::NoActiveVersion { .. }
            | SignError::SaltDoesNotFit { .. }
            | SignError::Conflict { .. } => Status::failed_precondition(error.to_string()),
            SignError::SelfCheckFailed { .. } => {
                Status::internal("the token produced an invalid signature; it was discarded")
            }
            SignError::Hsm(HsmError::Abandoned { deadline: true }) => {
                Status::deadline_exceeded(error.to_string())
            }
            SignError::Hsm(HsmError::Abandoned { deadline: false }) => {
                Status::cancelled(error.to_string())
            }
            SignError::Hsm(HsmError::Stopping) => Status::unavailable(
                "the service is stopping and did not sign this digest; send it again",
            ),
            // Readiness already reports the outage, once.
            SignError::Hsm(HsmError::Disconnected { .. }) => {
                Status::unavailable("the signing token is unavailable; retry later")
            }
            SignError::Hsm(hsm) => {
                error!(error = %hsm, "signing failed in the token");
                if hsm.is_token_unavailable() {
                    Status::unavailable("the signing token is unavailable; retry later")
                } else if let HsmError::Ambiguous { .. } | HsmError::NotFound { .. } = hsm {
                    Status::failed_precondition(hsm.to_string())
                } else {
                    Status::internal("signing failed in the token")
                }
            }
        }
    }
}

/// Returns the canonical upper-case name of a gRPC code, as used in metric labels.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
