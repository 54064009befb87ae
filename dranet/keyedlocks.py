"""One lock per key (a pod UID), kept only while somebody holds or waits for it.

A node sees an unbounded number of pods over its life; a plain dict of locks would grow with each
one. Here the map holds an entry per key in use, so it is bounded by the calls in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class KeyedLocks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str, timeout: float | None = None) -> Iterator[bool]:
        """Yields whether the lock was taken (always True without a timeout)."""
        with self._lock:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        got = lock.acquire() if timeout is None else lock.acquire(timeout=max(timeout, 0.0))
        try:
            yield got
        finally:
            if got:
                lock.release()
            with self._lock:
                lock, users = self._locks[key]
                if users > 1:
                    self._locks[key] = (lock, users - 1)
                else:
                    del self._locks[key]

    def __len__(self) -> int:
        """Keys in use now (for tests and metrics)."""
        with self._lock:
            return len(self._locks)
