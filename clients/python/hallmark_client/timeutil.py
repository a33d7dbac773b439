"""RFC 3339 timestamps, parsed the same way on every Python version from 3.9."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Optional

from google.protobuf.timestamp_pb2 import Timestamp

from hallmark_client.errors import describe_value

# [0-9] rather than \d, which also matches other Unicode digits such as
# Arabic-Indic and fullwidth ones that int() would accept.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time with a Z or numeric offset into an aware UTC datetime.

    Fractions beyond microseconds are truncated. Raises ValueError naming the
    text when it is not RFC 3339 (a missing offset is an error, because the
    instant would be ambiguous), when an offset exceeds 23:59, and when the
    instant in UTC falls outside the years 0001 to 9999 that datetime holds.
    """
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{describe_value(text)} is not an RFC 3339 timestamp; expected for example 2026-01-01T00:00:00.000000Z"
        )
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or "").ljust(6, "0")[:6]
    try:
        moment = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=timezone.utc)
    except ValueError as error:
        raise ValueError(f"{text!r} is not a valid RFC 3339 timestamp: {error}") from error
    if match.group(9):
        offset_hours, offset_minutes = int(match.group(10)), int(match.group(11))
        if offset_hours > 23 or offset_minutes > 59:
            raise ValueError(
                f"{text!r} is not a valid RFC 3339 timestamp: the UTC offset must be from -23:59 to +23:59"
            )
        offset = timedelta(hours=offset_hours, minutes=offset_minutes)
        try:
            moment -= offset if match.group(9) == "+" else -offset
        except OverflowError:
            raise ValueError(
                f"{text!r} is not a valid RFC 3339 timestamp: in UTC it falls outside the years 0001 to 9999"
            ) from None
    return moment


def format_rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with microseconds and a Z suffix."""
    utc = moment.astimezone(timezone.utc)
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")


def timestamp_to_datetime(timestamp: Timestamp) -> Optional[datetime]:
    """Convert a protobuf Timestamp to an aware UTC datetime, or None when it is unset."""
    if timestamp.seconds == 0 and timestamp.nanos == 0:
        return None
    return datetime.fromtimestamp(timestamp.seconds, timezone.utc) + timedelta(
        microseconds=timestamp.nanos // 1000
    )
