"""Consumer that verifies Hallmark signed output documents before trusting them.

It reads the JSON lines that examples/model_service.py writes and checks each
signed output document with ``hallmark_client.Verifier`` against the
server's JWKS (``/.well-known/jwks.json`` on the admin listener). The
verifier rejects a document whose key ID is unknown or revoked, or whose
signature does not verify with the key's exact parameters. It also rejects
a document whose timestamp is outside the key's validity window or older
than --max-age, and a signature that it has already accepted. Each
rejection is reported with the verifier's reason, such as ``bad_signature``.

    python examples/consumer.py --keys http://127.0.0.1:9464/.well-known/jwks.json --in signed.jsonl
    python examples/consumer.py --keys http://127.0.0.1:9464/.well-known/jwks.json --in signed.jsonl --tamper-demo
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence, TextIO

from cryptography.hazmat.primitives.asymmetric import rsa

from hallmark_client import (
    BadSignature,
    KeySetError,
    MalformedDocument,
    ReplayedOutput,
    StaleOutput,
    UnknownKey,
    VerificationError,
    Verifier,
    parse_signed_output,
)

# The server's default --metrics-listen address, which also serves the JWKS.
DEFAULT_KEYS_URL = "http://127.0.0.1:9464/.well-known/jwks.json"
DEFAULT_MAX_AGE_SECONDS = 300.0
# The tamper demo shows a stale output by waiting until a genuine document is
# older than this short max_age, rather than the default five minutes.
STALE_DEMO_MAX_AGE = timedelta(seconds=1)
# Extra wait beyond STALE_DEMO_MAX_AGE, so that the document is clearly older
# than max_age rather than at the boundary, whatever the sleep resolution.
STALE_DEMO_MARGIN = timedelta(milliseconds=200)

SignedOutput = dict[str, Any]


@dataclass
class VerificationCounts:
    """How many documents verified, and how many were rejected for each reason."""

    verified: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        """Number of rejected documents, over all reasons."""
        return sum(self.rejected_by_reason.values())


@dataclass(frozen=True)
class TamperResult:
    """Outcome of verifying one tampered document.

    reason is the verifier's rejection reason, or None when the tampered
    document verified.
    """

    description: str
    expected_reason: str
    reason: str | None
    message: str

    @property
    def passed(self) -> bool:
        """Whether the document was rejected for exactly the expected reason."""
        return self.reason == self.expected_reason


def describe(line: str) -> str:
    """Name a document in messages by its timestamp and input hash, when its line is JSON that has them."""
    try:
        document = json.loads(line)
    except (ValueError, RecursionError):
        return "not JSON"
    output = document.get("output") if isinstance(document, dict) else None
    if isinstance(output, dict):
        return f"output at {output.get('timestamp')} for input {str(output.get('input_sha256'))[:12]}"
    return "document"


def verify_lines(lines: Iterable[str], verifier: Verifier, out: TextIO) -> VerificationCounts:
    """Verify each JSONL line, print one message per rejection and return the counts.

    verify_text parses each line itself, so a line that is not valid JSON,
    or that repeats a member name, counts as a malformed_document rejection.
    """
    counts = VerificationCounts()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            verifier.verify_text(line)
        except VerificationError as error:
            counts.rejected_by_reason[error.reason] += 1
            print(f"REJECTED line {number} ({describe(line)}): {error}", file=out)
            continue
        counts.verified += 1
    return counts


def base64url_uint(value: int) -> str:
    """Encode a non-negative integer as unpadded base64url of its minimal big-endian bytes."""
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jwk_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """Compute the RFC 7638 JWK SHA-256 thumbprint of an RSA key, base64url without padding.

    The JWK holds only the required members e, kty and n, in that
    lexicographic order, with no whitespace.
    """
    numbers = public_key.public_numbers()
    jwk = '{"e":"%s","kty":"RSA","n":"%s"}' % (base64url_uint(numbers.e), base64url_uint(numbers.n))
    digest = hashlib.sha256(jwk.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def unpublished_key_id() -> str:
    """Return the thumbprint of a freshly generated RSA key, which no server has published."""
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwk_thumbprint(stranger.public_key())


def change_prediction(document: SignedOutput) -> None:
    """Move the prediction to the next class label."""
    output = document["output"]
    names = list(output["probabilities"])
    output["prediction"] = (output["prediction"] + 1) % len(names)
    output["predicted_class"] = names[output["prediction"]]


def use_unpublished_key_id(document: SignedOutput) -> None:
    """Name a key ID that the server never published."""
    document["signing_key_id"] = unpublished_key_id()


def tampered(document: SignedOutput, edit: Callable[[SignedOutput], None] | None = None) -> SignedOutput:
    """Return a deep copy of document with edit applied, or an unchanged copy when edit is None."""
    result = copy.deepcopy(document)
    if edit is not None:
        edit(result)
    return result


def check_rejection(
    verifier: Verifier, description: str, document: SignedOutput, expected_reason: str
) -> TamperResult:
    """Verify a tampered document and record the reason it was rejected for, if any."""
    try:
        verifier.verify(document)
    except VerificationError as error:
        return TamperResult(description, expected_reason, error.reason, error.message)
    return TamperResult(description, expected_reason, None, "the tampered document verified")


def wait_until_older_than(timestamp: datetime, age: timedelta) -> None:
    """Sleep until timestamp lies more than age in the past."""
    remaining = timestamp + age - datetime.now(timezone.utc)
    if remaining > timedelta(0):
        time.sleep(remaining.total_seconds())


def tamper_demo(document: SignedOutput, keys_url: str, max_age: timedelta) -> list[TamperResult]:
    """Verify a genuine document, then show four kinds of tampering, each rejected for its own reason.

    The cases, in order, and the reason each must be rejected for:
    a changed prediction (bad_signature), a key ID that was never published
    (unknown_key), the accepted document sent again (replayed_output), and
    the genuine document checked by a consumer whose max_age it has outlived
    (stale_output). The replay case relies on the genuine document having
    been accepted by the same Verifier first, and the stale case uses a
    second Verifier with max_age STALE_DEMO_MAX_AGE.

    Raises VerificationError when the genuine document does not verify, and
    KeySetError when the JWKS cannot be read.
    """
    with Verifier(keys_url, max_age=max_age) as verifier:
        verdict = verifier.verify(tampered(document))
        print(
            f"consumer: genuine document verifies with key {verdict.key_id} version {verdict.key_version} "
            f"({verdict.algorithm}, {verdict.canonicalization})"
        )
        results = [
            check_rejection(verifier, "changed prediction", tampered(document, change_prediction), BadSignature.reason),
            check_rejection(
                verifier,
                "signing_key_id of a key that was never published",
                tampered(document, use_unpublished_key_id),
                UnknownKey.reason,
            ),
            check_rejection(verifier, "replay of the accepted document", tampered(document), ReplayedOutput.reason),
        ]

    wait_until_older_than(verdict.timestamp, STALE_DEMO_MAX_AGE + STALE_DEMO_MARGIN)
    with Verifier(keys_url, max_age=STALE_DEMO_MAX_AGE) as late_verifier:
        results.append(
            check_rejection(
                late_verifier,
                f"genuine document delivered later than max_age ({STALE_DEMO_MAX_AGE.total_seconds():g} s)",
                tampered(document),
                StaleOutput.reason,
            )
        )
    return results


def print_tamper_results(results: Iterable[TamperResult], out: TextIO) -> None:
    """Print one line per tamper case, starting with FAILED when the reason is not the expected one."""
    for result in results:
        if result.passed:
            print(f"rejected as expected, {result.description}: {result.reason}: {result.message}", file=out)
        elif result.reason is None:
            print(
                f"FAILED tamper check '{result.description}': the tampered document verified, "
                f"expected rejection as {result.expected_reason}",
                file=out,
            )
        else:
            print(
                f"FAILED tamper check '{result.description}': rejected as {result.reason}, "
                f"expected {result.expected_reason}: {result.message}",
                file=out,
            )


def first_document(lines: Iterable[str]) -> SignedOutput | None:
    """Parse the first non-blank JSONL line into a document, or return None when there is none.

    parse_signed_output raises MalformedDocument for a line that is not
    JSON, repeats a member name or contains NaN or an infinity.
    """
    for line in lines:
        if line.strip():
            return parse_signed_output(line)
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description="Verify Hallmark signed output documents.")
    parser.add_argument(
        "--keys",
        default=DEFAULT_KEYS_URL,
        help="URL of the Hallmark server's JWKS (/.well-known/jwks.json on its admin listener), "
        f"a file:// URL or a file path (default {DEFAULT_KEYS_URL})",
    )
    parser.add_argument(
        "--in", dest="input", default="-", help="JSONL file of signed output documents, - for stdin (default -)"
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=DEFAULT_MAX_AGE_SECONDS,
        help="maximum age of an output's timestamp in seconds; older outputs are rejected as "
        f"stale_output (default {DEFAULT_MAX_AGE_SECONDS:g})",
    )
    parser.add_argument(
        "--tamper-demo",
        action="store_true",
        help="instead of verifying every document, tamper with the first one in four ways and "
        "check that each is rejected for its expected reason",
    )
    parser.add_argument("--report", help="also write the counts as a JSON object to this file")
    args = parser.parse_args(argv)
    if args.max_age <= 0:
        parser.error(f"--max-age must be positive, got {args.max_age}")
    return args


def run_verification(lines: list[str], keys_url: str, max_age: timedelta) -> tuple[int, dict[str, Any]]:
    """Verify every document and return the exit code and the report."""
    with Verifier(keys_url, max_age=max_age) as verifier:
        counts = verify_lines(lines, verifier, sys.stdout)
    report = {
        "verified": counts.verified,
        "rejected": counts.rejected,
        "rejected_by_reason": dict(sorted(counts.rejected_by_reason.items())),
    }
    print(f"consumer: {counts.verified} verified, {counts.rejected} rejected")
    if counts.verified == 0 and counts.rejected == 0:
        print("consumer: the input contains no signed outputs; run examples/model_service.py first", file=sys.stderr)
        return 1, report
    return (1 if counts.rejected else 0), report


def run_tamper_demo(lines: list[str], keys_url: str, max_age: timedelta) -> tuple[int, dict[str, Any]]:
    """Tamper with the first document and return the exit code and the report."""
    try:
        document = first_document(lines)
    except MalformedDocument as error:
        print(f"consumer: the first document is not a valid signed output: {error.message}", file=sys.stderr)
        return 1, {}
    if document is None:
        print("consumer: the input contains no signed outputs to tamper with", file=sys.stderr)
        return 1, {}
    try:
        results = tamper_demo(document, keys_url, max_age)
    except VerificationError as error:
        print(f"consumer: the genuine document does not verify, so the tamper demo cannot start: {error}")
        return 1, {}
    print_tamper_results(results, sys.stdout)
    passed = sum(1 for result in results if result.passed)
    accepted = sum(1 for result in results if result.reason is None)
    report = {
        "tampered_rejected": passed,
        "tampered_accepted": accepted,
        "tampered_wrong_reason": len(results) - passed - accepted,
        "tamper_cases": [
            {"description": result.description, "expected_reason": result.expected_reason, "reason": result.reason}
            for result in results
        ],
    }
    print(
        f"consumer: {passed} of {len(results)} tampered documents rejected for the expected reason, "
        f"{accepted} accepted"
    )
    return (0 if passed == len(results) else 1), report


def main(argv: Sequence[str] | None = None) -> int:
    """Verify signed output documents or run the tamper demo, and return the exit code."""
    args = parse_args(argv)
    if args.input == "-":
        lines = sys.stdin.readlines()
    else:
        try:
            with open(args.input, encoding="utf-8") as handle:
                lines = handle.readlines()
        except OSError as error:
            print(f"consumer: cannot read --in {args.input}: {error}", file=sys.stderr)
            return 1
    run = run_tamper_demo if args.tamper_demo else run_verification
    try:
        status, report = run(lines, args.keys, timedelta(seconds=args.max_age))
    except KeySetError as error:
        print(f"consumer: cannot load the key set: {error}", file=sys.stderr)
        return 1
    if args.report:
        with open(args.report, "w", encoding="utf-8") as handle:
            json.dump(report, handle, sort_keys=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
