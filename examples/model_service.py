"""Iris classifier whose every prediction is signed by Hallmark.

The service fits a logistic regression on scikit-learn's bundled iris data
set, and for each input row it builds an output manifest, hashes the
canonical manifest bytes with SHA-256, sends the digest to Hallmark's Sign
RPC and emits one signed record:

    {"output": manifest, "signature": hex, "signing_key_id": key_id,
     "key_version": N}

The canonical bytes are ``json.dumps(manifest, sort_keys=True)`` encoded as
UTF-8, so a consumer that parses the record can rebuild them exactly.

Run it against a running server, for example:

    python examples/model_service.py --target unix:/tmp/hm/hallmark.sock \\
        --out signed.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Sequence, TextIO

import grpc
import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from hallmark.v1 import signer_pb2, signer_pb2_grpc
from hallmark_grpc import open_channel

MODEL_NAME = "iris-logistic-regression"
DEFAULT_TARGET = "127.0.0.1:50051"
# A signature takes milliseconds on SoftHSM, so the deadline only bounds a
# hung server or an unreachable socket.
DEFAULT_DEADLINE_SECONDS = 10.0
# Probabilities are rounded so that manifests stay readable. The rounded
# float is what gets signed, so a verifier loses nothing.
PROBABILITY_DECIMALS = 6

Manifest = dict[str, Any]
SignedRecord = dict[str, Any]


def canonical_bytes(manifest: Manifest) -> bytes:
    """Serialize a manifest to the exact bytes whose SHA-256 gets signed."""
    return json.dumps(manifest, sort_keys=True).encode("utf-8")


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


class SigningError(RuntimeError):
    """Hallmark returned an error or a response that breaks its contract."""


class HallmarkSigner:
    """Client for the Sign RPC of a Hallmark server."""

    def __init__(self, target: str, deadline_seconds: float = DEFAULT_DEADLINE_SECONDS) -> None:
        self._channel = open_channel(target)
        self._stub = signer_pb2_grpc.SignerServiceStub(self._channel)
        self._target = target
        self._deadline_seconds = deadline_seconds

    def close(self) -> None:
        """Close the gRPC channel."""
        self._channel.close()

    def __enter__(self) -> "HallmarkSigner":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def sign_digest(self, digest: bytes, request_id: str | None = None) -> signer_pb2.SignResponse:
        """Sign a 32-byte SHA-256 digest with the server's default key.

        Raises SigningError when the RPC fails or when the response does not
        echo the request_id, names another algorithm or has a signature whose
        length differs from the key size.
        """
        if len(digest) != hashlib.sha256().digest_size:
            raise ValueError(f"digest must be 32 bytes (SHA-256), got {len(digest)} bytes")
        request_id = request_id or f"iris-{uuid.uuid4().hex}"
        request = signer_pb2.SignRequest(
            digest=digest,
            hash_algorithm=signer_pb2.HASH_ALGORITHM_SHA256,
            request_id=request_id,
        )
        try:
            response = self._stub.Sign(request, timeout=self._deadline_seconds)
        except grpc.RpcError as error:
            raise SigningError(
                f"Sign request {request_id} to {self._target} failed with "
                f"{error.code().name}: {error.details()}"
            ) from error
        check_sign_response(response, request_id)
        return response


def check_sign_response(response: signer_pb2.SignResponse, request_id: str) -> None:
    """Raise SigningError if a SignResponse breaks the Hallmark contract."""
    if response.request_id != request_id:
        raise SigningError(
            f"Sign response echoes request_id {response.request_id!r}, expected {request_id!r}"
        )
    key = response.key
    if key.algorithm != signer_pb2.SIGNATURE_ALGORITHM_RSA_PSS_SHA256:
        name = signer_pb2.SignatureAlgorithm.Name(key.algorithm)
        raise SigningError(f"Sign response uses algorithm {name}, expected RSA_PSS_SHA256")
    if not key.key_id or key.version < 1:
        raise SigningError(
            f"Sign response names key_id {key.key_id!r} version {key.version}; "
            "expected a non-empty key_id and a version of at least 1"
        )
    expected_length = (key.key_bits + 7) // 8
    if len(response.signature) != expected_length:
        raise SigningError(
            f"signature is {len(response.signature)} bytes, expected {expected_length} "
            f"for an RSA-{key.key_bits} key"
        )


def sign_manifest(signer: HallmarkSigner, manifest: Manifest) -> SignedRecord:
    """Hash a manifest's canonical bytes, sign the digest and build the signed record."""
    digest = hashlib.sha256(canonical_bytes(manifest)).digest()
    response = signer.sign_digest(digest)
    return {
        "output": manifest,
        "signature": response.signature.hex(),
        "signing_key_id": response.key.key_id,
        "key_version": response.key.version,
    }


def serve_predictions(
    model: IrisModel, signer: HallmarkSigner, rows: Iterable[Sequence[float]]
) -> Iterator[SignedRecord]:
    """Predict and sign each row in turn, yielding one signed record per row."""
    for features in rows:
        yield sign_manifest(signer, model.predict_manifest(features))


def write_jsonl(records: Iterable[SignedRecord], out: TextIO) -> int:
    """Write records as JSON lines and return how many were written."""
    count = 0
    for record in records:
        out.write(json.dumps(record, sort_keys=True) + "\n")
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
        "--out", default="-", help="JSONL file for the signed records, - for stdout (default -)"
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
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    if args.deadline <= 0:
        parser.error(f"--deadline must be positive, got {args.deadline}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the model over the iris rows, write the signed records and return the exit code."""
    args = parse_args(argv)
    model = train_model()
    rows = iris_rows(args.limit)
    try:
        out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    except OSError as error:
        print(f"model_service: cannot open --out {args.out}: {error}", file=sys.stderr)
        return 1
    try:
        with HallmarkSigner(args.target, args.deadline) as signer:
            count = write_jsonl(serve_predictions(model, signer, rows), out)
    except SigningError as error:
        print(f"model_service: {error}", file=sys.stderr)
        return 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(
        f"model_service: signed {count} predictions of model {model.model_version}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
