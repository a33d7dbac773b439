"""Values and helpers shared by the interop tests."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# A manifest shaped like the ones examples/model_service.py signs, with fixed
# values so that failures are reproducible.
SAMPLE_MANIFEST = {
    "input_sha256": "3d1cb675b7b6d6362db16256c06f9cd6ff327897e6b854a5d00d8356317ca420",
    "model": "iris-logistic-regression",
    "model_version": "sklearn-1.5.0+params.000000000000",
    "predicted_class": "setosa",
    "prediction": 0,
    "probabilities": {"setosa": 0.981657, "versicolor": 0.018343, "virginica": 0.0},
    "timestamp": "2026-01-01T00:00:00.000000Z",
}
MANIFEST_BYTES = json.dumps(SAMPLE_MANIFEST, sort_keys=True).encode("utf-8")

# PSS salt length in bytes that each `--salt` mode of dev-token.sh must give:
# 32 (the SHA-256 output size) for "digest", and emLen - hLen - 2 for "max",
# where emLen is the modulus size in bytes and hLen is 32.
EXPECTED_SALT = {
    ("digest", 2048): 32,
    ("digest", 3072): 32,
    ("digest", 4096): 32,
    ("max", 2048): 256 - 32 - 2,
    ("max", 3072): 384 - 32 - 2,
    ("max", 4096): 512 - 32 - 2,
}


def flip_bit(data: bytes, bit: int = 0) -> bytes:
    """Return a copy of data with one bit inverted, counting from the first byte's low bit."""
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def load_rsa_public_key(pem: str) -> rsa.RSAPublicKey:
    """Load a PEM SubjectPublicKeyInfo and check that it is an RSA key."""
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    assert isinstance(key, rsa.RSAPublicKey), f"ListKeys returned a {type(key).__name__}, expected RSA"
    return key
