"""ResourceClaim.status.devices, written in the background (never on the kubelet's or NRI's path).

Fed by the netns worker's "attachments" notifications: an attach that succeeded gives condition
Ready=True (reason NetworkDeviceReady) and networkData; one that failed gives Ready=False with the
reason and the error message; a detach removes the entry. A claim with `disableEbpfPrograms` also
gets condition EBPFProgramsDetached, whose message lists the programs the attach took off.
Unprepare clears every entry of ours.
Each claim's desired entries are kept in memory and written until the API server accepts them, with
exponential backoff, by server-side apply as upstream does: field manager = the driver name, force,
the claim's UID as a precondition. The apply holds all our entries and nothing else: the API server
keeps other drivers' entries of the same claim and removes ours that we no longer apply, so there
is no read-modify-write and no conflict with other drivers. A claim that is gone (404, or re-created
with another UID) is forgotten with its pending update.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .metrics import STATUS_WRITES
from .model import PreparedClaim
from .writer import BackgroundWriter

log = logging.getLogger(__name__)

READY = "Ready"
REASON_READY = "NetworkDeviceReady"
REASON_FAILED = "NetworkDeviceAttachFailed"
EBPF_DETACHED = "EBPFProgramsDetached"
REASON_EBPF = "DisableEbpfPrograms"
MAX_IPS = 16  # API limits on networkData
MAX_MESSAGE = 32768
_DETACHED_STATES = {"detached", "released", "removed"}
_FAILED_STATES = {"failed", "error", "attach_failed"}


class StatusAPI(Protocol):
    def apply_status(
        self, namespace: str, name: str, uid: str, devices: list[dict[str, Any]], manager: str
    ) -> bool:
        """Server-side apply of status.devices = devices (ours only); False when the claim is gone."""
        ...


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def device_entry(
    driver: str,
    pool: str,
    device: str,
    *,
    ready: bool,
    message: str = "",
    network: Mapping[str, Any] | None = None,
    ebpf_detached: list[str] | None = None,
    share_id: str = "",
) -> dict[str, Any]:
    """One AllocatedDeviceStatus of ours (pure). ebpf_detached: the programs `disableEbpfPrograms`
    took off the interface (None: the claim did not ask). share_id: the allocation's share of a
    shared NIC: the entry is that share's (its child interface's name and addresses)."""
    cond = {
        "type": READY,
        "status": "True" if ready else "False",
        "reason": REASON_READY if ready else REASON_FAILED,
        "message": (message or ("interface attached and configured" if ready else "attach failed"))[
            :MAX_MESSAGE
        ],
        "lastTransitionTime": now_rfc3339(),
    }
    entry: dict[str, Any] = {"driver": driver, "pool": pool, "device": device, "conditions": [cond]}
    if share_id:
        entry["shareID"] = share_id
    if ebpf_detached is not None:
        what = "; ".join(ebpf_detached) or "none: the interface had no tc, tcx or XDP program"
        entry["conditions"].append(
            {
                "type": EBPF_DETACHED,
                "status": "True",
                "reason": REASON_EBPF,
                "message": f"detached at attach (not re-attached at release): {what}"[:MAX_MESSAGE],
                "lastTransitionTime": cond["lastTransitionTime"],
            }
        )
    if network:
        nd: dict[str, Any] = {}
        if network.get("interfaceName"):
            nd["interfaceName"] = str(network["interfaceName"])[:256]
        if network.get("ips"):
            nd["ips"] = [str(ip) for ip in network["ips"]][:MAX_IPS]
        if network.get("hardwareAddress"):
            nd["hardwareAddress"] = str(network["hardwareAddress"])[:128]
        if nd:
            entry["networkData"] = nd
    return entry


def keep_transition_times(old: Mapping[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """`new` with the lastTransitionTime of each condition whose status did not change since `old`
    (the API convention; pure)."""
    if not old:
        return new
    old_conds = {c.get("type"): c for c in old.get("conditions") or []}
    conds = []
    for cond in new.get("conditions") or []:
        prev = old_conds.get(cond.get("type"))
        if prev and prev.get("status") == cond.get("status") and prev.get("lastTransitionTime"):
            cond = {**cond, "lastTransitionTime": prev["lastTransitionTime"]}
        conds.append(cond)
    return {**new, "conditions": conds}


def network_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """networkData from an attachment notification, whichever spelling the worker used."""
    nd = body.get("network_data") or body.get("networkData") or {}
    return {
        "interfaceName": nd.get("interfaceName") or nd.get("interface_name") or body.get("pod_ifname") or "",
        "ips": list(nd.get("ips") or body.get("ips") or []),
        "hardwareAddress": nd.get("hardwareAddress")
        or nd.get("hardware_address")
        or body.get("hardware_address")
        or "",
    }


def ebpf_of(body: Mapping[str, Any]) -> list[str] | None:
    """The programs an attach detached (`disableEbpfPrograms`), None when the claim did not ask."""
    names = body.get("ebpf_detached")
    return [str(n) for n in names] if isinstance(names, list) else None


@dataclass
class _Pending:
    namespace: str
    name: str
    uid: str
    ours: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    due: float = 0.0
    attempts: int = 0
    dirty: bool = True


class StatusWriter(BackgroundWriter):
    def __init__(
        self,
        api: StatusAPI,
        driver: str,
        *,
        claim_of: Callable[[str, str, str], PreparedClaim | None],
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        """claim_of(claim_uid, pod_uid, device) finds the prepared claim a notification is about."""
        super().__init__("dra-status", initial_backoff=initial_backoff, max_backoff=max_backoff)
        self.api = api
        self.driver = driver
        self._claim_of = claim_of
        self._pending: dict[str, _Pending] = {}

    # ------------------------------------------------------------ inputs

    def on_message(self, topic: str, body: dict[str, Any]) -> None:
        """Subscriber callback for the netns worker's "attachments" topic (and its snapshot)."""
        if topic != "attachments":
            return
        items = body.get("attachments")
        for item in items if isinstance(items, list) else [body]:
            if isinstance(item, Mapping):
                try:
                    self._on_attachment(item)
                except Exception:  # a malformed notification must not stop the subscriber
                    log.exception("bad attachment notification", extra={"body": dict(item)})

    def _on_attachment(self, body: Mapping[str, Any]) -> None:
        device = str(body.get("device") or "")
        claim = self._claim_of(str(body.get("claim_uid") or ""), str(body.get("pod_uid") or ""), device)
        if claim is None or not device:
            return  # not one of ours (or already unprepared)
        prepared = next((d for d in claim.devices if d.device == device), None)
        if prepared is None:
            return
        state = str(body.get("state") or "").lower()
        error = body.get("error")
        key = (prepared.pool, device)
        if state in _DETACHED_STATES:
            self.set(claim, key, None)
        elif error or state in _FAILED_STATES:
            self.set(
                claim,
                key,
                device_entry(
                    self.driver,
                    prepared.pool,
                    device,
                    ready=False,
                    message=str(error or state),
                    share_id=prepared.share_id,
                ),
            )
        else:
            self.set(
                claim,
                key,
                device_entry(
                    self.driver,
                    prepared.pool,
                    device,
                    ready=True,
                    network=network_of(body),
                    ebpf_detached=ebpf_of(body),
                    share_id=prepared.share_id,
                ),
            )

    def set(self, claim: PreparedClaim, key: tuple[str, str], entry: dict[str, Any] | None) -> None:
        with self._lock:
            p = self._pending.setdefault(claim.uid, _Pending(claim.namespace, claim.name, claim.uid))
            if entry is None:
                p.ours.pop(key, None)
            else:
                p.ours[key] = keep_transition_times(p.ours.get(key), entry)
            p.dirty, p.due, p.attempts = True, 0.0, 0
            self._lock.notify_all()

    def clear(self, claim: PreparedClaim) -> None:
        """Remove every entry of ours from the claim (on unprepare)."""
        with self._lock:
            p = self._pending.setdefault(claim.uid, _Pending(claim.namespace, claim.name, claim.uid))
            p.ours.clear()
            p.dirty, p.due, p.attempts = True, 0.0, 0
            self._lock.notify_all()

    def idle(self) -> bool:
        with self._lock:
            return not any(p.dirty for p in self._pending.values())

    def pending(self) -> int:
        """Claims with an entry kept in memory (written or not)."""
        with self._lock:
            return len(self._pending)

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                due = [p for p in self._pending.values() if p.dirty and p.due <= now]
                if not due:
                    waits = [p.due - now for p in self._pending.values() if p.dirty]
                    self._lock.wait(min(waits) if waits else 1.0)
                    continue
                work = [(p, dict(p.ours)) for p in due]
                for p, _ in work:
                    p.dirty = False
            for p, ours in work:
                self._write(p, ours)

    def _write(self, p: _Pending, ours: dict[tuple[str, str], dict[str, Any]]) -> None:
        try:
            done = self._write_once(p, ours)
            STATUS_WRITES.labels(outcome="ok").inc()
        except Exception as exc:
            STATUS_WRITES.labels(outcome="retry").inc()
            with self._lock:
                p.attempts += 1
                delay = self.backoff(p.attempts)
                if not p.dirty:  # a newer desired state resets the backoff instead
                    p.dirty, p.due = True, time.monotonic() + delay
            log.warning(
                "claim status write failed; retrying",
                extra={
                    "claim": f"{p.namespace}/{p.name}",
                    "error": f"{type(exc).__name__}: {exc}",
                    "attempt": p.attempts,
                    "retry_in_s": round(delay, 2),
                },
            )
            return
        with self._lock:
            p.attempts = 0
            if not done:  # the claim is gone: so is anything still pending for it
                self._pending.pop(p.uid, None)
            elif not p.dirty and not p.ours:
                self._pending.pop(p.uid, None)  # cleared and written: forget it

    def _write_once(self, p: _Pending, ours: dict[tuple[str, str], dict[str, Any]]) -> bool:
        """Apply our entries; False when the claim is gone."""
        devices = [ours[key] for key in sorted(ours)]
        if not self.api.apply_status(p.namespace, p.name, p.uid, devices, self.driver):
            log.info("claim gone; its status update is dropped", extra={"claim": f"{p.namespace}/{p.name}"})
            return False
        log.info("claim status written", extra={"claim": f"{p.namespace}/{p.name}", "devices": len(ours)})
        return True
