"""The attachments journal: one JSON file per (pod UID, device), replaced atomically.

Each change to an attachment is preceded by a write of its entry (the host snapshot and the phase
about to start), so after a crash at any point the next start knows what to undo or keep.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from dranet.services.netns.model import JournalEntry

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self._dir_fd)

    def _path(self, pod_uid: str, device: str) -> Path:
        # Both parts are checked names (no '/' and no leading '.'); '~' never occurs in either.
        return self.dir / f"{pod_uid}~{device}.json"

    def write(self, entry: JournalEntry) -> None:
        """tmp + fsync + rename + fsync(dir): the entry is on disk, whole, when this returns."""
        path = self._path(entry.pod_uid, entry.device)
        tmp = path.with_suffix(".tmp")
        data = json.dumps(entry.to_dict(), separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        os.fsync(self._dir_fd)

    def remove(self, pod_uid: str, device: str) -> None:
        try:
            os.unlink(self._path(pod_uid, device))
        except FileNotFoundError:
            return
        os.fsync(self._dir_fd)

    def load(self) -> list[JournalEntry]:
        """Every readable entry; unreadable files are moved aside (never silently deleted)."""
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                out.append(JournalEntry.from_dict(json.loads(path.read_bytes())))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("journal: unreadable entry %s moved aside: %s", path.name, exc)
                path.rename(path.with_suffix(".bad"))
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)  # a write that never reached its rename
        return out
