"""SignBatch signatures verified by the Python `cryptography` package."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, utils

from conftest import RPC_DEADLINE_SECONDS, StartServer
from hallmark.v1 import signer_pb2

MESSAGES = [f"prediction {n}".encode() for n in range(8)]


def batch_request(messages: list[bytes], encoding: int) -> signer_pb2.SignBatchRequest:
    return signer_pb2.SignBatchRequest(
        items=[
            signer_pb2.SignBatchItem(digest=hashlib.sha256(m).digest(), request_id=f"item-{i}")
            for i, m in enumerate(messages)
        ],
        hash_algorithm=signer_pb2.HASH_ALGORITHM_SHA256,
        signature_encoding=encoding,
    )


def verify(algorithm: str, public_key, signature: bytes, message: bytes) -> None:
    """Raise InvalidSignature unless signature is the key's signature of message."""
    digest = hashlib.sha256(message).digest()
    if algorithm == "rsa-pss-sha256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public_key.verify(signature, digest, pss, utils.Prehashed(hashes.SHA256()))
    elif algorithm == "ecdsa-p256-sha256":
        # P1363: r and s, 32 bytes each.
        assert len(signature) == 64
        der = utils.encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        public_key.verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    else:
        assert isinstance(public_key, ed25519.Ed25519PublicKey)
        public_key.verify(signature, digest)


@pytest.mark.parametrize("algorithm", ["rsa-pss-sha256", "ecdsa-p256-sha256", "ed25519"])
def test_every_batch_signature_verifies(start_hallmark: StartServer, algorithm: str) -> None:
    server = start_hallmark(key_bits=2048, salt="digest", algorithm=algorithm)
    (key,) = server.list_keys()
    public_key = serialization.load_der_public_key(key.public_key_der)

    response = server.signer.SignBatch(
        batch_request(MESSAGES, signer_pb2.SIGNATURE_ENCODING_P1363), timeout=RPC_DEADLINE_SECONDS
    )

    assert response.key.key_id == key.key_id
    assert [r.request_id for r in response.results] == [f"item-{i}" for i in range(8)]
    for result, message in zip(response.results, MESSAGES):
        assert not result.HasField("error")
        verify(algorithm, public_key, result.signature, message)
        with pytest.raises(InvalidSignature):
            verify(algorithm, public_key, result.signature, message + b"!")


def test_a_batch_over_the_limit_is_refused(hallmark) -> None:
    request = batch_request([b"x"] * 257, signer_pb2.SIGNATURE_ENCODING_DER)
    with pytest.raises(grpc.RpcError) as refused:
        hallmark.signer.SignBatch(request, timeout=RPC_DEADLINE_SECONDS)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == (
        "items has 257 digests; the maximum is 256 (signing.max_batch); split the batch"
    )
