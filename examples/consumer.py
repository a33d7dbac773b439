"""Consumer that verifies Hallmark-signed model outputs before trusting them.

It fetches the published keys with ListKeys, checks that each key_id is the
RFC 7638 thumbprint of its public key, and for each signed record

    {"output": manifest, "signature": hex, "signing_key_id": key_id,
     "key_version": N}

rebuilds the canonical bytes ``json.dumps(output, sort_keys=True)``, picks the
public key by signing_key_id and verifies the RSASSA-PSS signature (SHA-256,
MGF1-SHA-256) with the ``cryptography`` package. Each record that does not
verify is rejected with a message that gives the reason.

    python examples/consumer.py --target unix:/tmp/hm/hallmark.sock --in signed.jsonl
    python examples/consumer.py --target unix:/tmp/hm/hallmark.sock --in signed.jsonl --tamper-demo
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence, TextIO

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hallmark.v1 import signer_pb2, signer_pb2_grpc
from hallmark_grpc import open_channel

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_DEADLINE_SECONDS = 10.0

SignedRecord = dict[str, Any]


class KeySetError(RuntimeError):
    """The published key set cannot be trusted or fetched."""


@dataclass(frozen=True)
class PublishedKey:
    """One trusted key version from ListKeys, with its parsed public key."""

    key_id: str
    key_name: str
    version: int
    state_name: str
    pss_salt_length: int
    key_bits: int
    public_key: rsa.RSAPublicKey

    @property
    def signature_length(self) -> int:
        """Length in bytes of every signature this key makes (the modulus size)."""
        return (self.public_key.key_size + 7) // 8


@dataclass
class VerificationCounts:
    """How many records verified and how many were rejected."""

    verified: int = 0
    rejected: int = 0


@dataclass
class TamperCounts:
    """How many tampered records were rejected and how many wrongly verified."""

    rejected: int = 0
    accepted: int = 0


def canonical_bytes(output: Any) -> bytes:
    """Serialize a manifest to the bytes that the producer hashed and signed."""
    return json.dumps(output, sort_keys=True).encode("utf-8")


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


def timestamp_or_none(timestamp: Any) -> datetime | None:
    """Convert a protobuf Timestamp to an aware datetime, or None when it is unset."""
    if timestamp.seconds == 0 and timestamp.nanos == 0:
        return None
    return timestamp.ToDatetime(tzinfo=timezone.utc)


def parse_key_version(key: signer_pb2.KeyVersion) -> PublishedKey:
    """Parse and check one KeyVersion from ListKeys.

    Raises KeySetError when the PEM is not an RSA public key, when the DER
    and PEM encodings differ, when the algorithm is not RSA-PSS-SHA256 or when
    key_id is not the thumbprint of the key.
    """
    label = f"key {key.key_name!r} version {key.version} (key_id {key.key_id!r})"
    if key.algorithm != signer_pb2.SIGNATURE_ALGORITHM_RSA_PSS_SHA256:
        name = signer_pb2.SignatureAlgorithm.Name(key.algorithm)
        raise KeySetError(f"{label} uses algorithm {name}; this consumer supports RSA_PSS_SHA256 only")
    try:
        public_key = serialization.load_pem_public_key(key.public_key_pem.encode("ascii"))
    except ValueError as error:
        raise KeySetError(f"{label} has an unreadable public_key_pem: {error}") from error
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise KeySetError(f"{label} is a {type(public_key).__name__}, expected an RSA public key")
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if der != key.public_key_der:
        raise KeySetError(f"{label} has public_key_der and public_key_pem that encode different keys")
    thumbprint = jwk_thumbprint(public_key)
    if thumbprint != key.key_id:
        raise KeySetError(f"{label} has a key_id that is not its RFC 7638 thumbprint {thumbprint!r}")
    return PublishedKey(
        key_id=key.key_id,
        key_name=key.key_name,
        version=key.version,
        state_name=signer_pb2.KeyState.Name(key.state),
        pss_salt_length=key.pss_salt_length,
        key_bits=key.key_bits,
        public_key=public_key,
    )


def is_trusted_now(key: signer_pb2.KeyVersion, now: datetime) -> bool:
    """Tell whether a verifier should accept signatures of a key version at time now."""
    if key.state in (signer_pb2.KEY_STATE_REVOKED, signer_pb2.KEY_STATE_UNSPECIFIED):
        return False
    verify_until = timestamp_or_none(key.verify_until)
    return verify_until is None or now < verify_until


def build_key_set(keys: Iterable[signer_pb2.KeyVersion], now: datetime | None = None) -> dict[str, PublishedKey]:
    """Build the key_id -> PublishedKey map of the key versions trusted at time now."""
    now = now or datetime.now(timezone.utc)
    key_set: dict[str, PublishedKey] = {}
    for key in keys:
        if not is_trusted_now(key, now):
            state = signer_pb2.KeyState.Name(key.state)
            print(f"consumer: ignoring key_id {key.key_id} ({state}, verify_until passed or revoked)")
            continue
        published = parse_key_version(key)
        if published.key_id in key_set:
            raise KeySetError(f"ListKeys returned key_id {published.key_id!r} twice")
        key_set[published.key_id] = published
    return key_set


def fetch_key_set(target: str, deadline_seconds: float = DEFAULT_DEADLINE_SECONDS) -> dict[str, PublishedKey]:
    """Call ListKeys on a Hallmark server and return its trusted keys by key_id."""
    with open_channel(target) as channel:
        stub = signer_pb2_grpc.SignerServiceStub(channel)
        try:
            response = stub.ListKeys(signer_pb2.ListKeysRequest(), timeout=deadline_seconds)
        except grpc.RpcError as error:
            raise KeySetError(
                f"ListKeys on {target} failed with {error.code().name}: {error.details()}"
            ) from error
    key_set = build_key_set(response.keys)
    if not key_set:
        raise KeySetError(f"ListKeys on {target} returned no trusted key")
    return key_set


def reject_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, raising ValueError on a repeated member name.

    With duplicates, json.loads keeps the last value, so the verified bytes
    and what another parser shows could disagree.
    """
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate member {name!r}")
        result[name] = value
    return result


def parse_record(line: str) -> SignedRecord:
    """Parse one JSONL line into a signed record, rejecting duplicate member names."""
    return json.loads(line, object_pairs_hook=reject_duplicate_members)


def rejection_reason(record: Any, key_set: dict[str, PublishedKey]) -> str | None:
    """Verify one signed record and return None if it verifies, else the rejection reason."""
    if not isinstance(record, dict):
        return f"record is a {type(record).__name__}, expected a JSON object"
    missing = [name for name in ("output", "signature", "signing_key_id", "key_version") if name not in record]
    if missing:
        return f"record is missing {', '.join(missing)}"
    key_id, key_version, signature_hex = record["signing_key_id"], record["key_version"], record["signature"]
    if not isinstance(key_id, str) or key_id not in key_set:
        return f"signing_key_id {key_id!r} is not in the published key set"
    key = key_set[key_id]
    # type() rather than isinstance(), because JSON true would pass as 1.
    if type(key_version) is not int or key_version != key.version:
        return f"key_version {key_version!r} does not match version {key.version} published for key_id {key_id}"
    if not isinstance(signature_hex, str):
        return f"signature is a {type(signature_hex).__name__}, expected a hex string"
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        return f"signature is not valid hex: {signature_hex[:16]!r}..."
    if len(signature) != key.signature_length:
        return f"signature is {len(signature)} bytes, expected {key.signature_length} for key_id {key_id}"
    # When verifying, PSS.MAX_LENGTH accepts any salt length (checked with
    # cryptography 50), so one setting covers keys with "digest" and "max" salts.
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
    try:
        key.public_key.verify(signature, canonical_bytes(record["output"]), pss, hashes.SHA256())
    except InvalidSignature:
        return f"RSA-PSS signature does not match the output for key_id {key_id}"
    return None


def describe(record: Any) -> str:
    """Name a record in messages by its timestamp and input hash, when it has them."""
    output = record.get("output") if isinstance(record, dict) else None
    if isinstance(output, dict):
        return f"output at {output.get('timestamp')} for input {str(output.get('input_sha256'))[:12]}"
    return "record"


def verify_lines(lines: Iterable[str], key_set: dict[str, PublishedKey], out: TextIO) -> VerificationCounts:
    """Verify each JSONL line, print one message per rejection and return the counts."""
    counts = VerificationCounts()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse_record(line)
        except ValueError as error:
            counts.rejected += 1
            print(f"REJECTED line {number}: not a valid JSON record: {error}", file=out)
            continue
        reason = rejection_reason(record, key_set)
        if reason is None:
            counts.verified += 1
        else:
            counts.rejected += 1
            print(f"REJECTED line {number} ({describe(record)}): {reason}", file=out)
    return counts


def unpublished_key_id() -> str:
    """Return the thumbprint of a freshly generated RSA key, which no server has published."""
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwk_thumbprint(stranger.public_key())


def change_prediction(record: SignedRecord) -> None:
    """Move the prediction to the next class label."""
    output = record["output"]
    names = list(output["probabilities"])
    output["prediction"] = (output["prediction"] + 1) % len(names)
    output["predicted_class"] = names[output["prediction"]]


def change_timestamp(record: SignedRecord) -> None:
    """Move the timestamp one second later, keeping the RFC 3339 form."""
    output = record["output"]
    moment = datetime.fromisoformat(output["timestamp"].replace("Z", "+00:00"))
    later = moment + timedelta(seconds=1)
    output["timestamp"] = later.isoformat(timespec="microseconds").replace("+00:00", "Z")


def tampered_variants(record: SignedRecord, key_set: dict[str, PublishedKey]) -> list[tuple[str, SignedRecord]]:
    """Build four tampered copies of a genuine record, each with a description.

    The swapped key id is another published key_id when the key set has one,
    else the thumbprint of a key that was never published.
    """
    others = sorted(key_id for key_id in key_set if key_id != record["signing_key_id"])
    swapped_id = others[0] if others else unpublished_key_id()
    swap_kind = "another published key_id" if others else "a key_id that is not published"

    def swap_key_id(copy_: SignedRecord) -> None:
        copy_["signing_key_id"] = swapped_id
        if others:
            copy_["key_version"] = key_set[swapped_id].version

    def truncate_signature(copy_: SignedRecord) -> None:
        copy_["signature"] = copy_["signature"][:-2]

    edits: list[tuple[str, Callable[[SignedRecord], None]]] = [
        ("changed prediction", change_prediction),
        ("changed timestamp", change_timestamp),
        (f"signing_key_id swapped to {swap_kind}", swap_key_id),
        ("signature truncated by one byte", truncate_signature),
    ]
    variants = []
    for description, edit in edits:
        tampered = copy.deepcopy(record)
        edit(tampered)
        variants.append((description, tampered))
    return variants


def tamper_demo(record: SignedRecord, key_set: dict[str, PublishedKey], out: TextIO) -> TamperCounts:
    """Show that four kinds of tampering with a genuine record are each rejected."""
    counts = TamperCounts()
    for description, tampered in tampered_variants(record, key_set):
        reason = rejection_reason(tampered, key_set)
        if reason is None:
            counts.accepted += 1
            print(f"FAILED tamper check '{description}': the tampered record verified", file=out)
        else:
            counts.rejected += 1
            print(f"rejected as expected, {description}: {reason}", file=out)
    return counts


def first_record(lines: Iterable[str]) -> SignedRecord | None:
    """Return the first non-blank JSONL line as a record, or None when there is none."""
    for line in lines:
        if line.strip():
            return parse_record(line)
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description="Verify Hallmark-signed model outputs.")
    parser.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help=f"gRPC target of the Hallmark server for ListKeys, host:port or unix:/abs/path (default {DEFAULT_TARGET})",
    )
    parser.add_argument("--in", dest="input", default="-", help="JSONL file of signed records, - for stdin (default -)")
    parser.add_argument(
        "--tamper-demo",
        action="store_true",
        help="instead of verifying every record, tamper with the first one in four ways and show each is rejected",
    )
    parser.add_argument("--report", help="also write the counts as a JSON object to this file")
    return parser.parse_args(argv)


def run_verification(lines: list[str], key_set: dict[str, PublishedKey]) -> tuple[int, dict[str, int]]:
    """Verify every record and return the exit code and the counts."""
    counts = verify_lines(lines, key_set, sys.stdout)
    print(f"consumer: {counts.verified} verified, {counts.rejected} rejected")
    if counts.verified == 0 and counts.rejected == 0:
        print("consumer: the input contains no signed records; run examples/model_service.py first", file=sys.stderr)
        return 1, {"verified": 0, "rejected": 0}
    return (1 if counts.rejected else 0), {"verified": counts.verified, "rejected": counts.rejected}


def run_tamper_demo(lines: list[str], key_set: dict[str, PublishedKey]) -> tuple[int, dict[str, int]]:
    """Tamper with the first record and return the exit code and the counts."""
    try:
        record = first_record(lines)
    except ValueError as error:
        print(f"consumer: the first record is not valid JSON: {error}", file=sys.stderr)
        return 1, {}
    if record is None:
        print("consumer: the input contains no signed records to tamper with", file=sys.stderr)
        return 1, {}
    reason = rejection_reason(record, key_set)
    if reason is not None:
        print(f"consumer: the genuine record does not verify, so the tamper demo cannot start: {reason}")
        return 1, {}
    print(f"consumer: genuine record verifies with key_id {record['signing_key_id']}")
    counts = tamper_demo(record, key_set, sys.stdout)
    print(f"consumer: {counts.rejected} tampered records rejected, {counts.accepted} accepted")
    report = {"tampered_rejected": counts.rejected, "tampered_accepted": counts.accepted}
    return (1 if counts.accepted else 0), report


def main(argv: Sequence[str] | None = None) -> int:
    """Verify signed records or run the tamper demo, and return the exit code."""
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
    try:
        key_set = fetch_key_set(args.target)
    except KeySetError as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 1
    run = run_tamper_demo if args.tamper_demo else run_verification
    status, report = run(lines, key_set)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as handle:
            json.dump(report, handle, sort_keys=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
