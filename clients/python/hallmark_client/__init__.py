"""Client for Hallmark, the gRPC signing sidecar for ML model outputs.

``Client`` signs output manifests through a Hallmark server and returns
signed output documents; ``Verifier`` checks such documents against the
server's JWKS, including key revocation, key validity, output age and replay.
"""

from hallmark_client.canonical import CANONICALIZATIONS, JCS, PYTHON_SORT_KEYS, canonicalize
from hallmark_client.client import Client, KeyInfo
from hallmark_client.errors import (
    BadSignature,
    CancelledError,
    DeadlineExceededError,
    ExpiredKey,
    HallmarkError,
    InvalidRequestError,
    InvalidResponseError,
    KeyNotConfiguredError,
    KeySetError,
    MalformedDocument,
    NoActiveKeyError,
    PermissionDeniedError,
    ReplayedOutput,
    RequestTooLargeError,
    ResourceExhaustedError,
    RevokedKey,
    SigningFailedError,
    StaleOutput,
    UnavailableError,
    UnknownKey,
    VerificationError,
)
from hallmark_client.verifier import Verdict, Verifier, parse_signed_output

__all__ = [
    "CANONICALIZATIONS",
    "JCS",
    "PYTHON_SORT_KEYS",
    "BadSignature",
    "CancelledError",
    "Client",
    "DeadlineExceededError",
    "ExpiredKey",
    "HallmarkError",
    "InvalidRequestError",
    "InvalidResponseError",
    "KeyInfo",
    "KeyNotConfiguredError",
    "KeySetError",
    "MalformedDocument",
    "NoActiveKeyError",
    "PermissionDeniedError",
    "ReplayedOutput",
    "RequestTooLargeError",
    "ResourceExhaustedError",
    "RevokedKey",
    "SigningFailedError",
    "StaleOutput",
    "UnavailableError",
    "UnknownKey",
    "Verdict",
    "Verifier",
    "VerificationError",
    "canonicalize",
    "parse_signed_output",
]

__version__ = "0.1.0"
