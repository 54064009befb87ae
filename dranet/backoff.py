"""Exponential backoff: the one helper every retry loop of the services uses.

Pure: it computes delays, the caller waits (on its own stop event, so a stop is never delayed).
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, initial: float, maximum: float, jitter: float = 0.0) -> float:
    """Seconds before retry number `attempt` (1-based): `initial`, doubling up to `maximum`, then
    spread by +-`jitter` (a fraction) so that many retrying clients do not move in step."""
    base = min(maximum, initial * 2 ** min(max(attempt - 1, 0), 64))
    return base * random.uniform(1.0 - jitter, 1.0 + jitter) if jitter else base


class Backoff:
    """The delays of one retry loop: next() after each failure, reset() after a success."""

    def __init__(self, initial: float, maximum: float, jitter: float = 0.0) -> None:
        self.initial, self.maximum, self.jitter = initial, maximum, jitter
        self.attempts = 0

    def next(self) -> float:
        self.attempts += 1
        return backoff_delay(self.attempts, self.initial, self.maximum, self.jitter)

    def reset(self) -> None:
        self.attempts = 0
