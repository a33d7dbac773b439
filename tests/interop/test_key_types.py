"""Signatures of every key type verify with independent verifiers.

For each algorithm that softhsm/dev-token.sh --algorithm accepts, a server on
its own token signs the digest of a manifest. Python `cryptography` verifies
the signature over the manifest bytes, `openssl pkeyutl` over the digest, and
for RSA and ECDSA `openssl dgst` over the manifest. The key ID is recomputed
from the published PEM as an RFC 7638 thumbprint, and jwcrypto loads the JWKS
document. ECDSA signatures are requested in both encodings, DER and IEEE P1363.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from jwcrypto import jwk

from conftest import HallmarkServer, StartServer
from hallmark.v1 import signer_pb2
from helpers import MANIFEST_BYTES, flip_bit
from test_openssl_verify import DGST_FAILED, DGST_OK, PKEYUTL_FAILED, PKEYUTL_OK, openssl

RSA_KEY_BITS = 2048
PSS_SALT_LENGTH = 32
FLIPPED_BIT = 3


@dataclass(frozen=True)
class KeyType:
    """One signature algorithm of dev-token.sh and everything the service must report for it."""

    name: str
    family: str
    hash_name: str
    algorithm: int
    key_bits: int
    pss_salt_length: int
    jwk_alg: str
    jwk_kty: str
    jwk_crv: str | None

    @property
    def hash_algorithm(self) -> int:
        """HashAlgorithm value that a correct SignRequest for this key carries."""
        if self.hash_name == "sha384":
            return signer_pb2.HASH_ALGORITHM_SHA384
        return signer_pb2.HASH_ALGORITHM_SHA256

    @property
    def hash(self) -> hashes.HashAlgorithm:
        """The `cryptography` hash object of this key type's digest."""
        return hashes.SHA384() if self.hash_name == "sha384" else hashes.SHA256()

    @property
    def coordinate_bytes(self) -> int:
        """Byte length of one EC coordinate, of r and of s in a P1363 signature."""
        assert self.family == "ecdsa", f"{self.name} is not an ECDSA key type"
        return self.key_bits // 8

    def digest(self, data: bytes) -> bytes:
        """Return the digest of data that the service signs for this key type."""
        return hashlib.new(self.hash_name, data).digest()


KEY_TYPES = [
    KeyType(
        "rsa-pss-sha256", "rsa-pss", "sha256", signer_pb2.SIGNATURE_ALGORITHM_RSA_PSS_SHA256,
        RSA_KEY_BITS, PSS_SALT_LENGTH, "PS256", "RSA", None,
    ),
    KeyType(
        "rsa-pkcs1-sha256", "rsa-pkcs1", "sha256", signer_pb2.SIGNATURE_ALGORITHM_RSA_PKCS1V15_SHA256,
        RSA_KEY_BITS, 0, "RS256", "RSA", None,
    ),
    KeyType(
        "ecdsa-p256-sha256", "ecdsa", "sha256", signer_pb2.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256,
        256, 0, "ES256", "EC", "P-256",
    ),
    KeyType(
        "ecdsa-p384-sha384", "ecdsa", "sha384", signer_pb2.SIGNATURE_ALGORITHM_ECDSA_P384_SHA384,
        384, 0, "ES384", "EC", "P-384",
    ),
    KeyType(
        "ed25519", "ed25519", "sha256", signer_pb2.SIGNATURE_ALGORITHM_ED25519,
        256, 0, "EdDSA", "OKP", "Ed25519",
    ),
]
ALL_KEY_TYPES = [pytest.param(key_type, id=key_type.name) for key_type in KEY_TYPES]
ECDSA_KEY_TYPES = [pytest.param(k, id=k.name) for k in KEY_TYPES if k.family == "ecdsa"]
NON_ECDSA_KEY_TYPES = [pytest.param(k, id=k.name) for k in KEY_TYPES if k.family != "ecdsa"]

UNSPECIFIED_HASH = signer_pb2.HASH_ALGORITHM_UNSPECIFIED
SHA256 = signer_pb2.HASH_ALGORITHM_SHA256
SHA384 = signer_pb2.HASH_ALGORITHM_SHA384
# (digest length, hash_algorithm) pairs that each key type must reject with
# INVALID_ARGUMENT. Only P-384 takes 48 bytes with SHA384, and every other key
# type takes 32 bytes with SHA256 or UNSPECIFIED.
MISMATCHES = {
    "rsa-pss-sha256": [(48, SHA384), (32, SHA384)],
    "rsa-pkcs1-sha256": [(48, SHA384), (32, SHA384)],
    "ecdsa-p256-sha256": [(48, SHA384), (48, SHA256)],
    "ecdsa-p384-sha384": [
        (32, SHA256), (32, UNSPECIFIED_HASH), (32, SHA384), (48, SHA256), (48, UNSPECIFIED_HASH),
    ],
    "ed25519": [(48, SHA384), (32, SHA384)],
}


def start_key_type(start_hallmark: StartServer, key_type: KeyType) -> HallmarkServer:
    """Start a server on a fresh token whose default key has key_type's algorithm."""
    return start_hallmark(key_bits=RSA_KEY_BITS, salt="digest", algorithm=key_type.name)


def sign(
    server: HallmarkServer,
    digest: bytes,
    hash_algorithm: int,
    encoding: int = signer_pb2.SIGNATURE_ENCODING_UNSPECIFIED,
) -> signer_pb2.SignResponse:
    """Call Sign on the default key with the given digest, hash algorithm and encoding."""
    request = signer_pb2.SignRequest(
        digest=digest,
        hash_algorithm=hash_algorithm,
        signature_encoding=encoding,
        request_id="key-types",
    )
    return server.signer.Sign(request, timeout=10)


def sign_manifest(
    server: HallmarkServer,
    key_type: KeyType,
    encoding: int = signer_pb2.SIGNATURE_ENCODING_UNSPECIFIED,
) -> signer_pb2.SignResponse:
    """Sign the digest of the sample manifest as key_type requires."""
    return sign(server, key_type.digest(MANIFEST_BYTES), key_type.hash_algorithm, encoding)


def published_key(server: HallmarkServer) -> signer_pb2.KeyVersion:
    """Return the one key version that ListKeys publishes on a fresh token."""
    keys = server.list_keys()
    assert len(keys) == 1, f"a fresh token publishes one key version, ListKeys gave {len(keys)}"
    return keys[0]


def assert_key_fields(key_type: KeyType, key: signer_pb2.KeyVersion, source: str) -> None:
    """Check algorithm, key_bits and pss_salt_length of a KeyVersion against key_type."""
    algorithm = signer_pb2.SignatureAlgorithm.Name(key.algorithm)
    expected_algorithm = signer_pb2.SignatureAlgorithm.Name(key_type.algorithm)
    assert algorithm == expected_algorithm, (
        f"{source} for {key_type.name}: algorithm is {algorithm}, expected {expected_algorithm}"
    )
    assert key.key_bits == key_type.key_bits, (
        f"{source} for {key_type.name}: key_bits is {key.key_bits}, expected {key_type.key_bits}"
    )
    assert key.pss_salt_length == key_type.pss_salt_length, (
        f"{source} for {key_type.name}: pss_salt_length is {key.pss_salt_length}, "
        f"expected {key_type.pss_salt_length}"
    )


def b64url(data: bytes) -> str:
    """Encode bytes as base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def minimal_big_endian(value: int) -> bytes:
    """Encode a positive integer big-endian without leading zero bytes."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def required_members(pem: str) -> dict[str, str]:
    """Return the RFC 7638 required JWK members of a PEM SubjectPublicKeyInfo."""
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {
            "e": b64url(minimal_big_endian(numbers.e)),
            "kty": "RSA",
            "n": b64url(minimal_big_endian(numbers.n)),
        }
    if isinstance(key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48)}
        assert key.curve.name in curves, f"unexpected EC curve {key.curve.name}"
        crv, size = curves[key.curve.name]
        point = key.public_numbers()
        return {
            "crv": crv,
            "kty": "EC",
            "x": b64url(point.x.to_bytes(size, "big")),
            "y": b64url(point.y.to_bytes(size, "big")),
        }
    assert isinstance(key, ed25519.Ed25519PublicKey), f"unexpected key type {type(key).__name__}"
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}


def thumbprint(pem: str) -> str:
    """Compute the RFC 7638 SHA-256 thumbprint of a PEM public key, base64url without padding."""
    canonical = json.dumps(required_members(pem), sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def p1363_to_der(signature: bytes, coordinate_bytes: int) -> bytes:
    """Convert an IEEE P1363 ECDSA signature (r || s, fixed length) to DER."""
    assert len(signature) == 2 * coordinate_bytes, (
        f"P1363 signature is {len(signature)} bytes, expected {2 * coordinate_bytes}"
    )
    r = int.from_bytes(signature[:coordinate_bytes], "big")
    s = int.from_bytes(signature[coordinate_bytes:], "big")
    return encode_dss_signature(r, s)


def assert_minimal_der(signature: bytes, coordinate_bytes: int) -> None:
    """Check that signature is a DER ECDSA signature that re-encodes to the same bytes."""
    r, s = decode_dss_signature(signature)
    assert encode_dss_signature(r, s) == signature, "DER ECDSA signature is not minimal DER"
    limit = 1 << (8 * coordinate_bytes)
    assert 0 < r < limit, f"ECDSA r is out of range for a {8 * coordinate_bytes}-bit curve"
    assert 0 < s < limit, f"ECDSA s is out of range for a {8 * coordinate_bytes}-bit curve"


def verify_with_cryptography(key_type: KeyType, pem: str, signature: bytes, message: bytes) -> None:
    """Verify a signature over message with `cryptography`, raising InvalidSignature on failure.

    RSA and ECDSA verify over message with the key type's hash and also over
    its digest with Prehashed. Ed25519 verifies the digest of message as the
    message itself. ECDSA signatures must be DER here.
    """
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    digest = key_type.digest(message)
    if key_type.family == "ed25519":
        assert isinstance(key, ed25519.Ed25519PublicKey), f"{type(key).__name__} is not Ed25519"
        key.verify(signature, digest)
        return
    if key_type.family == "ecdsa":
        assert isinstance(key, ec.EllipticCurvePublicKey), f"{type(key).__name__} is not EC"
        key.verify(signature, message, ec.ECDSA(key_type.hash))
        key.verify(signature, digest, ec.ECDSA(Prehashed(key_type.hash)))
        return
    assert isinstance(key, rsa.RSAPublicKey), f"{type(key).__name__} is not RSA"
    scheme: padding.AsymmetricPadding
    if key_type.family == "rsa-pss":
        scheme = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
    else:
        scheme = padding.PKCS1v15()
    key.verify(signature, message, scheme, key_type.hash)
    key.verify(signature, digest, scheme, Prehashed(key_type.hash))


def assert_cryptography_verifies(key_type: KeyType, pem: str, signature: bytes) -> None:
    """Check that `cryptography` accepts signature over the manifest and rejects a one-bit change."""
    try:
        verify_with_cryptography(key_type, pem, signature, MANIFEST_BYTES)
    except InvalidSignature:
        pytest.fail(f"cryptography rejected the {key_type.name} signature over the manifest")
    with pytest.raises(InvalidSignature):
        verify_with_cryptography(key_type, pem, signature, flip_bit(MANIFEST_BYTES, FLIPPED_BIT))


def pkeyutl_verify(key_type: KeyType, work: Path, input_file: Path) -> subprocess.CompletedProcess[str]:
    """Verify work/sig.bin over a digest file with `openssl pkeyutl -verify`."""
    command = [
        openssl(), "pkeyutl", "-verify", "-pubin", "-inkey", str(work / "key.pem"),
        "-sigfile", str(work / "sig.bin"),
    ]
    if key_type.family == "ed25519":
        command += ["-rawin", "-in", str(input_file)]
    else:
        command += ["-in", str(input_file), "-pkeyopt", f"digest:{key_type.hash_name}"]
    if key_type.family == "rsa-pss":
        command += [
            "-pkeyopt", "rsa_padding_mode:pss",
            "-pkeyopt", f"rsa_pss_saltlen:{PSS_SALT_LENGTH}",
            "-pkeyopt", "rsa_mgf1_md:sha256",
        ]
    elif key_type.family == "rsa-pkcs1":
        command += ["-pkeyopt", "rsa_padding_mode:pkcs1"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def dgst_verify(key_type: KeyType, work: Path, manifest_file: Path) -> subprocess.CompletedProcess[str]:
    """Verify work/sig.bin over a manifest file with `openssl dgst -sha256|-sha384 -verify`."""
    command = [openssl(), "dgst", f"-{key_type.hash_name}", "-verify", str(work / "key.pem")]
    if key_type.family == "rsa-pss":
        command += [
            "-sigopt", "rsa_padding_mode:pss",
            "-sigopt", f"rsa_pss_saltlen:{PSS_SALT_LENGTH}",
            "-sigopt", "rsa_mgf1_md:sha256",
        ]
    elif key_type.family == "rsa-pkcs1":
        command += ["-sigopt", "rsa_padding_mode:pkcs1"]
    command += ["-signature", str(work / "sig.bin"), str(manifest_file)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def write_openssl_inputs(key_type: KeyType, work: Path, pem: str, signature: bytes) -> None:
    """Write key.pem, sig.bin, manifest.json, digest.bin and one-bit-flipped copies into work."""
    work.mkdir(parents=True, exist_ok=True)
    digest = key_type.digest(MANIFEST_BYTES)
    (work / "key.pem").write_text(pem, encoding="ascii")
    (work / "sig.bin").write_bytes(signature)
    (work / "manifest.json").write_bytes(MANIFEST_BYTES)
    (work / "digest.bin").write_bytes(digest)
    (work / "manifest-flipped.json").write_bytes(flip_bit(MANIFEST_BYTES, FLIPPED_BIT))
    (work / "digest-flipped.bin").write_bytes(flip_bit(digest, FLIPPED_BIT))


def assert_openssl_result(
    result: subprocess.CompletedProcess[str], expected: tuple[int, str], what: str
) -> None:
    """Check an openssl run's exit code and stripped stdout against expected."""
    expected_code, expected_output = expected
    assert result.returncode == expected_code, (
        f"{what}: exit code is {result.returncode}, expected {expected_code}. "
        f"stdout: {result.stdout.strip()!r}, stderr:\n{result.stderr}"
    )
    assert result.stdout.strip() == expected_output, (
        f"{what}: stdout is {result.stdout.strip()!r}, expected {expected_output!r}"
    )


def assert_openssl_verifies(key_type: KeyType, work: Path, pem: str, signature: bytes) -> None:
    """Check that openssl accepts a DER or raw signature and rejects flipped inputs.

    `pkeyutl` runs for every key type; `dgst` runs for RSA and ECDSA, which
    hash the manifest themselves.
    """
    write_openssl_inputs(key_type, work, pem, signature)
    name = key_type.name
    assert_openssl_result(
        pkeyutl_verify(key_type, work, work / "digest.bin"), (0, PKEYUTL_OK), f"pkeyutl {name}"
    )
    assert_openssl_result(
        pkeyutl_verify(key_type, work, work / "digest-flipped.bin"),
        (1, PKEYUTL_FAILED),
        f"pkeyutl {name} on a flipped digest",
    )
    if key_type.family == "ed25519":
        return
    assert_openssl_result(
        dgst_verify(key_type, work, work / "manifest.json"), (0, DGST_OK), f"dgst {name}"
    )
    assert_openssl_result(
        dgst_verify(key_type, work, work / "manifest-flipped.json"),
        (1, DGST_FAILED),
        f"dgst {name} on a flipped manifest",
    )


def fetch_jwks_text(server: HallmarkServer) -> str:
    """Return the JWKS document the admin port serves, checking status and content type."""
    with urllib.request.urlopen(f"{server.admin_url}/.well-known/jwks.json", timeout=10) as response:
        assert response.status == 200, f"JWKS answered HTTP {response.status}"
        content_type = response.headers["Content-Type"]
        assert content_type == "application/jwk-set+json", f"JWKS Content-Type is {content_type}"
        return response.read().decode("utf-8")


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES)
def test_cryptography_verifies_signature(start_hallmark: StartServer, key_type: KeyType) -> None:
    server = start_key_type(start_hallmark, key_type)
    response = sign_manifest(server, key_type)
    published = published_key(server)

    assert_key_fields(key_type, response.key, "SignResponse.key")
    assert response.key.key_id == published.key_id, "Sign and ListKeys name different key IDs"
    encoding = signer_pb2.SignatureEncoding.Name(response.signature_encoding)
    expected = "SIGNATURE_ENCODING_UNSPECIFIED"
    if key_type.family == "ecdsa":
        expected = "SIGNATURE_ENCODING_DER"
    assert encoding == expected, (
        f"{key_type.name}: signature_encoding is {encoding}, expected {expected}"
    )
    if key_type.family == "ecdsa":
        assert_minimal_der(response.signature, key_type.coordinate_bytes)
    elif key_type.family == "ed25519":
        assert len(response.signature) == 64, f"Ed25519 signature is {len(response.signature)} bytes"
    else:
        assert len(response.signature) == RSA_KEY_BITS // 8, (
            f"RSA signature is {len(response.signature)} bytes, expected {RSA_KEY_BITS // 8}"
        )
    assert_cryptography_verifies(key_type, published.public_key_pem, response.signature)


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES)
def test_openssl_verifies_signature(
    start_hallmark: StartServer, tmp_path: Path, key_type: KeyType
) -> None:
    server = start_key_type(start_hallmark, key_type)
    response = sign_manifest(server, key_type)
    published = published_key(server)
    assert_openssl_verifies(key_type, tmp_path / "openssl", published.public_key_pem, response.signature)


@pytest.mark.parametrize("key_type", ECDSA_KEY_TYPES)
def test_ecdsa_signature_encodings(
    start_hallmark: StartServer, tmp_path: Path, key_type: KeyType
) -> None:
    server = start_key_type(start_hallmark, key_type)
    pem = published_key(server).public_key_pem
    size = key_type.coordinate_bytes

    for requested in (signer_pb2.SIGNATURE_ENCODING_DER, signer_pb2.SIGNATURE_ENCODING_UNSPECIFIED):
        label = signer_pb2.SignatureEncoding.Name(requested)
        response = sign_manifest(server, key_type, requested)
        encoding = signer_pb2.SignatureEncoding.Name(response.signature_encoding)
        assert encoding == "SIGNATURE_ENCODING_DER", f"request {label}: signature_encoding is {encoding}"
        assert_minimal_der(response.signature, size)
        assert_cryptography_verifies(key_type, pem, response.signature)
        assert_openssl_verifies(key_type, tmp_path / label, pem, response.signature)

    response = sign_manifest(server, key_type, signer_pb2.SIGNATURE_ENCODING_P1363)
    encoding = signer_pb2.SignatureEncoding.Name(response.signature_encoding)
    assert encoding == "SIGNATURE_ENCODING_P1363", f"request P1363: signature_encoding is {encoding}"
    assert len(response.signature) == 2 * size, (
        f"{key_type.name} P1363 signature is {len(response.signature)} bytes, expected {2 * size}"
    )
    der = p1363_to_der(response.signature, size)
    assert_cryptography_verifies(key_type, pem, der)
    assert_openssl_verifies(key_type, tmp_path / "p1363", pem, der)


@pytest.mark.parametrize("key_type", NON_ECDSA_KEY_TYPES)
def test_signature_encoding_ignored_without_ecdsa(
    start_hallmark: StartServer, key_type: KeyType
) -> None:
    server = start_key_type(start_hallmark, key_type)
    pem = published_key(server).public_key_pem
    for requested in (signer_pb2.SIGNATURE_ENCODING_DER, signer_pb2.SIGNATURE_ENCODING_P1363):
        label = signer_pb2.SignatureEncoding.Name(requested)
        response = sign_manifest(server, key_type, requested)
        encoding = signer_pb2.SignatureEncoding.Name(response.signature_encoding)
        assert encoding == "SIGNATURE_ENCODING_UNSPECIFIED", (
            f"{key_type.name} with {label}: signature_encoding is {encoding}, expected UNSPECIFIED"
        )
        assert_cryptography_verifies(key_type, pem, response.signature)


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES)
def test_key_id_is_thumbprint(start_hallmark: StartServer, key_type: KeyType) -> None:
    server = start_key_type(start_hallmark, key_type)
    published = published_key(server)
    assert_key_fields(key_type, published, "ListKeys")
    assert published.key_id == thumbprint(published.public_key_pem), (
        f"{key_type.name}: key_id {published.key_id} is not the RFC 7638 thumbprint of the PEM"
    )
    spki = serialization.load_der_public_key(published.public_key_der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki.decode("ascii").strip() == published.public_key_pem.strip(), (
        "public_key_der and public_key_pem contain different keys"
    )


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES)
def test_jwks_describes_key(start_hallmark: StartServer, key_type: KeyType) -> None:
    server = start_key_type(start_hallmark, key_type)
    published = published_key(server)
    text = fetch_jwks_text(server)

    key_set = jwk.JWKSet.from_json(text)
    loaded = list(key_set["keys"])
    assert len(loaded) == 1, f"JWKS contains {len(loaded)} keys, expected 1"
    (key,) = loaded
    assert key["kid"] == published.key_id, "JWKS kid differs from the ListKeys key_id"
    assert key.thumbprint() == key["kid"], "jwcrypto's thumbprint differs from kid"
    assert key.export_to_pem().decode("ascii").strip() == published.public_key_pem.strip(), (
        "JWKS key material differs from the ListKeys PEM"
    )

    (member,) = json.loads(text)["keys"]
    expected = {"alg": key_type.jwk_alg, "kty": key_type.jwk_kty, "crv": key_type.jwk_crv, "use": "sig"}
    for name, value in expected.items():
        assert member.get(name) == value, f"JWKS {name} is {member.get(name)!r}, expected {value!r}"
    members = required_members(published.public_key_pem)
    assert {name: member[name] for name in members} == members, (
        f"JWKS key members differ from the RFC 7638 members of the PEM: {member}"
    )
    if key_type.family == "ecdsa":
        for coordinate in ("x", "y"):
            length = len(b64url_decode(member[coordinate]))
            assert length == key_type.coordinate_bytes, (
                f"JWKS {coordinate} is {length} bytes, expected {key_type.coordinate_bytes}"
            )


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES)
def test_digest_mismatch_is_invalid_argument(start_hallmark: StartServer, key_type: KeyType) -> None:
    server = start_key_type(start_hallmark, key_type)
    for length, hash_algorithm in MISMATCHES[key_type.name]:
        label = f"{length}-byte digest with {signer_pb2.HashAlgorithm.Name(hash_algorithm)}"
        digest = hashlib.new("sha256" if length == 32 else "sha384", MANIFEST_BYTES).digest()
        try:
            sign(server, digest, hash_algorithm)
        except grpc.RpcError as error:
            code = error.code()
        else:
            pytest.fail(f"{key_type.name} signed a {label}, expected INVALID_ARGUMENT")
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (
            f"{key_type.name} returned {code.name} for a {label}, expected INVALID_ARGUMENT"
        )

    response = sign_manifest(server, key_type)
    assert_cryptography_verifies(key_type, published_key(server).public_key_pem, response.signature)
