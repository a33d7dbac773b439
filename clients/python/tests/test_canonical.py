"""Canonicalization and manifest checks, without a server."""

from __future__ import annotations

import json
import math

import pytest
import rfc8785

from hallmark_client import Client, canonicalize

CASES = [
    {"b": 1, "a": "x"},
    {"model": "iris", "probabilities": {"versicolor": 0.018343, "setosa": 0.981657}, "prediction": 0},
    {"text": "café ☕ \u2028 \"quoted\" \\", "nested": [1, 2.5, None, True, False, {"z": [], "y": {}}]},
    {"floats": [1.0, 1e21, 1e-7, -0.0, 123456789.125], "big": 9007199254740991},
    {"\u00e9": 1, "e": 2, "\U0001f600": 3, "\u20ac": 4},
]


@pytest.mark.parametrize("manifest", CASES)
def test_python_sort_keys_equals_json_dumps(manifest: dict) -> None:
    assert canonicalize(manifest, "python-sort-keys") == json.dumps(manifest, sort_keys=True).encode("utf-8")


@pytest.mark.parametrize("manifest", CASES)
def test_jcs_equals_rfc8785(manifest: dict) -> None:
    assert canonicalize(manifest, "jcs") == rfc8785.dumps(manifest)


def test_jcs_known_bytes() -> None:
    # RFC 8785 sorts by UTF-16 code units, writes numbers the ECMAScript way and no whitespace.
    manifest = {"b": 1.0, "a": [1e21, "é"], "\U0001f600": None, "\u20ac": True}
    assert canonicalize(manifest, "jcs") == '{"a":[1e+21,"é"],"b":1,"€":true,"😀":null}'.encode("utf-8")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("canonicalization", ["jcs", "python-sort-keys"])
def test_non_finite_floats_are_rejected(value: float, canonicalization: str) -> None:
    with pytest.raises(ValueError, match=r"\$\['scores'\]\[1\].*cannot represent"):
        canonicalize({"scores": [0.5, value]}, canonicalization)


def test_sign_output_rejects_nan_before_any_rpc() -> None:
    # The target does not exist: a ValueError rather than an RPC error shows
    # that the manifest was rejected before the client tried to sign it.
    with Client("unix:/nonexistent/hallmark.sock", timeout=0.5) as client:
        with pytest.raises(ValueError, match=r"\$\['score'\] is nan"):
            client.sign_output({"score": math.nan, "timestamp": "2026-01-01T00:00:00Z"})


def test_unknown_canonicalization_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown canonicalization 'yaml'"):
        canonicalize({"a": 1}, "yaml")


def test_jcs_rejects_integers_beyond_the_safe_range() -> None:
    with pytest.raises(ValueError, match="RFC 8785"):
        canonicalize({"a": 2**60}, "jcs")
