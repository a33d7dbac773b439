"""Hallmark signatures verified by the Python `cryptography` package."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils

from conftest import StartServer
from hallmark.v1 import signer_pb2
from helpers import EXPECTED_SALT, MANIFEST_BYTES, flip_bit, load_rsa_public_key

# (salt mode, key bits, salt_length options that must verify, options that must not)
# PSS.MAX_LENGTH and PSS.AUTO both accept any salt length when verifying.
# The exact integer and the options that must fail check that the server
# signed with the salt length it reports.
CASES = [
    pytest.param(
        "digest",
        2048,
        {"MAX_LENGTH": padding.PSS.MAX_LENGTH, "AUTO": padding.PSS.AUTO,
         "DIGEST_LENGTH": padding.PSS.DIGEST_LENGTH, "32": 32},
        {"222": 222, "31": 31},
        id="digest-2048",
    ),
    pytest.param(
        "digest",
        4096,
        {"MAX_LENGTH": padding.PSS.MAX_LENGTH, "AUTO": padding.PSS.AUTO,
         "DIGEST_LENGTH": padding.PSS.DIGEST_LENGTH, "32": 32},
        {"478": 478},
        id="digest-4096",
    ),
    pytest.param(
        "max",
        2048,
        {"MAX_LENGTH": padding.PSS.MAX_LENGTH, "AUTO": padding.PSS.AUTO, "222": 222},
        {"DIGEST_LENGTH": padding.PSS.DIGEST_LENGTH, "221": 221},
        id="max-2048",
    ),
    pytest.param(
        "max",
        3072,
        {"MAX_LENGTH": padding.PSS.MAX_LENGTH, "AUTO": padding.PSS.AUTO, "350": 350},
        {"DIGEST_LENGTH": padding.PSS.DIGEST_LENGTH},
        id="max-3072",
    ),
]


def pss(salt_length: Any) -> padding.PSS:
    """Build PSS padding with MGF1-SHA-256 and the given salt length option."""
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt_length)


def verifies(public_key: Any, signature: bytes, message: bytes, salt_length: Any) -> bool:
    """Tell whether signature is a valid RSA-PSS-SHA256 signature over message."""
    try:
        public_key.verify(signature, message, pss(salt_length), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


@pytest.mark.parametrize(("salt", "key_bits", "accepting", "rejecting"), CASES)
def test_signature_verifies_with_cryptography(
    start_hallmark: StartServer, salt: str, key_bits: int, accepting: dict, rejecting: dict
) -> None:
    server = start_hallmark(key_bits=key_bits, salt=salt)
    response = server.sign_bytes(MANIFEST_BYTES)
    (published,) = server.list_keys()
    public_key = load_rsa_public_key(published.public_key_pem)

    assert response.key.pss_salt_length == EXPECTED_SALT[(salt, key_bits)]
    assert published.pss_salt_length == EXPECTED_SALT[(salt, key_bits)]
    assert public_key.key_size == key_bits
    assert len(response.signature) == key_bits // 8
    assert response.key.key_id == published.key_id

    for name, salt_length in accepting.items():
        assert verifies(public_key, response.signature, MANIFEST_BYTES, salt_length), (
            f"salt_length={name} rejected a genuine signature"
        )
        for bit in (0, 8 * len(MANIFEST_BYTES) - 1):
            tampered = flip_bit(MANIFEST_BYTES, bit)
            with pytest.raises(InvalidSignature):
                public_key.verify(response.signature, tampered, pss(salt_length), hashes.SHA256())

    for name, salt_length in rejecting.items():
        assert not verifies(public_key, response.signature, MANIFEST_BYTES, salt_length), (
            f"salt_length={name} accepted a signature made with salt "
            f"{EXPECTED_SALT[(salt, key_bits)]}"
        )


def test_signature_verifies_over_prehashed_digest(start_hallmark: StartServer) -> None:
    server = start_hallmark(key_bits=2048, salt="digest")
    digest = hashlib.sha256(MANIFEST_BYTES).digest()
    response = server.sign(digest)
    public_key = load_rsa_public_key(server.list_keys()[0].public_key_pem)
    prehashed = utils.Prehashed(hashes.SHA256())

    public_key.verify(response.signature, digest, pss(32), prehashed)
    with pytest.raises(InvalidSignature):
        public_key.verify(response.signature, flip_bit(digest, 5), pss(32), prehashed)


def test_sign_response_describes_key(start_hallmark: StartServer) -> None:
    server = start_hallmark(key_bits=2048, salt="digest")
    response = server.sign(hashlib.sha256(MANIFEST_BYTES).digest(), request_id="req-42")
    (published,) = server.list_keys()

    assert response.request_id == "req-42"
    assert response.key.key_name == "default"
    assert response.key.version == 1
    assert response.key.state == signer_pb2.KEY_STATE_ACTIVE
    assert response.key.algorithm == signer_pb2.SIGNATURE_ALGORITHM_RSA_PSS_SHA256
    assert response.key.key_bits == 2048
    assert response.key.public_key_der == b""
    assert response.key.public_key_pem == ""
    assert response.signed_at.seconds > 0
    assert published.key_name == "default"
    assert published.version == 1
    assert published.state == signer_pb2.KEY_STATE_ACTIVE
    assert published.algorithm == signer_pb2.SIGNATURE_ALGORITHM_RSA_PSS_SHA256
    assert published.key_bits == 2048


def test_signatures_differ_but_both_verify(start_hallmark: StartServer) -> None:
    server = start_hallmark(key_bits=2048, salt="digest")
    first = server.sign_bytes(MANIFEST_BYTES).signature
    second = server.sign_bytes(MANIFEST_BYTES).signature
    public_key = load_rsa_public_key(server.list_keys()[0].public_key_pem)

    # PSS draws a fresh random salt for each signature.
    assert first != second
    assert verifies(public_key, first, MANIFEST_BYTES, 32)
    assert verifies(public_key, second, MANIFEST_BYTES, 32)
