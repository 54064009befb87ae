"""Restore: give an attached device back to the host as it was snapshotted, wherever it is now.

In order: find the device in the pod netns by identity and move it back (this part must succeed,
or the device stays attached and the caller retries); find it on the host by identity; then put
back, each step on its own so one failure does not stop the rest: link attributes (name, MTU,
MAC, GSO/GRO sizes), alternative names, bridge or bond master, ethtool, per-device sysctls,
addresses, link state, routes, rules, permanent neighbours. A step that fails is reported in the
outcome: the device is back on the host in the best state possible, never left down and blocked.

Identity, never assumption: a device is the one at the index, or under the name, where the
journal says it is, with the kind and MAC recorded (or the permanent MAC); a search by MAC alone
is never trusted (VLAN siblings share their parent's MAC), except among the links that appeared
in the pod netns during the failed attach being rolled back. Nothing is renamed or re-addressed
before the uplink rule is checked again, for every device on the host (moved back by us, or back
by itself): the node may route through it by now. A device found on the host under another name
is renamed only if the allowlist still allows it. (A device the worker moves back itself is not
held to the allowlist: the inventory may not know it while it is in a pod, e.g. after discovery
restarted.)
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Collection, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from dranet.services.netns import rdma
from dranet.services.netns.errors import Hook, StepError, run_step
from dranet.services.netns.model import HostSnapshot, JournalEntry, sorted_routes
from dranet.services.netns.netlink import Link, LinkChange, proc_sys_writable, write_sysctls
from dranet.services.netns.plan import Allowed, is_allowed
from dranet.services.netns.podns import Netns
from dranet.services.netns.steps import add_all, moved_route

from dranet.uplinks import Uplink

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """found: the device is on the host (False: it is gone, e.g. a veth died with its netns).
    problems: what could not be put back, one message per failed step."""

    found: bool
    problems: list[str] = field(default_factory=list)


def restore(
    host: Netns,
    entry: JournalEntry,
    pod: Netns | None,
    *,
    known: Collection[int] = (),
    allowed: Allowed = None,
    uplinks: Callable[[], Mapping[int, Uplink]],
    hook: Hook | None = None,
) -> Outcome:
    """Put the device of `entry` back on the host. pod: its netns, when it still exists. known:
    the pod's link indexes before a failed attach (a rollback may search the others). uplinks:
    the node's uplinks now (asked before a device found on the host is renamed or re-addressed).
    Raises
    StepError when the device is in the pod netns and cannot be moved out."""
    if entry.child:
        return remove_child(entry, pod, known, hook)
    if not entry.host.link.name:  # RDMA-only: its RDMA device is all there is
        if pod is not None:
            try:
                run_step(
                    "move-back",
                    entry.device,
                    lambda: rdma.move_if_exclusive(entry.rdma_device, host.fd),
                    hook,
                )
            except StepError as err:
                if err.errno != errno.EPROTONOSUPPORT:
                    raise  # (a kernel without RDMA netlink has moved nothing)
        return Outcome(found=True)
    if entry.rdma_device and pod is not None:
        with suppress(OSError):  # best effort: the RDMA device follows its netns back on teardown
            rdma.move_if_exclusive(entry.rdma_device, host.fd)
    problems: list[str] = []
    want = entry.host.link
    if pod is not None:
        move_back(host, pod, entry, known, problems, hook)
    link = find_on_host(host, entry)
    if link is None:
        return Outcome(found=False)
    renaming = link.name != want.name
    # Before any rename or address: the allowlist (for a rename) and the uplink rule, also for a
    # device we just moved back (the node may route through its name or index by now).
    refusal = _not_ours(link, want, allowed if renaming else None, uplinks)
    if refusal:
        return Outcome(found=True, problems=[refusal])
    attempt = _attempts(entry.device, problems, hook)
    restore_link(host, link, want, attempt)
    now = host.rtnl.get_link(index=link.index) or link
    restore_config(host, now, entry.host, attempt)
    return Outcome(found=True, problems=problems)


def remove_child(
    entry: JournalEntry, pod: Netns | None, known: Collection[int], hook: Hook | None
) -> Outcome:
    """A child interface is deleted where it is (its pod netns); its parent never left the host
    and nothing of the host changes. A child whose netns is gone went with it (found False).
    Raises StepError when the child is there and cannot be deleted (the caller retries)."""
    if pod is None:
        return Outcome(found=False)
    child = find_child(pod, entry, known)
    if child is None:
        return Outcome(found=False)
    index = child.index
    run_step("delete-child", entry.device, lambda: pod.rtnl.delete_link(index), hook)
    return Outcome(found=True)


def find_child(pod: Netns, entry: JournalEntry, known: Collection[int] = ()) -> Link | None:
    """The entry's child in the pod netns: at its recorded index or under its pod name, of its kind
    and (macvlan) with the MAC chosen for it before it was created."""

    def ours(link: Link | None) -> bool:
        return (
            link is not None
            and link.kind == entry.child
            and (not entry.hardware_address or link.mac == entry.hardware_address)
        )

    for probe in (
        lambda: pod.rtnl.get_link(index=entry.pod_ifindex) if entry.pod_ifindex else None,
        lambda: pod.rtnl.get_link(name=entry.pod_ifname),
    ):
        link = probe()
        if ours(link):
            return link
    if not known:
        return None
    new = [link for link in pod.rtnl.links() if link.index not in known and ours(link)]
    return new[0] if len(new) == 1 else None


def _attempts(dev: str, problems: list[str], hook: Hook | None) -> Callable[[str, Callable[[], Any]], bool]:
    """A runner of best-effort steps: a failure is added to problems, and the next step runs."""

    def attempt(step: str, fn: Callable[[], Any]) -> bool:
        try:
            run_step(step, dev, fn, hook)
        except StepError as err:
            problems.append(str(err))
            return False
        return True

    return attempt


def move_back(
    host: Netns,
    pod: Netns,
    entry: JournalEntry,
    known: Collection[int],
    problems: list[str],
    hook: Hook | None = None,
) -> bool:
    """Move the device out of the pod netns under its host name and attributes, in one request.
    False when it is not there."""
    want, dev = entry.host.link, entry.device
    try:
        in_pod = find_in_pod(pod, entry, known)
    except OSError:
        in_pod = None
    if in_pod is None:
        return False
    index = in_pod.index
    change = restore_change(want, in_pod)
    change.netns_fd = host.fd
    if in_pod.up:
        # Down as its own request first, as in attach: the move of a down link is cheaper.
        run_step("restore-down", dev, lambda: pod.rtnl.set_link(index, LinkChange(up=False)), hook)
    if in_pod.master:
        run_step("restore-unenslave", dev, lambda: pod.rtnl.set_link(index, LinkChange(master=0)), hook)
    try:
        run_step("move-back", dev, lambda: pod.rtnl.set_link(index, change), hook)
    except StepError as err:
        if err.errno != errno.EEXIST:
            raise
        # Someone took the original name on the host meanwhile: come back under a free one
        # rather than stay in the pod, and say so.
        change.name = "dranet%d"
        run_step("move-back", dev, lambda: pod.rtnl.set_link(index, change), hook)
        problems.append(
            f"{dev}: the host name {want.name} was taken; the device came back under another name"
        )
    return True


def find_in_pod(pod: Netns, entry: JournalEntry, known: Collection[int] = ()) -> Link | None:
    """The device in the pod netns: at its recorded pod index, its pod name or its host index
    (each checked by identity); in a rollback (known given), among the links that were not there
    before the attach."""
    want = entry.host.link
    for probe in (
        lambda: pod.rtnl.get_link(index=entry.pod_ifindex) if entry.pod_ifindex else None,
        lambda: pod.rtnl.get_link(name=entry.pod_ifname),
        lambda: pod.rtnl.get_link(index=want.index),
    ):
        link = probe()
        if link is not None and same_device(link, entry):
            return link
    if not known:
        return None
    new = [link for link in pod.rtnl.links() if link.index not in known and same_device(link, entry)]
    return new[0] if len(new) == 1 else None


def find_on_host(host: Netns, entry: JournalEntry) -> Link | None:
    """The device on the host: at its index, or under its host or pod name, checked by identity;
    else by permanent MAC (the kernel returns a physical NIC of a dead netns as dev<N>)."""
    want = entry.host.link
    for probe in (
        lambda: host.rtnl.get_link(index=want.index),
        lambda: host.rtnl.get_link(name=want.name),
        lambda: host.rtnl.get_link(name=entry.pod_ifname),
    ):
        link = probe()
        if link is not None and same_device(link, entry):
            return link
    if not want.perm_mac:
        return None  # never by MAC alone: VLAN siblings and clones share it
    return next((link for link in host.rtnl.links() if link.perm_mac == want.perm_mac), None)


def same_device(link: Link, entry: JournalEntry) -> bool:
    """Is the link at a probed index or name the entry's device: same permanent MAC, or same kind
    and one of the MACs it had (host, configured, read back in the pod)."""
    want = entry.host.link
    if want.perm_mac and link.perm_mac:
        return link.perm_mac == want.perm_mac
    if link.kind != want.kind:
        return False
    macs = {want.mac, entry.hardware_address, _cfg_mac(entry)} - {""}
    return link.mac in macs


def _cfg_mac(entry: JournalEntry) -> str:
    iface = entry.config.get("interface") if isinstance(entry.config, Mapping) else None
    mac = iface.get("hardwareAddr") if isinstance(iface, Mapping) else None
    return str(mac).lower() if mac else ""


def _not_ours(link: Link, want: Link, allowed: Allowed, uplinks: Callable[[], Mapping[int, Uplink]]) -> str:
    """Why the link found on the host must not be renamed to want.name or re-addressed, or "" when
    it may."""
    uplink = uplinks().get(link.index)
    if uplink is not None:
        why = f"is an uplink of the node now ({uplink.detail})"
        return f"{link.name} looks like {want.name} but {why}: left alone"
    if not (is_allowed(allowed, want.name) or is_allowed(allowed, link.name)):
        return f"{link.name} looks like {want.name}, which is no longer in the inventory: left alone"
    return ""


def restore_link(
    host: Netns, link: Link, want: Link, attempt: Callable[[str, Callable[[], Any]], bool]
) -> None:
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
    if not (changes or change.up is not None):
        return
    if not attempt("restore-link", lambda: host.rtnl.set_link(link.index, change)) and change.name:
        # The name may be what failed (taken): the rest on its own, the name left as it is.
        change.name = None
        attempt("restore-link", lambda: host.rtnl.set_link(link.index, change))


def restore_config(
    host: Netns, link: Link, snap: HostSnapshot, attempt: Callable[[str, Callable[[], Any]], bool]
) -> None:
    """Alternative names, master, ethtool, sysctls, addresses, link up (when it was), routes,
    rules, neighbours."""
    index, name = link.index, link.name
    for alt in snap.link.alt_names:
        # The attach dropped the one that became the pod name (the others moved with the link).
        if alt not in link.alt_names and alt != name:
            attempt("restore-altname", partial(host.rtnl.add_alt_name, index, alt))
    if snap.master_name and link.master != snap.link.master:
        attempt("restore-master", lambda: _enslave(host, index, snap))
    if snap.ethtool_features:
        features = dict(snap.ethtool_features)
        attempt("restore-ethtool", lambda: host.ethtool.set_features(name, features))
    if snap.ethtool_private_flags:
        flags = dict(snap.ethtool_private_flags)
        attempt("restore-ethtool", lambda: host.ethtool.set_private_flags(name, flags))
    attempt("restore-sysctls", lambda: _restore_devconf(host, index, name, snap))
    present = {a.cidr for a in host.rtnl.addresses(index)}
    missing = [a for a in snap.addresses if a.cidr not in present]
    attempt("restore-addresses", lambda: add_all(lambda a: host.rtnl.add_address(index, a), missing))
    if snap.link.up:
        attempt("restore-up", lambda: host.rtnl.set_link(index, LinkChange(up=True)))
        moved = [moved_route(r, index, None) for r in sorted_routes(snap.routes)]
        attempt("restore-routes", lambda: add_all(host.rtnl.add_route, moved, extra=(errno.ENETDOWN,)))
    attempt("restore-rules", lambda: add_all(host.rtnl.add_rule, snap.rules))
    attempt("restore-neighbors", lambda: add_all(lambda n: host.rtnl.add_neighbor(index, n), snap.neighbors))


def _enslave(host: Netns, index: int, snap: HostSnapshot) -> None:
    """Back under its bridge or bond: the one at the recorded index if it still has its name."""
    master = host.rtnl.get_link(index=snap.link.master)
    if master is None or master.name != snap.master_name:
        master = host.rtnl.get_link(name=snap.master_name)
    if master is None:
        raise OSError(errno.ENODEV, f"its master {snap.master_name} is gone")
    host.rtnl.set_link(index, LinkChange(master=master.index))


def _restore_devconf(host: Netns, index: int, name: str, snap: HostSnapshot) -> None:
    """Per-device sysctls the move reset: IPv4 over netlink, IPv6 through /proc/sys (no netlink
    setter), only those that differ."""
    now = host.rtnl.devconf(index)
    if now is None:
        return
    ipv4 = {k: v for k, v in snap.devconf.ipv4.items() if now.ipv4.get(k, v) != v}
    if ipv4:
        host.rtnl.set_ipv4_conf(index, ipv4)
    ipv6 = [
        (f"net/ipv6/conf/{name}/{k}", str(v)) for k, v in snap.devconf.ipv6.items() if now.ipv6.get(k, v) != v
    ]
    if ipv6 and not proc_sys_writable():
        raise OSError(
            errno.EROFS, f"IPv6 settings {', '.join(k for k, _ in ipv6)} not restored: /proc/sys is read-only"
        )
    write_sysctls(host.fd, ipv6)


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
