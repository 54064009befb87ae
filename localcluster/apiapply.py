"""Server-side apply of a ResourceClaim's status.devices for the local API server (pure; test tool).

What the real API server does for `PATCH .../resourceclaims/NAME/status` with
`application/apply-patch+yaml`, for the one field drivers apply (upstream dranet writes its entries
this way, field manager = driver name, force):

- the body is a whole object: `apiVersion` and `kind` must name a ResourceClaim (400 otherwise);
  `metadata.name` must match; a `metadata.uid` is a precondition (409 when the claim was re-created);
- `status.devices` is a map list keyed by (driver, device, pool): the manager owns the entries it
  applies; an entry it applied before and leaves out now is removed, entries of other managers stay;
- an entry another manager owns and this apply changes is a 409 conflict naming that manager,
  unless `force`, which moves the ownership;
- ownership is recorded in `metadata.managedFields` (operation Apply, subresource status, FieldsV1
  with `k:{"device":..,"driver":..,"pool":..}` keys), the only place it is read from.

Strict where the stand-in is smaller than the real server: an apply that sets any other status
field (allocation, reservedFor) is refused with 422, so a test can never pass on a merge the real
server would not do. Ownership by non-apply writes (PUT, merge patch) is not tracked.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from localcluster.apistore import StoreError

Key = tuple[str, str, str]  # (driver, device, pool): the list map keys, in the API's order
KEY_FIELDS = ("driver", "device", "pool")


def _key(entry: Mapping[str, Any]) -> Key:
    return (str(entry.get("driver", "")), str(entry.get("device", "")), str(entry.get("pool", "")))


def _key_string(key: Key) -> str:
    return "k:" + json.dumps(dict(zip(KEY_FIELDS, key, strict=True)), separators=(",", ":"), sort_keys=True)


def _parse_key(text: str) -> Key | None:
    if not text.startswith("k:"):
        return None
    try:
        value = json.loads(text[2:])
    except ValueError:
        return None
    return _key(value) if isinstance(value, dict) else None


def _is_status_apply(m: Mapping[str, Any]) -> bool:
    return m.get("operation") == "Apply" and m.get("subresource") == "status"


def owned_keys(managed: Sequence[Mapping[str, Any]]) -> dict[str, set[Key]]:
    """manager -> the status.devices entries it owns through apply (from metadata.managedFields)."""
    out: dict[str, set[Key]] = {}
    for m in managed:
        if not _is_status_apply(m):
            continue
        devices: dict[str, Any] = ((m.get("fieldsV1") or {}).get("f:status") or {}).get("f:devices") or {}
        keys = {k for k in (_parse_key(t) for t in devices) if k is not None}
        out.setdefault(str(m.get("manager", "")), set()).update(keys)
    return out


def _fields_v1(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    devices: dict[str, Any] = {
        _key_string(_key(e)): {".": {}, **{f"f:{f}": {} for f in sorted(e)}} for e in entries
    }
    return {"f:status": {"f:devices": devices}} if devices else {}


def _invalid(name: str, field: str, reason: str, message: str) -> StoreError:
    return StoreError(
        422,
        "Invalid",
        f'ResourceClaim.resource.k8s.io "{name}" is invalid: {field}: {message}',
        {"name": name, "group": "resource.k8s.io", "kind": "ResourceClaim",
         "causes": [{"reason": reason, "field": field, "message": message}]},
    )


def _check_patch(current: Mapping[str, Any], patch: Mapping[str, Any], version: str) -> list[dict[str, Any]]:
    name = current["metadata"]["name"]
    if patch.get("apiVersion") != f"resource.k8s.io/{version}" or patch.get("kind") != "ResourceClaim":
        raise StoreError(
            400, "BadRequest",
            f"an apply patch must be a whole object with apiVersion resource.k8s.io/{version} and kind "
            f"ResourceClaim (got apiVersion {patch.get('apiVersion')!r}, kind {patch.get('kind')!r})",
        )
    meta = patch.get("metadata") or {}
    if meta.get("name") not in (None, name):
        raise StoreError(400, "BadRequest", f"the name of the object ({meta.get('name')}) does not match "
                                            f"the name on the URL ({name})")
    if meta.get("uid") and meta["uid"] != current["metadata"]["uid"]:
        raise StoreError(
            409, "Conflict",
            f'Operation cannot be fulfilled on resourceclaims.resource.k8s.io "{name}": Precondition '
            f'failed: UID in precondition: {meta["uid"]}, UID in object meta: {current["metadata"]["uid"]}',
            {"name": name, "group": "resource.k8s.io", "kind": "resourceclaims"})
    status = patch.get("status") or {}
    if not isinstance(status, dict):
        raise _invalid(name, "status", "FieldValueInvalid", "must be an object")
    other = sorted(set(status) - {"devices"})
    if other:
        raise _invalid(name, f"status.{other[0]}", "FieldValueForbidden",
                       "the local API server applies status.devices only (see docs/local-apiserver.md)")
    devices = status.get("devices") or []
    if not isinstance(devices, list) or not all(isinstance(d, dict) for d in devices):
        raise _invalid(name, "status.devices", "FieldValueInvalid", "must be a list of objects")
    seen: set[Key] = set()
    for i, d in enumerate(devices):
        for f in KEY_FIELDS:
            if not d.get(f):
                raise _invalid(name, f"status.devices[{i}].{f}", "FieldValueRequired", "Required value")
        if _key(d) in seen:
            raise _invalid(name, f"status.devices[{i}]", "FieldValueDuplicate",
                           f"Duplicate value: {dict(zip(KEY_FIELDS, _key(d), strict=True))}")
        seen.add(_key(d))
    return [dict(d) for d in devices]


def apply_claim_status(
    current: Mapping[str, Any], patch: Mapping[str, Any], *, manager: str, force: bool, version: str,
    now: str,
) -> dict[str, Any]:
    """The claim after `manager` applied `patch` to its status (raises StoreError as the server would)."""
    applied = _check_patch(current, patch, version)
    new = copy.deepcopy(dict(current))
    meta = new["metadata"]
    managed: list[dict[str, Any]] = list(meta.get("managedFields") or [])
    owners = owned_keys(managed)
    mine_before = owners.pop(manager, set())
    existing = {_key(d): d for d in (new.get("status") or {}).get("devices") or []}
    conflicts = []
    for entry in applied:
        key = _key(entry)
        others = sorted(m for m, keys in owners.items() if key in keys)
        if others and existing.get(key) != entry and not force:
            conflicts.append((others, key))
        for m in others:
            owners[m].discard(key)  # force: the ownership moves to this manager
    if conflicts:
        causes = [{"reason": "FieldManagerConflict", "field": f".status.devices[{_key_string(k)}]",
                   "message": f'conflict with "{o[0]}"'} for o, k in conflicts]
        raise StoreError(409, "Conflict",
                         f"Apply failed with {len(conflicts)} conflict(s): "
                         + "; ".join(f'conflict with "{o[0]}": .status.devices[{_key_string(k)}]'
                                     for o, k in conflicts),
                         {"name": meta["name"], "group": "resource.k8s.io", "kind": "resourceclaims",
                          "causes": causes})
    applied_keys = {_key(e): e for e in applied}
    still_owned = set().union(*owners.values()) if owners else set()
    devices = []
    for key, entry in existing.items():
        if key in applied_keys:
            devices.append(applied_keys.pop(key))
        elif key in mine_before and key not in still_owned:
            continue  # applied before, left out now: removed
        else:
            devices.append(entry)
    devices.extend(applied_keys.values())
    status = new.setdefault("status", {})
    if devices:
        status["devices"] = devices
    else:
        status.pop("devices", None)
    if not status:
        new.pop("status", None)
    kept = [m for m in managed if not _is_status_apply(m)]
    for old in managed:  # other appliers keep their record, minus the entries that moved away
        other = str(old.get("manager", ""))
        if _is_status_apply(old) and other != manager and owners.get(other):
            fields = _fields_v1([existing[k] for k in sorted(owners[other]) if k in existing])
            kept.append({**old, "fieldsV1": fields})
    if applied:
        kept.append({"manager": manager, "operation": "Apply", "apiVersion": f"resource.k8s.io/{version}",
                     "time": now, "fieldsType": "FieldsV1", "fieldsV1": _fields_v1(applied),
                     "subresource": "status"})
    if kept:
        meta["managedFields"] = kept
    else:
        meta.pop("managedFields", None)
    return new
