"""Device taints (KEP-5055, resource.k8s.io/v1 DeviceTaint; GA in Kubernetes 1.37) for NICs that
should not get new pods: pure.

One key, dra.net/unhealthy, effect NoSchedule, the reason as the value:
- link-down: the interface is up (IFF_UP) but has no carrier: its cable, peer or switch port is
  gone. An interface an administrator left down is not tainted: it is brought up in the pod.
- restore-failed, restore-incomplete: the netns worker could not give the device back to the host
  whole (services/netns/health.py reports them on the bus).

A taint goes as soon as its reason does. timeAdded is when discovery first saw the reason, kept
across rescans, so an unchanged taint never rewrites a slice. A claim that tolerates the taint
(`tolerations: [{key: dra.net/unhealthy, operator: Exists}]`) can still get the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .model import LinkInfo

TAINT_KEY = "dra.net/unhealthy"
TAINT_EFFECT = "NoSchedule"
LINK_DOWN = "link-down"

Taint = Mapping[str, str]


def link_lost(link: LinkInfo) -> bool:
    """Up, but without a carrier (operstate DOWN or LOWERLAYERDOWN while IFF_UP is set)."""
    return link.admin_up and not link.carrier


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TaintClock:
    """The taints of each device, with the time each (device, reason) was first seen."""

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._now = now
        self._since: dict[tuple[str, str], str] = {}

    def taints(self, reasons: Mapping[str, Iterable[str]]) -> dict[str, tuple[Taint, ...]]:
        """Device name -> its taints (API form) for these reasons; reasons no longer given are
        forgotten, so a taint that comes back later gets a new timeAdded."""
        stamp = _rfc3339(self._now())
        since: dict[tuple[str, str], str] = {}
        out: dict[str, tuple[Taint, ...]] = {}
        for device, why in sorted(reasons.items()):
            items = []
            for reason in sorted(set(why)):
                added = since[(device, reason)] = self._since.get((device, reason), stamp)
                items.append({"key": TAINT_KEY, "value": reason, "effect": TAINT_EFFECT, "timeAdded": added})
            if items:
                out[device] = tuple(items)
        self._since = since
        return out


def device_reasons(
    devices: Iterable[Any], links: Iterable[LinkInfo], unhealthy: Mapping[str, str]
) -> dict[str, list[str]]:
    """Why each device is unhealthy: its host link lost its carrier, or the worker's report
    (device name -> reason). devices: inventory Devices (name, ifname)."""
    lost = {link.name for link in links if link_lost(link)}
    out: dict[str, list[str]] = {}
    for dev in devices:
        why = [LINK_DOWN] if dev.ifname and dev.ifname in lost else []
        if dev.name in unhealthy:
            why.append(unhealthy[dev.name])
        if why:
            out[dev.name] = why
    return out
