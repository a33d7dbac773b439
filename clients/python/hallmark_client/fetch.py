"""HTTP(S) GET bounded by one deadline for the whole exchange.

urlopen's timeout applies to each socket operation, so a server that sends
one byte every few seconds can hold a request open indefinitely. Here every
step (connect, TLS handshake, each read of the headers and the body) gets
the time left until one deadline as its socket timeout, and no step starts
after the deadline.
"""

from __future__ import annotations

import http.client
import io
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Optional


class FetchTimeout(TimeoutError):
    """The fetch did not finish within its total time limit."""


def fetch_url(url: str, timeout: float, max_bytes: int, headers: Optional[Dict[str, str]] = None) -> bytes:
    """GET an http(s) URL and return at most max_bytes + 1 bytes of its body.

    The caller can tell that the body is larger than max_bytes from the
    extra byte. Raises FetchTimeout when the whole fetch, redirects
    included, takes longer than timeout seconds. Other failures raise what
    urllib raises: OSError (urllib.error.URLError and HTTPError included),
    http.client.HTTPException or ValueError.

    NOTE: the host name lookup (getaddrinfo) has no timeout in Python and is
    not bounded by the deadline.
    """
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(_DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.read(max_bytes + 1)
    except FetchTimeout:
        raise
    except (OSError, http.client.HTTPException) as error:
        # urllib wraps a timeout while connecting or sending in URLError.
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, (socket.timeout, TimeoutError)) or time.monotonic() >= deadline:
            raise FetchTimeout(f"no complete response within {timeout:g} s") from error
        raise


def _remaining(deadline: float) -> float:
    """Return the seconds left until deadline, raising FetchTimeout when none are left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchTimeout("the fetch deadline passed")
    return left


class _DeadlineSocketReader(io.RawIOBase):
    """Reads a socket, setting its timeout to the time left before each read."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> Optional[int]:
        self._sock.settimeout(_remaining(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTPResponse whose status line, headers and body are read under the deadline."""

    def __init__(self, sock: socket.socket, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        # Swap the plain socket file for one that checks the deadline. Closing
        # the plain one only drops its reference; the socket stays open.
        self.fp.close()
        self.fp = io.BufferedReader(_DeadlineSocketReader(sock, deadline))


class _DeadlineConnectionMixin(http.client.HTTPConnection):
    """Gives the TCP connect, and then the TLS handshake, the time left as their timeout.

    In _DeadlineHTTPSConnection this class comes after HTTPSConnection in the
    method resolution order, so HTTPSConnection.connect calls this connect
    for the TCP part and wraps the socket (the handshake) afterwards.
    """

    deadline: float

    def connect(self) -> None:
        self.timeout = _remaining(self.deadline)
        super().connect()
        self.sock.settimeout(_remaining(self.deadline))


class _DeadlineHTTPConnection(_DeadlineConnectionMixin):
    pass


class _DeadlineHTTPSConnection(http.client.HTTPSConnection, _DeadlineConnectionMixin):
    pass


def _bind(connection: _DeadlineConnectionMixin, deadline: float) -> _DeadlineConnectionMixin:
    """Attach deadline to a new connection and to the responses it reads."""
    connection.deadline = deadline

    def response(sock: socket.socket, *args: Any, **kwargs: Any) -> _DeadlineResponse:
        return _DeadlineResponse(sock, *args, deadline=deadline, **kwargs)

    connection.response_class = response  # type: ignore[assignment]
    return connection


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(lambda host, **kwargs: _bind(_DeadlineHTTPConnection(host, **kwargs), self.deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(lambda host, **kwargs: _bind(_DeadlineHTTPSConnection(host, **kwargs), self.deadline), req)
