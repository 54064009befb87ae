"""Fixtures of the kernel tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker
from workerproc import WorkerNode


@pytest.fixture
def tb() -> Iterator[Testbed]:
    """A node netns with an uplink (a test module may define its own)."""
    bed = Testbed("tnw")
    try:
        bed.add_uplink("tnwup0")
        yield bed
    finally:
        bed.close()


@pytest.fixture
def worker(tb: Testbed, tmp_path: Path) -> Iterator[NetnsWorker]:
    """A worker in this process on tb's node netns; its notifications in `worker.events`."""
    events: list[dict] = []
    w = NetnsWorker(tmp_path, host_netns=tb.node_path, publish=lambda _t, b: events.append(b))
    w.events = events  # type: ignore[attr-defined]
    w.start(watch_interval=0)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def worker_node(tmp_path: Path) -> Iterator[WorkerNode]:
    tb = Testbed("tnk")
    try:
        yield WorkerNode(tb, str(tmp_path / "run"), str(tmp_path / "state"), tmp_path)
    finally:
        tb.close()
