import copy
from typing import Any

from dranet.services.discovery.model import Device
from dranet.services.discovery.slices import (
    MAX_DEVICES_PER_SLICE,
    NodeRef,
    api_attribute,
    build_slice,
    chunk_devices,
    desired_contents,
    plan,
    slice_name,
)

NODE = NodeRef("node-a", "uid-1")
DRIVER = "dra.net"


def devs(n: int, prefix: str = "eth") -> list[Device]:
    return [
        Device(f"{prefix}{i:04d}", f"{prefix}{i:04d}", attributes={"dra.net/mtu": 1500}) for i in range(n)
    ]


def server_state(p: Any, existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply a plan to a fake server state the way the API would."""
    state = copy.deepcopy(existing or {})
    for name in p.delete:
        state.pop(name)
    for obj in p.create + p.update:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = "1"
        state[obj["metadata"]["name"]] = obj
    return state


def test_attribute_forms() -> None:
    assert api_attribute(True) == {"bool": True}
    assert api_attribute(3) == {"int": 3}
    assert api_attribute("x") == {"string": "x"}


def test_300_devices_split_into_three_slices() -> None:
    chunks = chunk_devices(devs(300))
    assert [len(c) for c in chunks] == [128, 128, 44]
    desired = desired_contents(devs(300), NODE.name, DRIVER)
    p = plan(desired, {}, NODE, DRIVER)
    assert p.generation == 1 and not p.update and not p.delete
    assert [o["metadata"]["name"] for o in p.create] == [
        "node-a-dra.net-0",
        "node-a-dra.net-1",
        "node-a-dra.net-2",
    ]
    seen = []
    for obj in p.create:
        spec = obj["spec"]
        assert spec["pool"] == {"name": "node-a", "generation": 1, "resourceSliceCount": 3}
        assert spec["nodeName"] == "node-a" and spec["driver"] == "dra.net"
        assert len(spec["devices"]) <= MAX_DEVICES_PER_SLICE
        assert obj["metadata"]["ownerReferences"][0] == {
            "apiVersion": "v1",
            "kind": "Node",
            "name": "node-a",
            "uid": "uid-1",
            "controller": True,
        }
        seen += [d["name"] for d in spec["devices"]]
    assert seen == sorted(d.name for d in devs(300))


def test_no_devices_still_one_slice() -> None:
    desired = desired_contents([], NODE.name, DRIVER)
    p = plan(desired, {}, NODE, DRIVER)
    assert len(p.create) == 1 and p.create[0]["spec"]["devices"] == []


def test_only_allocatable_devices_are_published() -> None:
    d = devs(3)
    d[1].allocatable = False
    desired = desired_contents(d, NODE.name, DRIVER)
    assert [x["name"] for x in next(iter(desired.values()))] == ["eth0000", "eth0002"]


def test_no_change_no_write() -> None:
    desired = desired_contents(devs(300), NODE.name, DRIVER)
    state = server_state(plan(desired, {}, NODE, DRIVER))
    again = plan(desired, state, NODE, DRIVER)
    assert again.empty and again.generation == 1


def test_one_slice_changed_keeps_generation() -> None:
    d = devs(300)
    state = server_state(plan(desired_contents(d, NODE.name, DRIVER), {}, NODE, DRIVER))
    d[299].attributes["dra.net/mtu"] = 9000  # last slice only
    p = plan(desired_contents(d, NODE.name, DRIVER), state, NODE, DRIVER)
    assert p.generation == 1 and [o["metadata"]["name"] for o in p.update] == ["node-a-dra.net-2"]
    assert p.update[0]["metadata"]["resourceVersion"] == "1"


def test_count_change_bumps_generation_and_rewrites_all() -> None:
    state = server_state(plan(desired_contents(devs(300), NODE.name, DRIVER), {}, NODE, DRIVER))
    p = plan(desired_contents(devs(100), NODE.name, DRIVER), state, NODE, DRIVER)
    assert p.generation == 2
    assert [o["metadata"]["name"] for o in p.update] == ["node-a-dra.net-0"]
    assert p.delete == ["node-a-dra.net-1", "node-a-dra.net-2"]
    assert p.update[0]["spec"]["pool"]["resourceSliceCount"] == 1


def test_deleted_slice_is_recreated() -> None:
    desired = desired_contents(devs(300), NODE.name, DRIVER)
    state = server_state(plan(desired, {}, NODE, DRIVER))
    del state["node-a-dra.net-1"]
    p = plan(desired, state, NODE, DRIVER)
    assert p.generation == 2  # the set of slices changed
    assert [o["metadata"]["name"] for o in p.create] == ["node-a-dra.net-1"]
    assert len(p.update) == 2


def test_all_deleted_by_kubelet_restart() -> None:
    desired = desired_contents(devs(10), NODE.name, DRIVER)
    first = plan(desired, {}, NODE, DRIVER)
    p = plan(desired, {}, NODE, DRIVER, last_generation=first.generation)
    assert [o["metadata"]["name"] for o in p.create] == [o["metadata"]["name"] for o in first.create]
    assert p.generation == 2  # never back to an older generation


def test_foreign_stale_slices_deleted() -> None:
    foreign = build_slice(NODE, DRIVER, 0, [], 5, 1)
    foreign["metadata"]["name"] = "node-a-dra.net-x7k2q"  # e.g. upstream's generateName
    p = plan(desired_contents(devs(2), NODE.name, DRIVER), {"node-a-dra.net-x7k2q": foreign}, NODE, DRIVER)
    assert p.generation == 6 and p.delete == ["node-a-dra.net-x7k2q"] and len(p.create) == 1


def test_slice_names_deterministic_and_bounded() -> None:
    assert slice_name("node-a", "dra.net", 3) == "node-a-dra.net-3"
    long = slice_name("n" * 253, "dra.net", 12)
    assert len(long) <= 253 and long.endswith("-12")
    assert long == slice_name("n" * 253, "dra.net", 12)
