"""Verifier checks against locally generated keys and a locally written JWKS file."""

from __future__ import annotations

import copy
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Type

import pytest
from jwcrypto import jwk

from conftest import LocalKey, generate_key, sample_manifest, write_jwks
from hallmark_client import (
    BadSignature,
    ExpiredKey,
    KeySetError,
    MalformedDocument,
    ReplayedOutput,
    RevokedKey,
    StaleOutput,
    UnknownKey,
    VerificationError,
    Verifier,
    parse_signed_output,
)
from hallmark_client.keyset import max_pss_salt_length, parse_jwk

ALGORITHMS = ["rsa-pss-sha256", "rsa-pkcs1-sha256", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "ed25519"]


@pytest.fixture(scope="module")
def keys() -> Dict[str, LocalKey]:
    """One local key per algorithm, with the RFC 7638 thumbprint that jwcrypto computes as kid."""
    made = {}
    for algorithm in ALGORITHMS:
        key = generate_key(algorithm, kid="pending")
        key.kid = jwk.JWK(**{k: v for k, v in key.jwk().items() if not k.startswith("hallmark_")}).thumbprint()
        made[algorithm] = key
    return made


def verifier_for(tmp_path: Path, *keys: LocalKey, revoked=(), **kwargs: Any) -> Verifier:
    """Write a JWKS with keys to tmp_path and return a Verifier over it."""
    return Verifier(str(write_jwks(tmp_path / "jwks.json", list(keys), list(revoked))), **kwargs)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("canonicalization", ["jcs", "python-sort-keys"])
def test_genuine_documents_verify(tmp_path: Path, keys, algorithm: str, canonicalization: str) -> None:
    key = keys[algorithm]
    verifier = verifier_for(tmp_path, key)
    document = key.signed_document(sample_manifest(), canonicalization)
    verdict = verifier.verify(json.loads(json.dumps(document)))
    assert (verdict.key_id, verdict.key_name, verdict.key_version) == (key.kid, "default", 1)
    assert (verdict.algorithm, verdict.canonicalization) == (algorithm, canonicalization)
    assert verdict.timestamp.tzinfo is not None


@pytest.mark.parametrize("algorithm", ["ecdsa-p256-sha256", "ecdsa-p384-sha384"])
def test_ecdsa_p1363_verifies_and_is_the_same_replay_entry_as_der(tmp_path: Path, keys, algorithm: str) -> None:
    key = keys[algorithm]
    verifier = verifier_for(tmp_path, key)
    der = key.signed_document(sample_manifest(), encoding="der")
    verifier.verify(der)
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(bytes.fromhex(der["signature"]))
    size = 32 if algorithm.startswith("ecdsa-p256") else 48
    reencoded = dict(der, signature_encoding="p1363", signature=(r.to_bytes(size, "big") + s.to_bytes(size, "big")).hex())
    with pytest.raises(ReplayedOutput):
        verifier.verify(reencoded)


def test_ecdsa_high_s_twin_counts_as_a_replay(tmp_path: Path, keys) -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

    key = keys["ecdsa-p256-sha256"]
    verifier = verifier_for(tmp_path, key)
    document = key.signed_document(sample_manifest())
    verifier.verify(document)
    r, s = decode_dss_signature(bytes.fromhex(document["signature"]))
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    twin = dict(document, signature=encode_dss_signature(r, order - s).hex())
    with pytest.raises(ReplayedOutput):
        verifier.verify(twin)


def test_pss_salt_must_match_the_published_length(tmp_path: Path) -> None:
    key = generate_key("rsa-pss-sha256", kid="pss-max", salt=222)
    verifier = verifier_for(tmp_path, key)
    verifier.verify(key.signed_document(sample_manifest()))
    published_32 = LocalKey(key.algorithm, key.private_key, key.kid, salt=32)
    with pytest.raises(BadSignature):
        verifier_for(tmp_path, published_32).verify(key.signed_document(sample_manifest()))


def test_legacy_plain_document_verifies_with_python_sort_keys(tmp_path: Path, keys) -> None:
    key = keys["rsa-pss-sha256"]
    verifier = verifier_for(tmp_path, key)
    document = key.signed_document(sample_manifest(), "python-sort-keys")
    plain = {name: document[name] for name in ("output", "signature", "signing_key_id")}
    assert verifier.verify(plain).canonicalization == "python-sort-keys"


def _replace(name: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    def edit(document: Dict[str, Any]) -> None:
        document[name] = value
    return edit


def _drop(name: str) -> Callable[[Dict[str, Any]], None]:
    def edit(document: Dict[str, Any]) -> None:
        del document[name]
    return edit


def _set_output(name: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    def edit(document: Dict[str, Any]) -> None:
        document["output"][name] = value
    return edit


MALFORMED = {
    "no output": _drop("output"),
    "no signature": _drop("signature"),
    "no signing_key_id": _drop("signing_key_id"),
    "output is a list": _replace("output", [1, 2]),
    "signature is not hex": _replace("signature", "zz" * 8),
    "signature has an odd length": _replace("signature", "abc"),
    "signature has spaces": _replace("signature", "ab cd"),
    "signature is a number": _replace("signature", 12),
    "empty key id": _replace("signing_key_id", ""),
    "key_version is a bool": _replace("key_version", True),
    "unknown canonicalization": _replace("canonicalization", "yaml"),
    "unknown algorithm": _replace("algorithm", "rsa-pss-sha1"),
    "unknown encoding": _replace("signature_encoding", "base64"),
    "no timestamp": _set_output("timestamp", None),
    "timestamp without offset": _set_output("timestamp", "2026-01-01T00:00:00"),
    "NaN in the output": _set_output("score", float("nan")),
}


@pytest.mark.parametrize("edit", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_documents(tmp_path: Path, keys, edit: Callable[[Dict[str, Any]], None]) -> None:
    key = keys["ecdsa-p256-sha256"]
    document = key.signed_document(sample_manifest())
    edit(document)
    with pytest.raises(MalformedDocument) as raised:
        verifier_for(tmp_path, key).verify(document)
    assert raised.value.reason == "malformed_document"


def test_non_dict_document_is_malformed(tmp_path: Path, keys) -> None:
    with pytest.raises(MalformedDocument):
        verifier_for(tmp_path, keys["ed25519"]).verify("not a document")


def test_unknown_key(tmp_path: Path, keys) -> None:
    document = keys["ed25519"].signed_document(sample_manifest())
    with pytest.raises(UnknownKey) as raised:
        verifier_for(tmp_path, keys["rsa-pss-sha256"]).verify(document)
    assert raised.value.reason == "unknown_key"


def test_unknown_key_triggers_one_rate_limited_refresh(tmp_path: Path, keys) -> None:
    path = write_jwks(tmp_path / "jwks.json", [keys["rsa-pss-sha256"]])
    verifier = Verifier(str(path), refresh_min_interval=timedelta(0))
    newcomer = keys["ed25519"].signed_document(sample_manifest())
    write_jwks(path, [keys["rsa-pss-sha256"], keys["ed25519"]])
    assert verifier.verify(newcomer).key_id == keys["ed25519"].kid

    limited = Verifier(f"file://{path}", refresh_min_interval=timedelta(seconds=30))
    write_jwks(path, [keys["rsa-pss-sha256"], keys["ed25519"], keys["ecdsa-p384-sha384"]])
    with pytest.raises(UnknownKey):
        limited.verify(keys["ecdsa-p384-sha384"].signed_document(sample_manifest()))


def test_revoked_key(tmp_path: Path, keys) -> None:
    key = keys["rsa-pkcs1-sha256"]
    document = key.signed_document(sample_manifest())
    with pytest.raises(RevokedKey) as raised:
        verifier_for(tmp_path, revoked=[key.kid]).verify(document)
    assert raised.value.reason == "revoked_key"


BAD_SIGNATURES = {
    "one byte of the output changed": lambda d: d["output"].update(predicted_class="setosb"),
    "signature changed": lambda d: d.update(signature=("00" if d["signature"][:2] != "00" else "01") + d["signature"][2:]),
    "signature truncated": lambda d: d.update(signature=d["signature"][:-2]),
    "other algorithm named": lambda d: d.update(algorithm="ecdsa-p384-sha384"),
    "other key_version named": lambda d: d.update(key_version=2),
    "other canonicalization named": lambda d: d.update(canonicalization="python-sort-keys"),
    "p1363 claimed for a DER signature": lambda d: d.update(signature_encoding="p1363"),
}


@pytest.mark.parametrize("edit", BAD_SIGNATURES.values(), ids=list(BAD_SIGNATURES))
def test_bad_signatures(tmp_path: Path, keys, edit: Callable[[Dict[str, Any]], None]) -> None:
    key = keys["ecdsa-p256-sha256"]
    document = key.signed_document(sample_manifest())
    edit(document)
    with pytest.raises(BadSignature) as raised:
        verifier_for(tmp_path, key).verify(document)
    assert raised.value.reason == "bad_signature"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_changed_byte_fails_for_every_algorithm(tmp_path: Path, keys, algorithm: str) -> None:
    key = keys[algorithm]
    document = key.signed_document(sample_manifest())
    document["output"]["model"] = "iris-logistic-regressioN"
    with pytest.raises(BadSignature):
        verifier_for(tmp_path, key).verify(document)


def test_key_of_another_algorithm_with_same_kid_fails(tmp_path: Path, keys) -> None:
    # A document that claims an algorithm the key set does not give the key.
    rsa_key = keys["rsa-pss-sha256"]
    impostor = LocalKey("rsa-pkcs1-sha256", rsa_key.private_key, rsa_key.kid)
    document = impostor.signed_document(sample_manifest())
    with pytest.raises(BadSignature, match="names algorithm rsa-pkcs1-sha256"):
        verifier_for(tmp_path, rsa_key).verify(document)
    del document["algorithm"]
    with pytest.raises(BadSignature, match="does not match"):
        verifier_for(tmp_path, rsa_key).verify(document)


def test_expired_key(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    key = generate_key("ed25519", kid="old", activates_at=now - timedelta(days=10), verify_until=now - timedelta(minutes=1))
    # The output is recent, so only the key's window can reject it.
    document = key.signed_document(sample_manifest(now - timedelta(seconds=10)))
    with pytest.raises(ExpiredKey) as raised:
        verifier_for(tmp_path, key).verify(document)
    assert raised.value.reason == "expired_key"


def test_output_before_the_key_activates_is_expired_key(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    key = generate_key("ed25519", kid="future", activates_at=now + timedelta(minutes=2))
    with pytest.raises(ExpiredKey):
        verifier_for(tmp_path, key).verify(key.signed_document(sample_manifest(now)))
    # Within clock_skew of activation is still accepted.
    early = generate_key("ed25519", kid="soon", activates_at=now + timedelta(seconds=10))
    verifier_for(tmp_path, early).verify(early.signed_document(sample_manifest(now)))


@pytest.mark.parametrize(
    "offset", [timedelta(minutes=-6), timedelta(minutes=1)], ids=["older than max_age", "in the future"]
)
def test_stale_output(tmp_path: Path, keys, offset: timedelta) -> None:
    key = keys["rsa-pss-sha256"]
    document = key.signed_document(sample_manifest(datetime.now(timezone.utc) + offset))
    with pytest.raises(StaleOutput) as raised:
        verifier_for(tmp_path, key).verify(document)
    assert raised.value.reason == "stale_output"


def test_replayed_output(tmp_path: Path, keys) -> None:
    key = keys["ecdsa-p384-sha384"]
    verifier = verifier_for(tmp_path, key)
    document = key.signed_document(sample_manifest())
    verifier.verify(copy.deepcopy(document))
    with pytest.raises(ReplayedOutput) as raised:
        verifier.verify(document)
    assert raised.value.reason == "replayed_output"


def test_replay_entries_expire_after_max_age_plus_skew(tmp_path: Path, keys) -> None:
    key = keys["ed25519"]
    clock = {"now": datetime.now(timezone.utc)}
    verifier = verifier_for(
        tmp_path, key, max_age=timedelta(minutes=5), clock_skew=timedelta(seconds=30),
        clock=lambda: clock["now"],
    )
    document = key.signed_document(sample_manifest(clock["now"] + timedelta(seconds=20)))
    verifier.verify(document)
    clock["now"] += timedelta(minutes=5, seconds=15)
    with pytest.raises(ReplayedOutput):
        verifier.verify(document)
    clock["now"] += timedelta(seconds=20)
    with pytest.raises(StaleOutput):
        verifier.verify(document)


def test_replay_cache_is_bounded(tmp_path: Path, keys) -> None:
    key = keys["ed25519"]
    verifier = verifier_for(tmp_path, key, replay_cache_size=2)
    documents = [key.signed_document(dict(sample_manifest(), prediction=n)) for n in range(3)]
    for document in documents:
        verifier.verify(document)
    with pytest.raises(ReplayedOutput):
        verifier.verify(documents[2])
    verifier.verify(documents[0])  # evicted as the least recently used entry


def test_replay_is_detected_across_a_verifier_restart(tmp_path: Path, keys) -> None:
    key = keys["rsa-pss-sha256"]
    cache = tmp_path / "state" / "replay.log"
    document = key.signed_document(sample_manifest())
    with verifier_for(tmp_path, key, replay_cache_path=cache) as first:
        first.verify(document)
        with pytest.raises(RuntimeError, match="in use by another Verifier"):
            verifier_for(tmp_path, key, replay_cache_path=cache)
    with verifier_for(tmp_path, key, replay_cache_path=cache) as second:
        with pytest.raises(ReplayedOutput):
            second.verify(document)
    # Without the file, a fresh Verifier accepts it again: the file is what carried it over.
    verifier_for(tmp_path, key).verify(document)


def test_replay_file_drops_expired_and_torn_lines_on_load(tmp_path: Path, keys) -> None:
    key = keys["ed25519"]
    cache = tmp_path / "replay.log"
    now = datetime.now(timezone.utc).timestamp()
    cache.write_text(f"{now - 10:.6f} {'a' * 64}\n{now + 600:.6f} {'b' * 64}\n{now + 600:.0f}", encoding="utf-8")
    with verifier_for(tmp_path, key, replay_cache_path=cache):
        pass
    lines = cache.read_text(encoding="utf-8").splitlines()
    assert [line.split()[1] for line in lines] == ["b" * 64]


def test_every_reason_is_a_verification_error() -> None:
    reasons = {cls: cls.reason for cls in (MalformedDocument, UnknownKey, RevokedKey, BadSignature, ExpiredKey, StaleOutput, ReplayedOutput)}
    assert all(issubclass(cls, VerificationError) for cls in reasons)
    assert sorted(reasons.values()) == sorted(
        ["malformed_document", "unknown_key", "revoked_key", "bad_signature", "expired_key", "stale_output", "replayed_output"]
    )


def test_unreadable_key_set_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(KeySetError, match="cannot read"):
        Verifier(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(KeySetError, match="not a JWK Set"):
        Verifier(str(tmp_path / "bad.json"))


# ------------------------------------------------ hostile and unusual input


def write_jwks_members(path: Path, members: List[Dict[str, Any]], **top_level: Any) -> str:
    """Write a JWKS whose 'keys' are members as given, plus top_level members, and return its path."""
    path.write_text(json.dumps({"keys": members, **top_level}), encoding="utf-8")
    return str(path)


def sign_until_leading_zero(key: LocalKey) -> Dict[str, Any]:
    """Sign manifests that differ in one field until a signature starts with 0x00 (1 in 256)."""
    for attempt in range(8192):
        document = key.signed_document(dict(sample_manifest(), prediction=attempt))
        if document["signature"].startswith("00"):
            return document
    pytest.fail("no signature starting with 0x00 in 8192 attempts")


@pytest.mark.parametrize("algorithm", ["rsa-pss-sha256", "rsa-pkcs1-sha256"])
def test_rsa_stripped_leading_zero_rejected(
    tmp_path: Path, keys, algorithm: str
) -> None:
    key = keys[algorithm]
    document = sign_until_leading_zero(key)
    stripped = dict(document, signature=document["signature"][2:])

    verifier = verifier_for(tmp_path, key)
    assert verifier.verify(copy.deepcopy(document)).key_id == key.kid
    with pytest.raises(BadSignature) as raised:
        verifier.verify(stripped)
    assert raised.value.message == "an RSA signature for a 2048-bit key is 256 bytes, got 255"
    with pytest.raises(ReplayedOutput):
        verifier.verify(document)

    padded = dict(document, signature="00" + document["signature"])
    with pytest.raises(BadSignature) as raised:
        verifier_for(tmp_path, key).verify(padded)
    assert raised.value.message == "an RSA signature for a 2048-bit key is 256 bytes, got 257"


def test_max_pss_salt_length_follows_rfc_8017() -> None:
    # emLen - 32 - 2 with emLen = ceil((bits - 1) / 8).
    sizes = {512: 30, 1024: 94, 2041: 221, 2047: 222, 2048: 222, 2049: 222, 3072: 350, 4096: 478}
    assert {bits: max_pss_salt_length(bits) for bits in sizes} == sizes
    assert max_pss_salt_length(16) == 0


UNUSABLE_SALTS = [
    (2**70, "a PSS salt of 1180591620717411303424 bytes does not fit a 2048-bit key; the maximum is 222"),
    (223, "a PSS salt of 223 bytes does not fit a 2048-bit key; the maximum is 222"),
    (32.0, "hallmark_pss_salt_length 32.0 is not a byte count"),
    (-1, "hallmark_pss_salt_length -1 is not a byte count"),
    (True, "hallmark_pss_salt_length True is not a byte count"),
    (None, "hallmark_pss_salt_length None is not a byte count"),
    ("32", "hallmark_pss_salt_length '32' is not a byte count"),
]


@pytest.mark.parametrize("salt, problem", UNUSABLE_SALTS, ids=[repr(salt) for salt, _ in UNUSABLE_SALTS])
def test_bad_pss_salt_makes_entry_unusable(tmp_path: Path, keys, salt: Any, problem: str) -> None:
    key = keys["rsa-pss-sha256"]
    member = dict(key.jwk(), hallmark_pss_salt_length=salt)
    verifier = Verifier(write_jwks_members(tmp_path / "jwks.json", [member]))
    assert verifier.key_set.keys[key.kid].problem == f"the key set entry for {key.kid} is unusable: {problem}"
    with pytest.raises(BadSignature) as raised:
        verifier.verify(key.signed_document(sample_manifest()))
    assert raised.value.message == f"the key set entry for {key.kid} is unusable: {problem}"


def test_pss_salt_member_absent_needs_ps256(tmp_path: Path, keys) -> None:
    key = keys["rsa-pss-sha256"]
    member = key.jwk()
    del member["hallmark_pss_salt_length"]
    with_alg = dict(member, alg="PS256", kid="with-alg")
    verifier = Verifier(write_jwks_members(tmp_path / "jwks.json", [member, with_alg]))
    assert verifier.key_set.keys[key.kid].problem == (
        f"the key set entry for {key.kid} is unusable: an rsa-pss-sha256 key needs hallmark_pss_salt_length"
    )
    assert verifier.key_set.keys["with-alg"].problem is None
    assert verifier.key_set.keys["with-alg"].pss_salt_length == 32


UNUSABLE_VERSIONS = [
    ("missing", "hallmark_version must be an integer of at least 1, got None"),
    (0, "hallmark_version must be an integer of at least 1, got 0"),
    (-3, "hallmark_version must be an integer of at least 1, got -3"),
    (1.0, "hallmark_version must be an integer of at least 1, got 1.0"),
    ("1", "hallmark_version must be an integer of at least 1, got '1'"),
    (True, "hallmark_version must be an integer of at least 1, got True"),
    (2**32, "hallmark_version must be at most 4294967295, got 4294967296"),
]


@pytest.mark.parametrize("version, problem", UNUSABLE_VERSIONS, ids=[repr(v) for v, _ in UNUSABLE_VERSIONS])
def test_bad_key_version_makes_entry_unusable(tmp_path: Path, keys, version: Any, problem: str) -> None:
    key = keys["ed25519"]
    member = key.jwk()
    if version == "missing":
        del member["hallmark_version"]
    else:
        member["hallmark_version"] = version
    verifier = Verifier(write_jwks_members(tmp_path / "jwks.json", [member]))
    with pytest.raises(BadSignature) as raised:
        verifier.verify(key.signed_document(sample_manifest()))
    assert raised.value.message == f"the key set entry for {key.kid} is unusable: {problem}"


@pytest.mark.parametrize("algorithm, shown", [([], "[]"), ({}, "{}"), (5, "5"), (None, "None")])
def test_non_string_algorithm_makes_entry_unusable(tmp_path: Path, keys, algorithm: Any, shown: str) -> None:
    key = keys["ed25519"]
    member = dict(key.jwk(), hallmark_algorithm=algorithm)
    verifier = Verifier(write_jwks_members(tmp_path / "jwks.json", [member]))
    with pytest.raises(BadSignature) as raised:
        verifier.verify(key.signed_document(sample_manifest()))
    assert raised.value.message == (
        f"the key set entry for {key.kid} is unusable: hallmark_algorithm {shown} is not supported"
    )


def test_refresh_in_verify_finds_unusable_entry(tmp_path: Path, keys) -> None:
    first, second = keys["ed25519"], keys["ecdsa-p256-sha256"]
    path = tmp_path / "jwks.json"
    verifier = Verifier(write_jwks_members(path, [first.jwk()]), refresh_min_interval=timedelta(0))
    write_jwks_members(path, [first.jwk(), dict(second.jwk(), hallmark_algorithm={"name": "ecdsa"})])
    with pytest.raises(BadSignature) as raised:
        verifier.verify(second.signed_document(sample_manifest()))
    assert raised.value.message == (
        f"the key set entry for {second.kid} is unusable: hallmark_algorithm {{'name': 'ecdsa'}} is not supported"
    )
    assert verifier.verify(first.signed_document(sample_manifest())).key_id == first.kid


ODD_VALUES = [None, [], {}, 1.5, True, -1, 0, "", "!!", "AA", "A" * 3, 2**70, [[[]]], {"a": []}]


def test_parse_jwk_never_raises(keys) -> None:
    count = 0
    for key in keys.values():
        valid = key.jwk()
        for name in valid:
            if name == "kid":
                continue
            for value in ODD_VALUES:
                parsed = parse_jwk(dict(valid, **{name: value}))
                assert parsed.kid == key.kid
                assert parsed.problem is None or parsed.problem.startswith(
                    f"the key set entry for {key.kid} is unusable: "
                ), (name, value, parsed.problem)
                assert (parsed.problem is None) == (parsed.public_key is not None), (name, value)
                count += 1
    assert count == sum(len(key.jwk()) - 1 for key in keys.values()) * len(ODD_VALUES)


def test_refresh_failure_keeps_key_set(
    tmp_path: Path, keys, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    known, unknown = keys["ed25519"], keys["ecdsa-p384-sha384"]
    path = write_jwks_members(tmp_path / "jwks.json", [known.jwk()])
    verifier = Verifier(path, refresh_min_interval=timedelta(0))

    def broken(keys_url: str, timeout: float) -> None:
        raise RuntimeError("simulated parser bug")

    monkeypatch.setattr("hallmark_client.verifier.load_jwks", broken)
    with caplog.at_level(logging.WARNING, logger="hallmark_client"):
        with pytest.raises(UnknownKey):
            verifier.verify(unknown.signed_document(sample_manifest()))
    assert [record.getMessage() for record in caplog.records] == [
        f"key set refresh (unknown key ID {unknown.kid}) from {path} failed unexpectedly, keeping the "
        "previous key set: RuntimeError('simulated parser bug')"
    ]
    assert verifier.verify(known.signed_document(sample_manifest())).key_id == known.kid


def test_null_revoked_list_counts_as_empty(tmp_path: Path, keys) -> None:
    key = keys["ed25519"]
    verifier = Verifier(write_jwks_members(tmp_path / "jwks.json", [key.jwk()], hallmark_revoked=None))
    assert verifier.key_set.revoked == {}
    assert verifier.verify(key.signed_document(sample_manifest())).key_id == key.kid


def test_revoked_at_that_is_not_a_string(tmp_path: Path, keys) -> None:
    key = keys["ed25519"]
    revoked = [{"kid": key.kid, "hallmark_revoked_at": [[1]]}]
    verifier = Verifier(write_jwks_members(tmp_path / "jwks.json", [], hallmark_revoked=revoked))
    with pytest.raises(RevokedKey) as raised:
        verifier.verify(key.signed_document(sample_manifest()))
    assert raised.value.message == f"key {key.kid} was revoked at an unknown time"


@pytest.mark.parametrize(
    "literal, problem",
    [
        ("NaN", "NaN is not a JSON number"),
        ("Infinity", "Infinity is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        ("1e400", "the number 1e400 is too large for a double"),
    ],
)
def test_jwks_non_finite_number_rejected(tmp_path: Path, keys, literal: str, problem: str) -> None:
    path = tmp_path / "jwks.json"
    text = json.dumps({"keys": [keys["ed25519"].jwk()], "note": 0})
    path.write_text(text.replace('"note": 0', f'"note": [1, {literal}]'), encoding="utf-8")
    with pytest.raises(KeySetError) as raised:
        Verifier(str(path))
    assert str(raised.value) == (
        f"the key set at {path} is not valid JSON: {problem}; NaN and infinities are not allowed"
    )


def test_jwks_too_deep_rejected(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text('{"keys": [], "note": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    with pytest.raises(KeySetError) as raised:
        Verifier(str(path))
    assert str(raised.value) == f"the key set at {path} is nested too deeply to parse"


@pytest.mark.parametrize(
    "end, problem",
    [
        ("hallmark_activates_at", "'0001-01-01T00:00:00+01:00'"),
        ("hallmark_verify_until", "'9999-12-31T23:59:59-23:59'"),
    ],
)
def test_key_window_outside_datetime_range_is_unknown(tmp_path: Path, keys, end: str, problem: str) -> None:
    key = keys["ed25519"]
    member = dict(key.jwk(), **{end: problem.strip("'")})
    verifier = Verifier(write_jwks_members(tmp_path / "jwks.json", [member]))
    with pytest.raises(ExpiredKey) as raised:
        verifier.verify(key.signed_document(sample_manifest()))
    assert raised.value.message == (
        f"the key set gives no hallmark_activates_at or hallmark_verify_until for key {key.kid}"
    )


def test_key_window_from_year_one_does_not_overflow(tmp_path: Path, keys) -> None:
    key = keys["ed25519"]
    member = dict(key.jwk(), hallmark_activates_at="0001-01-01T00:00:00Z")
    verifier = Verifier(write_jwks_members(tmp_path / "jwks.json", [member]))
    assert verifier.verify(key.signed_document(sample_manifest())).key_id == key.kid


def test_timestamp_outside_datetime_range_is_malformed(tmp_path: Path, keys) -> None:
    key = keys["ed25519"]
    document = key.signed_document(dict(sample_manifest(), timestamp="9999-12-31T23:59:59-23:59"))
    with pytest.raises(MalformedDocument) as raised:
        verifier_for(tmp_path, key).verify(document)
    assert raised.value.message == (
        "output['timestamp']: '9999-12-31T23:59:59-23:59' is not a valid RFC 3339 timestamp: "
        "in UTC it falls outside the years 0001 to 9999"
    )


UNHASHABLE_FIELDS = [
    ("algorithm", [], "algorithm [] is unknown; expected one of rsa-pss-sha256, rsa-pkcs1-sha256, "
     "ecdsa-p256-sha256, ecdsa-p384-sha384, ed25519"),
    ("signature_encoding", {"a": 1}, "signature_encoding {'a': 1} is unknown; expected 'der' or 'p1363'"),
    ("canonicalization", ["jcs"], "canonicalization ['jcs'] is unknown; expected one of jcs, python-sort-keys"),
    ("signature", [1, 2], "signature must be a non-empty hex string of whole bytes, got [1, 2]"),
    ("signing_key_id", {"kid": "x"}, "signing_key_id must be a non-empty string, got {'kid': 'x'}"),
]


@pytest.mark.parametrize("name, value, message", UNHASHABLE_FIELDS, ids=[name for name, _, _ in UNHASHABLE_FIELDS])
def test_container_field_is_malformed(tmp_path: Path, keys, name: str, value: Any, message: str) -> None:
    key = keys["ecdsa-p256-sha256"]
    document = dict(key.signed_document(sample_manifest()), **{name: value})
    with pytest.raises(MalformedDocument) as raised:
        verifier_for(tmp_path, key).verify(document)
    assert raised.value.message == message


def test_output_nested_beyond_the_limit_is_malformed(tmp_path: Path, keys) -> None:
    key = keys["ed25519"]
    document = key.signed_document(sample_manifest())
    deep: list = [0]
    for _ in range(5_000):
        deep = [deep]
    document["output"]["deep"] = deep
    with pytest.raises(MalformedDocument) as raised:
        verifier_for(tmp_path, key).verify(document)
    assert raised.value.message == (
        "output cannot be canonicalized: manifest arrays and objects are nested more than 128 levels deep "
        "at $['deep']" + "[0]" * 127 + "; flatten the manifest before signing"
    )


def test_output_with_non_str_key_is_malformed(tmp_path: Path, keys) -> None:
    key = keys["ed25519"]
    document = key.signed_document(sample_manifest())
    document["output"][7] = "seven"
    with pytest.raises(MalformedDocument) as raised:
        verifier_for(tmp_path, key).verify(document)
    assert raised.value.message == (
        "output cannot be canonicalized: manifest key 7 at $ is of type int, but JSON member names are "
        "strings; convert the key to a str before signing"
    )


# ------------------------------------------------------------- verify_text


def test_verify_text_accepts_str_and_bytes(tmp_path: Path, keys) -> None:
    key = keys["ecdsa-p256-sha256"]
    verifier = verifier_for(tmp_path, key)
    first = json.dumps(key.signed_document(sample_manifest()))
    second = json.dumps(key.signed_document(sample_manifest()), ensure_ascii=False).encode("utf-8")
    assert verifier.verify_text(first).key_id == key.kid
    assert verifier.verify_text(second).key_id == key.kid
    with pytest.raises(ReplayedOutput):
        verifier.verify_text(first)


def test_verify_text_rejects_repeated_member_names(tmp_path: Path, keys) -> None:
    key = keys["ecdsa-p256-sha256"]
    verifier = verifier_for(tmp_path, key)
    document = key.signed_document(sample_manifest())
    text = json.dumps(document)
    cases = {
        text.replace('"signature": ', '"signature": "00", "signature": ', 1): "signature",
        text.replace('"prediction": 0', '"prediction": 2, "prediction": 0'): "prediction",
        text.replace('"setosa": 0.981657', '"setosa": 0.5, "setosa": 0.981657'): "setosa",
        text.replace('"signed_at": ', '"signed_at": {"a": 1, "a": 2}, "x": ', 1): "a",
    }
    for repeated, name in cases.items():
        with pytest.raises(MalformedDocument) as raised:
            verifier.verify_text(repeated)
        assert raised.value.message == f'the signed output is not valid: the member "{name}" appears twice'
    # json.loads keeps the last value, which here is the genuine one.
    assert verifier.verify(json.loads(next(iter(cases)))).key_id == key.kid


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_verify_text_rejects_nan_and_infinities(tmp_path: Path, keys, literal: str) -> None:
    key = keys["ed25519"]
    text = json.dumps(key.signed_document(sample_manifest())).replace('"prediction": 0', f'"prediction": {literal}')
    with pytest.raises(MalformedDocument) as raised:
        verifier_for(tmp_path, key).verify_text(text)
    assert raised.value.message == (
        f"the signed output is not JSON: {literal} is not a JSON value; NaN and infinities are not allowed"
    )


def test_verify_text_rejects_text_that_is_not_json(tmp_path: Path, keys) -> None:
    verifier = verifier_for(tmp_path, keys["ed25519"])
    cases = [
        ('{"output": ', "the signed output is not JSON: Expecting value: line 1 column 12 (char 11)"),
        (b'{"a": "\xff"}', "the signed output is not UTF-8: 'utf-8' codec can't decode byte 0xff in "
         "position 7: invalid start byte"),
        ("[" * 100_000 + "]" * 100_000, "the signed output is nested too deeply to parse"),
        ("[1]", "the signed output is a list, expected a dict"),
    ]
    for text, message in cases:
        with pytest.raises(MalformedDocument) as raised:
            verifier.verify_text(text)
        assert raised.value.message == message


def test_parse_signed_output_without_verifying() -> None:
    text = '{"output": {"a": [1, {"b": null}]}, "signature": "00", "signing_key_id": "k"}'
    assert parse_signed_output(text) == {"output": {"a": [1, {"b": None}]}, "signature": "00", "signing_key_id": "k"}
    assert parse_signed_output(text.encode("utf-8")) == json.loads(text)
    with pytest.raises(MalformedDocument) as raised:
        parse_signed_output('{"output": {"a": [{"b": 1, "b": 2}]}}')
    assert raised.value.message == 'the signed output is not valid: the member "b" appears twice'
