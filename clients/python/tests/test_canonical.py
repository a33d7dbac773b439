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


def nested_lists(depth: int) -> list:
    """Return [[...[0]...]] with depth lists, built without recursion."""
    value: list = [0]
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("canonicalization", ["jcs", "python-sort-keys"])
def test_nesting_up_to_the_limit_is_accepted(canonicalization: str) -> None:
    # The manifest object is depth 1, so its member can hold 127 more levels.
    manifest = {"a": nested_lists(127)}
    expected = ('{"a":' if canonicalization == "jcs" else '{"a": ') + "[" * 127 + "0" + "]" * 127 + "}"
    assert canonicalize(manifest, canonicalization) == expected.encode("ascii")


@pytest.mark.parametrize("canonicalization", ["jcs", "python-sort-keys"])
def test_nesting_beyond_the_limit_is_rejected(canonicalization: str) -> None:
    path = "$['a']" + "[0]" * 127
    with pytest.raises(ValueError) as raised:
        canonicalize({"a": nested_lists(128)}, canonicalization)
    assert str(raised.value) == (
        f"manifest arrays and objects are nested more than 128 levels deep at {path}; "
        "flatten the manifest before signing"
    )


@pytest.mark.parametrize("canonicalization", ["jcs", "python-sort-keys"])
def test_very_deep_nesting_raises_value_error(canonicalization: str) -> None:
    # Far past the interpreter's recursion limit: a ValueError, not a RecursionError.
    with pytest.raises(ValueError, match="nested more than 128 levels deep"):
        canonicalize({"a": nested_lists(100_000)}, canonicalization)


def test_reference_cycle_is_rejected_as_too_deep() -> None:
    manifest: dict = {"a": 1}
    manifest["self"] = manifest
    with pytest.raises(ValueError, match=r"nested more than 128 levels deep at \$\['self'\]\['self'\]"):
        canonicalize(manifest, "jcs")


NON_STR_KEYS = [
    ({1: "a"}, "manifest key 1 at $ is of type int"),
    ({"outer": [{None: 1}]}, "manifest key None at $['outer'][0] is of type NoneType"),
    ({"outer": {True: 1}}, "manifest key True at $['outer'] is of type bool"),
    ({"outer": {1.5: 1}}, "manifest key 1.5 at $['outer'] is of type float"),
]


@pytest.mark.parametrize("manifest, start", NON_STR_KEYS, ids=["int", "None", "bool", "float"])
@pytest.mark.parametrize("canonicalization", ["jcs", "python-sort-keys"])
def test_non_str_keys_are_rejected(manifest: dict, start: str, canonicalization: str) -> None:
    with pytest.raises(ValueError) as raised:
        canonicalize(manifest, canonicalization)
    assert str(raised.value) == (
        f"{start}, but JSON member names are strings; convert the key to a str before signing"
    )


def test_sign_output_rejects_bad_manifest_early() -> None:
    with Client("unix:/nonexistent/hallmark.sock", timeout=0.5) as client:
        with pytest.raises(ValueError, match=r"manifest key 1 at \$ is of type int"):
            client.sign_output({1: "a", "timestamp": "2026-01-01T00:00:00Z"}, canonicalization="python-sort-keys")
        with pytest.raises(ValueError, match="nested more than 128 levels deep"):
            client.sign_output({"a": nested_lists(1_000), "timestamp": "2026-01-01T00:00:00Z"})
