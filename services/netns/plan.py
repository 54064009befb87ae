"""Planning an attach: every check that comes before the first change, and what each device needs.

No kernel I/O here: the worker passes in its dumps of the host (`HostView`), a reader of one
link's addresses, and `existing`, which says whether a device is already attached as asked (and
gives it back to the host first when it is attached differently). Refusals are BusErrors with the
field path, the same for every caller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dranet.services.netns.model import (
    MAX_DEVICES_PER_POD,
    JournalEntry,
    RequestError,
    check_device_name,
    check_ifname,
    snapshot_addresses,
    snapshot_routes,
)
from dranet.services.netns.netlink import (
    READ_ONLY_PROC_SYS,
    RT_TABLE_MAIN,
    RTNH_F_ONLINK,
    SCOPE_LINK,
    Address,
    Link,
    Route,
    proc_sys_writable,
)

from dranet.bus.messages import BusError
from dranet.config import (
    IPVLAN,
    MACVLAN,
    ChildConfig,
    ConfigError,
    NetworkConfig,
    check_child_mtu,
    check_routes_reachable,
    check_supported,
    effective_interface_name,
    parse_network_config,
    validate_rdma_only,
)
from dranet.netlink.rtnl import LinkBrief
from dranet.uplinks import Uplink

Allowed = Callable[[str], bool] | Collection[str] | None
# (device, ifname, request item) -> the entry when already attached as asked, else None
Existing = Callable[[str, str, Mapping[str, Any]], JournalEntry | None]


@dataclass
class Plan:
    device: str
    ifname: str
    claim_uid: str
    raw: Mapping[str, Any]
    cfg: NetworkConfig
    pod_ifname: str
    link: Link
    existing: JournalEntry | None = None
    features: dict[str, bool] = field(default_factory=dict)  # kernel ethtool names, set by snapshot
    addresses: tuple[Address, ...] = ()  # the host's, as snapshotted
    routes: tuple[Route, ...] = ()  # through the link, as snapshotted
    master_name: str = ""  # the link's bridge or bond on the host
    rdma_device: str = ""  # set, with no link (NO_LINK), for a device without a netdev
    tc_programs: list[str] = field(default_factory=list)  # disableEbpfPrograms: read by snapshot
    share_id: str = ""  # a share of a shared NIC: the pod gets a child of link

    @property
    def rdma_only(self) -> bool:
        return not self.ifname

    @property
    def child(self) -> ChildConfig | None:
        """The child interface to create on link (which stays on the host), or None to move link."""
        return self.cfg.interface.child


# The "link" of a device without a netdev (RDMA-only): nothing to move, rename or restore.
NO_LINK = Link(index=0, name="", mtu=0, mac="", up=False)


@dataclass(frozen=True)
class HostView:
    """What planning reads of the host: every link's brief (names, masters), the whole link and
    the routes of each interface the request names, and the uplinks."""

    links: Sequence[LinkBrief]
    routes: Sequence[Route]  # through the links asked for
    by_name: Mapping[str, Link]  # the links asked for, by name and alternative name
    uplinks: Mapping[int, Uplink]  # model.uplinks over these links

    @classmethod
    def of(
        cls,
        links: Sequence[LinkBrief],
        routes: Sequence[Route],
        uplinks: Mapping[int, Uplink],
        asked: Sequence[Link],
    ) -> HostView:
        by_name = {link.name: link for link in asked}
        for link in asked:
            for alt in link.alt_names:
                by_name.setdefault(alt, link)
        return cls(links, routes, by_name, uplinks)


def is_allowed(allowed: Allowed, ifname: str) -> bool:
    if allowed is None:
        return True
    if callable(allowed):
        return bool(allowed(ifname))
    return ifname in allowed


def wants_child(d: Mapping[str, Any]) -> bool:
    """Whether an attach request's device gets a child interface (a share, or interface.type
    macvlan/ipvlan) rather than moving: other pods' children of the same NIC do not conflict."""
    iface = (d.get("config") or {}).get("interface")
    kind = iface.get("type") if isinstance(iface, Mapping) else None
    return bool(d.get("share_id")) or kind in (MACVLAN, IPVLAN)


def reservation(pod_uid: str, d: Mapping[str, Any]) -> str:
    """What an attach keeps other requests off: the host interface it moves, or for a child, that
    pod's child of it (children of one NIC for different pods are made side by side)."""
    if not d["ifname"]:
        return "rdma:" + str(d.get("rdma_device"))
    return f"{d['ifname']}/{pod_uid}" if wants_child(d) else str(d["ifname"])


def check_request(devices: Sequence[Mapping[str, Any]]) -> None:
    """The request's shape: 1..64 devices, legal names, no device or host interface twice."""
    if not devices:
        raise RequestError("invalid_config", "devices", "at least one device is required")
    if len(devices) > MAX_DEVICES_PER_POD:
        raise RequestError(
            "invalid_config", "devices", f"{len(devices)} devices; at most {MAX_DEVICES_PER_POD} per pod"
        )
    seen: set[str] = set()
    for i, d in enumerate(devices):
        check_device_name(d.get("device"), f"devices[{i}].device")  # type: ignore[arg-type]
        if d.get("ifname") == "" and d.get("rdma_device"):  # RDMA-only: no netdev
            check_device_name(d.get("rdma_device"), f"devices[{i}].rdma_device")  # type: ignore[arg-type]
            keys = (str(d["device"]), "rdma:" + str(d["rdma_device"]))
        else:
            check_ifname(d.get("ifname"), f"devices[{i}].ifname")  # type: ignore[arg-type]
            keys = (str(d["device"]), "if:" + str(d["ifname"]))
        for key in keys:
            if key in seen:
                raise RequestError("invalid_config", f"devices[{i}]", f"{key} appears twice")
            seen.add(key)


def _config_error(path: str, err: ConfigError) -> BusError:
    return BusError("invalid_config", f"{path}.config.{err.field}: {err.reason}")


def plan(
    devices: Sequence[Mapping[str, Any]],
    host: HostView,
    allowed: Allowed,
    existing: Existing,
    addresses_of: Callable[[int], Sequence[Address]],
    pod_names: Collection[str] = (),
    rdma_present: Callable[[str], bool] = lambda _name: False,
) -> list[Plan]:
    """One Plan per device, in order; BusError on the first problem, before any change.
    pod_names: the names of the links in the pod netns now. rdma_present: whether the node has
    this RDMA device (sysfs)."""
    plans: list[Plan] = []
    taken: set[str] = set()
    for i, d in enumerate(devices):
        device, ifname = str(d["device"]), str(d["ifname"])
        path = f"devices[{i}]"
        try:
            cfg = parse_network_config(d.get("config") or {})
        except ConfigError as err:
            raise _config_error(path, err) from None
        entry = existing(device, ifname, d)
        claim_uid = str(d.get("claim_uid") or "")
        raw = d.get("config") or {}
        if not ifname:
            plans.append(entry_plan(entry) if entry else rdma_plan(path, d, cfg, allowed, rdma_present))
            continue
        # The default pod name is the link's own name, also when the request names one of its
        # alternative names (the kernel refuses to rename a device to one of its altnames).
        link = entry.host.link if entry is not None else check_host_link(path, ifname, host, allowed)
        pod_ifname = effective_interface_name(cfg, link.name)
        if pod_ifname in taken:
            raise BusError("invalid_config", f"{path}: pod interface name {pod_ifname!r} is used twice")
        taken.add(pod_ifname)
        if entry is not None:
            plans.append(Plan(device, ifname, claim_uid, raw, cfg, pod_ifname, link, entry))
            continue
        if pod_ifname in pod_names:
            # The kernel would move the link and then refuse the name: refuse before the move.
            raise BusError(
                "invalid_config",
                f"{path}.config.interface.name: the pod's network namespace already has an interface "
                f"named {pod_ifname!r} (e.g. the CNI's eth0); choose another interface.name",
            )
        check_proc_sys(path, cfg, pod_ifname)
        if cfg.interface.child is not None or d.get("share_id"):
            plans.append(child_plan(path, d, cfg, pod_ifname, link))
            continue
        check_alt_names(path, link, pod_ifname, pod_names)
        # One dump each, shared by the checks and the snapshot.
        addresses = snapshot_addresses(addresses_of(link.index))
        check_config(path, cfg, addresses)
        routes = snapshot_routes(r for r in host.routes if r.oif == link.index)
        check_moved_routes(path, cfg, routes)
        plans.append(
            Plan(
                device,
                ifname,
                claim_uid,
                raw,
                cfg,
                pod_ifname,
                link,
                addresses=addresses,
                routes=routes,
                master_name=next((m.name for m in host.links if link.master and m.index == link.master), ""),
            )
        )
    return plans


def child_plan(path: str, d: Mapping[str, Any], cfg: NetworkConfig, pod_ifname: str, parent: Link) -> Plan:
    """The plan of a child interface of `parent` (a share of a shared NIC, or interface.type
    macvlan/ipvlan): nothing of the host is snapshotted, as nothing of it changes."""
    child = cfg.interface.child
    if child is None:
        raise BusError(
            "invalid_config",
            f"{path}.config.interface.type: passthrough would move the shared NIC {parent.name} out of "
            "the host; a share gets a child interface: use macvlan or ipvlan",
        )
    try:
        check_child_mtu(cfg.interface.mtu, parent.mtu, parent.name)
        check_supported(cfg)
        check_routes_reachable(cfg, cfg.interface.addresses)
    except ConfigError as err:
        raise _config_error(path, err) from None
    return Plan(
        str(d["device"]),
        parent.name,
        str(d.get("claim_uid") or ""),
        d.get("config") or {},
        cfg,
        pod_ifname,
        parent,
        share_id=str(d.get("share_id") or ""),
    )


def rdma_plan(
    path: str, d: Mapping[str, Any], cfg: NetworkConfig, allowed: Allowed, rdma_present: Callable[[str], bool]
) -> Plan:
    """The plan of a device without a netdev: only its RDMA device moves."""
    name = str(d["rdma_device"])
    if not rdma_present(name):
        raise BusError("not_found", f"{path}.rdma_device: no RDMA device {name!r} on the node")
    if not is_allowed(allowed, name):
        raise BusError(
            "not_allowed", f"{path}.rdma_device: {name!r} is not in the inventory of allocatable devices"
        )
    try:
        validate_rdma_only(cfg)
    except ConfigError as err:
        raise _config_error(path, err) from None
    return Plan(
        str(d["device"]),
        "",
        str(d.get("claim_uid") or ""),
        d.get("config") or {},
        cfg,
        "",
        NO_LINK,
        rdma_device=name,
    )


def entry_plan(entry: JournalEntry) -> Plan:
    """The plan of a device already attached as asked (nothing to do)."""
    cfg = parse_network_config(entry.config)
    return Plan(
        entry.device,
        entry.host.link.name,
        entry.claim_uid,
        entry.config,
        cfg,
        entry.pod_ifname,
        entry.host.link,
        entry,
        share_id=entry.share_id,
    )


def check_host_link(path: str, ifname: str, host: HostView, allowed: Allowed) -> Link:
    """The host link asked for (by name or alternative name): it exists, is allowed, is no uplink."""
    link = host.by_name.get(ifname)
    if link is None:
        raise BusError("not_found", f"{path}.ifname: no interface {ifname!r} on the node")
    if not is_allowed(allowed, ifname):
        raise BusError(
            "not_allowed", f"{path}.ifname: {ifname!r} is not in the inventory of allocatable devices"
        )
    if link.index in host.uplinks:
        raise BusError(
            "not_allowed",
            f"{path}.ifname: {ifname!r} is an uplink of the node ({host.uplinks[link.index].detail})",
        )
    if link.kind == "vrf" or link.index == 1 or ifname == "lo":
        raise BusError("not_allowed", f"{path}.ifname: {ifname!r} cannot be moved into a pod")
    return link


def check_alt_names(path: str, link: Link, pod_ifname: str, pod_names: Collection[str]) -> None:
    """The link's alternative names move with it; the kernel refuses the move when the pod's netns
    already uses one. (The one that becomes its pod name is dropped before the move.)"""
    for alt in link.alt_names:
        if alt != pod_ifname and alt in pod_names:
            raise BusError(
                "invalid_config",
                f"{path}.ifname: {link.name!r} has the alternative name {alt!r}, which the pod's "
                f"network namespace already uses; remove it from the device "
                f"(ip link property del dev {link.name} altname {alt}) or from the pod",
            )


def check_proc_sys(path: str, cfg: NetworkConfig, pod_ifname: str) -> None:
    """Refuse, before any change, what only /proc/sys can set when it is read-only here."""
    needs: list[tuple[str, str]] = []
    if cfg.interface.forwarding is not None:
        needs.append(
            ("forwarding", f"IPv6 forwarding is set through /proc/sys/net/ipv6/conf/{pod_ifname}/forwarding")
        )
    if cfg.interface.vrf is not None:
        needs.append(
            (
                "vrf",
                "a VRF needs net.ipv4.tcp_l3mdev_accept and udp_l3mdev_accept set in the pod's netns "
                "(sockets outside the VRF would not reach it otherwise), through /proc/sys",
            )
        )
    if needs and not proc_sys_writable():
        field, why = needs[0]
        raise BusError("not_allowed", f"{path}.config.interface.{field}: {why}, and {READ_ONLY_PROC_SYS}")


def check_config(path: str, cfg: NetworkConfig, host_addresses: Sequence[Address]) -> None:
    """What the config asks is supported, and its gateways are on-link for the pod's addresses."""
    addresses = list(cfg.interface.addresses) or [a.cidr for a in host_addresses]
    try:
        check_supported(cfg)
        check_routes_reachable(cfg, addresses)
    except ConfigError as err:
        raise _config_error(path, err) from None


def route_text(r: Route) -> str:
    """A route as `ip route` shows it, for messages."""
    text = r.destination + (f" via {r.gateway}" if r.gateway else "")
    return text + (f" table {r.table}" if r.table != RT_TABLE_MAIN else "")


def check_moved_routes(path: str, cfg: NetworkConfig, routes: Sequence[Route]) -> None:
    """The host's routes through the link move with it; with claimed addresses each must still work
    in the pod: its gateway on-link for those addresses (or under a link-scope route that moves or
    that the claim adds) and its preferred source one of them. Refused before any change, naming
    the route: the kernel would refuse it half-way through the attach. Inherited addresses are the
    ones the routes were made for, so there is nothing to check then."""
    if not cfg.interface.addresses:
        return
    pod = [ipaddress.ip_interface(a) for a in cfg.interface.addresses]
    own = {a.ip for a in pod}
    on_link = [a.network for a in pod]
    on_link += [ipaddress.ip_network(r.destination) for r in cfg.routes if r.scope == SCOPE_LINK]
    on_link += [ipaddress.ip_network(r.destination) for r in routes if r.scope == SCOPE_LINK]
    fix = "give the claim an address in that subnet (interface.addresses), or remove the route from the host"
    for r in routes:
        where = (
            f"{path}.config.interface.addresses: the host's route {route_text(r)} moves with the interface"
        )
        if r.source is not None and ipaddress.ip_address(r.source) not in own:
            raise BusError(
                "invalid_config",
                f"{where}, but its source {r.source} is not one of the claimed addresses; add it to "
                "interface.addresses, or remove the route from the host",
            )
        if r.gateway is None or r.flags & RTNH_F_ONLINK:
            continue
        gw = ipaddress.ip_address(r.gateway)
        if (gw.version == 6 and gw.is_link_local) or any(
            gw.version == n.version and gw in n for n in on_link
        ):
            continue
        raise BusError("invalid_config", f"{where}, but {gw} is not on-link for the claimed addresses; {fix}")
