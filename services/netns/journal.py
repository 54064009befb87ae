"""The attachments journal: one JSON file per pod UID holding its devices' entries, replaced atomically.

Each change to an attachment is preceded by a write of its entry (the host snapshot and the phase
about to start), so after a crash at any point the next start knows what to undo or keep. One file
per pod lets a pod's devices be journaled together: one write, not one per device.

Durability: a file is written to a temporary name, fsynced and renamed over the old one, so it is
always a whole version, old or new. `durable=True` (the host snapshots, before the first change)
also fsyncs the directory, so the new version survives a power loss. Later phase changes skip that:
a killed process's writes are in the page cache for its successor, and a power loss, the only case
where the rename could be lost, also destroys every pod netns, after which any phase means restore.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from dranet.services.netns.model import JournalEntry

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._pods: dict[str, dict[str, JournalEntry]] = {}  # what is on disk, per pod and device

    def close(self) -> None:
        os.close(self._dir_fd)

    def _path(self, pod_uid: str) -> Path:
        # A checked name: no '/' and no leading '.'.
        return self.dir / f"{pod_uid}.json"

    def write(self, *entries: JournalEntry, durable: bool = True) -> None:
        """Record these entries (replacing any of the same (pod, device)): one file write per pod."""
        pods: dict[str, dict[str, JournalEntry]] = {}
        for e in entries:
            pods.setdefault(e.pod_uid, dict(self._pods.get(e.pod_uid, {})))[e.device] = e
        for pod_uid, devices in pods.items():
            self._store(pod_uid, devices, durable)

    def remove(self, pod_uid: str, *devices: str, durable: bool = False) -> None:
        """Forget these devices of the pod (all of them when none are named)."""
        current = self._pods.get(pod_uid, {})
        left = {d: e for d, e in current.items() if devices and d not in devices}
        if left == current and pod_uid in self._pods:
            return
        self._store(pod_uid, left, durable)

    def _store(self, pod_uid: str, devices: dict[str, JournalEntry], durable: bool) -> None:
        path = self._path(pod_uid)
        if not devices:
            self._pods.pop(pod_uid, None)
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
            if durable:
                os.fsync(self._dir_fd)
            return
        tmp = path.with_suffix(".tmp")
        body = {"entries": [devices[d].to_dict() for d in sorted(devices)]}
        data = json.dumps(body, separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        if durable:
            os.fsync(self._dir_fd)
        self._pods[pod_uid] = devices

    def load(self) -> list[JournalEntry]:
        """Every readable entry; unreadable files are moved aside (never silently deleted)."""
        out: list[JournalEntry] = []
        self._pods.clear()
        for path in sorted(self.dir.glob("*.json")):
            try:
                entries = _parse(json.loads(path.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("journal: unreadable entry %s moved aside: %s", path.name, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            for e in entries:
                if path.stem != e.pod_uid:
                    log.error("journal: %s holds an entry of pod %s; ignored", path.name, e.pod_uid)
                    continue
                self._pods.setdefault(e.pod_uid, {})[e.device] = e
                out.append(e)
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)  # a write that never reached its rename
        return out


def _parse(body: object) -> Iterable[JournalEntry]:
    if not isinstance(body, dict) or not isinstance(body.get("entries"), list):
        raise ValueError("not a journal file (no 'entries' list)")
    return [JournalEntry.from_dict(d) for d in body["entries"]]
