"""The netns worker: attach a pod's devices into its netns, detach them back, restore the host.

Every request is checked before the first change (names, config, the interface is allowed and not
an uplink, the netns is a real netns file under an allowed root and not ours). Each attachment is
journaled before each change, so a failure rolls back and a crash is finished (or undone) on the
next start. Attaching a pod's devices is all-or-nothing. Every op is idempotent.

This module is the conductor: the checks are in plan.py, the kernel steps in steps.py, restore in
restore.py, the journal and bookkeeping in ledger.py, the errors in errors.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from dranet.services.netns import ebpf, health, rdma
from dranet.services.netns.dhcp import DhcpClient, DhcpError
from dranet.services.netns.errors import Hook, StepError, as_bus_error, run_step
from dranet.services.netns.grants import Grants, Refused, check_attach, check_detach
from dranet.services.netns.health import DeviceHealth
from dranet.services.netns.journal import Journal
from dranet.services.netns.ledger import Ledger
from dranet.services.netns.model import (
    ATTACHED,
    ATTACHING,
    DETACHING,
    JournalEntry,
    RequestError,
    check_device_name,
    check_ifname,
    check_pod_uid,
    config_digest,
    netns_ident,
    uplinks,
)
from dranet.services.netns.netlink import Link, LinkBrief, NetlinkError, Route
from dranet.services.netns.nspath import DEFAULT_ROOTS, alive, names_netns, netns_id, open_netns
from dranet.services.netns.plan import Allowed, HostView, Plan, check_request, is_allowed, plan
from dranet.services.netns.podns import Netns
from dranet.services.netns.restore import restore
from dranet.services.netns.steps import child_mac, configure, snapshot

from dranet.bus.messages import BusError
from dranet.config import IPVLAN, MACVLAN
from dranet.observability import metrics
from dranet.uplinks import Uplink, UplinkPolicy

log = logging.getLogger(__name__)

ATTACH_SECONDS = metrics.histogram(
    "dranet_netns_attach_device_seconds", "Time to attach one device, by outcome", ("outcome",)
)
OPS_TOTAL = metrics.counter("dranet_netns_operations_total", "Attach/detach outcomes", ("op", "outcome"))
RESTORE_INCOMPLETE = metrics.counter(
    "dranet_netns_restore_incomplete_total",
    "Devices given back to the host with some of their settings not restored",
    ("reason",),
)
REFUSED = metrics.counter(
    "dranet_netns_refused_total",
    "Attach/detach requests refused because dra did not prepare them so (a hostile or broken caller)",
    ("op", "reason"),
)
RETRY_MAX = 300.0  # seconds between attempts to restore a device that keeps failing
# How long discovery's tcx question (a read of every link, ~5 ms of this process's CPU on a node
# with a hundred links, asked after each link event: a pod's CNI veth is one, just before its
# attach) may wait for the attaches in progress; discovery gives it 0.3 s.
TCX_YIELD_MAX = 0.1
RELEASE_COMMAND = "dranet netns-release --pod-uid {pod_uid} --device {device}"

__all__ = ["Allowed", "Hook", "NetnsWorker", "StepError", "lease_key"]


def lease_key(claim_uid: str, device: str) -> str:
    """A claim's device's lease: one per (claim, device), as the kubelet prepares per claim."""
    return f"{claim_uid}_{device}"


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
        uplink_policy: UplinkPolicy | None = None,
        grants: Grants | None = None,
        dhcp: DhcpClient | None = None,
    ) -> None:
        """grants: what dra prepared, checked on every attach and detach (the service always passes
        them; None, for tests that drive the worker as a library, checks nothing).
        allowed: host interface names the inventory allows (a set, or a predicate); None allows
        every non-uplink interface. host_netns: the netns treated as the node's (default: ours).
        uplink_policy: the API server and --uplink-interfaces, for the uplink rule (dranet/uplinks.py).
        dhcp: the DHCP client for claims with interface.dhcp (None: such claims are refused)."""
        self.uplink_policy = uplink_policy or UplinkPolicy()
        self.roots = tuple(netns_roots)
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root
        self._allowed = allowed
        self._publish = publish
        self._hook = hook
        self.grants = grants
        self.hostns = Netns.open_path(host_netns or "/proc/thread-self/ns/net")
        self._forbidden = {self.hostns.handle.id}
        for own in ("/proc/self/ns/net", "/proc/1/ns/net"):
            ident = netns_id(own)
            if ident:
                self._forbidden.add(ident)
        self.hostns.rtnl  # noqa: B018 - opened now, in our netns, not lazily from another thread
        self.ledger = Ledger(Path(state_dir) / "netns" / "journal")
        self._per_device = 0.05  # running estimate of one device's attach time (s), for deadlines
        self._retry: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (next attempt, delay)
        self.device_health = DeviceHealth()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._attaching = 0  # attaches in progress (background reads yield to them)
        self._attach_idle = threading.Condition()
        self.tcx_yield_max = TCX_YIELD_MAX
        self.dhcp = dhcp
        if dhcp is not None:
            dhcp.load()

    @property
    def journal(self) -> Journal:
        return self.ledger.journal

    def uplinks(self, links: Sequence[LinkBrief] | None = None) -> dict[int, Uplink]:
        """The node's uplinks now (over the given link dump of the host, or a fresh one)."""
        rtnl = self.hostns.rtnl
        return uplinks(
            rtnl.link_briefs() if links is None else links,
            rtnl.routes(defaults=True),  # the rule reads only default routes
            rtnl.route_lookup,
            self.uplink_policy,
        )

    def host_view(self, devices: Sequence[Mapping[str, Any]]) -> HostView:
        """What planning reads of the host for this request: one dump of the link graph (briefs)
        for the uplink rule and the names, then only the asked interfaces in full, with the routes
        through each (dumps the kernel filters: a node has a veth and routes per pod)."""
        rtnl = self.hostns.rtnl
        briefs = rtnl.link_briefs()
        by_name: dict[str, LinkBrief] = {}
        for b in briefs:
            for name in (b.name, *b.alt_names):
                by_name.setdefault(name, b)
        asked: list[Link] = []
        routes: list[Route] = []
        for ifname in dict.fromkeys(str(d.get("ifname") or "") for d in devices):
            brief = by_name.get(ifname)
            link = rtnl.get_link(index=brief.index) if brief is not None else None
            if link is None or ifname not in (link.name, *link.alt_names):
                continue  # gone or renamed since the dump: planning says "no interface"
            asked.append(link)
            routes += rtnl.routes(oif=link.index)
        return HostView.of(briefs, routes, self.uplinks(briefs), asked)

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
        if self.dhcp is not None:
            self.dhcp.start(self._locate_lease)

    def close(self) -> None:
        self._stop.set()
        if self.dhcp is not None:
            self.dhcp.stop()
        if self._watcher:
            self._watcher.join(5)
        self.ledger.close()
        self.hostns.close()

    def set_allowed(self, allowed: Allowed) -> None:
        self._allowed = allowed

    def health(self) -> dict[str, Any]:
        attachments, pods = self.ledger.counts()
        return {"attachments": attachments, "pods": pods}

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
            "netns_alive": lambda body, ctx: self.alive_netns(body["netns"]),
            "release": lambda body, ctx: self.release(body["pod_uid"], body["device"]),
            "attached_in": lambda body, ctx: self.attached_in(body["netns_id"], body["devices"]),
            "ethtool_features": lambda body, ctx: self.ethtool_features(body["ifname"]),
            "tcx_programs": lambda body, ctx: self.tcx_programs(),
            "device_health": lambda body, ctx: self.device_health.snapshot(),
            "grant": lambda body, ctx: self.grant(body["claims"], replace=bool(body.get("replace"))),
            "revoke": lambda body, ctx: {"revoked": self.revoke(body["claim_uids"])},
            "dhcp_acquire": lambda body, ctx: self.dhcp_acquire(
                body["claim_uid"], body["device"], body["ifname"]
            ),
            "dhcp_release": lambda body, ctx: self.dhcp_release(body["claim_uid"], body["device"]),
        }

    # ------------------------------------------------------------ DHCP (dhcp.py runs the client)
    def dhcp_acquire(self, claim_uid: str, device: str, ifname: str) -> dict[str, Any]:
        """A DHCPv4 lease on a host interface, before it moves (dra asks at prepare)."""
        dhcp = self._dhcp()
        try:
            check_pod_uid(claim_uid, "claim_uid")
            check_device_name(device, "device")
            check_ifname(ifname, "ifname")
        except RequestError as err:
            raise as_bus_error(err) from None
        if not is_allowed(self._allowed, ifname):
            raise BusError(
                "not_allowed", f"ifname: {ifname!r} is not in the inventory of allocatable devices"
            )
        link = self.hostns.rtnl.get_link(name=ifname)
        if link is not None and link.index in self.uplinks():
            raise BusError("not_allowed", f"ifname: {ifname!r} is an uplink of the node")
        other = self.ledger.held_by_other_pod("", device, ifname)
        if other is not None:
            raise BusError("conflict", f"{device} ({ifname}) is attached to pod {other.pod_uid}")
        with self.ledger.reserve([ifname]):
            try:
                lease = dhcp.acquire(lease_key(claim_uid, device), ifname, self.hostns.rtnl, self.hostns.fd)
            except DhcpError as exc:
                raise BusError("unavailable", str(exc)) from None
        return {"lease": lease.to_dict()}

    def dhcp_release(self, claim_uid: str, device: str) -> dict[str, Any]:
        """Give the claim's lease back (dra asks at unprepare, the device back on the host)."""
        dhcp = self._dhcp()
        try:
            check_pod_uid(claim_uid, "claim_uid")
            check_device_name(device, "device")
        except RequestError as err:
            raise as_bus_error(err) from None
        key = lease_key(claim_uid, device)
        rec = dhcp.get(key)
        if rec is None:
            return {"released": False}
        with self.ledger.reserve([rec.ifname]):
            try:
                return {"released": dhcp.release(key, self.hostns.rtnl, self.hostns.fd)}
            except DhcpError as exc:
                raise BusError("unavailable", str(exc)) from None

    def _dhcp(self) -> DhcpClient:
        if self.dhcp is None:
            raise BusError(
                "unavailable",
                "DHCP is not enabled in the netns worker "
                "(start it with --dhcp; it needs dhclient, CAP_NET_RAW and CAP_NET_BIND_SERVICE)",
            )
        return self.dhcp

    def _locate_lease(self, key: str) -> tuple[int, str] | None:
        """An fd on the pod netns and the pod-side name of the attached device of this lease."""
        for e in self.ledger.entries():
            if e.phase != ATTACHED or not e.pod_ifname or lease_key(e.claim_uid or "", e.device) != key:
                continue
            try:
                fd = os.open(e.netns, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != e.netns_id:
                os.close(fd)
                return None
            return fd, e.pod_ifname
        return None


    def tcx_programs(self) -> dict[str, Any]:
        """The tcx program names of every link of the host (discovery's question). The read pauses
        before each link while an attach runs (up to tcx_yield_max in all): it competes with the pod
        start for this process's GIL, and nothing waits on it but discovery's next scan."""
        until = time.monotonic() + self.tcx_yield_max
        return {"links": ebpf.tcx_by_link(self.hostns, pause=lambda: self._yield_to_attaches(until))}

    @contextmanager
    def _start_path(self) -> Iterator[None]:
        """Mark an attach in progress (see tcx_programs)."""
        with self._attach_idle:
            self._attaching += 1
        try:
            yield
        finally:
            with self._attach_idle:
                self._attaching -= 1
                self._attach_idle.notify_all()

    def _yield_to_attaches(self, until: float) -> None:
        with self._attach_idle:
            self._attach_idle.wait_for(lambda: not self._attaching, max(0.0, until - time.monotonic()))

    def ethtool_features(self, ifname: str) -> dict[str, Any]:
        """The ethtool table of an allocatable host interface, for dra's checks at prepare (the
        slow read happens there, not in the attach)."""
        try:
            check_ifname(ifname, "ifname")
        except RequestError as err:
            raise as_bus_error(err) from None
        if not is_allowed(self._allowed, ifname):
            raise BusError(
                "not_allowed", f"ifname: {ifname!r} is not in the inventory of allocatable devices"
            )
        if self.hostns.rtnl.get_link(name=ifname) is None:
            raise BusError("not_found", f"ifname: no interface {ifname!r} on the node")
        try:
            return self.hostns.ethtool.table(ifname).to_wire()
        except NetlinkError as exc:
            raise as_bus_error(exc, step="ethtool") from None

    # ------------------------------------------------------------ grants (dra's authority)
    def grant(self, claims: Sequence[Mapping[str, Any]], *, replace: bool = False) -> dict[str, Any]:
        if self.grants is None:
            raise BusError("unknown_op", "this worker checks no grants")
        try:
            return {"granted": self.grants.grant(claims, replace=replace)}
        except OSError as exc:
            raise BusError(
                "kernel_error", f"cannot write the grants file: {exc}; check the state dir"
            ) from None

    def revoke(self, claim_uids: Sequence[str]) -> list[str]:
        if self.grants is None:
            raise BusError("unknown_op", "this worker checks no grants")
        try:
            return self.grants.revoke(claim_uids)
        except OSError as exc:
            raise BusError(
                "kernel_error", f"cannot write the grants file: {exc}; check the state dir"
            ) from None

    def _refuse(self, op: str, pod_uid: str, err: Refused) -> BusError:
        """Log and count a request dra did not prepare; the bus error for the caller."""
        REFUSED.labels(op=op, reason=err.label).inc()
        log.warning(
            "refused: not what dra prepared",
            extra={
                "op": op,
                "pod_uid": pod_uid,
                "device": err.device,
                "reason": err.label,
                "error": str(err),
            },
        )
        return as_bus_error(err)

    def attached_in(self, netns_id: str, devices: Sequence[str]) -> dict[str, Any]:
        """Which of `devices` are attached in the netns of this identity (the CDI hook's question)."""
        here = {
            e.device
            for e in self.ledger.entries()
            if e.phase == ATTACHED and netns_ident(e.netns_id) == netns_id
        }
        return {
            "attached": [d for d in devices if d in here],
            "missing": [d for d in devices if d not in here],
        }

    def alive_netns(self, paths: Sequence[str]) -> dict[str, Any]:
        """Which of these paths name a live pod netns, each with its identity: nri asks, as it may
        not see the netns files itself (the DaemonSet mounts them only into the worker)."""
        found = alive(paths, self.roots, self._forbidden)
        return {"alive": [{"netns": p, "id": netns_ident(i)} for p, i in found.items()]}

    def attachments(self, *, live: bool = False) -> dict[str, Any]:
        """Every attachment; live: with each attached link's state, read in its pod netns (one
        RTM_GETLINK per device), for dra's health stream (dra holds no capability to look itself)."""
        entries = self.ledger.entries()
        pods = {e.key: self.ledger.held(e.netns_id) for e in entries}
        out = []
        for e in entries:
            item = e.attachment()
            if live and e.phase == ATTACHED and e.pod_ifname:
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
            check_request(devices)
        except RequestError as err:
            raise as_bus_error(err) from None
        if self.grants is not None:
            try:
                check_attach(self.grants.snapshot(), pod_uid, devices)
            except Refused as err:
                raise self._refuse("attach", pod_uid, err) from None
        with self._start_path(), self.ledger.pod_lock(pod_uid):
            try:
                handle = open_netns(netns, self.roots, self._forbidden)
            except RequestError as err:
                raise as_bus_error(err) from None
            pod = self.ledger.pod_for(handle, use=True)
            names = [reservation(pod_uid, d) for d in devices]
            try:
                with self.ledger.reserve(names):
                    return self._attach_locked(pod_uid, pod, devices, deadline)
            finally:
                self.ledger.release_unused(done_with=pod.handle.id)

    def _attach_locked(
        self, pod_uid: str, pod: Netns, devices: Sequence[Mapping[str, Any]], deadline: float | None
    ) -> dict[str, Any]:
        host = self.host_view(devices)
        pod_links = pod.rtnl.link_briefs()
        # The pod's links before the attach: a rollback may search only the others for ours.
        known = frozenset(link.index for link in pod_links)
        plans = plan(
            devices,
            host,
            self._allowed,
            lambda device, ifname, d: self._existing(pod_uid, device, ifname, pod, d),
            self.hostns.rtnl.addresses,
            pod_names={n for link in pod_links for n in (link.name, *link.alt_names)},
            rdma_present=lambda name: rdma.present(name, self.sysfs_root),
        )
        todo = [p for p in plans if p.existing is None]
        # Every snapshot is taken and journaled (one durable write for the pod) before the first
        # change; a crash from here on restores whatever the journal names.
        entries = self._journal_snapshots(pod_uid, pod, todo)
        done: dict[str, JournalEntry] = {}
        started: set[str] = set()
        try:
            for p, entry in zip(todo, entries, strict=True):
                if deadline is not None and deadline - time.monotonic() < self._per_device:
                    raise BusError(
                        "deadline_exceeded",
                        f"{len(todo) - len(done)} device(s) left and "
                        f"{max(0.0, deadline - time.monotonic()):.3f}s to go, "
                        f"about {self._per_device:.3f}s each: "
                        "not starting what cannot finish",
                    )
                began = time.monotonic()
                started.add(p.device)
                try:
                    done[p.device] = configure(
                        self.hostns,
                        pod,
                        p,
                        entry,
                        hook=self._hook,
                        sysfs_root=self.sysfs_root,
                        dev_root=self.dev_root,
                    )
                except BaseException as exc:
                    self._undo(entry, pod, reason="rollback", known=known)
                    raise as_bus_error(exc, p.device, step="configure") from None
                elapsed = time.monotonic() - began
                self._per_device = 0.8 * self._per_device + 0.2 * elapsed
                ATTACH_SECONDS.labels(outcome="ok").observe(elapsed)
            if deadline is not None and time.monotonic() > deadline:
                raise BusError("deadline_exceeded", "the attach finished after its deadline; rolled back")
            if done:
                # One write marks every device attached; the hook sees each device at this step.
                for dev in done:
                    run_step("journal", dev, lambda: None, self._hook)
                run_step("journal", next(iter(done)), lambda: self.ledger.write(*done.values()))
        except BaseException as exc:
            err = as_bus_error(exc)
            for entry in reversed(list(done.values())):
                self._undo(entry, pod, reason="rollback")
            # Devices never started are as snapshotted: forget them without touching the kernel.
            self.ledger.forget([e for e in entries if e.device not in started])
            OPS_TOTAL.labels(op="attach", outcome=err.code).inc()
            for p in todo:
                self._notify(pod_uid, p.device, p.claim_uid, "failed", error=err)
            raise err from None
        OPS_TOTAL.labels(op="attach", outcome="ok").inc()
        for entry in done.values():
            self._notify_entry(entry, "attached")
        results = [p.existing or done[p.device] for p in plans]
        return {"attachments": [e.attachment() for e in results]}

    def _existing(
        self, pod_uid: str, device: str, ifname: str, pod: Netns, d: Mapping[str, Any]
    ) -> JournalEntry | None:
        """The entry when (pod, device) is already attached as asked; conflicts raise BusError.
        Attached differently (or its old sandbox is gone): given back to the host first, then None."""
        other = self.ledger.held_by_other_pod(pod_uid, device, ifname, child=wants_child(d))
        if other is not None and other.phase == DETACHING:
            command = RELEASE_COMMAND.format(pod_uid=other.pod_uid, device=other.device)
            raise BusError(
                "conflict",
                f"{device} ({ifname}) is still held for pod {other.pod_uid}: giving it back to the host "
                "failed and is retried (see the worker's log); once the interface is back on the "
                f"node, release it with `{command}`",
            )
        if other is not None:
            raise BusError(
                "conflict", f"{device} ({ifname}) is attached to pod {other.pod_uid}; detach it there first"
            )
        entry = self.ledger.get((pod_uid, device))
        if entry is None:
            return None
        same_ns = entry.netns_id == pod.handle.id
        if (
            same_ns
            and entry.phase == ATTACHED
            and config_digest(entry.config) == config_digest(d.get("config") or {})
        ):
            if not entry.pod_ifname or pod.rtnl.get_link(name=entry.pod_ifname) is not None:
                return entry
        if not same_ns and netns_id(entry.netns) == entry.netns_id:
            raise BusError(
                "conflict",
                f"{device} is attached to pod {pod_uid} in another live netns {entry.netns}; detach it first",
            )
        self._undo(entry, None, reason="reattach")
        return None

    def _journal_snapshots(self, pod_uid: str, pod: Netns, plans: Sequence[Plan]) -> list[JournalEntry]:
        """Snapshot each device's host side and journal them all (phase attaching) in one write."""
        entries: list[JournalEntry] = []
        step = "snapshot"
        device = plans[0].device if plans else ""
        try:
            for p in plans:
                device = p.device
                entries.append(
                    JournalEntry(
                        pod_uid=pod_uid,
                        device=p.device,
                        claim_uid=p.claim_uid,
                        netns=pod.handle.path,
                        netns_id=pod.handle.id,
                        phase=ATTACHING,
                        host=snapshot(self.hostns, p),
                        pod_ifname=p.pod_ifname,
                        config=dict(p.raw),
                        rdma_device=""
                        if p.child is not None
                        else p.rdma_device or rdma.rdma_device_of(p.link.name, self.sysfs_root),
                        hardware_address=child_mac(p),
                        child=p.child.kind if p.child is not None else "",
                        share_id=p.share_id,
                    )
                )
            step = "journal"
            if entries:
                self.ledger.write(*entries, durable=True)
        except (OSError, RequestError) as exc:
            raise as_bus_error(exc, device, step) from None
        return entries

    # ------------------------------------------------------------ detach
    def detach(
        self, pod_uid: str, devices: Sequence[str] = (), *, netns: str | None = None
    ) -> dict[str, Any]:
        """Give the pod's devices (all when empty) back to the host, restored. Idempotent.
        netns: only those in that sandbox's netns (a pod has several sandboxes over its life, and
        the old one's stop or remove must not touch the new one's devices)."""
        try:
            check_pod_uid(pod_uid)
            for i, d in enumerate(devices):
                check_device_name(d, f"devices[{i}]")
        except RequestError as err:
            raise as_bus_error(err) from None
        released: list[str] = []
        with self.ledger.pod_lock(pod_uid):
            if self.grants is not None and devices:
                held = [e.device for e in self.ledger.entries(pod_uid)]
                try:
                    check_detach(self.grants.snapshot(), pod_uid, devices, held)
                except Refused as err:
                    raise self._refuse("detach", pod_uid, err) from None
            of_pod = self.ledger.entries(pod_uid, devices)
            entries = [e for e in of_pod if not netns or names_netns(netns, e.netns_id, e.netns)]
            if netns:
                with suppress(RequestError):
                    self.ledger.pod_for(open_netns(netns, self.roots, self._forbidden))
            errors: list[BusError] = []
            marking = [e.with_phase(DETACHING) for e in entries if e.phase != DETACHING]
            if marking:  # one journal write for the pod, not one per device
                try:
                    self.ledger.write(*marking)
                except OSError as exc:
                    raise as_bus_error(exc, pod_uid, "journal") from None
                entries = [self.ledger.get(e.key) or e for e in entries]
            restored: list[JournalEntry] = []
            for entry in sorted(entries, key=lambda e: e.device, reverse=True):
                try:
                    self._undo(entry, None, reason="detach", strict=True, forget=False)
                    restored.append(entry)
                    released.append(entry.device)
                except BusError as err:
                    errors.append(err)
            self.ledger.forget(restored)
            # Devices we hold nothing for are already released: that is success, not an error.
            released += [d for d in devices if d not in {e.device for e in of_pod}]
            self.ledger.release_unused()
        if errors:
            OPS_TOTAL.labels(op="detach", outcome=errors[0].code).inc()
            raise errors[0]
        OPS_TOTAL.labels(op="detach", outcome="ok").inc()
        return {"released": sorted(set(released))}

    # ------------------------------------------------------------ undo
    def _undo(
        self,
        entry: JournalEntry,
        pod: Netns | None,
        *,
        reason: str,
        strict: bool = False,
        forget: bool = True,
        known: frozenset[int] = frozenset(),
    ) -> bool:
        """Put the interface back on the host as snapshotted, wherever it is now; drop the entry.

        The entry is kept (for a retry) only when the device could not be moved out of the pod
        netns; a device back on the host with some settings not restored is released and reported.
        strict: raise BusError when the entry is kept. forget=False: leave dropping the entry to
        the caller (who batches it). known: the pod's link indexes before a failed attach."""
        try:
            if entry.phase != DETACHING:
                entry = entry.with_phase(DETACHING)
                self.ledger.write(entry)
            outcome = restore(
                self.hostns,
                entry,
                pod or self._reopen(entry),
                known=known,
                allowed=self._allowed,
                uplinks=self.uplinks,
                hook=self._hook,
            )
        except Exception as exc:
            log.error(
                "restore failed: %s",
                exc,
                extra={"pod_uid": entry.pod_uid, "device": entry.device, "reason": reason},
            )
            self._set_health(entry, health.RESTORE_FAILED, str(exc))
            if strict:
                raise as_bus_error(exc) from None
            return False
        self._retry.pop(entry.key, None)
        if forget:
            self.ledger.forget([entry])
        extra = {"pod_uid": entry.pod_uid, "device": entry.device, "reason": reason}
        if not outcome.found:
            log.warning("device not found anywhere; assuming its netns took it", extra=extra)
        if outcome.problems:
            self._report_incomplete(entry, outcome.problems, reason)
        else:
            if self.device_health.clear(entry.device):
                self._publish_health()
            log.info("restored", extra=extra)
            if reason != "rollback":
                self._notify_entry(entry, "detached")
        return True

    def _report_incomplete(self, entry: JournalEntry, problems: Sequence[str], reason: str) -> None:
        """A device back on the host without all of its settings: a metric, a warning, and (except
        in a rollback, which reports its own failure) the claim's status through `attachments`."""
        message = (
            f"{entry.device} is back on the host as {entry.host.link.name}, but not all of it was "
            f"restored: {'; '.join(problems)}"
        )
        RESTORE_INCOMPLETE.labels(reason=reason).inc()
        log.warning(message, extra={"pod_uid": entry.pod_uid, "device": entry.device, "reason": reason})
        self._set_health(entry, health.RESTORE_INCOMPLETE, message)
        if reason != "rollback":
            error = BusError("restore_incomplete", message)
            self._notify(entry.pod_uid, entry.device, entry.claim_uid, "restore_incomplete", error=error)

    def release(self, pod_uid: str, device: str) -> dict[str, Any]:
        """The operator's way out for a device whose restore keeps failing: forget the attachment
        without touching the kernel (the operator has put the interface back, or given it up)."""
        try:
            check_pod_uid(pod_uid)
            check_device_name(device, "device")
        except RequestError as err:
            raise as_bus_error(err) from None
        with self.ledger.pod_lock(pod_uid):
            entry = self.ledger.get((pod_uid, device))
            if entry is None:
                return {"released": []}
            self.ledger.forget([entry])
            self._retry.pop(entry.key, None)
            self.ledger.release_unused()
        log.warning(
            "released by the operator without a restore", extra={"pod_uid": pod_uid, "device": device}
        )
        if self.device_health.clear(device):
            self._publish_health()
        self._notify_entry(entry, "detached")
        return {"released": [device]}

    # ------------------------------------------------------------ reconcile and watch
    def reconcile(self) -> None:
        """Bring the journal and the kernel into agreement after a (re)start."""
        entries = self.ledger.load()
        for entry in entries:
            with self.ledger.pod_lock(entry.pod_uid):
                self.ledger.adopt(entry)
                pod = self._reopen(entry)
                if entry.phase == ATTACHED and pod is not None:
                    if not entry.pod_ifname or pod.rtnl.get_link(name=entry.pod_ifname) is not None:
                        log.info("kept", extra={"pod_uid": entry.pod_uid, "device": entry.device})
                        continue
                # Interrupted attach or detach, a vanished netns, or a missing device: restore.
                self._undo(entry, pod, reason=f"reconcile-{entry.phase}")
        self.ledger.release_unused()

    def _reopen(self, entry: JournalEntry) -> Netns | None:
        """The pod netns of an entry, if it still exists (held, or reopened by its path)."""
        pod = self.ledger.held(entry.netns_id)
        if pod is not None:
            return pod
        try:
            handle = open_netns(entry.netns, self.roots, self._forbidden)
        except RequestError:
            return None
        if handle.id != entry.netns_id:
            handle.close()  # the path now names another (newer) netns: ours is gone
            return None
        return self.ledger.pod_for(handle)

    def check_pods(self) -> None:
        """One watch pass: restore the devices of pods whose netns file is gone."""
        now = time.monotonic()
        gone = [
            e
            for e in self.ledger.entries()
            if netns_id(e.netns) != e.netns_id and self._retry.get(e.key, (0.0, 0.0))[0] <= now
        ]
        for entry in gone:
            log.info("pod netns gone; restoring", extra={"pod_uid": entry.pod_uid, "netns": entry.netns})
            with self.ledger.pod_lock(entry.pod_uid):
                current = self.ledger.get(entry.key)
                if current is not None and current.netns_id == entry.netns_id:
                    if not self._undo(current, None, reason="netns-gone"):
                        # Retried with a growing delay, not logged every pass.
                        delay = min(RETRY_MAX, 2 * self._retry.get(entry.key, (0.0, 0.5))[1])
                        self._retry[entry.key] = (time.monotonic() + delay, delay)
        if gone:
            self.ledger.release_unused()

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.check_pods()
                self.journal.prepare_spares()  # off the start path: attaches use them up
            except Exception:
                log.exception("netns watch pass failed")

    # ------------------------------------------------------------ device health (discovery's taints)
    def _set_health(self, entry: JournalEntry, reason: str, message: str) -> None:
        if self.device_health.mark(entry.device, entry.host.link.name, reason, message):
            self._publish_health()

    def _publish_health(self) -> None:
        if self._publish is None:
            return
        try:
            self._publish("device_health", self.device_health.snapshot())
        except Exception:
            log.exception("cannot publish device health")

    # ------------------------------------------------------------ notifications
    def _notify_entry(self, entry: JournalEntry, state: str) -> None:
        data = None
        if state == "attached":
            data = {
                "interfaceName": entry.pod_ifname,
                "ips": list(entry.ips),
                "hardwareAddress": entry.hardware_address,
            }
        extra = {"ebpf_detached": list(entry.ebpf_detached)} if entry.ebpf_detached is not None else None
        self._notify(entry.pod_uid, entry.device, entry.claim_uid, state, network_data=data, extra=extra)

    def _notify(
        self,
        pod_uid: str,
        device: str,
        claim_uid: str,
        state: str,
        *,
        error: BusError | None = None,
        network_data: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
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
        body.update(extra or {})
        try:
            self._publish("attachments", body)
        except Exception:
            log.exception("publishing an attachment event failed")


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


def _live_state(entry: JournalEntry, pod: Netns | None) -> dict[str, Any]:
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
