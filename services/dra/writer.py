"""What the dra service's background writers (claim status, Events) share: a daemon thread woken
through a condition, a clean stop, and jittered exponential backoff for retries."""

from __future__ import annotations

import abc
import threading

from dranet.backoff import backoff_delay


class BackgroundWriter(abc.ABC):
    """Subclasses implement _run(): loop until self._stop is set, waiting on self._lock."""

    def __init__(self, thread_name: str, *, initial_backoff: float, max_backoff: float) -> None:
        self._initial = initial_backoff
        self._max = max_backoff
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(5)

    def backoff(self, attempts: int) -> float:
        """Seconds before retry number `attempts` (1-based), with +-20% jitter so writers spread out."""
        return backoff_delay(attempts, self._initial, self._max, jitter=0.2)

    @abc.abstractmethod
    def _run(self) -> None:
        """The writer loop; returns when self._stop is set."""
