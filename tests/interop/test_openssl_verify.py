"""Hallmark signatures verified by the `openssl` command-line tool.

`openssl pkeyutl -verify` checks the signature over the 32-byte digest, and
`openssl dgst -sha256 -verify` hashes the manifest itself, the way a verifier
that never saw the digest would. In OpenSSL 3, rsa_pss_saltlen "max" on verify
requires the maximum salt exactly, while "auto" accepts any salt length.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import HallmarkServer, StartServer
from helpers import EXPECTED_SALT, MANIFEST_BYTES, flip_bit

PKEYUTL_OK = "Signature Verified Successfully"
PKEYUTL_FAILED = "Signature Verification Failure"
DGST_OK = "Verified OK"
DGST_FAILED = "Verification failure"

# (salt mode, rsa_pss_saltlen values that must verify, values that must not)
CASES = [
    pytest.param("digest", ["32", "-1", "digest", "auto"], ["max", "222", "31"], id="digest-2048"),
    pytest.param("max", ["222", "max", "auto"], ["32", "-1", "digest", "221"], id="max-2048"),
]


def openssl() -> str:
    """Return the openssl executable path, failing the test when it is missing."""
    path = shutil.which("openssl")
    assert path is not None, "openssl not found on PATH; install it (apt-get install openssl)"
    return path


def pkeyutl_verify(work: Path, digest_file: Path, salt: str) -> subprocess.CompletedProcess[str]:
    """Verify sig.bin over a digest file with `openssl pkeyutl`."""
    command = [
        openssl(), "pkeyutl", "-verify", "-pubin", "-inkey", str(work / "key.pem"),
        "-in", str(digest_file), "-sigfile", str(work / "sig.bin"),
        "-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_padding_mode:pss",
        "-pkeyopt", f"rsa_pss_saltlen:{salt}",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def dgst_verify(work: Path, manifest_file: Path, salt: str) -> subprocess.CompletedProcess[str]:
    """Verify sig.bin over a manifest file with `openssl dgst -sha256`."""
    command = [
        openssl(), "dgst", "-sha256", "-verify", str(work / "key.pem"),
        "-sigopt", "rsa_padding_mode:pss", "-sigopt", f"rsa_pss_saltlen:{salt}",
        "-signature", str(work / "sig.bin"), str(manifest_file),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def write_signed_files(server: HallmarkServer, work: Path) -> None:
    """Sign the sample manifest and write key.pem, sig.bin, manifest.json and digest.bin.

    Also writes tampered copies: manifest-flipped.json and digest-flipped.bin,
    each with one bit inverted.
    """
    response = server.sign_bytes(MANIFEST_BYTES)
    (published,) = server.list_keys()
    digest = hashlib.sha256(MANIFEST_BYTES).digest()
    (work / "key.pem").write_text(published.public_key_pem, encoding="ascii")
    (work / "sig.bin").write_bytes(response.signature)
    (work / "manifest.json").write_bytes(MANIFEST_BYTES)
    (work / "digest.bin").write_bytes(digest)
    (work / "manifest-flipped.json").write_bytes(flip_bit(MANIFEST_BYTES, 3))
    (work / "digest-flipped.bin").write_bytes(flip_bit(digest, 3))


@pytest.mark.parametrize(("salt", "accepting", "rejecting"), CASES)
def test_openssl_verifies_signature(
    start_hallmark: StartServer, tmp_path: Path, salt: str, accepting: list[str], rejecting: list[str]
) -> None:
    server = start_hallmark(key_bits=2048, salt=salt)
    work = tmp_path / "openssl"
    work.mkdir()
    write_signed_files(server, work)
    assert server.list_keys()[0].pss_salt_length == EXPECTED_SALT[(salt, 2048)]

    for saltlen in accepting:
        result = pkeyutl_verify(work, work / "digest.bin", saltlen)
        assert (result.returncode, result.stdout.strip()) == (0, PKEYUTL_OK), (
            f"pkeyutl rsa_pss_saltlen:{saltlen}: {result.stderr}"
        )
        result = dgst_verify(work, work / "manifest.json", saltlen)
        assert (result.returncode, result.stdout.strip()) == (0, DGST_OK), (
            f"dgst rsa_pss_saltlen:{saltlen}: {result.stderr}"
        )

        result = pkeyutl_verify(work, work / "digest-flipped.bin", saltlen)
        assert (result.returncode, result.stdout.strip()) == (1, PKEYUTL_FAILED), (
            f"pkeyutl rsa_pss_saltlen:{saltlen} on a flipped digest"
        )
        result = dgst_verify(work, work / "manifest-flipped.json", saltlen)
        assert (result.returncode, result.stdout.strip()) == (1, DGST_FAILED), (
            f"dgst rsa_pss_saltlen:{saltlen} on a flipped manifest"
        )

    for saltlen in rejecting:
        result = pkeyutl_verify(work, work / "digest.bin", saltlen)
        assert (result.returncode, result.stdout.strip()) == (1, PKEYUTL_FAILED), (
            f"pkeyutl rsa_pss_saltlen:{saltlen} accepted a salt-{salt} signature"
        )
        result = dgst_verify(work, work / "manifest.json", saltlen)
        assert (result.returncode, result.stdout.strip()) == (1, DGST_FAILED), (
            f"dgst rsa_pss_saltlen:{saltlen} accepted a salt-{salt} signature"
        )


def test_openssl_reads_published_der(start_hallmark: StartServer, tmp_path: Path) -> None:
    server = start_hallmark(key_bits=2048, salt="digest")
    (published,) = server.list_keys()
    der_file = tmp_path / "key.der"
    der_file.write_bytes(published.public_key_der)

    result = subprocess.run(
        [openssl(), "pkey", "-pubin", "-inform", "DER", "-in", str(der_file), "-outform", "PEM"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == published.public_key_pem.strip()
