"""Verifier checks against locally generated keys and a locally written JWKS file."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Type

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
)

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
