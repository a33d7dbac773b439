"""Fixtures: locally made keys and JWKS files, and real Hallmark servers on SoftHSM tokens.

The server fixtures follow tests/interop/conftest.py: each server gets its
own token made by softhsm/dev-token.sh under a temporary directory and its
own `hallmark serve` on a unix socket, with the admin port on 127.0.0.1:0.

Environment:
    HALLMARK_BIN   hallmark binary to test (default: /work/main/target/debug/hallmark,
                   else target/debug/hallmark in this repository)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from hallmark_client import canonicalize
from hallmark_client.timeutil import format_rfc3339

REPO_ROOT = Path(__file__).resolve().parents[3]
DEV_TOKEN_SCRIPT = REPO_ROOT / "softhsm" / "dev-token.sh"
DEFAULT_BINARY = Path("/work/main/target/debug/hallmark")
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
MAX_UNIX_SOCKET_PATH = 107


# ---------------------------------------------------------------- local keys


def b64url(data: bytes) -> str:
    """Encode bytes as unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_uint(value: int, length: Optional[int] = None) -> str:
    """Encode a non-negative integer big-endian as unpadded base64url, minimal or at length."""
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


@dataclass
class LocalKey:
    """A locally generated private key used in place of one Hallmark key version."""

    algorithm: str
    private_key: Any
    kid: str
    version: int = 1
    salt: int = 32
    activates_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc) - timedelta(days=1))
    verify_until: datetime = field(default_factory=lambda: datetime.now(timezone.utc) + timedelta(days=30))

    def jwk(self) -> Dict[str, Any]:
        """Return the JWK of the public key with Hallmark's members, as the server writes it."""
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            member: Dict[str, Any] = {"kty": "RSA", "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}
        elif isinstance(public, ec.EllipticCurvePublicKey):
            size = (public.curve.key_size + 7) // 8
            numbers = public.public_numbers()
            crv = {256: "P-256", 384: "P-384"}[public.curve.key_size]
            member = {"kty": "EC", "crv": crv, "x": b64url_uint(numbers.x, size), "y": b64url_uint(numbers.y, size)}
        else:
            raw = public.public_bytes_raw()
            member = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        member.update(
            kid=self.kid,
            use="sig",
            hallmark_algorithm=self.algorithm,
            hallmark_key_name="default",
            hallmark_version=self.version,
            hallmark_state="active",
            hallmark_activates_at=format_rfc3339(self.activates_at),
            hallmark_verify_until=format_rfc3339(self.verify_until),
        )
        if self.algorithm == "rsa-pss-sha256":
            member["hallmark_pss_salt_length"] = self.salt
        return member

    def sign(self, message: bytes, encoding: str = "der") -> bytes:
        """Sign message bytes exactly as a Hallmark key of this algorithm would."""
        if self.algorithm == "rsa-pss-sha256":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=self.salt)
            return self.private_key.sign(message, pss, hashes.SHA256())
        if self.algorithm == "rsa-pkcs1-sha256":
            return self.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        if self.algorithm.startswith("ecdsa-"):
            hash_cls = hashes.SHA384 if self.algorithm.endswith("sha384") else hashes.SHA256
            der = self.private_key.sign(message, ec.ECDSA(hash_cls()))
            if encoding == "der":
                return der
            r, s = utils.decode_dss_signature(der)
            size = (self.private_key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return self.private_key.sign(hashlib.sha256(message).digest())

    def signed_document(
        self, manifest: Dict[str, Any], canonicalization: str = "jcs", encoding: Optional[str] = None
    ) -> Dict[str, Any]:
        """Build a signed output document over manifest, shaped like Client.sign_output's."""
        signature = self.sign(canonicalize(manifest, canonicalization), encoding or "der")
        document = {
            "output": manifest,
            "signature": signature.hex(),
            "signing_key_id": self.kid,
            "key_version": self.version,
            "algorithm": self.algorithm,
            "canonicalization": canonicalization,
            "signed_at": format_rfc3339(datetime.now(timezone.utc)),
        }
        if self.algorithm.startswith("ecdsa-"):
            document["signature_encoding"] = encoding or "der"
        return document


def generate_key(algorithm: str, kid: str, **kwargs: Any) -> LocalKey:
    """Generate a LocalKey of algorithm (a Hallmark configuration name)."""
    if algorithm.startswith("rsa-"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ecdsa-p256-sha256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "ecdsa-p384-sha384":
        private = ec.generate_private_key(ec.SECP384R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return LocalKey(algorithm, private, kid, **kwargs)


def write_jwks(path: Path, keys: List[LocalKey], revoked: List[str] = ()) -> Path:
    """Write a Hallmark-style JWKS with keys and revoked kids to path and return path."""
    document = {
        "keys": [key.jwk() for key in keys],
        "hallmark_revoked": [
            {"kid": kid, "hallmark_key_name": "default", "hallmark_version": 9,
             "hallmark_revoked_at": "2026-01-01T00:00:00Z"}
            for kid in revoked
        ],
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def sample_manifest(timestamp: Optional[datetime] = None) -> Dict[str, Any]:
    """Return a manifest like examples/model_service.py's, stamped now or at timestamp."""
    moment = timestamp or datetime.now(timezone.utc)
    return {
        "input_sha256": "3d1cb675b7b6d6362db16256c06f9cd6ff327897e6b854a5d00d8356317ca420",
        "model": "iris-logistic-regression",
        "model_version": "sklearn-1.5.0+params.000000000000",
        "predicted_class": "setosa",
        "prediction": 0,
        "probabilities": {"setosa": 0.981657, "versicolor": 0.018343, "virginica": 0.0},
        "note": "café ☕",
        "timestamp": format_rfc3339(moment),
    }


# ------------------------------------------------------------- real servers


def hallmark_binary() -> Path:
    """Return the hallmark binary under test, from HALLMARK_BIN or the default locations."""
    configured = os.environ.get("HALLMARK_BIN")
    if configured:
        binary = Path(configured)
    elif DEFAULT_BINARY.is_file():
        binary = DEFAULT_BINARY
    else:
        binary = REPO_ROOT / "target" / "debug" / "hallmark"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise RuntimeError(
            f"hallmark binary not found or not executable at {binary}; "
            "run `cargo build` or set HALLMARK_BIN to the binary to test"
        )
    return binary


@dataclass
class HallmarkServer:
    """A running `hallmark serve` process on its own token."""

    token_dir: Path
    socket_path: Path
    process: "subprocess.Popen[bytes]"
    stderr_path: Path
    algorithm: str
    tcp: bool = False

    @property
    def target(self) -> str:
        """gRPC target: the unix socket, or host:port from the log when listening on TCP."""
        if not self.tcp:
            return f"unix:{self.socket_path}"
        match = re.search(r'kind="grpc" addr=(\S+)', self.stderr_text())
        if match is None:
            raise RuntimeError(f"no gRPC listen address in the log:\n{self.stderr_text()}")
        return match.group(1)

    def stderr_text(self) -> str:
        """Return everything the server wrote to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    @property
    def jwks_url(self) -> str:
        """URL of the JWKS on the admin port, whose address is read from the server's log."""
        match = re.search(r'kind="metrics" addr=(\S+)', self.stderr_text())
        if match is None:
            raise RuntimeError(f"no metrics listen address in the log:\n{self.stderr_text()}")
        return f"http://{match.group(1)}/.well-known/jwks.json"

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after a grace period."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        if self.socket_path.parent != self.token_dir:
            shutil.rmtree(self.socket_path.parent, ignore_errors=True)


def _wait_until_serving(server: HallmarkServer) -> None:
    """Poll grpc.health.v1 Check("") until SERVING, failing with the server's stderr."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last_state = "no answer"
    options = [("grpc.default_authority", "localhost")]
    while not server.tcp and not server.socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    while server.tcp and 'kind="grpc"' not in server.stderr_text() and time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        time.sleep(0.05)
    with grpc.insecure_channel(server.target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"hallmark serve exited with {server.process.returncode} before SERVING; "
                    f"stderr:\n{server.stderr_text()}"
                )
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
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


def start_server(token_dir: Path, algorithm: str, key_bits: int = 2048, tcp: bool = False) -> HallmarkServer:
    """Create a token whose default key uses algorithm, start `hallmark serve`, wait for SERVING.

    The server listens on a unix socket, or with tcp on 127.0.0.1 at a port the system picks.
    """
    binary = hallmark_binary()
    arguments = ["--algorithm", algorithm, "--key-bits", str(key_bits)]
    result = subprocess.run(
        ["bash", str(DEV_TOKEN_SCRIPT), *arguments, str(token_dir)],
        env=dict(os.environ, HALLMARK_BIN=str(binary)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"dev-token.sh {' '.join(arguments)} {token_dir} exited with {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    socket_path = token_dir / "hallmark.sock"
    if len(str(socket_path)) > MAX_UNIX_SOCKET_PATH:
        socket_path = Path(tempfile.mkdtemp(prefix="hallmark-")) / "hallmark.sock"
    stderr_path = token_dir / "hallmark.stderr"
    command = [
        str(binary), "serve", "--config", str(token_dir / "hallmark.toml"),
        "--listen", "127.0.0.1:0" if tcp else f"unix:{socket_path}", "--metrics-listen", "127.0.0.1:0",
    ]
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    server = HallmarkServer(token_dir, socket_path, process, stderr_path, algorithm, tcp)
    _wait_until_serving(server)
    return server


@pytest.fixture(scope="module")
def start_hallmark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., HallmarkServer]]:
    """Start one server per algorithm and listener kind for the test module; stop them at teardown.

    Call it as start_hallmark("ed25519") for a unix socket, or start_hallmark("ed25519", tcp=True).
    """
    servers: Dict[Any, HallmarkServer] = {}

    def start(algorithm: str, tcp: bool = False) -> HallmarkServer:
        if (algorithm, tcp) not in servers:
            token_dir = tmp_path_factory.mktemp(f"token-{algorithm}{'-tcp' if tcp else ''}")
            servers[algorithm, tcp] = start_server(token_dir, algorithm, tcp=tcp)
        return servers[algorithm, tcp]

    yield start
    for server in servers.values():
        server.stop()
