"""What the nri service does for each runtime event. No NRI wire types here: plugin.py converts.

The two collaborators are small interfaces (Dra, Netns below); the service wires them to the bus,
tests wire fakes. Every call the runtime waits on is bounded by the budget: the runtime's request
timeout (from Configure) minus a safety margin. Missing the runtime's deadline is the one outcome
we never allow: containerd would drop the plugin and start the pod without its interfaces.

A pod can have several sandboxes (the kubelet makes attempt N+1 after a failure and removes the old
ones later), so what nri remembers, and what it asks the worker to detach, is per sandbox: (pod
UID, netns). Calls for one pod are serialised by a per-pod lock, background retries included.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dranet.services.nri.reconcile import plan as reconcile_plan

from dranet.backoff import Backoff
from dranet.bus.messages import BusError, ErrorCode
from dranet.keyedlocks import KeyedLocks
from dranet.observability import metrics
from dranet.rdma import CharDevice, char_devices, char_devices_from, dedupe

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
        """netns `list`: each attachment with its netns path and identity; raises BusError."""
        ...

    def alive(self, paths: list[str], timeout: float) -> dict[str, str]:
        """netns `netns_alive`: path -> netns identity, for the paths that are alive; raises BusError."""
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
class _Sandbox:
    sandbox_id: str
    devices: list[str] = field(default_factory=list)  # attached device names
    char_devices: list[CharDevice] = field(default_factory=list)
    attach_seq: int = 0  # when its devices were attached (orders it against detach retries)


@dataclass
class Options:
    budget_margin: float = 0.5  # answer this long before the runtime's deadline
    default_request_timeout: float = 2.0  # until Configure says otherwise
    late_attach_timeout: float = 10.0  # reconciliation works outside any runtime request
    detach_retry_max: float = 5.0  # backoff cap for a detach that must eventually happen
    sysfs_root: str = "/sys"


# Late-attach failures that may pass on a later try (the worker busy, restarting or slow).
_RETRIABLE = frozenset(
    {ErrorCode.TIMEOUT, ErrorCode.DEADLINE_EXCEEDED, ErrorCode.UNAVAILABLE, ErrorCode.CONFLICT}
)


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dra = dra
        self.netns = netns
        self.opts = options or Options()
        self.request_timeout = self.opts.default_request_timeout
        self._publish = publish
        self._clock = clock
        self._lock = threading.Lock()
        self._locks = KeyedLocks()
        # Sandboxes we know the devices of (possibly none), by (pod UID, netns path): a pod has
        # several sandboxes over its life (attempt N+1 after a failure), and each is released alone.
        self._sandboxes: dict[tuple[str, str], _Sandbox] = {}
        # sandbox id -> its key above, for events that omit the netns path
        self._netns_of: dict[str, tuple[str, str]] = {}
        self._attaches = itertools.count(1)  # orders attaches against background detach retries
        # Pods with an event since the last Synchronize, kept only while its reconcile runs (the
        # reconcile must not release a pod that started after the runtime's list was taken).
        self._seen: set[str] | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ helpers

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

    def _remember(self, pod: PodInfo, devices: list[str], chars: list[CharDevice]) -> None:
        with self._lock:
            self._sandboxes[(pod.uid, pod.netns)] = _Sandbox(
                pod.sandbox_id, devices, chars, next(self._attaches) if devices else 0
            )
            if pod.sandbox_id:
                self._netns_of[pod.sandbox_id] = (pod.uid, pod.netns)

    def _netns(self, pod: PodInfo) -> str:
        """The sandbox's netns path: the runtime's, else the one it had at RunPodSandbox."""
        if pod.netns:
            return pod.netns
        with self._lock:
            return self._netns_of.get(pod.sandbox_id, ("", ""))[1]

    def set_request_timeout(self, seconds: float) -> None:
        """From Configure; 0 (an old runtime that does not say) keeps the default."""
        if seconds > 0:
            self.request_timeout = seconds

    def attached_pods(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self._lock:
            for (uid, _), s in sorted(self._sandboxes.items()):
                if s.devices:
                    out.setdefault(uid, []).extend(s.devices)
        return out

    # ------------------------------------------------------------ RunPodSandbox

    def run_pod_sandbox(self, pod: PodInfo) -> None:
        """Attach the pod's devices within the budget, or raise SandboxError with nothing left."""
        start = self._clock()
        end = self._budget_end(start)
        outcome = "error"
        self._note_event(pod.uid)
        try:
            with self._locks.hold(pod.uid, timeout=end - self._clock()) as got:
                if not got:
                    raise SandboxError(
                        f"dranet: another operation on pod {pod.ref} did not finish within the budget; "
                        "the kubelet will retry"
                    )
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
            self._remember(pod, [], [])
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
        self._remember(pod, names, self._char_devices(devices, attachments))
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
        self._retry_detach(body)

    def _retry_detach(self, body: dict[str, Any]) -> None:
        with self._lock:
            since = next(self._attaches)
        self._spawn(self._detach_until_done, body, since, name=f"nri-detach-{body['pod_uid'][:8]}")

    def _detach_until_done(self, body: dict[str, Any], since: int) -> None:
        """Detach one sandbox's devices until it succeeds. Each try holds the pod lock, and an
        attach into that sandbox after the retry began ends it: a retry never undoes a newer
        attach (and the worker detaches only that sandbox's devices: never another sandbox's)."""
        uid, netns = body["pod_uid"], body["netns"]
        backoff = Backoff(0.1, self.opts.detach_retry_max)
        while not self._stopping.is_set():
            with self._locks.hold(uid):
                with self._lock:
                    state = self._sandboxes.get((uid, netns))
                if state is not None and state.attach_seq > since:
                    log.info(
                        "detach retry superseded by a newer attach", extra={"pod_uid": uid, "netns": netns}
                    )
                    return
                try:
                    released = self.netns.detach(body, timeout=self.opts.late_attach_timeout)
                    if state is not None:
                        state.devices = []
                    self._emit({"event": "detached", "pod_uid": uid, "devices": released})
                    return
                except BusError as exc:
                    log.warning("detach retry failed", extra={"pod_uid": uid, "code": exc.code})
            self._stopping.wait(backoff.next())

    def _char_devices(
        self, devices: list[dict[str, Any]], attachments: list[dict[str, Any]]
    ) -> list[CharDevice]:
        found = char_devices_from(attachments) + char_devices_from(devices)
        for d in devices:
            if d.get("rdma_device"):
                found += char_devices(d["rdma_device"], self.opts.sysfs_root)
        return dedupe(found)

    # ------------------------------------------------------------ CreateContainer

    def create_container(
        self, pod: PodInfo, existing_paths: frozenset[str] = frozenset()
    ) -> list[CharDevice]:
        """The RDMA char devices to add to a container of `pod` (none for most pods)."""
        start = self._clock()
        key = (pod.uid, self._netns(pod))  # _netns takes self._lock itself
        with self._lock:
            state = self._sandboxes.get(key)
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
        """Detach the devices of this sandbox, and of no other sandbox of the pod (idempotent).
        The runtime only logs errors here, so a detach that fails or runs out of budget is retried
        in the background instead."""
        start = self._clock()
        self._note_event(pod.uid)
        netns = self._netns(pod)
        key = (pod.uid, netns)
        with self._locks.hold(pod.uid, timeout=self._budget_end(start) - self._clock()) as got:
            with self._lock:
                state = self._sandboxes.get(key)
            body = {"pod_uid": pod.uid, "netns": netns}
            if not netns:
                # hostNetwork (nothing attached), or a sandbox we cannot name: never guess, or the
                # pod's live sandbox could lose its NICs. The worker releases the devices of a
                # netns that is gone, and reconcile those of a sandbox that no longer runs.
                outcome = "noop"
            elif state is not None and not state.devices:
                outcome = "noop"
            elif not got:
                outcome = "error"
                log.warning("pod busy; detaching in the background", extra={"pod_uid": pod.uid})
                self._retry_detach(body)
            else:  # attached, or unknown (we restarted since): ask the worker, it knows
                outcome = self._detach_now(pod, body, state, start)
            if forget:
                with self._lock:
                    self._sandboxes.pop(key, None)
                    self._netns_of.pop(pod.sandbox_id, None)
        self._observe(event, outcome, start)

    def _detach_now(self, pod: PodInfo, body: dict[str, Any], state: _Sandbox | None, start: float) -> str:
        try:
            released = self.netns.detach(body, timeout=max(self._budget_end(start) - self._clock(), 0.001))
        except BusError as exc:
            log.warning(
                "detach failed; retrying in the background",
                extra={"pod_uid": pod.uid, "code": exc.code, "reason": exc.message},
            )
            self._retry_detach(body)
            return "error"
        if state is not None:
            state.devices = []
        if not released:
            return "noop"
        self._emit({"event": "detached", "pod_uid": pod.uid, "pod": pod.ref, "devices": released})
        log.info("detached", extra={"pod_uid": pod.uid, "pod": pod.ref, "devices": released})
        return "detached"

    # ------------------------------------------------------------ Synchronize

    def synchronize(self, pods: list[PodInfo]) -> None:
        """Called with the runtime's full pod list on every (re)connection; must return at once.
        Reconciliation (late attach, release of orphans) runs in a thread."""
        seen: set[str] = set()
        with self._lock:
            self._seen = seen
        self._spawn(self._reconcile_until_done, list(pods), seen, name="nri-reconcile")

    def _note_event(self, uid: str) -> None:
        with self._lock:
            if self._seen is not None:
                self._seen.add(uid)

    def _reconcile_until_done(self, pods: list[PodInfo], seen: set[str]) -> None:
        backoff = Backoff(0.2, self.opts.detach_retry_max)
        try:
            while not self._stopping.is_set():
                try:
                    self.reconcile(pods)
                    return
                except BusError as exc:
                    log.warning(
                        "reconciliation failed; retrying", extra={"code": exc.code, "reason": exc.message}
                    )
                self._stopping.wait(backoff.next())
        finally:
            with self._lock:
                if self._seen is seen:  # not replaced by a newer Synchronize
                    self._seen = None

    def reconcile(self, pods: list[PodInfo]) -> dict[str, list[str]]:
        """Release the attachments of sandboxes that no longer run, then attach what running
        sandboxes miss. Whether a sandbox runs is the worker's answer (it sees the netns files;
        nri may not). Returns {"late_attached": [pod uids], "released": [pod uids]}. Raises
        BusError to be retried."""
        timeout = self.opts.late_attach_timeout
        paths = sorted({p.netns for p in pods if p.netns})
        alive = self.netns.alive(paths, timeout=timeout) if paths else {}
        attachments = self.netns.attachments(timeout=timeout)
        with self._lock:
            seen = set(self._seen or ())
            self._forget_unlisted(pods, seen)
        todo = reconcile_plan(pods, alive, attachments, seen)
        done: dict[str, list[str]] = {"late_attached": [], "released": []}
        for r in todo.releases:
            with self._locks.hold(r.pod_uid):
                released = self.netns.detach({"pod_uid": r.pod_uid, "netns": r.netns}, timeout=timeout)
                with self._lock:
                    self._sandboxes.pop((r.pod_uid, r.netns), None)
            self._emit(
                {"event": "detached", "pod_uid": r.pod_uid, "devices": released, "reason": "sandbox is gone"}
            )
            log.info(
                "released the devices of a sandbox that is gone",
                extra={"pod_uid": r.pod_uid, "netns": r.netns, "devices": released},
            )
            done["released"].append(r.pod_uid)
        for uid in todo.ambiguous:
            log.warning(
                "pod has several running sandboxes, none with its devices: no late attach",
                extra={"pod_uid": uid},
            )
        retry: list[BusError] = []
        for late in todo.late:
            with self._locks.hold(late.pod.uid):
                try:
                    if self._late_attach(late.pod, late.held, timeout):
                        done["late_attached"].append(late.pod.uid)
                except BusError as exc:
                    retry.append(exc)
        if retry:
            # A pod whose sandbox started without us stays refused (CDI hook) until this succeeds:
            # a transient failure must be retried, not left for the next reconnection.
            raise BusError(retry[0].code, f"late attach of {len(retry)} pod(s) failed: {retry[0].message}")
        return done

    def _forget_unlisted(self, pods: list[PodInfo], seen: set[str]) -> None:
        """Drop what we remember of sandboxes the runtime no longer lists (their Remove came while
        we were disconnected), so that memory follows the node's pods. Holds self._lock."""
        listed = {(p.uid, p.netns) for p in pods}
        ids = {p.sandbox_id for p in pods}
        for key in [k for k in self._sandboxes if k not in listed and k[0] not in seen]:
            del self._sandboxes[key]
        for sid in [s for s, key in self._netns_of.items() if s not in ids and key not in self._sandboxes]:
            del self._netns_of[sid]

    def _late_attach(self, pod: PodInfo, held: frozenset[str], timeout: float) -> bool:
        devices = self.dra.pod_devices(pod.uid, timeout=timeout)
        names = [d["device"] for d in devices]
        missing = [d for d in devices if d["device"] not in held]
        if not missing:
            self._remember(pod, names, self._char_devices(devices, []))
            return False
        missing_names = [d["device"] for d in missing]
        try:
            attachments = self.netns.attach(_attach_request(pod, missing), timeout=timeout)
        except BusError as exc:
            LATE_ATTACHES.labels(outcome="error").inc()
            self._emit(
                {
                    "event": "late_attach_failed",
                    "pod_uid": pod.uid,
                    "pod": pod.ref,
                    "devices": missing_names,
                    "code": exc.code,
                    "reason": exc.message,
                }
            )
            log.error(
                "late attach failed", extra={"pod_uid": pod.uid, "code": exc.code, "reason": exc.message}
            )
            if exc.code in _RETRIABLE:
                raise
            return False
        LATE_ATTACHES.labels(outcome="attached").inc()
        self._remember(pod, names, self._char_devices(devices, attachments))
        self._emit(
            {
                "event": "late_attached",
                "pod_uid": pod.uid,
                "pod": pod.ref,
                "devices": missing_names,
                "attachments": attachments,
            }
        )
        log.info("late attach", extra={"pod_uid": pod.uid, "pod": pod.ref, "devices": missing_names})
        return True

    def background_tasks(self) -> int:
        """Reconciliations and detach retries still running."""
        with self._lock:
            return sum(t.is_alive() for t in self._threads)

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
                # an RDMA-only device (no netdev) is named by its RDMA device
                **({"rdma_device": d["rdma_device"]} if d.get("rdma_device") and not d.get("ifname") else {}),
                **({"share_id": d["share_id"]} if d.get("share_id") else {}),
            }
            for d in devices
        ],
    }
