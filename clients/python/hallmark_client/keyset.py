"""The verifier's key set: a Hallmark JWKS, fetched and parsed into usable key versions."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hallmark_client.client import ECDSA_ALGORITHMS, HASH_FOR_ALGORITHM
from hallmark_client.errors import KeySetError, describe_value
from hallmark_client.fetch import FetchTimeout, fetch_url
from hallmark_client.timeutil import parse_rfc3339

logger = logging.getLogger("hallmark_client")

#: Largest JWKS document the verifier reads, in bytes.
MAX_JWKS_BYTES = 1 << 20
# Key versions are uint32 in the protocol.
MAX_KEY_VERSION = 2**32 - 1
CURVES = {"P-256": (ec.SECP256R1(), 32), "P-384": (ec.SECP384R1(), 48)}
_CURVE_FOR_ALGORITHM = {"ecdsa-p256-sha256": "P-256", "ecdsa-p384-sha384": "P-384"}
_SHA256_BYTES = 32
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey]


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
        raise ValueError(f"{describe_value(value)} is not unpadded base64url")
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


def max_pss_salt_length(key_bits: int) -> int:
    """Return the largest PSS salt, in bytes, for SHA-256 and a modulus of key_bits bits.

    That is emLen - hLen - 2, where emLen = ceil((key_bits - 1) / 8)
    (RFC 8017, section 9.1.1), and 0 for moduli too small for any salt.
    """
    return max(0, (key_bits - 1 + 7) // 8 - _SHA256_BYTES - 2)


def _public_key(algorithm: str, member: Dict[str, Any]) -> Tuple[PublicKey, str]:
    """Build the public key of a JWK whose kty and crv fit algorithm; return it with its curve name."""
    kty = member.get("kty")
    if algorithm.startswith("rsa-"):
        if kty != "RSA":
            raise ValueError(f"a {algorithm} key must have kty RSA, not {describe_value(kty)}")
        numbers = rsa.RSAPublicNumbers(_b64url_int(member.get("e")), _b64url_int(member.get("n")))
        return numbers.public_key(), ""
    if algorithm in ECDSA_ALGORITHMS:
        curve = _CURVE_FOR_ALGORITHM[algorithm]
        if kty != "EC" or member.get("crv") != curve:
            raise ValueError(f"a {algorithm} key must have kty EC and crv {curve}")
        point = ec.EllipticCurvePublicNumbers(
            _b64url_int(member.get("x")), _b64url_int(member.get("y")), CURVES[curve][0]
        )
        return point.public_key(), curve
    if kty != "OKP" or member.get("crv") != "Ed25519":
        raise ValueError("an ed25519 key must have kty OKP and crv Ed25519")
    return ed25519.Ed25519PublicKey.from_public_bytes(_b64url_bytes(member.get("x"))), ""


def _pss_salt_length(algorithm: str, member: Dict[str, Any], public_key: PublicKey) -> Optional[int]:
    """Return the PSS salt length of an rsa-pss-sha256 JWK, None for other algorithms."""
    if algorithm != "rsa-pss-sha256":
        return None
    if "hallmark_pss_salt_length" in member:
        salt = member["hallmark_pss_salt_length"]
        # type() rather than isinstance(): true and false are not byte counts.
        if type(salt) is not int or salt < 0:
            raise ValueError(f"hallmark_pss_salt_length {describe_value(salt)} is not a byte count")
    elif member.get("alg") == "PS256":
        # PS256 fixes the salt at the SHA-256 digest length (RFC 7518, section 3.5).
        salt = _SHA256_BYTES
    else:
        raise ValueError("an rsa-pss-sha256 key needs hallmark_pss_salt_length")
    assert isinstance(public_key, rsa.RSAPublicKey)
    largest = max_pss_salt_length(public_key.key_size)
    if salt > largest:
        raise ValueError(
            f"a PSS salt of {salt} bytes does not fit a {public_key.key_size}-bit key; the maximum is {largest}"
        )
    return salt


def _key_version(member: Dict[str, Any]) -> int:
    """Return hallmark_version, raising ValueError unless it is an int from 1 to MAX_KEY_VERSION."""
    version = member.get("hallmark_version")
    if type(version) is not int or version < 1:
        raise ValueError(f"hallmark_version must be an integer of at least 1, got {describe_value(version)}")
    if version > MAX_KEY_VERSION:
        raise ValueError(f"hallmark_version must be at most {MAX_KEY_VERSION}, got {version}")
    return version


def parse_jwk(member: Dict[str, Any]) -> PublishedKey:
    """Parse one JWK of a Hallmark JWKS into a PublishedKey, recording any problem in it.

    member must have a str kid. Whatever else it contains, the result is a
    PublishedKey: an entry that cannot be used gets a problem instead of
    raising, so that one bad entry does not take the rest of the key set
    down. The checks run in the Rust verifier's order: algorithm, public
    key, PSS salt length, version.
    """
    kid = member["kid"]
    algorithm = member.get("hallmark_algorithm")
    public_key: Optional[PublicKey] = None
    curve = ""
    salt: Optional[int] = None
    version: Optional[int] = None
    problem: Optional[str] = None
    try:
        if not isinstance(algorithm, str) or algorithm not in HASH_FOR_ALGORITHM:
            raise ValueError(f"hallmark_algorithm {describe_value(algorithm)} is not supported")
        public_key, curve = _public_key(algorithm, member)
        salt = _pss_salt_length(algorithm, member, public_key)
        version = _key_version(member)
    except (ValueError, TypeError, OverflowError, UnsupportedAlgorithm) as error:
        public_key = None
        problem = f"the key set entry for {kid} is unusable: {error}"
    key_name = member.get("hallmark_key_name")
    return PublishedKey(
        kid=kid,
        key_name=key_name if isinstance(key_name, str) else "",
        version=version,
        algorithm=algorithm if isinstance(algorithm, str) else describe_value(algorithm),
        pss_salt_length=salt,
        activates_at=_optional_time(member, "hallmark_activates_at"),
        verify_until=_optional_time(member, "hallmark_verify_until"),
        public_key=public_key,
        curve=curve,
        problem=problem,
    )


def _unusable_key(kid: str, problem: str) -> PublishedKey:
    """Return a PublishedKey that only carries problem."""
    return PublishedKey(
        kid=kid, key_name="", version=None, algorithm="", pss_salt_length=None,
        activates_at=None, verify_until=None, public_key=None, curve="", problem=problem,
    )


def parse_jwks(document: Any, source: str) -> KeySet:
    """Parse a Hallmark JWKS document, raising KeySetError when it is not a JWK Set.

    An entry without a kid is skipped with a warning, and any other bad
    entry is kept as unusable (see parse_jwk). ``"hallmark_revoked": null``
    counts as an empty list.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetError(f"{source} is not a JWK Set: expected an object with a 'keys' array")
    keys: Dict[str, PublishedKey] = {}
    for member in document["keys"]:
        if not isinstance(member, dict) or not isinstance(member.get("kid"), str) or not member["kid"]:
            logger.warning("ignoring a key without a kid in %s", source)
            continue
        kid = member["kid"]
        if kid in keys:
            raise KeySetError(f"{source} lists kid {kid} twice")
        try:
            keys[kid] = parse_jwk(member)
        except Exception as error:  # any exception from one entry makes only that entry unusable
            logger.warning("the key set entry for %s in %s is unusable", kid, source, exc_info=True)
            keys[kid] = _unusable_key(kid, f"the key set entry for {kid} is unusable: {error!r}")
    revoked: Dict[str, Dict[str, Any]] = {}
    listed = document.get("hallmark_revoked")
    if listed is None:
        listed = []
    if not isinstance(listed, list):
        raise KeySetError(f"{source} has a 'hallmark_revoked' member that is not an array")
    for entry in listed:
        if isinstance(entry, dict) and isinstance(entry.get("kid"), str):
            revoked[entry["kid"]] = entry
    return KeySet(keys=keys, revoked=revoked)


class _NotFiniteNumber(ValueError):
    """A JSON text contains NaN, Infinity, -Infinity or a number too large for a double."""


def _reject_constant(literal: str) -> Any:
    raise _NotFiniteNumber(f"{literal} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _NotFiniteNumber(f"the number {literal[:40]} is too large for a double")
    return value


def parse_jwks_bytes(raw: bytes, source: str) -> KeySet:
    """Parse JWKS bytes, raising KeySetError when they are not UTF-8 JSON or not a JWK Set.

    NaN, infinities and numbers that overflow a double make the whole key
    set invalid, as the Rust verifier's JSON parser does.
    """
    if len(raw) > MAX_JWKS_BYTES:
        raise KeySetError(f"the key set at {source} is larger than {MAX_JWKS_BYTES} bytes")
    try:
        document = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except _NotFiniteNumber as error:
        raise KeySetError(
            f"the key set at {source} is not valid JSON: {error}; NaN and infinities are not allowed"
        ) from None
    except RecursionError:
        raise KeySetError(f"the key set at {source} is nested too deeply to parse") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise KeySetError(f"the key set at {source} is not JSON: {error}") from error
    return parse_jwks(document, source)


def load_jwks(keys_url: str, timeout: float) -> KeySet:
    """Fetch and parse the JWKS at an http(s) URL, a file:// URL or a file path.

    An http(s) fetch must finish within timeout seconds in total.
    """
    parsed = urllib.parse.urlparse(keys_url)
    try:
        if parsed.scheme in ("http", "https"):
            raw = fetch_url(
                keys_url, timeout, MAX_JWKS_BYTES, headers={"Accept": "application/jwk-set+json"}
            )
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
    except FetchTimeout as error:
        raise KeySetError(
            f"fetching the key set from {keys_url} timed out: it took longer than "
            f"fetch_timeout ({timeout:g} s)"
        ) from error
    except http.client.HTTPException as error:
        raise KeySetError(
            f"cannot read the key set from {keys_url}: the response is not valid HTTP ({error!r})"
        ) from error
    except (OSError, ValueError) as error:
        raise KeySetError(f"cannot read the key set from {keys_url}: {error}") from error
    return parse_jwks_bytes(raw, keys_url)
