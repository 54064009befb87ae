"""Device taints (KEP-5055) in discovery: which NIC is tainted, with what, and how slices hold them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dranet.services.discovery.model import Device, LinkInfo
from dranet.services.discovery.slices import NodeRef, desired_contents, plan
from dranet.services.discovery.taints import (
    LINK_DOWN,
    TAINT_KEY,
    TaintClock,
    device_reasons,
    link_lost,
)
from dranet.services.netns.health import RESTORE_FAILED, DeviceHealth

from localcluster import apivalidation

NODE = NodeRef("node-a", "uid-1")


def link(name: str, *, up: bool, carrier: bool) -> LinkInfo:
    return LinkInfo(index=1, name=name, admin_up=up, carrier=carrier)


def test_only_an_up_link_without_carrier_is_lost() -> None:
    assert link_lost(link("eth1", up=True, carrier=False))
    assert not link_lost(link("eth1", up=True, carrier=True))
    # Left down by the administrator: it is brought up in the pod, nothing to warn about.
    assert not link_lost(link("eth1", up=False, carrier=False))


def test_reasons_come_from_the_link_and_from_the_worker() -> None:
    devices = [Device("eth1", "eth1"), Device("eth2", "eth2"), Device("pci-0000-8a-00-0", "")]
    links = [link("eth1", up=True, carrier=False), link("eth2", up=True, carrier=True)]
    reasons = device_reasons(devices, links, {"pci-0000-8a-00-0": RESTORE_FAILED})
    assert reasons == {"eth1": [LINK_DOWN], "pci-0000-8a-00-0": [RESTORE_FAILED]}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 17, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_time_added_stays_while_the_reason_does_and_a_new_one_is_new() -> None:
    clock = Clock()
    taints = TaintClock(clock)
    first = taints.taints({"eth1": [LINK_DOWN]})
    want = {"key": TAINT_KEY, "value": LINK_DOWN, "effect": "NoSchedule", "timeAdded": "2026-12-03T17:00:00Z"}
    assert first == {"eth1": (want,)}
    clock.now += timedelta(seconds=30)
    assert taints.taints({"eth1": [LINK_DOWN]}) == first  # a rescan writes nothing new
    assert taints.taints({}) == {}  # the link came back: the taint goes
    clock.now += timedelta(seconds=30)
    again = taints.taints({"eth1": [LINK_DOWN, RESTORE_FAILED]})
    assert [t["timeAdded"] for t in again["eth1"]] == ["2026-12-03T17:01:00Z"] * 2
    for t in again["eth1"]:  # the local API server's rules (the real API's validateDeviceTaint)
        assert apivalidation.validate_device_taint("t", t) == []


def tainted(name: str) -> Device:
    added = "2026-12-03T17:00:00Z"
    taint = {"key": TAINT_KEY, "value": LINK_DOWN, "effect": "NoSchedule", "timeAdded": added}
    return Device(name, name, taints=(taint,))


def test_a_taint_is_in_the_slice_and_a_change_of_taints_is_one_write() -> None:
    devices = [Device(f"eth{i}", f"eth{i}") for i in range(3)]
    desired = desired_contents(devices, NODE.name, "dra.net")
    state = {o["metadata"]["name"]: o for o in plan(desired, {}, NODE, "dra.net").create}
    devices[1] = tainted("eth1")
    desired = desired_contents(devices, NODE.name, "dra.net")
    p = plan(desired, state, NODE, "dra.net", 1)
    assert len(p.update) == 1 and not p.create and not p.delete
    (dev,) = [d for d in p.update[0]["spec"]["devices"] if d["name"] == "eth1"]
    assert dev["taints"] == [dict(devices[1].taints[0])]
    assert all("taints" not in d for d in p.update[0]["spec"]["devices"] if d["name"] != "eth1")


def test_a_pool_with_a_taint_has_at_most_64_devices_per_slice() -> None:
    """The API refuses a slice of more than 64 devices when one of them has taints."""
    devices = [Device(f"eth{i:03d}", f"eth{i:03d}") for i in range(100)]
    assert [len(v) for v in desired_contents(devices, NODE.name, "dra.net").values()] == [100]
    devices[5] = tainted("eth005")
    slices = desired_contents(devices, NODE.name, "dra.net")
    assert [len(v) for v in slices.values()] == [64, 36]
    p = plan(slices, {}, NODE, "dra.net")
    for obj in p.create:
        assert apivalidation.validate_resource_slice(obj) == [], obj["metadata"]["name"]


def test_the_inventory_wire_form_carries_taints() -> None:
    dev = tainted("eth1")
    assert Device.from_wire(dev.to_wire()) == dev
    assert "taints" not in Device("eth2", "eth2").to_wire()


def test_the_worker_reports_a_device_until_it_is_healthy_again() -> None:
    health = DeviceHealth()
    assert health.mark("nic-a", "eth1", RESTORE_FAILED, "EBUSY")
    assert not health.mark("nic-a", "eth1", RESTORE_FAILED, "EBUSY again")  # no news: no publish
    assert health.snapshot() == {
        "devices": [{"device": "nic-a", "ifname": "eth1", "reason": RESTORE_FAILED, "message": "EBUSY again"}]
    }
    assert health.clear("nic-a") and not health.clear("nic-a")
    assert health.snapshot() == {"devices": []}
