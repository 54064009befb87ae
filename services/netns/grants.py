"""What dra prepared, as the worker's authority for every attach and detach.

dra pushes a grant per prepared claim (`grant` op, at prepare, before the kubelet hears the claim
is ready) and revokes it at unprepare; only dra's identity may call those ops (dranet/bus/policy.py).
nri forwards the devices and config of an attach, but the worker never trusts them: each device
must be granted to that pod UID, with the same host interface, RDMA device, claim and config.
So a hostile nri can move nothing dra did not prepare for that pod, with no config dra did not
validate. The grants are kept in <state-dir>/netns/grants.json so a restarted worker still knows
them before dra speaks again; dra also pushes its whole set at every start (replace).

Checks are pure (no I/O) and cost a dictionary lookup and one digest per device: the attach path
needs no extra round trip. The bus ops `grant` and `revoke`, and the refusal the worker logs and
counts, are at the end.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dranet.services.netns.errors import as_bus_error
from dranet.services.netns.model import RequestError, config_digest

from dranet.atomic import write_atomic
from dranet.bus.messages import BusError
from dranet.observability import metrics

log = logging.getLogger(__name__)

FILE_VERSION = 1

REFUSED = metrics.counter(
    "dranet_netns_refused_total",
    "Attach/detach requests refused because dra did not prepare them so (a hostile or broken caller)",
    ("op", "reason"),
)


class Refused(RequestError):
    """An attach or detach that dra did not prepare: refused before any change (`not_allowed`)."""

    def __init__(self, reason: str, device: str, message: str) -> None:
        super().__init__("not_allowed", "", message)
        self.label = reason  # metric label: not_prepared, other_pod, mismatch, config
        self.device = device


@dataclass(frozen=True)
class GrantedDevice:
    device: str
    ifname: str
    rdma_device: str
    digest: str  # config_digest of the validated config dra prepared
    share_id: str = ""  # the share of a shared NIC the allocation gave this claim


@dataclass(frozen=True)
class Grant:
    claim_uid: str
    pod_uids: tuple[str, ...]
    devices: tuple[GrantedDevice, ...]

    @classmethod
    def from_request(cls, claim: Mapping[str, Any]) -> Grant:
        """From a `grant` op's claim (the config itself is reduced to its digest)."""
        return cls(
            str(claim["uid"]),
            tuple(str(u) for u in claim["pod_uids"]),
            tuple(
                GrantedDevice(
                    str(d["device"]),
                    str(d.get("ifname") or ""),
                    str(d.get("rdma_device") or ""),
                    config_digest(d.get("config") or {}),
                    str(d.get("share_id") or ""),
                )
                for d in claim["devices"]
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim_uid": self.claim_uid,
            "pod_uids": list(self.pod_uids),
            "devices": [asdict(d) for d in self.devices],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grant:
        return cls(
            str(data["claim_uid"]),
            tuple(str(u) for u in data["pod_uids"]),
            tuple(
                GrantedDevice(
                    **{k: str(d[k]) for k in ("device", "ifname", "rdma_device", "digest")},
                    share_id=str(d.get("share_id") or ""),
                )
                for d in data["devices"]
            ),
        )


def check_attach(grants: Iterable[Grant], pod_uid: str, devices: Sequence[Mapping[str, Any]]) -> None:
    """Raise Refused unless every device is granted to pod_uid exactly as asked (pure)."""
    grants = list(grants)
    for d in devices:
        name = str(d.get("device"))
        mine = [(g, gd) for g in grants if pod_uid in g.pod_uids for gd in g.devices if gd.device == name]
        if not mine:
            others = sorted({u for g in grants for gd in g.devices if gd.device == name for u in g.pod_uids})
            if others:
                raise Refused(
                    "other_pod",
                    name,
                    f"{name} is prepared for pod(s) {', '.join(others)}, not for pod {pod_uid}: refused",
                )
            raise Refused("not_prepared", name, f"{name} is not prepared for any pod on this node: refused")
        grant, granted = mine[0]
        claim_uid = str(d.get("claim_uid") or "")
        if claim_uid and claim_uid != grant.claim_uid:
            raise Refused(
                "mismatch", name, f"{name} belongs to claim {grant.claim_uid}, not {claim_uid}: refused"
            )
        # A netdev is named by its interface (the worker finds its RDMA device itself); an
        # RDMA-only device, by its RDMA device.
        ifname, rdma = str(d.get("ifname") or ""), str(d.get("rdma_device") or "")
        want_rdma = "" if granted.ifname else granted.rdma_device
        if (ifname, rdma if not ifname else "") != (granted.ifname, want_rdma):
            raise Refused(
                "mismatch",
                name,
                f"{name} was prepared as interface {granted.ifname!r} (RDMA {granted.rdma_device!r}), "
                f"not {ifname!r} (RDMA {rdma!r}): refused",
            )
        share = str(d.get("share_id") or "")
        if share != granted.share_id:
            raise Refused(
                "mismatch",
                name,
                f"{name} was prepared as share {granted.share_id or '(none: the whole NIC)'}, "
                f"not {share or '(none: the whole NIC)'}: refused",
            )
        if config_digest(d.get("config") or {}) != granted.digest:
            raise Refused(
                "config", name, f"{name}: the config differs from the one dra prepared and validated: refused"
            )


def check_detach(
    grants: Iterable[Grant], pod_uid: str, devices: Sequence[str], attached: Iterable[str]
) -> None:
    """Raise Refused when a named device is neither granted to pod_uid nor attached to it (pure).
    A detach naming no device releases only what the pod holds, which needs no check."""
    mine = {gd.device for g in grants if pod_uid in g.pod_uids for gd in g.devices} | set(attached)
    for name in devices:
        if name not in mine:
            raise Refused(
                "not_prepared", name, f"{name} is neither prepared for nor attached to pod {pod_uid}: refused"
            )


class Grants:
    """The grants in memory and on disk (atomic, durable JSON). Thread-safe: writers take turns
    (each write is durable before it is published); readers take the published dict, which is
    replaced, never changed, so an attach never waits for a grant's fsync."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()  # writers only
        self._grants: dict[str, Grant] = self._load()

    def _load(self) -> dict[str, Grant]:
        if self.path is None:
            return {}
        try:
            doc = json.loads(self.path.read_bytes())
            if doc.get("version") != FILE_VERSION:
                raise ValueError(f"unknown version {doc.get('version')!r}")
            return {g.claim_uid: g for g in (Grant.from_dict(x) for x in doc["grants"])}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # dra pushes its whole set at start; until then nothing new is attached (fail closed).
            log.error(
                "grants file unreadable; starting with none until dra pushes them", extra={"error": str(exc)}
            )
            return {}

    def _save(self, grants: Mapping[str, Grant]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": FILE_VERSION, "grants": [g.to_dict() for g in grants.values()]}
        write_atomic(self.path, json.dumps(doc, sort_keys=True).encode(), 0o600)

    def snapshot(self) -> list[Grant]:
        return list(self._grants.values())

    def grant(self, claims: Sequence[Mapping[str, Any]], *, replace: bool = False) -> int:
        """Add (or replace) these claims' grants; replace: they are the whole set. Raises OSError."""
        fresh = {g.claim_uid: g for g in (Grant.from_request(c) for c in claims)}
        with self._lock:
            merged = fresh if replace else {**self._grants, **fresh}
            if merged != self._grants:
                self._save(merged)
                self._grants = merged
        return len(fresh)

    def revoke(self, claim_uids: Sequence[str]) -> list[str]:
        with self._lock:
            gone = [u for u in claim_uids if u in self._grants]
            if gone:
                kept = {u: g for u, g in self._grants.items() if u not in gone}
                self._save(kept)
                self._grants = kept
        return gone


# ------------------------------------------------------------ the bus ops and refusals
def grant_op(
    grants: Grants | None, claims: Sequence[Mapping[str, Any]], *, replace: bool = False
) -> dict[str, Any]:
    """The `grant` op (dra's alone)."""
    try:
        return {"granted": _checked(grants).grant(claims, replace=replace)}
    except OSError as exc:
        raise _unwritable(exc) from None


def revoke_op(grants: Grants | None, claim_uids: Sequence[str]) -> dict[str, Any]:
    """The `revoke` op (dra's alone)."""
    try:
        return {"revoked": _checked(grants).revoke(claim_uids)}
    except OSError as exc:
        raise _unwritable(exc) from None


def _checked(grants: Grants | None) -> Grants:
    if grants is None:
        raise BusError("unknown_op", "this worker checks no grants")
    return grants


def _unwritable(exc: OSError) -> BusError:
    return BusError("kernel_error", f"cannot write the grants file: {exc}; check the state dir")


def refusal(op: str, pod_uid: str, err: Refused) -> BusError:
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
