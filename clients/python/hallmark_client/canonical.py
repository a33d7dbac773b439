"""Canonical serializations of output manifests, the bytes that get hashed and signed."""

from __future__ import annotations

import json
import math
from typing import Any, Iterator, Tuple

import rfc8785

JCS = "jcs"
PYTHON_SORT_KEYS = "python-sort-keys"
CANONICALIZATIONS = (JCS, PYTHON_SORT_KEYS)


def canonicalize(manifest: Any, canonicalization: str = JCS) -> bytes:
    """Serialize manifest to its canonical bytes.

    ``jcs`` is the JSON Canonicalization Scheme of RFC 8785, which any
    language can reproduce. ``python-sort-keys`` is
    ``json.dumps(manifest, sort_keys=True)`` with the default separators and
    ``ensure_ascii``, encoded as UTF-8, the form that many existing Python
    producers sign.

    Raises ValueError for an unknown canonicalization, for NaN or an infinity
    anywhere in manifest, for a string with an unpaired UTF-16 surrogate,
    and for values that the scheme cannot represent.
    """
    if canonicalization not in CANONICALIZATIONS:
        raise ValueError(
            f"unknown canonicalization {canonicalization!r}; use one of {', '.join(CANONICALIZATIONS)}"
        )
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
