"""Canonical serializations of output manifests, the bytes that get hashed and signed."""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Iterator, List, Optional, Tuple

import rfc8785

from hallmark_client.errors import describe_value

JCS = "jcs"
PYTHON_SORT_KEYS = "python-sort-keys"
CANONICALIZATIONS = (JCS, PYTHON_SORT_KEYS)
#: Maximum nesting depth of arrays and objects in a manifest, the outermost
#: being depth 1. The Rust verifier (canon::MAX_DEPTH) has the same limit.
MAX_DEPTH = 128


def canonicalize(manifest: Any, canonicalization: str = JCS) -> bytes:
    """Serialize manifest to its canonical bytes.

    ``jcs`` is the JSON Canonicalization Scheme of RFC 8785, which any
    language can reproduce. ``python-sort-keys`` is
    ``json.dumps(manifest, sort_keys=True)`` with the default separators and
    ``ensure_ascii``, encoded as UTF-8, the form that many existing Python
    producers sign.

    Raises ValueError for an unknown canonicalization, for arrays and
    objects nested more than MAX_DEPTH levels, for a key that is not a str,
    for NaN or an infinity anywhere in manifest, for a string with an
    unpaired UTF-16 surrogate, and for values that the scheme cannot
    represent.
    """
    if canonicalization not in CANONICALIZATIONS:
        raise ValueError(
            f"unknown canonicalization {canonicalization!r}; use one of {', '.join(CANONICALIZATIONS)}"
        )
    # The depth check runs first: it is iterative, and it bounds the
    # recursion of json.dumps and rfc8785.dumps and the length of the paths
    # that the other checks build.
    reject_deep_nesting(manifest)
    reject_non_str_keys(manifest)
    reject_non_finite(manifest)
    reject_lone_surrogates(manifest)
    if canonicalization == PYTHON_SORT_KEYS:
        try:
            return json.dumps(manifest, sort_keys=True, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise ValueError(f"manifest cannot be serialized as JSON: {error}") from error
    try:
        return rfc8785.dumps(manifest)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as error:
        raise ValueError(
            f"manifest cannot be serialized with RFC 8785 (jcs): {error}; JCS allows only str keys, "
            "str, bool, None, finite float, list, dict and int within +-(2**53 - 1), so convert "
            "other values (for example large ints to str) before signing"
        ) from error


def reject_deep_nesting(value: Any) -> None:
    """Raise ValueError when arrays and objects in value nest more than MAX_DEPTH levels.

    A reference cycle counts as infinitely deep, so it is rejected here too.
    """
    # Each entry carries its trail, (parent trail, key or index), so that a
    # path string is built only for the error.
    stack: List[Tuple[Any, int, Optional[Tuple[Any, Any]]]] = [(value, 1, None)]
    while stack:
        item, depth, trail = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Tuple[Any, Any]] = item.items()
        elif isinstance(item, (list, tuple)):
            children = enumerate(item)
        else:
            continue
        if depth > MAX_DEPTH:
            raise ValueError(
                f"manifest arrays and objects are nested more than {MAX_DEPTH} levels deep at "
                f"{_trail_path(trail)}; flatten the manifest before signing"
            )
        stack.extend((child, depth + 1, (trail, key)) for key, child in children)


def _trail_path(trail: Optional[Tuple[Any, Any]]) -> str:
    """Return the JSONPath-like location of a reject_deep_nesting trail."""
    segments = []
    while trail is not None:
        trail, key = trail
        segments.append(f"[{key!r}]" if isinstance(key, str) else f"[{key}]")
    return "$" + "".join(reversed(segments))


def reject_non_str_keys(value: Any) -> None:
    """Raise ValueError naming the first dict key that is not a str.

    json.dumps turns such a key into a string ({1: "a"} becomes {"1": "a"}),
    so the signed bytes would differ from the manifest that a consumer
    parses back and verifies.
    """
    for path, item in _walk(value, "$"):
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise ValueError(
                        f"manifest key {describe_value(key)} at {path} is of type {type(key).__name__}, "
                        "but JSON member names are strings; convert the key to a str before signing"
                    )


def reject_non_finite(value: Any) -> None:
    """Raise ValueError naming the first NaN or infinite float in value, which JSON cannot hold."""
    for path, item in _walk(value, "$"):
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(
                f"manifest value at {path} is {item!r}, which JSON cannot represent "
                "(json.dumps(allow_nan=False) rejects it); replace it with null or a string "
                "before signing"
            )


def reject_lone_surrogates(value: Any) -> None:
    """Raise ValueError naming the first key or string with an unpaired surrogate.

    Such a string is not valid Unicode and has no UTF-8 form. json.dumps
    escapes it as \\udXXX, but the Rust verifier and other strict parsers
    reject it, so a signature over it would not verify everywhere.
    """
    for path, item in _walk(value, "$"):
        if isinstance(item, str) and _has_lone_surrogate(item):
            raise ValueError(
                f"manifest value at {path} contains an unpaired UTF-16 surrogate, which is not "
                "valid Unicode; remove it before signing"
            )
        if isinstance(item, dict):
            for key in item:
                if isinstance(key, str) and _has_lone_surrogate(key):
                    raise ValueError(
                        f"manifest key {key!r} at {path} contains an unpaired UTF-16 surrogate, "
                        "which is not valid Unicode; remove it before signing"
                    )


def _has_lone_surrogate(text: str) -> bool:
    """Return whether text contains a code point from U+D800 to U+DFFF."""
    return any("\ud800" <= char <= "\udfff" for char in text)


def _walk(value: Any, path: str) -> Iterator[Tuple[str, Any]]:
    """Yield (JSONPath-like location, value) for value and everything nested in it."""
    stack = [(path, value)]
    while stack:
        location, item = stack.pop()
        yield location, item
        if isinstance(item, dict):
            stack.extend((f"{location}[{key!r}]", child) for key, child in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{location}[{index}]", child) for index, child in enumerate(item))
