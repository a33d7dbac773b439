"""Bounded cache of accepted signatures, optionally kept in an append-only file."""

from __future__ import annotations

import os
import re
import stat
import threading
from collections import OrderedDict
from pathlib import Path
from typing import IO, Optional, Tuple, Union

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

# An expiry as the Rust reader accepts it: an i64 of seconds, then up to 9
# fraction digits, of which microseconds are kept.
_EXPIRY = re.compile(r"([+-]?[0-9]+)(?:\.([0-9]{0,9}))?")
# An expiry in microseconds must fit an i64, as in the Rust reader.
_MIN_EXPIRY_MICROS = -(2**63)
_MAX_EXPIRY_MICROS = 2**63 - 1


class ReplayCache:
    """Remembers entry IDs until they expire, holding at most capacity of them.

    When full, the least recently used entry is dropped, so capacity should
    exceed the number of outputs accepted within one time-to-live. With
    path, each new entry is appended to that file as ``EXPIRY_UNIX_SECONDS
    ENTRY_ID`` and fsynced before ``add`` returns. The file is read when the
    cache opens, dropping expired and unreadable lines, and it is rewritten
    without expired entries when it grows past twice capacity. One process at a time
    may hold the file: a second opener gets RuntimeError. A path (or its
    ``.lock`` or ``.tmp`` sibling) that exists but is not a regular file,
    such as a symbolic link, a device or a FIFO, raises ValueError, because
    the rename that rewrites the file would replace it and a FIFO would
    block the open.
    """

    def __init__(self, capacity: int, path: Optional[Union[str, Path]] = None, *, now: float) -> None:
        if capacity < 1:
            raise ValueError(f"replay_cache_size must be at least 1, got {capacity}")
        self.capacity = capacity
        self.path = Path(path) if path is not None else None
        self._entries: "OrderedDict[str, float]" = OrderedDict()
        self._lock = threading.Lock()
        self._file: Optional[IO[str]] = None
        self._lock_file: Optional[IO[str]] = None
        self._appended = 0
        if self.path is not None:
            self._open(now)

    def _open(self, now: float) -> None:
        """Take the file's lock, load its live entries and rewrite it compacted."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for candidate in (self.path, self._staging_path(), Path(f"{self.path}.lock")):
            _require_regular_file_or_absent(candidate)
        self._lock_file = open(f"{self.path}.lock", "a", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                self._lock_file.close()
                self._lock_file = None
                raise RuntimeError(
                    f"replay cache file {self.path} is in use by another Verifier ({error}); "
                    "give each consumer process its own replay_cache_path, or close the other Verifier"
                ) from error
        if self.path.exists():
            with open(self.path, "rb") as handle:
                for line in handle:
                    entry = _parse_line(line)
                    if entry is None:
                        continue
                    expires, entry_id = entry
                    if expires > now:
                        self._entries[entry_id] = expires
                        self._entries.move_to_end(entry_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        self._rewrite()

    def _staging_path(self) -> Path:
        """Return the temporary file that _rewrite renames over the cache file."""
        assert self.path is not None
        return self.path.with_name(f"{self.path.name}.tmp")

    def _rewrite(self) -> None:
        """Replace the file with the live entries, atomically, and reopen it for appending."""
        assert self.path is not None
        if self._file is not None:
            self._file.close()
        staging = self._staging_path()
        with open(staging, "w", encoding="utf-8") as handle:
            for entry_id, expires in self._entries.items():
                handle.write(f"{expires:.6f} {entry_id}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, self.path)
        _fsync_directory(self.path.parent)
        self._file = open(self.path, "a", encoding="utf-8")
        self._appended = 0

    def add(self, entry_id: str, *, now: float, ttl: float) -> bool:
        """Record entry_id until now + ttl; return False if it is already recorded and unexpired."""
        with self._lock:
            expires = self._entries.get(entry_id)
            if expires is not None and expires > now:
                self._entries.move_to_end(entry_id)
                return False
            self._drop_expired(now)
            self._entries[entry_id] = now + ttl
            self._entries.move_to_end(entry_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            if self._file is not None:
                self._file.write(f"{now + ttl:.6f} {entry_id}\n")
                self._file.flush()
                os.fsync(self._file.fileno())
                self._appended += 1
                if self._appended > 2 * self.capacity:
                    self._rewrite()
            return True

    def _drop_expired(self, now: float) -> None:
        """Drop expired entries from the least recently used end."""
        while self._entries:
            oldest_id, expires = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[oldest_id]

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        """Close the file and release its lock; in-memory entries stay usable."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


def _parse_line(line: bytes) -> Optional[Tuple[float, str]]:
    """Return (expiry in Unix seconds, entry ID) from a file line, or None when it is unreadable.

    Lines are read as the Rust reader reads them: UTF-8, two fields, and an
    expiry of ``SECONDS[.FRACTION]`` with at most 9 fraction digits whose
    value in microseconds fits an i64. That excludes ``inf``, ``nan`` and
    exponents. A torn last line after a crash is expected and skipped.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parts = text.split()
    if len(parts) != 2:
        return None
    match = _EXPIRY.fullmatch(parts[0])
    if match is None:
        return None
    whole, fraction = match.group(1), (match.group(2) or "")[:6].ljust(6, "0")
    # Leading zeros are dropped before int(), which limits the number of
    # digits it converts; an i64 has at most 19.
    digits = whole.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 19:
        return None
    seconds = -int(digits) if whole.startswith("-") else int(digits)
    micros = seconds * 1_000_000 + int(fraction)
    if not _MIN_EXPIRY_MICROS <= micros <= _MAX_EXPIRY_MICROS:
        return None
    return micros / 1_000_000, parts[1]


def _require_regular_file_or_absent(path: Path) -> None:
    """Raise ValueError when path exists and is not a regular file; symbolic links are not followed."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    raise ValueError(
        f"replay cache path {path} exists but is a {_file_kind(mode)}, not a regular file; "
        "set replay_cache_path to a regular file or to a path that does not exist yet"
    )


def _file_kind(mode: int) -> str:
    """Name the file type in an lstat mode."""
    kinds = (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    )
    for test, kind in kinds:
        if test(mode):
            return kind
    return "special file"


def _fsync_directory(directory: Path) -> None:
    """Flush a directory entry change (a rename) to disk where the platform allows it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
