"""A few hundred pod sandboxes through the runtime with the driver as the DaemonSet's pod, one in
ten with a claimed NIC (tests/longlife.py): every claimed pod has its NIC, and no service's fds or
threads grow with the number of pods, nor its RSS beyond an allocator's slack.
`make bench` runs 2,000 (tests/bench/bench_longlife.py) and prints the numbers."""

from __future__ import annotations

import pytest

from localcluster.node import DaemonSetCluster
from tests.e2e.test_daemonset_pod import cluster
from tests.longlife import SERVICES, LongLife, usage_table

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
__all__ = ["cluster"]  # the session's driver (tests/e2e/conftest.py), as test_daemonset_pod names it

WARM_UP = 20
PODS = 180
# What may differ between two quiet moments after the warm-up (a bus client connecting, a
# subscriber's reconnect, a background thread's short life), as in tests/integration/test_soak.py.
FD_SLACK = 6
THREAD_SLACK = 3
RSS_SLACK_KIB = 8 * 1024  # Python's allocator keeps arenas; a leak per pod shows well above this


def test_nothing_grows_over_a_few_hundred_pods(cluster: DaemonSetCluster) -> None:
    life = LongLife(cluster)
    life.drive(WARM_UP)
    start = life.usage()
    life.drive(PODS)
    end = life.usage()
    report = usage_table(start, end)
    assert life.errors == [], f"{life.errors[:5]} ({len(life.errors)} of {life.pods} pods)\n{report}"
    assert len(life.run_sandbox["claimed NIC"]) == (WARM_UP + PODS) // 10
    for s in SERVICES:
        a, b = start[s], end[s]
        assert b.fds - a.fds <= FD_SLACK, f"{s} fds grew over {PODS} pods:\n{report}"
        assert b.threads - a.threads <= THREAD_SLACK, f"{s} threads grew over {PODS} pods:\n{report}"
        assert b.rss_kib - a.rss_kib <= RSS_SLACK_KIB, f"{s} RSS grew over {PODS} pods:\n{report}"
