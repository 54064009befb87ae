"""Restore: give an attached device back to the host as it was snapshotted, wherever it is now.

Three parts, in order: find the device and move it back out of the pod netns (when the pod netns
is still there); put back its link attributes (name, MTU, MAC, GSO/GRO sizes, state) in one
request; put back its ethtool settings, addresses, routes, rules and permanent neighbours. Each
kernel call runs as a named step (errors.run_step), so a failure says which part failed.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from contextlib import suppress

from dranet.services.netns import rdma
from dranet.services.netns.errors import StepError, run_step
from dranet.services.netns.model import HostSnapshot, JournalEntry, sorted_routes
from dranet.services.netns.netlink import Link, LinkChange
from dranet.services.netns.podns import Netns
from dranet.services.netns.steps import add_all, moved_route

log = logging.getLogger(__name__)


def restore(host: Netns, entry: JournalEntry, pod: Netns | None) -> None:
    """Put the device of `entry` back on the host as snapshotted. pod: its netns, when it still
    exists. Raises StepError naming the step that failed."""
    dev = entry.device
    if entry.rdma_device and pod is not None:
        with suppress(OSError):  # best effort: the RDMA device follows its netns back on teardown
            rdma.move_if_exclusive(entry.rdma_device, host.fd)
    if pod is not None:
        move_back(host, pod, entry)
    link = find_on_host(host, entry)
    if link is None:
        # A virtual device dies with its netns; nothing is left to restore.
        log.warning("device not found anywhere; assuming its netns took it", extra={"device": dev})
        return
    restore_link(host, link, entry.host.link, dev)
    restore_config(host, link.index, entry.host, dev)


def move_back(host: Netns, pod: Netns, entry: JournalEntry) -> None:
    """Move the device out of the pod netns (found by pod name, then index, checked by identity),
    under its host name and attributes, in one request."""
    want, dev = entry.host.link, entry.device
    try:
        in_pod = pod.rtnl.get_link(name=entry.pod_ifname)
        if in_pod is None or not same_device(in_pod, entry):
            in_pod = pod.rtnl.get_link(index=want.index)
            if in_pod is not None and not same_device(in_pod, entry):
                in_pod = None
    except OSError:
        in_pod = None
    if in_pod is None:
        return
    index = in_pod.index
    change = restore_change(want, in_pod)
    change.netns_fd = host.fd
    if in_pod.up:
        # Down as its own request first, as in attach: the move of a down link is cheaper.
        run_step("down", dev, lambda: pod.rtnl.set_link(index, LinkChange(up=False)))
    if in_pod.master:
        run_step("detach-vrf", dev, lambda: pod.rtnl.set_link(index, LinkChange(master=0)))
    try:
        run_step("move-back", dev, lambda: pod.rtnl.set_link(index, change))
    except StepError as err:
        if err.errno != errno.EEXIST:
            raise
        # Someone took the original name on the host meanwhile: come back under a free one
        # rather than stay in the pod; the error log says which.
        change.name = "dranet%d"
        run_step("move-back", dev, lambda: pod.rtnl.set_link(index, change))
        log.error("host name %s was taken; device came back renamed", want.name, extra={"device": dev})


def restore_link(host: Netns, link: Link, want: Link, dev: str) -> None:
    """Host-side attributes that survive a move (name, MTU, MAC, GSO/GRO) and the admin state."""
    change = restore_change(want, link)
    changes = any(
        v is not None
        for v in (
            change.name,
            change.mtu,
            change.mac,
            change.gso_max_size,
            change.gro_max_size,
            change.gso_ipv4_max_size,
            change.gro_ipv4_max_size,
        )
    )
    # Down for the change (some NICs refuse a new MAC or MTU while up), or because it was down;
    # a device that never left (a crash before its move) is not bounced for nothing.
    if link.up and (changes or not want.up):
        change.up = False
    if changes or change.up is not None:
        run_step("restore-link", dev, lambda: host.rtnl.set_link(link.index, change))


def restore_config(host: Netns, index: int, snap: HostSnapshot, dev: str) -> None:
    """Ethtool, addresses, link up (when it was), routes, rules, neighbours: what is missing."""
    name = snap.link.name
    if snap.ethtool_features:
        features = dict(snap.ethtool_features)
        run_step("restore-ethtool", dev, lambda: host.ethtool.set_features(name, features))
    if snap.ethtool_private_flags:
        flags = dict(snap.ethtool_private_flags)
        run_step("restore-ethtool", dev, lambda: host.ethtool.set_private_flags(name, flags))
    present = {a.cidr for a in host.rtnl.addresses(index)}
    missing = [a for a in snap.addresses if a.cidr not in present]
    run_step("restore-addresses", dev, lambda: add_all(lambda a: host.rtnl.add_address(index, a), missing))
    if snap.link.up:
        run_step("restore-up", dev, lambda: host.rtnl.set_link(index, LinkChange(up=True)))
        moved = [moved_route(r, index, None) for r in sorted_routes(snap.routes)]
        run_step("restore-routes", dev, lambda: add_all(host.rtnl.add_route, moved, extra=(errno.ENETDOWN,)))
    run_step("restore-rules", dev, lambda: add_all(host.rtnl.add_rule, snap.rules))
    run_step(
        "restore-neighbors", dev, lambda: add_all(lambda n: host.rtnl.add_neighbor(index, n), snap.neighbors)
    )


def find_on_host(host: Netns, entry: JournalEntry) -> Link | None:
    want = entry.host.link
    for probe in (
        lambda: host.rtnl.get_link(index=want.index),
        lambda: host.rtnl.get_link(name=want.name),
        lambda: host.rtnl.get_link(name=entry.pod_ifname),
    ):
        link = probe()
        if link is not None and same_device(link, entry):
            return link
    # The kernel returns a physical NIC of a dead netns as dev<N>: match it by hardware address.
    macs = {m for m in (want.perm_mac, want.mac, entry.hardware_address) if m}
    for link in host.rtnl.links():
        if (link.perm_mac and link.perm_mac == want.perm_mac) or (
            not want.perm_mac and link.mac in macs and link.kind == want.kind
        ):
            return link
    return None


def same_device(link: Link, entry: JournalEntry) -> bool:
    want = entry.host.link
    if want.perm_mac and link.perm_mac:
        return link.perm_mac == want.perm_mac
    if link.kind != want.kind:
        return False
    macs = {want.mac, entry.hardware_address, _cfg_mac(entry)}
    return link.mac in macs


def _cfg_mac(entry: JournalEntry) -> str:
    iface = entry.config.get("interface") if isinstance(entry.config, Mapping) else None
    mac = iface.get("hardwareAddr") if isinstance(iface, Mapping) else None
    return str(mac).lower() if mac else ""


def restore_change(want: Link, now: Link) -> LinkChange:
    """Only what differs: setting an unchanged MTU on some NICs resets them."""

    def differs(wanted: int | None, current: int | None) -> int | None:
        return wanted if wanted and current != wanted else None

    return LinkChange(
        name=want.name if now.name != want.name else None,
        mtu=want.mtu if now.mtu != want.mtu else None,
        mac=want.mac if want.mac and now.mac != want.mac else None,
        gso_max_size=differs(want.gso_max_size, now.gso_max_size),
        gro_max_size=differs(want.gro_max_size, now.gro_max_size),
        gso_ipv4_max_size=differs(want.gso_ipv4_max_size, now.gso_ipv4_max_size),
        gro_ipv4_max_size=differs(want.gro_ipv4_max_size, now.gro_ipv4_max_size),
    )
