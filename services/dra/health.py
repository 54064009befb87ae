"""Device health for the kubelet (DRAResourceHealth v1alpha1 NodeWatchResources).

Each prepared device's health comes from its link state: carrier present -> HEALTHY, carrier lost
or link down -> UNHEALTHY, link not found -> UNKNOWN. Before attach the interface is in the host
netns under its host name and is read here with a read-only netlink query. Once attached it is in
the pod's netns, which dra (no capabilities) cannot enter: the netns worker reads it there and
reports it in its `list` result, which dra asks for on every health tick. Only when the worker gives
no state (an older worker, or a stand-in) is the pod netns read from here, which needs privileges;
without them the device is reported UNKNOWN with that reason rather than guessed.

The kubelet stamps each device's report with the time it arrives and shows the device Unknown once
`health_check_timeout_seconds` (30 s when unset) has passed without a new one. So every message
carries that timeout, and the whole list is re-sent every third of it (and of the kubelet's 30 s
default, for kubelets that ignore the field), changed or not: a healthy device never expires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dranet._generated import dra_health_v1alpha1_pb2 as pb
from dranet._generated import dra_health_v1alpha1_pb2_grpc as pb_grpc
from dranet.netlink.rtnl import open_in_netns

log = logging.getLogger(__name__)

UNKNOWN: int = pb.UNKNOWN
HEALTHY: int = pb.HEALTHY
UNHEALTHY: int = pb.UNHEALTHY
KUBELET_DEFAULT_TIMEOUT = 30.0  # the kubelet's DefaultHealthTimeout
DEFAULT_TIMEOUT = 60.0  # what we ask for (health_check_timeout_seconds)


def resend_interval(timeout: float) -> float:
    """Seconds between full re-sends: three chances within the shorter of the two timeouts."""
    return min(timeout, KUBELET_DEFAULT_TIMEOUT) / 3


@dataclass(frozen=True)
class Where:
    """Where a device's link is: its name and the netns (None: this process's own)."""

    ifname: str
    netns: str | None = None
    unknown: str = ""  # set when the link cannot be observed from here: the reason
    # the link state the netns worker read in the pod netns (a `list` Attachment), when it gave one
    link: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Health:
    pool: str
    device: str
    status: int
    message: str


def link_health(ifname: str, netns: str | None = None) -> tuple[int, str]:
    """(status, message) of one link from netlink (one RTM_GETLINK by name, parsed by the shared
    reader: pyroute2's IPRoute costs milliseconds of CPU per device, which a poll right after a
    prepare takes from the pod start that follows); never changes anything."""
    if not ifname:
        return UNKNOWN, "no network interface (RDMA-only device)"
    try:
        sock = open_in_netns(netns)
        try:
            link = sock.link(ifname)
        finally:
            sock.close()
    except OSError as exc:
        return UNKNOWN, f"cannot read link {ifname}: {exc}"
    if link is None:
        return UNKNOWN, f"link {ifname} not found"
    if not link.flags & 0x1:  # IFF_UP
        return UNHEALTHY, f"link {ifname} is administratively down"
    if not link.carrier:
        return UNHEALTHY, f"link {ifname} lost carrier (operstate {link.operstate or 'UNKNOWN'})"
    return HEALTHY, f"link {ifname} is up with carrier"


def worker_link_health(ifname: str, link: Mapping[str, Any]) -> tuple[int, str]:
    """(status, message) from the link state the netns worker reported (pure)."""
    if link.get("link_error"):
        return UNKNOWN, f"netns worker: {link['link_error']}"
    if "carrier" not in link:
        return UNKNOWN, f"the netns worker gave no link state for {ifname}"
    where = f"link {ifname} in the pod"
    if not link.get("admin_up", True):
        return UNHEALTHY, f"{where} is administratively down"
    if not link.get("carrier"):
        return UNHEALTHY, f"{where} lost carrier (operstate {link.get('operstate', '?')})"
    if not link.get("oper_up", True):
        return UNHEALTHY, f"{where} is not operational (operstate {link.get('operstate', '?')})"
    return HEALTHY, f"{where} is up with carrier"


class HealthMonitor:
    """Polls the links of prepared devices and wakes the watch streams when anything changes."""

    def __init__(
        self,
        devices: Callable[[], Mapping[tuple[str, str], Where]],
        *,
        probe: Callable[[str, str | None], tuple[int, str]] = link_health,
        interval: float = 2.0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """timeout: how long the kubelet should trust one report (whole seconds, at least 1)."""
        self._devices = devices
        self.timeout_s = max(1, round(timeout))
        self.resend = resend_interval(self.timeout_s)
        self._probe = probe
        self._interval = interval
        self._cond = threading.Condition()
        self._poll_lock = threading.Lock()
        self._current: tuple[Health, ...] = ()
        self._version = 0
        self._updated: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dra-health", daemon=True)

    def start(self) -> None:
        self.poll()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(5)

    def kick(self) -> None:
        """Poll now (a claim was prepared or a device attached)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stop.is_set():
                self.poll()

    def poll(self) -> None:
        with self._poll_lock:  # the poller thread and a new stream may both ask
            self._poll()

    def _poll(self) -> None:
        now = int(time.time())
        items = []
        for (pool, device), where in sorted(self._devices().items()):
            status: int
            if where.unknown:
                status, message = UNKNOWN, where.unknown
            elif where.link is not None:
                status, message = worker_link_health(where.ifname, where.link)
            else:
                status, message = self._probe(where.ifname, where.netns)
            items.append(Health(pool, device, status, message[:1024]))
        snapshot = tuple(items)
        with self._cond:
            if snapshot != self._current:
                old = {(h.pool, h.device): h for h in self._current}
                for h in snapshot:
                    if old.get((h.pool, h.device)) != h:
                        self._updated[(h.pool, h.device)] = now
                        if h.status == UNHEALTHY:
                            log.warning("device unhealthy", extra={"device": h.device, "reason": h.message})
                self._current = snapshot
                self._version += 1
                self._cond.notify_all()

    def current(self) -> tuple[int, tuple[Health, ...]]:
        with self._cond:
            return self._version, self._current

    def wait_change(self, version: int, timeout: float) -> tuple[int, tuple[Health, ...]]:
        with self._cond:
            self._cond.wait_for(lambda: self._version != version or self._stop.is_set(), timeout)
            return self._version, self._current

    def response(self, items: tuple[Health, ...]) -> pb.NodeWatchResourcesResponse:
        return pb.NodeWatchResourcesResponse(
            devices=[
                pb.DeviceHealth(
                    device=pb.DeviceIdentifier(pool_name=h.pool, device_name=h.device),
                    health=h.status,  # type: ignore[arg-type]
                    last_updated_time=self._updated.get((h.pool, h.device), int(time.time())),
                    health_check_timeout_seconds=self.timeout_s,
                    message=h.message,
                )
                for h in items
            ]
        )

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


class HealthServicer(pb_grpc.DRAResourceHealthServicer):
    def __init__(self, monitor: HealthMonitor) -> None:
        self.monitor = monitor

    def NodeWatchResources(self, request: pb.NodeWatchResourcesRequest, context: Any) -> Iterator[Any]:
        # Each message is the complete list (devices missing from it would turn Unknown); the
        # first one is fresh, not the last poll's. Sent on every change and at least every
        # `resend` seconds (the kubelet expires reports, see the module doc).
        self.monitor.poll()
        version, items = self.monitor.current()
        yield self.monitor.response(items)
        sent = time.monotonic()
        while context.is_active() and not self.monitor.stopped:
            wait = min(1.0, max(0.0, sent + self.monitor.resend - time.monotonic()))
            new_version, items = self.monitor.wait_change(version, wait)
            if new_version != version or time.monotonic() - sent >= self.monitor.resend:
                version = new_version
                yield self.monitor.response(items)
                sent = time.monotonic()
