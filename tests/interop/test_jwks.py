"""The JWKS document loads in jwcrypto, a JOSE library, and its key IDs are
the RFC 7638 thumbprints that jwcrypto computes itself."""

from __future__ import annotations

import json
import time
import urllib.request

from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk

from conftest import HallmarkServer


def fetch_jwks(server: HallmarkServer) -> tuple[str, dict]:
    """Return the raw JWKS text and its parsed JSON."""
    with urllib.request.urlopen(f"{server.admin_url}/.well-known/jwks.json", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/jwk-set+json"
        text = response.read().decode("utf-8")
    return text, json.loads(text)


def test_jwks_thumbprints_match_key_ids(hallmark: HallmarkServer) -> None:
    result = hallmark.hallmark_cli("keys", "rotate", "--force")
    assert result.returncode == 0, result.stderr
    revoke_target = hallmark.hallmark_cli("keys", "list", "--json")
    versions = [json.loads(line) for line in revoke_target.stdout.splitlines()]
    retired_id = versions[0]["key_id"]
    result = hallmark.hallmark_cli("keys", "revoke", retired_id)
    assert result.returncode == 0, result.stderr
    result = hallmark.hallmark_cli("keys", "create")
    assert result.returncode == 0, result.stderr

    listed = {}
    for _ in range(50):
        listed = {key.key_id: key for key in hallmark.list_keys()}
        if len(listed) == 3:
            break
        time.sleep(0.1)
    assert len(listed) == 3, "revoked, active and next versions are listed"

    text, document = fetch_jwks(hallmark)
    key_set = jwk.JWKSet.from_json(text)
    loaded = {key["kid"]: key for key in key_set["keys"]}
    assert set(loaded) == set(listed) - {retired_id}
    for kid, key in loaded.items():
        assert key.thumbprint() == kid
        pem = key.export_to_pem().decode("ascii")
        expected = serialization.load_pem_public_key(listed[kid].public_key_pem.encode("ascii"))
        assert pem == expected.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    revoked = document["hallmark_revoked"]
    assert [entry["kid"] for entry in revoked] == [retired_id]
    assert "n" not in revoked[0]
    states = sorted(member["hallmark_state"] for member in document["keys"])
    assert states == ["active", "next"]
    assert all(member["alg"] == "PS256" for member in document["keys"])
