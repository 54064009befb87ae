"""Restore re-checks the uplink rule before it re-addresses anything, also for a device it just
moved back (issue 13, item 5): what changed while the device was in the pod decides how it comes
back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker

from dranet.uplinks import UplinkPolicy

pytestmark = pytest.mark.kernel

DEVICE = [{"device": "r0", "ifname": "tnrr0", "config": {"interface": {"name": "eth0"}}}]


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    bed = testbed("tnc")
    bed.add_nic("tnrr0", addresses=("10.61.0.2/24",))
    return bed


def test_a_device_the_node_now_names_an_uplink_is_not_re_addressed(tb: Testbed, tmp_path: Path) -> None:
    pod = tb.add_netns()
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        w.attach("pod-r", f"/run/netns/{pod}", DEVICE)
        w.queries.uplink_policy = UplinkPolicy(always=("tnrr*",))  # the operator made it an uplink
        w.detach("pod-r")
        assert tb.link("tnrr0") is not None and tb.addresses("tnrr0") == []
    finally:
        w.close()
