"""3,000 runtime requests through the NRI plugin with the real nri, dra and netns processes: every
request succeeds, and no service's fds, sockets or threads grow with the number of requests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..soak import Soak

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the netns worker keeps NET_ADMIN/SYS_ADMIN: needs root"),
]

WARM_UP = 400
REQUESTS = 3000
# Measured after the warm-up: what is allowed to differ between two quiet moments (a bus client
# connecting, a reconnect of a subscriber, a background thread's own short life).
FD_SLACK = 6
THREAD_SLACK = 3


@pytest.fixture
def soak(tmp_path: Path) -> Iterator[Soak]:
    s = Soak(tmp_path)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_nothing_grows_with_runtime_requests(soak: Soak) -> None:
    soak.drive(WARM_UP)
    before = soak.usage()
    soak.drive(REQUESTS)
    after = soak.usage()
    growth = {
        s: (
            after[s].fds - before[s].fds,
            after[s].sockets - before[s].sockets,
            after[s].threads - before[s].threads,
        )
        for s in before
    }
    report = ", ".join(f"{s}: +{g[0]} fds +{g[1]} sockets +{g[2]} threads" for s, g in growth.items())
    assert soak.failed == 0, f"{soak.failed} of {soak.requests} requests failed: {soak.errors}; {report}"
    for service, (fds, sockets, threads) in growth.items():
        assert fds <= FD_SLACK and sockets <= FD_SLACK and threads <= THREAD_SLACK, (
            f"{service} grew over {REQUESTS} requests: {report}"
        )
