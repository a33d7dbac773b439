"""Demo model service that signs every output through the Hallmark sidecar.

Every PREDICTION_INTERVAL_SECONDS it scores a random input with a fixed
logistic model. It signs the output manifest with hallmark_client over the
sidecar's Unix socket (RFC 8785 JCS, hashed with the hash that the key
requires), and prints the signed output document as one JSON line on
stdout.
Status and errors go to stderr, which `kubectl logs` interleaves, so keep
only the JSON lines to check them with the sidecar's key set:

    kubectl logs demo-model-0 -c model | grep '^{' > signed.jsonl
    hallmark verify --keys http://127.0.0.1:9464/.well-known/jwks.json signed.jsonl

Environment:
    HALLMARK_TARGET               sidecar address (default unix:/run/hallmark/hallmark.sock)
    PREDICTION_INTERVAL_SECONDS   seconds between predictions (default 5)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import sys
import threading
from datetime import datetime, timezone
from typing import Any, Dict, List

from hallmark_client import Client, HallmarkError

MODEL_NAME = "demo-logistic"
WEIGHTS = (0.8, -0.4, 1.3, 0.05)
BIAS = -2.0
MODEL_VERSION = "weights-" + hashlib.sha256(json.dumps([WEIGHTS, BIAS]).encode()).hexdigest()[:12]
# Maximum wait for one Sign call. It bounds a hung sidecar, not a slow
# one, because a signature takes milliseconds.
SIGN_TIMEOUT_SECONDS = 10.0


def score(features: List[float]) -> Dict[str, Any]:
    """Build the output manifest of one input row."""
    logit = BIAS + sum(weight * value for weight, value in zip(WEIGHTS, features))
    probability = 1.0 / (1.0 + math.exp(-logit))
    encoded = json.dumps(features, separators=(",", ":")).encode("ascii")
    return {
        "model": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "input_sha256": hashlib.sha256(encoded).hexdigest(),
        "probability": round(probability, 6),
        "prediction": int(probability >= 0.5),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
    }


def main() -> int:
    """Sign predictions until SIGTERM; return 1 on an error that a retry cannot fix."""
    target = os.environ.get("HALLMARK_TARGET", "unix:/run/hallmark/hallmark.sock")
    interval = float(os.environ.get("PREDICTION_INTERVAL_SECONDS", "5"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"demo-model: {MODEL_VERSION} signing through {target} every {interval:g} s", file=sys.stderr)

    with Client(target, timeout=SIGN_TIMEOUT_SECONDS) as client:
        while not stop.is_set():
            features = [round(random.uniform(0.0, 8.0), 3) for _ in WEIGHTS]
            try:
                signed = client.sign_output(score(features))
            except HallmarkError as error:
                # UNAVAILABLE (token or audit log down), DEADLINE_EXCEEDED and
                # INTERNAL pass once Hallmark recovers. Any other error is a
                # configuration error, such as a caller that may not sign.
                print(f"demo-model: signing failed: {error}", file=sys.stderr, flush=True)
                if not error.retryable:
                    return 1
            else:
                print(json.dumps(signed, sort_keys=True), flush=True)
            stop.wait(interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
