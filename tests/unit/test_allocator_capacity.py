"""Consumable capacity in the allocator stand-in (KEP-5075): shares, request policies, sums."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from localcluster.allocator import (
    AllocationError,
    allocate,
    candidates_from_slices,
    in_use,
    parse_quantity,
)
from localcluster.capacity import Capacity, adjusted, consumed_by_claims
from tests.unit.test_allocator import DRIVER_CLASS, NODE, claim, device, req, slice_

CLASSES = {"dranet": DRIVER_CLASS}


def shared_nic(interfaces: int = 3, bandwidth: dict[str, Any] | None = None) -> list[Any]:
    capacity: dict[str, Any] = {
        "dra.net/interfaces": {"value": str(interfaces), "requestPolicy": {"default": "1"}},
    }
    if bandwidth is not None:
        capacity["dra.net/bandwidth"] = bandwidth
    dev = device("nic0", "tlc0", allowMultipleAllocations=True, capacity=capacity)
    return candidates_from_slices([slice_([dev])], NODE)


def allocate_all(n: int, cands: list[Any], request: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """n claims allocated one after the other, each seeing what the earlier ones consume."""
    stored: list[dict[str, Any]] = []
    for i in range(n):
        c = claim(request or req(), uid=f"c{i}")
        used = consumed_by_claims(stored, parse_quantity)
        c["status"] = {"allocation": allocate(c, CLASSES, cands, set(), NODE, used)}
        stored.append(c)
    return stored


def result(c: dict[str, Any]) -> dict[str, Any]:
    results: list[dict[str, Any]] = c["status"]["allocation"]["devices"]["results"]
    assert len(results) == 1
    return results[0]


def test_a_shared_nic_is_allocated_until_its_interfaces_are_used_up() -> None:
    cands = shared_nic(interfaces=3)
    assert cands[0].multi
    claims = allocate_all(3, cands)
    ids = [result(c)["shareID"] for c in claims]
    assert len(set(ids)) == 3 and all(str(uuid.UUID(i)) == i for i in ids)  # RFC 4122, lower case
    assert all(result(c)["device"] == "nic0" for c in claims)
    assert all(result(c)["consumedCapacity"] == {"dra.net/interfaces": "1"} for c in claims)
    # The fourth claim would take the sum above the capacity: it stays unallocated.
    with pytest.raises(AllocationError, match="without the capacity asked or left"):
        allocate(
            claim(req(), uid="c4"), CLASSES, cands, set(), NODE, consumed_by_claims(claims, parse_quantity)
        )


def test_bandwidth_requests_are_rounded_up_by_the_policy_and_summed() -> None:
    bw = {"value": "10G", "requestPolicy": {"default": "1G", "validRange": {"min": "1G", "step": "1G"}}}
    cands = shared_nic(interfaces=8, bandwidth=bw)
    ask = req(capacity={"requests": {"dra.net/bandwidth": "2500M"}})
    claims = allocate_all(3, cands, ask)  # 3 x 3G
    assert result(claims[0])["consumedCapacity"] == {
        "dra.net/interfaces": "1",
        "dra.net/bandwidth": "3000000000",
    }
    used = consumed_by_claims(claims, parse_quantity)
    assert used[("dra.net", NODE, "nic0")]["dra.net/bandwidth"] == 9 * 10**9
    with pytest.raises(AllocationError):  # 3G more would be 12G of 10G
        allocate(claim(ask, uid="x"), CLASSES, cands, set(), NODE, used)
    # A request without a bandwidth entry takes the default (1G): it still fits.
    a = allocate(claim(req(), uid="y"), CLASSES, cands, set(), NODE, used)
    assert a["devices"]["results"][0]["consumedCapacity"]["dra.net/bandwidth"] == "1000000000"


def test_a_request_the_policy_cannot_serve_makes_the_device_ineligible() -> None:
    bw = {"value": "10G", "requestPolicy": {"default": "1G", "validValues": ["1G", "5G"]}}
    cands = shared_nic(bandwidth=bw)
    with pytest.raises(AllocationError):
        allocate(claim(req(capacity={"requests": {"dra.net/bandwidth": "6G"}})), CLASSES, cands, set(), NODE)
    a = allocate(claim(req(capacity={"requests": {"bandwidth": "2G"}})), CLASSES, cands, set(), NODE)
    assert a["devices"]["results"][0]["consumedCapacity"]["dra.net/bandwidth"] == "5000000000"
    with pytest.raises(AllocationError):  # a capacity the device does not publish
        allocate(claim(req(capacity={"requests": {"dra.net/vfs": "1"}})), CLASSES, cands, set(), NODE)


def test_without_a_policy_a_share_takes_the_whole_capacity_unless_it_asks() -> None:
    cap = Capacity(value=10)
    assert adjusted(cap, None) == 10 and adjusted(cap, 4) == 4
    ranged = Capacity(value=10, default=2, range_min=2, range_max=6, range_step=2)
    assert [adjusted(ranged, x) for x in (None, 1, 3, 6, 7)] == [2, 2, 4, 6, None]


def test_shares_do_not_make_a_device_busy_and_exclusive_ones_stay_exclusive() -> None:
    shared = shared_nic(interfaces=2)
    exclusive = candidates_from_slices([slice_([device("nic1", "tlc1")], name="t")], NODE)
    only_shared = req("nic", "dranet", "device.allowMultipleAllocations")
    claims = allocate_all(2, shared + exclusive, only_shared)
    assert {result(c)["device"] for c in claims} == {"nic0"}
    assert in_use(claims) == set()  # shares are counted by capacity, not as busy devices
    whole = allocate(
        claim(req("nic", "dranet", "!device.allowMultipleAllocations"), uid="z"),
        CLASSES,
        shared + exclusive,
        set(),
        NODE,
    )
    assert result({"status": {"allocation": whole}}) == {
        "request": "nic",
        "driver": "dra.net",
        "pool": NODE,
        "device": "nic1",
    }
