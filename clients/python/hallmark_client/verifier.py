"""Verification of Hallmark signed output documents against the server's JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

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
)
from hallmark_client.replay import ReplayCache
from hallmark_client.timeutil import parse_rfc3339

logger = logging.getLogger("hallmark_client")

#: Largest JWKS document the verifier reads, in bytes.
MAX_JWKS_BYTES = 1 << 20
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_CURVES = {"P-256": (ec.SECP256R1(), 32), "P-384": (ec.SECP384R1(), 48)}
_CURVE_FOR_ALGORITHM = {"ecdsa-p256-sha256": "P-256", "ecdsa-p384-sha384": "P-384"}
# Group orders, for mapping an ECDSA (r, s) and its twin (r, n - s) to one replay entry.
_CURVE_ORDERS = {
    "P-256": int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16),
    "P-384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}
# Key versions are uint32 in the protocol.
_MAX_KEY_VERSION = 2**32 - 1
_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey]


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
class PublishedKey:
    """One key version from the JWKS ``keys`` member.

    problem is None when the entry is usable. Otherwise it describes what is
    wrong with the entry, and verification with the key fails with BadSignature.
    """

    kid: str
    key_name: str
    version: Optional[int]
    algorithm: str
    pss_salt_length: Optional[int]
    activates_at: Optional[datetime]
    verify_until: Optional[datetime]
    public_key: Optional[PublicKey]
    curve: str
    problem: Optional[str]


@dataclass(frozen=True)
class KeySet:
    """A parsed JWKS: usable key versions and revoked key IDs, both by kid."""

    keys: Dict[str, PublishedKey]
    revoked: Dict[str, Dict[str, Any]]


def _b64url_int(value: Any) -> int:
    """Decode an unpadded base64url JWK member to a non-negative integer."""
    return int.from_bytes(_b64url_bytes(value), "big")


def _b64url_bytes(value: Any) -> bytes:
    """Decode an unpadded base64url JWK member to bytes, raising ValueError when it is not one."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise ValueError(f"{value!r} is not unpadded base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _optional_time(member: Dict[str, Any], name: str) -> Optional[datetime]:
    """Parse an RFC 3339 JWK member, or return None when it is absent or unreadable."""
    value = member.get(name)
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def parse_jwk(member: Dict[str, Any]) -> PublishedKey:
    """Parse one JWK of a Hallmark JWKS into a PublishedKey, recording any problem in it."""
    kid = member["kid"]
    algorithm = member.get("hallmark_algorithm")
    version = member.get("hallmark_version")
    salt = member.get("hallmark_pss_salt_length")
    if salt is None and algorithm == "rsa-pss-sha256" and member.get("alg") == "PS256":
        salt = 32
    public_key: Optional[PublicKey] = None
    curve = ""
    problem: Optional[str] = None
    try:
        if algorithm not in HASH_FOR_ALGORITHM:
            raise ValueError(f"hallmark_algorithm {algorithm!r} is not supported")
        kty = member.get("kty")
        if algorithm.startswith("rsa-"):
            if kty != "RSA":
                raise ValueError(f"a {algorithm} key must have kty RSA, not {kty!r}")
            if algorithm == "rsa-pss-sha256" and (type(salt) is not int or salt < 0):
                raise ValueError(f"hallmark_pss_salt_length {salt!r} is not a byte count")
            public_key = rsa.RSAPublicNumbers(_b64url_int(member.get("e")), _b64url_int(member.get("n"))).public_key()
        elif algorithm in ECDSA_ALGORITHMS:
            curve = _CURVE_FOR_ALGORITHM[algorithm]
            if kty != "EC" or member.get("crv") != curve:
                raise ValueError(f"a {algorithm} key must have kty EC and crv {curve}")
            numbers = ec.EllipticCurvePublicNumbers(
                _b64url_int(member.get("x")), _b64url_int(member.get("y")), _CURVES[curve][0]
            )
            public_key = numbers.public_key()
        else:
            if kty != "OKP" or member.get("crv") != "Ed25519":
                raise ValueError("an ed25519 key must have kty OKP and crv Ed25519")
            public_key = ed25519.Ed25519PublicKey.from_public_bytes(_b64url_bytes(member.get("x")))
    except ValueError as error:
        problem = f"the key set entry for {kid} is unusable: {error}"
    return PublishedKey(
        kid=kid,
        key_name=str(member.get("hallmark_key_name", "")),
        version=version if type(version) is int else None,
        algorithm=str(algorithm),
        pss_salt_length=salt if type(salt) is int else None,
        activates_at=_optional_time(member, "hallmark_activates_at"),
        verify_until=_optional_time(member, "hallmark_verify_until"),
        public_key=public_key,
        curve=curve,
        problem=problem,
    )


def parse_jwks(document: Any, source: str) -> KeySet:
    """Parse a Hallmark JWKS document, raising KeySetError when it is not a JWK Set."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetError(f"{source} is not a JWK Set: expected an object with a 'keys' array")
    keys: Dict[str, PublishedKey] = {}
    for member in document["keys"]:
        if not isinstance(member, dict) or not isinstance(member.get("kid"), str) or not member["kid"]:
            logger.warning("ignoring a key without a kid in %s", source)
            continue
        if member["kid"] in keys:
            raise KeySetError(f"{source} lists kid {member['kid']} twice")
        keys[member["kid"]] = parse_jwk(member)
    revoked: Dict[str, Dict[str, Any]] = {}
    listed = document.get("hallmark_revoked", [])
    if not isinstance(listed, list):
        raise KeySetError(f"{source} has a 'hallmark_revoked' member that is not an array")
    for entry in listed:
        if isinstance(entry, dict) and isinstance(entry.get("kid"), str):
            revoked[entry["kid"]] = entry
    return KeySet(keys=keys, revoked=revoked)


def load_jwks(keys_url: str, timeout: float) -> KeySet:
    """Fetch and parse the JWKS at an http(s) URL, a file:// URL or a file path."""
    parsed = urllib.parse.urlparse(keys_url)
    try:
        if parsed.scheme in ("http", "https"):
            request = urllib.request.Request(keys_url, headers={"Accept": "application/jwk-set+json"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read(MAX_JWKS_BYTES + 1)
        else:
            if parsed.scheme == "file":
                path = Path(urllib.request.url2pathname(parsed.path))
            elif parsed.scheme and len(parsed.scheme) > 1:
                raise KeySetError(
                    f"keys_url {keys_url!r} has scheme {parsed.scheme!r}; use http://, https://, "
                    "file:// or a file path"
                )
            else:
                path = Path(keys_url)
            with open(path, "rb") as handle:
                raw = handle.read(MAX_JWKS_BYTES + 1)
    except KeySetError:
        raise
    except (OSError, ValueError) as error:
        raise KeySetError(f"cannot read the key set from {keys_url}: {error}") from error
    if len(raw) > MAX_JWKS_BYTES:
        raise KeySetError(f"the key set at {keys_url} is larger than {MAX_JWKS_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise KeySetError(f"the key set at {keys_url} is not JSON: {error}") from error
    return parse_jwks(document, keys_url)


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
    keeps the previous key set.

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
        """Refresh the key set unless one was attempted within refresh_min_interval."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_attempt < self.refresh_min_interval:
                return
            self._last_attempt = now
        try:
            self.refresh()
        except KeySetError as error:
            logger.warning("key set refresh (%s) failed, keeping the previous key set: %s", reason, error)

    def verify(self, signed_output: Any) -> Verdict:
        """Verify a signed output document and return the Verdict.

        The checks run in this order, each raising its own VerificationError
        subclass: MalformedDocument, UnknownKey, RevokedKey, BadSignature,
        ExpiredKey, StaleOutput and ReplayedOutput. Only a document that
        passes every check is recorded in the replay cache.
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
            revoked_at = key_set.revoked[document.key_id].get("hallmark_revoked_at", "an unknown time")
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
            raise MalformedDocument(
                f"signature must be a non-empty hex string of whole bytes, got {str(signature_hex)[:20]!r}"
            )
        key_id = signed_output["signing_key_id"]
        if not isinstance(key_id, str) or not key_id:
            raise MalformedDocument(f"signing_key_id must be a non-empty string, got {key_id!r}")
        key_version = signed_output.get("key_version")
        if key_version is not None and (type(key_version) is not int or not 1 <= key_version <= _MAX_KEY_VERSION):
            raise MalformedDocument(
                f"key_version must be an integer from 1 to {_MAX_KEY_VERSION}, got {key_version!r}"
            )
        algorithm = signed_output.get("algorithm")
        if algorithm is not None and algorithm not in HASH_FOR_ALGORITHM:
            raise MalformedDocument(
                f"algorithm {algorithm!r} is unknown; expected one of {', '.join(HASH_FOR_ALGORITHM)}"
            )
        # A null canonicalization counts as absent, like the other optional fields.
        canonicalization = signed_output.get("canonicalization")
        if canonicalization is None:
            canonicalization = PYTHON_SORT_KEYS
        if canonicalization not in CANONICALIZATIONS:
            raise MalformedDocument(
                f"canonicalization {canonicalization!r} is unknown; expected one of {', '.join(CANONICALIZATIONS)}"
            )
        encoding = signed_output.get("signature_encoding")
        if encoding is not None and encoding not in SIGNATURE_ENCODINGS:
            raise MalformedDocument(f"signature_encoding {encoding!r} is unknown; expected 'der' or 'p1363'")

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
                size = _CURVES[key.curve][1]
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
    def _ecdsa_numbers(signature: bytes, encoding: str, curve: str) -> Tuple[int, int]:
        """Return (r, s) of an ECDSA signature in DER or P1363, raising BadSignature if unreadable."""
        size = _CURVES[curve][1]
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
        if document.timestamp < key.activates_at - self.clock_skew:
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
