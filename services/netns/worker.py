"""The netns worker: attach a pod's devices into its netns, detach them back, restore the host.

Every request is checked before the first change (names, config, the interface is allowed and not
an uplink, the netns is a real netns file under an allowed root and not ours). Each attachment is
journaled before each change, so a failure rolls back and a crash is finished (or undone) on the
next start. Attaching a pod's devices is all-or-nothing. Every op is idempotent.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dranet.services.netns import rdma
from dranet.services.netns.journal import Journal
from dranet.services.netns.model import (
    ATTACHED,
    ATTACHING,
    DETACHING,
    MAX_DEVICES_PER_POD,
    HostSnapshot,
    JournalEntry,
    RequestError,
    check_device_name,
    check_ifname,
    check_pod_uid,
    config_digest,
    expand_ethtool_features,
    snapshot_addresses,
    snapshot_routes,
    snapshot_rules,
    sorted_routes,
    uplinks,
)
from dranet.services.netns.netlink import (
    IPV4_DEVCONF_ARP_ANNOUNCE,
    IPV4_DEVCONF_ARP_IGNORE,
    IPV4_DEVCONF_FORWARDING,
    READ_ONLY_PROC_SYS,
    RT_TABLE_MAIN,
    Address,
    Ethtool,
    Link,
    LinkChange,
    Neighbor,
    NetlinkError,
    Route,
    Rtnl,
    Rule,
    proc_sys_writable,
    write_sysctls,
)
from dranet.services.netns.nspath import DEFAULT_ROOTS, NetnsHandle, netns_id, open_netns

from dranet.bus.messages import BusError
from dranet.config import (
    ConfigError,
    NetworkConfig,
    check_routes_reachable,
    check_supported,
    effective_interface_name,
    parse_network_config,
)
from dranet.observability import metrics

log = logging.getLogger(__name__)

ATTACH_SECONDS = metrics.histogram(
    "dranet_netns_attach_device_seconds", "Time to attach one device, by outcome", ("outcome",)
)
OPS_TOTAL = metrics.counter("dranet_netns_operations_total", "Attach/detach outcomes", ("op", "outcome"))

Allowed = Callable[[str], bool] | Collection[str] | None
Hook = Callable[[str, str], None]  # (step, device): tests inject failures and pauses here


# What a user can do about the kernel errors a claim's config can cause.
_HINTS: dict[tuple[str, int | None], str] = {
    ("move", errno.EEXIST): (
        " (interface.name: the pod's network namespace already has an interface with that name,"
        " e.g. the CNI's eth0; choose another interface.name)"
    ),
    ("move", errno.ERANGE): " (interface.mtu: outside what this device supports)",
    ("move", errno.EADDRNOTAVAIL): " (interface.hardwareAddr: the device refuses this MAC address)",
}


class StepError(Exception):
    """A kernel step failed; the message names the step and the kernel's reason."""

    def __init__(self, step: str, device: str, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        hint = _HINTS.get((step, getattr(exc, "errno", None)), "")
        super().__init__(f"{device}: step {step!r} failed: {reason}{hint}")
        self.step = step
        self.errno = getattr(exc, "errno", None)


@dataclass
class _Pod:
    """A pod netns while the worker works in it or holds devices there."""

    handle: NetnsHandle
    _rtnl: Rtnl | None = None
    _ethtool: Ethtool | None = None

    @property
    def rtnl(self) -> Rtnl:
        if self._rtnl is None:
            self._rtnl = Rtnl.open(self.handle.fd)
        return self._rtnl

    @property
    def ethtool(self) -> Ethtool:
        if self._ethtool is None:
            self._ethtool = Ethtool(self.handle.fd)
        return self._ethtool

    def close(self) -> None:
        if self._rtnl:
            self._rtnl.close()
        if self._ethtool:
            self._ethtool.close()
        self.handle.close()


@dataclass
class _Plan:
    device: str
    ifname: str
    claim_uid: str
    raw: Mapping[str, Any]
    cfg: NetworkConfig
    pod_ifname: str
    link: Link
    existing: JournalEntry | None = None
    features: dict[str, bool] = field(default_factory=dict)
    addresses: tuple[Address, ...] = ()  # the host's, as snapshotted
    routes: tuple[Route, ...] = ()  # through the link, as snapshotted


class NetnsWorker:
    def __init__(
        self,
        state_dir: str | Path,
        *,
        allowed: Allowed = None,
        netns_roots: Sequence[str] = DEFAULT_ROOTS,
        host_netns: str | None = None,
        publish: Callable[[str, dict[str, Any]], None] | None = None,
        sysfs_root: str = "/sys",
        dev_root: str = "/dev",
        hook: Hook | None = None,
    ) -> None:
        """allowed: host interface names the inventory allows (a set, or a predicate); None allows
        every non-uplink interface. host_netns: the netns treated as the node's (default: ours)."""
        self.roots = tuple(netns_roots)
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root
        self._allowed = allowed
        self._publish = publish
        self._hook = hook
        path = host_netns or "/proc/thread-self/ns/net"
        self.host_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(self.host_fd)
        self._forbidden = {(st.st_dev, st.st_ino)}
        for own in ("/proc/self/ns/net", "/proc/1/ns/net"):
            ident = netns_id(own)
            if ident:
                self._forbidden.add(ident)
        self.host = Rtnl.open(self.host_fd)
        self._host_ethtool: Ethtool | None = None
        self.journal = Journal(Path(state_dir) / "netns" / "journal")
        self._entries: dict[tuple[str, str], JournalEntry] = {}
        self._netns: dict[tuple[int, int], _Pod] = {}  # held pod netns, by identity
        self._pod_locks: dict[str, threading.Lock] = {}
        self._lock = threading.RLock()  # guards the dicts above
        self._busy: set[str] = set()  # host ifnames an op is working on
        self._in_use: dict[tuple[int, int], int] = {}  # netns ids an op is working in
        self._per_device = 0.05  # running estimate of one device's attach time (s), for deadlines
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self, watch_interval: float = 1.0, *, reconcile: bool = True) -> None:
        """Reconcile the journal, then watch attached pods' netns files (restore when one goes)."""
        if reconcile:
            self.reconcile()
        if watch_interval > 0:
            self._watcher = threading.Thread(
                target=self._watch, args=(watch_interval,), name="netns-watch", daemon=True
            )
            self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher:
            self._watcher.join(5)
        with self._lock:
            for pod in self._netns.values():
                pod.close()
            self._netns.clear()
        if self._host_ethtool:
            self._host_ethtool.close()
        self.host.close()
        self.journal.close()
        os.close(self.host_fd)

    def set_allowed(self, allowed: Allowed) -> None:
        self._allowed = allowed

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"attachments": len(self._entries), "pods": len({k[0] for k in self._entries})}

    # ------------------------------------------------------------ bus handlers
    def handlers(self) -> dict[str, Callable[[dict[str, Any], Any], dict[str, Any]]]:
        return {
            "attach": lambda body, ctx: self.attach(
                body["pod_uid"], body["netns"], body["devices"], deadline=ctx.deadline
            ),
            "detach": lambda body, ctx: self.detach(
                body["pod_uid"], body.get("devices") or [], netns=body.get("netns")
            ),
            "list": lambda body, ctx: self.attachments(live=True),
        }

    def attachments(self, *, live: bool = False) -> dict[str, Any]:
        """Every attachment; live: with each attached link's state, read in its pod netns (one
        RTM_GETLINK per device), for dra's health stream (dra holds no capability to look itself)."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.key)
            pods = {e.key: self._netns.get(e.netns_id) for e in entries}
        out = []
        for e in entries:
            item = e.attachment()
            if live and e.phase == ATTACHED:
                item.update(_live_state(e, pods[e.key]))
            out.append(item)
        return {"attachments": out}

    # ------------------------------------------------------------ attach
    def attach(
        self,
        pod_uid: str,
        netns: str,
        devices: Sequence[Mapping[str, Any]],
        *,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Attach every device or none. Raises BusError with a stable code."""
        try:
            check_pod_uid(pod_uid)
            self._check_request(devices)
        except RequestError as err:
            raise BusError(err.code, str(err)) from None
        with self._pod_lock(pod_uid):
            try:
                handle = open_netns(netns, self.roots, self._forbidden)
            except RequestError as err:
                raise BusError(err.code, str(err)) from None
            pod = self._pod_for(handle, use=True)
            names = [str(d["ifname"]) for d in devices]
            try:
                with self._reserve(names):
                    return self._attach_locked(pod_uid, pod, devices, deadline)
            finally:
                self._release_unused(done_with=pod.handle.id)

    def _check_request(self, devices: Sequence[Mapping[str, Any]]) -> None:
        if not devices:
            raise RequestError("invalid_config", "devices", "at least one device is required")
        if len(devices) > MAX_DEVICES_PER_POD:
            raise RequestError(
                "invalid_config", "devices", f"{len(devices)} devices; at most {MAX_DEVICES_PER_POD} per pod"
            )
        seen: set[str] = set()
        for i, d in enumerate(devices):
            check_device_name(d.get("device"), f"devices[{i}].device")  # type: ignore[arg-type]
            check_ifname(d.get("ifname"), f"devices[{i}].ifname")  # type: ignore[arg-type]
            for key in (str(d["device"]), "if:" + str(d["ifname"])):
                if key in seen:
                    raise RequestError("invalid_config", f"devices[{i}]", f"{key} appears twice")
                seen.add(key)

    def _attach_locked(
        self, pod_uid: str, pod: _Pod, devices: Sequence[Mapping[str, Any]], deadline: float | None
    ) -> dict[str, Any]:
        plans = self._plan(pod_uid, pod, devices)
        todo = [p for p in plans if p.existing is None]
        # Every snapshot is taken and journaled (one durable write for the pod) before the first
        # change; a crash from here on restores whatever the journal names.
        entries = self._journal_snapshots(pod_uid, pod, todo)
        done: dict[str, JournalEntry] = {}
        started: set[str] = set()
        try:
            for plan, entry in zip(todo, entries, strict=True):
                if deadline is not None and deadline - time.time() < self._per_device:
                    raise BusError(
                        "deadline_exceeded",
                        f"{len(todo) - len(done)} device(s) left and "
                        f"{max(0.0, deadline - time.time()):.3f}s to go, about {self._per_device:.3f}s each: "
                        "not starting what cannot finish",
                    )
                began = time.monotonic()
                started.add(plan.device)
                try:
                    done[plan.device] = self._configure(pod, plan, entry)
                except BaseException as exc:
                    self._undo(entry, pod, reason="rollback")
                    if isinstance(exc, (BusError, StepError)):
                        raise
                    raise _step_error("configure", plan.device, exc) from None
                elapsed = time.monotonic() - began
                self._per_device = 0.8 * self._per_device + 0.2 * elapsed
                ATTACH_SECONDS.labels(outcome="ok").observe(elapsed)
            if deadline is not None and time.time() > deadline:
                raise BusError("deadline_exceeded", "the attach finished after its deadline; rolled back")
            if done:
                try:
                    for dev in done:
                        if self._hook:
                            self._hook("journal", dev)
                    self._write(*done.values(), durable=False)
                except OSError as exc:
                    raise _step_error("journal", next(iter(done)), exc) from None
        except BaseException as exc:
            err = exc if isinstance(exc, BusError) else _as_bus_error(exc)
            for entry in reversed(list(done.values())):
                self._undo(entry, pod, reason="rollback")
            # Devices never started are as snapshotted: forget them without touching the kernel.
            self._forget([e for e in entries if e.device not in started])
            OPS_TOTAL.labels(op="attach", outcome=err.code).inc()
            for plan in todo:
                self._notify(pod_uid, plan.device, plan.claim_uid, "failed", error=err)
            raise err from None
        OPS_TOTAL.labels(op="attach", outcome="ok").inc()
        for entry in done.values():
            self._notify_entry(entry, "attached")
        results = [p.existing or done[p.device] for p in plans]
        return {"attachments": [e.attachment() for e in results]}

    def _plan(self, pod_uid: str, pod: _Pod, devices: Sequence[Mapping[str, Any]]) -> list[_Plan]:
        """Check everything before the first change; BusError on the first problem."""
        links = self.host.links()
        by_name = {link.name: link for link in links}
        for link in links:
            for alt in link.alt_names:
                by_name.setdefault(alt, link)
        routes = self.host.routes()
        uplink_ids = uplinks(links, routes)
        plans: list[_Plan] = []
        pod_names: set[str] = set()
        for i, d in enumerate(devices):
            device, ifname = str(d["device"]), str(d["ifname"])
            path = f"devices[{i}]"
            try:
                cfg = parse_network_config(d.get("config") or {})
            except ConfigError as err:
                raise BusError("invalid_config", f"{path}.config.{err.field}: {err.reason}") from None
            existing = self._existing(pod_uid, device, ifname, pod, d)
            pod_ifname = effective_interface_name(cfg, ifname)
            if pod_ifname in pod_names:
                raise BusError("invalid_config", f"{path}: pod interface name {pod_ifname!r} is used twice")
            pod_names.add(pod_ifname)
            if existing is not None:
                plans.append(
                    _Plan(
                        device,
                        ifname,
                        str(d.get("claim_uid") or ""),
                        d["config"] or {},
                        cfg,
                        pod_ifname,
                        existing.host.link,
                        existing,
                    )
                )
                continue
            link = by_name.get(ifname)
            if link is None:
                raise BusError("not_found", f"{path}.ifname: no interface {ifname!r} on the node")
            if not self._is_allowed(ifname):
                raise BusError(
                    "not_allowed", f"{path}.ifname: {ifname!r} is not in the inventory of allocatable devices"
                )
            if link.index in uplink_ids:
                raise BusError(
                    "not_allowed",
                    f"{path}.ifname: {ifname!r} is an uplink of the node (it carries a default route)",
                )
            if link.kind == "vrf" or link.index == 1 or ifname == "lo":
                raise BusError("not_allowed", f"{path}.ifname: {ifname!r} cannot be moved into a pod")
            if cfg.interface.forwarding is not None and not proc_sys_writable():
                raise BusError(
                    "not_allowed",
                    f"{path}.config.interface.forwarding: IPv6 forwarding is set through "
                    f"/proc/sys/net/ipv6/conf/{pod_ifname}/forwarding, and {READ_ONLY_PROC_SYS}",
                )
            # One dump each, shared by the checks and the snapshot.
            addresses = snapshot_addresses(self.host.addresses(link.index))
            self._check_config(path, cfg, addresses)
            plans.append(
                _Plan(
                    device,
                    ifname,
                    str(d.get("claim_uid") or ""),
                    d.get("config") or {},
                    cfg,
                    pod_ifname,
                    link,
                    addresses=addresses,
                    routes=snapshot_routes(r for r in routes if r.oif == link.index),
                )
            )
        return plans

    def _check_config(self, path: str, cfg: NetworkConfig, host_addresses: Sequence[Address]) -> None:
        iface = cfg.interface
        try:
            check_supported(cfg)
        except ConfigError as err:
            raise BusError("invalid_config", f"{path}.config.{err.field}: {err.reason}") from None
        addresses = list(iface.addresses) or [a.cidr for a in host_addresses]
        try:
            check_routes_reachable(cfg, addresses)
        except ConfigError as err:
            raise BusError("invalid_config", f"{path}.config.{err.field}: {err.reason}") from None

    def _existing(
        self, pod_uid: str, device: str, ifname: str, pod: _Pod, d: Mapping[str, Any]
    ) -> JournalEntry | None:
        """The entry when (pod, device) is already attached as asked; conflicts raise BusError."""
        with self._lock:
            entry = self._entries.get((pod_uid, device))
            others = [
                e for e in self._entries.values() if e.pod_uid != pod_uid and e.host.link.name == ifname
            ]
            others += [e for e in self._entries.values() if e.pod_uid != pod_uid and e.device == device]
        if others:
            raise BusError(
                "conflict",
                f"{device} ({ifname}) is attached to pod {others[0].pod_uid}; detach it there first",
            )
        if entry is None:
            return None
        same_ns = entry.netns_id == pod.handle.id
        if (
            same_ns
            and entry.phase == ATTACHED
            and config_digest(entry.config) == config_digest(d.get("config") or {})
        ):
            if pod.rtnl.get_link(name=entry.pod_ifname) is not None:
                return entry
        if not same_ns and netns_id(entry.netns) == entry.netns_id:
            raise BusError(
                "conflict",
                f"{device} is attached to pod {pod_uid} in another live netns {entry.netns}; detach it first",
            )
        # The old sandbox is gone, the config changed, or the device went missing: give it back
        # to the host first, then attach afresh.
        self._undo(entry, None, reason="reattach")
        return None

    def _journal_snapshots(self, pod_uid: str, pod: _Pod, plans: Sequence[_Plan]) -> list[JournalEntry]:
        """Snapshot each device's host side and journal them all (phase attaching) in one write."""
        entries: list[JournalEntry] = []
        step = "snapshot"
        device = plans[0].device if plans else ""
        try:
            for plan in plans:
                device = plan.device
                entries.append(
                    JournalEntry(
                        pod_uid=pod_uid,
                        device=plan.device,
                        claim_uid=plan.claim_uid,
                        netns=pod.handle.path,
                        netns_id=pod.handle.id,
                        phase=ATTACHING,
                        host=self._snapshot(plan.link, plan),
                        pod_ifname=plan.pod_ifname,
                        config=dict(plan.raw),
                        rdma_device=rdma.rdma_device_of(plan.link.name, self.sysfs_root),
                    )
                )
            step = "journal"
            if entries:
                self._write(*entries, durable=True)
        except (OSError, RequestError) as exc:
            raise _step_error(step, device, exc) from None
        return entries

    def _snapshot(self, link: Link, plan: _Plan) -> HostSnapshot:
        routes = plan.routes
        tables = {r.table for r in routes}
        rules = snapshot_rules(self.host.rules(), tables) if tables - {RT_TABLE_MAIN} else ()
        neighbors = tuple(n for n in self.host.neighbors(link.index) if n.state & 0x80)
        features: dict[str, bool] = {}
        pflags: dict[str, bool] = {}
        eth = plan.cfg.ethtool
        if eth is not None and (eth.features or eth.private_flags):
            host_eth = self._host_eth()
            if eth.features:
                current = host_eth.features(link.name)
                try:
                    plan.features = expand_ethtool_features(eth.features, current)
                except RequestError as err:
                    raise RequestError(err.code, f"config.{err.field}", err.reason) from None
                features = {k: current[k] for k in plan.features}
            if eth.private_flags:
                current_p = host_eth.private_flags(link.name)
                missing = [k for k in eth.private_flags if k not in current_p]
                if missing:
                    raise RequestError(
                        "invalid_config",
                        f"config.ethtool.privateFlags.{missing[0]}",
                        "the device has no such flag",
                    )
                pflags = {k: current_p[k] for k in eth.private_flags}
        return HostSnapshot(
            link=link,
            addresses=plan.addresses,
            routes=routes,
            rules=rules,
            neighbors=neighbors,
            ethtool_features=features,
            ethtool_private_flags=pflags,
        )

    def _configure(self, pod: _Pod, plan: _Plan, entry: JournalEntry) -> JournalEntry:
        cfg, iface, snap = plan.cfg, plan.cfg.interface, entry.host
        dev = plan.device
        inherited = not iface.addresses

        def run(step: str, fn: Callable[[], Any]) -> Any:
            try:
                if self._hook:
                    self._hook(step, dev)
                return fn()
            except (OSError, RequestError) as exc:
                raise _step_error(step, dev, exc) from None

        if snap.link.up:
            # Down first, as its own request: the kernel moves a down link without the teardown
            # it would otherwise do inside the move (measured: the move alone is then faster).
            run("down", lambda: self.host.set_link(snap.link.index, LinkChange(up=False)))
        run(
            "move",
            lambda: self.host.set_link(
                snap.link.index,
                LinkChange(
                    netns_fd=pod.handle.fd,
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
        link = run("lookup", lambda: pod.rtnl.get_link(name=plan.pod_ifname))
        if link is None:
            raise StepError(
                "lookup", dev, OSError(errno.ENODEV, f"{plan.pod_ifname} is not in the pod netns")
            )
        # IPv4 per-device settings over netlink (works with a read-only /proc/sys); IPv6 forwarding
        # has no netlink setter, so it alone is written to /proc/sys (checked writable in _plan).
        ipv4_conf = _ipv4_conf(cfg)
        if ipv4_conf:
            run("sysctl", lambda: pod.rtnl.set_ipv4_conf(link.index, ipv4_conf))
        sysctls = _ipv6_sysctls(plan.pod_ifname, cfg)
        if sysctls:
            run("sysctl", lambda: write_sysctls(pod.handle.fd, sysctls))
        if iface.vrf is not None:
            run("vrf", lambda: self._enslave_vrf(pod, link, iface.vrf.name, iface.vrf.table))  # type: ignore[union-attr]
        addresses = [Address(a) for a in iface.addresses] if iface.addresses else list(snap.addresses)
        run("addresses", lambda: [pod.rtnl.add_address(link.index, a) for a in addresses])
        run("up", lambda: pod.rtnl.set_link(link.index, LinkChange(up=True)))
        routes = [_pod_route(r, cfg, link.index) for r in cfg.routes]
        if inherited:
            vrf_table = iface.vrf.table if iface.vrf else None
            routes += [_moved_route(r, link.index, vrf_table) for r in snap.routes]
        run("routes", lambda: _add_all(pod.rtnl.add_route, sorted_routes(routes)))
        if iface.vrf is None:
            rules = [_pod_rule(r) for r in cfg.rules] + (list(snap.rules) if inherited else [])
            run("rules", lambda: _add_all(pod.rtnl.add_rule, rules))
        neighbors = [Neighbor(n.destination, n.hardware_addr) for n in cfg.neighbors] + list(snap.neighbors)
        run(
            "neighbors",
            lambda: _add_all(lambda n: pod.rtnl.add_neighbor(link.index, n), neighbors),
        )
        if plan.features:
            run("ethtool", lambda: pod.ethtool.set_features(plan.pod_ifname, plan.features))
        if cfg.ethtool is not None and cfg.ethtool.private_flags:
            flags = dict(cfg.ethtool.private_flags)
            run("ethtool", lambda: pod.ethtool.set_private_flags(plan.pod_ifname, flags))
        char_devs: tuple[Mapping[str, Any], ...] = ()
        if entry.rdma_device:
            char_devs = tuple(run("rdma", lambda: self._move_rdma(entry.rdma_device, pod.handle.fd)))
        # The MAC was set by the move and read back by the lookup; nothing later changes it.
        return entry.with_phase(
            ATTACHED,
            hardware_address=link.mac,
            ips=tuple(a.cidr for a in addresses),
            char_devices=char_devs,
        )

    def _enslave_vrf(self, pod: _Pod, link: Link, name: str, table: int) -> None:
        vrf = pod.rtnl.get_link(name=name)
        if vrf is None:
            pod.rtnl.create_link(name, "vrf", [("IFLA_VRF_TABLE", table)])
            vrf = pod.rtnl.get_link(name=name)
            if vrf is None:
                raise NetlinkError(errno.ENODEV, f"vrf {name} vanished after creation")
            pod.rtnl.set_link(vrf.index, LinkChange(up=True))
            write_sysctls(
                pod.handle.fd, [("net/ipv4/tcp_l3mdev_accept", "1"), ("net/ipv4/udp_l3mdev_accept", "1")]
            )
        elif vrf.kind != "vrf":
            raise NetlinkError(errno.EEXIST, f"{name} exists in the pod netns and is not a VRF")
        pod.rtnl.set_link(link.index, LinkChange(master=vrf.index))

    def _move_rdma(self, rdma_dev: str, netns_fd: int) -> list[dict[str, Any]]:
        nl = rdma.RdmaNetlink()
        try:
            if nl.netns_exclusive():
                nl.move(rdma_dev, netns_fd)
        finally:
            nl.close()
        return rdma.char_devices(rdma_dev, self.sysfs_root, self.dev_root)

    # ------------------------------------------------------------ detach
    def detach(
        self, pod_uid: str, devices: Sequence[str] = (), *, netns: str | None = None
    ) -> dict[str, Any]:
        """Give the pod's devices (all when empty) back to the host, restored. Idempotent."""
        try:
            check_pod_uid(pod_uid)
            for i, d in enumerate(devices):
                check_device_name(d, f"devices[{i}]")
        except RequestError as err:
            raise BusError(err.code, str(err)) from None
        released: list[str] = []
        with self._pod_lock(pod_uid):
            with self._lock:
                entries = [
                    e
                    for e in self._entries.values()
                    if e.pod_uid == pod_uid and (not devices or e.device in devices)
                ]
            if netns:
                with suppress(RequestError):
                    self._pod_for(open_netns(netns, self.roots, self._forbidden))
            errors: list[BusError] = []
            marking = [e.with_phase(DETACHING) for e in entries if e.phase != DETACHING]
            if marking:  # one journal write for the pod, not one per device
                try:
                    self._write(*marking)
                except OSError as exc:
                    raise _as_bus_error(StepError("journal", pod_uid, exc)) from None
                with self._lock:
                    entries = [self._entries[e.key] for e in entries]
            restored: list[JournalEntry] = []
            for entry in sorted(entries, key=lambda e: e.device, reverse=True):
                try:
                    self._undo(entry, None, reason="detach", strict=True, forget=False)
                    restored.append(entry)
                    released.append(entry.device)
                except BusError as err:
                    errors.append(err)
            self._forget(restored)
            # Devices we hold nothing for are already released: that is success, not an error.
            released += [d for d in devices if d not in {e.device for e in entries}]
            self._release_unused()
        if errors:
            OPS_TOTAL.labels(op="detach", outcome=errors[0].code).inc()
            raise errors[0]
        OPS_TOTAL.labels(op="detach", outcome="ok").inc()
        return {"released": sorted(set(released))}

    # ------------------------------------------------------------ restore
    def _undo(
        self,
        entry: JournalEntry,
        pod: _Pod | None,
        *,
        reason: str,
        strict: bool = False,
        forget: bool = True,
    ) -> bool:
        """Put the interface back on the host as snapshotted, wherever it is now; drop the entry.

        strict: raise BusError when the restore failed (the entry is kept for a retry).
        forget=False: leave dropping the entry to the caller (who batches it); True when restored."""
        try:
            if entry.phase != DETACHING:
                entry = entry.with_phase(DETACHING)
                self._write(entry)
            self._restore(entry, pod or self._reopen(entry))
        except (OSError, StepError) as exc:
            log.error(
                "restore failed: %s",
                exc,
                extra={"pod_uid": entry.pod_uid, "device": entry.device, "reason": reason},
            )
            if strict:
                raise _as_bus_error(exc) from None
            return False
        if forget:
            self._forget([entry])
        log.info("restored", extra={"pod_uid": entry.pod_uid, "device": entry.device, "reason": reason})
        if reason != "rollback":
            self._notify_entry(entry, "detached")
        return True

    def _restore(self, entry: JournalEntry, pod: _Pod | None) -> None:
        snap = entry.host
        want = snap.link
        dev = entry.device
        if entry.rdma_device and pod is not None:
            with suppress(OSError):  # best effort: the RDMA device follows its netns back on teardown
                nl = rdma.RdmaNetlink()
                try:
                    if nl.netns_exclusive():
                        nl.move(entry.rdma_device, self.host_fd)
                finally:
                    nl.close()
        # 1. Find it: in the pod netns (by pod name, then index), else on the host.
        link: Link | None = None
        if pod is not None:
            try:
                in_pod = pod.rtnl.get_link(name=entry.pod_ifname)
                if in_pod is None or not _same_device(in_pod, entry):
                    in_pod = pod.rtnl.get_link(index=want.index)
                    if in_pod is not None and not _same_device(in_pod, entry):
                        in_pod = None
            except OSError:
                in_pod = None
            if in_pod is not None:
                change = _restore_change(want, in_pod)
                change.netns_fd = self.host_fd
                if in_pod.up:
                    # Down as its own request first, as in attach: the move of a down link is cheaper.
                    _wrap("down", dev, lambda: pod.rtnl.set_link(in_pod.index, LinkChange(up=False)))
                if in_pod.master:
                    _wrap("detach-vrf", dev, lambda: pod.rtnl.set_link(in_pod.index, LinkChange(master=0)))
                try:
                    _wrap("move-back", dev, lambda: pod.rtnl.set_link(in_pod.index, change))
                except StepError as err:
                    if err.errno != errno.EEXIST:
                        raise
                    # Someone took the original name on the host meanwhile: come back under a
                    # free one rather than stay in the pod; the error log says which.
                    change.name = "dranet%d"
                    _wrap("move-back", dev, lambda: pod.rtnl.set_link(in_pod.index, change))
                    log.error(
                        "host name %s was taken; device came back renamed", want.name, extra={"device": dev}
                    )
        link = self._find_on_host(entry)
        if link is None:
            # A virtual device dies with its netns; nothing is left to restore.
            log.warning("device not found anywhere; assuming its netns took it", extra={"device": dev})
            return
        # 2. Host-side attributes that survive a move (name, MTU, MAC, GSO/GRO) in one request.
        change = _restore_change(want, link)
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
            _wrap("restore-link", dev, lambda: self.host.set_link(link.index, change))
        idx = link.index
        # 3. Ethtool, addresses, link state, routes, rules, neighbours.
        if snap.ethtool_features:
            _wrap(
                "restore-ethtool",
                dev,
                lambda: self._host_eth().set_features(want.name, dict(snap.ethtool_features)),
            )
        if snap.ethtool_private_flags:
            _wrap(
                "restore-ethtool",
                dev,
                lambda: self._host_eth().set_private_flags(want.name, dict(snap.ethtool_private_flags)),
            )
        present = {a.cidr for a in self.host.addresses(idx)}
        missing = [a for a in snap.addresses if a.cidr not in present]
        _wrap("restore-addresses", dev, lambda: _add_all(lambda a: self.host.add_address(idx, a), missing))
        if want.up:
            _wrap("restore-up", dev, lambda: self.host.set_link(idx, LinkChange(up=True)))
            moved = [_moved_route(r, idx, None) for r in sorted_routes(snap.routes)]
            _wrap(
                "restore-routes", dev, lambda: _add_all(self.host.add_route, moved, extra=(errno.ENETDOWN,))
            )
        _wrap("restore-rules", dev, lambda: _add_all(self.host.add_rule, snap.rules))
        _wrap(
            "restore-neighbors",
            dev,
            lambda: _add_all(lambda n: self.host.add_neighbor(idx, n), snap.neighbors),
        )

    def _find_on_host(self, entry: JournalEntry) -> Link | None:
        want = entry.host.link
        for probe in (
            lambda: self.host.get_link(index=want.index),
            lambda: self.host.get_link(name=want.name),
            lambda: self.host.get_link(name=entry.pod_ifname),
        ):
            link = probe()
            if link is not None and _same_device(link, entry):
                return link
        # The kernel returns a physical NIC of a dead netns as dev<N>: match it by hardware address.
        macs = {m for m in (want.perm_mac, want.mac, entry.hardware_address) if m}
        for link in self.host.links():
            if (link.perm_mac and link.perm_mac == want.perm_mac) or (
                not want.perm_mac and link.mac in macs and link.kind == want.kind
            ):
                return link
        return None

    # ------------------------------------------------------------ reconcile and watch
    def reconcile(self) -> None:
        """Bring the journal and the kernel into agreement after a (re)start."""
        entries = self.journal.load()
        for entry in entries:
            with self._pod_lock(entry.pod_uid):
                with self._lock:
                    self._entries[entry.key] = entry
                pod = self._reopen(entry)
                if entry.phase == ATTACHED and pod is not None:
                    if pod.rtnl.get_link(name=entry.pod_ifname) is not None:
                        log.info("kept", extra={"pod_uid": entry.pod_uid, "device": entry.device})
                        continue
                # Interrupted attach or detach, a vanished netns, or a missing device: restore.
                self._undo(entry, pod, reason=f"reconcile-{entry.phase}")
        self._release_unused()

    def _reopen(self, entry: JournalEntry) -> _Pod | None:
        """The pod netns of an entry, if it still exists (held, or reopened by its path)."""
        with self._lock:
            pod = self._netns.get(entry.netns_id)
            if pod is not None:
                return pod
        try:
            handle = open_netns(entry.netns, self.roots, self._forbidden)
        except RequestError:
            return None
        if handle.id != entry.netns_id:
            handle.close()  # the path now names another (newer) netns: ours is gone
            return None
        return self._pod_for(handle)

    def check_pods(self) -> None:
        """One watch pass: restore the devices of pods whose netns file is gone."""
        with self._lock:
            gone = [e for e in self._entries.values() if netns_id(e.netns) != e.netns_id]
        for entry in gone:
            log.info("pod netns gone; restoring", extra={"pod_uid": entry.pod_uid, "netns": entry.netns})
            with self._pod_lock(entry.pod_uid):
                with self._lock:
                    current = self._entries.get(entry.key)
                if current is not None and current.netns_id == entry.netns_id:
                    self._undo(current, None, reason="netns-gone")
        if gone:
            self._release_unused()

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.check_pods()
            except Exception:
                log.exception("netns watch pass failed")

    # ------------------------------------------------------------ helpers
    @contextmanager
    def _pod_lock(self, pod_uid: str) -> Iterator[None]:
        with self._lock:
            lock = self._pod_locks.setdefault(pod_uid, threading.Lock())
        with lock:
            yield

    @contextmanager
    def _reserve(self, ifnames: Sequence[str]) -> Iterator[None]:
        with self._lock:
            busy = [n for n in ifnames if n in self._busy]
            if busy:
                raise BusError(
                    "conflict", f"{busy[0]} is being attached or detached by another request; retry"
                )
            self._busy.update(ifnames)
        try:
            yield
        finally:
            with self._lock:
                self._busy.difference_update(ifnames)

    def _pod_for(self, handle: NetnsHandle, *, use: bool = False) -> _Pod:
        """The held _Pod for this netns; takes ownership of handle (closed if one is held already).
        use: an op works in it until it calls _release_unused(done_with=id)."""
        with self._lock:
            pod = self._netns.get(handle.id)
            if pod is None:
                pod = self._netns[handle.id] = _Pod(handle)
            elif pod.handle is not handle:
                handle.close()
            if use:
                self._in_use[handle.id] = self._in_use.get(handle.id, 0) + 1
            return pod

    def _release_unused(self, done_with: tuple[int, int] | None = None) -> None:
        """Close pod netns we hold nothing in: until now our fd kept each alive (and its devices
        with it, so a netns deleted under us still gives its devices back)."""
        with self._lock:
            if done_with is not None:
                left = self._in_use.get(done_with, 1) - 1
                if left:
                    self._in_use[done_with] = left
                else:
                    self._in_use.pop(done_with, None)
            used = {e.netns_id for e in self._entries.values()} | set(self._in_use)
            unused = [i for i in self._netns if i not in used]
            pods = [self._netns.pop(i) for i in unused]
        for pod in pods:
            pod.close()

    def _write(self, *entries: JournalEntry, durable: bool = False) -> None:
        self.journal.write(*entries, durable=durable)
        with self._lock:
            for entry in entries:
                self._entries[entry.key] = entry

    def _forget(self, entries: Sequence[JournalEntry]) -> None:
        """Drop entries from the journal (one write per pod) and from memory."""
        by_pod: dict[str, list[str]] = {}
        for e in entries:
            by_pod.setdefault(e.pod_uid, []).append(e.device)
        for pod_uid, devices in by_pod.items():
            self.journal.remove(pod_uid, *devices)
        with self._lock:
            for e in entries:
                self._entries.pop(e.key, None)

    def _host_eth(self) -> Ethtool:
        if self._host_ethtool is None:
            self._host_ethtool = Ethtool(self.host_fd)
        return self._host_ethtool

    def _is_allowed(self, ifname: str) -> bool:
        allowed = self._allowed
        if allowed is None:
            return True
        if callable(allowed):
            return bool(allowed(ifname))
        return ifname in allowed

    def _notify_entry(self, entry: JournalEntry, state: str) -> None:
        data = None
        if state == "attached":
            data = {
                "interfaceName": entry.pod_ifname,
                "ips": list(entry.ips),
                "hardwareAddress": entry.hardware_address,
            }
        self._notify(entry.pod_uid, entry.device, entry.claim_uid, state, network_data=data)

    def _notify(
        self,
        pod_uid: str,
        device: str,
        claim_uid: str,
        state: str,
        *,
        error: BusError | None = None,
        network_data: dict[str, Any] | None = None,
    ) -> None:
        log.info(
            state,
            extra={
                "pod_uid": pod_uid,
                "device": device,
                "claim_uid": claim_uid,
                **({"error": error.message} if error else {}),
            },
        )
        if self._publish is None:
            return
        body: dict[str, Any] = {"pod_uid": pod_uid, "device": device, "claim_uid": claim_uid, "state": state}
        if error is not None:
            body["error"] = {"code": error.code, "message": error.message}
        if network_data is not None:
            body["network_data"] = network_data
        try:
            self._publish("attachments", body)
        except Exception:
            log.exception("publishing an attachment event failed")


def _live_state(entry: JournalEntry, pod: _Pod | None) -> dict[str, Any]:
    """The `list` fields for one attached link: admin_up/oper_up/carrier/operstate, or link_error.
    Runs outside the worker's lock; a netns closed meanwhile is just an error here."""
    if pod is None:
        return {"link_error": "the pod netns is not held by the worker"}
    try:
        state = pod.rtnl.link_state(entry.pod_ifname)
    except Exception as exc:  # closed socket, netlink error: report it, never fail `list`
        return {"link_error": f"cannot read {entry.pod_ifname} in the pod netns: {exc}"}
    if state is None:
        return {"link_error": f"no link {entry.pod_ifname} in the pod netns"}
    return state.to_dict()


# ---------------------------------------------------------------- pure helpers


def _ipv4_conf(cfg: NetworkConfig) -> dict[int, int]:
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


def _ipv6_sysctls(ifname: str, cfg: NetworkConfig) -> list[tuple[str, str]]:
    """The /proc/sys writes left: IPv6 forwarding (the kernel has no netlink setter for it)."""
    if cfg.interface.forwarding is None:
        return []
    return [(f"net/ipv6/conf/{ifname}/forwarding", "1" if cfg.interface.forwarding else "0")]


def _pod_route(r: Any, cfg: NetworkConfig, oif: int) -> Route:
    table = cfg.interface.vrf.table if cfg.interface.vrf else (r.table or RT_TABLE_MAIN)
    return Route(
        destination=r.destination, gateway=r.gateway, source=r.source, oif=oif, table=table, scope=r.scope
    )


def _moved_route(r: Route, oif: int, vrf_table: int | None) -> Route:
    return Route(
        destination=r.destination,
        gateway=r.gateway,
        source=r.source,
        oif=oif,
        table=vrf_table or r.table,
        scope=r.scope,
        protocol=r.protocol,
        priority=r.priority,
    )


def _pod_rule(r: Any) -> Rule:
    family = 10 if ":" in (r.source or r.destination or "") else 2
    return Rule(
        family=family,
        table=r.table or RT_TABLE_MAIN,
        priority=r.priority,
        source=r.source,
        destination=r.destination,
    )


def _add_all(fn: Callable[[Any], None], items: Iterable[Any], extra: tuple[int, ...] = ()) -> None:
    """Add each, treating "already there" as done (a retry, or the kernel's own copy)."""
    for item in items:
        try:
            fn(item)
        except NetlinkError as exc:
            if exc.errno not in (errno.EEXIST, *extra):
                raise


def _same_device(link: Link, entry: JournalEntry) -> bool:
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


def _restore_change(want: Link, now: Link) -> LinkChange:
    """Only what differs: setting an unchanged MTU on some NICs resets them."""
    return LinkChange(
        name=want.name if now.name != want.name else None,
        mtu=want.mtu if now.mtu != want.mtu else None,
        mac=want.mac if want.mac and now.mac != want.mac else None,
        gso_max_size=want.gso_max_size
        if want.gso_max_size and now.gso_max_size != want.gso_max_size
        else None,
        gro_max_size=want.gro_max_size
        if want.gro_max_size and now.gro_max_size != want.gro_max_size
        else None,
        gso_ipv4_max_size=(
            want.gso_ipv4_max_size
            if want.gso_ipv4_max_size and now.gso_ipv4_max_size != want.gso_ipv4_max_size
            else None
        ),
        gro_ipv4_max_size=(
            want.gro_ipv4_max_size
            if want.gro_ipv4_max_size and now.gro_ipv4_max_size != want.gro_ipv4_max_size
            else None
        ),
    )


def _wrap(step: str, device: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except OSError as exc:
        raise StepError(step, device, exc) from None


def _step_error(step: str, device: str, exc: BaseException) -> BusError:
    if isinstance(exc, RequestError):
        return BusError(exc.code, f"{device}: {exc}")
    if isinstance(exc, BusError):
        return exc
    return _as_bus_error(StepError(step, device, exc))


def _as_bus_error(exc: BaseException) -> BusError:
    if isinstance(exc, BusError):
        return exc
    if isinstance(exc, StepError):
        return BusError("kernel_error", str(exc))
    if isinstance(exc, RequestError):
        return BusError(exc.code, str(exc))
    if isinstance(exc, OSError):
        return BusError("kernel_error", f"{exc.strerror or exc}")
    return BusError("internal", f"{type(exc).__name__}: {exc}")
