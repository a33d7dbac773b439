"""The on-disk replay cache: which paths it accepts and which lines it reads back."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hallmark_client.replay import ReplayCache

ENTRY = "e" * 64


def rejected_path_message(path: Path, kind: str) -> str:
    return (
        f"replay cache path {path} exists but is a {kind}, not a regular file; "
        "set replay_cache_path to a regular file or to a path that does not exist yet"
    )


def test_symlink_rejected_and_target_kept(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("precious\n", encoding="utf-8")
    link = tmp_path / "replay.log"
    link.symlink_to(target)
    with pytest.raises(ValueError) as raised:
        ReplayCache(10, link, now=time.time())
    assert str(raised.value) == rejected_path_message(link, "symbolic link")
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8") == "precious\n"


def test_dangling_symlink_rejected(tmp_path: Path) -> None:
    link = tmp_path / "replay.log"
    link.symlink_to(tmp_path / "missing")
    with pytest.raises(ValueError) as raised:
        ReplayCache(10, link, now=time.time())
    assert str(raised.value) == rejected_path_message(link, "symbolic link")
    assert not (tmp_path / "missing").exists()


def test_fifo_rejected_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "replay.log"
    os.mkfifo(fifo)
    with pytest.raises(ValueError) as raised:
        ReplayCache(10, fifo, now=time.time())
    assert str(raised.value) == rejected_path_message(fifo, "FIFO")


def test_directory_rejected(tmp_path: Path) -> None:
    directory = tmp_path / "replay.log"
    directory.mkdir()
    with pytest.raises(ValueError) as raised:
        ReplayCache(10, directory, now=time.time())
    assert str(raised.value) == rejected_path_message(directory, "directory")


def test_character_device_rejected() -> None:
    with pytest.raises(ValueError) as raised:
        ReplayCache(10, "/dev/null", now=time.time())
    assert str(raised.value) == rejected_path_message(Path("/dev/null"), "character device")
    assert Path("/dev/null").is_char_device()


@pytest.mark.parametrize("suffix", [".lock", ".tmp"])
def test_symlinked_sibling_file_rejected(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("precious\n", encoding="utf-8")
    sibling = tmp_path / f"replay.log{suffix}"
    sibling.symlink_to(target)
    with pytest.raises(ValueError) as raised:
        ReplayCache(10, tmp_path / "replay.log", now=time.time())
    assert str(raised.value) == rejected_path_message(sibling, "symbolic link")
    assert target.read_text(encoding="utf-8") == "precious\n"


def test_regular_or_missing_path_accepted(tmp_path: Path) -> None:
    existing = tmp_path / "existing.log"
    existing.write_text("", encoding="utf-8")
    for path in (existing, tmp_path / "new" / "replay.log"):
        cache = ReplayCache(10, path, now=1_000.0)
        assert cache.add(ENTRY, now=1_000.0, ttl=60.0) is True
        cache.close()
        assert path.read_text(encoding="utf-8") == f"1060.000000 {ENTRY}\n"


def test_load_keeps_rust_readable_expiries(tmp_path: Path) -> None:
    now = 1_800_000_000
    later = now + 600
    lines = {
        f"{later}.5": "a",  # kept
        "inf": "b",
        "nan": "c",
        "-inf": "d",
        f"{later}e0": "f",
        f"{later}.1234567890": "g",  # ten fraction digits
        f"{later}.123456789": "h",  # kept, truncated to microseconds
        f"{later}.": "i",  # kept: an empty fraction
        "9223372036855": "j",  # beyond an i64 of microseconds
        "9223372036854": "k",  # kept: the largest whole second that fits
        "9" * 5000: "l",
        f"{now - 1}": "m",  # expired
        f"\u0661{later}": "n",  # not an ASCII digit
        f"+{later}": "o",  # kept: Rust's i64 parser accepts a plus sign
    }
    path = tmp_path / "replay.log"
    text = "".join(f"{expiry} {letter * 64}\n" for expiry, letter in lines.items())
    path.write_bytes(text.encode("utf-8") + b"\xff\xfe 1 " + b"p" * 64 + b"\n")

    ReplayCache(100, path, now=float(now)).close()

    assert path.read_text(encoding="utf-8") == (
        f"{later}.500000 {'a' * 64}\n"
        f"{later}.123456 {'h' * 64}\n"
        f"{later}.000000 {'i' * 64}\n"
        f"9223372036854.000000 {'k' * 64}\n"
        f"{later}.000000 {'o' * 64}\n"
    )
