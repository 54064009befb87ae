"""One active instance of each service per node: the owner lock.

During a rolling update (DaemonSet maxSurge > 0) two driver pods run on a node side by side and
share the node's bus directory, state directories and runtime socket. Two nri plugins would both
attach a pod's NICs, two netns workers would both write the attachments journal, two discoveries
would both write the slices, and a bus socket bound by the second would replace the first's. So
each service takes an exclusive lock, `<runtime dir>/<service>.lock` (flock), before it binds its
bus sockets or acts on anything; the instance that holds it owns every pod of the node for that
service, the other waits (standby). The kernel releases the lock when the owner exits, however it
exits (SIGTERM, crash, SIGKILL), and the waiting instance takes over: ownership passes whole, for
all pods at once, never per pod.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

POLL = 0.2  # seconds between tries while another instance owns the service


class OwnerLock:
    """The lock file is opened once, at the first try, and the descriptor is kept until release():
    a service that switched to its own uid (--run-as) since can still take the lock (the file is
    root's, 0600, in the root-owned bus dir; flock needs only the open descriptor)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        """Take the lock if it is free (or already ours); never blocks."""
        if self._held:
            return True
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._held = True
        return True

    def acquire(self, stop: threading.Event, what: str) -> bool:
        """Wait until the lock is ours (True) or `stop` is set (False)."""
        if self.try_acquire():
            return True
        log.warning(
            "another instance is active on this node; standing by until it exits",
            extra={"service": what, "lock": str(self.path)},
        )
        while not stop.wait(POLL):
            if self.try_acquire():
                log.info("the other instance exited; this one is active now", extra={"service": what})
                return True
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        self._held = False
