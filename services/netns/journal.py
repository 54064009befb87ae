"""The attachments journal: per pod UID, its devices' entries in one JSON file, replaced atomically.

Each change to an attachment is preceded by a write of its entry (the host snapshot and the phase
about to start), so after a crash at any point the next start knows what to undo or keep. One file
per pod lets a pod's devices be journaled together: one write, not one per device.

Durability. Two files per pod, each always a whole version (written to a temporary name, then
renamed), each version numbered (`seq`, rising); the next start reads the newest readable one.
- `<uid>.json`, durable writes: the host snapshots, before the first change. The data is written
  into a spare file, an empty file made ahead of time whose name is already durable, fsynced, and
  renamed: one fsync on the start path, not two (a power loss that loses the rename leaves the
  spare, which the next start reads like `<uid>.json`). With no spare ready (a burst), a new file
  and a directory fsync. The worker's watch pass makes new spares (`prepare_spares`).
- `<uid>.live`, every later write (phases, what the attach made, devices given back): not fsynced.
  Only a process that lives on the same boot can need these, and a killed process's writes are in
  the page cache for its successor. A power loss destroys every pod netns, after which any phase
  means "restore", and restore needs only the snapshots: if the power loss tore the live file, the
  start falls back to `<uid>.json`. Never replacing the durable file without an fsync is what
  keeps a torn write from taking the snapshots with it. (Measured on the pod start path: the fsync
  of the "attached" write was a quarter of the worker's per-pod time.)
A durable write must carry everything restore needs; a non-durable one may only change what a
power loss makes moot (phases, attach results, devices removed).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from dranet.services.netns.model import JournalEntry

log = logging.getLogger(__name__)

DURABLE, LIVE = ".json", ".live"
SPARE = ".spare-"  # + a number; no pod UID starts with "."
SPARES = 8  # kept ready: enough for a burst of pod starts between two watch passes


class Journal:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._pods: dict[str, dict[str, JournalEntry]] = {}  # what is on disk, per pod and device
        self._seq = 0  # of the newest version written or read
        self._spares: list[Path] = []  # empty files whose names are durable
        self._spare_lock = threading.Lock()  # guards _spares
        self._making = threading.Lock()  # one prepare_spares at a time
        self._spare_n = 0

    def close(self) -> None:
        os.close(self._dir_fd)

    def _path(self, pod_uid: str, kind: str = DURABLE) -> Path:
        # A checked name: no '/' and no leading '.'.
        return self.dir / f"{pod_uid}{kind}"

    def write(self, *entries: JournalEntry, durable: bool = True) -> None:
        """Record these entries (replacing any of the same (pod, device)): one file write per pod.
        durable=False only for what a power loss makes moot (see the module doc)."""
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
        if not devices:
            self._pods.pop(pod_uid, None)
            # The durable file first: were we killed between the two, the live one (newer) is read.
            gone = [_unlink(self._path(pod_uid, kind)) for kind in (DURABLE, LIVE)]
            if durable and any(gone):
                os.fsync(self._dir_fd)
            return
        self._seq += 1
        body = {"seq": self._seq, "entries": [devices[d].to_dict() for d in sorted(devices)]}
        data = json.dumps(body, separators=(",", ":")).encode()
        if durable:
            spare = self._take_spare()
            if spare is not None:
                try:
                    _fill(spare, data)
                except OSError:
                    _unlink(spare)
                    raise
                os.rename(spare, self._path(pod_uid, DURABLE))
            else:
                _replace(self._path(pod_uid, DURABLE), data, sync=True)
                os.fsync(self._dir_fd)
            _unlink(self._path(pod_uid, LIVE))  # older than the durable version now
        else:
            _replace(self._path(pod_uid, LIVE), data, sync=False)
        self._pods[pod_uid] = devices

    def _take_spare(self) -> Path | None:
        with self._spare_lock:
            return self._spares.pop() if self._spares else None

    def prepare_spares(self) -> None:
        """Make spare files up to SPARES; their names are durable when this returns."""
        with self._making:
            with self._spare_lock:
                want = SPARES - len(self._spares)
            made: list[Path] = []
            while len(made) < want:
                self._spare_n += 1
                path = self.dir / f"{SPARE}{self._spare_n}"
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
                except FileExistsError:
                    continue
                made.append(path)
            if made:
                os.fsync(self._dir_fd)
                with self._spare_lock:
                    self._spares += made

    def load(self) -> list[JournalEntry]:
        """Every readable entry, from each pod's newest readable file; unreadable files are moved
        aside (never silently deleted). Then makes fresh spares."""
        self._pods.clear()
        newest: dict[str, tuple[int, list[JournalEntry], Path]] = {}
        spares = sorted(self.dir.glob(f"{SPARE}*"))
        with self._spare_lock:
            self._spares.clear()
        for path in sorted([*self.dir.glob(f"*{DURABLE}"), *self.dir.glob(f"*{LIVE}")]) + spares:
            is_spare = path.name.startswith(SPARE)
            try:
                if is_spare and path.stat().st_size == 0:
                    continue
                seq, entries = _parse(json.loads(path.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # A spare written when the power went: nothing had moved yet (the move waits for
                # its fsync). Any other file: kept for a look.
                log.error("journal: unreadable entry %s moved aside: %s", path.name, exc)
                path.rename(path.with_name(path.name.lstrip(".") + ".bad"))
                continue
            self._seq = max(self._seq, seq)
            # A spare holds a durable version whose rename a power loss undid: its entries say whose.
            pod_uid = entries[0].pod_uid if is_spare and entries else path.stem
            if pod_uid not in newest or seq > newest[pod_uid][0]:
                newest[pod_uid] = (seq, entries, path)
        out: list[JournalEntry] = []
        for pod_uid, (_seq, entries, path) in sorted(newest.items()):
            if path.name.startswith(SPARE):
                os.rename(path, self._path(pod_uid, DURABLE))
            for e in entries:
                if pod_uid != e.pod_uid:
                    log.error(
                        "journal: the file of pod %s holds an entry of pod %s; ignored", pod_uid, e.pod_uid
                    )
                    continue
                self._pods.setdefault(e.pod_uid, {})[e.device] = e
                out.append(e)
        for left in [*self.dir.glob("*.tmp"), *self.dir.glob(f"{SPARE}*")]:
            left.unlink(missing_ok=True)  # writes that never reached their rename, old spares
        self.prepare_spares()
        return out


def _replace(path: Path, data: bytes, *, sync: bool) -> None:
    """Write data to path atomically (a temporary file renamed over it); sync: fsync it first."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _fill(path: Path, data: bytes) -> None:
    """Write data into the (empty) file at path and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _parse(body: Any) -> tuple[int, list[JournalEntry]]:
    """(seq, entries) of a journal file; files from before `seq` count as the oldest."""
    if not isinstance(body, dict) or not isinstance(body.get("entries"), list):
        raise ValueError("not a journal file (no 'entries' list)")
    seq = body.get("seq", 0)
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError(f"seq {seq!r} is not an integer")
    return seq, [JournalEntry.from_dict(d) for d in body["entries"]]
