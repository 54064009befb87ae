"""A scheduler stand-in for one node: allocates ResourceClaims from the published ResourceSlices.

DEVELOPMENT AND TEST TOOL. The real allocator lives in kube-scheduler; the demo and the end-to-end
tests have none, so this module plays its part for claims on one node, following the real API's
rules where it matters to a network driver:

- a request (``exactly``, or ``firstAvailable`` sub-requests in order) matches a device when every
  CEL selector of its DeviceClass and every selector of the request evaluate to true over
  ``device.driver``, ``device.attributes["<domain>"].<id>`` and ``device.capacity["<domain>"].<id>``;
  an unknown domain reads as an empty map, an unknown attribute is an error that aborts the
  allocation, as in Kubernetes;
- devices allocated to other claims are skipped (unless the request asks for admin access), and so
  are devices with an untolerated NoSchedule/NoExecute taint;
- ``allocationMode`` ExactCount honours ``count``; All takes every matching device and fails if one
  of them is busy or none matches;
- the allocation carries the results (request/driver/pool/device), the configs (the DeviceClass's,
  source FromClass, then the claim's, source FromClaim) and a nodeSelector for the node.

- consumable capacity (KEP-5075, capacity.py): a device with ``allowMultipleAllocations`` is
  shared by many allocations, each with a ``shareID`` and its ``consumedCapacity``, their sum never
  above the device's capacity; ``capacity.requests`` are adjusted by each capacity's
  ``requestPolicy``.

Not supported (refused with AllocationError, never ignored): ``constraints``.
Differences: quantities are compared as numbers (``device.capacity[..].x >= quantity("10G")``; no
``compareTo``), version attributes are strings (no ``semver()``).

The pure part (everything up to ``allocate``) takes plain dicts as the API serves them; the
``Allocator`` class at the end is the thin I/O edge over the official kubernetes client.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import cel

from localcluster import capacity as cc
from localcluster.claims import pod_owner
from localcluster.extended import ExtendedResourceError, is_special_claim_of, special_claim

RESOURCE_GROUP_VERSION = "resource.k8s.io/v1"
POD_CLAIM_NAME_ANNOTATION = "resource.kubernetes.io/pod-claim-name"
MAX_NAME = 253


class AllocationError(Exception):
    """A claim cannot be allocated; the message says why and what to change."""


# ---------------------------------------------------------------- devices and CEL


@dataclass(frozen=True)
class Candidate:
    """One published device, as CEL and the allocator see it."""

    driver: str
    pool: str
    name: str
    attributes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # domain -> id -> value
    capacity: Mapping[str, Mapping[str, int | float]] = field(default_factory=dict)
    taints: tuple[Mapping[str, Any], ...] = ()
    multi: bool = False  # allowMultipleAllocations: shared, capacity consumed per allocation
    capacities: Mapping[str, cc.Capacity] = field(default_factory=dict)  # published name -> capacity

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.driver, self.pool, self.name)


_SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")


def parse_quantity(text: str | int | float) -> int | float:
    """A Kubernetes quantity ("10G", "1Gi", "500m") as a number: int when whole."""
    if isinstance(text, bool):
        raise ValueError(f"quantity {text!r} is not a number")
    if isinstance(text, int | float):
        return text
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"quantity {text!r} is not a Kubernetes quantity (e.g. 10G, 1Gi, 500m)")
    try:
        value = Decimal(m.group(1) + (m.group(2) or "")) * Decimal(_SUFFIXES[m.group(3) or ""])
    except InvalidOperation as exc:
        raise ValueError(f"quantity {text!r} is not a number") from exc
    return int(value) if value == value.to_integral_value() else float(value)


def _attribute_value(value: Mapping[str, Any]) -> Any:
    for kind in ("string", "int", "bool", "version"):
        if kind in value:
            return value[kind]
    return None


def _split_name(qualified: str, driver: str) -> tuple[str, str]:
    domain, _, ident = qualified.rpartition("/")
    return (domain or driver, ident)


def candidates_from_slices(slices: Iterable[Mapping[str, Any]], node_name: str) -> list[Candidate]:
    """The devices of the slices that reach this node, from each pool's newest complete generation."""
    pools: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for s in slices:
        spec = s.get("spec") or {}
        pool = spec.get("pool") or {}
        pools.setdefault((spec.get("driver", ""), pool.get("name", "")), []).append(spec)
    out: list[Candidate] = []
    for (driver, pool_name), specs in sorted(pools.items()):
        newest = max(int((s.get("pool") or {}).get("generation", 0)) for s in specs)
        current = [s for s in specs if int((s.get("pool") or {}).get("generation", 0)) == newest]
        wanted = int((current[0].get("pool") or {}).get("resourceSliceCount", 1))
        if len(current) < wanted:
            continue  # incomplete pool: the real scheduler does not allocate from it either
        for spec in current:
            slice_local = _reaches(spec, node_name)
            for dev in spec.get("devices") or []:
                if not (slice_local or (spec.get("perDeviceNodeSelection") and _reaches(dev, node_name))):
                    continue
                attrs: dict[str, dict[str, Any]] = {}
                for qname, value in (dev.get("attributes") or {}).items():
                    domain, ident = _split_name(qname, driver)
                    attrs.setdefault(domain, {})[ident] = _attribute_value(value)
                caps: dict[str, dict[str, int | float]] = {}
                for qname, value in (dev.get("capacity") or {}).items():
                    domain, ident = _split_name(qname, driver)
                    caps.setdefault(domain, {})[ident] = parse_quantity(value.get("value", 0))
                out.append(
                    Candidate(
                        driver,
                        pool_name,
                        dev["name"],
                        attrs,
                        caps,
                        tuple(dev.get("taints") or ()),
                        multi=bool(dev.get("allowMultipleAllocations")),
                        capacities={
                            n: cc.parse_capacity(v, parse_quantity)
                            for n, v in (dev.get("capacity") or {}).items()
                        },
                    )
                )
    return out


def _reaches(spec: Mapping[str, Any], node_name: str) -> bool:
    if spec.get("allNodes"):
        return True
    if spec.get("nodeName"):
        return bool(spec["nodeName"] == node_name)
    for term in (spec.get("nodeSelector") or {}).get("nodeSelectorTerms") or []:
        for f in term.get("matchFields") or []:
            if (
                f.get("key") == "metadata.name"
                and f.get("operator") == "In"
                and node_name in f.get("values", [])
            ):
                return True
    return False


_DOMAIN_LOOKUP = re.compile(r"""device\.(attributes|capacity)\[\s*"([^"]*)"\s*\]""")
_PROGRAMS: dict[str, Any] = {}


class Selector:
    """One compiled CEL device selector."""

    def __init__(self, expression: str, where: str) -> None:
        self.expression = expression
        self.where = where  # e.g. "DeviceClass dranet selector #0", for error messages
        program = _PROGRAMS.get(expression)
        if program is None:
            try:
                program = cel.compile(expression)
            except Exception as exc:  # the binding raises ValueError (and wraps Rust panics)
                raise AllocationError(f"{where}: CEL expression does not compile: {exc}") from exc
            _PROGRAMS[expression] = program
        self._program = program
        # Kubernetes reads an unknown domain as an empty map: give every domain the text names one.
        self._domains = {(m.group(1), m.group(2)) for m in _DOMAIN_LOOKUP.finditer(expression)}

    def matches(self, device: Candidate) -> bool:
        attrs = {d: dict(v) for d, v in device.attributes.items()}
        caps = {d: dict(v) for d, v in device.capacity.items()}
        for kind, domain in self._domains:
            (attrs if kind == "attributes" else caps).setdefault(domain, {})
        ctx = cel.Context()
        ctx.add_function("quantity", parse_quantity)
        ctx.add_variable(
            "device",
            {
                "driver": device.driver,
                "attributes": attrs,
                "capacity": caps,
                "allowMultipleAllocations": device.multi,
            },
        )
        try:
            result = self._program.execute(ctx)
        except Exception as exc:
            raise AllocationError(
                f"{self.where}: CEL runtime error on device {device.pool}/{device.name}: {exc}; "
                'guard optional attributes with `"name" in device.attributes["domain"]`'
            ) from exc
        if not isinstance(result, bool):
            raise AllocationError(
                f"{self.where}: CEL expression must return a bool, got {result!r} on device {device.name}"
            )
        return result


# ---------------------------------------------------------------- allocation (pure)


def in_use(claims: Iterable[Mapping[str, Any]], exclude_uid: str = "") -> set[tuple[str, str, str]]:
    """Devices allocated (not for admin access, not as a share) to claims other than exclude_uid."""
    used: set[tuple[str, str, str]] = set()
    for c in claims:
        if (c.get("metadata") or {}).get("uid") == exclude_uid:
            continue
        alloc = (c.get("status") or {}).get("allocation") or {}
        for r in (alloc.get("devices") or {}).get("results") or []:
            if not r.get("adminAccess") and not r.get("shareID"):
                used.add((r.get("driver", ""), r.get("pool", ""), r.get("device", "")))
    return used


def _tolerated(taint: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


@dataclass
class _Pick:
    request: str
    devices: list[Candidate]
    admin: bool
    class_name: str
    consumed: list[dict[str, int | float] | None] = field(default_factory=list)  # per device: its share


def _pick(
    request: str,
    spec: Mapping[str, Any],
    classes: Mapping[str, Mapping[str, Any]],
    candidates: Sequence[Candidate],
    busy: set[tuple[str, str, str]],
    used: dict[tuple[str, str, str], dict[str, int | float]] | None = None,
) -> _Pick:
    class_name = spec.get("deviceClassName", "")
    dc = classes.get(class_name)
    if dc is None:
        raise AllocationError(f"request {request!r}: DeviceClass {class_name!r} not found; create it first")
    selectors = [
        Selector(s["cel"]["expression"], f"DeviceClass {class_name} selector #{i}")
        for i, s in enumerate((dc.get("spec") or {}).get("selectors") or [])
        if s.get("cel")
    ] + [
        Selector(s["cel"]["expression"], f"request {request!r} selector #{i}")
        for i, s in enumerate(spec.get("selectors") or [])
        if s.get("cel")
    ]
    admin = bool(spec.get("adminAccess"))
    tolerations = spec.get("tolerations") or []
    matching = [
        d
        for d in candidates
        if all(_tolerated(t, tolerations) for t in d.taints if t.get("effect") in ("NoSchedule", "NoExecute"))
        and all(s.matches(d) for s in selectors)
    ]
    free = [d for d in matching if admin or d.key not in busy]
    unfit = len(free)
    shares, free = _capacity_fit(request, spec, free, used if used is not None else {})
    unfit -= len(free)
    short = f" ({unfit} of them without the capacity asked or left)" if unfit else ""
    mode = spec.get("allocationMode", "ExactCount")
    if mode == "All":
        if not matching:
            raise AllocationError(f"request {request!r}: allocationMode All but no device matches")
        if len(free) < len(matching):
            taken = sorted(d.name for d in matching if d not in free)
            raise AllocationError(
                f"request {request!r}: allocationMode All but {', '.join(taken)} already allocated"
            )
        return _Pick(request, free, admin, class_name, [shares[d.key] for d in free])
    count = int(spec.get("count", 1))
    if len(free) < count:
        raise AllocationError(
            f"request {request!r}: needs {count} device(s) of class {class_name!r}, "
            f"{len(matching)} match and {len(free)} of them are free on this node{short}"
        )
    return _Pick(request, free[:count], admin, class_name, [shares[d.key] for d in free[:count]])


def _capacity_fit(
    request: str,
    spec: Mapping[str, Any],
    devices: list[Candidate],
    used: Mapping[tuple[str, str, str], Mapping[str, int | float]],
) -> tuple[dict[tuple[str, str, str], dict[str, int | float] | None], list[Candidate]]:
    """The devices that can serve the request's capacity, each with what its share consumes (None
    for a device allocated whole)."""
    try:
        asked = {
            n: parse_quantity(q) for n, q in ((spec.get("capacity") or {}).get("requests") or {}).items()
        }
    except ValueError as exc:
        raise AllocationError(f"request {request!r}: capacity.requests: {exc}") from None
    shares: dict[tuple[str, str, str], dict[str, int | float] | None] = {}
    fit: list[Candidate] = []
    for d in devices:
        if d.multi:
            share = cc.consumption(d.capacities, asked, used.get(d.key, {}), d.driver)
            if share is None:
                continue
            shares[d.key] = share
        elif asked and not cc.satisfies(d.capacities, asked, d.driver):
            continue
        else:
            shares[d.key] = None
        fit.append(d)
    return shares, fit


def node_selector(node_name: str) -> dict[str, Any]:
    return {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
        ]
    }


def allocate(
    claim: Mapping[str, Any],
    classes: Mapping[str, Mapping[str, Any]],
    candidates: Sequence[Candidate],
    busy: set[tuple[str, str, str]],
    node_name: str,
    used: Mapping[tuple[str, str, str], Mapping[str, int | float]] | None = None,
) -> dict[str, Any]:
    """The `status.allocation` for claim on node_name. Raises AllocationError.
    used: what the shares allocated so far consume of each shared device (capacity.consumed_by_claims)."""
    devices_spec = (claim.get("spec") or {}).get("devices") or {}
    if devices_spec.get("constraints"):
        raise AllocationError(
            "claim constraints (matchAttribute/distinctAttribute) are not supported locally"
        )
    taken = set(busy)
    consumed = {k: dict(v) for k, v in (used or {}).items()}
    picks: list[_Pick] = []
    for req in devices_spec.get("requests") or []:
        name = req.get("name", "")
        if req.get("exactly"):
            pick = _pick(name, req["exactly"], classes, candidates, taken, consumed)
        elif req.get("firstAvailable"):
            errors = []
            for sub in req["firstAvailable"]:
                try:
                    pick = _pick(f"{name}/{sub.get('name', '')}", sub, classes, candidates, taken, consumed)
                    break
                except AllocationError as exc:
                    errors.append(str(exc))
            else:
                raise AllocationError(
                    f"request {name!r}: no sub-request can be satisfied: {'; '.join(errors)}"
                )
        else:
            raise AllocationError(f"request {name!r}: needs `exactly` or `firstAvailable`")
        picks.append(pick)
        for d, share in zip(pick.devices, pick.consumed, strict=True):
            if share is not None:  # a share: later requests see what it consumes
                mine = consumed.setdefault(d.key, {})
                for n, amount in share.items():
                    mine[n] = mine.get(n, 0) + amount
            elif not pick.admin:
                taken.add(d.key)
    results = []
    configs: list[dict[str, Any]] = []
    for p in picks:
        for d, share in zip(p.devices, p.consumed, strict=True):
            r: dict[str, Any] = {"request": p.request, "driver": d.driver, "pool": d.pool, "device": d.name}
            if p.admin:
                r["adminAccess"] = True
            if share is not None:
                r.update(cc.share_result(share))
            results.append(r)
        for c in (classes[p.class_name].get("spec") or {}).get("config") or []:
            configs.append({"source": "FromClass", "requests": [p.request], **copy.deepcopy(dict(c))})
    for c in devices_spec.get("config") or []:
        configs.append({"source": "FromClaim", **copy.deepcopy(dict(c))})
    allocation: dict[str, Any] = {"devices": {"results": results}, "nodeSelector": node_selector(node_name)}
    if configs:
        allocation["devices"]["config"] = configs
    return allocation


def pod_reference(pod: Mapping[str, Any]) -> dict[str, str]:
    meta = pod.get("metadata") or {}
    return {"resource": "pods", "name": meta.get("name", ""), "uid": meta.get("uid", "")}


def claim_from_template(
    pod: Mapping[str, Any], pod_claim_name: str, template: Mapping[str, Any], suffix: str | None = None
) -> dict[str, Any]:
    """The ResourceClaim the resourceclaim controller would create for a pod from a template."""
    meta = pod.get("metadata") or {}
    tmpl_spec = template.get("spec") or {}
    tmpl_meta = tmpl_spec.get("metadata") or {}
    base = f"{meta.get('name', 'pod')}-{pod_claim_name}"[: MAX_NAME - 6].rstrip("-.")
    return {
        "apiVersion": RESOURCE_GROUP_VERSION,
        "kind": "ResourceClaim",
        "metadata": {
            "name": f"{base}-{suffix or secrets.token_hex(2)}",
            "namespace": meta.get("namespace", "default"),
            "labels": dict(tmpl_meta.get("labels") or {}),
            "annotations": {
                **(tmpl_meta.get("annotations") or {}),
                POD_CLAIM_NAME_ANNOTATION: pod_claim_name,
            },
            "ownerReferences": [pod_owner(meta)],
        },
        "spec": copy.deepcopy(tmpl_spec.get("spec") or {}),
    }


# ---------------------------------------------------------------- the I/O edge


class Allocator:
    """Allocates and reserves a pod's claims against an API server, as the scheduler would.

    ``api_client`` is the official client's ApiClient (e.g. from dranet.settings.kube_api_client or
    kubernetes.config.new_client_from_config). Objects are read and written as plain JSON dicts.
    """

    def __init__(self, api_client: Any, node_name: str, *, retries: int = 5) -> None:
        from kubernetes import client

        self.node_name = node_name
        # Any: objects go in and out as plain dicts, which the client's model types do not describe.
        self.core: Any = client.CoreV1Api(api_client)
        self.resource: Any = client.ResourceV1Api(api_client)
        self.retries = retries

    @staticmethod
    def _json(response: Any) -> Any:
        return json.loads(response.data)

    def _claims_all(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._json(
            self.resource.list_resource_claim_for_all_namespaces(_preload_content=False)
        )["items"]
        return items

    def _candidates(self) -> list[Candidate]:
        slices = self._json(self.resource.list_resource_slice(_preload_content=False))["items"]
        return candidates_from_slices(slices, self.node_name)

    def _classes(self) -> dict[str, dict[str, Any]]:
        items = self._json(self.resource.list_device_class(_preload_content=False))["items"]
        return {c["metadata"]["name"]: c for c in items}

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod: dict[str, Any] = self._json(
            self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        )
        return pod

    def read_claim(self, namespace: str, name: str) -> dict[str, Any]:
        claim: dict[str, Any] = self._json(
            self.resource.read_namespaced_resource_claim(name, namespace, _preload_content=False)
        )
        return claim

    def pod_claim_names(self, pod: Mapping[str, Any]) -> list[str]:
        """The ResourceClaim names the pod uses, creating claims from templates when needed."""
        meta = pod.get("metadata") or {}
        ns = meta.get("namespace", "default")
        statuses = {
            s.get("name"): s.get("resourceClaimName")
            for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
        }
        names = []
        for ref in (pod.get("spec") or {}).get("resourceClaims") or []:
            if ref.get("resourceClaimName"):
                names.append(ref["resourceClaimName"])
                continue
            if statuses.get(ref["name"]):
                names.append(statuses[ref["name"]])
                continue
            existing = self._generated_claim(pod, ref["name"])
            if existing is None:
                template = self._json(
                    self.resource.read_namespaced_resource_claim_template(
                        ref["resourceClaimTemplateName"], ns, _preload_content=False
                    )
                )
                body = claim_from_template(pod, ref["name"], template)
                existing = self._json(
                    self.resource.create_namespaced_resource_claim(ns, body, _preload_content=False)
                )
            names.append(existing["metadata"]["name"])
        return names

    def _generated_claim(self, pod: Mapping[str, Any], pod_claim_name: str) -> dict[str, Any] | None:
        meta = pod.get("metadata") or {}
        items = self._json(
            self.resource.list_namespaced_resource_claim(
                meta.get("namespace", "default"), _preload_content=False
            )
        )["items"]
        for c in items:
            cm = c.get("metadata") or {}
            owners = [o.get("uid") for o in cm.get("ownerReferences") or []]
            if (
                meta.get("uid") in owners
                and (cm.get("annotations") or {}).get(POD_CLAIM_NAME_ANNOTATION) == pod_claim_name
            ):
                return dict(c)
        return None

    def allocate_claim(
        self, namespace: str, name: str, pod: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Allocate the claim (if it is not yet) and reserve it for pod; returns the stored claim."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(self.retries):
            claim = self.read_claim(namespace, name)
            status = dict(claim.get("status") or {})
            if not status.get("allocation"):
                claims = self._claims_all()
                uid = claim["metadata"]["uid"]
                status["allocation"] = allocate(
                    claim,
                    self._classes(),
                    self._candidates(),
                    in_use(claims, exclude_uid=uid),
                    self.node_name,
                    cc.consumed_by_claims(claims, parse_quantity, exclude_uid=uid),
                )
            if pod is not None:
                ref = pod_reference(pod)
                reserved = [r for r in status.get("reservedFor") or [] if r.get("uid") != ref["uid"]]
                if reserved:
                    raise AllocationError(
                        f"claim {namespace}/{name} is already reserved for {reserved[0].get('name')}; "
                        "a network device can be in one pod at a time"
                    )
                status["reservedFor"] = [ref]
            claim["status"] = status
            try:
                return dict(
                    self._json(
                        self.resource.replace_namespaced_resource_claim_status(
                            name, namespace, claim, _preload_content=False
                        )
                    )
                )
            except ApiException as exc:
                if exc.status != 409 or attempt == self.retries - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))  # someone else wrote the claim: read it again
        raise AssertionError("not reached")

    def allocate_pod(self, pod: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Allocate and reserve every claim of the pod, the one made for its extended resources
        too; returns the stored claims."""
        ns = (pod.get("metadata") or {}).get("namespace", "default")
        claims = [self.allocate_claim(ns, n, pod) for n in self.pod_claim_names(pod)]
        special = self.extended_resource_claim(pod)
        if special is not None:
            claims.append(special)
        return claims

    # ------------------------------------------------------------ extended resources (extended.py)

    def _special_claim_name(self, pod: Mapping[str, Any]) -> str | None:
        ns = (pod.get("metadata") or {}).get("namespace", "default")
        items = self._json(self.resource.list_namespaced_resource_claim(ns, _preload_content=False))["items"]
        return next((c["metadata"]["name"] for c in items if is_special_claim_of(c, pod)), None)

    def extended_resource_claim(self, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        """As the scheduler's PreBind does for a pod with extended resources backed by DRA: create
        the special claim (once), allocate and reserve it, and record
        pod.status.extendedResourceClaimStatus (also in `pod` when it is a dict, as a kubelet's
        informer would see it). None when the pod requests no extended resource. Raises
        AllocationError (e.g. for a resource no class serves)."""
        try:
            made = special_claim(pod, self._classes().values())
        except ExtendedResourceError as exc:
            raise AllocationError(str(exc)) from None
        if made is None:
            return None
        body, mappings = made
        meta = pod.get("metadata") or {}
        ns = meta.get("namespace", "default")
        name = self._special_claim_name(pod)
        if name is None:
            created = self.resource.create_namespaced_resource_claim(ns, body, _preload_content=False)
            name = self._json(created)["metadata"]["name"]
        claim = self.allocate_claim(ns, name, pod)
        stored = self.read_pod(ns, meta.get("name", ""))
        status = {"resourceClaimName": name, "requestMappings": mappings}
        stored.setdefault("status", {})["extendedResourceClaimStatus"] = status
        self.core.replace_namespaced_pod_status(meta.get("name", ""), ns, stored, _preload_content=False)
        if isinstance(pod, dict):
            pod.setdefault("status", {})["extendedResourceClaimStatus"] = status
        return claim

    def release_pod(self, pod: Mapping[str, Any], *, delete_generated: bool = True) -> None:
        """After the pod is gone: unreserve its claims and deallocate them (as the resourceclaim
        controller does), and delete the claims generated for it from templates."""
        from kubernetes.client.exceptions import ApiException

        meta = pod.get("metadata") or {}
        ns = meta.get("namespace", "default")
        for name in self.pod_claim_names_existing(pod):
            for attempt in range(self.retries):
                try:
                    claim = self.read_claim(ns, name)
                except ApiException as exc:
                    if exc.status == 404:
                        break
                    raise
                owners = [o.get("uid") for o in (claim["metadata"].get("ownerReferences") or [])]
                if delete_generated and meta.get("uid") in owners:
                    try:
                        self.resource.delete_namespaced_resource_claim(name, ns)
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                    break
                status = dict(claim.get("status") or {})
                status["reservedFor"] = [
                    r for r in status.get("reservedFor") or [] if r.get("uid") != meta.get("uid")
                ]
                if not status["reservedFor"]:
                    status.pop("reservedFor")
                    status.pop("allocation", None)
                    status.pop("devices", None)
                claim["status"] = status
                try:
                    self.resource.replace_namespaced_resource_claim_status(
                        name, ns, claim, _preload_content=False
                    )
                    break
                except ApiException as exc:
                    if exc.status != 409 or attempt == self.retries - 1:
                        raise
                    time.sleep(0.05 * (attempt + 1))

    def pod_claim_names_existing(self, pod: Mapping[str, Any]) -> list[str]:
        """Like pod_claim_names, without creating anything; with the extended resources' claim."""
        special = self._special_claim_name(pod)
        names = [special] if special else []
        for ref in (pod.get("spec") or {}).get("resourceClaims") or []:
            if ref.get("resourceClaimName"):
                names.append(ref["resourceClaimName"])
            else:
                c = self._generated_claim(pod, ref["name"])
                if c is not None:
                    names.append(c["metadata"]["name"])
        return names
