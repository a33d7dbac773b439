"""Exceptions raised by the Hallmark client and verifier."""

from __future__ import annotations

from typing import Any, Dict, Type

import grpc

#: Maximum length, in characters, of the repr that describe_value puts in a message.
MAX_DESCRIBED_CHARS = 100


class HallmarkError(Exception):
    """A Sign or ListKeys call failed.

    ``code`` is the gRPC status code name (for example ``"UNAVAILABLE"``),
    or ``"INVALID_RESPONSE"`` when the server's response breaks the protocol.
    ``details`` is the server's message.
    """

    #: Whether the same request may succeed when sent again later.
    retryable = False

    def __init__(self, code: str, details: str, target: str = "") -> None:
        self.code = code
        self.details = details
        self.target = target
        where = f" on {target}" if target else ""
        super().__init__(f"{code}{where}: {details}")


class InvalidRequestError(HallmarkError):
    """INVALID_ARGUMENT: the digest, hash algorithm, encoding or request_id was rejected."""


class KeyNotConfiguredError(HallmarkError):
    """NOT_FOUND: the requested key_name is not configured on the server."""


class RequestTooLargeError(HallmarkError):
    """OUT_OF_RANGE: the request exceeded the server's server.max_request_bytes."""


class NoActiveKeyError(HallmarkError):
    """FAILED_PRECONDITION: the key has no active version, or the token contains duplicate objects."""


class UnavailableError(HallmarkError):
    """UNAVAILABLE: the server, its token or its session is unreachable; retry with backoff."""

    retryable = True


class DeadlineExceededError(HallmarkError):
    """DEADLINE_EXCEEDED: no response within the client's timeout; retry with backoff."""

    retryable = True


class SigningFailedError(HallmarkError):
    """INTERNAL: the HSM failed to sign or its signature failed the self-check; retry once."""

    retryable = True


class PermissionDeniedError(HallmarkError):
    """PERMISSION_DENIED: this caller may not sign with the key; change the server's policy."""


class ResourceExhaustedError(HallmarkError):
    """RESOURCE_EXHAUSTED: the caller is over its rate, or the server is full; retry with backoff."""

    retryable = True


class CancelledError(HallmarkError):
    """CANCELLED: the call ended before its response, often at its deadline; retry with a longer timeout."""

    retryable = True


class InvalidResponseError(HallmarkError):
    """The server's response breaks the Hallmark protocol (for example a wrong request_id echo)."""


_ERRORS_BY_CODE: Dict[grpc.StatusCode, Type[HallmarkError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: KeyNotConfiguredError,
    grpc.StatusCode.OUT_OF_RANGE: RequestTooLargeError,
    grpc.StatusCode.FAILED_PRECONDITION: NoActiveKeyError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: SigningFailedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.CANCELLED: CancelledError,
}


def error_from_code(code_number: int, details: str, target: str) -> HallmarkError:
    """Convert the gRPC code number and message of a failed batch item to its HallmarkError."""
    code = next((c for c in grpc.StatusCode if c.value[0] == code_number), grpc.StatusCode.UNKNOWN)
    cls = _ERRORS_BY_CODE.get(code, HallmarkError)
    return cls(code.name, details, target)


def error_from_rpc(error: grpc.RpcError, target: str) -> HallmarkError:
    """Convert a grpc.RpcError to the HallmarkError subclass for its status code."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _ERRORS_BY_CODE.get(code, HallmarkError)
    return cls(code.name, details or "", target)


class KeySetError(Exception):
    """The verifier's key set (JWKS) cannot be fetched or parsed."""


class VerificationError(Exception):
    """A signed output failed verification; ``reason`` is a stable machine-readable string."""

    reason = "verification_failed"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"{self.reason}: {message}")


class MalformedDocument(VerificationError):
    """A field of the signed output is missing or mistyped, or names an unknown scheme."""

    reason = "malformed_document"


class UnknownKey(VerificationError):
    """signing_key_id is not in the key set, even after a refresh."""

    reason = "unknown_key"


class RevokedKey(VerificationError):
    """signing_key_id names a revoked key version."""

    reason = "revoked_key"


class BadSignature(VerificationError):
    """The signature does not verify with the key set's parameters for the key."""

    reason = "bad_signature"


class ExpiredKey(VerificationError):
    """The output's timestamp lies outside the key version's validity window."""

    reason = "expired_key"


class StaleOutput(VerificationError):
    """The output's timestamp is older than max_age or too far in the future."""

    reason = "stale_output"


class ReplayedOutput(VerificationError):
    """The same signature was already accepted within max_age."""

    reason = "replayed_output"


def describe_value(value: Any) -> str:
    """Return repr(value) for a message, cut to MAX_DESCRIBED_CHARS.

    A value from an unsigned document can be nested too deeply for repr
    (RecursionError) or be an int with too many digits for it (ValueError),
    and then only its type is named.
    """
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    except ValueError:
        return f"<{type(value).__name__} too long to show>"
    if len(text) > MAX_DESCRIBED_CHARS:
        return f"{text[:MAX_DESCRIBED_CHARS]}…"
    return text
