"""Validation rules of the local API server stand-in (pure; development/test tool).

These mirror the real kube-apiserver's validation for the objects the driver writes, so a driver
bug that the real API would reject (too many devices in a slice, an attribute name that is not a
qualified name, a string value over 64 bytes, a malformed claim status) fails here too. Each rule
returns a ``Cause`` with the field path and a message in the API's own wording; the server turns
the list into a metav1.Status 422 Invalid body.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Limits of resource.k8s.io/v1 (see the API's types.go constants).
MAX_DEVICES_PER_SLICE = 128
MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS = 64
MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE = 32
MAX_ATTRIBUTE_STRING_LENGTH = 64
MAX_ATTRIBUTE_VERSION_LENGTH = 64
MAX_DRIVER_NAME_LENGTH = 63
MAX_POOL_NAME_LENGTH = 253
MAX_ID_LENGTH = 32
MAX_DOMAIN_LENGTH = 63
MAX_TAINTS_PER_DEVICE = 16
MAX_SHARED_COUNTER_SETS = 8
MAX_REQUESTS = 32
MAX_SUBREQUESTS = 8
MAX_CONSTRAINTS = 32
MAX_CONFIGS = 32
MAX_SELECTORS = 32
MAX_CEL_LENGTH = 10 * 1024
MAX_RAW_EXTENSION_BYTES = 10 * 1024
MAX_RESERVED_FOR = 256
MAX_DEVICE_CONDITIONS = 8
MAX_INTERFACE_NAME_LENGTH = 256
MAX_IPS = 16
MAX_HARDWARE_ADDRESS_LENGTH = 128
MAX_VALID_VALUES = 10  # CapacityRequestPolicyDiscreteMaxOptions
MAX_CONDITION_MESSAGE = 32768
MAX_CONDITION_REASON = 1024

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?")
_CONDITION_REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")

DNS_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
DNS_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
C_IDENTIFIER_MSG = (
    "a valid C identifier must start with alphabetic character or '_', "
    "followed by a string of alphanumeric characters or '_'"
)


@dataclass(frozen=True)
class Cause:
    """One validation failure: metav1.StatusCause (reason type, field path, message)."""

    type: str
    field: str
    message: str

    def as_status_cause(self) -> dict[str, str]:
        return {"reason": self.type, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def _fmt(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def required(field: str, detail: str = "") -> Cause:
    return Cause("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def invalid(field: str, value: Any, detail: str) -> Cause:
    return Cause("FieldValueInvalid", field, f"Invalid value: {_fmt(value)}: {detail}")


def too_long(field: str, limit: int) -> Cause:
    return Cause("FieldValueTooLong", field, f"Too long: may not be more than {limit} bytes")


def too_many(field: str, actual: int, limit: int) -> Cause:
    return Cause("FieldValueTooMany", field, f"Too many: {actual}: must have at most {limit} items")


def duplicate(field: str, value: Any) -> Cause:
    return Cause("FieldValueDuplicate", field, f"Duplicate value: {_fmt(value)}")


def not_supported(field: str, value: Any, supported: list[str]) -> Cause:
    values = ", ".join(_fmt(s) for s in supported)
    message = f"Unsupported value: {_fmt(value)}: supported values: {values}"
    return Cause("FieldValueNotSupported", field, message)


def forbidden(field: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", field, f"Forbidden: {detail}")


def immutable(field: str, value: Any) -> Cause:
    return invalid(field, value, "field is immutable")


# ---------------------------------------------------------------------------------------------
# Name rules


def dns_label(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, str) or value == "":
        return [required(field)]
    out: list[Cause] = []
    if len(value) > 63:
        out.append(invalid(field, value, "must be no more than 63 characters"))
    if not _DNS_LABEL.fullmatch(value):
        out.append(invalid(field, value, f"{DNS_LABEL_MSG} (e.g. 'my-name',  or '123-abc')"))
    return out


def dns_subdomain(field: str, value: Any, max_len: int = 253) -> list[Cause]:
    if not isinstance(value, str) or value == "":
        return [required(field)]
    out: list[Cause] = []
    if len(value) > max_len:
        out.append(too_long(field, max_len))
    if not _DNS_SUBDOMAIN.fullmatch(value):
        out.append(invalid(field, value, f"{DNS_SUBDOMAIN_MSG} (e.g. 'example.com')"))
    return out


def driver_name(field: str, value: Any) -> list[Cause]:
    return dns_subdomain(field, value, MAX_DRIVER_NAME_LENGTH)


def pool_name(field: str, value: Any) -> list[Cause]:
    """One or more DNS subdomains separated by slashes, <= 253 characters in all."""
    if not isinstance(value, str) or value == "":
        return [required(field)]
    out: list[Cause] = []
    if len(value) > MAX_POOL_NAME_LENGTH:
        out.append(too_long(field, MAX_POOL_NAME_LENGTH))
    for part in value.split("/"):
        if not _DNS_SUBDOMAIN.fullmatch(part):
            out.append(
                invalid(field, value, f"each part of a pool name (separated by '/') must be a DNS subdomain: "
                        f"{DNS_SUBDOMAIN_MSG}")
            )
            break
    return out


def c_identifier(field: str, value: str, max_len: int = MAX_ID_LENGTH) -> list[Cause]:
    out: list[Cause] = []
    if len(value) > max_len:
        out.append(too_long(field, max_len))
    if not _C_IDENTIFIER.fullmatch(value):
        out.append(invalid(field, value, f"{C_IDENTIFIER_MSG} (e.g. 'my_name' or 'MY_NAME')"))
    return out


def qualified_device_name(field: str, name: str) -> list[Cause]:
    """A device attribute or capacity name: C identifier, or DNS-subdomain domain / C identifier."""
    if name == "":
        return [required(field, "name required")]
    if "/" in name:
        domain, _, ident = name.partition("/")
        out: list[Cause] = []
        if domain == "":
            out.append(required(field, "the domain must not be empty"))
        else:
            if len(domain) > MAX_DOMAIN_LENGTH:
                out.append(too_long(field, MAX_DOMAIN_LENGTH))
            if not _DNS_SUBDOMAIN.fullmatch(domain):
                out.append(invalid(field, domain, f"the domain must be a DNS subdomain: {DNS_SUBDOMAIN_MSG}"))
        if ident == "":
            out.append(required(field, "the identifier after the domain must not be empty"))
        else:
            out.extend(c_identifier(field, ident))
        return out
    return c_identifier(field, name)


def qualified_name(field: str, value: Any) -> list[Cause]:
    """A Kubernetes qualified name (label keys, condition types): [prefix/]name, name <= 63."""
    if not isinstance(value, str) or value == "":
        return [required(field)]
    prefix, _, name = value.rpartition("/")
    out: list[Cause] = []
    if "/" in value and prefix == "":
        out.append(invalid(field, value, "prefix part must be non-empty"))
    elif prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        out.append(invalid(field, value, f"prefix part {DNS_SUBDOMAIN_MSG}"))
    if name == "" or len(name) > 63 or not _QUALIFIED_NAME_PART.fullmatch(name):
        out.append(
            invalid(field, value, "name part must consist of alphanumeric characters, '-', '_' or '.', and "
                    "must start and end with an alphanumeric character (at most 63 characters)")
        )
    return out


def is_extended_resource_name(name: str) -> bool:
    """A pod's extended resource name (v1helper.IsExtendedResourceName): not in the kubernetes.io
    namespace (so it has a domain), no "requests." prefix, and "requests.<name>" (quota's spelling
    of it) is a qualified name."""
    if "/" not in name or "kubernetes.io/" in name or name.startswith("requests."):
        return False
    return not qualified_name("", f"requests.{name}")


def _label_value(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, str):
        return [invalid(field, value, "must be a string")]
    if value and (len(value) > 63 or not _QUALIFIED_NAME_PART.fullmatch(value)):
        return [invalid(field, value, "a valid label must be an empty string or consist of alphanumeric "
                        "characters, '-', '_' or '.', and must start and end with an alphanumeric character "
                        "(at most 63 characters)")]
    return []


# ---------------------------------------------------------------------------------------------
# Object metadata


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def validate_metadata(obj: Mapping[str, Any], name_rule: str = "subdomain") -> list[Cause]:
    """metadata.name (DNS subdomain or label), generateName, labels and annotation keys."""
    meta = _dict(obj.get("metadata"))
    out: list[Cause] = []
    name = meta.get("name")
    if not name:
        if not meta.get("generateName"):
            out.append(required("metadata.name", "name or generateName is required"))
    elif name_rule == "label":
        out.extend(dns_label("metadata.name", name))
    else:
        out.extend(dns_subdomain("metadata.name", name))
    for key, value in _dict(meta.get("labels")).items():
        out.extend(qualified_name("metadata.labels", key))
        out.extend(_label_value("metadata.labels", value))
    for key in _dict(meta.get("annotations")):
        out.extend(qualified_name("metadata.annotations", key.lower()))
    return out


# ---------------------------------------------------------------------------------------------
# ResourceSlice


def _validate_attribute_value(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, dict):
        return [invalid(field, value, "must be an object with exactly one of int, bool, string or version")]
    kinds = [k for k in ("int", "bool", "string", "version", "ints", "bools", "strings", "versions")
             if value.get(k) is not None]
    if not kinds:
        return [required(field, "exactly one value must be specified")]
    if len(kinds) > 1:
        return [invalid(field, value, "exactly one value must be specified")]
    kind = kinds[0]
    v = value[kind]
    out: list[Cause] = []
    if kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
        out.append(invalid(f"{field}.int", v, "must be an integer"))
    elif kind == "bool" and not isinstance(v, bool):
        out.append(invalid(f"{field}.bool", v, "must be a boolean"))
    elif kind == "string":
        if not isinstance(v, str):
            out.append(invalid(f"{field}.string", v, "must be a string"))
        elif len(v.encode()) > MAX_ATTRIBUTE_STRING_LENGTH:
            out.append(too_long(f"{field}.string", MAX_ATTRIBUTE_STRING_LENGTH))
    elif kind == "version":
        if not isinstance(v, str):
            out.append(invalid(f"{field}.version", v, "must be a string"))
        else:
            if len(v) > MAX_ATTRIBUTE_VERSION_LENGTH:
                out.append(too_long(f"{field}.version", MAX_ATTRIBUTE_VERSION_LENGTH))
            if not _SEMVER.fullmatch(v):
                out.append(invalid(f"{field}.version", v, "must be a string compatible with semver.org "
                                   "spec 2.0.0"))
    return out


def _validate_device(field: str, device: Any, driver: str) -> list[Cause]:
    if not isinstance(device, dict):
        return [invalid(field, device, "must be an object")]
    out = dns_label(f"{field}.name", device.get("name"))
    attributes = _dict(device.get("attributes"))
    capacity = _dict(device.get("capacity"))
    total = len(attributes) + len(capacity)
    if total > MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE:
        out.append(invalid(field, total, "the total number of attributes and capacities must not exceed "
                           f"{MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE}"))
    # Names without a domain belong to the driver's domain: "x" and "<driver>/x" are the same name.
    seen: set[str] = set()
    for section, entries in (("attributes", attributes), ("capacity", capacity)):
        for name, value in entries.items():
            path = f"{field}.{section}[{name}]"
            out.extend(qualified_device_name(path, name))
            full = name if "/" in name else f"{driver}/{name}"
            if full in seen:
                out.append(duplicate(path, name))
            seen.add(full)
            if section == "attributes":
                out.extend(_validate_attribute_value(path, value))
            elif not isinstance(value, dict) or not _QUANTITY.fullmatch(str(value.get("value", ""))):
                out.append(invalid(f"{path}.value", _dict(value).get("value"), "must be a quantity"))
            else:
                out.extend(_validate_capacity_policy(path, value, device.get("allowMultipleAllocations")))
    multi = device.get("allowMultipleAllocations")
    if multi is not None and not isinstance(multi, bool):
        out.append(invalid(f"{field}.allowMultipleAllocations", multi, "must be a boolean"))
    taints = _list(device.get("taints"))
    if len(taints) > MAX_TAINTS_PER_DEVICE:
        out.append(too_many(f"{field}.taints", len(taints), MAX_TAINTS_PER_DEVICE))
    for i, taint in enumerate(taints):
        out.extend(validate_device_taint(f"{field}.taints[{i}]", _dict(taint)))
    return out


# DeviceTaint.effect; None is the newest (1.35+): a taint that only informs.
TAINT_EFFECTS = ["NoExecute", "NoSchedule", "None"]
TOLERATION_EFFECTS = ["NoExecute", "NoSchedule"]
TOLERATION_OPERATORS = ["Equal", "Exists"]
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def validate_device_taint(field: str, taint: Mapping[str, Any]) -> list[Cause]:
    """A ResourceSlice device's taint, as the API server checks it (validateDeviceTaint)."""
    out = qualified_name(f"{field}.key", taint.get("key"))  # required
    if taint.get("value"):
        out.extend(_label_value(f"{field}.value", taint["value"]))
    effect = taint.get("effect")
    if not effect:
        out.append(required(f"{field}.effect"))
    elif effect not in TAINT_EFFECTS:
        out.append(not_supported(f"{field}.effect", effect, TAINT_EFFECTS))
    added = taint.get("timeAdded")
    if added is not None and not (isinstance(added, str) and _RFC3339.fullmatch(added)):
        out.append(invalid(f"{field}.timeAdded", added, "must be an RFC 3339 time"))
    return out


def validate_device_toleration(field: str, tol: Mapping[str, Any]) -> list[Cause]:
    """A request's toleration, as the API server checks it (validateDeviceToleration)."""
    out: list[Cause] = []
    key, value = tol.get("key") or "", tol.get("value") or ""
    if key:
        out.extend(qualified_name(f"{field}.key", key))
    operator = tol.get("operator") or "Equal"
    if operator == "Exists":
        if value:
            out.append(invalid(f"{field}.value", value, "must be empty when `operator` is 'Exists'"))
    elif operator == "Equal":
        if not key:
            out.append(invalid(f"{field}.operator", operator, "must be 'Exists' when `key` is empty"))
        out.extend(_label_value(f"{field}.value", value))
    else:
        out.append(not_supported(f"{field}.operator", operator, TOLERATION_OPERATORS))
    effect = tol.get("effect")
    if effect and effect not in TOLERATION_EFFECTS:
        out.append(not_supported(f"{field}.effect", effect, TOLERATION_EFFECTS))
    seconds = tol.get("tolerationSeconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
        out.append(invalid(f"{field}.tolerationSeconds", seconds, "must be an integer"))
    return out


# ---------------------------------------------------------------- consumable capacity (KEP-5075)


def _quantity(path: str, value: Any, out: list[Cause]) -> int | float | None:
    from localcluster.allocator import parse_quantity

    if not _QUANTITY.fullmatch(str(value)):
        out.append(invalid(path, value, "must be a quantity"))
        return None
    return parse_quantity(str(value))


def _validate_capacity_policy(field: str, capacity: Mapping[str, Any], multi: Any) -> list[Cause]:
    """A capacity's requestPolicy: only on a device with allowMultipleAllocations, and coherent
    with the value (the real API's validateRequestPolicy rules)."""
    policy = capacity.get("requestPolicy")
    if policy is None:
        return []
    path = f"{field}.requestPolicy"
    if multi is not True:
        return [forbidden(path, "allowMultipleAllocations must be true")]
    p = _dict(policy)
    out: list[Cause] = []
    top = _quantity(f"{field}.value", capacity.get("value"), out)
    default = _quantity(f"{path}.default", p["default"], out) if p.get("default") is not None else None
    values, rng = _list(p.get("validValues")), p.get("validRange")
    if values and rng is not None:
        return [forbidden(path, 'exactly one policy can be specified, cannot specify "validValues" and '
                                '"validRange" at the same time')]
    if (values or rng is not None) and p.get("default") is None:
        which = "validValues" if values else "validRange"
        out.append(required(f"{path}.default", f"required when {which} is defined"))
    if top is None:
        return out
    if values:
        if len(values) > MAX_VALID_VALUES:
            return [*out, too_many(f"{path}.validValues", len(values), MAX_VALID_VALUES)]
        nums = [_quantity(f"{path}.validValues[{i}]", x, out) for i, x in enumerate(values)]
        seen: set[Any] = set()
        for i, n in enumerate(nums):
            if n is None:
                continue
            if i and nums[i - 1] is not None and nums[i - 1] > n:  # type: ignore[operator]
                out.append(invalid(f"{path}.validValues[{i}]", values[i],
                                   "values must be sorted in ascending order"))
            if n > top:
                out.append(invalid(f"{path}.validValues[{i}]", values[i],
                                   f"option is larger than capacity value: {capacity.get('value')}"))
            if n in seen:
                out.append(duplicate(f"{path}.validValues[{i}]", values[i]))
            seen.add(n)
        if default is not None and default not in seen:
            out.append(invalid(f"{path}.validValues", p.get("default"),
                               "default value is not valid according to the requestPolicy"))
    elif rng is not None:
        out.extend(_validate_capacity_range(f"{path}.validRange", _dict(rng), top, default))
    return out


def _validate_capacity_range(
    path: str, rng: Mapping[str, Any], top: float, default: float | None
) -> list[Cause]:
    out: list[Cause] = []
    if rng.get("min") is None:
        return [required(f"{path}.min", "required when validRange is defined")]
    low = _quantity(f"{path}.min", rng["min"], out)
    high = _quantity(f"{path}.max", rng["max"], out) if rng.get("max") is not None else None
    step = _quantity(f"{path}.step", rng["step"], out) if rng.get("step") is not None else None
    if low is None:
        return out
    if low > top:
        out.append(invalid(f"{path}.min", rng["min"], f"min is larger than capacity value: {top}"))
    if default is not None and default < low:
        out.append(invalid(f"{path}.min", default, f"default is less than min: {rng['min']}"))
    if high is not None:
        if low > high:
            out.append(invalid(f"{path}.max", rng["min"], f"min is larger than max: {rng['max']}"))
        if high > top:
            out.append(invalid(f"{path}.max", rng["max"], f"max is larger than capacity value: {top}"))
        if default is not None and default > high:
            out.append(invalid(f"{path}.max", default, f"default is more than max: {rng['max']}"))
    if step is not None and step > 0:
        if low + step > top:
            out.append(invalid(f"{path}.step", rng["step"], f"one step {low + step} is larger than capacity "
                                                             f"value: {top}"))
        for value in (default, high):
            if value is not None and (value - low) % step:
                out.append(invalid(f"{path}.step", value, f"value is not a multiple of a given step "
                                                          f"({rng['step']}) from ({rng['min']})"))
    return out


def _validate_request_capacity(field: str, capacity: Any) -> list[Cause]:
    """A request's capacity.requests: qualified names and quantities."""
    out: list[Cause] = []
    for name, amount in _dict(_dict(capacity).get("requests")).items():
        path = f"{field}.requests[{name}]"
        out.extend(qualified_device_name(path, name))
        _quantity(path, amount, out)
    return out


def _validate_result_share(field: str, result: Mapping[str, Any]) -> list[Cause]:
    """An allocation result's shareID (an RFC 4122 UID in lower case) and consumedCapacity."""
    out: list[Cause] = []
    share = result.get("shareID")
    if share is not None:
        try:
            ok = str(uuid.UUID(str(share))) == share
        except ValueError:
            ok = False
        if not ok:
            out.append(invalid(f"{field}.shareID", share,
                               "uid must be in RFC 4122 normalized form, `xxxxxxxx-xxxx-xxxx-xxxx-"
                               "xxxxxxxxxxxx` with lowercase hexadecimal characters"))
    for name, amount in _dict(result.get("consumedCapacity")).items():
        path = f"{field}.consumedCapacity[{name}]"
        out.extend(qualified_device_name(path, name))
        _quantity(path, amount, out)
    return out


def _node_selection(spec: Mapping[str, Any]) -> list[str]:
    chosen = []
    if spec.get("nodeName"):
        chosen.append("nodeName")
    if spec.get("nodeSelector") is not None:
        chosen.append("nodeSelector")
    if spec.get("allNodes"):
        chosen.append("allNodes")
    if spec.get("perDeviceNodeSelection"):
        chosen.append("perDeviceNodeSelection")
    return chosen


def validate_resource_slice(obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[Cause]:
    out = validate_metadata(obj)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [*out, required("spec")]
    driver = spec.get("driver")
    out.extend(driver_name("spec.driver", driver))
    pool = spec.get("pool")
    if not isinstance(pool, dict):
        out.append(required("spec.pool"))
    else:
        out.extend(pool_name("spec.pool.name", pool.get("name")))
        gen = pool.get("generation", 0)
        if not isinstance(gen, int) or gen < 0:
            out.append(invalid("spec.pool.generation", gen, "must be greater than or equal to 0"))
        count = pool.get("resourceSliceCount", 0)
        if not isinstance(count, int) or count <= 0:
            out.append(invalid("spec.pool.resourceSliceCount", count, "must be greater than 0"))
    chosen = _node_selection(spec)
    choices = "`nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection`"
    if not chosen:
        out.append(required("spec", f"exactly one of {choices} is required"))
    elif len(chosen) > 1:
        out.append(invalid("spec", chosen,
                           f"exactly one of {choices} is required, but multiple fields are set"))
    if spec.get("nodeName"):
        out.extend(dns_subdomain("spec.nodeName", spec["nodeName"]))
    if spec.get("nodeSelector") is not None:
        terms = _list(_dict(spec["nodeSelector"]).get("nodeSelectorTerms"))
        if len(terms) != 1:
            out.append(invalid("spec.nodeSelector.nodeSelectorTerms", len(terms),
                               "must have exactly one node selector term"))
    devices = _list(spec.get("devices"))
    limited = any(_dict(d).get("taints") or _dict(d).get("consumesCounters") for d in devices)
    limit = MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS if limited else MAX_DEVICES_PER_SLICE
    if len(devices) > limit:
        out.append(too_many("spec.devices", len(devices), limit))
    names: set[str] = set()
    for i, device in enumerate(devices):
        out.extend(_validate_device(f"spec.devices[{i}]", device, driver if isinstance(driver, str) else ""))
        name = _dict(device).get("name")
        if isinstance(name, str) and name:
            if name in names:
                out.append(duplicate(f"spec.devices[{i}].name", name))
            names.add(name)
    counters = _list(spec.get("sharedCounters"))
    if len(counters) > MAX_SHARED_COUNTER_SETS:
        out.append(too_many("spec.sharedCounters", len(counters), MAX_SHARED_COUNTER_SETS))
    if old is not None:
        old_spec = _dict(old.get("spec"))
        if spec.get("driver") != old_spec.get("driver"):
            out.append(immutable("spec.driver", spec.get("driver")))
        if (spec.get("nodeName") or "") != (old_spec.get("nodeName") or ""):
            out.append(immutable("spec.nodeName", spec.get("nodeName")))
    return out


# ---------------------------------------------------------------------------------------------
# DeviceClass, ResourceClaim, ResourceClaimTemplate


def _validate_opaque_configs(field: str, configs: list[Any]) -> list[Cause]:
    out: list[Cause] = []
    if len(configs) > MAX_CONFIGS:
        out.append(too_many(field, len(configs), MAX_CONFIGS))
    for i, config in enumerate(configs):
        opaque = _dict(config).get("opaque")
        if not isinstance(opaque, dict):
            out.append(required(f"{field}[{i}].opaque"))
            continue
        out.extend(driver_name(f"{field}[{i}].opaque.driver", opaque.get("driver")))
        params = opaque.get("parameters")
        if params is None:
            out.append(required(f"{field}[{i}].opaque.parameters"))
        elif len(json.dumps(params).encode()) > MAX_RAW_EXTENSION_BYTES:
            out.append(too_long(f"{field}[{i}].opaque.parameters", MAX_RAW_EXTENSION_BYTES))
    return out


def _validate_selectors(field: str, selectors: list[Any]) -> list[Cause]:
    out: list[Cause] = []
    if len(selectors) > MAX_SELECTORS:
        out.append(too_many(field, len(selectors), MAX_SELECTORS))
    for i, sel in enumerate(selectors):
        expr = _dict(_dict(sel).get("cel")).get("expression")
        if not isinstance(expr, str) or not expr.strip():
            out.append(required(f"{field}[{i}].cel.expression"))
        elif len(expr) > MAX_CEL_LENGTH:
            out.append(too_long(f"{field}[{i}].cel.expression", MAX_CEL_LENGTH))
    return out


def validate_device_class(obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[Cause]:
    out = validate_metadata(obj)
    spec = _dict(obj.get("spec"))
    out.extend(_validate_selectors("spec.selectors", _list(spec.get("selectors"))))
    out.extend(_validate_opaque_configs("spec.config", _list(spec.get("config"))))
    resource = spec.get("extendedResourceName")
    if resource is not None and not (isinstance(resource, str) and is_extended_resource_name(resource)):
        out.append(invalid("spec.extendedResourceName", resource, "must be a valid extended resource name"))
    return out


def _validate_exact_request(field: str, req: Mapping[str, Any]) -> list[Cause]:
    out = dns_subdomain(f"{field}.deviceClassName", req.get("deviceClassName"))
    out.extend(_validate_selectors(f"{field}.selectors", _list(req.get("selectors"))))
    mode = req.get("allocationMode", "ExactCount")
    if mode not in ("ExactCount", "All"):
        out.append(not_supported(f"{field}.allocationMode", mode, ["All", "ExactCount"]))
    count = req.get("count")
    if count is not None and (mode != "ExactCount" or not isinstance(count, int) or count <= 0):
        out.append(invalid(f"{field}.count", count, "must be greater than zero, and only with ExactCount"))
    for i, tol in enumerate(_list(req.get("tolerations"))):
        out.extend(validate_device_toleration(f"{field}.tolerations[{i}]", _dict(tol)))
    if req.get("capacity") is not None:
        out.extend(_validate_request_capacity(f"{field}.capacity", req["capacity"]))
    return out


def validate_claim_spec(field: str, spec: Any) -> list[Cause]:
    devices = _dict(_dict(spec).get("devices"))
    out: list[Cause] = []
    requests = _list(devices.get("requests"))
    if len(requests) > MAX_REQUESTS:
        out.append(too_many(f"{field}.devices.requests", len(requests), MAX_REQUESTS))
    names: set[str] = set()
    for i, request in enumerate(requests):
        path = f"{field}.devices.requests[{i}]"
        req = _dict(request)
        out.extend(dns_label(f"{path}.name", req.get("name")))
        if req.get("name") in names:
            out.append(duplicate(f"{path}.name", req.get("name")))
        names.add(str(req.get("name")))
        exactly, first = req.get("exactly"), req.get("firstAvailable")
        if (exactly is None) == (first is None):
            out.append(invalid(path, req.get("name"),
                               "exactly one of `exactly` or `firstAvailable` is required"))
        if isinstance(exactly, dict):
            out.extend(_validate_exact_request(f"{path}.exactly", exactly))
        if first is not None:
            subs = _list(first)
            if len(subs) > MAX_SUBREQUESTS:
                out.append(too_many(f"{path}.firstAvailable", len(subs), MAX_SUBREQUESTS))
            sub_names: set[str] = set()
            for j, sub in enumerate(subs):
                out.extend(dns_label(f"{path}.firstAvailable[{j}].name", _dict(sub).get("name")))
                if _dict(sub).get("name") in sub_names:
                    out.append(duplicate(f"{path}.firstAvailable[{j}].name", _dict(sub).get("name")))
                sub_names.add(str(_dict(sub).get("name")))
                out.extend(_validate_exact_request(f"{path}.firstAvailable[{j}]", _dict(sub)))
    constraints = _list(devices.get("constraints"))
    if len(constraints) > MAX_CONSTRAINTS:
        out.append(too_many(f"{field}.devices.constraints", len(constraints), MAX_CONSTRAINTS))
    out.extend(_validate_opaque_configs(f"{field}.devices.config", _list(devices.get("config"))))
    return out


def _validate_condition(field: str, cond: Any) -> list[Cause]:
    c = _dict(cond)
    out = qualified_name(f"{field}.type", c.get("type"))
    if c.get("status") not in ("True", "False", "Unknown"):
        out.append(not_supported(f"{field}.status", c.get("status"), ["False", "True", "Unknown"]))
    if not c.get("lastTransitionTime"):
        out.append(required(f"{field}.lastTransitionTime", "must be set"))
    elif not _RFC3339.fullmatch(str(c["lastTransitionTime"])):
        out.append(invalid(f"{field}.lastTransitionTime", c["lastTransitionTime"],
                           "must be an RFC 3339 time"))
    reason = c.get("reason")
    if not reason:
        out.append(required(f"{field}.reason"))
    else:
        if len(str(reason)) > MAX_CONDITION_REASON:
            out.append(too_long(f"{field}.reason", MAX_CONDITION_REASON))
        if not _CONDITION_REASON.fullmatch(str(reason)):
            out.append(invalid(f"{field}.reason", reason, "a condition reason must start with alphabetic "
                               "character, optionally followed by a string of alphanumeric characters or "
                               "'_,:', and must end with an alphanumeric character or '_'"))
    if len(str(c.get("message", ""))) > MAX_CONDITION_MESSAGE:
        out.append(too_long(f"{field}.message", MAX_CONDITION_MESSAGE))
    gen = c.get("observedGeneration", 0)
    if not isinstance(gen, int) or gen < 0:
        out.append(invalid(f"{field}.observedGeneration", gen, "must be greater than or equal to zero"))
    return out


def _validate_network_data(field: str, data: Any) -> list[Cause]:
    d = _dict(data)
    out: list[Cause] = []
    if len(str(d.get("interfaceName", ""))) > MAX_INTERFACE_NAME_LENGTH:
        out.append(too_long(f"{field}.interfaceName", MAX_INTERFACE_NAME_LENGTH))
    if len(str(d.get("hardwareAddress", ""))) > MAX_HARDWARE_ADDRESS_LENGTH:
        out.append(too_long(f"{field}.hardwareAddress", MAX_HARDWARE_ADDRESS_LENGTH))
    ips = _list(d.get("ips"))
    if len(ips) > MAX_IPS:
        out.append(too_many(f"{field}.ips", len(ips), MAX_IPS))
    seen: set[str] = set()
    for i, ip in enumerate(ips):
        try:
            if not isinstance(ip, str) or "/" not in ip:
                raise ValueError(ip)
            ipaddress.ip_interface(ip)
        except ValueError:
            out.append(invalid(f"{field}.ips[{i}]", ip,
                               "must be an IP address in CIDR form, (e.g. 10.9.8.7/24)"))
            continue
        if ip in seen:
            out.append(duplicate(f"{field}.ips[{i}]", ip))
        seen.add(ip)
    return out


def _allocated_ids(status: Mapping[str, Any]) -> set[tuple[str, str, str, str]]:
    """(driver, pool, device, shareID or "") of every result: a shared device's status entries
    name their share."""
    results = _list(_dict(_dict(status.get("allocation")).get("devices")).get("results"))
    return {(str(_dict(r).get("driver")), str(_dict(r).get("pool")), str(_dict(r).get("device")),
             str(_dict(r).get("shareID") or "")) for r in results}


def validate_claim_status(status: Any, old_status: Any = None) -> list[Cause]:
    s = _dict(status)
    out: list[Cause] = []
    reserved = _list(s.get("reservedFor"))
    if len(reserved) > MAX_RESERVED_FOR:
        out.append(too_many("status.reservedFor", len(reserved), MAX_RESERVED_FOR))
    old_alloc = _dict(old_status).get("allocation")
    if old_alloc and s.get("allocation") and s["allocation"] != old_alloc:
        out.append(immutable("status.allocation", "<allocation>"))
    elif s.get("allocation"):
        results = _list(_dict(_dict(s["allocation"]).get("devices")).get("results"))
        for i, r in enumerate(results):
            out.extend(_validate_result_share(f"status.allocation.devices.results[{i}]", _dict(r)))
    allocated = _allocated_ids(s)
    seen: set[tuple[str, str, str, str]] = set()
    for i, entry in enumerate(_list(s.get("devices"))):
        path = f"status.devices[{i}]"
        e = _dict(entry)
        out.extend(driver_name(f"{path}.driver", e.get("driver")))
        out.extend(pool_name(f"{path}.pool", e.get("pool")))
        out.extend(dns_label(f"{path}.device", e.get("device")))
        ident = (str(e.get("driver")), str(e.get("pool")), str(e.get("device")))
        key = (*ident, str(e.get("shareID") or ""))
        if all(e.get(k) for k in ("driver", "pool", "device")) and key not in allocated:
            out.append(invalid(path, "/".join(k for k in key if k),
                               "must be an allocated device in the claim"))
        if key in seen:
            out.append(duplicate(path, "/".join(ident)))
        seen.add(key)
        conditions = _list(e.get("conditions"))
        if len(conditions) > MAX_DEVICE_CONDITIONS:
            out.append(too_many(f"{path}.conditions", len(conditions), MAX_DEVICE_CONDITIONS))
        types: set[str] = set()
        for j, cond in enumerate(conditions):
            out.extend(_validate_condition(f"{path}.conditions[{j}]", cond))
            ctype = _dict(cond).get("type")
            if ctype in types:
                out.append(duplicate(f"{path}.conditions[{j}].type", ctype))
            types.add(str(ctype))
        if e.get("data") is not None and len(json.dumps(e["data"]).encode()) > MAX_RAW_EXTENSION_BYTES:
            out.append(too_long(f"{path}.data", MAX_RAW_EXTENSION_BYTES))
        if e.get("networkData") is not None:
            out.extend(_validate_network_data(f"{path}.networkData", e["networkData"]))
    return out


def validate_resource_claim(
    obj: Mapping[str, Any], old: Mapping[str, Any] | None = None, *, status_update: bool = False
) -> list[Cause]:
    out = validate_metadata(obj)
    if old is None or not status_update:
        out.extend(validate_claim_spec("spec", obj.get("spec")))
    if old is not None and not status_update and obj.get("spec") != old.get("spec"):
        out.append(immutable("spec", "<spec>"))
    if status_update:
        out.extend(validate_claim_status(obj.get("status"), _dict(old).get("status")))
    return out


def validate_resource_claim_template(
    obj: Mapping[str, Any], old: Mapping[str, Any] | None = None
) -> list[Cause]:
    out = validate_metadata(obj)
    out.extend(validate_claim_spec("spec.spec", _dict(obj.get("spec")).get("spec")))
    if old is not None and obj.get("spec") != old.get("spec"):
        out.append(immutable("spec", "<spec>"))
    return out


def validate(
    resource: str,
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
    *,
    status_update: bool = False,
) -> list[Cause]:
    """Every validation failure of an object about to be stored (old is the stored one on update)."""
    if resource == "resourceslices":
        return validate_resource_slice(obj, old)
    if resource == "resourceclaims":
        return validate_resource_claim(obj, old, status_update=status_update)
    if resource == "resourceclaimtemplates":
        return validate_resource_claim_template(obj, old)
    if resource == "deviceclasses":
        return validate_device_class(obj, old)
    if resource == "namespaces":
        return validate_metadata(obj, "label")
    return validate_metadata(obj)
