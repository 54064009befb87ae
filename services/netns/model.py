"""The worker's records and pure rules: request checks, host snapshots, journal entries, the plan.

No I/O here: everything is a value that tests build and compare directly.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dranet.services.netns.netlink import (
    FR_ACT_TO_TBL,
    RT_TABLE_LOCAL,
    RT_TABLE_MAIN,
    RTPROT_KERNEL,
    SCOPE_LINK,
    Address,
    DevConf,
    Link,
    Neighbor,
    Route,
    Rule,
)

from dranet.uplinks import LinkFacts, RouteFacts, Uplink, UplinkPolicy, node_uplinks

JOURNAL_VERSION = 1
MAX_DEVICES_PER_POD = 64
# Kubernetes UIDs are UUIDs; accept any name that is safe as a file name part. Checked with
# fullmatch: `$` would also match before a trailing newline ("p\n" named a journal file).
_UID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# DRA device names are DNS labels; keep to characters that are safe in a file name.
_DEVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")

# Phases of a journal entry, written before the step they name starts.
ATTACHING = "attaching"
ATTACHED = "attached"
DETACHING = "detaching"


class RequestError(ValueError):
    """A request refused before any change: a bus error code, the field and the reason."""

    def __init__(self, code: str, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.code = code
        self.field = field
        self.reason = reason


def check_pod_uid(uid: str, path: str = "pod_uid") -> None:
    if not isinstance(uid, str) or not _UID_RE.fullmatch(uid):
        what = "pod" if path == "pod_uid" else "claim"
        raise RequestError("invalid_config", path, f"{uid!r} is not a valid {what} UID")


def check_device_name(name: str, path: str) -> None:
    if not isinstance(name, str) or not _DEVICE_RE.fullmatch(name):
        raise RequestError("invalid_config", path, f"{name!r} is not a valid device name")


def check_ifname(name: str, path: str) -> None:
    """Linux interface names: 1..15 bytes, no '/', ':' or whitespace, not '.' or '..'."""
    if not isinstance(name, str) or not _IFNAME_RE.fullmatch(name) or name in (".", ".."):
        raise RequestError(
            "invalid_config",
            path,
            f"{name!r} is not a legal interface name "
            "(1-15 of letters, digits, '-', '_', '.'; not '.' or '..')",
        )


def route_facts(r: Route) -> RouteFacts:
    return RouteFacts(
        family=r.family,
        table=r.table,
        dst_len=int(r.destination.rsplit("/", 1)[1]),
        oifs=(r.oif, *r.multipath_oifs) if r.oif else r.multipath_oifs,
        metric=r.priority or 0,
        type=r.type,
    )


def uplinks(
    links: Sequence[LinkFacts],
    routes: Sequence[Route],
    lookup: Callable[[int, str], Route | None],
    policy: UplinkPolicy,
) -> dict[int, Uplink]:
    """The node's uplinks by ifindex: dranet/uplinks.py's rule (the one discovery applies) over the
    worker's records. routes: the rule reads only the default routes. lookup: the host netns's
    route lookup (Rtnl.route_lookup)."""

    def facts(family: int, destination: str) -> RouteFacts | None:
        found = lookup(family, destination)
        return route_facts(found) if found is not None else None

    return node_uplinks(links, [route_facts(r) for r in routes], facts, policy)


# ---------------------------------------------------------------- snapshot and journal


@dataclass(frozen=True)
class HostSnapshot:
    """What the host side of an interface looked like before we touched it."""

    link: Link
    addresses: tuple[Address, ...] = ()
    routes: tuple[Route, ...] = ()
    rules: tuple[Rule, ...] = ()
    neighbors: tuple[Neighbor, ...] = ()
    ethtool_features: Mapping[str, bool] = field(default_factory=dict)
    ethtool_private_flags: Mapping[str, bool] = field(default_factory=dict)
    devconf: DevConf = field(default_factory=DevConf)  # per-device sysctls (a netns move resets them)
    master_name: str = ""  # the bridge or bond the link was enslaved to (link.master is its index)

    def to_dict(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: that deep-copies every value (a millisecond per journal
        # write on the pod start path); these records hold only immutable values.
        return {
            "link": _plain(self.link),
            "addresses": [_plain(a) for a in self.addresses],
            "routes": [_plain(r) for r in self.routes],
            "rules": [_plain(r) for r in self.rules],
            "neighbors": [_plain(n) for n in self.neighbors],
            "ethtool_features": dict(self.ethtool_features),
            "ethtool_private_flags": dict(self.ethtool_private_flags),
            "devconf": {"ipv4": dict(self.devconf.ipv4), "ipv6": dict(self.devconf.ipv6)},
            "master_name": self.master_name,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HostSnapshot:
        link = dict(d["link"])
        link["alt_names"] = tuple(link.get("alt_names", ()))
        return cls(
            link=Link(**link),
            addresses=tuple(Address(**a) for a in d.get("addresses", ())),
            routes=tuple(
                Route(
                    **{
                        **r,
                        "multipath_oifs": tuple(r.get("multipath_oifs", ())),
                        "metrics": tuple((str(k), int(v)) for k, v in r.get("metrics", ())),
                    }
                )
                for r in d.get("routes", ())
            ),
            rules=tuple(Rule(**r) for r in d.get("rules", ())),
            neighbors=tuple(Neighbor(**n) for n in d.get("neighbors", ())),
            ethtool_features=dict(d.get("ethtool_features", {})),
            ethtool_private_flags=dict(d.get("ethtool_private_flags", {})),
            devconf=DevConf(
                ipv4={int(k): int(v) for k, v in d.get("devconf", {}).get("ipv4", {}).items()},
                ipv6={str(k): int(v) for k, v in d.get("devconf", {}).get("ipv6", {}).items()},
            ),
            master_name=d.get("master_name", ""),
        )


def _plain(record: Link | Address | Route | Rule | Neighbor) -> dict[str, Any]:
    """A frozen record of immutable values as a dict of its fields (what asdict gives, uncopied)."""
    return dict(vars(record))


def snapshot_addresses(addresses: Iterable[Address]) -> tuple[Address, ...]:
    """The addresses worth restoring: not IPv6 link-local (the kernel makes those itself)."""
    return tuple(a for a in addresses if not (a.family == socket.AF_INET6 and a.scope == SCOPE_LINK))


def snapshot_routes(routes: Iterable[Route]) -> tuple[Route, ...]:
    """Routes through the interface that restoring must re-add: not the kernel's own prefix
    routes (the addresses bring them back), not the local table, not IPv6 link-local."""
    out = []
    for r in routes:
        if r.protocol == RTPROT_KERNEL or r.table == RT_TABLE_LOCAL:
            continue
        if r.family == socket.AF_INET6 and r.destination.lower().startswith(("fe80:", "ff00:")):
            continue
        if r.multipath_oifs:
            continue  # multipath routes span interfaces; never ours to move
        out.append(r)
    return tuple(out)


def snapshot_rules(rules: Iterable[Rule], tables: set[int]) -> tuple[Rule, ...]:
    """The rules that send traffic to the interface's own tables (not main/local/default)."""
    own = tables - {0, 253, RT_TABLE_MAIN, RT_TABLE_LOCAL}
    return tuple(r for r in rules if r.table in own and r.action == FR_ACT_TO_TBL)


@dataclass(frozen=True)
class JournalEntry:
    """One (pod, device) attachment as it is on disk: enough to finish or undo it after a crash."""

    pod_uid: str
    device: str
    claim_uid: str
    netns: str
    netns_id: tuple[int, int]  # (st_dev, st_ino) of the pod netns file: the netns's identity
    phase: str
    host: HostSnapshot
    pod_ifname: str
    config: Mapping[str, Any]
    hardware_address: str = ""
    ips: tuple[str, ...] = ()
    rdma_device: str = ""
    char_devices: tuple[Mapping[str, Any], ...] = ()
    pod_ifindex: int = 0  # the link's index in the pod netns once moved: its identity there
    ebpf_detached: tuple[str, ...] | None = None  # disableEbpfPrograms: what the attach took off
    # A child interface ("macvlan"/"ipvlan") of host.link, which never leaves the host; "" when
    # the device itself moved. share_id: the allocation's share of a shared NIC.
    child: str = ""
    share_id: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.pod_uid, self.device)

    def with_phase(self, phase: str, **changes: Any) -> JournalEntry:
        return replace(self, phase=phase, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": JOURNAL_VERSION,
            "pod_uid": self.pod_uid,
            "device": self.device,
            "claim_uid": self.claim_uid,
            "netns": self.netns,
            "netns_id": list(self.netns_id),
            "phase": self.phase,
            "host": self.host.to_dict(),
            "pod_ifname": self.pod_ifname,
            "config": dict(self.config),
            "hardware_address": self.hardware_address,
            "ips": list(self.ips),
            "rdma_device": self.rdma_device,
            "char_devices": [dict(c) for c in self.char_devices],
            "pod_ifindex": self.pod_ifindex,
            "ebpf_detached": None if self.ebpf_detached is None else list(self.ebpf_detached),
            "child": self.child,
            "share_id": self.share_id,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JournalEntry:
        if d.get("version") != JOURNAL_VERSION:
            raise ValueError(f"journal version {d.get('version')!r} is not {JOURNAL_VERSION}")
        return cls(
            pod_uid=d["pod_uid"],
            device=d["device"],
            claim_uid=d.get("claim_uid", ""),
            netns=d["netns"],
            netns_id=(int(d["netns_id"][0]), int(d["netns_id"][1])),
            phase=d["phase"],
            host=HostSnapshot.from_dict(d["host"]),
            pod_ifname=d["pod_ifname"],
            config=dict(d.get("config", {})),
            hardware_address=d.get("hardware_address", ""),
            ips=tuple(d.get("ips", ())),
            rdma_device=d.get("rdma_device", ""),
            char_devices=tuple(d.get("char_devices", ())),
            pod_ifindex=int(d.get("pod_ifindex", 0)),
            ebpf_detached=None if d.get("ebpf_detached") is None else tuple(d["ebpf_detached"]),
            child=str(d.get("child") or ""),
            share_id=str(d.get("share_id") or ""),
        )

    def attachment(self) -> dict[str, Any]:
        """The bus `Attachment` shape."""
        out: dict[str, Any] = {
            "pod_uid": self.pod_uid,
            "device": self.device,
            "claim_uid": self.claim_uid,
            "pod_ifname": self.pod_ifname,
            "hardware_address": self.hardware_address,
            "ips": list(self.ips),
            "state": self.phase,
            "netns": self.netns,
            "netns_id": netns_ident(self.netns_id),
        }
        if self.rdma_device:
            out["rdma_device"] = self.rdma_device
            out["char_devices"] = [dict(c) for c in self.char_devices]
        if self.ebpf_detached is not None:
            out["ebpf_detached"] = list(self.ebpf_detached)
        return out


def netns_ident(ident: tuple[int, int]) -> str:
    """A netns identity as the bus carries it: "<st_dev>:<st_ino>" of its nsfs file."""
    return f"{ident[0]}:{ident[1]}"


def config_digest(config: Mapping[str, Any]) -> str:
    """A stable digest of a raw claim config, to tell "attached as asked" from "asked differently"."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sorted_routes(routes: Iterable[Route]) -> list[Route]:
    """Link-scope routes first: a gateway route needs its on-link route to exist already."""
    return sorted(routes, key=lambda r: (r.scope != SCOPE_LINK, r.gateway is not None))
