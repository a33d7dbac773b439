"""Iris classifier whose every prediction is signed by Hallmark.

The service fits a logistic regression on scikit-learn's bundled iris data
set. For each input row it builds an output manifest, signs it with
``hallmark_client.Client.sign_output`` and writes the signed output document
as one JSON line:

    {"output": manifest, "signature": hex, "signing_key_id": key_id,
     "key_version": N, "algorithm": ..., "canonicalization": "jcs",
     "signed_at": RFC 3339}

The client serializes the manifest with the chosen canonicalization (RFC 8785
JCS by default), hashes it with the hash that the key's algorithm requires
and calls Hallmark's Sign RPC. examples/consumer.py verifies the documents.

Run it against a running server, for example:

    python examples/model_service.py --target unix:/tmp/hm/hallmark.sock \\
        --out signed.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Sequence, TextIO

import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from hallmark_client import CANONICALIZATIONS, JCS, Client, HallmarkError

MODEL_NAME = "iris-logistic-regression"
DEFAULT_TARGET = "127.0.0.1:50051"
# A signature takes milliseconds on SoftHSM, so the deadline only bounds a
# hung server or an unreachable socket.
DEFAULT_DEADLINE_SECONDS = 10.0
# Probabilities are rounded so that manifests stay readable. The rounded
# float is what gets signed, so a verifier loses nothing.
PROBABILITY_DECIMALS = 6

Manifest = dict[str, Any]
SignedOutput = dict[str, Any]


def input_sha256(features: Sequence[float]) -> str:
    """Hash one input row: SHA-256 hex of its features as a compact JSON array.

    Each feature is converted to a Python float (IEEE 754 double), and
    ``json.dumps`` writes the shortest decimal that round-trips, so the same
    row always gives the same hash.
    """
    encoded = json.dumps([float(value) for value in features], separators=(",", ":"))
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


def rfc3339_utc_now() -> str:
    """Return the current UTC time as RFC 3339 with microseconds and a Z suffix."""
    now = datetime.now(timezone.utc)
    return now.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class IrisModel:
    """A logistic regression fitted on the iris data set, with its version."""

    estimator: LogisticRegression
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    model_version: str

    def predict_manifest(self, features: Sequence[float]) -> Manifest:
        """Predict the class of one row and build its output manifest."""
        if len(features) != len(self.feature_names):
            raise ValueError(
                f"expected {len(self.feature_names)} features ({', '.join(self.feature_names)}), "
                f"got {len(features)}: {list(features)!r}"
            )
        row = np.asarray([features], dtype=np.float64)
        probabilities = self.estimator.predict_proba(row)[0]
        label = int(np.argmax(probabilities))
        return {
            "model": MODEL_NAME,
            "model_version": self.model_version,
            "prediction": label,
            "predicted_class": self.class_names[label],
            "probabilities": {
                name: round(float(p), PROBABILITY_DECIMALS)
                for name, p in zip(self.class_names, probabilities)
            },
            "input_sha256": input_sha256(features),
            "timestamp": rfc3339_utc_now(),
        }


def fitted_params_sha256(estimator: LogisticRegression) -> str:
    """Hash the fitted coefficients, intercepts and classes of an estimator."""
    digest = hashlib.sha256()
    for array in (estimator.coef_, estimator.intercept_, estimator.classes_):
        contiguous = np.ascontiguousarray(array, dtype=np.float64)
        digest.update(str(contiguous.shape).encode("ascii"))
        digest.update(contiguous.tobytes())
    return digest.hexdigest()


def train_model() -> IrisModel:
    """Fit the classifier on all 150 iris rows and derive its model version.

    The version names the scikit-learn release and the first 12 hex digits of
    the SHA-256 of the fitted parameters, so a refit that changes any weight
    changes the version.
    """
    iris = load_iris()
    estimator = LogisticRegression(max_iter=1000, random_state=0)
    estimator.fit(iris.data, iris.target)
    version = f"sklearn-{sklearn.__version__}+params.{fitted_params_sha256(estimator)[:12]}"
    return IrisModel(
        estimator=estimator,
        class_names=tuple(str(name) for name in iris.target_names),
        feature_names=tuple(str(name) for name in iris.feature_names),
        model_version=version,
    )


def iris_rows(limit: int | None = None) -> list[list[float]]:
    """Return the iris feature rows in data set order, at most limit of them."""
    rows = load_iris().data.tolist()
    return rows if limit is None else rows[:limit]


def serve_predictions(
    model: IrisModel,
    client: Client,
    rows: Iterable[Sequence[float]],
    canonicalization: str = JCS,
) -> Iterator[SignedOutput]:
    """Predict and sign each row in turn, yielding one signed output document per row.

    Raises HallmarkError from the first Sign call that fails.
    """
    for features in rows:
        manifest = model.predict_manifest(features)
        yield client.sign_output(manifest, canonicalization=canonicalization)


def write_jsonl(documents: Iterable[SignedOutput], out: TextIO) -> int:
    """Write documents as JSON lines and return how many were written."""
    count = 0
    for document in documents:
        out.write(json.dumps(document, sort_keys=True) + "\n")
        count += 1
    return count


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Classify the iris data set and sign every prediction with Hallmark."
    )
    parser.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help=f"gRPC target of the Hallmark server, host:port or unix:/abs/path (default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--out", default="-", help="JSONL file for the signed output documents, - for stdout (default -)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="sign only the first N of the 150 iris rows (default: all rows)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE_SECONDS,
        help=f"deadline of each Sign call in seconds (default {DEFAULT_DEADLINE_SECONDS:g})",
    )
    parser.add_argument(
        "--canonicalization",
        choices=CANONICALIZATIONS,
        default=JCS,
        help="serialization of the manifest that gets signed: jcs (RFC 8785) or python-sort-keys "
        "(json.dumps(manifest, sort_keys=True)) (default jcs)",
    )
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    if args.deadline <= 0:
        parser.error(f"--deadline must be positive, got {args.deadline}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the model over the iris rows, write the signed documents and return the exit code."""
    args = parse_args(argv)
    model = train_model()
    rows = iris_rows(args.limit)
    try:
        out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    except OSError as error:
        print(f"model_service: cannot open --out {args.out}: {error}", file=sys.stderr)
        return 1
    try:
        with Client(args.target, timeout=args.deadline) as client:
            count = write_jsonl(serve_predictions(model, client, rows, args.canonicalization), out)
    except HallmarkError as error:
        print(f"model_service: signing failed: {error}", file=sys.stderr)
        return 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(
        f"model_service: signed {count} predictions of model {model.model_version} "
        f"({args.canonicalization})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
