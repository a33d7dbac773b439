"""key_id is the RFC 7638 JWK thumbprint of the published public key."""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import consumer
from conftest import StartServer
from helpers import load_rsa_public_key

# RFC 7638, section 3.1: the example RSA key and its thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n"
    "3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0z"
    "gdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF"
    "Cur-kEgU8awapJzKnqDKgw"
)
RFC7638_E = "AQAB"
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def b64url(data: bytes) -> str:
    """Encode bytes as base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprint_from_members(n: str, e: str) -> str:
    """Compute an RSA JWK thumbprint from its base64url n and e members.

    json.dumps with sort_keys and compact separators gives the RFC 7638 form:
    members e, kty, n in lexicographic order and no whitespace.
    """
    jwk = json.dumps({"e": e, "kty": "RSA", "n": n}, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(jwk.encode("utf-8")).digest())


def thumbprint_from_pem(pem: str) -> str:
    """Compute the RFC 7638 thumbprint of an RSA public key given as PEM."""
    numbers = load_rsa_public_key(pem).public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return thumbprint_from_members(b64url(n), b64url(e))


def test_thumbprint_matches_rfc7638_example() -> None:
    assert thumbprint_from_members(RFC7638_N, RFC7638_E) == RFC7638_THUMBPRINT


def test_consumer_thumbprint_matches_rfc7638_example() -> None:
    n = int.from_bytes(b64url_decode(RFC7638_N), "big")
    e = int.from_bytes(b64url_decode(RFC7638_E), "big")
    public_key = rsa.RSAPublicNumbers(e, n).public_key()
    assert consumer.jwk_thumbprint(public_key) == RFC7638_THUMBPRINT


def test_key_id_is_thumbprint_of_pem(start_hallmark: StartServer) -> None:
    server = start_hallmark(key_bits=2048, salt="digest")
    (published,) = server.list_keys()
    expected = thumbprint_from_pem(published.public_key_pem)

    assert published.key_id == expected
    assert len(published.key_id) == 43
    assert "=" not in published.key_id


def test_sign_names_listed_key_id(start_hallmark: StartServer) -> None:
    server = start_hallmark(key_bits=2048, salt="digest")
    (published,) = server.list_keys()
    response = server.sign(hashlib.sha256(b"key id check").digest())

    assert response.key.key_id == thumbprint_from_pem(published.public_key_pem)


def test_der_and_pem_encode_same_key(start_hallmark: StartServer) -> None:
    server = start_hallmark(key_bits=2048, salt="digest")
    (published,) = server.list_keys()
    from_pem = load_rsa_public_key(published.public_key_pem)
    from_der = serialization.load_der_public_key(published.public_key_der)

    assert published.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert from_pem.public_numbers() == from_der.public_numbers()
    assert from_pem.public_numbers().e == 65537
    assert thumbprint_from_pem(published.public_key_pem) == published.key_id


def test_tokens_get_distinct_key_ids(start_hallmark: StartServer) -> None:
    first = start_hallmark(key_bits=2048, salt="digest")
    second = start_hallmark(key_bits=2048, salt="digest")

    first_id = first.list_keys()[0].key_id
    second_id = second.list_keys()[0].key_id
    assert first_id != second_id
    assert first_id == thumbprint_from_pem(first.list_keys()[0].public_key_pem)
    assert second_id == thumbprint_from_pem(second.list_keys()[0].public_key_pem)
