"""Every message on the bus, in one place: the envelope, the error codes and each op's shapes.

Pure: encoding, decoding and shape checks, no sockets. docs/bus.md documents the same table for
people; tests/unit/test_bus_messages.py keeps the two in step.

Wire format (msgpack maps):
  request: {"v": 1, "id": str, "op": str, "deadline": float (absolute unix time), "body": map}
  reply:   {"v": 1, "id": str, "ok": true, "result": map}
         | {"v": 1, "id": str, "ok": false, "error": {"code": str, "message": str}}
  notification (PUB/SUB, two frames): topic, {"epoch": str, "seq": int, "body": map}
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
# Application limit on one message; larger requests get a too_large error reply. ZeroMQ itself
# drops anything over MAX_WIRE_BYTES (the peer is disconnected), so a flood cannot exhaust memory.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_WIRE_BYTES = 16 * 1024 * 1024


class ErrorCode(enum.StrEnum):
    """Stable error codes; clients branch on these, never on messages."""

    BAD_REQUEST = "bad_request"  # malformed envelope or body (field path in the message)
    UNKNOWN_OP = "unknown_op"  # the service does not serve this op
    UNSUPPORTED_VERSION = "unsupported_version"
    TOO_LARGE = "too_large"
    DEADLINE_EXCEEDED = "deadline_exceeded"  # the server would not start or finish in time
    TIMEOUT = "timeout"  # client side: no reply before the deadline
    NOT_FOUND = "not_found"
    NOT_ALLOWED = "not_allowed"  # refused by policy (uplink, foreign netns, ...)
    INVALID_CONFIG = "invalid_config"  # a claim configuration field is illegal
    CONFLICT = "conflict"  # the state does not allow it (already attached elsewhere, ...)
    KERNEL_ERROR = "kernel_error"  # a netlink/sysctl step failed; message names the step
    UNAVAILABLE = "unavailable"  # a dependency (API server, another service) is down
    INTERNAL = "internal"  # a bug: the message says where


class BusError(Exception):
    """A typed error carried over the bus: a stable code and a message saying why and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


# ---------------------------------------------------------------- shapes
# A shape is a small declarative type: a Python type, a list of one shape ([shape]), a Struct,
# Opt(shape) for an optional field, AnyMap for a free-form map.


@dataclass(frozen=True)
class Opt:
    shape: Any


class _AnyMap:
    def __repr__(self) -> str:
        return "map"


AnyMap = _AnyMap()


@dataclass(frozen=True)
class Struct:
    name: str
    fields: Mapping[str, Any]
    # Unknown keys are refused so that a typo is an error, not a silently ignored field.
    strict: bool = True


def check(shape: Any, value: Any, path: str = "body") -> None:
    """Raise BusError(bad_request) naming the first field of `value` that does not fit `shape`."""
    if isinstance(shape, Opt):
        if value is None:
            return
        check(shape.shape, value, path)
        return
    if shape is AnyMap:
        if not isinstance(value, dict):
            raise BusError(ErrorCode.BAD_REQUEST, f"{path}: expected a map, got {_kind(value)}")
        return
    if isinstance(shape, Struct):
        if not isinstance(value, dict):
            raise BusError(ErrorCode.BAD_REQUEST, f"{path}: expected a {shape.name} map, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str):
                raise BusError(ErrorCode.BAD_REQUEST, f"{path}: map keys must be strings")
            if shape.strict and key not in shape.fields:
                raise BusError(ErrorCode.BAD_REQUEST, f"{path}.{key}: unknown field for {shape.name}")
        for key, sub in shape.fields.items():
            if key not in value:
                if isinstance(sub, Opt):
                    continue
                raise BusError(ErrorCode.BAD_REQUEST, f"{path}.{key}: required")
            check(sub, value[key], f"{path}.{key}")
        return
    if isinstance(shape, list):
        if not isinstance(value, list | tuple):
            raise BusError(ErrorCode.BAD_REQUEST, f"{path}: expected a list, got {_kind(value)}")
        for i, item in enumerate(value):
            check(shape[0], item, f"{path}[{i}]")
        return
    if shape is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif shape is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, shape)
    if not ok:
        raise BusError(ErrorCode.BAD_REQUEST, f"{path}: expected {shape.__name__}, got {_kind(value)}")


def _kind(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


@dataclass(frozen=True)
class Op:
    service: str
    request: Struct
    result: Struct
    # Safe to repeat with the same effect: the client resends it after a lost reply or a server
    # restart until its deadline. Every op is idempotent by design (mutations are keyed by pod UID
    # and device); the flag exists so that a future non-idempotent op is sent once.
    idempotent: bool = True
    doc: str = ""


def _s(struct_name: str, **fields: Any) -> Struct:
    return Struct(struct_name, fields)


_EMPTY = _s("Empty")

PING_RESULT = _s(
    "PingResult",
    service=str,
    pid=int,
    uid=int,
    version=str,
    uptime_s=float,
    healthy=bool,
    ready=bool,
    details=AnyMap,
)

DEVICE = _s(
    "InventoryDevice",
    name=str,
    ifname=str,
    pci_address=str,
    rdma_device=str,
    allocatable=bool,
    attributes=AnyMap,
)
INVENTORY = _s("Inventory", generation=int, devices=[DEVICE])

PREPARED_DEVICE = Struct(
    "PreparedDevice",
    {
        "claim_uid": str,
        "claim_namespace": str,
        "claim_name": str,
        "request": str,
        "pool": str,
        "device": str,
        "ifname": str,
        "config": AnyMap,
        "rdma_device": Opt(str),
    },
    strict=False,
)

# ifname is "" for a device without a netdev (RDMA-only, InfiniBand): rdma_device names it then.
ATTACH_DEVICE = _s(
    "AttachDevice", device=str, ifname=str, config=AnyMap, claim_uid=Opt(str), rdma_device=Opt(str)
)
ATTACHMENT = Struct(
    "Attachment",
    {
        "pod_uid": Opt(str),
        "device": str,
        "pod_ifname": str,
        "hardware_address": str,
        "ips": [str],
        "state": str,
        "netns": Opt(str),  # the pod netns path the attach was given
        "netns_id": Opt(str),  # that netns's identity "<st_dev>:<st_ino>", as `netns_alive` gives it
        # `list` only, for an attached device: its link as read in the pod netns just now
        "admin_up": Opt(bool),
        "oper_up": Opt(bool),
        "carrier": Opt(bool),
        "operstate": Opt(str),
        "link_error": Opt(str),  # instead of the four above when the link could not be read
    },
    strict=False,
)

OPS: dict[str, Op] = {
    # every service
    "ping": Op("*", _EMPTY, PING_RESULT, doc="answers while alive; whether healthy and ready, with details"),
    "snapshot": Op(
        "*",
        _s("SnapshotRequest", topic=str),
        _s("Snapshot", epoch=str, seq=int, body=AnyMap),
        doc="current state of a notification topic; subscribers ask for it on join",
    ),
    # discovery
    "get_inventory": Op("discovery", _EMPTY, INVENTORY, doc="the node's devices and their host interfaces"),
    # dra
    "pod_devices": Op(
        "dra",
        _s("PodDevicesRequest", pod_uid=str),
        _s("PodDevices", devices=[PREPARED_DEVICE]),
        doc="the prepared devices of a pod, with their host interface and validated config",
    ),
    "claims": Op("dra", _EMPTY, _s("Claims", claims=[AnyMap]), doc="every prepared claim"),
    # netns
    "attach": Op(
        "netns",
        Struct(
            "AttachRequest",
            {
                "pod_uid": str,
                "netns": str,
                "devices": [ATTACH_DEVICE],
                "pod_name": Opt(str),
                "pod_namespace": Opt(str),
            },
        ),
        _s("AttachResult", attachments=[ATTACHMENT]),
        doc="move and configure a pod's devices into its netns; all or nothing",
    ),
    "detach": Op(
        "netns",
        _s("DetachRequest", pod_uid=str, devices=Opt([str]), netns=Opt(str)),
        _s("DetachResult", released=[str]),
        doc="give a pod's devices (all when devices is empty) back to the host, restored",
    ),
    "list": Op("netns", _EMPTY, _s("AttachmentList", attachments=[ATTACHMENT]), doc="current attachments"),
    "netns_alive": Op(
        "netns",
        _s("NetnsAliveRequest", netns=[str]),
        _s("NetnsAlive", alive=[_s("AliveNetns", netns=str, id=str)]),
        doc="which of these netns paths name a live network namespace, with its identity",
    ),
    "release": Op(
        "netns",
        _s("ReleaseRequest", pod_uid=str, device=str),
        _s("ReleaseResult", released=[str]),
        doc="operator: forget an attachment whose restore keeps failing, without touching the kernel",
    ),
    # test and benchmark op served only when a test registers it
    "echo": Op(
        "*", Struct("Echo", {}, strict=False), Struct("Echo", {}, strict=False), doc="returns its body"
    ),
}

TOPICS: dict[str, str] = {
    "inventory": "discovery: the inventory changed (body = get_inventory result)",
    "attachments": "netns: an attach or detach finished "
    "(pod_uid, device, claim_uid, state, error?, network_data?)",
    "pod_events": "nri: what happened to a pod's devices "
    "(event, pod_uid, pod, devices, code?, reason?, time)",
}


# ---------------------------------------------------------------- envelope


@dataclass
class Request:
    id: str
    op: str
    deadline: float
    body: dict[str, Any] = field(default_factory=dict)
    v: int = PROTOCOL_VERSION


def new_request(op: str, body: Mapping[str, Any] | None, timeout: float) -> Request:
    return Request(id=uuid.uuid4().hex, op=op, deadline=time.time() + timeout, body=dict(body or {}))


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    # strict_map_key=False would let an attacker use non-str keys; keep msgpack's default (str/bytes).
    return msgpack.unpackb(data, raw=False)


def encode_request(req: Request) -> bytes:
    return pack({"v": req.v, "id": req.id, "op": req.op, "deadline": req.deadline, "body": req.body})


def decode_request(data: bytes) -> Request:
    """Parse and check a request envelope. Raises BusError; .id is recovered where possible."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise BusError(ErrorCode.TOO_LARGE, f"request of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        raw = unpack(data)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise BusError(ErrorCode.BAD_REQUEST, f"not a msgpack message: {exc}") from None
    if not isinstance(raw, dict):
        raise BusError(ErrorCode.BAD_REQUEST, f"envelope must be a map, got {_kind(raw)}")
    if raw.get("v") != PROTOCOL_VERSION:
        raise BusError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {raw.get('v')!r} is not supported (this side speaks {PROTOCOL_VERSION})",
        )
    check(_s("Envelope", v=int, id=str, op=str, deadline=float, body=AnyMap), raw, "envelope")
    return Request(id=raw["id"], op=raw["op"], deadline=float(raw["deadline"]), body=raw["body"])


def request_id_of(data: bytes) -> str:
    """Best effort: the id of a request we could not fully decode, so the reply still routes."""
    try:
        raw = unpack(data)
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            return str(raw["id"])
    except Exception:
        pass
    return ""


def encode_reply(
    req_id: str, result: Mapping[str, Any] | None = None, error: BusError | None = None
) -> bytes:
    if error is not None:
        return pack({"v": PROTOCOL_VERSION, "id": req_id, "ok": False, "error": error.to_wire()})
    return pack({"v": PROTOCOL_VERSION, "id": req_id, "ok": True, "result": dict(result or {})})


@dataclass
class Reply:
    id: str
    result: dict[str, Any] | None
    error: BusError | None


def decode_reply(data: bytes) -> Reply:
    try:
        raw = unpack(data)
    except Exception as exc:
        raise BusError(ErrorCode.BAD_REQUEST, f"reply is not msgpack: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise BusError(ErrorCode.BAD_REQUEST, "reply envelope must be a map with an id")
    if raw.get("ok"):
        result = raw.get("result")
        return Reply(raw["id"], result if isinstance(result, dict) else {}, None)
    err = raw.get("error") or {}
    if not isinstance(err, dict):
        err = {}
    return Reply(
        raw["id"], None, BusError(str(err.get("code", ErrorCode.INTERNAL)), str(err.get("message", "")))
    )
