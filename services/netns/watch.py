"""Devices whose pod went away without a detach: the reconcile at start (the journal against the
kernel), the watch of attached pods' netns files, which restores the devices of a netns that is
gone and retries a restore that keeps failing with a growing delay, and the operator's release of
a device that never comes back. The restore itself is the worker's `undo`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dranet.services.netns.errors import as_bus_error
from dranet.services.netns.ledger import Key, Ledger, NetnsId
from dranet.services.netns.model import ATTACHED, JournalEntry, RequestError, check_device_name, check_pod_uid
from dranet.services.netns.notify import Notifier
from dranet.services.netns.nspath import netns_id, open_netns
from dranet.services.netns.podns import Netns

log = logging.getLogger(__name__)

RETRY_MAX = 300.0  # seconds between attempts to restore a device that keeps failing

# Give an entry's device back to the host (pod: its netns when held; reason: for the log);
# False when the device could not be moved out and the entry is kept for a retry.
Undo = Callable[[JournalEntry, Netns | None, str], bool]


class PodWatch:
    def __init__(
        self,
        ledger: Ledger,
        undo: Undo,
        notifier: Notifier,
        *,
        roots: Sequence[str],
        forbidden: Iterable[NetnsId],
    ) -> None:
        self.ledger = ledger
        self._undo = undo
        self._notifier = notifier
        self.roots = roots
        self._forbidden = forbidden
        self.retry: dict[Key, tuple[float, float]] = {}  # key -> (next attempt, delay)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval: float) -> None:
        self._thread = threading.Thread(target=self._watch, args=(interval,), name="netns-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def reconcile(self) -> None:
        """Bring the journal and the kernel into agreement after a (re)start."""
        entries = self.ledger.load()
        for entry in entries:
            with self.ledger.pod_lock(entry.pod_uid):
                self.ledger.adopt(entry)
                pod = self.reopen(entry)
                if entry.phase == ATTACHED and pod is not None:
                    if not entry.pod_ifname or pod.rtnl.get_link(name=entry.pod_ifname) is not None:
                        log.info("kept", extra={"pod_uid": entry.pod_uid, "device": entry.device})
                        continue
                # Interrupted attach or detach, a vanished netns, or a missing device: restore.
                self._undo(entry, pod, f"reconcile-{entry.phase}")
        self.ledger.release_unused()

    def reopen(self, entry: JournalEntry) -> Netns | None:
        """The pod netns of an entry, if it still exists (held, or reopened by its path)."""
        pod = self.ledger.held(entry.netns_id)
        if pod is not None:
            return pod
        try:
            handle = open_netns(entry.netns, self.roots, self._forbidden)
        except RequestError:
            return None
        if handle.id != entry.netns_id:
            handle.close()  # the path now names another (newer) netns: ours is gone
            return None
        return self.ledger.pod_for(handle)

    def check_pods(self) -> None:
        """One watch pass: restore the devices of pods whose netns file is gone."""
        now = time.monotonic()
        gone = [
            e
            for e in self.ledger.entries()
            if netns_id(e.netns) != e.netns_id and self.retry.get(e.key, (0.0, 0.0))[0] <= now
        ]
        for entry in gone:
            log.info("pod netns gone; restoring", extra={"pod_uid": entry.pod_uid, "netns": entry.netns})
            with self.ledger.pod_lock(entry.pod_uid):
                current = self.ledger.get(entry.key)
                if current is not None and current.netns_id == entry.netns_id:
                    if not self._undo(current, None, "netns-gone"):
                        # Retried with a growing delay, not logged every pass.
                        delay = min(RETRY_MAX, 2 * self.retry.get(entry.key, (0.0, 0.5))[1])
                        self.retry[entry.key] = (time.monotonic() + delay, delay)
        if gone:
            self.ledger.release_unused()

    def release(self, pod_uid: str, device: str) -> dict[str, Any]:
        """The operator's way out for a device whose restore keeps failing: forget the attachment
        without touching the kernel (the operator has put the interface back, or given it up)."""
        try:
            check_pod_uid(pod_uid)
            check_device_name(device, "device")
        except RequestError as err:
            raise as_bus_error(err) from None
        with self.ledger.pod_lock(pod_uid):
            entry = self.ledger.get((pod_uid, device))
            if entry is None:
                return {"released": []}
            self.ledger.forget([entry])
            self.retry.pop(entry.key, None)
            self.ledger.release_unused()
        log.warning(
            "released by the operator without a restore", extra={"pod_uid": pod_uid, "device": device}
        )
        if self._notifier.device_health.clear(device):
            self._notifier.publish_health()
        self._notifier.notify_entry(entry, "detached")
        return {"released": [device]}

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.check_pods()
                self.ledger.journal.prepare_spares()  # off the start path: attaches use them up
            except Exception:
                log.exception("netns watch pass failed")
