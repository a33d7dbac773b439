"""The example model service and consumer against a real Hallmark server."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

import consumer
import model_service
from conftest import REPO_ROOT, HallmarkServer, StartServer
from hallmark_client import BadSignature, Client, Verifier
from helpers import load_rsa_public_key

DOCUMENT_MEMBERS = {
    "algorithm", "canonicalization", "key_version", "output", "signature", "signed_at", "signing_key_id",
}
MANIFEST_MEMBERS = {
    "input_sha256", "model", "model_version", "predicted_class", "prediction", "probabilities", "timestamp",
}
MAX_AGE = timedelta(minutes=5)
# The bytes that each canonicalization signs, computed here without hallmark_client.
CANONICAL_BYTES = {
    "jcs": rfc8785.dumps,
    "python-sort-keys": lambda output: json.dumps(output, sort_keys=True).encode("utf-8"),
}


def sign_rows(server: HallmarkServer, count: int, canonicalization: str = "jcs") -> list[dict]:
    """Run the model service over the first count iris rows against server."""
    model = model_service.train_model()
    with Client(server.target) as client:
        rows = model_service.iris_rows(count)
        return list(model_service.serve_predictions(model, client, rows, canonicalization))


def round_trip(document: dict) -> dict:
    """Return document as a consumer reads it: serialized to JSON and parsed again."""
    return json.loads(json.dumps(document))


@pytest.mark.parametrize("canonicalization", ["jcs", "python-sort-keys"])
def test_model_service_output_verifies(hallmark: HallmarkServer, canonicalization: str) -> None:
    documents = [round_trip(document) for document in sign_rows(hallmark, 5, canonicalization)]
    (key,) = hallmark.list_keys()
    public_key = load_rsa_public_key(key.public_key_pem)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=key.pss_salt_length)

    assert len(documents) == 5
    for document, features in zip(documents, model_service.iris_rows(5)):
        assert set(document) == DOCUMENT_MEMBERS
        assert set(document["output"]) == MANIFEST_MEMBERS
        assert document["signing_key_id"] == key.key_id
        assert document["key_version"] == 1
        assert document["algorithm"] == "rsa-pss-sha256"
        assert document["canonicalization"] == canonicalization
        assert len(document["signature"]) == 2 * 256
        # The first 50 iris rows are all setosa, which the model separates cleanly.
        assert document["output"]["prediction"] == 0
        assert document["output"]["predicted_class"] == "setosa"
        encoded = json.dumps(features, separators=(",", ":")).encode("ascii")
        assert document["output"]["input_sha256"] == hashlib.sha256(encoded).hexdigest()
        # Raises InvalidSignature unless the signature covers exactly these bytes.
        message = CANONICAL_BYTES[canonicalization](document["output"])
        public_key.verify(bytes.fromhex(document["signature"]), message, pss, hashes.SHA256())

    lines = [json.dumps(document) + "\n" for document in documents]
    with Verifier(hallmark.jwks_url) as verifier:
        counts = consumer.verify_lines(lines, verifier, io.StringIO())
    assert counts.verified == 5
    assert counts.rejected == 0


def test_tamper_demo_rejects_four_edits(hallmark: HallmarkServer) -> None:
    (document,) = sign_rows(hallmark, 1)
    results = consumer.tamper_demo(round_trip(document), hallmark.jwks_url, MAX_AGE)
    reasons = {result.description: result.reason for result in results}

    assert reasons == {
        "changed prediction": "bad_signature",
        "signing_key_id of a key that was never published": "unknown_key",
        "replay of the accepted document": "replayed_output",
        "genuine document delivered later than max_age (1 s)": "stale_output",
    }
    assert [result.expected_reason for result in results] == [result.reason for result in results]
    assert all(result.passed for result in results)


def test_tamper_demo_leaves_document_unchanged(hallmark: HallmarkServer) -> None:
    (document,) = sign_rows(hallmark, 1)
    genuine = round_trip(document)
    before = json.dumps(genuine, sort_keys=True)

    consumer.tamper_demo(genuine, hallmark.jwks_url, MAX_AGE)

    assert json.dumps(genuine, sort_keys=True) == before


def test_swap_to_other_published_key_rejected(start_hallmark: StartServer, tmp_path: Path) -> None:
    signing = start_hallmark(key_bits=2048, salt="digest")
    other = start_hallmark(key_bits=2048, salt="digest")
    (document,) = sign_rows(signing, 1)
    key_sets = []
    for server in (signing, other):
        with urllib.request.urlopen(server.jwks_url, timeout=10) as response:
            key_sets.append(json.load(response))
    merged = tmp_path / "both-servers.jwks.json"
    merged.write_text(json.dumps({"keys": key_sets[0]["keys"] + key_sets[1]["keys"]}), encoding="utf-8")
    (other_key,) = other.list_keys()
    swapped = dict(round_trip(document), signing_key_id=other_key.key_id, key_version=other_key.version)

    with Verifier(str(merged)) as verifier:
        verifier.verify(round_trip(document))
        with pytest.raises(BadSignature) as rejected:
            verifier.verify(swapped)
    assert rejected.value.reason == "bad_signature"
    assert other_key.key_id in rejected.value.message


def run_example(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an example program with this interpreter and return its result."""
    command = [sys.executable, str(REPO_ROOT / "examples" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("canonicalization", ["jcs", "python-sort-keys"])
def test_example_programs_end_to_end(hallmark: HallmarkServer, tmp_path: Path, canonicalization: str) -> None:
    signed = tmp_path / "signed.jsonl"
    report = tmp_path / "report.json"

    produced = run_example(
        "model_service.py", "--target", hallmark.target, "--out", str(signed), "--limit", "3",
        "--canonicalization", canonicalization,
    )
    assert produced.returncode == 0, produced.stderr
    lines = signed.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert {json.loads(line)["canonicalization"] for line in lines} == {canonicalization}

    verified = run_example("consumer.py", "--keys", hallmark.jwks_url, "--in", str(signed), "--report", str(report))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(report.read_text()) == {"verified": 3, "rejected": 0, "rejected_by_reason": {}}

    demo = run_example(
        "consumer.py", "--keys", hallmark.jwks_url, "--in", str(signed), "--tamper-demo", "--report", str(report)
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    tamper_report = json.loads(report.read_text())
    assert tamper_report["tampered_rejected"] == 4
    assert tamper_report["tampered_accepted"] == 0
    assert tamper_report["tampered_wrong_reason"] == 0
    assert [case["reason"] for case in tamper_report["tamper_cases"]] == [
        "bad_signature", "unknown_key", "replayed_output", "stale_output",
    ]
    assert demo.stdout.count("rejected as expected") == 4


def test_consumer_exits_nonzero_on_tampered_file(hallmark: HallmarkServer, tmp_path: Path) -> None:
    signed = tmp_path / "signed.jsonl"
    report = tmp_path / "report.json"
    produced = run_example("model_service.py", "--target", hallmark.target, "--out", str(signed), "--limit", "3")
    assert produced.returncode == 0, produced.stderr

    documents = [json.loads(line) for line in signed.read_text(encoding="utf-8").splitlines()]
    documents[1]["output"]["probabilities"]["setosa"] = 0.5
    signed.write_text("".join(json.dumps(document) + "\n" for document in documents), encoding="utf-8")

    result = run_example("consumer.py", "--keys", hallmark.jwks_url, "--in", str(signed), "--report", str(report))
    assert result.returncode == 1
    assert json.loads(report.read_text()) == {"verified": 2, "rejected": 1, "rejected_by_reason": {"bad_signature": 1}}
    assert "REJECTED line 2" in result.stdout
    assert "bad_signature" in result.stdout


def test_consumer_rejects_repeated_line_as_replay(hallmark: HallmarkServer, tmp_path: Path) -> None:
    signed = tmp_path / "signed.jsonl"
    report = tmp_path / "report.json"
    produced = run_example("model_service.py", "--target", hallmark.target, "--out", str(signed), "--limit", "2")
    assert produced.returncode == 0, produced.stderr

    lines = signed.read_text(encoding="utf-8").splitlines()
    signed.write_text("\n".join([lines[0], lines[1], lines[0]]) + "\n", encoding="utf-8")

    result = run_example("consumer.py", "--keys", hallmark.jwks_url, "--in", str(signed), "--report", str(report))
    assert result.returncode == 1
    assert json.loads(report.read_text()) == {
        "verified": 2, "rejected": 1, "rejected_by_reason": {"replayed_output": 1},
    }
    assert "REJECTED line 3" in result.stdout


def test_consumer_fails_when_key_set_unreachable(tmp_path: Path) -> None:
    signed = tmp_path / "signed.jsonl"
    signed.write_text("{}\n", encoding="utf-8")

    result = run_example("consumer.py", "--keys", str(tmp_path / "missing.jwks.json"), "--in", str(signed))
    assert result.returncode == 1
    assert "cannot load the key set" in result.stderr
