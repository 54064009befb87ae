"""Pure: what a Synchronize reconciliation must do, from the runtime's pods and the worker's view.

A sandbox is named by (pod UID, netns identity). The identity is the worker's: nri may not see the
netns files at all (the shipped DaemonSet does not mount /var/run/netns into the nri container), so
the worker says which of the runtime's netns paths are alive and what each one's identity is, and
lists its attachments with the identity of the netns they are in. Comparing identities, not path
strings, keeps a netns path that was removed and created again from passing for the old sandbox.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Pod(Protocol):
    @property
    def uid(self) -> str: ...

    @property
    def netns(self) -> str: ...


@dataclass(frozen=True)
class Release:
    """Attachments of a sandbox that no longer runs: detach them from that sandbox only."""

    pod_uid: str
    netns: str  # the path the worker recorded for them
    devices: tuple[str, ...]


@dataclass(frozen=True)
class LateAttach:
    """A running sandbox of a pod: attach its prepared devices that are not there yet."""

    pod: Any  # the runtime's PodInfo
    held: frozenset[str]  # devices already attached in this sandbox


@dataclass
class Plan:
    releases: list[Release] = field(default_factory=list)
    late: list[LateAttach] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)  # pods with several running sandboxes, none holding


def plan(
    pods: Iterable[Pod],
    alive: Mapping[str, str],
    attachments: Iterable[Mapping[str, Any]],
    seen: Collection[str] = (),
) -> Plan:
    """alive: netns path -> identity, for the paths the worker found alive. seen: pods with a
    runtime event since the pod list was taken; their own handlers decide, reconcile leaves them."""
    running: dict[str, dict[str, Any]] = {}  # uid -> {identity: pod}
    for p in pods:
        ident = alive.get(p.netns) if p.netns else None
        if ident is not None:
            running.setdefault(p.uid, {}).setdefault(ident, p)
    held: dict[tuple[str, str], tuple[str, list[str]]] = {}  # (uid, identity) -> (path, devices)
    for a in attachments:
        uid = a.get("pod_uid")
        if not uid:
            continue
        key = (str(uid), str(a.get("netns_id") or ""))
        held.setdefault(key, (str(a.get("netns") or ""), []))[1].append(str(a["device"]))
    out = Plan()
    for (uid, ident), (path, devices) in sorted(held.items()):
        if ident not in running.get(uid, {}) and uid not in seen:
            out.releases.append(Release(uid, path, tuple(sorted(devices))))
    for uid, sandboxes in sorted(running.items()):
        if uid in seen:
            continue
        targets = list(sandboxes) if len(sandboxes) == 1 else [i for i in sandboxes if (uid, i) in held]
        if len(targets) != 1:
            out.ambiguous.append(uid)
            continue
        devices = held.get((uid, targets[0]), ("", []))[1]
        out.late.append(LateAttach(sandboxes[targets[0]], frozenset(devices)))
    return out
