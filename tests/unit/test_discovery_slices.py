import copy
from typing import Any

from dranet.services.discovery.model import Device
from dranet.services.discovery.slices import (
    MAX_DEVICES_PER_SLICE,
    Delete,
    NodeRef,
    api_attribute,
    assign,
    build_slice,
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
    for d in p.delete:
        state.pop(d.name)
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
    desired = desired_contents(devs(300), NODE.name, DRIVER)
    assert [len(v) for v in desired.values()] == [128, 128, 44]
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
    assert [d.name for d in p.delete] == ["node-a-dra.net-1", "node-a-dra.net-2"]
    assert all(d.uid == "" and d.resource_version == "1" for d in p.delete)  # preconditions
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
    assert p.generation == 6 and p.delete == [Delete("node-a-dra.net-x7k2q")] and len(p.create) == 1


def test_slice_names_deterministic_and_bounded() -> None:
    assert slice_name("node-a", "dra.net", 3) == "node-a-dra.net-3"
    long = slice_name("n" * 253, "dra.net", 12)
    assert len(long) <= 253 and long.endswith("-12")
    assert long == slice_name("n" * 253, "dra.net", 12)


def publish(devices: list[Device], state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    p = plan(desired_contents(devices, NODE.name, DRIVER, state), state, NODE, DRIVER)
    return p, server_state(p, state)


def test_adding_or_removing_one_device_rewrites_only_its_slice() -> None:
    d = devs(300)
    _, state = publish(d, {})
    # a new device, sorting in the middle: it goes into the slice with room, nothing shifts
    p, state = publish([*d, Device("eth0100a", "eth0100a")], state)
    assert p.generation == 1 and not p.create and not p.delete
    assert [o["metadata"]["name"] for o in p.update] == ["node-a-dra.net-2"]
    # a device of the first slice goes: only the first slice is written
    p, state = publish([x for x in [*d, Device("eth0100a", "eth0100a")] if x.name != "eth0005"], state)
    assert p.generation == 1 and [o["metadata"]["name"] for o in p.update] == ["node-a-dra.net-0"]
    names = {n: [x["name"] for x in o["spec"]["devices"]] for n, o in state.items()}
    assert "eth0005" not in names["node-a-dra.net-0"] and "eth0100a" in names["node-a-dra.net-2"]


def test_assign_is_stable_fills_gaps_and_drops_empty_slices() -> None:
    assert assign(["a", "b", "c"], {}, per_slice=2) == {0: ["a", "b"], 1: ["c"]}
    assert assign(["a", "b", "c", "d"], {0: ["a", "b"], 1: ["c"]}, per_slice=2) == {
        0: ["a", "b"],
        1: ["c", "d"],
    }
    assert assign(["b", "c", "x"], {0: ["a", "b"], 1: ["c"]}, per_slice=2) == {0: ["b", "x"], 1: ["c"]}
    assert assign(["c"], {0: ["a", "b"], 1: ["c"]}, per_slice=2) == {1: ["c"]}
    assert assign(["a", "b", "c", "d", "e"], {1: ["a", "b"]}, per_slice=2) == {
        0: ["c", "d"],
        1: ["a", "b"],
        2: ["e"],
    }
    assert assign([], {3: ["gone"]}) == {0: []}


def test_a_field_the_server_drops_causes_no_rewrite_loop() -> None:
    d = devs(3)
    d[0].attributes["dra.net/alphaField"] = "x"
    desired = desired_contents(d, NODE.name, DRIVER)
    (created,) = plan(desired, {}, NODE, DRIVER).create
    stored = copy.deepcopy(created)  # the server dropped the field it does not know
    del stored["spec"]["devices"][0]["attributes"]["dra.net/alphaField"]
    state = {created["metadata"]["name"]: stored}
    assert not plan(desired, state, NODE, DRIVER).empty  # without knowing what the server kept
    accepted = {created["metadata"]["name"]: (created["spec"]["devices"], stored["spec"]["devices"])}
    assert plan(desired, state, NODE, DRIVER, accepted=accepted).empty


def test_a_recreated_node_is_followed_in_owner_references() -> None:
    _, state = publish(devs(3), {})
    p = plan(desired_contents(devs(3), NODE.name, DRIVER, state), state, NodeRef(NODE.name, "uid-2"), DRIVER)
    (obj,) = p.update
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-2"
