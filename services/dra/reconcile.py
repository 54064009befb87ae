"""Prepared claims never leak: the checkpoint is reconciled with the API server in the background.

The kubelet unprepares a claim when its pod goes. If that call never comes (the kubelet's own state
was lost, the claim was deleted while the plugin was down, ...), the devices would stay prepared, and
attached, for ever. Every `interval` seconds each prepared claim is read from the API server; one
that is gone, re-created (another UID), deallocated, or no longer reserved for any of its pods is
released (detached and dropped from the checkpoint, as an unprepare would) once it has been seen so
twice in a row, so a claim caught in the middle of an update is left alone.

A checkpoint found corrupt at start is rebuilt from the API server: the claims allocated on this
node for this driver and reserved for a pod are prepared again through the normal path (the claim's
allocation, reservedFor and configs; the host interface from the inventory), retried each round
until each succeeds or is no longer there to rebuild.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from .driver import ClaimRef, Driver
from .model import PreparedClaim

log = logging.getLogger(__name__)

REBUILD_ROUNDS = 30  # a claim that still cannot be prepared after this many rounds (2 s apart) is given up


class ClaimsAPI(Protocol):
    def get_claim_or_none(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list_claims(self) -> list[dict[str, Any]]: ...


def _results(claim: Mapping[str, Any], driver: str) -> list[Mapping[str, Any]]:
    alloc = (claim.get("status") or {}).get("allocation") or {}
    return [r for r in (alloc.get("devices") or {}).get("results") or [] if r.get("driver") == driver]


def _reserved_pods(claim: Mapping[str, Any]) -> set[str]:
    reserved = (claim.get("status") or {}).get("reservedFor") or []
    return {str(r.get("uid")) for r in reserved if r.get("resource") == "pods" and not r.get("apiGroup")}


def leak_reason(prepared: PreparedClaim, claim: Mapping[str, Any] | None, driver: str) -> str:
    """Why a prepared claim should be released, from the claim as the API server has it ("" = keep)."""
    if claim is None:
        return "the claim is gone"
    uid = (claim.get("metadata") or {}).get("uid")
    if uid != prepared.uid:
        return f"the claim was re-created (UID {uid})"
    ours = {(r.get("pool"), r.get("device")) for r in _results(claim, driver)}
    if not ours & {(d.pool, d.device) for d in prepared.devices}:
        return "the claim is no longer allocated our devices"
    if not _reserved_pods(claim) & set(prepared.pod_uids):
        return f"the claim is no longer reserved for pod {', '.join(prepared.pod_uids)}"
    return ""


def claims_of_node(claims: Iterable[Mapping[str, Any]], driver: str, node: str) -> list[ClaimRef]:
    """The claims allocated on this node's pool for this driver and reserved for a pod (pure)."""
    out = []
    for c in claims:
        meta = c.get("metadata") or {}
        if _reserved_pods(c) and any(r.get("pool") == node for r in _results(c, driver)):
            out.append(ClaimRef(str(meta.get("uid")), str(meta.get("namespace")), str(meta.get("name"))))
    return out


class ClaimReconciler:
    def __init__(
        self,
        driver: Driver,
        api: ClaimsAPI,
        *,
        interval: float = 60.0,
        rebuild: bool = False,
        on_rebuilt: Callable[[int], None] | None = None,
    ) -> None:
        """rebuild: the checkpoint was corrupt; on_rebuilt(claims) is called once it is rebuilt."""
        self.driver = driver
        self.api = api
        self.interval = interval
        self._rebuild = rebuild
        self._rebuild_rounds = 0
        self._on_rebuilt = on_rebuilt
        self._suspects: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dra-reconcile", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception as exc:  # the API server may be down: try again next round
                log.warning("reconciling prepared claims failed; retrying", extra={"error": str(exc)})
            # a pending rebuild retries soon; the leak check waits the whole interval
            if self._stop.wait(min(self.interval, 2.0) if self._rebuild else self.interval):
                return

    def run_once(self) -> None:
        if self._rebuild:
            self._rebuild_once()
        suspects = set()
        for prepared in self.driver.prepared():
            reason = leak_reason(
                prepared,
                self.api.get_claim_or_none(prepared.namespace, prepared.name),
                self.driver.driver_name,
            )
            if not reason:
                continue
            if prepared.uid not in self._suspects:
                suspects.add(prepared.uid)  # released only if the next round still agrees
                continue
            ref = ClaimRef(prepared.uid, prepared.namespace, prepared.name)
            error = self.driver.unprepare([ref]).get(prepared.uid, "")
            if error:
                suspects.add(prepared.uid)
                log.warning(
                    "releasing a leaked claim failed; retrying", extra={"claim_uid": ref.uid, "error": error}
                )
            else:
                log.warning(
                    "released a prepared claim the kubelet never unprepared",
                    extra={"claim_uid": ref.uid, "claim": f"{ref.namespace}/{ref.name}", "reason": reason},
                )
        self._suspects = suspects

    def _rebuild_once(self) -> None:
        refs = claims_of_node(self.api.list_claims(), self.driver.driver_name, self.driver.node_name)
        todo = [r for r in refs if self.driver.get(r.uid) is None]
        errors = {uid: r.error for uid, r in self.driver.prepare(todo).items() if r.error} if todo else {}
        self._rebuild_rounds += 1
        if errors and self._rebuild_rounds < REBUILD_ROUNDS:
            log.warning("rebuilding the checkpoint: some claims failed; retrying", extra={"errors": errors})
            return
        self._rebuild = False
        if errors:
            log.error(
                "rebuilding the checkpoint: giving up on some claims; delete and recreate their pods",
                extra={"errors": errors},
            )
        log.warning("checkpoint rebuilt from the API server", extra={"claims": len(refs) - len(errors)})
        if self._on_rebuilt is not None:
            self._on_rebuilt(len(refs) - len(errors))
