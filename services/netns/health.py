"""Devices whose restore could not complete, as the worker knows them (for discovery's taints).

Two reasons, each a DeviceTaint value discovery publishes under dra.net/unhealthy:
- restore-failed: the device could not be moved out of the pod netns; the entry is kept and
  retried (the watcher, the next detach, a restart's reconcile);
- restore-incomplete: the device is back on the host, but some of its settings are not.

A device is healthy again when a later restore of it completes, or when the operator releases it
(`dranet netns-release`). Kept in memory: a restarted worker finds stuck devices again in its
reconcile, and a device back on the host with a setting missing no longer counts (the next attach
snapshots it as it is).
"""

from __future__ import annotations

import threading
from typing import Any

RESTORE_FAILED = "restore-failed"
RESTORE_INCOMPLETE = "restore-incomplete"


class DeviceHealth:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bad: dict[str, dict[str, str]] = {}

    def mark(self, device: str, ifname: str, reason: str, message: str) -> bool:
        """Record the device as unhealthy; True when that changes what is reported."""
        item = {"device": device, "ifname": ifname, "reason": reason, "message": message[:1024]}
        with self._lock:
            before = self._bad.get(device)
            self._bad[device] = item
        return before is None or before["reason"] != reason

    def clear(self, device: str) -> bool:
        """The device is healthy again; True when it was not."""
        with self._lock:
            return self._bad.pop(device, None) is not None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"devices": [dict(v) for _, v in sorted(self._bad.items())]}
