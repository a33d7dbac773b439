"""Verification of Hallmark signed output documents against the server's JWKS."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from hallmark_client.canonical import CANONICALIZATIONS, PYTHON_SORT_KEYS, canonicalize
from hallmark_client.client import ECDSA_ALGORITHMS, HASH_FOR_ALGORITHM, SIGNATURE_ENCODINGS
from hallmark_client.errors import (
    BadSignature,
    ExpiredKey,
    KeySetError,
    MalformedDocument,
    ReplayedOutput,
    RevokedKey,
    StaleOutput,
    UnknownKey,
    MAX_DESCRIBED_CHARS,
    describe_value,
)
# KeySet, PublishedKey and the JWKS loaders stay importable from this module.
from hallmark_client.keyset import (
    CURVES,
    MAX_JWKS_BYTES,
    MAX_KEY_VERSION,
    KeySet,
    PublishedKey,
    load_jwks,
    parse_jwk,
    parse_jwks,
)
from hallmark_client.replay import ReplayCache
from hallmark_client.timeutil import parse_rfc3339

logger = logging.getLogger("hallmark_client")

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
# Group orders, for mapping an ECDSA (r, s) and its twin (r, n - s) to one replay entry.
_CURVE_ORDERS = {
    "P-256": int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16),
    "P-384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}
_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}
_RSA_ALGORITHMS = ("rsa-pss-sha256", "rsa-pkcs1-sha256")


@dataclass(frozen=True)
class Verdict:
    """Result of a successful verification: the key, scheme and timestamp of a signed output."""

    key_id: str
    key_name: str
    key_version: int
    algorithm: str
    canonicalization: str
    timestamp: datetime


@dataclass(frozen=True)
class _Document:
    """The fields of a signed output document, checked for type and form."""

    output: Dict[str, Any]
    signature: bytes
    key_id: str
    key_version: Optional[int]
    algorithm: Optional[str]
    canonicalization: str
    signature_encoding: Optional[str]
    timestamp: datetime
    message: bytes


def _utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


class Verifier:
    """Verifies signed output documents with the keys of a Hallmark JWKS.

    keys_url is ``http(s)://HOST:PORT/.well-known/jwks.json``, a ``file://``
    URL or a path to a JWKS file. The key set is fetched now (a failure
    raises KeySetError), again when a document names an unknown key ID, and
    again before a verification when it is older than refresh_interval.
    Fetches are at least refresh_min_interval apart, and a failed refresh
    keeps the previous key set. An http(s) fetch must finish within
    fetch_timeout seconds in total.

    max_age bounds how old an output's timestamp (manifest[timestamp_field])
    may be, clock_skew how far it may lie in the future. Accepted signatures
    are remembered for max_age + clock_skew in a cache of replay_cache_size
    entries, kept in replay_cache_path when given so that a restart does not
    forget them. clock returns the current time and exists for tests.
    """

    def __init__(
        self,
        keys_url: str,
        *,
        max_age: timedelta = timedelta(minutes=5),
        clock_skew: timedelta = timedelta(seconds=30),
        timestamp_field: str = "timestamp",
        replay_cache_size: int = 100_000,
        replay_cache_path: Optional[Union[str, Path]] = None,
        fetch_timeout: float = 10.0,
        refresh_interval: timedelta = timedelta(minutes=5),
        refresh_min_interval: timedelta = timedelta(seconds=30),
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if max_age <= timedelta(0):
            raise ValueError(f"max_age must be positive, got {max_age}")
        if clock_skew < timedelta(0):
            raise ValueError(f"clock_skew must not be negative, got {clock_skew}")
        if not isinstance(timestamp_field, str) or not timestamp_field:
            raise ValueError(f"timestamp_field must be a non-empty string, got {timestamp_field!r}")
        if not isinstance(fetch_timeout, (int, float)) or not 0 < fetch_timeout < math.inf:
            raise ValueError(f"fetch_timeout must be a positive number of seconds, got {fetch_timeout!r}")
        self.keys_url = str(keys_url)
        self.max_age = max_age
        self.clock_skew = clock_skew
        self.timestamp_field = timestamp_field
        self.fetch_timeout = fetch_timeout
        self.refresh_interval = refresh_interval.total_seconds()
        self.refresh_min_interval = refresh_min_interval.total_seconds()
        self._clock = clock
        self._lock = threading.Lock()
        self._key_set = load_jwks(self.keys_url, fetch_timeout)
        self._fetched_at = time.monotonic()
        self._last_attempt = self._fetched_at
        self._replay = ReplayCache(
            replay_cache_size, replay_cache_path, now=self._clock().timestamp()
        )

    def close(self) -> None:
        """Close the on-disk replay cache, releasing it for another Verifier."""
        self._replay.close()

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def key_set(self) -> KeySet:
        """The key set currently in use."""
        return self._key_set

    def refresh(self) -> None:
        """Fetch the key set now, regardless of rate limits; raises KeySetError on failure."""
        key_set = load_jwks(self.keys_url, self.fetch_timeout)
        with self._lock:
            self._key_set = key_set
            self._fetched_at = self._last_attempt = time.monotonic()

    def _maybe_refresh(self, reason: str) -> None:
        """Refresh the key set unless one was attempted within refresh_min_interval.

        A failure keeps the previous key set and is logged, whatever it
        raised, so that a broken key server cannot turn verify() into an
        unexpected exception.
        """
        with self._lock:
            now = time.monotonic()
            if now - self._last_attempt < self.refresh_min_interval:
                return
            self._last_attempt = now
        try:
            self.refresh()
        except KeySetError as error:
            logger.warning("key set refresh (%s) failed, keeping the previous key set: %s", reason, error)
        except Exception as error:  # any failure, not only KeySetError, keeps the previous key set
            logger.warning(
                "key set refresh (%s) from %s failed unexpectedly, keeping the previous key set: %r",
                reason, self.keys_url, error, exc_info=True,
            )

    def verify_text(self, text: Union[str, bytes, bytearray]) -> Verdict:
        """Parse a signed output document from JSON text (str or UTF-8 bytes) and verify it.

        Use this for documents read from a file, a socket or a message queue.
        json.loads keeps the last of repeated member names, so a document
        parsed with it could differ from what another parser (or the Rust
        verifier) reads. This method raises MalformedDocument for a repeated
        name in any object, for NaN, Infinity and -Infinity, for text that is
        not UTF-8 or not JSON, and for nesting too deep to parse. It then
        runs the checks of verify.
        """
        return self.verify(parse_signed_output(text))

    def verify(self, signed_output: Any) -> Verdict:
        """Verify a signed output document, already parsed into a dict, and return the Verdict.

        The checks run in this order, each raising its own VerificationError
        subclass: MalformedDocument, UnknownKey, RevokedKey, BadSignature,
        ExpiredKey, StaleOutput and ReplayedOutput. Only a document that
        passes every check is recorded in the replay cache. For documents
        that arrive as JSON text, call verify_text, which also rejects
        repeated member names.
        """
        document = self._parse(signed_output)
        if time.monotonic() - self._fetched_at > self.refresh_interval:
            self._maybe_refresh("periodic")
        key_set = self._key_set
        if document.key_id not in key_set.keys and document.key_id not in key_set.revoked:
            self._maybe_refresh(f"unknown key ID {document.key_id}")
            key_set = self._key_set
        if document.key_id not in key_set.keys and document.key_id not in key_set.revoked:
            raise UnknownKey(f"signing_key_id {document.key_id} is not in the key set at {self.keys_url}")
        if document.key_id in key_set.revoked:
            revoked_at = key_set.revoked[document.key_id].get("hallmark_revoked_at")
            if not isinstance(revoked_at, str):
                revoked_at = "an unknown time"
            raise RevokedKey(f"key {document.key_id} was revoked at {revoked_at}")
        key = key_set.keys[document.key_id]
        replay_id = self._check_signature(document, key)
        self._check_validity(document, key)
        now = self._clock()
        if now - document.timestamp > self.max_age:
            raise StaleOutput(
                f"output timestamp {document.timestamp.isoformat()} is older than max_age {self.max_age}"
            )
        if document.timestamp - now > self.clock_skew:
            raise StaleOutput(
                f"output timestamp {document.timestamp.isoformat()} is more than clock_skew "
                f"{self.clock_skew} in the future"
            )
        ttl = (self.max_age + self.clock_skew).total_seconds()
        if not self._replay.add(replay_id, now=now.timestamp(), ttl=ttl):
            raise ReplayedOutput(
                f"this signature by key {document.key_id} was already accepted within "
                f"{self.max_age + self.clock_skew}"
            )
        return Verdict(
            key_id=key.kid,
            key_name=key.key_name,
            key_version=key.version if key.version is not None else 0,
            algorithm=key.algorithm,
            canonicalization=document.canonicalization,
            timestamp=document.timestamp,
        )

    def _parse(self, signed_output: Any) -> _Document:
        """Check the document's fields for presence, type and form (step 1)."""
        if not isinstance(signed_output, dict):
            raise MalformedDocument(f"the signed output is a {type(signed_output).__name__}, expected a dict")
        missing = [name for name in ("output", "signature", "signing_key_id") if name not in signed_output]
        if missing:
            raise MalformedDocument(f"the signed output has no {', '.join(missing)}")
        output = signed_output["output"]
        if not isinstance(output, dict):
            raise MalformedDocument(f"output is a {type(output).__name__}, expected an object")

        signature_hex = signed_output["signature"]
        if not isinstance(signature_hex, str) or not _HEX.fullmatch(signature_hex):
            if isinstance(signature_hex, str):
                signature_repr = repr(signature_hex[:20])
            else:
                signature_repr = describe_value(signature_hex)
            raise MalformedDocument(f"signature must be a non-empty hex string of whole bytes, got {signature_repr}")
        key_id = signed_output["signing_key_id"]
        if not isinstance(key_id, str) or not key_id:
            raise MalformedDocument(f"signing_key_id must be a non-empty string, got {describe_value(key_id)}")
        key_version = signed_output.get("key_version")
        if key_version is not None and (type(key_version) is not int or not 1 <= key_version <= MAX_KEY_VERSION):
            raise MalformedDocument(
                f"key_version must be an integer from 1 to {MAX_KEY_VERSION}, got {describe_value(key_version)}"
            )
        algorithm = signed_output.get("algorithm")
        # The isinstance checks come first because a list or dict cannot be
        # looked up in a dict (TypeError: unhashable type).
        if algorithm is not None and (not isinstance(algorithm, str) or algorithm not in HASH_FOR_ALGORITHM):
            raise MalformedDocument(
                f"algorithm {describe_value(algorithm)} is unknown; expected one of {', '.join(HASH_FOR_ALGORITHM)}"
            )
        # A null canonicalization counts as absent, like the other optional fields.
        canonicalization = signed_output.get("canonicalization")
        if canonicalization is None:
            canonicalization = PYTHON_SORT_KEYS
        if not isinstance(canonicalization, str) or canonicalization not in CANONICALIZATIONS:
            raise MalformedDocument(
                f"canonicalization {describe_value(canonicalization)} is unknown; "
                f"expected one of {', '.join(CANONICALIZATIONS)}"
            )
        encoding = signed_output.get("signature_encoding")
        if encoding is not None and (not isinstance(encoding, str) or encoding not in SIGNATURE_ENCODINGS):
            raise MalformedDocument(
                f"signature_encoding {describe_value(encoding)} is unknown; expected 'der' or 'p1363'"
            )

        if self.timestamp_field not in output:
            raise MalformedDocument(f"output has no {self.timestamp_field!r} field (the timestamp_field)")
        try:
            timestamp = parse_rfc3339(output[self.timestamp_field])
        except ValueError as error:
            raise MalformedDocument(f"output[{self.timestamp_field!r}]: {error}") from None
        try:
            message = canonicalize(output, canonicalization)
        except ValueError as error:
            raise MalformedDocument(f"output cannot be canonicalized: {error}") from None
        return _Document(
            output=output,
            signature=bytes.fromhex(signature_hex),
            key_id=key_id,
            key_version=key_version,
            algorithm=algorithm,
            canonicalization=canonicalization,
            signature_encoding=encoding,
            timestamp=timestamp,
            message=message,
        )

    def _check_signature(self, document: _Document, key: PublishedKey) -> str:
        """Verify the signature with the key set's parameters (step 4) and return the replay ID."""
        if key.problem is not None or key.public_key is None:
            raise BadSignature(key.problem or f"key {key.kid} has no public key")
        if document.algorithm is not None and document.algorithm != key.algorithm:
            raise BadSignature(
                f"the document names algorithm {document.algorithm} but key {key.kid} is {key.algorithm}"
            )
        if document.key_version is not None and document.key_version != key.version:
            raise BadSignature(
                f"the document names key_version {document.key_version} but key {key.kid} "
                f"is version {key.version}"
            )
        is_ecdsa = key.algorithm in ECDSA_ALGORITHMS
        if document.signature_encoding is not None and not is_ecdsa:
            raise BadSignature(f"signature_encoding applies to ECDSA keys only, and key {key.kid} is {key.algorithm}")
        signature = document.signature
        if key.algorithm in _RSA_ALGORITHMS:
            self._check_rsa_length(signature, key)
        message = document.message
        replay_material = signature
        try:
            if key.algorithm == "rsa-pss-sha256":
                assert isinstance(key.public_key, rsa.RSAPublicKey) and key.pss_salt_length is not None
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=key.pss_salt_length)
                key.public_key.verify(signature, message, pss, hashes.SHA256())
            elif key.algorithm == "rsa-pkcs1-sha256":
                assert isinstance(key.public_key, rsa.RSAPublicKey)
                key.public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            elif is_ecdsa:
                assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
                r, s = self._ecdsa_numbers(signature, document.signature_encoding or "der", key.curve)
                hash_cls = _HASHES[HASH_FOR_ALGORITHM[key.algorithm]]
                key.public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hash_cls()))
                order = _CURVE_ORDERS[key.curve]
                size = CURVES[key.curve][1]
                replay_material = r.to_bytes(size, "big") + min(s, order - s).to_bytes(size, "big")
            else:
                assert isinstance(key.public_key, ed25519.Ed25519PublicKey)
                key.public_key.verify(signature, hashlib.sha256(message).digest())
        except InvalidSignature:
            raise BadSignature(
                f"the {key.algorithm} signature does not match the {document.canonicalization} "
                f"output for key {key.kid}"
            ) from None
        return hashlib.sha256(key.kid.encode("utf-8") + b"\0" + replay_material).hexdigest()

    @staticmethod
    def _check_rsa_length(signature: bytes, key: PublishedKey) -> None:
        """Raise BadSignature unless signature is exactly as long as the key's modulus.

        About 1 in 256 signatures starts with 0x00, and cryptography 50
        (OpenSSL 3) accepts an RSA-PSS signature with that byte removed. The
        replay ID is a hash of the signature bytes, so without this check the
        shortened copy would count as a different signature and verify a
        second time. PKCS#1 v1.5 gets the same check so that both schemes
        report a wrong length alike.
        """
        assert isinstance(key.public_key, rsa.RSAPublicKey)
        bits = key.public_key.key_size
        expected = (bits + 7) // 8
        if len(signature) != expected:
            raise BadSignature(f"an RSA signature for a {bits}-bit key is {expected} bytes, got {len(signature)}")

    @staticmethod
    def _ecdsa_numbers(signature: bytes, encoding: str, curve: str) -> Tuple[int, int]:
        """Return (r, s) of an ECDSA signature in DER or P1363, raising BadSignature if unreadable."""
        size = CURVES[curve][1]
        if encoding == "p1363":
            if len(signature) != 2 * size:
                raise BadSignature(
                    f"a P1363 signature on {curve} is {2 * size} bytes, got {len(signature)}"
                )
            return int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        try:
            r, s = decode_dss_signature(signature)
        except ValueError:
            raise BadSignature("the signature is not a DER ECDSA signature") from None
        if encode_dss_signature(r, s) != signature:
            raise BadSignature("the DER ECDSA signature is not in canonical DER form")
        return r, s

    def _check_validity(self, document: _Document, key: PublishedKey) -> None:
        """Check the output's timestamp and the current time against the key's window (step 5)."""
        if key.activates_at is None or key.verify_until is None:
            raise ExpiredKey(
                f"the key set gives no hallmark_activates_at or hallmark_verify_until for key {key.kid}"
            )
        # A difference of two datetimes cannot overflow, unlike activates_at - clock_skew
        # for a key set that gives 0001-01-01 as activates_at.
        if key.activates_at - document.timestamp > self.clock_skew:
            raise ExpiredKey(
                f"output timestamp {document.timestamp.isoformat()} is before key {key.kid} "
                f"activates at {key.activates_at.isoformat()}"
            )
        if document.timestamp > key.verify_until:
            raise ExpiredKey(
                f"output timestamp {document.timestamp.isoformat()} is after key {key.kid} "
                f"stops being valid at {key.verify_until.isoformat()}"
            )
        if self._clock() > key.verify_until:
            raise ExpiredKey(f"key {key.kid} stopped being valid at {key.verify_until.isoformat()}")


class _RepeatedMember(ValueError):
    """A JSON object repeats a member name."""


class _NotJsonConstant(ValueError):
    """The JSON text contains NaN, Infinity or -Infinity, which RFC 8259 does not allow."""


def _object_without_repeats(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """Build a dict from JSON members, raising _RepeatedMember for a name that appears twice."""
    result: Dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _RepeatedMember(name)
        result[name] = value
    return result


def _reject_constant(literal: str) -> Any:
    raise _NotJsonConstant(literal)


def parse_signed_output(text: Union[str, bytes, bytearray]) -> Any:
    """Parse a signed output document from JSON text (str or UTF-8 bytes) without verifying it.

    Raises MalformedDocument for a repeated member name in any object, for
    NaN, Infinity and -Infinity, for text that is not UTF-8 or not JSON, and
    for nesting too deep to parse. The result is what Verifier.verify_text
    verifies; it need not be a dict, which Verifier.verify then rejects.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise MalformedDocument(f"the signed output is not UTF-8: {error}") from None
    if not isinstance(text, str):
        raise MalformedDocument(f"the signed output is a {type(text).__name__}, expected str or bytes")
    try:
        return json.loads(text, object_pairs_hook=_object_without_repeats, parse_constant=_reject_constant)
    except _RepeatedMember as error:
        name = json.dumps(error.args[0], ensure_ascii=False)
        if len(name) > MAX_DESCRIBED_CHARS:
            name = f"{name[:MAX_DESCRIBED_CHARS]}…"
        raise MalformedDocument(f"the signed output is not valid: the member {name} appears twice") from None
    except _NotJsonConstant as error:
        raise MalformedDocument(
            f"the signed output is not JSON: {error.args[0]} is not a JSON value; "
            "NaN and infinities are not allowed"
        ) from None
    except RecursionError:
        raise MalformedDocument("the signed output is nested too deeply to parse") from None
    except ValueError as error:
        raise MalformedDocument(f"the signed output is not JSON: {error}") from None
