"""The example model service and consumer against a real Hallmark server."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import consumer
import model_service
from conftest import REPO_ROOT, HallmarkServer, StartServer

RECORD_MEMBERS = {"output", "signature", "signing_key_id", "key_version"}
MANIFEST_MEMBERS = {
    "input_sha256", "model", "model_version", "predicted_class", "prediction", "probabilities", "timestamp",
}


def sign_rows(server: HallmarkServer, count: int) -> list[dict]:
    """Run the model service over the first count iris rows against server."""
    model = model_service.train_model()
    with model_service.HallmarkSigner(server.target) as signer:
        return list(model_service.serve_predictions(model, signer, model_service.iris_rows(count)))


def test_model_service_output_verifies(hallmark: HallmarkServer) -> None:
    records = sign_rows(hallmark, 5)
    key_set = consumer.fetch_key_set(hallmark.target)
    (key_id,) = key_set

    assert len(records) == 5
    for record, features in zip(records, model_service.iris_rows(5)):
        assert set(record) == RECORD_MEMBERS
        assert set(record["output"]) == MANIFEST_MEMBERS
        assert record["signing_key_id"] == key_id
        assert record["key_version"] == 1
        assert len(record["signature"]) == 2 * 256
        # The first 50 iris rows are all setosa, which the model separates cleanly.
        assert record["output"]["prediction"] == 0
        assert record["output"]["predicted_class"] == "setosa"
        encoded = json.dumps(features, separators=(",", ":")).encode("ascii")
        assert record["output"]["input_sha256"] == hashlib.sha256(encoded).hexdigest()
        assert consumer.rejection_reason(record, key_set) is None

    lines = [json.dumps(record) + "\n" for record in records]
    counts = consumer.verify_lines(lines, key_set, io.StringIO())
    assert (counts.verified, counts.rejected) == (5, 0)


def test_tamper_demo_rejects_four_edits(hallmark: HallmarkServer) -> None:
    (record,) = sign_rows(hallmark, 1)
    key_set = consumer.fetch_key_set(hallmark.target)
    key_id = record["signing_key_id"]
    reasons = {
        description: consumer.rejection_reason(tampered, key_set)
        for description, tampered in consumer.tampered_variants(record, key_set)
    }
    bad_signature = f"RSA-PSS signature does not match the output for key_id {key_id}"

    assert list(reasons) == [
        "changed prediction",
        "changed timestamp",
        "signing_key_id swapped to a key_id that is not published",
        "signature truncated by one byte",
    ]
    assert reasons["changed prediction"] == bad_signature
    assert reasons["changed timestamp"] == bad_signature
    assert reasons["signing_key_id swapped to a key_id that is not published"].endswith(
        "is not in the published key set"
    )
    assert reasons["signature truncated by one byte"] == (
        f"signature is 255 bytes, expected 256 for key_id {key_id}"
    )

    counts = consumer.tamper_demo(record, key_set, io.StringIO())
    assert (counts.rejected, counts.accepted) == (4, 0)


def test_swap_to_other_published_key_rejected(start_hallmark: StartServer) -> None:
    signing = start_hallmark(key_bits=2048, salt="digest")
    other = start_hallmark(key_bits=2048, salt="digest")
    (record,) = sign_rows(signing, 1)
    key_set = {**consumer.fetch_key_set(signing.target), **consumer.fetch_key_set(other.target)}
    (other_id,) = consumer.fetch_key_set(other.target)
    variants = dict(consumer.tampered_variants(record, key_set))

    swapped = variants["signing_key_id swapped to another published key_id"]
    assert len(key_set) == 2
    assert consumer.rejection_reason(record, key_set) is None
    assert swapped["signing_key_id"] == other_id
    assert consumer.rejection_reason(swapped, key_set) == (
        f"RSA-PSS signature does not match the output for key_id {other_id}"
    )


def run_example(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an example program with this interpreter and return its result."""
    command = [sys.executable, str(REPO_ROOT / "examples" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_example_programs_end_to_end(hallmark: HallmarkServer, tmp_path: Path) -> None:
    signed = tmp_path / "signed.jsonl"
    report = tmp_path / "report.json"

    produced = run_example("model_service.py", "--target", hallmark.target, "--out", str(signed), "--limit", "3")
    assert produced.returncode == 0, produced.stderr
    assert len(signed.read_text(encoding="utf-8").splitlines()) == 3

    verified = run_example("consumer.py", "--target", hallmark.target, "--in", str(signed), "--report", str(report))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(report.read_text()) == {"verified": 3, "rejected": 0}

    demo = run_example(
        "consumer.py", "--target", hallmark.target, "--in", str(signed), "--tamper-demo", "--report", str(report)
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert json.loads(report.read_text()) == {"tampered_rejected": 4, "tampered_accepted": 0}
    assert demo.stdout.count("rejected as expected") == 4


def test_consumer_exits_nonzero_on_tampered_file(hallmark: HallmarkServer, tmp_path: Path) -> None:
    signed = tmp_path / "signed.jsonl"
    report = tmp_path / "report.json"
    produced = run_example("model_service.py", "--target", hallmark.target, "--out", str(signed), "--limit", "3")
    assert produced.returncode == 0, produced.stderr

    records = [json.loads(line) for line in signed.read_text(encoding="utf-8").splitlines()]
    records[1]["output"]["probabilities"]["setosa"] = 0.5
    signed.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")

    result = run_example("consumer.py", "--target", hallmark.target, "--in", str(signed), "--report", str(report))
    assert result.returncode == 1
    assert json.loads(report.read_text()) == {"verified": 2, "rejected": 1}
    assert "REJECTED line 2" in result.stdout
