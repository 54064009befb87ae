"""Fixtures of the kernel tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed
from workerproc import WorkerNode


@pytest.fixture
def worker_node(tmp_path: Path) -> Iterator[WorkerNode]:
    tb = Testbed("tnk")
    try:
        yield WorkerNode(tb, str(tmp_path / "run"), str(tmp_path / "state"), tmp_path)
    finally:
        tb.close()
