"""The netns service: the privileged worker on the bus (attach, detach, list; `attachments` topic)."""

from __future__ import annotations

import argparse
import logging
import re
import threading
from typing import Any

from dranet.services.netns.dhcp import DhcpClient
from dranet.services.netns.grants import Grants, grant_op, revoke_op
from dranet.services.netns.nspath import DEFAULT_ROOTS
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import Subscriber
from dranet.bus.server import Handler
from dranet.capabilities import WORKER_CAPS, WORKER_DHCP_CAPS
from dranet.service import ServiceHost
from dranet.settings import add_uplink_flags, uplink_policy

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("netns")
    g.add_argument(
        "--netns-root",
        action="append",
        default=None,
        help=f"directory pod netns paths must resolve under; repeatable (default {', '.join(DEFAULT_ROOTS)})",
    )
    g.add_argument(
        "--allowed-interfaces",
        default=None,
        help="regex of host interfaces that may be attached, used until discovery's inventory "
        "arrives (default: none until then)",
    )
    g.add_argument("--sysfs-root", default="/sys", help="sysfs root for RDMA lookups (default %(default)s)")
    g.add_argument("--dev-root", default="/dev", help="/dev as seen by pods, for RDMA char devices")
    g.add_argument(
        "--netns-poll",
        type=float,
        default=1.0,
        help="seconds between checks for deleted pod netns (default 1)",
    )
    g.add_argument(
        "--dhcp",
        action="store_true",
        help="serve claims with interface.dhcp: run dhclient (isc-dhcp-client) for their leases; "
        "the worker then also keeps CAP_NET_RAW (a DHCP client sends before it has an address) and "
        "CAP_NET_BIND_SERVICE (its port 68)",
    )
    g.add_argument(
        "--dhcp-timeout", type=float, default=5.0, help="seconds to wait for a DHCP server (default 5)"
    )
    g.add_argument(
        "--dhcp-renew-max",
        type=float,
        default=None,
        help="renew leases at least this often, in seconds (default: at each lease's T1)",
    )
    # The worker holds no API credentials: the kubelet's env names the API server for it.
    add_uplink_flags(g, "$KUBERNETES_SERVICE_HOST")


def handlers(worker: NetnsWorker) -> dict[str, Handler]:
    """The worker's bus ops (who may call which: dranet/bus/policy.py)."""
    return {
        "attach": lambda body, ctx: worker.attach(
            body["pod_uid"], body["netns"], body["devices"], deadline=ctx.deadline
        ),
        "detach": lambda body, ctx: worker.detach(
            body["pod_uid"], body.get("devices") or [], netns=body.get("netns")
        ),
        "list": lambda body, ctx: worker.queries.attachments(live=True),
        "netns_alive": lambda body, ctx: worker.queries.alive_netns(body["netns"]),
        "release": lambda body, ctx: worker.watch.release(body["pod_uid"], body["device"]),
        "attached_in": lambda body, ctx: worker.queries.attached_in(body["netns_id"], body["devices"]),
        "ethtool_features": lambda body, ctx: worker.queries.ethtool_features(body["ifname"]),
        "tcx_programs": lambda body, ctx: worker.queries.tcx_programs(),
        "device_health": lambda body, ctx: worker.notifier.device_health.snapshot(),
        "grant": lambda body, ctx: grant_op(worker.grants, body["claims"], replace=bool(body.get("replace"))),
        "revoke": lambda body, ctx: revoke_op(worker.grants, body["claim_uids"]),
        "dhcp_acquire": lambda body, ctx: worker.leases.acquire(
            body["claim_uid"], body["device"], body["ifname"]
        ),
        "dhcp_release": lambda body, ctx: worker.leases.release(body["claim_uid"], body["device"]),
    }


class Inventory:
    """What may be attached: discovery's allocatable devices once known, the regex flag before."""

    def __init__(self, pattern: str | None) -> None:
        self._regex = re.compile(pattern) if pattern else None
        self._names: frozenset[str] | None = None
        self._lock = threading.Lock()

    def update(self, body: dict[str, Any]) -> None:
        # A device is allowed by its interface name (while it is in a pod, discovery keeps it with
        # no interface and its last attributes: the name it had on the host), or by its RDMA
        # device when it has no netdev.
        names = {name for d in body.get("devices", []) if d.get("allocatable") for name in _names(d)}
        with self._lock:
            self._names = frozenset(names)

    def __call__(self, ifname: str) -> bool:
        with self._lock:
            names = self._names
        if names is not None:
            return ifname in names
        return bool(self._regex and self._regex.fullmatch(ifname))


def _names(device: dict[str, Any]) -> set[str]:
    attrs = device.get("attributes")
    last = attrs.get("dra.net/ifName") if isinstance(attrs, dict) else None
    name = device.get("ifname") or (last if isinstance(last, str) else None) or device.get("rdma_device")
    return {str(name)} if name else set()


def run(args: argparse.Namespace) -> int:
    use_dhcp = bool(getattr(args, "dhcp", False))
    host = ServiceHost("netns", args, keep_caps=WORKER_CAPS | (WORKER_DHCP_CAPS if use_dhcp else frozenset()))
    if not host.wait_for_turn():  # another driver pod's instance is active here (rolling update)
        host.close()
        return 0
    settings = host.settings
    inventory = Inventory(getattr(args, "allowed_interfaces", None))
    worker = NetnsWorker(
        settings.state_dir,
        allowed=inventory,
        netns_roots=tuple(getattr(args, "netns_root", None) or DEFAULT_ROOTS),
        publish=host.publish,
        sysfs_root=getattr(args, "sysfs_root", "/sys"),
        dev_root=getattr(args, "dev_root", "/dev"),
        uplink_policy=uplink_policy(args),
        grants=Grants(settings.state_dir / "netns" / "grants.json"),
        dhcp=DhcpClient(
            settings.state_dir,
            timeout=getattr(args, "dhcp_timeout", 5.0),
            max_renew_interval=getattr(args, "dhcp_renew_max", None),
        )
        if use_dhcp
        else None,
    )
    # Reconcile before serving, so no request sees a half-done attachment from a previous life,
    # but after the publisher opened, so the restores it makes are announced.
    host.start_publishing(
        {"attachments": worker.queries.attachments, "device_health": worker.notifier.device_health.snapshot}
    )
    worker.watch.reconcile()
    host.serve(handlers(worker), health=worker.health)
    worker.start(watch_interval=getattr(args, "netns_poll", 1.0), reconcile=False)
    sub = Subscriber(
        settings.runtime_dir,
        "discovery",
        ["inventory"],
        lambda _topic, body: inventory.update(body),
        context=host.context,
    )
    sub.start()
    try:
        host.stop_event.wait()
    finally:
        # Each step stops what the next one would pull from under it: the subscriber (it shares
        # the host's ZeroMQ context), the handlers in flight (they use the worker's netlink
        # sockets), the worker's watcher (it publishes), then the publisher and the context.
        sub.close()
        host.stop_serving()
        worker.close()
        host.close()
    return 0
