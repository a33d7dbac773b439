"""RFC 3339 parsing of manifest and key set timestamps."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hallmark_client.timeutil import parse_rfc3339

SHAPE = "is not an RFC 3339 timestamp; expected for example 2026-01-01T00:00:00.000000Z"

ACCEPTED = [
    ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=timezone.utc)),
    ("2026-01-01t00:00:00.123456789z", datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)),
    ("2026-01-02T00:00:00+23:59", datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc)),
    ("2025-12-31T00:01:00-23:59", datetime(2026, 1, 1, tzinfo=timezone.utc)),
    ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)),
    ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=timezone.utc)),
]


@pytest.mark.parametrize("text, expected", ACCEPTED, ids=[text for text, _ in ACCEPTED])
def test_accepted_timestamps(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


REJECTED = [
    # \d would match these digits, and int() would read them.
    ("\u0662\u0660\u0662\u0666-01-01T00:00:00Z", f"'\u0662\u0660\u0662\u0666-01-01T00:00:00Z' {SHAPE}"),
    ("\uff12\uff10\uff12\uff16-01-01T00:00:00Z", f"'\uff12\uff10\uff12\uff16-01-01T00:00:00Z' {SHAPE}"),
    ("2026-01-01T00:00:00+0\u0661:00", f"'2026-01-01T00:00:00+0\u0661:00' {SHAPE}"),
    ("2026-01-01T00:00:00.\u0661Z", f"'2026-01-01T00:00:00.\u0661Z' {SHAPE}"),
    (
        "2026-01-01T00:00:00+24:00",
        "'2026-01-01T00:00:00+24:00' is not a valid RFC 3339 timestamp: "
        "the UTC offset must be from -23:59 to +23:59",
    ),
    (
        "2026-01-01T00:00:00-00:60",
        "'2026-01-01T00:00:00-00:60' is not a valid RFC 3339 timestamp: "
        "the UTC offset must be from -23:59 to +23:59",
    ),
    (
        "9999-12-31T23:59:59-23:59",
        "'9999-12-31T23:59:59-23:59' is not a valid RFC 3339 timestamp: "
        "in UTC it falls outside the years 0001 to 9999",
    ),
    (
        "0001-01-01T00:00:00+01:00",
        "'0001-01-01T00:00:00+01:00' is not a valid RFC 3339 timestamp: "
        "in UTC it falls outside the years 0001 to 9999",
    ),
    ("2026-01-01T00:00:00", f"'2026-01-01T00:00:00' {SHAPE}"),
    (None, f"None {SHAPE}"),
    (["2026-01-01T00:00:00Z"], f"['2026-01-01T00:00:00Z'] {SHAPE}"),
]


@pytest.mark.parametrize("text, message", REJECTED, ids=[str(index) for index in range(len(REJECTED))])
def test_rejected_timestamps_raise_value_error(text: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_rfc3339(text)  # type: ignore[arg-type]
    assert str(raised.value) == message


def test_deeply_nested_non_string_is_described_by_type() -> None:
    # repr() of this list raises RecursionError; the message names the type instead.
    value: list = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(ValueError) as raised:
        parse_rfc3339(value)  # type: ignore[arg-type]
    assert str(raised.value) == f"<list nested too deeply to show> {SHAPE}"
