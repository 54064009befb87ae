"""Kubernetes Events for failures, so `kubectl describe` shows why a pod has no interface.

- On the pod, from the nri service's "pod_events" topic: an attach refused, failed or out of budget
  at sandbox start, or a late attach (reconciliation) that failed -> Warning
  NetworkDeviceAttachFailed with the error as the message; a late attach that worked -> Normal
  NetworkDeviceLateAttached.
- On the ResourceClaim when prepare fails for it -> Warning ClaimPrepareFailed.

Written by one background thread (never on the kubelet's or the runtime's path), retried with
exponential backoff while the API server is unreachable. Deduplicated: nri gives every pod event a
unique id and re-delivers its last ones in the snapshot a subscriber gets on (re)join, so each id is
written once; the Event's name is derived from the id, so a replay after a dra restart meets
409 AlreadyExists and is not written twice either. A prepare failure is written once per claim and
distinct message (the kubelet retries prepare many times).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes.client.rest import ApiException

from .metrics import EVENT_WRITES
from .writer import BackgroundWriter

log = logging.getLogger(__name__)

POD_EVENTS_TOPIC = "pod_events"
REASON_ATTACH_FAILED = "NetworkDeviceAttachFailed"
REASON_LATE_ATTACHED = "NetworkDeviceLateAttached"
REASON_PREPARE_FAILED = "ClaimPrepareFailed"
REASON_RESTORE_INCOMPLETE = "NetworkDeviceRestoreIncomplete"
WARNING = "Warning"
NORMAL = "Normal"
COMPONENT = "dranet"
MAX_MESSAGE = 1024  # the API server's limit on an Event's message
_RETRIABLE = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class EventSpec:
    """One Event to write (pure data)."""

    key: str  # dedupe key; the Event's name is derived from it
    namespace: str
    involved: Mapping[str, str]  # involvedObject
    type: str
    reason: str
    message: str
    time: float


def _split_ref(ref: str) -> tuple[str, str] | None:
    """nri's pod ref "namespace/name" -> (namespace, name); None for a bare UID (name unknown)."""
    ns, sep, name = ref.partition("/")
    return (ns, name) if sep and ns and name else None


def from_pod_event(body: Mapping[str, Any]) -> EventSpec | None:
    """The Event for one nri pod event, or None when it is not worth one (pure)."""
    kind = str(body.get("event") or "")
    where = _split_ref(str(body.get("pod") or ""))
    uid = str(body.get("pod_uid") or "")
    if where is None or not uid:
        return None  # a pod we cannot name: an Event needs its namespace and name
    devices = ", ".join(str(d) for d in body.get("devices") or []) or "its network devices"
    reason = str(body.get("reason") or body.get("code") or "unknown error")
    if kind == "attach_failed":
        etype, ereason = WARNING, REASON_ATTACH_FAILED
        message = f"attaching {devices} failed: {reason}"
    elif kind == "late_attach_failed":
        etype, ereason = WARNING, REASON_ATTACH_FAILED
        message = f"attaching {devices} to the running pod (late attach) failed: {reason}"
    elif kind == "late_attached":
        etype, ereason = NORMAL, REASON_LATE_ATTACHED
        message = f"{devices} attached after the pod started (the NRI plugin was not connected at its start)"
    else:
        return None  # attached / detached: the claim status says it, no Event needed
    code = body.get("code")
    if code and etype == WARNING:
        message += f" ({code})"
    when = body.get("time")
    key = str(body.get("id") or f"{kind}/{uid}/{when}")
    return EventSpec(
        key=key,
        namespace=where[0],
        involved={"kind": "Pod", "apiVersion": "v1", "namespace": where[0], "name": where[1], "uid": uid},
        type=etype,
        reason=ereason,
        message=message,
        time=float(when) if isinstance(when, int | float) else time.time(),
    )


def claim_prepare_failed(namespace: str, name: str, uid: str, message: str) -> EventSpec:
    """The Warning on a ResourceClaim that prepare failed for (pure)."""
    return claim_warning(namespace, name, uid, REASON_PREPARE_FAILED, message, "prepare")


def from_attachment(body: Mapping[str, Any], claim: tuple[str, str, str] | None) -> EventSpec | None:
    """The Warning for one netns worker `attachments` notification worth one, on its claim
    (namespace, name, uid): a device given back without all of its settings (pure)."""
    if claim is None or str(body.get("state") or "") != "restore_incomplete":
        return None
    error = body.get("error")
    message = str(error.get("message") if isinstance(error, Mapping) else error or "restore incomplete")
    return claim_warning(*claim, REASON_RESTORE_INCOMPLETE, message, "restore")


def claim_warning(namespace: str, name: str, uid: str, reason: str, message: str, kind: str) -> EventSpec:
    """A Warning on a ResourceClaim, one per (claim, message) (pure)."""
    digest = hashlib.sha256(f"{uid}\0{message}".encode()).hexdigest()[:20]
    return EventSpec(
        key=f"{kind}/{digest}",
        namespace=namespace,
        involved={
            "kind": "ResourceClaim",
            "apiVersion": "resource.k8s.io/v1",
            "namespace": namespace,
            "name": name,
            "uid": uid,
        },
        type=WARNING,
        reason=reason,
        message=message,
        time=time.time(),
    )


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def event_object(spec: EventSpec, node: str) -> dict[str, Any]:
    """The core/v1 Event (pure). Its name is the object's name plus a digest of the key, so the
    same event written twice is a 409, not a duplicate."""
    digest = hashlib.sha256(spec.key.encode()).hexdigest()[:16]
    stamp = _rfc3339(spec.time)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{spec.involved['name'][:200]}.{digest}", "namespace": spec.namespace},
        "involvedObject": dict(spec.involved),
        "type": spec.type,
        "reason": spec.reason,
        "message": spec.message[:MAX_MESSAGE],
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


@dataclass
class _Pending:
    spec: EventSpec
    due: float = 0.0
    attempts: int = 0


class EventRecorder(BackgroundWriter):
    """`api` returns a kubernetes CoreV1Api (called for each write: it may raise while the
    kubeconfig is bad, which counts as a failed attempt)."""

    def __init__(
        self,
        api: Callable[[], Any],
        *,
        node: str,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_attempts: int = 20,
        max_pending: int = 1000,
        max_age: float = 3600.0,
        request_timeout: float = 5.0,
    ) -> None:
        super().__init__("dra-events", initial_backoff=initial_backoff, max_backoff=max_backoff)
        self._api = api
        self.node = node
        self._max_attempts = max_attempts
        self._max_pending = max_pending
        self._max_age = max_age  # older pod events are not written (an Event lives about an hour)
        self._timeout = request_timeout
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()  # keys queued or written (bounded)

    # ------------------------------------------------------------ inputs

    def on_message(self, topic: str, body: dict[str, Any]) -> None:
        """Subscriber callback for nri's "pod_events": one event, or a snapshot {"events": [...]}."""
        if topic != POD_EVENTS_TOPIC:
            return
        items = body.get("events")
        for item in items if isinstance(items, list) else [body]:
            if not isinstance(item, Mapping):
                continue
            try:
                spec = from_pod_event(item)
            except Exception:  # a malformed event must not stop the subscriber
                log.exception("bad pod event", extra={"body": dict(item)})
                continue
            if spec is not None and time.time() - spec.time <= self._max_age:
                self.record(spec)

    def claim_failed(self, namespace: str, name: str, uid: str, message: str) -> None:
        self.record(claim_prepare_failed(namespace, name, uid, message))

    def record(self, spec: EventSpec) -> None:
        """Queue an Event unless one with the same key was queued or written already."""
        with self._lock:
            if spec.key in self._seen:
                return
            self._seen[spec.key] = None
            while len(self._seen) > 4 * self._max_pending:
                self._seen.popitem(last=False)
            if len(self._pending) >= self._max_pending:
                _, dropped = self._pending.popitem(last=False)
                EVENT_WRITES.labels(outcome="dropped").inc()
                log.warning("too many Events waiting; dropped the oldest", extra={"key": dropped.spec.key})
            self._pending[spec.key] = _Pending(spec)
            self._lock.notify_all()

    def idle(self) -> bool:
        with self._lock:
            return not self._pending

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                due = [p for p in self._pending.values() if p.due <= now]
                if not due:
                    waits = [p.due - now for p in self._pending.values()]
                    self._lock.wait(min(waits) if waits else 1.0)
                    continue
            for p in due:
                if self._stop.is_set():
                    return
                self._write(p)

    def _write(self, p: _Pending) -> None:
        spec = p.spec
        try:
            self._api().create_namespaced_event(
                spec.namespace, cast(Any, event_object(spec, self.node)), _request_timeout=self._timeout
            )
            outcome = "written"
        except ApiException as exc:
            if exc.status == 409:
                outcome = "exists"  # written before (a replay after a restart)
            elif exc.status in _RETRIABLE:
                self._retry(p, f"HTTP {exc.status} {exc.reason}")
                return
            else:  # 403 (RBAC), 404 (namespace gone), 422 (invalid): retrying will not help
                outcome = "dropped"
                log.warning(
                    "the API server refused an Event; dropped",
                    extra={"reason": spec.reason, "error": f"HTTP {exc.status}: {exc.reason}"},
                )
        except Exception as exc:  # unreachable, bad kubeconfig, ...: retry later
            self._retry(p, f"{type(exc).__name__}: {exc}")
            return
        EVENT_WRITES.labels(outcome=outcome).inc()
        with self._lock:
            self._pending.pop(spec.key, None)
        if outcome == "written":
            log.info(
                "event written",
                extra={
                    "object": f"{spec.involved['kind']} {spec.namespace}/{spec.involved['name']}",
                    "reason": spec.reason,
                },
            )

    def _retry(self, p: _Pending, error: str) -> None:
        p.attempts += 1
        if p.attempts >= self._max_attempts:
            EVENT_WRITES.labels(outcome="dropped").inc()
            log.warning(
                "giving up on an Event", extra={"key": p.spec.key, "error": error, "attempts": p.attempts}
            )
            with self._lock:
                self._pending.pop(p.spec.key, None)
            return
        EVENT_WRITES.labels(outcome="retry").inc()
        delay = self.backoff(p.attempts)
        with self._lock:
            p.due = time.monotonic() + delay
        log.warning(
            "event write failed; retrying",
            extra={"key": p.spec.key, "error": error, "attempt": p.attempts, "retry_in_s": round(delay, 2)},
        )
