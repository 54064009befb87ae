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


def standby_marker(runtime_dir: Path, service: str, instance: str) -> Path:
    """The file a waiting instance keeps while it stands by: `dranet status` in the new driver pod
    reads it, so that the new pod is ready while it waits (the old pod is deleted only once the new
    one is ready: a readiness that depended on the old pod's services would stall the update
    whenever the old version is broken, which is when an update is needed most)."""
    return runtime_dir / f"{service}.standby-{instance}"


def standing_by(marker: Path) -> bool:
    """The marker exists and the instance that wrote it still holds its flock (a killed one's
    lock is gone with it). A lock, not a pid: the netns container's processes are in another pid
    namespace than the main container's `dranet status`."""
    try:
        fd = os.open(marker, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock, if it was taken
    return False


class OwnerLock:
    """The lock file is opened once, at the first try, and the descriptor is kept until release():
    a service that switched to its own uid (--run-as) since can still take the lock (the file is
    root's, 0600, in the root-owned bus dir; flock needs only the open descriptor). The same holds
    for the standby marker: written at the first try that fails, held by flock while waiting."""

    def __init__(self, path: Path, marker: Path | None = None) -> None:
        """marker: written while standing by (see standby_marker), removed once active."""
        self.path = path
        self.marker = marker
        self._fd: int | None = None
        self._marker_fd: int | None = None
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        """Take the lock if it is free (or already ours); never blocks. While it is not, the
        standby marker says so."""
        if self._held:
            return True
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._mark()
            return False
        self._held = True
        self._unmark()
        return True

    def _mark(self) -> None:
        if self.marker is None or self._marker_fd is not None:
            return
        fd = os.open(self.marker, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: nobody else holds it
        self._marker_fd = fd

    def _unmark(self) -> None:
        if self.marker is None:
            return
        try:
            self.marker.unlink(missing_ok=True)  # also one a killed instance of this pod left
        except PermissionError:
            pass  # switched uid since it was written: the closed lock below marks it stale
        if self._marker_fd is not None:
            os.close(self._marker_fd)
            self._marker_fd = None

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
        self._unmark()
        return False

    def release(self) -> None:
        self._unmark()
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        self._held = False
