"""Devices -> ResourceSlice objects for one node-local pool (pure).

- One pool, named after the node; at least one slice even with no devices (an empty pool is
  not the same as no pool).
- At most 128 devices per slice (64 when a device would use list attributes, taints or counters;
  we publish none of those, so 128 applies).
- Devices are sorted by name and cut into consecutive chunks, so the result is deterministic.
- Slice names are deterministic too, `<node>-<driver>-<n>`, so a restarted publisher finds and
  updates its own slices instead of creating duplicates.
- Every slice is owned by the Node object, so deleting the node removes its slices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .model import AttrValue, Device

MAX_DEVICES_PER_SLICE = 128
MAX_NAME = 253
API_VERSION = "resource.k8s.io/v1"


def api_attribute(value: AttrValue) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    return {"string": value}


def api_device(dev: Device) -> dict[str, Any]:
    return {"name": dev.name, "attributes": {k: api_attribute(v) for k, v in sorted(dev.attributes.items())}}


def slice_name(node: str, driver: str, index: int) -> str:
    name = f"{node}-{driver}-{index}".lower()
    if len(name) <= MAX_NAME:
        return name
    # Very long node names: keep a prefix and make it unique with a short hash.
    digest = hashlib.sha256(f"{node}/{driver}".encode()).hexdigest()[:10]
    suffix = f"-{digest}-{index}"
    return name[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def chunk_devices(devices: Sequence[Device], per_slice: int = MAX_DEVICES_PER_SLICE) -> list[list[Device]]:
    ordered = sorted(devices, key=lambda d: d.name)
    if not ordered:
        return [[]]
    return [list(ordered[i : i + per_slice]) for i in range(0, len(ordered), per_slice)]


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


def desired_contents(devices: Sequence[Device], node: str, driver: str) -> dict[str, list[dict[str, Any]]]:
    """Slice name -> its device list (API form), for the allocatable devices."""
    chunks = chunk_devices([d for d in devices if d.allocatable])
    return {slice_name(node, driver, i): [api_device(d) for d in chunk] for i, chunk in enumerate(chunks)}


@dataclass(frozen=True)
class Plan:
    """What to write to reach the desired state: full objects to create/update, names to delete."""

    generation: int
    create: list[dict[str, Any]]
    update: list[dict[str, Any]]
    delete: list[str]

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def plan(
    desired: Mapping[str, list[dict[str, Any]]],
    existing: Mapping[str, Mapping[str, Any]],
    node: NodeRef,
    driver: str,
    last_generation: int = 0,
) -> Plan:
    """Compare desired device lists with the slices on the server (name -> object).

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
        return (
            spec.get("devices", []) == desired[name]
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
    names = list(desired)
    create, update = [], []
    for name in write:
        index = names.index(name)
        obj = build_slice(node, driver, index, [], generation, count)
        obj["spec"]["devices"] = desired[name]
        if name in existing:
            rv = existing[name].get("metadata", {}).get("resourceVersion")
            if rv:
                obj["metadata"]["resourceVersion"] = rv
            update.append(obj)
        else:
            create.append(obj)
    return Plan(generation, create, update, stale)


def _owner_ok(obj: Mapping[str, Any], node: NodeRef) -> bool:
    if not node.uid:
        return True
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("kind") == "Node" and r.get("uid") == node.uid for r in refs)
