"""Fixtures that run a real Hallmark server on a real SoftHSM token per test.

Each test gets its own token directory under tmp_path, created by
softhsm/dev-token.sh, and its own `hallmark serve` process listening on a
unix socket, so tests can run in parallel without sharing keys or ports.

Environment:
    HALLMARK_BIN   hallmark binary to test (default: target/debug/hallmark)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hallmark.v1 import signer_pb2, signer_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
DEV_TOKEN_SCRIPT = REPO_ROOT / "softhsm" / "dev-token.sh"
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
RPC_DEADLINE_SECONDS = 10.0
# Linux limits sun_path to 108 bytes including the trailing NUL.
MAX_UNIX_SOCKET_PATH = 107

# For unix: targets grpcio sends the socket path as the HTTP/2 :authority,
# which the server's h2 stack rejects, so unix targets send "localhost".
UNIX_SOCKET_AUTHORITY = "localhost"

# The interop tests import the example programs as modules.
sys.path.insert(0, str(REPO_ROOT / "examples"))


def open_channel(target: str) -> grpc.Channel:
    """Open an insecure channel to target, host:port or unix:/abs/path."""
    options: list[tuple[str, str]] = []
    if target.startswith("unix:"):
        options.append(("grpc.default_authority", UNIX_SOCKET_AUTHORITY))
    return grpc.insecure_channel(target, options=options)


def hallmark_binary() -> Path:
    """Return the hallmark binary under test, from HALLMARK_BIN or target/debug."""
    configured = os.environ.get("HALLMARK_BIN")
    binary = Path(configured) if configured else REPO_ROOT / "target" / "debug" / "hallmark"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise RuntimeError(
            f"hallmark binary not found or not executable at {binary}; "
            "run `cargo build` or set HALLMARK_BIN to the binary to test"
        )
    return binary


@dataclass
class HallmarkServer:
    """A running `hallmark serve` process with its token and gRPC channel."""

    token_dir: Path
    socket_path: Path
    process: subprocess.Popen[bytes]
    stderr_path: Path
    key_bits: int
    salt: str
    algorithm: str = "rsa-pss-sha256"
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = open_channel(self.target)

    @property
    def target(self) -> str:
        """gRPC target of the server's unix socket."""
        return f"unix:{self.socket_path}"

    @property
    def signer(self) -> signer_pb2_grpc.SignerServiceStub:
        """SignerService stub on the server's channel."""
        return signer_pb2_grpc.SignerServiceStub(self.channel)

    @property
    def health(self) -> health_pb2_grpc.HealthStub:
        """grpc.health.v1 stub on the server's channel."""
        return health_pb2_grpc.HealthStub(self.channel)

    @property
    def admin_url(self) -> str:
        """Base URL of the admin HTTP port (metrics and JWKS), read from the server's log."""
        match = re.search(r'kind="metrics" addr=(\S+)', self.stderr_text())
        if match is None:
            raise RuntimeError(f"no metrics listen address in the log:\n{self.stderr_text()}")
        return f"http://{match.group(1)}"

    @property
    def jwks_url(self) -> str:
        """URL of the JWKS that the admin HTTP port serves."""
        return f"{self.admin_url}/.well-known/jwks.json"

    def hallmark_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `hallmark ARGS --config` against this server's token."""
        return subprocess.run(
            [str(hallmark_binary()), *args, "--config", str(self.token_dir / "hallmark.toml")],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stderr_text(self) -> str:
        """Return everything the server wrote to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def sign(self, digest: bytes, request_id: str = "interop-test") -> signer_pb2.SignResponse:
        """Sign a SHA-256 digest with the default key."""
        request = signer_pb2.SignRequest(
            digest=digest, hash_algorithm=signer_pb2.HASH_ALGORITHM_SHA256, request_id=request_id
        )
        return self.signer.Sign(request, timeout=RPC_DEADLINE_SECONDS)

    def sign_bytes(self, message: bytes) -> signer_pb2.SignResponse:
        """Hash message with SHA-256 and sign the digest."""
        return self.sign(hashlib.sha256(message).digest())

    def list_keys(self) -> list[signer_pb2.KeyVersion]:
        """Return the key versions from ListKeys."""
        response = self.signer.ListKeys(signer_pb2.ListKeysRequest(), timeout=RPC_DEADLINE_SECONDS)
        return list(response.keys)

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after a grace period."""
        self.channel.close()
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        if self.socket_path.parent != self.token_dir:
            shutil.rmtree(self.socket_path.parent, ignore_errors=True)


def create_token(
    token_dir: Path, key_bits: int, salt: str, binary: Path, algorithm: str = "rsa-pss-sha256"
) -> None:
    """Create a SoftHSM token in token_dir with dev-token.sh and a key "default" of algorithm."""
    env = dict(os.environ, HALLMARK_BIN=str(binary))
    arguments = ["--algorithm", algorithm, "--key-bits", str(key_bits), "--salt", salt]
    result = subprocess.run(
        ["bash", str(DEV_TOKEN_SCRIPT), *arguments, str(token_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"dev-token.sh {' '.join(arguments)} {token_dir} exited with "
            f"{result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )


def socket_path_for(token_dir: Path) -> Path:
    """Choose the unix socket path: in token_dir when short enough, else a short temp dir."""
    candidate = token_dir / "hallmark.sock"
    if len(str(candidate)) <= MAX_UNIX_SOCKET_PATH:
        return candidate
    return Path(tempfile.mkdtemp(prefix="hallmark-")) / "hallmark.sock"


def wait_until_serving(server: HallmarkServer) -> None:
    """Poll grpc.health.v1 Check("") until SERVING, failing with the server's stderr."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last_state = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"hallmark serve exited with {server.process.returncode} before SERVING; "
                f"stderr:\n{server.stderr_text()}"
            )
        try:
            response = server.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return
            last_state = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        except grpc.RpcError as error:
            last_state = f"{error.code().name}: {error.details()}"
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(
        f"hallmark serve was not SERVING on {server.target} within {READY_TIMEOUT_SECONDS:g} s "
        f"(last health check: {last_state}); stderr:\n{server.stderr_text()}"
    )


def start_server(
    token_dir: Path, key_bits: int, salt: str, algorithm: str = "rsa-pss-sha256"
) -> HallmarkServer:
    """Create a token whose default key uses algorithm, start `hallmark serve`, wait for SERVING."""
    binary = hallmark_binary()
    create_token(token_dir, key_bits, salt, binary, algorithm)
    socket_path = socket_path_for(token_dir)
    stderr_path = token_dir / "hallmark.stderr"
    command = [
        str(binary),
        "serve",
        "--config",
        str(token_dir / "hallmark.toml"),
        "--listen",
        f"unix:{socket_path}",
        "--metrics-listen",
        "127.0.0.1:0",
    ]
    with open(stderr_path, "wb") as stderr:
        # A short refresh interval lets tests see key changes made with the CLI.
        env = dict(os.environ, HALLMARK_REFRESH_INTERVAL="200ms")
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=env
        )
    server = HallmarkServer(token_dir, socket_path, process, stderr_path, key_bits, salt, algorithm)
    wait_until_serving(server)
    return server


StartServer = Callable[..., HallmarkServer]


@pytest.fixture
def start_hallmark(tmp_path: Path) -> Iterator[StartServer]:
    """Start servers on fresh tokens under this test's tmp_path; stop them at teardown.

    Call it as start_hallmark(key_bits=2048, salt="digest", algorithm="rsa-pss-sha256").
    """
    servers: list[HallmarkServer] = []

    def start(
        key_bits: int = 2048, salt: str = "digest", algorithm: str = "rsa-pss-sha256"
    ) -> HallmarkServer:
        token_dir = tmp_path / f"token-{len(servers)}"
        server = start_server(token_dir, key_bits, salt, algorithm)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def hallmark(start_hallmark: StartServer) -> HallmarkServer:
    """A server on a fresh token with an RSA-2048 key and a 32-byte PSS salt."""
    return start_hallmark(key_bits=2048, salt="digest")
