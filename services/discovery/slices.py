"""Devices -> ResourceSlice objects for one node-local pool (pure).

- One pool, named after the node; at least one slice even with no devices (an empty pool is
  not the same as no pool).
- At most 128 devices per slice; 64 while a device of the pool has taints (taints.py; the API's
  limit for a slice with taints or counters), so a taint never makes a slice invalid.
- Stable chunking (assign): a device stays in the slice it is in on the server; a new device goes
  into the first slice with room, else a new slice; a slice left empty is deleted (one empty slice
  stays when there are no devices). Adding or removing one device rewrites only its slice. With
  nothing on the server, devices are sorted by name and cut into consecutive chunks.
- Slice names are deterministic too, `<node>-<driver>-<n>`, so a restarted publisher finds and
  updates its own slices instead of creating duplicates.
- What the server stored is compared after normalisation (Accepted): when the server dropped or
  defaulted a field of what we wrote, its stored form counts as equal, so that never causes a
  rewrite loop.
- Every slice is owned by the Node object, so deleting the node removes its slices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .model import AttrValue, Device

MAX_DEVICES_PER_SLICE = 128
MAX_DEVICES_PER_SLICE_WITH_TAINTS = 64
MAX_NAME = 253
API_VERSION = "resource.k8s.io/v1"


def api_attribute(value: AttrValue) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    return {"string": value}


def api_device(dev: Device) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": dev.name,
        "attributes": {k: api_attribute(v) for k, v in sorted(dev.attributes.items())},
    }
    if dev.taints:
        out["taints"] = [dict(t) for t in dev.taints]
    if dev.shared_capacity:  # a shared NIC (services/discovery/sharing.py)
        out.update(allowMultipleAllocations=True, capacity=dev.shared_capacity)
    return out


def slice_name(node: str, driver: str, index: int) -> str:
    name = f"{node}-{driver}-{index}".lower()
    if len(name) <= MAX_NAME:
        return name
    # Very long node names: keep a prefix and make it unique with a short hash.
    digest = hashlib.sha256(f"{node}/{driver}".encode()).hexdigest()[:10]
    suffix = f"-{digest}-{index}"
    return name[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


@dataclass(frozen=True)
class NodeRef:
    name: str
    uid: str


def build_slice(
    node: NodeRef, driver: str, index: int, devices: Sequence[Device], generation: int, count: int
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": slice_name(node.name, driver, index)}
    if node.uid:  # unknown when the Node object does not exist (yet): no owner rather than a bad one
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid, "controller": True}
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": "ResourceSlice",
        "metadata": metadata,
        "spec": {
            "driver": driver,
            "nodeName": node.name,
            "pool": {"name": node.name, "generation": generation, "resourceSliceCount": count},
            "devices": [api_device(d) for d in devices],
        },
    }


def slice_index(name: str, node: str, driver: str) -> int | None:
    """The index of one of our slice names, None for any other name."""
    head, _, tail = name.rpartition("-")
    if not tail.isdigit() or not head:
        return None
    return int(tail) if slice_name(node, driver, int(tail)) == name else None


def assign(
    names: Sequence[str], current: Mapping[int, Sequence[str]], per_slice: int = MAX_DEVICES_PER_SLICE
) -> dict[int, list[str]]:
    """Slice index -> device names: every device stays where it is (current: on the server), new
    ones fill the first slices with room, then new slices (lowest free index); empty slices are
    dropped, but there is always at least one (pure)."""
    wanted = set(names)
    out: dict[int, list[str]] = {}
    placed: set[str] = set()
    for index in sorted(current):
        keep = [n for n in current[index] if n in wanted and n not in placed][:per_slice]
        out[index] = keep
        placed.update(keep)
    new = sorted(wanted - placed)
    for index in sorted(out):
        room = per_slice - len(out[index])
        out[index] += new[:room]
        new = new[room:]
    index = 0
    while new:
        while index in out:
            index += 1
        out[index], new = new[:per_slice], new[per_slice:]
    out = {i: sorted(v) for i, v in sorted(out.items()) if v}
    return out or {0: []}


def desired_contents(
    devices: Sequence[Device],
    node: str,
    driver: str,
    existing: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Slice name -> its device list (API form), for the allocatable devices, placed stably with
    respect to the slices on the server (`existing`, name -> object)."""
    by_name = {d.name: d for d in devices if d.allocatable}
    current: dict[int, list[str]] = {}
    for name, obj in (existing or {}).items():
        index = slice_index(name, node, driver)
        if index is not None:
            current[index] = [str(d.get("name")) for d in (obj.get("spec") or {}).get("devices") or []]
    tainted = any(d.taints for d in by_name.values())
    per_slice = MAX_DEVICES_PER_SLICE_WITH_TAINTS if tainted else MAX_DEVICES_PER_SLICE
    placed = assign(sorted(by_name), current, per_slice)
    return {
        slice_name(node, driver, i): [api_device(by_name[n]) for n in names] for i, names in placed.items()
    }


@dataclass(frozen=True)
class Delete:
    """A slice to delete, with the uid and resourceVersion we saw (preconditions)."""

    name: str
    uid: str = ""
    resource_version: str = ""


# slice name -> (the devices we wrote, the devices the server stored from them)
Accepted = Mapping[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]


@dataclass(frozen=True)
class Plan:
    """What to write to reach the desired state: full objects to create/update, slices to delete."""

    generation: int
    create: list[dict[str, Any]]
    update: list[dict[str, Any]]
    delete: list[Delete]

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def plan(
    desired: Mapping[str, list[dict[str, Any]]],
    existing: Mapping[str, Mapping[str, Any]],
    node: NodeRef,
    driver: str,
    last_generation: int = 0,
    accepted: Accepted | None = None,
) -> Plan:
    """Compare desired device lists with the slices on the server (name -> object).

    accepted: what the server stored for what we wrote last; a stored form equal to it counts as
    the desired content (the server may drop or default fields).

    Generation rule (the same as the Go helper's controller): unchanged when the set of slices is
    the same and at most one slice's content changed; otherwise bumped, and every slice is written
    with the new generation so consumers never mix two versions of the pool.
    """
    generations = [int(o.get("spec", {}).get("pool", {}).get("generation", 0)) for o in existing.values()]
    # Never go back: slices wiped behind our back are recreated with a newer generation.
    current = max([*generations, last_generation]) if generations else last_generation
    count = len(desired)

    def same(name: str) -> bool:
        obj = existing.get(name)
        if obj is None:
            return False
        spec = obj.get("spec", {})
        pool = spec.get("pool", {})
        stored = spec.get("devices", [])
        normalised = (accepted or {}).get(name)
        return (
            (stored == desired[name] or (normalised is not None and normalised == (desired[name], stored)))
            and pool.get("generation") == current
            and pool.get("resourceSliceCount") == count
            and pool.get("name") == node.name
            and spec.get("nodeName") == node.name
            and _owner_ok(obj, node)
        )

    changed = [n for n in desired if not same(n)]
    stale = sorted(set(existing) - set(desired))
    same_set = set(existing) == set(desired)
    uniform = len(set(generations)) <= 1
    if not changed and not stale:
        return Plan(current, [], [], [])
    if existing and same_set and uniform and len(changed) <= 1 and current > 0:
        generation, write = current, changed
    else:
        generation, write = current + 1, list(desired)
    create, update = [], []
    for name in write:
        obj = build_slice(node, driver, 0, [], generation, count)
        obj["metadata"]["name"] = name
        obj["spec"]["devices"] = desired[name]
        if name in existing:
            rv = existing[name].get("metadata", {}).get("resourceVersion")
            if rv:
                obj["metadata"]["resourceVersion"] = rv
            update.append(obj)
        else:
            create.append(obj)
    deletes = [
        Delete(
            name,
            str(existing[name].get("metadata", {}).get("uid") or ""),
            str(existing[name].get("metadata", {}).get("resourceVersion") or ""),
        )
        for name in stale
    ]
    return Plan(generation, create, update, deletes)


def _owner_ok(obj: Mapping[str, Any], node: NodeRef) -> bool:
    if not node.uid:
        return True
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("kind") == "Node" and r.get("uid") == node.uid for r in refs)
