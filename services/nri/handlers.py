"""What the nri service does for each runtime event. No NRI wire types here: plugin.py converts.

The two collaborators are small interfaces (Dra, Netns below); the service wires them to the bus,
tests wire fakes. Every call the runtime waits on is bounded by the budget: the runtime's request
timeout (from Configure) minus a safety margin. Missing the runtime's deadline is the one outcome
we never allow: containerd would drop the plugin and start the pod without its interfaces.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dranet.services.nri.rdma import CharDevice, char_devices_from, dedupe, rdma_char_devices

from dranet.bus.messages import BusError, ErrorCode
from dranet.observability import metrics

log = logging.getLogger(__name__)

HANDLER_SECONDS = metrics.histogram(
    "dranet_nri_handler_duration_seconds",
    "Time the nri service took to answer a runtime event, by event and outcome",
    ("event", "outcome"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 5.0),
)
LATE_ATTACHES = metrics.counter(
    "dranet_nri_late_attach_total",
    "Pods attached during reconciliation instead of RunPodSandbox",
    ("outcome",),
)

POD_EVENTS_TOPIC = "pod_events"


class SandboxError(Exception):
    """RunPodSandbox/CreateContainer must fail with this message (the kubelet retries)."""


class Dra(Protocol):
    def pod_devices(self, pod_uid: str, timeout: float) -> list[dict[str, Any]]:
        """The pod's prepared devices (dra `pod_devices`); raises BusError."""
        ...


class Netns(Protocol):
    def attach(self, body: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        """netns `attach`; returns the attachments; raises BusError."""
        ...

    def detach(self, body: dict[str, Any], timeout: float) -> list[str]:
        """netns `detach`; returns the released devices; raises BusError."""
        ...

    def attachments(self, timeout: float) -> list[dict[str, Any]]:
        """netns `list`; raises BusError."""
        ...


@dataclass(frozen=True)
class PodInfo:
    uid: str
    name: str = ""
    namespace: str = ""
    sandbox_id: str = ""
    netns: str = ""  # "" for a hostNetwork pod (or when the runtime did not say)
    pid: int = 0

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}" if self.name else self.uid


@dataclass
class _PodState:
    netns: str
    devices: list[str] = field(default_factory=list)  # attached device names
    char_devices: list[CharDevice] = field(default_factory=list)


@dataclass
class Options:
    budget_margin: float = 0.5  # answer this long before the runtime's deadline
    default_request_timeout: float = 2.0  # until Configure says otherwise
    late_attach_timeout: float = 10.0  # reconciliation works outside any runtime request
    detach_retry_max: float = 5.0  # backoff cap for a detach that must eventually happen
    sysfs_root: str = "/sys"


def _is_timeout(exc: BusError) -> bool:
    return exc.code in (ErrorCode.TIMEOUT, ErrorCode.DEADLINE_EXCEEDED)


class PodHandlers:
    def __init__(
        self,
        dra: Dra,
        netns: Netns,
        *,
        options: Options | None = None,
        publish: Callable[[str, dict[str, Any]], None] | None = None,
        netns_exists: Callable[[str], bool] = os.path.exists,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dra = dra
        self.netns = netns
        self.opts = options or Options()
        self.request_timeout = self.opts.default_request_timeout
        self._publish = publish
        self._netns_exists = netns_exists
        self._clock = clock
        self._lock = threading.Lock()
        self._pod_locks: dict[str, threading.Lock] = {}
        self._pods: dict[str, _PodState] = {}  # pods we know the devices of (possibly none)
        self._seen: set[str] = set()  # pods with an event since the last Synchronize
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ helpers

    def _pod_lock(self, uid: str) -> threading.Lock:
        with self._lock:
            return self._pod_locks.setdefault(uid, threading.Lock())

    def _budget_end(self, start: float) -> float:
        return start + max(self.request_timeout - self.opts.budget_margin, 0.05)

    def _emit(self, body: dict[str, Any]) -> None:
        if self._publish is None:
            return
        try:
            self._publish(POD_EVENTS_TOPIC, {"time": time.time(), **body})
        except Exception:
            log.exception("publishing a pod event failed")

    def _spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _observe(self, event: str, outcome: str, start: float) -> None:
        HANDLER_SECONDS.labels(event=event, outcome=outcome).observe(self._clock() - start)

    def set_request_timeout(self, seconds: float) -> None:
        """From Configure; 0 (an old runtime that does not say) keeps the default."""
        if seconds > 0:
            self.request_timeout = seconds

    def attached_pods(self) -> dict[str, list[str]]:
        with self._lock:
            return {uid: list(s.devices) for uid, s in self._pods.items() if s.devices}

    # ------------------------------------------------------------ RunPodSandbox

    def run_pod_sandbox(self, pod: PodInfo) -> None:
        """Attach the pod's devices within the budget, or raise SandboxError with nothing left."""
        start = self._clock()
        end = self._budget_end(start)
        outcome = "error"
        with self._lock:
            self._seen.add(pod.uid)
        try:
            with self._pod_lock(pod.uid):
                outcome = self._run(pod, start, end)
        finally:
            self._observe("run_pod_sandbox", outcome, start)

    def _run(self, pod: PodInfo, start: float, end: float) -> str:
        try:
            devices = self.dra.pod_devices(pod.uid, timeout=max(end - self._clock(), 0.001))
        except BusError as exc:
            # Fail closed: without the answer we cannot tell a pod with a claimed NIC from one
            # without, and a pod must never run silently without its NIC.
            raise SandboxError(
                f"dranet: cannot look up the network devices of pod {pod.ref}: {exc.message} "
                f"(dra service: {exc.code}); the kubelet will retry"
            ) from None
        if not devices:
            with self._lock:
                self._pods[pod.uid] = _PodState(pod.netns)
            return "noop"
        names = [d["device"] for d in devices]
        if not pod.netns:
            raise SandboxError(
                f"dranet: pod {pod.ref} uses the host network but claims network devices {names}; "
                "a claimed interface needs the pod's own network namespace (remove hostNetwork or the claim)"
            )
        body = _attach_request(pod, devices)
        try:
            attachments = self.netns.attach(body, timeout=max(end - self._clock(), 0.001))
        except BusError as exc:
            reason = (
                f"the attach did not finish within the {end - start:.2f}s budget (runtime request "
                f"timeout {self.request_timeout:g}s minus {self.opts.budget_margin:g}s margin)"
                if _is_timeout(exc)
                else exc.message
            )
            self._undo(pod, start)
            self._emit(
                {
                    "event": "attach_failed",
                    "pod_uid": pod.uid,
                    "pod": pod.ref,
                    "devices": names,
                    "code": exc.code,
                    "reason": reason,
                }
            )
            log.warning(
                "attach failed",
                extra={
                    "pod_uid": pod.uid,
                    "pod": pod.ref,
                    "devices": names,
                    "code": exc.code,
                    "reason": reason,
                },
            )
            raise SandboxError(
                f"dranet: attaching {', '.join(names)} to pod {pod.ref} failed: {reason}"
            ) from None
        chars = self._char_devices(devices, attachments)
        with self._lock:
            self._pods[pod.uid] = _PodState(pod.netns, names, chars)
        self._emit(
            {
                "event": "attached",
                "pod_uid": pod.uid,
                "pod": pod.ref,
                "devices": names,
                "attachments": attachments,
            }
        )
        log.info(
            "attached",
            extra={
                "pod_uid": pod.uid,
                "pod": pod.ref,
                "devices": names,
                "ms": round((self._clock() - start) * 1000, 2),
            },
        )
        return "attached"

    def _undo(self, pod: PodInfo, start: float) -> None:
        """Make sure nothing of a failed attach stays: detach now, within what is left before the
        runtime's deadline; if that does not succeed, keep trying in the background."""
        left = start + self.request_timeout - self._clock() - min(0.2, self.opts.budget_margin / 2)
        body = {"pod_uid": pod.uid, "netns": pod.netns}
        if left > 0.01:
            try:
                self.netns.detach(body, timeout=left)
                return
            except BusError as exc:
                log.warning(
                    "detach after a failed attach failed; retrying in the background",
                    extra={"pod_uid": pod.uid, "code": exc.code, "reason": exc.message},
                )
        self._spawn(self._detach_until_done, body, name=f"nri-undo-{pod.uid[:8]}")

    def _detach_until_done(self, body: dict[str, Any]) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                released = self.netns.detach(body, timeout=self.opts.late_attach_timeout)
                self._emit({"event": "detached", "pod_uid": body["pod_uid"], "devices": released})
                return
            except BusError as exc:
                log.warning("detach retry failed", extra={"pod_uid": body["pod_uid"], "code": exc.code})
            self._stopping.wait(delay)
            delay = min(delay * 2, self.opts.detach_retry_max)

    def _char_devices(
        self, devices: list[dict[str, Any]], attachments: list[dict[str, Any]]
    ) -> list[CharDevice]:
        found = char_devices_from(attachments) + char_devices_from(devices)
        for d in devices:
            if d.get("rdma_device"):
                found += rdma_char_devices(d["rdma_device"], self.opts.sysfs_root)
        return dedupe(found)

    # ------------------------------------------------------------ CreateContainer

    def create_container(
        self, pod: PodInfo, existing_paths: frozenset[str] = frozenset()
    ) -> list[CharDevice]:
        """The RDMA char devices to add to a container of `pod` (none for most pods)."""
        start = self._clock()
        with self._lock:
            state = self._pods.get(pod.uid)
        if state is None:  # a pod started before this process: ask dra
            try:
                devices = self.dra.pod_devices(
                    pod.uid, timeout=max(self._budget_end(start) - self._clock(), 0.001)
                )
            except BusError as exc:
                self._observe("create_container", "error", start)
                raise SandboxError(
                    f"dranet: cannot look up the devices of pod {pod.ref} for its container: {exc.message}"
                ) from None
            chars = self._char_devices(devices, [])
        else:
            chars = state.char_devices
        self._observe("create_container", "devices" if chars else "noop", start)
        return [c for c in chars if c.path not in existing_paths]

    # ------------------------------------------------------------ Stop / Remove

    def stop_pod_sandbox(self, pod: PodInfo) -> None:
        self._release(pod, "stop_pod_sandbox", forget=False)

    def remove_pod_sandbox(self, pod: PodInfo) -> None:
        self._release(pod, "remove_pod_sandbox", forget=True)

    def _release(self, pod: PodInfo, event: str, *, forget: bool) -> None:
        """Detach the pod's devices (idempotent). The runtime only logs errors here, so a detach
        that fails or runs out of budget is retried in the background instead."""
        start = self._clock()
        with self._lock:
            self._seen.add(pod.uid)
        with self._pod_lock(pod.uid):
            with self._lock:
                state = self._pods.get(pod.uid)
            if state is not None and not state.devices:
                outcome = "noop"
            else:  # attached, or unknown (we restarted since): ask the worker, it knows
                body: dict[str, Any] = {"pod_uid": pod.uid}
                netns = pod.netns or (state.netns if state else "")
                if netns:
                    body["netns"] = netns
                try:
                    released = self.netns.detach(
                        body, timeout=max(self._budget_end(start) - self._clock(), 0.001)
                    )
                    outcome = "detached" if released else "noop"
                    if released:
                        self._emit(
                            {"event": "detached", "pod_uid": pod.uid, "pod": pod.ref, "devices": released}
                        )
                        log.info("detached", extra={"pod_uid": pod.uid, "pod": pod.ref, "devices": released})
                    if state is not None:
                        state.devices = []
                except BusError as exc:
                    outcome = "error"
                    log.warning(
                        "detach failed; retrying in the background",
                        extra={"pod_uid": pod.uid, "code": exc.code, "reason": exc.message},
                    )
                    self._spawn(self._detach_until_done, body, name=f"nri-detach-{pod.uid[:8]}")
            if forget:
                with self._lock:
                    self._pods.pop(pod.uid, None)
                    self._pod_locks.pop(pod.uid, None)
        self._observe(event, outcome, start)

    # ------------------------------------------------------------ Synchronize

    def synchronize(self, pods: list[PodInfo]) -> None:
        """Called with the runtime's full pod list on every (re)connection; must return at once.
        Reconciliation (late attach, release of orphans) runs in a thread."""
        with self._lock:
            self._seen = set()
        self._spawn(self._reconcile_until_done, list(pods), name="nri-reconcile")

    def _reconcile_until_done(self, pods: list[PodInfo]) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                self.reconcile(pods)
                return
            except BusError as exc:
                log.warning(
                    "reconciliation failed; retrying", extra={"code": exc.code, "reason": exc.message}
                )
            self._stopping.wait(delay)
            delay = min(delay * 2, self.opts.detach_retry_max)

    def reconcile(self, pods: list[PodInfo]) -> dict[str, list[str]]:
        """Attach what running pods miss; release attachments of pods that are gone.
        Returns {"late_attached": [pod uids], "released": [pod uids]}. Raises BusError to be retried."""
        timeout = self.opts.late_attach_timeout
        running = {p.uid: p for p in pods if p.netns and self._netns_exists(p.netns)}
        attached: dict[str, set[str]] = {}
        for a in self.netns.attachments(timeout=timeout):
            if a.get("pod_uid"):
                attached.setdefault(a["pod_uid"], set()).add(a["device"])
        done: dict[str, list[str]] = {"late_attached": [], "released": []}
        for pod in running.values():
            with self._pod_lock(pod.uid):
                devices = self.dra.pod_devices(pod.uid, timeout=timeout)
                have = attached.get(pod.uid, set())
                missing = [d for d in devices if d["device"] not in have]
                names = [d["device"] for d in devices]
                if not missing:
                    with self._lock:
                        self._pods[pod.uid] = _PodState(pod.netns, names, self._char_devices(devices, []))
                    continue
                body = _attach_request(pod, missing)
                try:
                    attachments = self.netns.attach(body, timeout=timeout)
                except BusError as exc:
                    LATE_ATTACHES.labels(outcome="error").inc()
                    self._emit(
                        {
                            "event": "late_attach_failed",
                            "pod_uid": pod.uid,
                            "pod": pod.ref,
                            "devices": [d["device"] for d in missing],
                            "code": exc.code,
                            "reason": exc.message,
                        }
                    )
                    log.error(
                        "late attach failed",
                        extra={"pod_uid": pod.uid, "code": exc.code, "reason": exc.message},
                    )
                    continue
                LATE_ATTACHES.labels(outcome="attached").inc()
                with self._lock:
                    self._pods[pod.uid] = _PodState(
                        pod.netns, names, self._char_devices(devices, attachments)
                    )
                self._emit(
                    {
                        "event": "late_attached",
                        "pod_uid": pod.uid,
                        "pod": pod.ref,
                        "devices": [d["device"] for d in missing],
                        "attachments": attachments,
                    }
                )
                log.info(
                    "late attach",
                    extra={"pod_uid": pod.uid, "pod": pod.ref, "devices": [d["device"] for d in missing]},
                )
                done["late_attached"].append(pod.uid)
        for uid in attached:
            with self._lock:
                seen = uid in self._seen  # an event since the pod list was taken: not an orphan
            if uid in running or seen:
                continue
            with self._pod_lock(uid):
                released = self.netns.detach({"pod_uid": uid}, timeout=timeout)
            with self._lock:
                self._pods.pop(uid, None)
            self._emit({"event": "detached", "pod_uid": uid, "devices": released, "reason": "pod is gone"})
            log.info(
                "released the devices of a pod that is gone", extra={"pod_uid": uid, "devices": released}
            )
            done["released"].append(uid)
        return done

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(1.0)


def _attach_request(pod: PodInfo, devices: list[dict[str, Any]]) -> dict[str, Any]:
    """The netns worker's `attach` body for these prepared devices of the pod."""
    return {
        "pod_uid": pod.uid,
        "netns": pod.netns,
        "pod_name": pod.name,
        "pod_namespace": pod.namespace,
        "devices": [
            {
                "device": d["device"],
                "ifname": d.get("ifname", ""),
                "config": d.get("config") or {},
                "claim_uid": d.get("claim_uid", ""),
            }
            for d in devices
        ],
    }
