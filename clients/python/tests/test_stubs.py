"""The generated stubs shipped in hallmark_client/_proto match proto/."""

from __future__ import annotations

import filecmp
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hallmark_client._proto.hallmark.v1 import signer_pb2

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROTO_DIR = PACKAGE_DIR.parents[1] / "proto"
STUBS_DIR = PACKAGE_DIR / "hallmark_client" / "_proto"


def test_committed_descriptor_matches_proto(tmp_path: Path) -> None:
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    out = tmp_path / "signer.pb"
    include = Path(protoc.__file__).parent / "_proto"
    status = protoc.main(
        ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--descriptor_set_out={out}", "hallmark/v1/signer.proto"]
    )
    assert status == 0, "protoc could not compile proto/hallmark/v1/signer.proto"
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    # protoc sets json_name in descriptor sets but not in the descriptor it
    # embeds in Python code. It is derived from the field name, so clearing it loses nothing.
    for message in fresh.message_type:
        for proto_field in message.field:
            proto_field.ClearField("json_name")
    committed = descriptor_pb2.FileDescriptorProto.FromString(signer_pb2.DESCRIPTOR.serialized_pb)
    assert committed == fresh, (
        "hallmark_client/_proto is stale relative to proto/hallmark/v1/signer.proto; "
        "run clients/python/regenerate.sh"
    )


def test_regeneration_reproduces_the_committed_files(tmp_path: Path) -> None:
    recorded = (STUBS_DIR / "GENERATED_BY").read_text(encoding="utf-8").strip()
    installed = f"grpcio-tools=={importlib.metadata.version('grpcio-tools')}"
    if recorded != installed:
        pytest.skip(f"the stubs were made with {recorded} and {installed} is installed; "
                    "the descriptor comparison still checks them against proto/")
    subprocess.run(
        ["bash", str(PACKAGE_DIR / "regenerate.sh"), "--out", str(tmp_path)],
        check=True,
        env=dict(os.environ, PYTHON=sys.executable),
        capture_output=True,
    )
    fresh = tmp_path / "_proto"
    committed_files = sorted(
        p.relative_to(STUBS_DIR) for p in STUBS_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    fresh_files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert committed_files == fresh_files
    _, mismatch, errors = filecmp.cmpfiles(STUBS_DIR, fresh, [str(p) for p in committed_files], shallow=False)
    assert not mismatch, f"stale generated files {mismatch}; run clients/python/regenerate.sh"
    assert not errors, f"unreadable generated files {errors}; run clients/python/regenerate.sh"
