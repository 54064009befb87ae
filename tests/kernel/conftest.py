"""Fixtures of the kernel tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker
from workerproc import WorkerNode


@pytest.fixture
def testbed() -> Iterator[Callable[[str], Testbed]]:
    """Makes throw-away nodes (`Testbed(prefix)`) for one test and closes them after it, also when
    the test or the set-up after making one failed: a module's own `tb` fixture makes its node
    with it and adds its NICs. The prefix names the module (each module has its own,
    test_testbed_prefixes.py checks): a netns left behind says whose it is, with several
    engineers' runs on one machine."""
    beds: list[Testbed] = []

    def make(prefix: str) -> Testbed:
        bed = Testbed(prefix)
        beds.append(bed)
        return bed

    try:
        yield make
    finally:
        for bed in reversed(beds):
            bed.close()


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    """A node netns with an uplink (a test module may define its own)."""
    bed = testbed("tnw")
    bed.add_uplink("tnwup0")
    return bed


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
def worker_node(testbed: Callable[[str], Testbed], tmp_path: Path) -> WorkerNode:
    return WorkerNode(testbed("tnk"), str(tmp_path / "run"), str(tmp_path / "state"), tmp_path)
