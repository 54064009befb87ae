"""Restore re-checks the allowlist and the uplink rule before it renames or re-addresses anything
(issue 13, item 5): what changed while the device was in the pod decides how it comes back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed, ip_json
from dranet.services.netns.worker import NetnsWorker

from dranet.uplinks import UplinkPolicy

pytestmark = pytest.mark.kernel

DEVICE = [{"device": "r0", "ifname": "tnrr0", "config": {"interface": {"name": "eth0"}}}]


@pytest.fixture
def tb() -> Iterator[Testbed]:
    bed = Testbed("tnr")
    try:
        bed.add_nic("tnrr0", addresses=("10.61.0.2/24",))
        yield bed
    finally:
        bed.close()


def test_a_device_no_longer_allowed_comes_back_unnamed_and_unaddressed(tb: Testbed, tmp_path: Path) -> None:
    pod = tb.add_netns()
    w = NetnsWorker(tmp_path, host_netns=tb.node_path, allowed={"tnrr0"})
    try:
        w.attach("pod-r", f"/run/netns/{pod}", DEVICE)
        w.set_allowed(set())  # the inventory dropped it meanwhile
        w.detach("pod-r")
        assert tb.link("eth0", ns=pod) is None  # it left the pod all the same
        assert tb.link("tnrr0") is None  # not renamed back...
        back = [x["ifname"] for x in ip_json("link", "show", ns=tb.node) if x["ifname"].startswith("dranet")]
        assert len(back) == 1 and tb.addresses(back[0]) == []  # ...nor re-addressed
    finally:
        w.close()


def test_a_device_the_node_now_names_an_uplink_is_not_re_addressed(tb: Testbed, tmp_path: Path) -> None:
    pod = tb.add_netns()
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        w.attach("pod-r", f"/run/netns/{pod}", DEVICE)
        w.uplink_policy = UplinkPolicy(always=("tnrr*",))  # the operator made it an uplink
        w.detach("pod-r")
        assert tb.link("tnrr0") is not None and tb.addresses("tnrr0") == []
    finally:
        w.close()
