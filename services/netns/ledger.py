"""The worker's state owner: attachments (journal and memory), held pod netns, locks, reservations.

Memory follows the journal: an entry changes in memory only after its journal write succeeded, so
what the worker answers is what a restart would find. One re-entrant lock guards the maps; a
lock per pod UID serialises the ops of one pod; `reserve` keeps two requests off one interface.
The worker holds an fd on every pod netns it has devices in (or an op works in) and closes the
rest (`release_unused`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dranet.services.netns.journal import Journal
from dranet.services.netns.model import JournalEntry
from dranet.services.netns.nspath import NetnsHandle
from dranet.services.netns.podns import Netns

from dranet.bus.messages import BusError
from dranet.keyedlocks import KeyedLocks

Key = tuple[str, str]  # (pod UID, device)
NetnsId = tuple[int, int]  # (st_dev, st_ino) of a netns file


class Ledger:
    def __init__(self, journal_dir: str | Path) -> None:
        self.journal = Journal(journal_dir)
        self._entries: dict[Key, JournalEntry] = {}
        self._netns: dict[NetnsId, Netns] = {}  # held pod netns, by identity
        self._pod_locks = KeyedLocks()
        self._lock = threading.RLock()  # guards the dicts here
        self._busy: set[str] = set()  # host ifnames an op is working on
        self._in_use: dict[NetnsId, int] = {}  # netns an op is working in, with how many ops

    def close(self) -> None:
        with self._lock:
            for pod in self._netns.values():
                pod.close()
            self._netns.clear()
        self.journal.close()

    # ------------------------------------------------------------ entries
    def load(self) -> list[JournalEntry]:
        """The journal's entries (not yet in memory: `adopt` each once reconciled)."""
        return self.journal.load()

    def adopt(self, entry: JournalEntry) -> None:
        """Hold an entry read back from the journal (it is on disk already)."""
        with self._lock:
            self._entries[entry.key] = entry

    def get(self, key: Key) -> JournalEntry | None:
        with self._lock:
            return self._entries.get(key)

    def entries(self, pod_uid: str | None = None, devices: Sequence[str] = ()) -> list[JournalEntry]:
        """Entries sorted by key; of one pod (and these devices, when given) when pod_uid is set."""
        with self._lock:
            out = [
                e
                for e in self._entries.values()
                if pod_uid is None or (e.pod_uid == pod_uid and (not devices or e.device in devices))
            ]
        return sorted(out, key=lambda e: e.key)

    def held_by_other_pod(
        self, pod_uid: str, device: str, ifname: str, *, child: bool = False
    ) -> JournalEntry | None:
        """An entry of another pod for this device or host interface (by name or alternative name).
        child: the caller makes a child of it, which the other pods' children do not stand in the
        way of."""
        with self._lock:
            for e in self._entries.values():
                if child and e.child:
                    continue
                names = (e.host.link.name, *e.host.link.alt_names)
                if e.pod_uid != pod_uid and ((ifname and ifname in names) or e.device == device):
                    return e
        return None

    def write(self, *entries: JournalEntry, durable: bool = False) -> None:
        self.journal.write(*entries, durable=durable)
        with self._lock:
            for entry in entries:
                self._entries[entry.key] = entry

    def forget(self, entries: Sequence[JournalEntry]) -> None:
        """Drop entries from the journal (one write per pod) and from memory."""
        by_pod: dict[str, list[str]] = {}
        for e in entries:
            by_pod.setdefault(e.pod_uid, []).append(e.device)
        for pod_uid, devices in by_pod.items():
            self.journal.remove(pod_uid, *devices)
        with self._lock:
            for e in entries:
                self._entries.pop(e.key, None)

    def counts(self) -> tuple[int, int]:
        """(attachments, pods)."""
        with self._lock:
            return len(self._entries), len({k[0] for k in self._entries})

    # ------------------------------------------------------------ locks
    @contextmanager
    def pod_lock(self, pod_uid: str) -> Iterator[None]:
        with self._pod_locks.hold(pod_uid):
            yield

    @contextmanager
    def reserve(self, ifnames: Sequence[str]) -> Iterator[None]:
        """Mark host interfaces as being worked on; `conflict` when another request has one."""
        with self._lock:
            busy = [n for n in ifnames if n in self._busy]
            if busy:
                raise BusError(
                    "conflict", f"{busy[0]} is being attached or detached by another request; retry"
                )
            self._busy.update(ifnames)
        try:
            yield
        finally:
            with self._lock:
                self._busy.difference_update(ifnames)

    # ------------------------------------------------------------ held netns
    def held(self, netns_id: NetnsId) -> Netns | None:
        with self._lock:
            return self._netns.get(netns_id)

    def pod_for(self, handle: NetnsHandle, *, use: bool = False) -> Netns:
        """The held Netns for this handle; takes ownership of handle (closed if one is held already).
        use: an op works in it until it calls release_unused(done_with=id)."""
        with self._lock:
            pod = self._netns.get(handle.id)
            if pod is None:
                pod = self._netns[handle.id] = Netns(handle)
            elif pod.handle is not handle:
                handle.close()
            if use:
                self._in_use[handle.id] = self._in_use.get(handle.id, 0) + 1
            return pod

    def release_unused(self, done_with: NetnsId | None = None) -> None:
        """Close pod netns we hold nothing in: until now our fd kept each alive (and its devices
        with it, so a netns deleted under us still gives its devices back)."""
        with self._lock:
            if done_with is not None:
                left = self._in_use.get(done_with, 1) - 1
                if left:
                    self._in_use[done_with] = left
                else:
                    self._in_use.pop(done_with, None)
            used = {e.netns_id for e in self._entries.values()} | set(self._in_use)
            unused = [i for i in self._netns if i not in used]
            pods = [self._netns.pop(i) for i in unused]
        for pod in pods:
            pod.close()
