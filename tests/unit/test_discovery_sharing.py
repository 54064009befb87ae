"""Shared NICs in discovery: the operator's marking, and slices the API server and allocator take."""

from __future__ import annotations

import pytest
from dranet.services.discovery.model import Device
from dranet.services.discovery.sharing import BANDWIDTH, INTERFACES, Sharing, SharingError
from dranet.services.discovery.slices import NodeRef, build_slice

from localcluster import apivalidation
from localcluster.allocator import allocate, candidates_from_slices, parse_quantity
from localcluster.capacity import consumed_by_claims
from tests.unit.test_allocator import DRIVER_CLASS, claim, req

NODE = NodeRef("node-a", "uid-1")
FAST = 'attributes["dra.net/ifName"].StringValue.startsWith("fast")'


def test_flags_that_would_make_slices_invalid_are_refused_at_start() -> None:
    with pytest.raises(SharingError, match="at least 1"):
        Sharing.from_flags(FAST, 0, "", "100M")
    with pytest.raises(SharingError, match="two steps"):
        Sharing.from_flags(FAST, 4, "1G", "600M")
    with pytest.raises(SharingError, match="quantity"):
        Sharing.from_flags(FAST, 4, "ten gigs", "1G")
    assert Sharing.from_flags("false", 4, "", "1G").filter is None


def test_marked_nics_are_published_shared_and_pass_the_api_rules() -> None:
    sharing = Sharing.from_flags(FAST, 2, "10G", "1G")
    devices = []
    for ifname in ("fast0", "slow0"):
        attrs = {"dra.net/ifName": ifname}
        dev = Device(ifname, ifname, attributes=dict(attrs))
        if sharing.shared(attrs, ifname):
            dev.shared_capacity = sharing.capacity()
        devices.append(dev)
    body = build_slice(NODE, "dra.net", 0, devices, 0, 1)
    fast, slow = body["spec"]["devices"]
    assert fast["allowMultipleAllocations"] is True
    assert set(fast["capacity"]) == {INTERFACES, BANDWIDTH}
    assert "allowMultipleAllocations" not in slow and "capacity" not in slow
    assert apivalidation.validate_resource_slice(body) == []
    # The allocator shares fast0 between two claims (its interfaces), then refuses a third.
    cands = candidates_from_slices([body], NODE.name)
    shared = req("nic", "dranet", "device.allowMultipleAllocations")
    stored = []
    for i in range(2):
        c = claim(shared, uid=f"c{i}")
        c["status"] = {
            "allocation": allocate(
                c,
                {"dranet": DRIVER_CLASS},
                cands,
                set(),
                NODE.name,
                consumed_by_claims(stored, parse_quantity),
            )
        }
        stored.append(c)
    result = stored[1]["status"]["allocation"]["devices"]["results"][0]
    assert result["consumedCapacity"] == {INTERFACES: "1", BANDWIDTH: "1000000000"}
    with pytest.raises(Exception, match="capacity"):
        allocate(
            claim(shared, uid="c3"),
            {"dranet": DRIVER_CLASS},
            cands,
            set(),
            NODE.name,
            consumed_by_claims(stored, parse_quantity),
        )
