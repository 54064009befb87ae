"""The kernel steps of an attach: snapshot the host side, then move and configure one device.

Free functions over explicit handles (the host's and the pod's `Netns`, the plan, the journal
entry, the test hook). Each step runs through errors.run_step under its name; the kernel tests
inject failures by these names (down, altname, move, lookup, sysctl, vrf, addresses, up, routes, rules,
neighbors, ethtool, rdma, ebpf).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from dranet.services.netns import ebpf, rdma
from dranet.services.netns.errors import Hook, StepError, run_step
from dranet.services.netns.model import (
    ATTACHED,
    HostSnapshot,
    JournalEntry,
    RequestError,
    snapshot_rules,
    sorted_routes,
)
from dranet.services.netns.netlink import (
    IPV4_DEVCONF_ARP_ANNOUNCE,
    IPV4_DEVCONF_ARP_IGNORE,
    IPV4_DEVCONF_FORWARDING,
    RT_TABLE_MAIN,
    Address,
    ChildLink,
    DevConf,
    Link,
    LinkChange,
    Neighbor,
    NetlinkError,
    Route,
    Rule,
    write_sysctls,
)
from dranet.services.netns.plan import Plan
from dranet.services.netns.podns import Netns

from dranet.config import ConfigError, NetworkConfig, check_private_flags, resolve_features
from dranet.rdma import char_devices


def snapshot(host: Netns, plan: Plan) -> HostSnapshot:
    """The host side of plan.link as it is now (what restore puts back). Also resolves the claim's
    ethtool feature names into plan.features (the changes to make). RequestError when the device
    lacks a feature or flag, or cannot change a feature as asked."""
    if plan.rdma_only or plan.child is not None:
        return HostSnapshot(link=plan.link)  # nothing of the host changes
    link = plan.link
    routes = plan.routes
    tables = {r.table for r in routes}
    rules = snapshot_rules(host.rtnl.rules(), tables) if tables - {RT_TABLE_MAIN} else ()
    neighbors = tuple(n for n in host.rtnl.neighbors(link.index) if n.state & 0x80)
    if plan.cfg.interface.disable_ebpf_programs:
        # The kernel drops tc filters with the clsact qdisc when the link changes netns: what
        # they were is read here, for the claim status.
        plan.tc_programs = ebpf.tc_programs(host, link.index)
    features: dict[str, bool] = {}
    pflags: dict[str, bool] = {}
    eth = plan.cfg.ethtool
    if eth is not None and (eth.features or eth.private_flags):
        table = host.ethtool.table(link.name, private_flags=bool(eth.private_flags))
        try:
            plan.features = resolve_features(eth.features, table)
            check_private_flags(eth.private_flags, table)
        except ConfigError as err:
            raise RequestError("invalid_config", f"config.{err.field}", err.reason) from None
        features = {k: table.features[k] for k in plan.features}
        pflags = {k: table.private_flags[k] for k in eth.private_flags}
    return HostSnapshot(
        link=link,
        addresses=plan.addresses,
        routes=routes,
        rules=rules,
        neighbors=neighbors,
        ethtool_features=features,
        ethtool_private_flags=pflags,
        devconf=host.rtnl.devconf(link.index) or DevConf(),
        master_name=plan.master_name,
    )


def configure(
    host: Netns,
    pod: Netns,
    plan: Plan,
    entry: JournalEntry,
    *,
    hook: Hook | None = None,
    sysfs_root: str = "/sys",
    dev_root: str = "/dev",
) -> JournalEntry:
    """Move the device into the pod and configure it there; the entry as attached."""
    cfg, iface, snap = plan.cfg, plan.cfg.interface, entry.host
    dev = plan.device

    def run(step: str, fn: Callable[[], Any]) -> Any:
        return run_step(step, dev, fn, hook)

    if plan.rdma_only:
        run("rdma", lambda: rdma.move_if_exclusive(entry.rdma_device, pod.fd))
        return entry.with_phase(
            ATTACHED, char_devices=char_device_records(entry.rdma_device, sysfs_root, dev_root)
        )

    if plan.child is not None:
        run("create", lambda: host.rtnl.create_child(child_link(plan, entry), pod.fd))
    else:
        place(host, pod, plan, snap.link, run)
    link = run("lookup", lambda: pod.rtnl.get_link(name=plan.pod_ifname))
    if link is None:
        raise StepError("lookup", dev, OSError(errno.ENODEV, f"{plan.pod_ifname} is not in the pod netns"))
    # IPv4 per-device settings over netlink (works with a read-only /proc/sys); IPv6 forwarding
    # has no netlink setter, so it alone is written to /proc/sys (checked writable when planning).
    ipv4_conf = ipv4_conf_of(cfg)
    if ipv4_conf:
        run("sysctl", lambda: pod.rtnl.set_ipv4_conf(link.index, ipv4_conf))
    sysctls = ipv6_sysctls(plan.pod_ifname, cfg)
    if sysctls:
        run("sysctl", lambda: write_sysctls(pod.fd, sysctls))
    vrf = iface.vrf
    if vrf is not None:
        run("vrf", lambda: enslave_vrf(pod, link, vrf.name, vrf.table))
    if iface.addresses:
        addresses = [Address(a) for a in iface.addresses]
    else:  # the host's, labels renamed with the link ("eth1:web" -> "net1:web")
        addresses = [relabel(a, snap.link.name, plan.pod_ifname) for a in snap.addresses]
    run("addresses", lambda: [pod.rtnl.add_address(link.index, a) for a in addresses])
    run("up", lambda: pod.rtnl.set_link(link.index, LinkChange(up=True)))
    # The host's routes through the link, and the rules to their tables, move with it whether or
    # not the claim gives addresses (as upstream); planning checked they fit the pod's addresses.
    routes = [pod_route(r, cfg, link.index) for r in cfg.routes]
    routes += [moved_route(r, link.index, vrf.table if vrf else None) for r in snap.routes]
    run("routes", lambda: add_all(pod.rtnl.add_route, sorted_routes(routes)))
    if vrf is None:
        rules = [pod_rule(r) for r in cfg.rules] + list(snap.rules)
        run("rules", lambda: add_all(pod.rtnl.add_rule, rules))
    neighbors = [Neighbor(n.destination, n.hardware_addr) for n in cfg.neighbors] + list(snap.neighbors)
    run("neighbors", lambda: add_all(lambda n: pod.rtnl.add_neighbor(link.index, n), neighbors))
    if plan.features:
        run("ethtool", lambda: pod.ethtool.set_features(plan.pod_ifname, plan.features))
    if cfg.ethtool is not None and cfg.ethtool.private_flags:
        flags = dict(cfg.ethtool.private_flags)
        run("ethtool", lambda: pod.ethtool.set_private_flags(plan.pod_ifname, flags))
    char_devs: tuple[Mapping[str, Any], ...] = ()
    if entry.rdma_device:
        run("rdma", lambda: rdma.move_if_exclusive(entry.rdma_device, pod.fd))
        char_devs = char_device_records(entry.rdma_device, sysfs_root, dev_root)
    detached: tuple[str, ...] | None = None
    if iface.disable_ebpf_programs:
        # Last: a rollback cannot put detached programs back (nor does a release, as upstream).
        in_pod = run("ebpf", lambda: ebpf.detach_all(pod, link.index))
        detached = tuple(dict.fromkeys([*plan.tc_programs, *in_pod]))
    # The MAC was set by the move and read back by the lookup; nothing later changes it.
    return entry.with_phase(
        ATTACHED,
        hardware_address=link.mac,
        ips=tuple(a.cidr for a in addresses),
        char_devices=char_devs,
        pod_ifindex=link.index,
        ebpf_detached=detached,
    )


def char_device_records(rdma_device: str, sysfs_root: str, dev_root: str) -> tuple[dict[str, Any], ...]:
    """The RDMA device's char devices in the attachment's form (nri injects them into containers)."""
    return tuple(c.to_dict() for c in char_devices(rdma_device, sysfs_root, dev_root))


def place(
    host: Netns, pod: Netns, plan: Plan, link: Link, run: Callable[[str, Callable[[], Any]], Any]
) -> None:
    """Move the device into the pod, renamed and with its link attributes, in one request."""
    iface = plan.cfg.interface
    if link.up:
        # Down first, as its own request: the kernel moves a down link without the teardown
        # it would otherwise do inside the move (measured: the move alone is then faster).
        run("down", lambda: host.rtnl.set_link(link.index, LinkChange(up=False)))
    if plan.pod_ifname in link.alt_names:
        # The kernel refuses to rename a device to one of its own alternative names (after the
        # move): drop that one first; restore gives it back (it is in the snapshot).
        run("altname", lambda: host.rtnl.del_alt_name(link.index, plan.pod_ifname))
    run(
        "move",
        lambda: host.rtnl.set_link(
            link.index,
            LinkChange(
                netns_fd=pod.fd,
                name=plan.pod_ifname,
                mtu=iface.mtu,
                mac=iface.hardware_addr,
                gso_max_size=iface.gso_max_size,
                gro_max_size=iface.gro_max_size,
                gso_ipv4_max_size=iface.gso_ipv4_max_size,
                gro_ipv4_max_size=iface.gro_ipv4_max_size,
            ),
        ),
    )


def child_link(plan: Plan, entry: JournalEntry) -> ChildLink:
    """The child interface of plan.link the entry names (its MAC chosen before the journal write)."""
    child = plan.child
    assert child is not None
    return ChildLink(
        name=plan.pod_ifname,
        kind=child.kind,
        parent=plan.link.index,
        mode=child.mode,
        flag=child.flag,
        mtu=plan.cfg.interface.mtu,
        mac=entry.hardware_address,
    )


def child_mac(plan: Plan) -> str:
    """The MAC a child gets: the claim's, else a random locally administered unicast one for a
    macvlan (chosen before the create, so the journal can tell the child apart); an ipvlan child
    has its parent's."""
    child = plan.child
    if child is None or child.kind != "macvlan":
        return ""
    if plan.cfg.interface.hardware_addr:
        return plan.cfg.interface.hardware_addr
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def enslave_vrf(pod: Netns, link: Link, name: str, table: int) -> None:
    """Put link under VRF `name` in the pod netns, creating the VRF (with table) when missing."""
    vrf = pod.rtnl.get_link(name=name)
    if vrf is None:
        pod.rtnl.create_link(name, "vrf", [("IFLA_VRF_TABLE", table)])
        vrf = pod.rtnl.get_link(name=name)
        if vrf is None:
            raise NetlinkError(errno.ENODEV, f"vrf {name} vanished after creation")
        pod.rtnl.set_link(vrf.index, LinkChange(up=True))
        write_sysctls(pod.fd, [("net/ipv4/tcp_l3mdev_accept", "1"), ("net/ipv4/udp_l3mdev_accept", "1")])
    elif vrf.kind != "vrf":
        raise NetlinkError(errno.EEXIST, f"{name} exists in the pod netns and is not a VRF")
    pod.rtnl.set_link(link.index, LinkChange(master=vrf.index))


# ---------------------------------------------------------------- pure helpers


def ipv4_conf_of(cfg: NetworkConfig) -> dict[int, int]:
    """The claim's per-device IPv4 settings as IPV4_DEVCONF_* -> value."""
    iface = cfg.interface
    out: dict[int, int] = {}
    if iface.arp_ignore is not None:
        out[IPV4_DEVCONF_ARP_IGNORE] = iface.arp_ignore
    if iface.arp_announce is not None:
        out[IPV4_DEVCONF_ARP_ANNOUNCE] = iface.arp_announce
    if iface.forwarding is not None:
        out[IPV4_DEVCONF_FORWARDING] = int(iface.forwarding)
    return out


def ipv6_sysctls(ifname: str, cfg: NetworkConfig) -> list[tuple[str, str]]:
    """The /proc/sys writes left: IPv6 forwarding (the kernel has no netlink setter for it)."""
    if cfg.interface.forwarding is None:
        return []
    return [(f"net/ipv6/conf/{ifname}/forwarding", "1" if cfg.interface.forwarding else "0")]


def pod_route(r: Any, cfg: NetworkConfig, oif: int) -> Route:
    table = cfg.interface.vrf.table if cfg.interface.vrf else (r.table or RT_TABLE_MAIN)
    return Route(
        destination=r.destination, gateway=r.gateway, source=r.source, oif=oif, table=table, scope=r.scope
    )


def moved_route(r: Route, oif: int, vrf_table: int | None) -> Route:
    """A snapshotted route through another interface index (and the VRF's table, when given)."""
    return Route(
        destination=r.destination,
        gateway=r.gateway,
        source=r.source,
        oif=oif,
        table=vrf_table or r.table,
        scope=r.scope,
        protocol=r.protocol,
        priority=r.priority,
        flags=r.flags,
        metrics=r.metrics,
    )


def relabel(address: Address, old: str, new: str) -> Address:
    """The address with its label following a rename (a label starts with its link's name)."""
    if not address.label.startswith(old) or old == new:
        return address
    return replace(address, label=(new + address.label[len(old) :])[:15])


def pod_rule(r: Any) -> Rule:
    family = 10 if ":" in (r.source or r.destination or "") else 2
    return Rule(
        family=family,
        table=r.table or RT_TABLE_MAIN,
        priority=r.priority,
        source=r.source,
        destination=r.destination,
    )


def add_all(fn: Callable[[Any], None], items: Iterable[Any], extra: tuple[int, ...] = ()) -> None:
    """Add each, treating "already there" as done (a retry, or the kernel's own copy)."""
    for item in items:
        try:
            fn(item)
        except NetlinkError as exc:
            if exc.errno not in (errno.EEXIST, *extra):
                raise
