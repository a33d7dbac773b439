"""Client and Verifier against a real `hallmark serve` on a SoftHSM token."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest

from conftest import HallmarkServer, sample_manifest
from hallmark_client import (
    BadSignature,
    Client,
    InvalidRequestError,
    KeyNotConfiguredError,
    ReplayedOutput,
    UnavailableError,
    Verifier,
)
from hallmark_client.timeutil import parse_rfc3339

ALGORITHMS = ["rsa-pss-sha256", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "ed25519"]
ENCODINGS = {"ecdsa-p256-sha256": ["der", "p1363"], "ecdsa-p384-sha384": ["der", "p1363"]}


def change_one_byte(document: dict) -> dict:
    """Return a copy of document whose output differs in one byte of one string."""
    tampered = copy.deepcopy(document)
    model = tampered["output"]["model"]
    tampered["output"]["model"] = model[:-1] + chr(ord(model[-1]) ^ 1)
    return tampered


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("canonicalization", ["jcs", "python-sort-keys"])
def test_sign_then_verify(start_hallmark, algorithm: str, canonicalization: str) -> None:
    server: HallmarkServer = start_hallmark(algorithm)
    verifier = Verifier(server.jwks_url)
    with Client(server.target) as client:
        for encoding in ENCODINGS.get(algorithm, [None]):
            before = datetime.now(timezone.utc)
            document = client.sign_output(
                sample_manifest(), canonicalization=canonicalization, signature_encoding=encoding
            )
            # What a consumer gets is the JSON text, not the producer's dict.
            received = json.loads(json.dumps(document))
            assert received["algorithm"] == algorithm
            assert received["canonicalization"] == canonicalization
            assert received["key_version"] == 1
            assert parse_rfc3339(received["signed_at"]) >= before.replace(microsecond=0)
            if encoding is not None:
                assert received["signature_encoding"] == encoding
            else:
                assert "signature_encoding" not in received

            verdict = verifier.verify(copy.deepcopy(received))
            assert verdict.key_id == received["signing_key_id"]
            assert (verdict.key_name, verdict.key_version) == ("default", 1)
            assert (verdict.algorithm, verdict.canonicalization) == (algorithm, canonicalization)

            with pytest.raises(BadSignature):
                verifier.verify(change_one_byte(received))
            with pytest.raises(ReplayedOutput):
                verifier.verify(received)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_list_keys_reports_the_signing_key(start_hallmark, algorithm: str) -> None:
    server = start_hallmark(algorithm)
    with Client(server.target) as client:
        keys = client.list_keys()
        document = client.sign_output(sample_manifest())
    active = [key for key in keys if key.state == "active"]
    assert [key.key_id for key in active] == [document["signing_key_id"]]
    assert active[0].algorithm == algorithm
    assert active[0].public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert active[0].verify_until is not None and active[0].verify_until > datetime.now(timezone.utc)


def test_plain_shape_consumer_still_works(start_hallmark) -> None:
    server = start_hallmark("rsa-pss-sha256")
    with Client(server.target) as client:
        document = client.sign_output(sample_manifest(), canonicalization="python-sort-keys")
    plain = {name: document[name] for name in ("output", "signature", "signing_key_id")}
    assert Verifier(server.jwks_url).verify(plain).canonicalization == "python-sort-keys"


def test_unknown_key_name_raises_not_found(start_hallmark) -> None:
    server = start_hallmark("ed25519")
    with Client(server.target, key_name="no-such-key") as client:
        with pytest.raises(KeyNotConfiguredError) as raised:
            client.sign_output(sample_manifest())
    assert raised.value.code == "NOT_FOUND"


def test_unreachable_server_raises_unavailable(tmp_path) -> None:
    with Client(f"unix:{tmp_path}/absent.sock", timeout=1.0) as client:
        with pytest.raises(UnavailableError) as raised:
            client.sign_output(sample_manifest())
    assert raised.value.code == "UNAVAILABLE"
    assert raised.value.retryable


def test_host_port_target(start_hallmark) -> None:
    server = start_hallmark("ecdsa-p384-sha384", tcp=True)
    assert server.target.startswith("127.0.0.1:")
    with Client(server.target) as client:
        document = client.sign_output(sample_manifest())
    assert Verifier(server.jwks_url).verify(document).algorithm == "ecdsa-p384-sha384"


@pytest.mark.parametrize("algorithm", ["ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha256"])
def test_sign_outputs_signs_a_batch(start_hallmark, algorithm: str) -> None:
    server: HallmarkServer = start_hallmark(algorithm)
    verifier = Verifier(server.jwks_url)
    manifests = [dict(sample_manifest(), prediction={"label": "cat", "rank": n}) for n in range(5)]
    with Client(server.target) as client:
        documents = client.sign_outputs(manifests)
        assert len(documents) == 5
        for manifest, document in zip(manifests, documents):
            assert isinstance(document, dict), document
            assert document["output"] is manifest
            assert document["algorithm"] == algorithm
            received = json.loads(json.dumps(document))
            verdict = verifier.verify(received)
            assert (verdict.key_name, verdict.key_version) == ("default", 1)
        with pytest.raises(BadSignature):
            verifier.verify(change_one_byte(json.loads(json.dumps(documents[0]))))
        with pytest.raises(ValueError, match="manifests is empty"):
            client.sign_outputs([])


def test_sign_outputs_over_the_server_limit_is_refused(start_hallmark) -> None:
    server: HallmarkServer = start_hallmark("ecdsa-p256-sha256")
    with Client(server.target) as client:
        with pytest.raises(InvalidRequestError) as refused:
            client.sign_outputs([sample_manifest()] * 257)
    assert refused.value.code == "INVALID_ARGUMENT"
    assert "the maximum is 256 (signing.max_batch)" in refused.value.details
