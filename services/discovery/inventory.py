"""The inventory loop: scan, watch netlink, coalesce bursts, rescan, resync; keep moved devices.

- A netlink socket subscribed to link, address and route events wakes the loop; events arriving
  within the coalescing window (default 50 ms) are handled by one rescan.
- A rescan re-dumps netlink (a few ms for 1,000 links) and reads sysfs only for links it has not
  seen (cache keyed by ifindex + name); the periodic full resync (default 60 s) re-reads sysfs for
  everything, for facts that change without a netlink event (sriov_numvfs, numa, RDMA devices).
- Uplinks are re-evaluated on every rescan (route, rule, link and address events all wake it), so a
  default route that moves takes effect at once; links that become or stop being uplinks are logged.
- A device whose interface moved into a pod vanishes from the host; while the netns worker
  reports it attached, it stays in the inventory (and so in the slices) with its last attributes
  (live values win when part of it is still visible, e.g. the PCI function). Those attributes are
  kept in the state directory (kept.py), so a restarted discovery publishes them too.
- A device whose link lost its carrier, or whose restore the netns worker could not complete,
  carries a NoSchedule taint (taints.py) until that is over; its change is published like any other.
"""

from __future__ import annotations

import copy
import logging
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dranet.backoff import Backoff
from dranet.netlink.rtnl import EVENT_GROUPS, LINK_EVENTS, NetlinkError, RtnlSocket, open_in_netns
from dranet.observability.metrics import gauge, histogram

from .devices import NetdevSysfs, ScanOptions, build_devices
from .kept import KeptDevices
from .model import Device
from .netlinkscan import scan
from .sysfs import Sysfs
from .taints import TaintClock, device_reasons
from .uplinks import UplinkReporter

log = logging.getLogger(__name__)

SCAN_SECONDS = histogram("dranet_discovery_scan_seconds", "time of one inventory scan", ())
DEVICES = gauge("dranet_discovery_devices", "devices in the inventory", ("allocatable",))

# Returns the names of devices currently attached to pods, or None when that is unknown.
AttachedProvider = Callable[[], set[str] | None]
# Returns the tcx program names by interface name (the netns worker reads them: bpf(2) needs
# capabilities discovery does not hold).
TcxProvider = Callable[[], Mapping[str, Sequence[str]]]
OnChange = Callable[[list[Device], int], None]
# Returns device name -> reason for the devices whose restore could not complete (the netns
# worker's `device_health`), or None when that is unknown.
HealthProvider = Callable[[], Mapping[str, str] | None]


@dataclass
class InventoryConfig:
    sysfs_root: str | Path = "/sys"
    options: ScanOptions | None = None
    netns: str | None = None  # scan another network namespace (tests, benchmarks)
    coalesce: float = 0.05
    resync_interval: float = 60.0
    # Pre-opened (events, dump) sockets, e.g. made in another netns before capabilities were dropped.
    sockets: tuple[RtnlSocket, RtnlSocket] | None = None
    # Where the attributes of devices in pods are kept across restarts (None: in memory only).
    kept_path: str | Path | None = None


def merge_kept(live: list[Device], last_seen: dict[str, Device], attached: set[str]) -> list[Device]:
    """Add attached devices missing from the live scan, with their last attributes (pure)."""
    by_name = {d.name: d for d in live}
    out = list(live)
    for name in sorted(attached):
        last = last_seen.get(name)
        if last is None:
            continue
        current = by_name.get(name)
        if current is None:
            kept = copy.deepcopy(last)
            kept.ifname = ""  # no host interface while it is in the pod
            kept.allocatable = True
            out.append(kept)
        else:
            current.attributes = {**last.attributes, **current.attributes}
            current.allocatable = True
    out.sort(key=lambda d: d.name)
    return out


class Inventory:
    def __init__(
        self,
        config: InventoryConfig,
        on_change: OnChange | None = None,
        attached: AttachedProvider | None = None,
        tcx: TcxProvider | None = None,
        health: HealthProvider | None = None,
    ) -> None:
        self.config = config
        self.sysfs = Sysfs(config.sysfs_root)
        self.options = config.options or ScanOptions()
        self._on_change = on_change
        self._attached_provider = attached
        self._tcx_provider = tcx
        self._tcx: Mapping[str, Sequence[str]] = {}
        self._tcx_stale = True  # a link event since the worker was last asked
        self._attached: set[str] = set()
        self._health_provider = health
        self._unhealthy: Mapping[str, str] = {}  # device -> reason, as the worker last said
        self._taints = TaintClock()
        # Whether the worker has answered at least once (nothing to ask without a provider).
        self._attached_known = attached is None
        self._withheld: set[str] = set()  # PCI NICs build_devices left out, logged when it changes
        self._facts: dict[tuple[int, str], NetdevSysfs] = {}
        self._kept = KeptDevices(Path(config.kept_path)) if config.kept_path else None
        self._last_seen: dict[str, Device] = self._kept.load() if self._kept else {}
        self._devices: list[Device] = []
        self._uplinks = UplinkReporter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self.generation = 0
        self.last_scan_seconds = 0.0
        self.healthy = False
        self.ready = threading.Event()  # set after the first scan

    # ------------------------------------------------------------------ public

    def devices(self) -> tuple[int, list[Device]]:
        with self._lock:
            return self.generation, list(self._devices)

    def snapshot(self) -> dict[str, object]:
        generation, devices = self.devices()
        return {"generation": generation, "devices": [d.to_wire() for d in devices]}

    def request_rescan(self, refresh_attached: bool = False) -> None:
        if refresh_attached:
            self._refresh_attached()
        self._kick.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inventory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread:
            self._thread.join(timeout=2)

    # ------------------------------------------------------------------ scanning

    def scan_once(self, sock: RtnlSocket, full: bool = False) -> bool:
        """One scan; publish when the result changed. Returns True when it changed."""
        started = time.perf_counter()
        if full:
            self._facts.clear()
        snap = scan(sock, self.options.uplink_policy, self._tcx)
        if self._tcx_provider is not None and (full or self._tcx_stale):
            # Asked again only after a link event (attaching a tcx program sends none: upstream's
            # e2e toggles the link) and at the resync, not for address or route events: the worker
            # answers with a link dump and two bpf(2) calls per link.
            self._tcx_stale = False
            self._tcx = self._tcx_provider()
            snap.links = [replace(lk, tcx_programs=tuple(self._tcx.get(lk.name, ()))) for lk in snap.links]
        self._uplinks.report(snap.uplinks)
        withheld: set[str] = set()
        live = build_devices(snap, self.sysfs, self.options, self._facts, self._attached, withheld)
        if withheld != self._withheld:
            self._withheld = withheld
            if withheld:
                log.info(
                    "PCI NICs not published: their netdev is not in this network namespace (the node's) "
                    "and they have no RDMA device, so the worker cannot hand them out",
                    extra={"pci_addresses": sorted(withheld)},
                )
        live_names = {d.name for d in live}
        vanished = [n for n in self._last_seen if n not in live_names]
        if vanished and self._attached_provider is not None:
            self._refresh_attached()
        for dev in live:
            last = self._last_seen.get(dev.name)
            seen = copy.deepcopy(dev)
            if last is not None and dev.name in self._attached:
                # In a pod but partly visible (a PCI function): keep what only the host showed.
                seen.attributes = {**last.attributes, **dev.attributes}
            self._last_seen[dev.name] = seen
        for name in vanished:
            # Until the worker has answered, a device read back from the state dir may be in a pod.
            if name not in self._attached and self._attached_known:
                self._last_seen.pop(name, None)
        if self._kept is not None and self._attached_known:
            self._kept.save({n: d for n, d in self._last_seen.items() if n in self._attached})
        devices = merge_kept(live, self._last_seen, self._attached)
        taints = self._taints.taints(device_reasons(devices, snap.links, self._unhealthy))
        devices = [replace(d, taints=taints.get(d.name, ())) for d in devices]
        self.last_scan_seconds = time.perf_counter() - started
        SCAN_SECONDS.observe(self.last_scan_seconds)
        with self._lock:
            changed = devices != self._devices
            if changed:
                self.generation += 1
                self._devices = devices
            generation = self.generation
        self.healthy = True
        if changed:
            n_alloc = sum(1 for d in devices if d.allocatable)
            DEVICES.labels(allocatable="true").set(n_alloc)
            DEVICES.labels(allocatable="false").set(len(devices) - n_alloc)
            log.info(
                "inventory changed",
                extra={
                    "generation": generation,
                    "devices": len(devices),
                    "allocatable": n_alloc,
                    "scan_ms": round(self.last_scan_seconds * 1000, 1),
                },
            )
            if self._on_change:
                self._on_change(devices, generation)
        return changed

    def _refresh_attached(self) -> None:
        if self._health_provider is not None:
            unhealthy = self._health_provider()
            if unhealthy is not None:
                self._unhealthy = unhealthy
        if self._attached_provider is None:
            return
        try:
            names = self._attached_provider()
        except Exception as exc:
            log.debug("attached devices unknown", extra={"error": str(exc)})
            return
        if names is not None:
            self._attached = set(names)
            self._attached_known = True

    def _run(self) -> None:
        backoff = Backoff(0.1, 5.0)
        while not self._stop.is_set():
            try:
                self._loop()
            except Exception as exc:  # netlink socket trouble: reopen after a pause, never die
                self.healthy = False
                log.warning(
                    "inventory loop failed; restarting", extra={"error": f"{type(exc).__name__}: {exc}"}
                )
                self._stop.wait(backoff.next())

    def _loop(self) -> None:
        given = self.config.sockets
        if given is not None:
            events, dump = given
        else:
            events = open_in_netns(self.config.netns, EVENT_GROUPS)
            dump = open_in_netns(self.config.netns)
        try:
            events.sock.setblocking(False)
            self._refresh_attached()
            self.scan_once(dump, full=True)
            self.ready.set()
            next_resync = time.monotonic() + self.config.resync_interval
            while not self._stop.is_set():
                timeout = max(0.0, min(next_resync - time.monotonic(), 0.2))
                readable, _, _ = select.select([events.sock], [], [], timeout)
                full = time.monotonic() >= next_resync
                pending = bool(readable) and self._drain(events)
                if self._kick.is_set():
                    self._kick.clear()
                    pending = True
                if not pending and not full:
                    continue
                if pending:
                    # Coalesce: wait out the burst window and swallow what arrives meanwhile.
                    end = time.monotonic() + self.config.coalesce
                    while (left := end - time.monotonic()) > 0:
                        r, _, _ = select.select([events.sock], [], [], left)
                        if r:
                            self._drain(events)
                if full:
                    self._refresh_attached()
                    next_resync = time.monotonic() + self.config.resync_interval
                try:
                    self.scan_once(dump, full=full)
                except NetlinkError as exc:  # e.g. EBUSY/EINTR on a dump racing changes: try again
                    log.info("scan interrupted; rescanning", extra={"error": str(exc)})
                    self._kick.set()
        finally:
            if given is None:
                events.close()
                dump.close()

    def _drain(self, events: RtnlSocket) -> bool:
        got = False
        while True:
            try:
                types = events.read_events()
            except BlockingIOError:
                return got
            got = True
            # None: the kernel dropped events (overflow); the rescan covers them, whatever they were.
            if types is None or LINK_EVENTS.intersection(types):
                self._tcx_stale = True
