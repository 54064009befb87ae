"""The worker's ledger holds nothing per pod once the pod's calls are done."""

from __future__ import annotations

import threading
from pathlib import Path

from dranet.services.netns.ledger import Ledger


def test_pod_locks_do_not_grow_with_the_pods_served(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    for i in range(500):
        with ledger.pod_lock(f"pod-{i}"):
            pass
    assert len(ledger._pod_locks) == 0
    ledger.close()


def test_pod_lock_still_serialises_one_pod(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with ledger.pod_lock("p"):
            inside.set()
            release.wait(5)
            order.append("first")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(5)

    def second_call() -> None:
        with ledger.pod_lock("p"):
            order.append("second")

    second = threading.Thread(target=second_call)
    second.start()
    second.join(0.2)
    assert order == []  # the second call waits for the first
    release.set()
    t.join(5)
    second.join(5)
    assert order == ["first", "second"]
    ledger.close()
