"""Health reporting and request checks that clients of the gRPC API rely on."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import RPC_DEADLINE_SECONDS, HallmarkServer
from hallmark.v1 import signer_pb2
from helpers import MANIFEST_BYTES, load_rsa_public_key


def sign_status(server: HallmarkServer, request: signer_pb2.SignRequest) -> grpc.StatusCode:
    """Send a Sign request that must fail and return its status code."""
    with pytest.raises(grpc.RpcError) as failure:
        server.signer.Sign(request, timeout=RPC_DEADLINE_SECONDS)
    return failure.value.code()


@pytest.mark.parametrize("service", ["", "hallmark.v1.SignerService"])
def test_health_reports_serving(hallmark: HallmarkServer, service: str) -> None:
    response = hallmark.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_DEADLINE_SECONDS)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("length", [0, 20, 31, 33, 64])
def test_sign_rejects_wrong_digest_length(hallmark: HallmarkServer, length: int) -> None:
    request = signer_pb2.SignRequest(
        digest=b"\x01" * length, hash_algorithm=signer_pb2.HASH_ALGORITHM_SHA256, request_id="bad-length"
    )
    assert sign_status(hallmark, request) == grpc.StatusCode.INVALID_ARGUMENT


def test_sign_rejects_unknown_key_name(hallmark: HallmarkServer) -> None:
    request = signer_pb2.SignRequest(
        digest=hashlib.sha256(MANIFEST_BYTES).digest(),
        hash_algorithm=signer_pb2.HASH_ALGORITHM_SHA256,
        key_name="no-such-key",
        request_id="unknown-key",
    )
    assert sign_status(hallmark, request) == grpc.StatusCode.NOT_FOUND


def test_sign_rejects_long_request_id(hallmark: HallmarkServer) -> None:
    request = signer_pb2.SignRequest(
        digest=hashlib.sha256(MANIFEST_BYTES).digest(),
        hash_algorithm=signer_pb2.HASH_ALGORITHM_SHA256,
        request_id="r" * 129,
    )
    assert sign_status(hallmark, request) == grpc.StatusCode.INVALID_ARGUMENT


def test_sign_accepts_128_character_request_id(hallmark: HallmarkServer) -> None:
    request_id = "r" * 128
    response = hallmark.sign(hashlib.sha256(MANIFEST_BYTES).digest(), request_id=request_id)
    assert response.request_id == request_id


def test_unspecified_hash_means_sha256(hallmark: HallmarkServer) -> None:
    request = signer_pb2.SignRequest(digest=hashlib.sha256(MANIFEST_BYTES).digest(), request_id="unspecified")
    response = hallmark.signer.Sign(request, timeout=RPC_DEADLINE_SECONDS)
    public_key = load_rsa_public_key(hallmark.list_keys()[0].public_key_pem)

    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    public_key.verify(response.signature, MANIFEST_BYTES, pss, hashes.SHA256())


def test_sign_by_explicit_default_name(hallmark: HallmarkServer) -> None:
    request = signer_pb2.SignRequest(
        digest=hashlib.sha256(MANIFEST_BYTES).digest(),
        hash_algorithm=signer_pb2.HASH_ALGORITHM_SHA256,
        key_name="default",
        request_id="named-default",
    )
    response = hallmark.signer.Sign(request, timeout=RPC_DEADLINE_SECONDS)
    assert response.key.key_name == "default"
    assert response.key.key_id == hallmark.list_keys()[0].key_id


@pytest.mark.xfail(
    strict=True,
    raises=grpc.RpcError,
    reason="grpcio sends the socket path as :authority on unix: targets, and the h2 crate under tonic "
    "resets such streams with PROTOCOL_ERROR; clients must set grpc.default_authority",
)
def test_unix_socket_default_authority(hallmark: HallmarkServer) -> None:
    with grpc.insecure_channel(hallmark.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=RPC_DEADLINE_SECONDS)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
