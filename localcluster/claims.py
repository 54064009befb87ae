"""ResourceClaim and DeviceClass bodies (resource.k8s.io/v1) for the demo, the e2e tests and the
benchmarks, and the owner of the claims the allocator stand-in makes for pods.

The one builder of claims that ask for NICs: every request is an `exactly` request of a device
class with CEL selectors, and may carry its own opaque dra.net config (scoped to that request);
the claim may carry one config for all its requests. tests/unit/test_localcluster_claims.py checks
what it builds against the official client's schema, so a misspelt field fails there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

API_VERSION = "resource.k8s.io/v1"
DRIVER = "dra.net"
OF_DRIVER = f'device.driver == "{DRIVER}"'  # CEL: every device of this driver


def by_ifname(ifname: str) -> str:
    """CEL: the device whose host interface is `ifname`."""
    return f'device.attributes["dra.net"].ifName == "{ifname}"'


@dataclass(frozen=True)
class Request:
    """One request of a claim: `count` devices (one when None) of `device_class` that match every
    CEL expression in `selectors`; `config` is the dra.net parameters for this request's devices;
    `capacity` asks for a share of a device that allows multiple allocations (KEP-5075, e.g.
    {"dra.net/bandwidth": "1G"}); `tolerations` tolerate device taints."""

    name: str
    selectors: Sequence[str] = ()
    device_class: str = "dranet"
    config: Mapping[str, Any] | None = None
    count: int | None = None
    capacity: Mapping[str, str] | None = None
    tolerations: Sequence[Mapping[str, Any]] = ()

    def body(self) -> dict[str, Any]:
        exactly: dict[str, Any] = {"deviceClassName": self.device_class}
        if self.selectors:
            exactly["selectors"] = [{"cel": {"expression": cel}} for cel in self.selectors]
        if self.count is not None:
            exactly["allocationMode"] = "ExactCount"
            exactly["count"] = self.count
        if self.capacity:
            exactly["capacity"] = {"requests": dict(self.capacity)}
        if self.tolerations:
            exactly["tolerations"] = [dict(t) for t in self.tolerations]
        return {"name": self.name, "exactly": exactly}


def opaque(parameters: Mapping[str, Any], requests: Sequence[str] = ()) -> dict[str, Any]:
    """A dra.net opaque config entry, for the named requests (for all when none is named)."""
    entry: dict[str, Any] = {"opaque": {"driver": DRIVER, "parameters": dict(parameters)}}
    return {"requests": list(requests), **entry} if requests else entry


def claim_spec(requests: Sequence[Request], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A claim's spec (a ResourceClaimTemplate's spec.spec too): the requests, then `config` for all
    of them, then each request's own config (the more specific one last, as the driver merges)."""
    entries = [opaque(config)] if config else []
    entries += [opaque(r.config, [r.name]) for r in requests if r.config]
    devices: dict[str, Any] = {"requests": [r.body() for r in requests]}
    if entries:
        devices["config"] = entries
    return {"devices": devices}


def resource_claim(
    name: str,
    requests: Sequence[Request],
    config: Mapping[str, Any] | None = None,
    namespace: str = "default",
) -> dict[str, Any]:
    """A ResourceClaim named `name` in `namespace` with claim_spec(requests, config)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": claim_spec(requests, config),
    }


def pod_owner(pod_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference a controller puts on a claim it makes for a pod (from a template, or for
    extended resources): the pod's deletion deletes the claim."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod_meta.get("name", ""),
        "uid": pod_meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def device_class(
    name: str,
    selectors: Sequence[str] = (OF_DRIVER,),
    config: Mapping[str, Any] | None = None,
    extended_resource: str | None = None,
) -> dict[str, Any]:
    """A DeviceClass of the devices that match every CEL expression in `selectors`, with `config`
    as the class-wide dra.net parameters (a claim's own config is merged over it), and serving
    `extended_resource` (KEP-5004: pods ask for it in their resource limits) when given."""
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": cel}} for cel in selectors]}
    if config:
        spec["config"] = [opaque(config)]
    if extended_resource:
        spec["extendedResourceName"] = extended_resource
    return {"apiVersion": API_VERSION, "kind": "DeviceClass", "metadata": {"name": name}, "spec": spec}
