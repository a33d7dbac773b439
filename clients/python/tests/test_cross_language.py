"""Agreement between the Python client and the Rust `hallmark sign` and `hallmark verify`.

Outputs signed on one side verify on the other for every algorithm and
canonicalization. Every one-byte change to a signed document is rejected by
both verifiers. Each rejection reason carries its exact message on both
sides, and a replay cache file written by one side is honoured by the other.

The server tests share one `hallmark serve` per algorithm for the module
(conftest.start_hallmark). The other tests use local keys and JWKS files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from conftest import HallmarkServer, LocalKey, generate_key, hallmark_binary, sample_manifest, write_jwks
from hallmark_client import (
    BadSignature,
    Client,
    ExpiredKey,
    MalformedDocument,
    ReplayedOutput,
    RevokedKey,
    StaleOutput,
    UnknownKey,
    Verdict,
    VerificationError,
    Verifier,
    canonicalize,
)
from hallmark_client.timeutil import format_rfc3339, parse_rfc3339

ALGORITHMS = ["rsa-pss-sha256", "rsa-pkcs1-sha256", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "ed25519"]
PROFILES = ["jcs", "python-sort-keys"]
# Byte length of r and of s, and the group order, by ECDSA algorithm.
ECDSA_CURVES = {
    "ecdsa-p256-sha256": (32, int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)),
    "ecdsa-p384-sha384": (
        48,
        int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
            "581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
    ),
}
# Members of a signed output that the signature or the verifier's checks cover.
# signed_at is left out: it is informational and not covered by the signature
# (docs/protocol.md, src/verify/document.rs), so a changed signed_at verifies.
CHECKED_MEMBERS = (
    "output",
    "signature",
    "signing_key_id",
    "key_version",
    "algorithm",
    "canonicalization",
    "signature_encoding",
)
DOCUMENT_FIELDS = ["output", "signature", "signing_key_id", "key_version", "algorithm", "canonicalization", "signed_at"]
COMMAND_TIMEOUT_SECONDS = 120
EXIT_REJECTED = 1
EXIT_IO = 74
DEFAULT_REVOKED_AT = "2026-01-01T00:00:00Z"  # the revocation time that conftest.write_jwks writes


# ------------------------------------------------------------------ helpers


@dataclass
class VerifyRun:
    """The outcome of one `hallmark verify` process."""

    exit_code: int
    verdicts: List[Dict[str, Any]]
    stderr: str


def run_hallmark(arguments: Sequence[str], stdin: bytes = b"") -> "subprocess.CompletedProcess[bytes]":
    """Run the hallmark binary under test with arguments, feeding stdin."""
    return subprocess.run(
        [str(hallmark_binary()), *arguments],
        input=stdin,
        capture_output=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def output_lines(stdout: bytes) -> List[str]:
    """Split command output into lines on LF only.

    Documents may contain raw U+2028 and U+2029, which str.splitlines would
    also split on.
    """
    text = stdout.decode("utf-8")
    assert text.endswith("\n") or text == "", f"output does not end with a newline: {text[-80:]!r}"
    return text.split("\n")[:-1]


def rust_verify(keys: str, documents: Sequence[Union[str, bytes]], *options: str) -> VerifyRun:
    """Verify documents as JSON lines in one `hallmark verify --keys keys` process."""
    lines = [document.encode("utf-8") if isinstance(document, str) else document for document in documents]
    result = run_hallmark(["verify", "--keys", keys, *options, "-"], b"\n".join(lines) + b"\n")
    verdicts = [json.loads(line) for line in output_lines(result.stdout)]
    return VerifyRun(result.returncode, verdicts, result.stderr.decode("utf-8"))


def verified(line: int, key_id: str, algorithm: str, profile: str, timestamp: str) -> Dict[str, Any]:
    """Return the verdict line `hallmark verify` prints for an accepted document."""
    return {
        "line": line,
        "verdict": "verified",
        "key_id": key_id,
        "key_name": "default",
        "key_version": 1,
        "algorithm": algorithm,
        "canonicalization": profile,
        "timestamp": timestamp,
    }


def rejected(line: int, reason: str, error: str) -> Dict[str, Any]:
    """Return the verdict line `hallmark verify` prints for a rejected document."""
    return {"line": line, "verdict": "rejected", "reason": reason, "error": error}


def rejected_summary(rejected_count: int, total: int) -> str:
    """Return what `hallmark verify` writes to stderr when documents were rejected."""
    return f"{rejected_count} of {total} signed outputs rejected\n"


def output_column(line: str, offset: int) -> int:
    """Return the column that Rust reports for a character offset in a json.dumps line.

    Rust canonicalizes the output's own text, so its columns count from 1 at
    the output's opening brace.
    """
    return offset - (line.index('"output": ') + len('"output": ')) + 1


def python_rejection(verifier: Verifier, document: Any) -> Tuple[Type[VerificationError], str, str]:
    """Verify document in Python and return the class, reason and message of its rejection."""
    try:
        verdict = verifier.verify(document)
    except VerificationError as error:
        return type(error), error.reason, error.message
    pytest.fail(f"the Python Verifier accepted the document: {verdict}")


def utc_now(microsecond: int = 123456) -> datetime:
    """Return the current UTC time with a fixed, non-zero microsecond.

    Python's isoformat() drops a zero fraction, so a fixed fraction keeps the
    expected messages independent of the clock.
    """
    return datetime.now(timezone.utc).replace(microsecond=microsecond)


def manifest_at(moment: datetime, **members: Any) -> Dict[str, Any]:
    """Return sample_manifest stamped at moment, with members added or replaced."""
    manifest = sample_manifest(moment)
    manifest.update(members)
    return manifest


def compact_json(text: str) -> str:
    """Remove the whitespace between the tokens of valid JSON text, as `hallmark sign` does.

    Numbers keep their spelling and strings their value. Like `hallmark
    sign`, it escapes raw U+2028 and U+2029 in strings, because line-based
    readers treat them as line breaks.
    """
    characters = []
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            characters.append({"\u2028": "\\u2028", "\u2029": "\\u2029"}.get(char, char))
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            characters.append(char)
        elif char not in " \t\n\r":
            characters.append(char)
    return "".join(characters)


def hard_manifest_text(profile: str, timestamp: str, variant: int) -> Tuple[str, str]:
    """Return a manifest full of canonicalization hard cases, as (spaced text, compact text).

    Numbers keep non-canonical spellings (1E2, 1.50, -0, 4.9e-324) and
    strings mix escapes with raw UTF-8, so that the signing side and the
    verifying side must each derive the canonical bytes themselves. variant
    makes each manifest's signature unique, which matters for Ed25519 and
    RSA PKCS#1 v1.5, whose signatures are deterministic.
    """
    members = [
        ('"timestamp"', json.dumps(timestamp)),
        ('"variant"', str(variant)),
        # Raw UTF-8 up to the astral planes, with DEL, U+2028 and U+2029, which JSON allows unescaped.
        ('"text"', '"café ☕ Ωμέγα 日本語 עברית 😀 𝄞 \U0010fffd 🇺🇸 \x7f \u2028\u2029"'),
        ('"escaped"', r'"\u00e9\u2615 \ud83d\ude00 \/ \b\f\n\r\t \u0000\u0001\u001F\u007f \"\\"'),
        # By UTF-16 code unit (JCS) U+1F600 (D83D DE00) sorts before U+E000;
        # by code point (python-sort-keys) it sorts after.
        ('"\\ue000"', '"private use U+E000"'),
        ('"😀"', '"U+1F600"'),
        # Python prints 1e-07, 1e-05 and 1e+16 with exponents, JCS prints 1e-7, 0.00001 and 10000000000000000.
        (
            '"floats"',
            "[1e-7, 1E+16, 1e21, 1e22, 0.1, 0.30000000000000004, 123456789.125, 1e-05, 0.0001, 1e15, "
            "4.9e-324, 1.7976931348623157e308, -0.0, 0e0, 1.50, 1E2, -2.5]",
        ),
        ('"integers"', "[0, -0, -1, 9007199254740991, -9007199254740991]"),
        ('"nested"', '{"outer": {"inner": [1, {"null": null, "empty": [[], {}]}]}, "flags": [true, false, null]}'),
        ('"empty_array"', "[]"),
        ('"empty_object"', "{}"),
        ('"empty_string"', '""'),
        ('""', '"empty member name"'),
    ]
    if profile == "python-sort-keys":
        # The Python rfc8785 package rejects integers beyond +-(2**53 - 1), so only this profile has them.
        members.append(
            ('"big_integers"', f"[9007199254740993, 18446744073709551617, -1180591620717411303424, {10**40}]")
        )
    spaced = "{ " + ",\t".join(f"{name} : {value}" for name, value in members) + " }"
    return spaced, compact_json(spaced)


def active_key_id(server: HallmarkServer) -> str:
    """Return the key ID of the server's one ACTIVE key version, from ListKeys."""
    with Client(server.target) as client:
        active = [key.key_id for key in client.list_keys() if key.state == "active"]
    assert len(active) == 1, f"expected one ACTIVE version, got {active}"
    return active[0]


def sign_with_cli(
    server: HallmarkServer, manifests: Sequence[str], profile: str, encoding: Optional[str]
) -> List[str]:
    """Sign manifest texts with `hallmark sign` and return the printed lines."""
    arguments = ["sign", "--manifest", "-", "--target", server.target, "--canonicalization", profile]
    if encoding is not None:
        arguments += ["--signature-encoding", encoding]
    result = run_hallmark(arguments, "\n".join(manifests).encode("utf-8") + b"\n")
    assert result.returncode == 0, result.stderr.decode("utf-8", errors="replace")
    assert result.stderr == b""
    lines = output_lines(result.stdout)
    assert len(lines) == len(manifests)
    return lines


def ecdsa_twins(document: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Return the P1363 re-encoding and the high-S twin of a DER ECDSA document's signature.

    Both verify as the same signature, so a verifier must treat them as
    replays of the original.
    """
    size, order = ECDSA_CURVES[document["algorithm"]]
    r, s = decode_dss_signature(bytes.fromhex(document["signature"]))
    p1363 = dict(document, signature=(r.to_bytes(size, "big") + s.to_bytes(size, "big")).hex())
    p1363["signature_encoding"] = "p1363"
    high_s = dict(document, signature=encode_dss_signature(r, order - s).hex())
    return [p1363, high_s]


def expected_replay_id(document: Dict[str, Any]) -> str:
    """Derive a document's replay cache ID independently of both implementations.

    The ID is SHA-256 over the key ID, a zero byte and the signature. An
    ECDSA signature enters as r || min(s, n - s) in P1363 form, so that the
    DER, P1363 and high-S forms of one signature share an ID.
    """
    signature = bytes.fromhex(document["signature"])
    if document["algorithm"] in ECDSA_CURVES:
        size, order = ECDSA_CURVES[document["algorithm"]]
        if document.get("signature_encoding") == "p1363":
            r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        else:
            r, s = decode_dss_signature(signature)
        signature = r.to_bytes(size, "big") + min(s, order - s).to_bytes(size, "big")
    return hashlib.sha256(document["signing_key_id"].encode("utf-8") + b"\0" + signature).hexdigest()


def replay_cache_entries(path: Path) -> List[Tuple[float, str]]:
    """Read a replay cache file as (expiry in Unix seconds, entry ID) pairs."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        expiry, entry_id = line.split(" ")
        entries.append((float(expiry), entry_id))
    return entries


@pytest.fixture(scope="module")
def local_keys() -> Dict[str, LocalKey]:
    """One local key per algorithm, valid from a day ago for 30 days."""
    return {algorithm: generate_key(algorithm, kid=f"local-{algorithm}") for algorithm in ALGORITHMS}


# ------------------------------------------------------ cross-language matrix


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_python_signed_verifies_in_rust(start_hallmark, algorithm: str, profile: str) -> None:
    server = start_hallmark(algorithm)
    key_id = active_key_id(server)
    timestamp = format_rfc3339(datetime.now(timezone.utc))
    is_ecdsa = algorithm in ECDSA_CURVES
    # Consumers receive ASCII-escaped JSON with the default separators, or
    # compact JSON with raw UTF-8. ECDSA signs once in each encoding.
    forms = [
        ("der" if is_ecdsa else None, dict(ensure_ascii=True)),
        ("p1363" if is_ecdsa else None, dict(ensure_ascii=False, separators=(",", ":"))),
    ]
    lines = []
    with Client(server.target) as client:
        for variant, (encoding, dump_options) in enumerate(forms):
            manifest = json.loads(hard_manifest_text(profile, timestamp, variant)[1])
            document = client.sign_output(manifest, canonicalization=profile, signature_encoding=encoding)
            assert document["signing_key_id"] == key_id
            lines.append(json.dumps(document, **dump_options))

    expected = [verified(1, key_id, algorithm, profile, timestamp), verified(2, key_id, algorithm, profile, timestamp)]
    from_jwks = rust_verify(server.jwks_url, lines)
    assert from_jwks.verdicts == expected
    assert from_jwks.exit_code == 0
    assert from_jwks.stderr == ""

    # A fresh process has an empty replay cache, so the same lines verify again.
    from_list_keys = rust_verify(server.target, lines)
    assert from_list_keys.verdicts == expected
    assert from_list_keys.exit_code == 0
    assert from_list_keys.stderr == ""


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rust_signed_verifies_in_python(start_hallmark, algorithm: str, profile: str) -> None:
    server = start_hallmark(algorithm)
    key_id = active_key_id(server)
    timestamp = format_rfc3339(datetime.now(timezone.utc))
    verifier = Verifier(server.jwks_url)
    encodings = ["der", "p1363"] if algorithm in ECDSA_CURVES else [None]
    variant = 0
    for encoding in encodings:
        texts = []
        for _ in range(2):
            texts.append(hard_manifest_text(profile, timestamp, variant))
            variant += 1
        before = datetime.now(timezone.utc)
        lines = sign_with_cli(server, [spaced for spaced, _ in texts], profile, encoding)
        after = datetime.now(timezone.utc)

        for line, (_, compact) in zip(lines, texts):
            document = json.loads(line)
            fields = DOCUMENT_FIELDS + (["signature_encoding"] if encoding is not None else [])
            assert list(document) == fields
            # The manifest is copied with insignificant whitespace removed and
            # number spellings and escapes kept, not re-serialized.
            assert line.startswith('{"output":' + compact + ',"signature":"')
            assert document["signing_key_id"] == key_id
            assert document["key_version"] == 1
            assert document["algorithm"] == algorithm
            assert document["canonicalization"] == profile
            assert document.get("signature_encoding") == encoding
            signed_at = parse_rfc3339(document["signed_at"])
            assert before - timedelta(seconds=1) <= signed_at <= after + timedelta(seconds=1)

            verdict = verifier.verify(document)
            assert verdict == Verdict(
                key_id=key_id,
                key_name="default",
                key_version=1,
                algorithm=algorithm,
                canonicalization=profile,
                timestamp=parse_rfc3339(timestamp),
            )


# ---------------------------------------------------------- one-byte changes


_SUCCESSOR: Dict[int, int] = {}
for _cycle in ("0123456789", "abcdef", "ghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
    for _index, _char in enumerate(_cycle):
        _SUCCESSOR[ord(_char)] = ord(_cycle[(_index + 1) % len(_cycle)])


def substitute_byte(line: bytes, position: int) -> bytes:
    """Return line with the byte at position replaced by a different byte.

    Digits, hex letters and other letters move to the next one of their
    kind, so most changes stay well-formed and reach the signature check.
    Other bytes flip their lowest bit. A candidate is taken only if the line
    stays UTF-8, because the CLI reads its input as text, and gains no CR or
    LF, which would split it into two JSON lines.
    """
    original = line[position]
    preferred = _SUCCESSOR.get(original, original ^ 0x01)
    for candidate in [preferred, *(original ^ (1 << bit) for bit in range(8)), *range(256)]:
        if candidate == original or candidate in (0x0A, 0x0D):
            continue
        mutated = line[:position] + bytes([candidate]) + line[position + 1 :]
        try:
            mutated.decode("utf-8")
        except UnicodeDecodeError:
            continue
        return mutated
    raise AssertionError(f"no substitute keeps byte {position} of the line valid UTF-8")


def member_value_spans(line: bytes) -> Dict[str, Tuple[int, int]]:
    """Return the byte span [start, end) of each top-level member's value in a compact JSON object."""
    text = line.decode("utf-8")
    decoder = json.JSONDecoder()
    spans: Dict[str, Tuple[int, int]] = {}
    assert text.startswith("{")
    index = 1
    while text[index] != "}":
        name, index = decoder.raw_decode(text, index)
        assert text[index] == ":", f"not compact JSON at character {index}"
        _, end = decoder.raw_decode(text, index + 1)
        spans[name] = (len(text[: index + 1].encode("utf-8")), len(text[:end].encode("utf-8")))
        index = end + 1 if text[end] == "," else end
    return spans


def same_json(left: Any, right: Any) -> bool:
    """Compare parsed JSON values strictly: 1, 1.0 and True differ, and so do 0.0 and -0.0."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same_json(left[name], right[name]) for name in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same_json(a, b) for a, b in zip(left, right))
    if isinstance(left, float):
        return left == right and math.copysign(1.0, left) == math.copysign(1.0, right)
    return left == right


def json_leaves(value: Any) -> List[Any]:
    """Return every member name and scalar in a parsed JSON value."""
    if isinstance(value, dict):
        return [leaf for name, item in value.items() for leaf in [name, *json_leaves(item)]]
    if isinstance(value, list):
        return [leaf for item in value for leaf in json_leaves(item)]
    return [value]


def has_known_divergence(document: Any, profile: str) -> bool:
    """Return whether the two verifiers knowingly reject document for different reasons.

    Under jcs an integer beyond +-(2**53 - 1) is malformed_document in Python
    (the rfc8785 package rejects it) but is rounded to a double in Rust, as
    RFC 8785 specifies, and reaches the signature check. Under
    python-sort-keys an unpaired surrogate is bad_signature in Python but
    malformed_document in Rust. Both have their own tests below.
    """
    output = document.get("output") if isinstance(document, dict) else None
    for leaf in json_leaves(output):
        if profile == "jcs" and type(leaf) is int and abs(leaf) > 2**53 - 1:
            return True
        if profile == "python-sort-keys" and isinstance(leaf, str) and any("\ud800" <= c <= "\udfff" for c in leaf):
            return True
    return False


class DuplicateMember(ValueError):
    """A JSON object repeats a member name."""


def parse_rejecting_duplicates(text: str) -> Any:
    """Parse JSON as examples/consumer.py does: json.loads that rejects repeated member names.

    json.loads alone keeps the last of repeated names, so the manifest that
    the Python Verifier checks could differ from what another parser reads.
    The Rust verifier rejects repeated names itself.
    """

    def build(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
        result: Dict[str, Any] = {}
        for name, value in pairs:
            if name in result:
                raise DuplicateMember(f"duplicate member {name!r}")
            result[name] = value
        return result

    return json.loads(text, object_pairs_hook=build)


def signed_line(server: HallmarkServer, profile: str, source: str) -> bytes:
    """Return one signed document as compact JSON: from the Python client (ASCII) or as `hallmark sign` printed it."""
    spaced, compact = hard_manifest_text(profile, format_rfc3339(datetime.now(timezone.utc)), variant=100)
    if source == "python-client":
        with Client(server.target) as client:
            document = client.sign_output(json.loads(compact), canonicalization=profile, signature_encoding="der")
        return json.dumps(document, separators=(",", ":")).encode("utf-8")
    [line] = sign_with_cli(server, [spaced], profile, "p1363")
    return line.encode("utf-8")


@pytest.mark.parametrize("source", ["python-client", "hallmark-sign"])
@pytest.mark.parametrize("profile", PROFILES)
def test_one_byte_change_rejected_by_both(start_hallmark, profile: str, source: str) -> None:
    server = start_hallmark("ecdsa-p256-sha256")
    line = signed_line(server, profile, source)
    original = json.loads(line)
    spans = member_value_spans(line)
    assert sorted(spans) == sorted([*CHECKED_MEMBERS, "signed_at"])

    verifier = Verifier(server.jwks_url)
    mutations: List[bytes] = []
    # Per mutation: None when the text is not JSON, else the reason the Python
    # consumer rejects it for. A repeated member name counts as
    # malformed_document, because the consumer rejects it before verifying.
    python_reasons: List[Optional[str]] = []
    # Lines that both sides must reject, but for different reasons (has_known_divergence).
    divergent_lines = set()
    equal_values: List[bytes] = []
    for name in CHECKED_MEMBERS:
        start, end = spans[name]
        for position in range(start, end):
            mutated = substitute_byte(line, position)
            text = mutated.decode("utf-8")
            try:
                value = parse_rejecting_duplicates(text)
            except DuplicateMember:
                mutations.append(mutated)
                python_reasons.append("malformed_document")
                continue
            except json.JSONDecodeError:
                mutations.append(mutated)
                python_reasons.append(None)
                continue
            if same_json(value, original):
                equal_values.append(mutated)
                continue
            mutations.append(mutated)
            python_reasons.append(python_rejection(verifier, value)[1])
            if has_known_divergence(value, profile):
                divergent_lines.add(len(mutations))

    # The original goes last: had any mutation with its signature been
    # accepted, the original would be reported as a replay.
    run = rust_verify(server.jwks_url, [*mutations, line])
    assert len(run.verdicts) == len(mutations) + 1
    assert run.exit_code == EXIT_REJECTED
    assert run.stderr == rejected_summary(len(mutations), len(mutations) + 1)
    disagreements = []
    for number, (verdict, python_reason) in enumerate(zip(run.verdicts, python_reasons), start=1):
        context = f"line {number}: {mutations[number - 1][:60]!r}… rust={verdict}, python={python_reason}"
        if verdict["line"] != number or verdict["verdict"] != "rejected":
            disagreements.append(context)
        elif python_reason is None:
            if verdict["reason"] != "malformed_document" or not verdict["error"].startswith(
                "malformed document: the signed output is not JSON: "
            ):
                disagreements.append(context)
        elif verdict["reason"] != python_reason and number not in divergent_lines:
            disagreements.append(context)
    assert disagreements == []

    reasons = {verdict["reason"] for verdict in run.verdicts[:-1]}
    assert reasons == {"malformed_document", "unknown_key", "bad_signature"}
    assert run.verdicts[-1] == verified(
        len(mutations) + 1,
        original["signing_key_id"],
        "ecdsa-p256-sha256",
        profile,
        original["output"]["timestamp"],
    )
    assert verifier.verify(original).key_id == original["signing_key_id"]

    # A change that leaves the parsed value equal, such as a number spelled
    # differently that rounds to the same double, must still verify on both
    # sides. Each gets fresh verifiers because they share the signature.
    for mutated in equal_values:
        assert rust_verify(server.jwks_url, [mutated]).verdicts == [
            verified(1, original["signing_key_id"], "ecdsa-p256-sha256", profile, original["output"]["timestamp"])
        ], mutated
        fresh = Verifier(server.jwks_url)
        assert fresh.verify(json.loads(mutated)).key_id == original["signing_key_id"]


# ------------------------------------------------------- rejection reasons


def test_malformed_document_reason(tmp_path: Path, local_keys) -> None:
    key = local_keys["ecdsa-p256-sha256"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    document = key.signed_document(sample_manifest())
    body = json.dumps(document)

    def edited(**members: Any) -> str:
        return json.dumps(dict(document, **members))

    def without(*names: str) -> str:
        return json.dumps({name: value for name, value in document.items() if name not in names})

    def output_with(**members: Any) -> str:
        return json.dumps(dict(document, output=dict(document["output"], **members)))

    # json.loads reads 1e400 as infinity, which no canonicalization can represent.
    too_large = body.replace('"prediction": 0', '"prediction": 1e400')
    too_large_column = output_column(too_large, too_large.index("1e400"))
    # NOTE: json.loads keeps the last of repeated names, so only a consumer
    # that parses as examples/consumer.py does rejects this.
    repeated = body.replace('"prediction": 0', '"prediction": 2, "prediction": 0')
    repeated_column = output_column(repeated, repeated.index('"prediction": 0'))

    # (document text, Rust error, Python message or the exception that
    # parse_rejecting_duplicates raises before the Verifier is reached).
    cases = [
        (
            body[:40],
            "malformed document: the signed output is not JSON: EOF while parsing a string at line 1 column 40",
            json.JSONDecodeError,
        ),
        (
            "[1]",
            "malformed document: the signed output is an array, expected a JSON object",
            "the signed output is a list, expected a dict",
        ),
        (
            without("signature", "signing_key_id"),
            "malformed document: the signed output has no signature, signing_key_id",
            "the signed output has no signature, signing_key_id",
        ),
        (
            edited(output=["not", "an", "object"]),
            "malformed document: output is an array, expected an object",
            "output is a list, expected an object",
        ),
        (
            edited(signature="zz"),
            "malformed document: signature must be a non-empty hex string of whole bytes",
            "signature must be a non-empty hex string of whole bytes, got 'zz'",
        ),
        (
            edited(signing_key_id=""),
            'malformed document: signing_key_id must be a non-empty string, got ""',
            "signing_key_id must be a non-empty string, got ''",
        ),
        (
            edited(key_version=0),
            "malformed document: key_version must be an integer from 1 to 4294967295, got 0",
            "key_version must be an integer from 1 to 4294967295, got 0",
        ),
        (
            edited(algorithm="rsa-pss-sha1"),
            'malformed document: algorithm "rsa-pss-sha1" is unknown; expected one of rsa-pss-sha256, '
            "rsa-pkcs1-sha256, ecdsa-p256-sha256, ecdsa-p384-sha384, ed25519",
            "algorithm 'rsa-pss-sha1' is unknown; expected one of rsa-pss-sha256, rsa-pkcs1-sha256, "
            "ecdsa-p256-sha256, ecdsa-p384-sha384, ed25519",
        ),
        (
            edited(canonicalization="yaml"),
            'malformed document: canonicalization "yaml" is unknown; expected jcs or python-sort-keys',
            "canonicalization 'yaml' is unknown; expected one of jcs, python-sort-keys",
        ),
        (
            edited(signature_encoding="base64"),
            'malformed document: signature_encoding "base64" is unknown; expected der or p1363',
            "signature_encoding 'base64' is unknown; expected 'der' or 'p1363'",
        ),
        (
            output_with(timestamp="2026-01-01T00:00:00"),
            'malformed document: output.timestamp: "2026-01-01T00:00:00" is not an RFC 3339 timestamp; '
            "expected for example 2026-01-01T00:00:00.000000Z",
            "output['timestamp']: '2026-01-01T00:00:00' is not an RFC 3339 timestamp; "
            "expected for example 2026-01-01T00:00:00.000000Z",
        ),
        (
            json.dumps(dict(document, output={"prediction": 0})),
            'malformed document: output has no "timestamp" field to check freshness against',
            "output has no 'timestamp' field (the timestamp_field)",
        ),
        (
            too_large,
            "malformed document: output cannot be canonicalized: number 1e400 at line 1, "
            f"column {too_large_column}, "
            "path $.prediction is too large for an IEEE-754 double; it would become infinity",
            "output cannot be canonicalized: manifest value at $['prediction'] is inf, which JSON cannot "
            "represent (json.dumps(allow_nan=False) rejects it); replace it with null or a string before signing",
        ),
        (
            repeated,
            "malformed document: output cannot be canonicalized: duplicate member name at line 1, "
            f"column {repeated_column}, "
            "path $.prediction; duplicate names are rejected because parsers disagree on which value wins",
            DuplicateMember,
        ),
    ]
    run = rust_verify(jwks, [text for text, _, _ in cases])
    assert run.verdicts == [
        rejected(line, "malformed_document", error) for line, (_, error, _) in enumerate(cases, start=1)
    ]
    assert run.exit_code == EXIT_REJECTED
    assert run.stderr == rejected_summary(len(cases), len(cases))

    verifier = Verifier(jwks)
    for text, _, message in cases:
        if isinstance(message, type):
            with pytest.raises(message):
                parse_rejecting_duplicates(text)
        else:
            assert python_rejection(verifier, json.loads(text)) == (
                MalformedDocument,
                "malformed_document",
                message,
            ), text


def test_unknown_key_reason(tmp_path: Path, local_keys) -> None:
    key = local_keys["ecdsa-p256-sha256"]
    path = write_jwks(tmp_path / "jwks.json", [local_keys["ed25519"]])
    document = key.signed_document(sample_manifest())
    for source in (str(path), f"file://{path}"):
        run = rust_verify(source, [json.dumps(document)])
        assert run.verdicts == [
            rejected(
                1,
                "unknown_key",
                f"unknown key: signing_key_id {key.kid} is not in the key set from {source}",
            )
        ]
        assert run.exit_code == EXIT_REJECTED
        assert run.stderr == rejected_summary(1, 1)

        assert python_rejection(Verifier(source), copy.deepcopy(document)) == (
            UnknownKey,
            "unknown_key",
            f"signing_key_id {key.kid} is not in the key set at {source}",
        )


@pytest.mark.parametrize("also_listed", [False, True], ids=["revoked-only", "listed-and-revoked"])
def test_revoked_key_reason(tmp_path: Path, local_keys, also_listed: bool) -> None:
    key = local_keys["rsa-pss-sha256"]
    listed = [key, local_keys["ed25519"]] if also_listed else [local_keys["ed25519"]]
    jwks = str(write_jwks(tmp_path / "jwks.json", listed, revoked=[key.kid]))
    document = key.signed_document(sample_manifest())

    run = rust_verify(jwks, [json.dumps(document)])
    assert run.verdicts == [
        rejected(1, "revoked_key", f"revoked key: key {key.kid} was revoked at {DEFAULT_REVOKED_AT}")
    ]
    assert run.exit_code == EXIT_REJECTED
    assert run.stderr == rejected_summary(1, 1)

    assert python_rejection(Verifier(jwks), document) == (
        RevokedKey,
        "revoked_key",
        f"key {key.kid} was revoked at {DEFAULT_REVOKED_AT}",
    )


def test_bad_signature_reason(tmp_path: Path, local_keys) -> None:
    p256 = local_keys["ecdsa-p256-sha256"]
    ed25519 = local_keys["ed25519"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [p256, ed25519]))
    manifest = sample_manifest()
    der = p256.signed_document(manifest)
    der_length = len(bytes.fromhex(der["signature"]))
    impostor = generate_key("ecdsa-p256-sha256", kid=p256.kid)
    does_not_match = f"the ecdsa-p256-sha256 signature does not match the {{}} output for key {p256.kid}"

    # (document, Rust error, Python message)
    cases = [
        (
            dict(der, output=dict(manifest, predicted_class="setosb")),
            f"bad signature: {does_not_match.format('jcs')} (ecdsa-p256-sha256 signature does not verify)",
            does_not_match.format("jcs"),
        ),
        (
            dict(der, canonicalization="python-sort-keys"),
            f"bad signature: {does_not_match.format('python-sort-keys')} "
            "(ecdsa-p256-sha256 signature does not verify)",
            does_not_match.format("python-sort-keys"),
        ),
        (
            impostor.signed_document(manifest),
            f"bad signature: {does_not_match.format('jcs')} (ecdsa-p256-sha256 signature does not verify)",
            does_not_match.format("jcs"),
        ),
        (
            dict(der, algorithm="ecdsa-p384-sha384"),
            f"bad signature: the document names algorithm ecdsa-p384-sha384 but key {p256.kid} is ecdsa-p256-sha256",
            f"the document names algorithm ecdsa-p384-sha384 but key {p256.kid} is ecdsa-p256-sha256",
        ),
        (
            dict(der, key_version=2),
            f"bad signature: the document names key_version 2 but key {p256.kid} is version 1",
            f"the document names key_version 2 but key {p256.kid} is version 1",
        ),
        (
            dict(der, signature_encoding="p1363"),
            f"bad signature: {does_not_match.format('jcs')} (malformed ecdsa-p256-sha256 signature: "
            "not a P-256 signature in the requested encoding)",
            f"a P1363 signature on P-256 is 64 bytes, got {der_length}",
        ),
        (
            dict(ed25519.signed_document(manifest), signature_encoding="der"),
            f"bad signature: signature_encoding applies to ECDSA keys only, and key {ed25519.kid} is ed25519",
            f"signature_encoding applies to ECDSA keys only, and key {ed25519.kid} is ed25519",
        ),
    ]
    run = rust_verify(jwks, [json.dumps(document) for document, _, _ in cases])
    assert run.verdicts == [
        rejected(line, "bad_signature", error) for line, (_, error, _) in enumerate(cases, start=1)
    ]
    assert run.exit_code == EXIT_REJECTED
    assert run.stderr == rejected_summary(len(cases), len(cases))

    verifier = Verifier(jwks)
    for document, _, message in cases:
        assert python_rejection(verifier, document) == (BadSignature, "bad_signature", message)


def test_expired_key_reason(tmp_path: Path) -> None:
    now = utc_now()
    not_yet_active = generate_key(
        "ed25519",
        kid="activates-tomorrow",
        activates_at=now + timedelta(days=1, microseconds=126544),
    )
    closed = generate_key(
        "ed25519",
        kid="closed-two-minutes-ago",
        verify_until=now - timedelta(minutes=2) + timedelta(microseconds=126544),
    )
    jwks = str(write_jwks(tmp_path / "jwks.json", [not_yet_active, closed]))
    activates_at = not_yet_active.activates_at
    verify_until = closed.verify_until

    # (document, output timestamp, message template). Rust fills the template
    # with RFC 3339 times ending in Z, Python with datetime.isoformat().
    early = now
    late = now - timedelta(minutes=1)
    inside = now - timedelta(minutes=3)
    cases = [
        (
            not_yet_active.signed_document(manifest_at(early)),
            early,
            f"output timestamp {{ts}} is before key {not_yet_active.kid} activates at {{activates}}",
        ),
        (
            closed.signed_document(manifest_at(late)),
            late,
            f"output timestamp {{ts}} is after key {closed.kid} stops being valid at {{until}}",
        ),
        (
            closed.signed_document(manifest_at(inside)),
            inside,
            f"key {closed.kid} stopped being valid at {{until}}",
        ),
    ]
    run = rust_verify(jwks, [json.dumps(document) for document, _, _ in cases])
    assert run.verdicts == [
        rejected(
            line,
            "expired_key",
            "expired key: "
            + template.format(
                ts=format_rfc3339(moment), activates=format_rfc3339(activates_at), until=format_rfc3339(verify_until)
            ),
        )
        for line, (_, moment, template) in enumerate(cases, start=1)
    ]
    assert run.exit_code == EXIT_REJECTED
    assert run.stderr == rejected_summary(len(cases), len(cases))

    verifier = Verifier(jwks)
    for document, moment, template in cases:
        message = template.format(
            ts=moment.isoformat(), activates=activates_at.isoformat(), until=verify_until.isoformat()
        )
        assert python_rejection(verifier, document) == (ExpiredKey, "expired_key", message)


def test_stale_output_reason(tmp_path: Path, local_keys) -> None:
    key = local_keys["ed25519"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    now = utc_now()

    # With the defaults: 5 minutes of age, 30 seconds of clock skew.
    old = now - timedelta(minutes=10)
    ahead = now + timedelta(minutes=10)
    documents = [key.signed_document(manifest_at(old)), key.signed_document(manifest_at(ahead))]
    run = rust_verify(jwks, [json.dumps(document) for document in documents])
    assert run.verdicts == [
        rejected(
            1,
            "stale_output",
            f"stale output: output timestamp {format_rfc3339(old)} is older than the maximum age of 5m",
        ),
        rejected(
            2,
            "stale_output",
            f"stale output: output timestamp {format_rfc3339(ahead)} is more than 30s in the future",
        ),
    ]
    assert run.exit_code == EXIT_REJECTED
    verifier = Verifier(jwks)
    assert python_rejection(verifier, documents[0]) == (
        StaleOutput,
        "stale_output",
        f"output timestamp {old.isoformat()} is older than max_age 0:05:00",
    )
    assert python_rejection(verifier, documents[1]) == (
        StaleOutput,
        "stale_output",
        f"output timestamp {ahead.isoformat()} is more than clock_skew 0:00:30 in the future",
    )

    # With --max-age 90s --clock-skew 5s, outputs that the defaults accept are stale.
    old = now - timedelta(minutes=2)
    ahead = now + timedelta(seconds=20)
    documents = [key.signed_document(manifest_at(old)), key.signed_document(manifest_at(ahead))]
    run = rust_verify(jwks, [json.dumps(document) for document in documents], "--max-age", "90s", "--clock-skew", "5s")
    assert run.verdicts == [
        rejected(
            1,
            "stale_output",
            f"stale output: output timestamp {format_rfc3339(old)} is older than the maximum age of 1m30s",
        ),
        rejected(
            2,
            "stale_output",
            f"stale output: output timestamp {format_rfc3339(ahead)} is more than 5s in the future",
        ),
    ]
    assert run.exit_code == EXIT_REJECTED
    verifier = Verifier(jwks, max_age=timedelta(seconds=90), clock_skew=timedelta(seconds=5))
    assert python_rejection(verifier, documents[0]) == (
        StaleOutput,
        "stale_output",
        f"output timestamp {old.isoformat()} is older than max_age 0:01:30",
    )
    assert python_rejection(verifier, documents[1]) == (
        StaleOutput,
        "stale_output",
        f"output timestamp {ahead.isoformat()} is more than clock_skew 0:00:05 in the future",
    )


def test_replayed_output_reason(tmp_path: Path, local_keys) -> None:
    key = local_keys["ecdsa-p256-sha256"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    document = key.signed_document(sample_manifest())
    # The same document again, then the same signature in P1363 and as its high-S twin.
    replays = [document, *ecdsa_twins(document)]

    run = rust_verify(jwks, [json.dumps(item) for item in [document, *replays]])
    rust_error = (
        f"replayed output: this signature by key {key.kid} was already accepted within the last 5m30s"
    )
    assert run.verdicts == [
        verified(1, key.kid, key.algorithm, "jcs", document["output"]["timestamp"]),
        rejected(2, "replayed_output", rust_error),
        rejected(3, "replayed_output", rust_error),
        rejected(4, "replayed_output", rust_error),
    ]
    assert run.exit_code == EXIT_REJECTED
    assert run.stderr == rejected_summary(3, 4)

    verifier = Verifier(jwks)
    assert verifier.verify(copy.deepcopy(document)).key_id == key.kid
    python_message = f"this signature by key {key.kid} was already accepted within 0:05:30"
    for replay in replays:
        assert python_rejection(verifier, replay) == (ReplayedOutput, "replayed_output", python_message)


# ------------------------------------------------- further agreement checks


def test_null_canonicalization_means_python_sort_keys(tmp_path: Path, local_keys) -> None:
    key = local_keys["ed25519"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    document = dict(key.signed_document(sample_manifest(), "python-sort-keys"), canonicalization=None)

    run = rust_verify(jwks, [json.dumps(document)])
    assert run.verdicts == [verified(1, key.kid, "ed25519", "python-sort-keys", document["output"]["timestamp"])]
    assert run.exit_code == 0

    assert Verifier(jwks).verify(document).canonicalization == "python-sort-keys"


def test_jcs_integer_beyond_2_53_rejected_by_both(start_hallmark, tmp_path: Path, local_keys) -> None:
    # A double cannot hold every integer beyond +-(2**53 - 1), so under jcs
    # 2**53 + 1 and 2**53 would share one signature. Both sides refuse to
    # sign or verify such integers; strings or python-sort-keys carry them.
    server = start_hallmark("ed25519")
    timestamp = format_rfc3339(datetime.now(timezone.utc))
    manifest = f'{{"timestamp": "{timestamp}", "count": 9007199254740993}}'
    signing = run_hallmark(
        ["sign", "--manifest", "-", "--target", server.target, "--canonicalization", "jcs"],
        manifest.encode("utf-8") + b"\n",
    )
    rust_error = (
        "integer 9007199254740993 at line 1, column {column}, path $.count is beyond ±(2^53 - 1), "
        "which jcs (RFC 8785) cannot represent exactly; write it as a string, or use python-sort-keys"
    )
    assert signing.returncode == 65
    assert signing.stdout == b""
    assert signing.stderr.decode("utf-8") == (
        "error: line 1: the manifest cannot be signed: " + rust_error.format(column=manifest.index("9007")+1) + "\n"
    )

    jcs_error = (
        "manifest cannot be serialized with RFC 8785 (jcs): 9007199254740993 exceeds safe integer domain for "
        "JSON floats; JCS allows only str keys, str, bool, None, finite float, list, dict and int within "
        "+-(2**53 - 1), so convert other values (for example large ints to str) before signing"
    )
    with pytest.raises(ValueError) as raised:
        canonicalize({"count": 2**53 + 1}, "jcs")
    assert str(raised.value) == jcs_error

    # A document that claims jcs over such an integer is malformed on both sides.
    key = local_keys["ed25519"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    signed = key.signed_document(json.loads(manifest), "python-sort-keys")
    document = dict(signed, canonicalization="jcs")
    line = json.dumps(document)
    run = rust_verify(jwks, [line])
    column = output_column(line, line.index("9007"))
    assert run.verdicts == [
        rejected(
            1,
            "malformed_document",
            "malformed document: output cannot be canonicalized: " + rust_error.format(column=column),
        )
    ]
    assert run.exit_code == EXIT_REJECTED
    assert python_rejection(Verifier(jwks), document) == (
        MalformedDocument,
        "malformed_document",
        f"output cannot be canonicalized: {jcs_error}",
    )


def test_unpaired_surrogate_rejected_by_rust(tmp_path: Path, local_keys) -> None:
    key = local_keys["ed25519"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    # json.dumps escapes the lone surrogate as \ud800, so a producer that
    # does not check for it can sign it; canonicalize() now refuses.
    manifest = sample_manifest() | {"note": "\ud800"}
    signature = key.sign(json.dumps(manifest, sort_keys=True).encode("utf-8"), "der")
    document = dict(
        key.signed_document(sample_manifest(), "python-sort-keys"), output=manifest, signature=signature.hex()
    )
    line = json.dumps(document)
    column = output_column(line, line.index("\\ud800"))

    run = rust_verify(jwks, [line])
    assert run.verdicts == [
        rejected(
            1,
            "malformed_document",
            "malformed document: output cannot be canonicalized: unpaired UTF-16 surrogate \\ud800 at "
            f"line 1, column {column}, path $.note; strings must be valid Unicode",
        )
    ]
    assert run.exit_code == EXIT_REJECTED


def test_unpaired_surrogate_rejected_by_python(tmp_path: Path, local_keys) -> None:
    key = local_keys["ed25519"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    manifest = sample_manifest() | {"note": "\ud800"}
    message = (
        "manifest value at $['note'] contains an unpaired UTF-16 surrogate, which is not valid Unicode; "
        "remove it before signing"
    )
    with pytest.raises(ValueError) as raised:
        canonicalize(manifest, "python-sort-keys")
    assert str(raised.value) == message
    document = dict(key.signed_document(sample_manifest(), "python-sort-keys"), output=manifest)
    assert python_rejection(Verifier(jwks), document) == (
        MalformedDocument,
        "malformed_document",
        f"output cannot be canonicalized: {message}",
    )


def test_key_version_beyond_uint32_same_reason(tmp_path: Path, local_keys) -> None:
    key = local_keys["ed25519"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    document = dict(key.signed_document(sample_manifest()), key_version=2**32)

    message = "key_version must be an integer from 1 to 4294967295, got 4294967296"
    run = rust_verify(jwks, [json.dumps(document)])
    assert run.verdicts == [rejected(1, "malformed_document", f"malformed document: {message}")]
    assert python_rejection(Verifier(jwks), document) == (MalformedDocument, "malformed_document", message)


# ------------------------------------------------- replay across restarts


def test_replay_cache_survives_rust_restart(tmp_path: Path, local_keys) -> None:
    key = local_keys["ed25519"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    document = key.signed_document(sample_manifest())
    documents_file = tmp_path / "signed.jsonl"
    documents_file.write_text(json.dumps(document) + "\n", encoding="utf-8")
    cache = tmp_path / "state" / "replay.cache"
    options = ["verify", "--keys", jwks, "--replay-cache", str(cache), str(documents_file)]

    before = datetime.now(timezone.utc).timestamp()
    first = run_hallmark(options)
    after = datetime.now(timezone.utc).timestamp()
    assert [json.loads(line) for line in output_lines(first.stdout)] == [
        verified(1, key.kid, "ed25519", "jcs", document["output"]["timestamp"])
    ]
    assert first.returncode == 0
    [(expiry, entry_id)] = replay_cache_entries(cache)
    assert entry_id == expected_replay_id(document)
    # Entries live for max_age + clock_skew, 5m30s by default.
    assert before + 330 - 0.001 <= expiry <= after + 330

    second = run_hallmark(options)
    assert [json.loads(line) for line in output_lines(second.stdout)] == [
        rejected(
            1,
            "replayed_output",
            f"replayed output: this signature by key {key.kid} was already accepted within the last 5m30s",
        )
    ]
    assert second.returncode == EXIT_REJECTED
    assert replay_cache_entries(cache) == [(expiry, entry_id)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_replay_cache_python_then_rust(tmp_path: Path, local_keys, algorithm: str) -> None:
    key = local_keys[algorithm]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    document = key.signed_document(sample_manifest())
    cache = tmp_path / "replay.cache"

    verifier = Verifier(jwks, replay_cache_path=cache)
    assert verifier.verify(copy.deepcopy(document)).key_id == key.kid
    verifier.close()
    assert [entry_id for _, entry_id in replay_cache_entries(cache)] == [expected_replay_id(document)]

    replays = [document, *(ecdsa_twins(document) if algorithm in ECDSA_CURVES else [])]
    run = rust_verify(jwks, [json.dumps(replay) for replay in replays], "--replay-cache", str(cache))
    error = f"replayed output: this signature by key {key.kid} was already accepted within the last 5m30s"
    assert run.verdicts == [rejected(line, "replayed_output", error) for line in range(1, len(replays) + 1)]
    assert run.exit_code == EXIT_REJECTED
    assert [entry_id for _, entry_id in replay_cache_entries(cache)] == [expected_replay_id(document)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_replay_cache_rust_then_python(tmp_path: Path, local_keys, algorithm: str) -> None:
    key = local_keys[algorithm]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    document = key.signed_document(sample_manifest())
    cache = tmp_path / "replay.cache"

    run = rust_verify(jwks, [json.dumps(document)], "--replay-cache", str(cache), "--replay-cache-size", "10")
    assert run.verdicts == [verified(1, key.kid, algorithm, "jcs", document["output"]["timestamp"])]
    assert run.exit_code == 0
    assert [entry_id for _, entry_id in replay_cache_entries(cache)] == [expected_replay_id(document)]

    replays = [document, *(ecdsa_twins(document) if algorithm in ECDSA_CURVES else [])]
    message = f"this signature by key {key.kid} was already accepted within 0:05:30"
    with Verifier(jwks, replay_cache_path=cache) as verifier:
        for replay in replays:
            assert python_rejection(verifier, replay) == (ReplayedOutput, "replayed_output", message)


def test_replay_cache_held_by_one_process(tmp_path: Path, local_keys) -> None:
    key = local_keys["ed25519"]
    jwks = str(write_jwks(tmp_path / "jwks.json", [key]))
    document = key.signed_document(sample_manifest())
    cache = tmp_path / "replay.cache"

    verifier = Verifier(jwks, replay_cache_path=cache)
    locked = run_hallmark(["verify", "--keys", jwks, "--replay-cache", str(cache), "-"], json.dumps(document).encode())
    assert locked.stdout == b""
    assert locked.stderr.decode("utf-8") == (
        f"error: replay cache file {cache} is in use by another verifier; "
        "give each consumer process its own replay cache file\n"
    )
    assert locked.returncode == EXIT_IO

    verifier.close()
    released = rust_verify(jwks, [json.dumps(document)], "--replay-cache", str(cache))
    assert released.verdicts == [verified(1, key.kid, "ed25519", "jcs", document["output"]["timestamp"])]
    assert released.exit_code == 0
