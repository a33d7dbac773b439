"""Key set fetches over HTTP from a local server on 127.0.0.1, including one that trickles."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Callable, Iterator, List

import pytest

from conftest import generate_key
from hallmark_client import KeySetError, Verifier

FETCH_TIMEOUT = 0.5
# How long a trickling server keeps sending if the client never gives up.
TRICKLE_LIMIT_SECONDS = 20.0
TRICKLE_INTERVAL_SECONDS = 0.05
# Time allowed beyond FETCH_TIMEOUT for the error to surface.
DEADLINE_MARGIN_SECONDS = 1.0


Respond = Callable[[socket.socket, threading.Event], None]


class LocalHttpServer:
    """Serves one scripted response per connection on 127.0.0.1, in a thread.

    With read_request, respond runs after the request's blank line arrives,
    otherwise as soon as the connection is accepted.
    """

    def __init__(self, respond: Respond, read_request: bool = True) -> None:
        self._respond = respond
        self._read_request = read_request
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._threads: List[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}/.well-known/jwks.json"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(1.0)
            try:
                request = b""
                while self._read_request and b"\r\n\r\n" not in request:
                    chunk = connection.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                self._respond(connection, self._stop)
            except OSError:
                pass  # the client closed the connection or sent no request

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._acceptor.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[..., LocalHttpServer]]:
    """Start LocalHttpServer(respond, read_request) servers, closed after the test."""
    servers: List[LocalHttpServer] = []

    def start(respond: Respond, read_request: bool = True) -> LocalHttpServer:
        server = LocalHttpServer(respond, read_request)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def trickle(connection: socket.socket, stop: threading.Event, data: bytes) -> None:
    """Send data one byte per TRICKLE_INTERVAL_SECONDS until stopped or TRICKLE_LIMIT_SECONDS pass."""
    give_up = time.monotonic() + TRICKLE_LIMIT_SECONDS
    for byte in data:
        if stop.is_set() or time.monotonic() > give_up:
            return
        connection.sendall(bytes([byte]))
        time.sleep(TRICKLE_INTERVAL_SECONDS)


def timeout_message(url: str) -> str:
    return (
        f"fetching the key set from {url} timed out: it took longer than "
        f"fetch_timeout ({FETCH_TIMEOUT:g} s)"
    )


def test_fetch_over_http_reads_the_key_set(serve) -> None:
    key = generate_key("ed25519", kid="served")
    body = json.dumps({"keys": [key.jwk()]}).encode("utf-8")

    def respond(connection: socket.socket, stop: threading.Event) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        connection.sendall(head.encode("ascii") + body)

    server = serve(respond)
    verifier = Verifier(server.url, fetch_timeout=FETCH_TIMEOUT)
    assert list(verifier.key_set.keys) == ["served"]
    assert verifier.key_set.keys["served"].problem is None


def test_trickled_body_stops_at_fetch_timeout(serve) -> None:
    def respond(connection: socket.socket, stop: threading.Event) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        connection.sendall(head)
        trickle(connection, stop, b'{"keys": [' + b" " * 99_990 + b"]}")

    server = serve(respond)
    started = time.monotonic()
    with pytest.raises(KeySetError) as raised:
        Verifier(server.url, fetch_timeout=FETCH_TIMEOUT)
    elapsed = time.monotonic() - started
    assert str(raised.value) == timeout_message(server.url)
    assert FETCH_TIMEOUT <= elapsed < FETCH_TIMEOUT + DEADLINE_MARGIN_SECONDS


def test_trickled_headers_stop_at_fetch_timeout(serve) -> None:
    def respond(connection: socket.socket, stop: threading.Event) -> None:
        trickle(connection, stop, b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 10_000 + b"\r\n\r\n")

    server = serve(respond)
    started = time.monotonic()
    with pytest.raises(KeySetError) as raised:
        Verifier(server.url, fetch_timeout=FETCH_TIMEOUT)
    elapsed = time.monotonic() - started
    assert str(raised.value) == timeout_message(server.url)
    assert FETCH_TIMEOUT <= elapsed < FETCH_TIMEOUT + DEADLINE_MARGIN_SECONDS


def test_silent_server_stops_at_fetch_timeout(serve) -> None:
    def respond(connection: socket.socket, stop: threading.Event) -> None:
        stop.wait(TRICKLE_LIMIT_SECONDS)

    server = serve(respond)
    started = time.monotonic()
    with pytest.raises(KeySetError) as raised:
        Verifier(server.url, fetch_timeout=FETCH_TIMEOUT)
    elapsed = time.monotonic() - started
    assert str(raised.value) == timeout_message(server.url)
    assert FETCH_TIMEOUT <= elapsed < FETCH_TIMEOUT + DEADLINE_MARGIN_SECONDS


def test_malformed_status_line_rejected(serve) -> None:
    def respond(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    server = serve(respond)
    with pytest.raises(KeySetError) as raised:
        Verifier(server.url, fetch_timeout=FETCH_TIMEOUT)
    assert str(raised.value) == (
        f"cannot read the key set from {server.url}: the response is not valid HTTP "
        "(BadStatusLine('NOT HTTP AT ALL\\r\\n'))"
    )


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), float("nan"), "10"])
def test_fetch_timeout_must_be_positive(tmp_path, timeout: object) -> None:
    with pytest.raises(ValueError) as raised:
        Verifier(str(tmp_path / "jwks.json"), fetch_timeout=timeout)  # type: ignore[arg-type]
    assert str(raised.value) == f"fetch_timeout must be a positive number of seconds, got {timeout!r}"


def test_silent_tls_server_stops_at_fetch_timeout(serve) -> None:
    # The TCP connection opens but no TLS handshake follows, so the deadline
    # must also bound the handshake.
    def respond(connection: socket.socket, stop: threading.Event) -> None:
        stop.wait(TRICKLE_LIMIT_SECONDS)

    server = serve(respond, read_request=False)
    url = server.url.replace("http://", "https://")
    started = time.monotonic()
    with pytest.raises(KeySetError) as raised:
        Verifier(url, fetch_timeout=FETCH_TIMEOUT)
    elapsed = time.monotonic() - started
    assert str(raised.value) == timeout_message(url)
    assert FETCH_TIMEOUT <= elapsed < FETCH_TIMEOUT + DEADLINE_MARGIN_SECONDS
