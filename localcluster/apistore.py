"""Object storage of the local API server stand-in (development/test tool, no HTTP here).

Keeps objects in memory with the semantics clients rely on: one cluster-wide resourceVersion counter,
uid/generation/creationTimestamp filled by the server, optimistic concurrency on update, a status
subresource that alone may change status, and a bounded history of watch events so a watcher can
resume from a resourceVersion (or learn it is too old: 410 Expired). Optionally persists to a JSON
file so a restarted server keeps its objects.
"""

from __future__ import annotations

import copy
import json
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster import apivalidation


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the URL space and how it behaves."""

    group: str  # "" for the core group
    versions: tuple[str, ...]  # served versions, storage version first
    plural: str
    kind: str
    namespaced: bool
    has_status: bool  # a /status subresource that alone may change .status
    field_selectors: tuple[str, ...] = ()  # besides metadata.name and metadata.namespace
    keep_status_on_create: bool = False

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"

    @property
    def qualified(self) -> str:
        """The group-qualified resource as error messages spell it, e.g. resourceslices.resource.k8s.io."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def api_version(self, version: str | None = None) -> str:
        v = version or self.versions[0]
        return f"{self.group}/{v}" if self.group else v


RESOURCE_GROUP = "resource.k8s.io"
RESOURCE_VERSIONS = ("v1", "v1beta2")

RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", ("v1",), "namespaces", "Namespace", False, True, ("status.phase",), True),
    ResourceType("", ("v1",), "nodes", "Node", False, True, ("spec.unschedulable",), True),
    ResourceType("", ("v1",), "pods", "Pod", True, True, ("spec.nodeName", "status.phase"), True),
    ResourceType("", ("v1",), "events", "Event", True, False,
                 ("involvedObject.kind", "involvedObject.name", "involvedObject.namespace",
                  "involvedObject.uid", "reason", "type", "source")),
    ResourceType(RESOURCE_GROUP, RESOURCE_VERSIONS, "deviceclasses", "DeviceClass", False, False),
    ResourceType(RESOURCE_GROUP, RESOURCE_VERSIONS, "resourceclaims", "ResourceClaim", True, True),
    ResourceType(RESOURCE_GROUP, RESOURCE_VERSIONS, "resourceclaimtemplates", "ResourceClaimTemplate",
                 True, False),
    ResourceType(RESOURCE_GROUP, RESOURCE_VERSIONS, "resourceslices", "ResourceSlice", False, False,
                 ("spec.nodeName", "spec.driver", "spec.pool.name")),
)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class StoreError(Exception):
    """A request the store refuses: HTTP code, metav1 reason, message and optional details."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}


def not_found(rt: ResourceType, name: str) -> StoreError:
    return StoreError(404, "NotFound", f'{rt.qualified} "{name}" not found',
                      {"name": name, "group": rt.group, "kind": rt.plural})


def conflict(rt: ResourceType, name: str, why: str) -> StoreError:
    return StoreError(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
                      {"name": name, "group": rt.group, "kind": rt.plural})


def invalid(rt: ResourceType, name: str, causes: list[apivalidation.Cause]) -> StoreError:
    listed = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(str(c) for c in causes) + "]"
    return StoreError(422, "Invalid", f'{rt.group_kind} "{name}" is invalid: {listed}',
                      {"name": name, "group": rt.group, "kind": rt.kind,
                       "causes": [c.as_status_cause() for c in causes]})


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rt_key: str
    obj: dict[str, Any]
    old: dict[str, Any] | None  # the previous version (MODIFIED), for selector transitions


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_NAME_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    # Generation counts changes to everything but metadata and status, as in Kubernetes.
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class APIStore:
    """Thread-safe in-memory object store with watch history; see the module docstring."""

    def __init__(self, *, history: int = 1000, state_file: Path | None = None,
                 dropped_device_fields: Iterable[str] = ()) -> None:
        """dropped_device_fields: ResourceSlice device fields this server drops on write, as a real
        API server drops the fields of a feature gate that is off (e.g. `bindsToNode` without
        DRADeviceBindingConditions): the object stored differs from the one written."""
        self.dropped_device_fields = frozenset(dropped_device_fields)
        self.types: dict[str, ResourceType] = {rt.key: rt for rt in RESOURCE_TYPES}
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in self.types}
        self._rv = 0
        self._history: deque[WatchEvent] = deque(maxlen=max(1, history))
        self._compacted_rv = 0  # events with rv <= this are no longer in the history
        self._cond = threading.Condition()
        self._closed = False
        self._state_file = state_file
        if state_file is not None and state_file.exists():
            self._load(state_file)
        ns = self.types["/namespaces"]
        with self._cond:
            for name in INITIAL_NAMESPACES:
                if ("", name) not in self._objects[ns.key]:
                    self._store(ns, "", {"metadata": {"name": name}, "spec": {"finalizers": ["kubernetes"]},
                                         "status": {"phase": "Active"}}, "ADDED", None, persist=False)
            self._persist()

    # -- reads ---------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self._cond:
            obj = self._objects[rt.key].get((namespace, name))
            if obj is None:
                raise not_found(rt, name)
            return copy.deepcopy(obj)

    def list_objects(
        self, rt: ResourceType, namespace: str | None, match: Callable[[dict[str, Any]], bool] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Objects (sorted by namespace, name) in one namespace or all (None), and the list's RV."""
        with self._cond:
            items = [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self._objects[rt.key].items())
                if (namespace is None or ns == namespace) and (match is None or match(obj))
            ]
            return items, self._rv

    # -- writes --------------------------------------------------------------------------------

    def _require_namespace(self, rt: ResourceType, namespace: str) -> None:
        if rt.namespaced and ("", namespace) not in self._objects["/namespaces"]:
            raise not_found(self.types["/namespaces"], namespace)

    def create(self, rt: ResourceType, namespace: str, obj: dict[str, Any], *, dry_run: bool = False
               ) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise StoreError(400, "BadRequest", "metadata must be an object")
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choice(_NAME_SUFFIX_CHARS) for _ in range(5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        name = meta.get("name") or ""
        if rt.has_status and not rt.keep_status_on_create:
            obj.pop("status", None)  # status is written through the status subresource only
        if rt.key == "/namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        self._drop_disabled_fields(rt, obj)
        causes = apivalidation.validate(rt.plural, obj)
        if causes:
            raise invalid(rt, name, causes)
        with self._cond:
            self._require_namespace(rt, namespace)
            if (namespace, name) in self._objects[rt.key]:
                raise StoreError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists',
                                 {"name": name, "group": rt.group, "kind": rt.plural})
            server_set = ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                          "managedFields")
            for key in server_set:
                meta.pop(key, None)
            meta["uid"] = str(uuid.uuid4())
            meta["generation"] = 1
            meta["creationTimestamp"] = now_rfc3339()
            if rt.namespaced:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if dry_run:
                return self._with_kind(rt, obj)
            return self._store(rt, namespace, obj, "ADDED", None)

    def update(self, rt: ResourceType, namespace: str, name: str, obj: dict[str, Any], *,
               status_update: bool = False, dry_run: bool = False,
               managed_fields: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Replace an object (PUT); a resourceVersion in obj must match the stored one (else 409).

        metadata.managedFields is the server's: kept as stored, or replaced by `managed_fields`
        (a server-side apply)."""
        obj = copy.deepcopy(obj)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise StoreError(400, "BadRequest", "metadata must be an object")
        with self._cond:
            old = self._objects[rt.key].get((namespace, name))
            if old is None:
                raise not_found(rt, name)
            want_rv = meta.get("resourceVersion")
            if want_rv not in (None, "") and str(want_rv) != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name, "the object has been modified; please apply your changes to the "
                                         "latest version and try again")
            if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
                raise conflict(rt, name, f"Precondition failed: UID in precondition: {meta['uid']}, "
                                         f"UID in object meta: {old['metadata']['uid']}")
            if status_update:
                # Only status changes through the status subresource; everything else stays.
                new = copy.deepcopy(old)
                if "status" in obj:
                    new["status"] = obj["status"]
                else:
                    new.pop("status", None)
            else:
                new = obj
                if rt.has_status:
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
                new_meta = new["metadata"]
                for key in ("uid", "creationTimestamp", "generation", "namespace", "managedFields"):
                    if key in old["metadata"]:
                        new_meta[key] = old["metadata"][key]
                    else:
                        new_meta.pop(key, None)
            if managed_fields is not None:
                if managed_fields:
                    new["metadata"]["managedFields"] = copy.deepcopy(managed_fields)
                else:
                    new["metadata"].pop("managedFields", None)
            new["metadata"]["name"] = name
            self._drop_disabled_fields(rt, new)
            causes = apivalidation.validate(rt.plural, new, old, status_update=status_update)
            if causes:
                raise invalid(rt, name, causes)
            new = self._with_kind(rt, new)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old:
                return self._with_kind(rt, copy.deepcopy(old))  # a no-op write changes nothing
            if _spec_part(new) != _spec_part(old):
                new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
            if dry_run:
                return self._with_kind(rt, new)
            return self._store(rt, namespace, new, "MODIFIED", old)

    def delete(self, rt: ResourceType, namespace: str, name: str, *,
               precondition_rv: str | None = None, precondition_uid: str | None = None,
               dry_run: bool = False) -> dict[str, Any]:
        with self._cond:
            old = self._objects[rt.key].get((namespace, name))
            if old is None:
                raise not_found(rt, name)
            if precondition_uid and precondition_uid != old["metadata"]["uid"]:
                raise conflict(rt, name, f"Precondition failed: UID in precondition: {precondition_uid}, "
                                         f"UID in object meta: {old['metadata']['uid']}")
            if precondition_rv and precondition_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name, "Precondition failed: ResourceVersion in precondition: "
                                         f"{precondition_rv}, ResourceVersion in object meta: "
                                         f"{old['metadata']['resourceVersion']}")
            if dry_run:
                return self._with_kind(rt, copy.deepcopy(old))
            if rt.plural == "namespaces" and not rt.group:
                # Deleting a namespace deletes what is in it (no finalizers in this stand-in).
                for other in self.types.values():
                    if other.namespaced:
                        for ns, n in [k for k in self._objects[other.key] if k[0] == name]:
                            self._remove(other, ns, n)
            return self._remove(rt, namespace, name)

    # -- watch ---------------------------------------------------------------------------------

    def events_after(self, rv: int, timeout: float) -> list[WatchEvent]:
        """Events newer than rv, waiting up to timeout for one. Raises StoreError 410 if rv is too old."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if rv < self._compacted_rv:
                    raise StoreError(410, "Expired", f"too old resource version: {rv} ({self._compacted_rv})")
                if self._closed:
                    return []
                if self._rv > rv:
                    return [e for e in self._history if e.rv > rv]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def close(self) -> None:
        """Wake every watcher so it ends its stream (used on server stop)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- internals (call with the lock held) ---------------------------------------------------

    def _drop_disabled_fields(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        if rt.plural != "resourceslices" or not self.dropped_device_fields:
            return
        spec = obj.get("spec")
        for dev in (spec.get("devices") if isinstance(spec, dict) else None) or []:
            if isinstance(dev, dict):
                for field in self.dropped_device_fields & dev.keys():
                    del dev[field]

    def _with_kind(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": rt.api_version(), "kind": rt.kind, **{k: v for k, v in obj.items()
                                                                    if k not in ("apiVersion", "kind")}}

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, event: WatchEvent) -> None:
        if len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0].rv
        self._history.append(event)
        self._cond.notify_all()

    def _store(self, rt: ResourceType, namespace: str, obj: dict[str, Any], kind: str,
               old: dict[str, Any] | None, *, persist: bool = True) -> dict[str, Any]:
        obj = self._with_kind(rt, obj)
        meta = obj["metadata"]
        if "uid" not in meta:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta.setdefault("generation", 1)
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        self._objects[rt.key][(namespace, meta["name"])] = obj
        self._record(WatchEvent(rv, kind, rt.key, copy.deepcopy(obj), copy.deepcopy(old) if old else None))
        if persist:
            self._persist()
        return copy.deepcopy(obj)

    def _remove(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self._objects[rt.key].pop((namespace, name))
        # A deleted object is reported with the resourceVersion of its deletion, as in Kubernetes.
        obj["metadata"]["resourceVersion"] = str(self._next_rv())
        self._record(WatchEvent(self._rv, "DELETED", rt.key, copy.deepcopy(obj), None))
        self._persist()
        return copy.deepcopy(obj)

    def _persist(self) -> None:
        if self._state_file is None:
            return
        state = {"resourceVersion": self._rv,
                 "objects": {k: list(v.values()) for k, v in self._objects.items() if v}}
        tmp = self._state_file.with_name(self._state_file.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self._state_file)

    def _load(self, path: Path) -> None:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(500, "InternalError", f"cannot read state file {path}: {exc}; "
                                                   "fix or delete it") from exc
        self._rv = int(state.get("resourceVersion", 0))
        # Watch history is not persisted: a watcher from before the restart must relist (410).
        self._compacted_rv = self._rv
        for key, objs in state.get("objects", {}).items():
            if key in self._objects:
                for obj in objs:
                    meta = obj["metadata"]
                    self._objects[key][(meta.get("namespace", ""), meta["name"])] = obj
