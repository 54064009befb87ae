"""Discovery's side of the uplink rule (the rule itself is dranet/uplinks.py): say what it excludes.

Each scan's uplinks are compared with the last ones; a link that becomes an uplink, stops being one
or is one for another reason is logged once, with the reason, and the gauge counts the uplinks per
reason. Logging only changes keeps a rescan every 50 ms quiet.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from dranet.observability.metrics import gauge
from dranet.uplinks import REASONS, Uplink

log = logging.getLogger(__name__)

UPLINKS = gauge(
    "dranet_discovery_uplinks", "links withheld from pods as the node's uplinks, by reason", ("reason",)
)


class UplinkReporter:
    def __init__(self) -> None:
        self._last: dict[str, Uplink] = {}

    def report(self, uplinks: Mapping[int, Uplink]) -> None:
        now = {u.name: u for u in uplinks.values()}
        for name in sorted(now):
            up = now[name]
            was = self._last.get(name)
            if was is None or (was.reason, was.detail) != (up.reason, up.detail):
                log.info(
                    "link excluded as an uplink of the node",
                    extra={"ifname": name, "reason": up.reason, "why": up.detail},
                )
        for name in sorted(set(self._last) - set(now)):
            log.info("link no longer an uplink of the node", extra={"ifname": name})
        self._last = now
        counts = Counter(u.reason for u in now.values())
        for reason in REASONS:
            UPLINKS.labels(reason=reason).set(counts.get(reason, 0))
