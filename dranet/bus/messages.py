"""Every message on the bus, in one place: the envelope, the error codes and each op's shapes.

Pure: encoding, decoding and shape checks, no sockets. docs/bus.md documents the same table for
people; tests/unit/test_bus_messages.py keeps the two in step.

Wire format (msgpack maps):
  request: {"v": 2, "id": str, "op": str, "deadline": float (CLOCK_MONOTONIC seconds), "body": map}
  reply:   {"v": 2, "id": str, "ok": true, "result": map}
         | {"v": 2, "id": str, "ok": false, "error": {"code": str, "message": str}}
  notification (PUB/SUB, two frames): topic, {"epoch": str, "seq": int, "body": map}

The deadline is on CLOCK_MONOTONIC: the bus is ipc:// only, so both ends share one kernel and one
monotonic clock, which no NTP step moves (docs/bus.md, "Deadlines").
"""

from __future__ import annotations

import enum
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

# 2: the deadline moved from unix time to CLOCK_MONOTONIC; a v1 peer gets unsupported_version.
PROTOCOL_VERSION = 2
# Application limit on one message; larger requests get a too_large error reply. ZeroMQ itself
# drops anything over MAX_WIRE_BYTES (the peer is disconnected), so a flood cannot exhaust memory.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_WIRE_BYTES = 16 * 1024 * 1024
MAX_ID_LENGTH = 64  # ours are 32 hex digits; a bound keeps the replay cache's keys small
# A deadline further ahead than this is not on our monotonic clock (a unix time, or a sender in
# another time namespace): refused, rather than running a call with no real bound.
MAX_TIMEOUT = 3600.0


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
    # Changes nothing: a resend may simply run again, so its reply is not kept in the server's
    # replay cache (which holds only replies of mutating ops). Declare it for every pure read.
    read_only: bool = False


def _s(struct_name: str, **fields: Any) -> Struct:
    return Struct(struct_name, fields)


def _open(struct_name: str, **fields: Any) -> Struct:
    return Struct(struct_name, fields, strict=False)


_EMPTY = _s("Empty")

PING_RESULT = _s(
    "PingResult",
    service=str,
    pid=int,
    pid_ns=Opt(str),  # its pid namespace: names the process from another one (`dranet audit`)
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
    taints=Opt([AnyMap]),  # DeviceTaints (API form), services/discovery/taints.py
)
INVENTORY = _s("Inventory", generation=int, devices=[DEVICE])

# A device whose restore could not complete (services/netns/health.py).
UNHEALTHY_DEVICE = _s("UnhealthyDevice", device=str, ifname=str, reason=str, message=str)
DEVICE_HEALTH = _s("DeviceHealth", devices=[UNHEALTHY_DEVICE])

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
        "share_id": Opt(str),  # a share of a shared NIC (KEP-5075): the pod gets a child of it
    },
    strict=False,
)

# ifname is "" for a device without a netdev (RDMA-only, InfiniBand): rdma_device names it then.
ATTACH_DEVICE = _s(
    "AttachDevice",
    device=str,
    ifname=str,
    config=AnyMap,
    claim_uid=Opt(str),
    rdma_device=Opt(str),
    share_id=Opt(str),
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
        "ebpf_detached": Opt([str]),  # disableEbpfPrograms: the programs the attach took off
    },
    strict=False,
)

GRANT_DEVICE = _s(
    "GrantDevice", device=str, ifname=str, config=AnyMap, rdma_device=Opt(str), share_id=Opt(str)
)
GRANT_CLAIM = _s("GrantClaim", uid=str, pod_uids=[str], devices=[GRANT_DEVICE])

OPS: dict[str, Op] = {
    # every service
    "ping": Op(
        "*",
        _EMPTY,
        PING_RESULT,
        read_only=True,
        doc="answers while alive; whether healthy and ready, with details",
    ),
    "snapshot": Op(
        "*",
        _s("SnapshotRequest", topic=str),
        _s("Snapshot", epoch=str, seq=int, body=AnyMap),
        read_only=True,
        doc="current state of a notification topic; subscribers ask for it on join",
    ),
    "metrics": Op(
        "*",
        _EMPTY,
        _s("Metrics", text=str),
        read_only=True,
        doc="this process's Prometheus metrics (text format); the pod's endpoint gathers them",
    ),
    # discovery
    "get_inventory": Op(
        "discovery", _EMPTY, INVENTORY, read_only=True, doc="the node's devices and their host interfaces"
    ),
    # dra
    "pod_devices": Op(
        "dra",
        _s("PodDevicesRequest", pod_uid=str),
        _s("PodDevices", devices=[PREPARED_DEVICE]),
        read_only=True,
        doc="the prepared devices of a pod, with their host interface and validated config",
    ),
    "claims": Op("dra", _EMPTY, _s("Claims", claims=[AnyMap]), read_only=True, doc="every prepared claim"),
    "plugin_state": Op(
        "dra",
        _EMPTY,
        _s("PluginState", registered=bool, registered_at=float, serving=bool),
        read_only=True,
        doc="whether the kubelet registered the DRA plugin (and when): discovery publishes only then",
    ),
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
    "list": Op(
        "netns",
        _EMPTY,
        _s("AttachmentList", attachments=[ATTACHMENT]),
        read_only=True,
        doc="current attachments",
    ),
    "netns_alive": Op(
        "netns",
        _s("NetnsAliveRequest", netns=[str]),
        _s("NetnsAlive", alive=[_s("AliveNetns", netns=str, id=str)]),
        read_only=True,
        doc="which of these netns paths name a live network namespace, with its identity",
    ),
    "release": Op(
        "netns",
        _s("ReleaseRequest", pod_uid=str, device=str),
        _s("ReleaseResult", released=[str]),
        doc="operator: forget an attachment whose restore keeps failing, without touching the kernel",
    ),
    "attached_in": Op(
        "netns",
        _s("AttachedInRequest", netns_id=str, devices=[str]),
        _s("AttachedIn", attached=[str], missing=[str]),
        read_only=True,
        doc='which of the devices are attached in the netns of this identity ("<st_dev>:<st_ino>"); '
        "the CDI hook asks it before a claimed pod's container starts",
    ),
    "ethtool_features": Op(
        "netns",
        _s("EthtoolFeaturesRequest", ifname=str),
        _s("EthtoolFeatures", features=AnyMap, fixed=[str], private_flags=AnyMap),
        read_only=True,
        doc="a host interface's ethtool table: each feature's value, the fixed ones, its private flags; "
        "dra checks a claim's ethtool names against it at prepare",
    ),
    "tcx_programs": Op(
        "netns",
        _EMPTY,
        _s("TcxPrograms", links=AnyMap),
        read_only=True,
        doc="the names of the tcx programs of each host interface that has some (bpf(2) needs the "
        "worker's capabilities); discovery publishes them as dra.net/tcxProgramNames",
    ),
    "device_health": Op(
        "netns",
        _EMPTY,
        DEVICE_HEALTH,
        read_only=True,
        doc="devices whose restore could not complete (reason restore-failed or restore-incomplete); "
        "discovery taints them in the slices",
    ),
    "grant": Op(
        "netns",
        _s("GrantRequest", claims=[GRANT_CLAIM], replace=Opt(bool)),
        _s("GrantResult", granted=int),
        doc="dra only: the claims it prepared (pod UIDs, devices, validated config); the worker "
        "attaches nothing else. replace: this is the whole set",
    ),
    "revoke": Op(
        "netns",
        _s("RevokeRequest", claim_uids=[str]),
        _s("RevokeResult", revoked=[str]),
        doc="dra only: claims unprepared; their devices may no longer be attached",
    ),
    "dhcp_acquire": Op(
        "netns",
        _s("DhcpAcquireRequest", claim_uid=str, device=str, ifname=str),
        _s("DhcpAcquireResult", lease=AnyMap),
        doc="take (or return the kept) DHCPv4 lease of a claim's device on its host interface, "
        "before the move; renewed by the worker while the device is attached",
    ),
    "dhcp_release": Op(
        "netns",
        _s("DhcpReleaseRequest", claim_uid=str, device=str),
        _s("DhcpReleaseResult", released=bool),
        doc="give a claim's device's DHCP lease back to the server and forget it (at unprepare)",
    ),
    # test and benchmark op served only when a test registers it (mutating: the tests count runs)
    "echo": Op("*", _open("Echo"), _open("Echo"), doc="returns its body"),
}


@dataclass(frozen=True)
class Topic:
    """A notification topic: the shape of each notification's body and of its snapshot's body.

    Bodies are open (unknown fields pass) so that a publisher can add a field without breaking a
    subscriber of the previous version; the declared fields are required and typed."""

    service: str
    event: Struct
    snapshot: Struct
    doc: str = ""


ATTACHMENT_EVENT = _open(
    "AttachmentEvent", pod_uid=str, device=str, state=str, claim_uid=Opt(str), network_data=Opt(AnyMap)
)
POD_EVENT = _open("PodEvent", id=str, event=str, pod_uid=str, time=float, devices=Opt([str]))

TOPICS: dict[str, Topic] = {
    "inventory": Topic(
        "discovery", INVENTORY, INVENTORY, doc="the inventory changed (body = get_inventory result)"
    ),
    "attachments": Topic(
        "netns",
        ATTACHMENT_EVENT,
        _open("Attachments", attachments=[ATTACHMENT_EVENT]),
        doc="an attach or detach finished (pod_uid, device, claim_uid, state, error?, network_data?)",
    ),
    "device_health": Topic(
        "netns",
        _open("DeviceHealthEvent", devices=[UNHEALTHY_DEVICE]),
        _open("DeviceHealthSnapshot", devices=[UNHEALTHY_DEVICE]),
        doc="the device_health result, whenever it changes",
    ),
    "pod_events": Topic(
        "nri",
        POD_EVENT,
        _open("PodEvents", events=[POD_EVENT]),
        doc="what happened to a pod's devices (event, pod_uid, pod, devices, code?, reason?, time)",
    ),
    # test topic published only by tests/busserver_main.py
    "echo": Topic("*", _open("Echo"), _open("Echo"), doc="any body"),
}


def check_notification(topic: str, body: Any, *, snapshot: bool = False) -> None:
    """Raise BusError(bad_request) if `topic` is undeclared or `body` does not fit its shape."""
    spec = TOPICS.get(topic)
    if spec is None:
        raise BusError(
            ErrorCode.BAD_REQUEST, f"topic {topic!r} is not declared in dranet.bus.messages.TOPICS"
        )
    check(spec.snapshot if snapshot else spec.event, body, f"{topic}{' snapshot' if snapshot else ''}")


# ---------------------------------------------------------------- envelope


@dataclass
class Request:
    id: str
    op: str
    deadline: float  # time.monotonic() seconds
    body: dict[str, Any] = field(default_factory=dict)
    v: int = PROTOCOL_VERSION


def new_request(op: str, body: Mapping[str, Any] | None, timeout: float) -> Request:
    return Request(id=uuid.uuid4().hex, op=op, deadline=time.monotonic() + timeout, body=dict(body or {}))


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
        raise BusError(
            ErrorCode.BAD_REQUEST, f"not a msgpack message ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(raw, dict):
        raise BusError(ErrorCode.BAD_REQUEST, f"envelope must be a map, got {_kind(raw)}")
    if raw.get("v") != PROTOCOL_VERSION:
        raise BusError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {raw.get('v')!r} is not supported (this side speaks {PROTOCOL_VERSION})",
        )
    check(_s("Envelope", v=int, id=str, op=str, deadline=float, body=AnyMap), raw, "envelope")
    if len(raw["id"]) > MAX_ID_LENGTH:
        raise BusError(ErrorCode.BAD_REQUEST, f"envelope.id: longer than {MAX_ID_LENGTH} characters")
    deadline = float(raw["deadline"])
    if not math.isfinite(deadline):
        raise BusError(ErrorCode.BAD_REQUEST, f"envelope.deadline: {deadline} is not a time")
    ahead = deadline - time.monotonic()
    if ahead > MAX_TIMEOUT:
        raise BusError(
            ErrorCode.BAD_REQUEST,
            f"envelope.deadline is {ahead:.0f}s ahead of this host's monotonic clock (limit "
            f"{MAX_TIMEOUT:.0f}s): the sender must use time.monotonic() on this host",
        )
    return Request(id=raw["id"], op=raw["op"], deadline=deadline, body=raw["body"])


def request_id_of(data: bytes) -> str:
    """Best effort: the id of a request we could not fully decode, so its sender can match the
    error reply. Reads the envelope map entry by entry, so bytes broken after the id still give it."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1))
    try:
        unpacker.feed(data)
        for _ in range(min(unpacker.read_map_header(), 8)):
            key = unpacker.unpack()
            value = unpacker.unpack()
            if key == "id":
                return value if isinstance(value, str) and len(value) <= MAX_ID_LENGTH else ""
    except Exception:  # msgpack raises several unrelated types on garbage
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
