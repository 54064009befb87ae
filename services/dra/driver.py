"""The DRA driver's state machine: prepare and unprepare claims, the prepared state, the bus ops.

Independent of gRPC (plugin.py adapts the kubelet's messages) and of the API server client
(kube.py); both are passed in, so the logic is tested with fakes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dranet.bus import BusError, ErrorCode
from dranet.observability.logging import bind

from .addressing import Addressing
from .cdi import CdiSpecs
from .checkpoint import Checkpoint
from .metadata import MetadataError, MetadataFiles, on_attachment
from .metrics import CLAIM_RESULTS, CLAIM_SECONDS, PREPARED_CLAIMS
from .prepare import (
    FeatureLookup,
    InventoryLookup,
    PreparedClaim,
    PreparedDevice,
    PrepareError,
    device_conflicts,
    prepare_claim,
)

log = logging.getLogger(__name__)
NOT_LOADED = "dra is starting: its checkpoint is not read yet; the kubelet will retry"


@dataclass(frozen=True)
class ClaimRef:
    uid: str
    namespace: str
    name: str


@dataclass
class ClaimResult:
    devices: list[PreparedDevice] = field(default_factory=list)
    error: str = ""
    cdi_ids: dict[str, list[str]] = field(default_factory=dict)  # device name -> CDI device IDs


class ClaimReader(Protocol):
    def get_claim(self, namespace: str, name: str) -> dict[str, Any]:
        """The ResourceClaim as JSON; raises PrepareError (retriable when the API server is down)."""
        ...


# detach(pod_uid, device names): asks the netns worker; raises BusError when it cannot.
Detacher = Callable[[str, list[str]], None]
# grant(claims, replace): tells the netns worker what it may attach (the only authority it
# trusts, dranet/services/netns/grants.py); revoke(claim UIDs). Both raise BusError.
Granter = Callable[[list[PreparedClaim], bool], None]
Revoker = Callable[[list[str]], object]


class Driver:
    def __init__(
        self,
        *,
        driver_name: str,
        node_name: str,
        claims: ClaimReader,
        inventory: InventoryLookup,
        checkpoint: Checkpoint,
        detach: Detacher,
        on_unprepared: Callable[[PreparedClaim], None] | None = None,
        on_prepared: Callable[[PreparedClaim], None] | None = None,
        on_failed: Callable[[ClaimRef, str], None] | None = None,
        cdi: CdiSpecs | None = None,
        features: FeatureLookup | None = None,
        grant: Granter | None = None,
        revoke: Revoker | None = None,
        addressing: Addressing | None = None,
        metadata: MetadataFiles | None = None,
    ) -> None:
        self.driver_name = driver_name
        self.node_name = node_name
        self._claims_api = claims
        self._inventory = inventory
        self._checkpoint = checkpoint
        self._detach = detach
        self._on_unprepared = on_unprepared
        self._on_prepared = on_prepared
        self._on_failed = on_failed  # (claim, error) after a prepare failed for it: for an Event
        self._cdi = cdi  # None: prepare returns no CDI devices (no fail-closed hook)
        self._metadata = metadata  # None: no device metadata files (KEP-5304)
        self._features = features  # a host interface's ethtool table (the netns worker reads it)
        self._addressing = addressing or Addressing()  # providers and DHCP (none by default)
        # One lock over state and checkpoint (Checkpoint.locked: threads, and the other dra
        # instance of a rolling update through a file lock); the slow API server reads and the
        # worker's detaches happen outside it.
        self._prepared: dict[str, PreparedClaim] = {}
        self._grant = grant
        self._revoke = revoke
        # Claims the worker has confirmed a grant for, and a counter of changes to the prepared set
        # (a whole-set push that raced with a prepare or unprepare is pushed again).
        self._granted: set[str] = set()
        self._changes = 0
        # False until load(): a standby instance of a rolling update reads the checkpoint (the
        # active instance's uid's) only once it switched to that uid; until then it answers no
        # kubelet call (an unprepare of a claim it does not know yet would succeed and leak it).
        self._loaded = False

    # ------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """Restore the prepared claims from the checkpoint (a corrupt file is quarantined)."""
        with self._checkpoint.locked():
            self._prepared = self._checkpoint.load()
            self._loaded = True
            PREPARED_CLAIMS.set(len(self._prepared))
            errors = self._cdi.sync(self._prepared.values()) if self._cdi is not None else []
            if self._metadata is not None:
                errors += self._metadata.sync(self._prepared.values())
        for error in errors:  # the runtime then cannot resolve the device: containers do not start
            log.error("cannot write a CDI spec; check the CDI directory", extra={"error": error})
        log.info(
            "checkpoint loaded", extra={"claims": len(self._prepared), "path": str(self._checkpoint.path)}
        )

    def _refresh(self) -> None:
        """Under the lock: read the checkpoint again if the other instance replaced it."""
        if self._checkpoint.changed():
            self._prepared = self._checkpoint.load()
            self._changes += 1
            PREPARED_CLAIMS.set(len(self._prepared))

    def _current(self) -> dict[str, PreparedClaim]:
        """The prepared claims, as the checkpoint has them now (cheap when nothing changed)."""
        if self._loaded and self._checkpoint.changed():
            with self._checkpoint.locked():
                self._refresh()
        return self._prepared

    def health(self) -> dict[str, Any]:
        details: dict[str, Any] = {"prepared_claims": len(self._prepared)}
        if self._checkpoint.corruption:
            details["healthy"] = False
            details["checkpoint_corrupt"] = self._checkpoint.corruption
        return details

    # ------------------------------------------------------------ kubelet calls

    def prepare(self, refs: Iterable[ClaimRef]) -> dict[str, ClaimResult]:
        """One result per claim UID; a failing claim never fails the others."""
        out: dict[str, ClaimResult] = {}
        fresh: dict[str, PreparedClaim] = {}
        started = time.monotonic()
        refs = list(refs)
        if not self._loaded:
            return {ref.uid: ClaimResult(error=NOT_LOADED) for ref in refs}
        prepared = self._current()
        for ref in refs:
            with bind(claim_uid=ref.uid, claim=f"{ref.namespace}/{ref.name}"):
                known = prepared.get(ref.uid)
                if known is not None:  # idempotent and cheap: no API read, no disk write
                    error = self._grant_claims([known]) if known.uid not in self._granted else ""
                    out[ref.uid] = ClaimResult(error=error) if error else self._result(known)
                    CLAIM_RESULTS.labels(op="prepare", outcome="error" if error else "cached").inc()
                    continue
                try:
                    fresh[ref.uid] = self._build(ref)
                except PrepareError as exc:
                    out[ref.uid] = ClaimResult(error=exc.message)
                    CLAIM_RESULTS.labels(op="prepare", outcome="error").inc()
                    log.warning("prepare failed", extra={"reason": exc.message})
        if fresh:
            out.update(self._commit(fresh))
        CLAIM_SECONDS.labels(op="prepare").observe(time.monotonic() - started)
        if self._on_failed is not None:
            for ref in refs:
                result = out.get(ref.uid)
                if result is not None and result.error:
                    try:
                        self._on_failed(ref, result.error)
                    except Exception:  # reporting must never fail the kubelet's call
                        log.exception("reporting a prepare failure failed")
        return out

    def _build(self, ref: ClaimRef) -> PreparedClaim:
        claim = self._claims_api.get_claim(ref.namespace, ref.name)
        uid = (claim.get("metadata") or {}).get("uid")
        if uid != ref.uid:
            raise PrepareError(
                f"ResourceClaim {ref.namespace}/{ref.name} has UID {uid}, the kubelet asked for {ref.uid}: "
                "the claim was deleted and re-created; the kubelet will retry with the new one"
            )
        taking = self._addressing.begin(ref.uid)
        try:
            prepared = prepare_claim(
                claim,
                driver=self.driver_name,
                node_name=self.node_name,
                inventory=self._inventory,
                features=self._features,
                providers=taking.layers,
            )
            # Leasing touches the interface: not for a device another claim holds.
            conflicts = device_conflicts(prepared, list(self._prepared.values()))
            if conflicts:
                raise PrepareError("; ".join(conflicts))
            taking.finish(prepared)
        except BaseException:
            taking.undo()  # nothing half-done: what the providers and DHCP gave goes back
            raise
        return prepared

    def _commit(self, fresh: dict[str, PreparedClaim]) -> dict[str, ClaimResult]:
        out: dict[str, ClaimResult] = {}
        with self._checkpoint.locked():
            self._refresh()
            accepted: dict[str, PreparedClaim] = {}
            for uid, claim in fresh.items():
                if uid in self._prepared:  # a concurrent call prepared it meanwhile
                    out[uid] = self._result(self._prepared[uid])
                    continue
                conflicts = device_conflicts(claim, [*self._prepared.values(), *accepted.values()])
                if conflicts:
                    out[uid] = ClaimResult(error="; ".join(conflicts))
                    CLAIM_RESULTS.labels(op="prepare", outcome="error").inc()
                    self._addressing.release(claim)
                    continue
                # before the checkpoint: prepared means it has its specs
                error = self._write_spec(claim) or self._write_metadata(claim)
                if error:
                    out[uid] = ClaimResult(error=error)
                    CLAIM_RESULTS.labels(op="prepare", outcome="error").inc()
                    self._addressing.release(claim)
                    continue
                accepted[uid] = claim
            if not accepted:
                return out
            candidate = {**self._prepared, **accepted}
            try:
                self._checkpoint.save(candidate)
            except OSError as exc:
                msg = f"cannot write the checkpoint {self._checkpoint.path}: {exc}; check the state directory"
                log.error("checkpoint write failed", extra={"error": str(exc)})
                for uid, claim in accepted.items():
                    out[uid] = ClaimResult(error=msg)
                    CLAIM_RESULTS.labels(op="prepare", outcome="error").inc()
                    self._remove_spec(uid)
                    self._remove_metadata(claim)
                    self._addressing.release(claim)
                return out
            self._prepared = candidate
            self._changes += 1
            PREPARED_CLAIMS.set(len(candidate))
        # Prepared (checkpointed) but not ready until the worker holds the grant: the kubelet hears
        # of the claim only after, so no attach can come before it.
        error = self._grant_claims(list(accepted.values()))
        for uid, claim in accepted.items():
            if error:
                out[uid] = ClaimResult(error=error)
                CLAIM_RESULTS.labels(op="prepare", outcome="error").inc()
                continue
            out[uid] = self._result(claim)
            CLAIM_RESULTS.labels(op="prepare", outcome="prepared").inc()
            if self._on_prepared is not None:
                self._on_prepared(claim)
            log.info(
                "claim prepared",
                extra={
                    "claim_uid": uid,
                    "claim": f"{claim.namespace}/{claim.name}",
                    "pod_uids": claim.pod_uids,
                    "devices": [f"{d.pool}/{d.device}={d.ifname}" for d in claim.devices],
                },
            )
        return out

    def unprepare(self, refs: Iterable[ClaimRef]) -> dict[str, str]:
        """claim UID -> error ("" on success). Unknown claims succeed."""
        out: dict[str, str] = {}
        dropped: list[PreparedClaim] = []
        started = time.monotonic()
        refs = list(refs)
        if not self._loaded:
            return {ref.uid: NOT_LOADED for ref in refs}
        prepared = self._current()
        for ref in refs:
            claim = prepared.get(ref.uid)
            if claim is None:
                out[ref.uid] = ""
                CLAIM_RESULTS.labels(op="unprepare", outcome="unknown").inc()
                continue
            err = self._detach_all(claim) or self._revoke_claim(claim.uid)
            out[ref.uid] = err
            if not err:
                dropped.append(claim)
            else:
                CLAIM_RESULTS.labels(op="unprepare", outcome="error").inc()
        if dropped:
            with self._checkpoint.locked():
                self._refresh()
                remaining = {u: c for u, c in self._prepared.items() if u not in {d.uid for d in dropped}}
                try:
                    self._checkpoint.save(remaining)
                except OSError as exc:
                    msg = f"cannot write the checkpoint {self._checkpoint.path}: {exc}; check the state dir"
                    for c in dropped:
                        out[c.uid] = msg
                    return out
                self._prepared = remaining
                self._changes += 1
                PREPARED_CLAIMS.set(len(remaining))
            for c in dropped:
                self._remove_spec(c.uid)
                self._remove_metadata(c)
                self._addressing.release(c)  # the devices are back on the host: leases, profiles
                CLAIM_RESULTS.labels(op="unprepare", outcome="unprepared").inc()
                log.info("claim unprepared", extra={"claim_uid": c.uid, "claim": f"{c.namespace}/{c.name}"})
                if self._on_unprepared is not None:
                    self._on_unprepared(c)
        CLAIM_SECONDS.labels(op="unprepare").observe(time.monotonic() - started)
        return out

    # ------------------------------------------------------------ grants to the netns worker

    def _grant_claims(self, claims: list[PreparedClaim]) -> str:
        """Push these claims' grants; "" or the error for the kubelet (it retries the prepare)."""
        if self._grant is None or not claims:
            return ""
        try:
            self._grant(claims, False)
        except BusError as exc:
            log.warning(
                "the netns worker did not take the grant", extra={"code": exc.code, "reason": exc.message}
            )
            return (
                f"prepared, but the netns worker did not take the grant ({exc.code}: {exc.message}); "
                "the kubelet will retry"
            )
        self._granted.update(c.uid for c in claims)
        return ""

    def _revoke_claim(self, claim_uid: str) -> str:
        if self._revoke is None:
            return ""
        try:
            self._revoke([claim_uid])
        except BusError as exc:
            return (
                f"could not revoke the grant of claim {claim_uid} from the netns worker "
                f"({exc.code}: {exc.message}); the kubelet will retry"
            )
        self._granted.discard(claim_uid)
        return ""

    def sync_grants(self) -> bool:
        """Push the whole prepared set (replace), as at start. True once it went through with no
        prepare or unprepare meanwhile; raises BusError when the worker cannot be reached."""
        if self._grant is None:
            return True
        if not self._loaded:  # a standby before its switch of uid: pushed once it read the file
            return False
        with self._checkpoint.locked():
            self._refresh()
            claims, changes = list(self._prepared.values()), self._changes
        self._grant(claims, True)
        with self._checkpoint.locked():
            self._refresh()  # the other instance of a rolling update prepared or unprepared meanwhile
            if changes != self._changes:
                return False
            self._granted = {c.uid for c in claims}
        return True

    def _result(self, claim: PreparedClaim) -> ClaimResult:
        ids = self._cdi.ids(claim) if self._cdi is not None else {}
        if self._metadata is not None:
            for device, cdi_id in self._metadata.ids(claim).items():
                ids[device] = [*ids.get(device, []), cdi_id]
        return ClaimResult(devices=list(claim.devices), cdi_ids=ids)

    # ------------------------------------------------------------ device metadata (KEP-5304)

    def _write_metadata(self, claim: PreparedClaim) -> str:
        if self._metadata is None:
            return ""
        try:
            self._metadata.write(claim)
        except MetadataError as exc:
            log.error("device metadata write failed", extra={"claim_uid": claim.uid, "error": str(exc)})
            self._remove_spec(claim.uid)
            return f"{exc}; check --cdi-dir and the plugin data directory"
        return ""

    def _remove_metadata(self, claim: PreparedClaim) -> None:
        if self._metadata is None:
            return
        try:
            self._metadata.remove(claim)
        except OSError as exc:  # harmless: no container refers to it any more; removed at next start
            log.warning("cannot remove device metadata", extra={"claim_uid": claim.uid, "error": str(exc)})

    def on_attachment(self, claim: PreparedClaim | None, body: Mapping[str, Any]) -> None:
        """The worker's attach or detach of a device: its networkData in the metadata file."""
        if self._metadata is None or claim is None:
            return
        with self._checkpoint.locked():  # not while unprepare removes the files
            self._refresh()
            if claim.uid not in self._prepared:
                return
            try:
                on_attachment(self._metadata, claim, body)
            except MetadataError as exc:
                log.warning(
                    "device metadata update failed", extra={"claim_uid": claim.uid, "error": str(exc)}
                )

    def _write_spec(self, claim: PreparedClaim) -> str:
        if self._cdi is None:
            return ""
        try:
            self._cdi.write(claim)
        except OSError as exc:
            log.error("CDI spec write failed", extra={"claim_uid": claim.uid, "error": str(exc)})
            return f"cannot write the CDI spec {self._cdi.path(claim.uid)}: {exc}; check --cdi-dir"
        return ""

    def _remove_spec(self, claim_uid: str) -> None:
        if self._cdi is None:
            return
        try:
            self._cdi.remove(claim_uid)
        except OSError as exc:  # harmless: no container refers to it any more; removed at next start
            log.warning("cannot remove a CDI spec", extra={"claim_uid": claim_uid, "error": str(exc)})

    def _detach_all(self, claim: PreparedClaim) -> str:
        names = [d.device for d in claim.devices if not d.admin_access]
        if not names:
            return ""
        for pod_uid in claim.pod_uids:
            try:
                self._detach(pod_uid, names)
            except BusError as exc:
                if exc.code == ErrorCode.NOT_FOUND:
                    continue  # nothing attached for it
                return (
                    f"could not ask the netns worker to give back {', '.join(names)} of pod {pod_uid} "
                    f"({exc.code}: {exc.message}); the kubelet will retry"
                )
        return ""

    # ------------------------------------------------------------ reads for the other services

    def get(self, claim_uid: str) -> PreparedClaim | None:
        return self._current().get(claim_uid)

    def prepared(self) -> list[PreparedClaim]:
        return list(self._current().values())

    def find(self, pod_uid: str, device: str) -> PreparedClaim | None:
        for claim in self._current().values():
            if pod_uid in claim.pod_uids and any(d.device == device for d in claim.devices):
                return claim
        return None

    def pod_devices(self, pod_uid: str) -> list[dict[str, Any]]:
        out = []
        for claim in sorted(self._current().values(), key=lambda c: (c.namespace, c.name)):
            if pod_uid not in claim.pod_uids:
                continue
            for d in claim.devices:
                if d.admin_access:
                    continue  # observe-only allocations are never moved
                out.append(
                    {
                        "claim_uid": claim.uid,
                        "claim_namespace": claim.namespace,
                        "claim_name": claim.name,
                        "request": d.request,
                        "pool": d.pool,
                        "device": d.device,
                        "ifname": d.ifname,
                        "config": d.config,
                        "rdma_device": d.rdma_device,
                        "share_id": d.share_id,
                    }
                )
        return out

    # bus handlers
    def handle_pod_devices(self, body: Mapping[str, Any], _ctx: Any) -> dict[str, Any]:
        return {"devices": self.pod_devices(str(body["pod_uid"]))}

    def handle_claims(self, _body: Mapping[str, Any], _ctx: Any) -> dict[str, Any]:
        return {"claims": [c.to_dict() for c in sorted(self._current().values(), key=lambda c: c.uid)]}
