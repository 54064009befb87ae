"""The netns worker: attach a pod's devices into its netns, detach them back, restore the host.

Every request is checked before the first change (names, config, the interface is allowed and not
an uplink, the netns is a real netns file under an allowed root and not ours). Each attachment is
journaled before each change, so a failure rolls back and a crash is finished (or undone) on the
next start. Attaching a pod's devices is all-or-nothing. Every op is idempotent.

This module is the conductor (attach, detach, undo) and wires the worker's parts together:
docs/netns-worker.md says which module does what.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from dranet.services.netns import health, rdma
from dranet.services.netns.dhcp import DhcpClient
from dranet.services.netns.errors import Hook, as_bus_error, run_step
from dranet.services.netns.grants import Grants, Refused, check_attach, check_detach, refusal
from dranet.services.netns.hostcache import HostCache, HostReads
from dranet.services.netns.journal import Journal
from dranet.services.netns.leases import Leases
from dranet.services.netns.ledger import Ledger
from dranet.services.netns.model import (
    ATTACHED,
    ATTACHING,
    DETACHING,
    JournalEntry,
    RequestError,
    check_device_name,
    check_pod_uid,
    config_digest,
)
from dranet.services.netns.netlink import run_in_netns
from dranet.services.netns.notify import Notifier
from dranet.services.netns.nspath import DEFAULT_ROOTS, names_netns, netns_id, open_netns, own_netns
from dranet.services.netns.plan import Allowed, Plan, check_request, plan, reservation, wants_child
from dranet.services.netns.podns import Netns
from dranet.services.netns.queries import Queries
from dranet.services.netns.restore import restore
from dranet.services.netns.steps import child_mac, configure, snapshot
from dranet.services.netns.watch import PodWatch

from dranet.bus.messages import BusError
from dranet.observability import metrics
from dranet.uplinks import RT_TABLE_MAIN, UplinkPolicy

log = logging.getLogger(__name__)

ATTACH_SECONDS = metrics.histogram(
    "dranet_netns_attach_device_seconds", "Time to attach one device, by outcome", ("outcome",)
)
ATTACH_PHASE_SECONDS = metrics.histogram(
    "dranet_netns_attach_phase_seconds",
    "Time of each phase of a pod's attach: check (request and grants), open (locks, the pod netns), "
    "plan (host view, validation), journal (snapshots, durable write), devices (move and configure), "
    "commit (journal), notify",
    ("phase",),
)
OPS_TOTAL = metrics.counter("dranet_netns_operations_total", "Attach/detach outcomes", ("op", "outcome"))
RELEASE_COMMAND = "dranet netns-release --pod-uid {pod_uid} --device {device}"


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
        self.roots = tuple(netns_roots)
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root
        self._allowed = allowed
        self._hook = hook
        self.grants = grants
        self.hostns = Netns.open_path(host_netns or "/proc/thread-self/ns/net")
        self._forbidden = own_netns(self.hostns.handle.id)
        rtnl = self.hostns.rtnl  # opened now, in our netns, not lazily from another thread
        self.host_cache = HostCache(
            HostCache.open_events(lambda make: run_in_netns(self.hostns.fd, make)),
            HostReads(
                links=rtnl.link_briefs,
                link=rtnl.link_brief,
                default_routes=lambda: rtnl.routes(defaults=True, table=RT_TABLE_MAIN),
            ),
        )
        self.ledger = Ledger(Path(state_dir) / "netns" / "journal")
        self._per_device = 0.05  # running estimate of one device's attach time (s), for deadlines
        self.notifier = Notifier(publish)
        self.queries = Queries(
            self.hostns,
            self.ledger,
            self.host_cache,
            roots=self.roots,
            forbidden=self._forbidden,
            allowed=lambda: self._allowed,
            uplink_policy=uplink_policy or UplinkPolicy(),
        )
        self.watch = PodWatch(
            self.ledger,
            lambda entry, pod, reason: self._undo(entry, pod, reason=reason),
            self.notifier,
            roots=self.roots,
            forbidden=self._forbidden,
        )
        self.leases = Leases(dhcp, self.hostns, self.ledger, self.queries)

    @property
    def journal(self) -> Journal:
        return self.ledger.journal

    # ------------------------------------------------------------ lifecycle
    def start(self, watch_interval: float = 1.0, *, reconcile: bool = True) -> None:
        """Reconcile the journal, then watch attached pods' netns files (restore when one goes)."""
        if reconcile:
            self.watch.reconcile()
        if watch_interval > 0:
            self.watch.start(watch_interval)
        self.leases.start()

    def close(self) -> None:
        self.watch.stop()
        self.leases.stop()
        self.ledger.close()
        self.host_cache.close()
        self.hostns.close()

    def set_allowed(self, allowed: Allowed) -> None:
        self._allowed = allowed

    def health(self) -> dict[str, Any]:
        attachments, pods = self.ledger.counts()
        return {"attachments": attachments, "pods": pods}

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
        phases = metrics.Phases(ATTACH_PHASE_SECONDS)
        try:
            check_pod_uid(pod_uid)
            check_request(devices)
        except RequestError as err:
            raise as_bus_error(err) from None
        if self.grants is not None:
            try:
                check_attach(self.grants.snapshot(), pod_uid, devices)
            except Refused as err:
                raise refusal("attach", pod_uid, err) from None
        phases.done("check")
        with self.queries.start_path(), self.ledger.pod_lock(pod_uid):
            try:
                handle = open_netns(netns, self.roots, self._forbidden)
            except RequestError as err:
                raise as_bus_error(err) from None
            pod = self.ledger.pod_for(handle, use=True)
            names = [reservation(pod_uid, d) for d in devices]
            try:
                with self.ledger.reserve(names):
                    phases.done("open")
                    return self._attach_locked(pod_uid, pod, devices, deadline, phases)
            finally:
                self.ledger.release_unused(done_with=pod.handle.id)

    def _attach_locked(
        self,
        pod_uid: str,
        pod: Netns,
        devices: Sequence[Mapping[str, Any]],
        deadline: float | None,
        phases: metrics.Phases,
    ) -> dict[str, Any]:
        host = self.queries.host_view(devices)
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
        phases.done("plan")
        # Every snapshot is taken and journaled (one durable write for the pod) before the first
        # change; a crash from here on restores whatever the journal names.
        entries = self._journal_snapshots(pod_uid, pod, todo)
        phases.done("journal")
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
            phases.done("devices")
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
                self.notifier.notify(pod_uid, p.device, p.claim_uid, "failed", error=err)
            raise err from None
        OPS_TOTAL.labels(op="attach", outcome="ok").inc()
        phases.done("commit")
        for entry in done.values():
            self.notifier.notify_entry(entry, "attached")
        phases.done("notify")
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
                    raise refusal("detach", pod_uid, err) from None
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
                pod or self.watch.reopen(entry),
                known=known,
                allowed=self._allowed,
                uplinks=self.queries.uplinks,
                hook=self._hook,
            )
        except Exception as exc:
            log.error(
                "restore failed: %s",
                exc,
                extra={"pod_uid": entry.pod_uid, "device": entry.device, "reason": reason},
            )
            self.notifier.set_health(entry, health.RESTORE_FAILED, str(exc))
            if strict:
                raise as_bus_error(exc) from None
            return False
        self.watch.retry.pop(entry.key, None)
        if forget:
            self.ledger.forget([entry])
        extra = {"pod_uid": entry.pod_uid, "device": entry.device, "reason": reason}
        if not outcome.found:
            log.warning("device not found anywhere; assuming its netns took it", extra=extra)
        if outcome.problems:
            self.notifier.report_incomplete(entry, outcome.problems, reason)
        else:
            if self.notifier.device_health.clear(entry.device):
                self.notifier.publish_health()
            log.info("restored", extra=extra)
            if reason != "rollback":
                self.notifier.notify_entry(entry, "detached")
        return True
