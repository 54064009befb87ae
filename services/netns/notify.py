"""What the worker tells the others: attachment events (`attachments` topic, for dra's claim
status and Events) and the devices whose restore could not complete (`device_health` topic, for
discovery's taints). A publish that fails is logged, never raised: the kernel work is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from dranet.services.netns import health
from dranet.services.netns.health import DeviceHealth
from dranet.services.netns.model import JournalEntry

from dranet.bus.messages import BusError
from dranet.observability import metrics

log = logging.getLogger(__name__)

RESTORE_INCOMPLETE = metrics.counter(
    "dranet_netns_restore_incomplete_total",
    "Devices given back to the host with some of their settings not restored",
    ("reason",),
)

Publish = Callable[[str, dict[str, Any]], None]


class Notifier:
    def __init__(self, publish: Publish | None) -> None:
        self._publish = publish
        self.device_health = DeviceHealth()

    # ------------------------------------------------------------ device health (discovery's taints)
    def set_health(self, entry: JournalEntry, reason: str, message: str) -> None:
        if self.device_health.mark(entry.device, entry.host.link.name, reason, message):
            self.publish_health()

    def publish_health(self) -> None:
        if self._publish is None:
            return
        try:
            self._publish("device_health", self.device_health.snapshot())
        except Exception:
            log.exception("cannot publish device health")

    def report_incomplete(self, entry: JournalEntry, problems: Sequence[str], reason: str) -> None:
        """A device back on the host without all of its settings: a metric, a warning, and (except
        in a rollback, which reports its own failure) the claim's status through `attachments`."""
        message = (
            f"{entry.device} is back on the host as {entry.host.link.name}, but not all of it was "
            f"restored: {'; '.join(problems)}"
        )
        RESTORE_INCOMPLETE.labels(reason=reason).inc()
        log.warning(message, extra={"pod_uid": entry.pod_uid, "device": entry.device, "reason": reason})
        self.set_health(entry, health.RESTORE_INCOMPLETE, message)
        if reason != "rollback":
            error = BusError("restore_incomplete", message)
            self.notify(entry.pod_uid, entry.device, entry.claim_uid, "restore_incomplete", error=error)

    # ------------------------------------------------------------ attachment events
    def notify_entry(self, entry: JournalEntry, state: str) -> None:
        data = None
        if state == "attached":
            data = {
                "interfaceName": entry.pod_ifname,
                "ips": list(entry.ips),
                "hardwareAddress": entry.hardware_address,
            }
        extra = {"ebpf_detached": list(entry.ebpf_detached)} if entry.ebpf_detached is not None else None
        self.notify(entry.pod_uid, entry.device, entry.claim_uid, state, network_data=data, extra=extra)

    def notify(
        self,
        pod_uid: str,
        device: str,
        claim_uid: str,
        state: str,
        *,
        error: BusError | None = None,
        network_data: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        log.info(
            state,
            extra={
                "pod_uid": pod_uid,
                "device": device,
                "claim_uid": claim_uid,
                **({"error": error.message} if error else {}),
            },
        )
        if self._publish is None:
            return
        body: dict[str, Any] = {"pod_uid": pod_uid, "device": device, "claim_uid": claim_uid, "state": state}
        if error is not None:
            body["error"] = {"code": error.code, "message": error.message}
        if network_data is not None:
            body["network_data"] = network_data
        body.update(extra or {})
        try:
            self._publish("attachments", body)
        except Exception:
            log.exception("publishing an attachment event failed")
