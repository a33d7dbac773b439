"""gRPC status codes map to the client's exceptions and their retry advice."""

from __future__ import annotations

import pytest

from hallmark_client import (
    CancelledError,
    HallmarkError,
    InvalidRequestError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)
from hallmark_client.errors import error_from_code


@pytest.mark.parametrize(
    ("number", "cls", "name", "retryable"),
    [
        (1, CancelledError, "CANCELLED", True),
        (3, InvalidRequestError, "INVALID_ARGUMENT", False),
        (7, PermissionDeniedError, "PERMISSION_DENIED", False),
        (8, ResourceExhaustedError, "RESOURCE_EXHAUSTED", True),
        (14, UnavailableError, "UNAVAILABLE", True),
    ],
)
def test_item_codes_map_to_their_exception(number: int, cls: type, name: str, retryable: bool) -> None:
    error = error_from_code(number, "the message", "unix:/run/hallmark.sock")
    assert type(error) is cls
    assert (error.code, error.details, error.retryable) == (name, "the message", retryable)
    assert str(error) == f"{name} on unix:/run/hallmark.sock: the message"


def test_an_unknown_code_is_a_plain_error() -> None:
    error = error_from_code(99, "odd", "")
    assert type(error) is HallmarkError
    assert (error.code, error.retryable) == ("UNKNOWN", False)
