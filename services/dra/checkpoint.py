"""The prepared claims on disk: atomic, checksummed, versioned JSON keyed by claim UID.

The kubelet never prepares a claim again after a plugin restart, so everything nri later needs for
a pod comes from here. Layout of <state-dir>/dra/checkpoint.json:

    {"version": 1, "checksum": "<sha256 hex of the canonical payload>", "payload": {"claims": {uid: claim}}}

Written as tmp file + fsync + rename + directory fsync, so a crash leaves the old or the new file,
never a torn one. A file that does not parse, has an unknown version or a wrong checksum is moved
aside to checkpoint.json.corrupt-<unix time> and reported; it is never silently used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dranet.atomic import write_atomic

from .metrics import CHECKPOINT_CORRUPT, CHECKPOINT_WRITE_SECONDS
from .model import PreparedClaim

VERSION = 1
FILENAME = "checkpoint.json"
LOCKFILE = "prepare.lock"

log = logging.getLogger(__name__)


class CheckpointCorrupt(Exception):
    """The checkpoint file exists but cannot be trusted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def checksum(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(payload)).hexdigest()


def encode(claims: Mapping[str, PreparedClaim]) -> bytes:
    payload = {"claims": {uid: c.to_dict() for uid, c in claims.items()}}
    body = canonical(payload)  # serialised once: hashed and written as is
    head = f'{{"version":{VERSION},"checksum":"{hashlib.sha256(body).hexdigest()}","payload":'
    return head.encode() + body + b"}\n"


def decode(data: bytes) -> dict[str, PreparedClaim]:
    """Parse and verify a checkpoint document; raise CheckpointCorrupt with the reason."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointCorrupt(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CheckpointCorrupt("top level is not an object")
    if doc.get("version") != VERSION:
        raise CheckpointCorrupt(f"unknown version {doc.get('version')!r} (this build reads {VERSION})")
    payload = doc.get("payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("claims"), dict):
        raise CheckpointCorrupt("payload.claims missing")
    if doc.get("checksum") != checksum(payload):
        raise CheckpointCorrupt("checksum mismatch (the file was changed or partly written)")
    try:
        return {uid: PreparedClaim.from_dict(c) for uid, c in payload["claims"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointCorrupt(f"claim entry malformed: {exc!r}") from None


class Checkpoint:
    """Reads and writes the checkpoint file; the caller serialises access with locked().

    Two dra instances (old and new driver pod in a rolling update) share the file: every change is
    made under locked(), a thread lock plus an flock on `<dir>/prepare.lock` (as the Go helper
    serialises its instances' calls with a file lock), after reading the file again if the other
    instance replaced it since (changed())."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / FILENAME
        self._thread_lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime ns, size) last read or written
        # Set when a corrupt file was found at load: where it went and why (shown in ping details).
        self.corruption: dict[str, Any] | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the checkpoint among this process's threads and other dra instances."""
        with self._thread_lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / LOCKFILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        """The file is not the one this process last read or wrote (another instance replaced it)."""
        return self._identity() != self._seen

    def load(self) -> dict[str, PreparedClaim]:
        """The stored claims; {} when there is no file. A corrupt file is quarantined and reported."""
        self._seen = self._identity()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._seen = None
            return {}
        try:
            return decode(data)
        except CheckpointCorrupt as exc:
            aside = self.path.with_name(f"{FILENAME}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            self.corruption = {"reason": exc.reason, "moved_to": str(aside), "at": time.time()}
            CHECKPOINT_CORRUPT.inc()
            log.error(
                "checkpoint is corrupt: moved aside, starting without it; pods prepared before may "
                "need their claims re-prepared (delete and recreate the pods)",
                extra={"reason": exc.reason, "moved_to": str(aside)},
            )
            return {}

    def save(self, claims: Mapping[str, PreparedClaim]) -> None:
        """Replace the file atomically with `claims`. Raises OSError on failure (nothing half-written)."""
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, encode(claims), 0o600)
        self._seen = self._identity()
        CHECKPOINT_WRITE_SECONDS.observe(time.monotonic() - started)
