"""The discovery service: inventory of the node's devices, published as ResourceSlices and on the bus.

Bus: op `get_inventory` and topic `inventory` (same body: {generation, devices: [...]}).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from dranet.bus import BusClient, BusError, RequestContext, Subscriber
from dranet.netlink.rtnl import EVENT_GROUPS, open_in_netns
from dranet.providers import ProviderError
from dranet.providers.select import KINDS, cloud_instance
from dranet.service import ServiceHost
from dranet.settings import Settings, add_uplink_flags, kube_api_client, uplink_policy

from .devices import DEFAULT_EXCLUDE, ScanOptions
from .filter import DEFAULT_FILTER, DeviceFilter
from .inventory import Inventory, InventoryConfig
from .model import Device
from .nodenames import NodeNames
from .publisher import PluginState, SlicePublisher
from .sharing import DEFAULT_INTERFACES, Sharing

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("discovery")
    g.add_argument("--sysfs-root", default="/sys", help="where sysfs is read from (default %(default)s)")
    g.add_argument(
        "--filter",
        default=DEFAULT_FILTER,
        help="CEL expression over `attributes` deciding which devices are offered; 'true' offers all "
        "(default hides veth, like upstream)",
    )
    g.add_argument(
        "--exclude-interfaces",
        default=",".join(DEFAULT_EXCLUDE),
        help="comma-separated interface name patterns (fnmatch) never offered; '' for none "
        "(default: loopback and common CNI devices)",
    )
    g.add_argument(
        "--resync-interval", type=float, default=60.0, help="full rescan period, seconds (default 60)"
    )
    g.add_argument("--coalesce-ms", type=float, default=50.0, help="netlink event burst window (default 50)")
    g.add_argument(
        "--nice",
        type=int,
        default=10,
        help="CPU niceness of this service (default 10): its rescans are background work and "
        "yield the CPU to a pod start (nri, dra, the netns worker); 0 keeps the inherited one",
    )
    g.add_argument("--no-publish", action="store_true", help="do not publish ResourceSlices (bus only)")
    add_uplink_flags(g, "the server of discovery's kubeconfig, then $KUBERNETES_SERVICE_HOST")
    g.add_argument(
        "--publish-without-plugin",
        action="store_true",
        help="publish ResourceSlices even when dra is not registered with the kubelet (development and "
        "benchmarks only: a real kubelet wipes such slices, and pods scheduled on them stick at prepare)",
    )
    g.add_argument(
        "--cloud-provider",
        choices=KINDS,
        default="none",
        help="publish the cloud's attributes for each device (gce.dra.net/..., aws.dra.net/..., "
        "dra.net/cloudNetwork), read from its metadata service at start, or a webhook's "
        "GetDeviceAttributes (default none)",
    )
    g.add_argument(
        "--metadata-url",
        default="",
        help="the metadata service to read (default: the cloud's own, http://metadata.google.internal/"
        "computeMetadata/v1 or http://169.254.169.254)",
    )
    g.add_argument("--webhook-url", default="", help="the webhook for --cloud-provider=webhook")
    g.add_argument(
        "--shared-filter",
        default="false",
        help="CEL expression over `attributes` (as --filter) marking the NICs many pods share through "
        "macvlan/ipvlan children (KEP-5075 consumable capacity, Kubernetes 1.36+ with DRAConsumableCapacity; "
        "default: none)",
    )
    g.add_argument(
        "--shared-interfaces",
        type=int,
        default=DEFAULT_INTERFACES,
        help="capacity dra.net/interfaces of a shared NIC: how many pods' children it serves "
        "(default %(default)s)",
    )
    g.add_argument(
        "--shared-bandwidth",
        default="",
        help="capacity dra.net/bandwidth of a shared NIC, a quantity such as 10G (default: not published)",
    )
    g.add_argument(
        "--shared-bandwidth-step",
        default="100M",
        help="what a share takes of --shared-bandwidth by default, and the step requests round up to "
        "(default %(default)s)",
    )
    g.add_argument("--netns", default=None, help=argparse.SUPPRESS)  # tests/benchmarks: scan another netns


def _attached_provider(runtime_dir: Any) -> Any:
    """Ask the netns worker which devices are in pods; None when it does not answer."""
    client = BusClient(runtime_dir, "netns", timeout=0.3)

    def attached() -> set[str] | None:
        try:
            result = client.call("list", {}, timeout=0.3)
        except Exception:
            return None
        return {str(a.get("device", "")) for a in result.get("attachments", []) if a.get("device")}

    return attached


def _health_provider(runtime_dir: Any) -> Callable[[], dict[str, str] | None]:
    """Ask the netns worker which devices it could not restore; None when it does not answer."""
    client = BusClient(runtime_dir, "netns", timeout=0.3)

    def unhealthy() -> dict[str, str] | None:
        try:
            result = client.call("device_health", {}, timeout=0.3)
        except Exception:
            return None
        return {str(d["device"]): str(d["reason"]) for d in result.get("devices", [])}

    return unhealthy


def _tcx_provider(runtime_dir: Any) -> Callable[[], Mapping[str, list[str]]]:
    """Ask the netns worker for the tcx programs of the node's links; the last answer while it does
    not answer (asked again 10 s later, so a scan never waits on a worker that is down)."""
    client = BusClient(runtime_dir, "netns", timeout=0.3)
    last: dict[str, list[str]] = {}
    retry_at = 0.0

    def tcx() -> Mapping[str, list[str]]:
        nonlocal last, retry_at
        if time.monotonic() < retry_at:
            return last
        try:
            result = client.call("tcx_programs", {}, timeout=0.3)
        except Exception:
            retry_at = time.monotonic() + 10.0
            return last
        last = {str(k): [str(n) for n in v] for k, v in (result.get("links") or {}).items()}
        return last

    return tcx


def _kubeconfig_server(settings: Settings) -> str:
    """The API server discovery's kubeconfig names, or "" when there is no usable kubeconfig."""
    try:
        return str(kube_api_client(settings).configuration.host or "")
    except Exception as exc:
        log.warning("no kubeconfig to take the API server's endpoint from", extra={"error": str(exc)})
        return ""


def plugin_state_of(runtime_dir: Any, context: Any = None) -> Callable[[], PluginState | None]:
    """Ask dra whether the kubelet registered the plugin; None when dra does not answer."""
    client = BusClient(runtime_dir, "dra", timeout=1.0, context=context)

    def state() -> PluginState | None:
        try:
            r = client.call("plugin_state", {}, timeout=1.0)
        except BusError:
            return None
        return PluginState(bool(r["registered"]), float(r["registered_at"]), bool(r["serving"]))

    return state


def build(args: argparse.Namespace, settings: Settings) -> tuple[Inventory, SlicePublisher | None]:
    exclude = tuple(p.strip() for p in (args.exclude_interfaces or "").split(",") if p.strip())
    endpoint = "" if getattr(args, "apiserver_endpoint", None) else _kubeconfig_server(settings)
    cloud = None
    kind = getattr(args, "cloud_provider", "none") or "none"
    try:
        cloud = cloud_instance(
            kind, metadata_url=getattr(args, "metadata_url", ""), webhook_url=getattr(args, "webhook_url", "")
        )
    except ProviderError as exc:
        # Devices are still published, without the cloud's attributes; the log says why.
        log.error(
            "cloud provider unavailable: no cloud attributes", extra={"provider": kind, "error": exc.message}
        )
    options = ScanOptions(
        exclude=exclude,
        filter=DeviceFilter(args.filter),
        uplink_policy=uplink_policy(args, endpoint),
        cloud=cloud.device_attributes if cloud is not None else None,
        sharing=Sharing.from_flags(
            getattr(args, "shared_filter", "false"),
            getattr(args, "shared_interfaces", DEFAULT_INTERFACES),
            getattr(args, "shared_bandwidth", ""),
            getattr(args, "shared_bandwidth_step", "100M"),
        ),
    )
    publisher = None
    if not args.no_publish:
        publisher = SlicePublisher(
            lambda: kube_api_client(settings),
            settings.node_name,
            settings.driver_name,
            plugin_state=None
            if getattr(args, "publish_without_plugin", False)
            else plugin_state_of(settings.runtime_dir),
            node_names=NodeNames(settings.state_dir / "discovery" / "node-names.json"),
        )
    config = InventoryConfig(
        sysfs_root=args.sysfs_root,
        options=options,
        netns=args.netns,
        coalesce=args.coalesce_ms / 1000.0,
        resync_interval=args.resync_interval,
        kept_path=settings.state_dir / "discovery" / "kept-devices.json",
    )
    inventory = Inventory(
        config,
        attached=_attached_provider(settings.runtime_dir),
        tcx=_tcx_provider(settings.runtime_dir),
        health=_health_provider(settings.runtime_dir),
    )
    return inventory, publisher


def run(args: argparse.Namespace) -> int:
    if args.nice > 0:
        os.nice(args.nice)  # lowering our own priority needs no capability
    sockets = None
    if args.netns:  # entering another netns needs CAP_SYS_ADMIN: open the sockets before the drop
        sockets = (open_in_netns(args.netns, EVENT_GROUPS), open_in_netns(args.netns))
    host = ServiceHost("discovery", args)
    if not host.wait_for_turn():  # another driver pod's instance is active here (rolling update)
        host.close()
        return 0
    host.reclaim([host.settings.state_dir / "discovery"])  # what a previous life wrote as --run-as
    inventory, publisher = build(args, host.settings)
    inventory.config.sockets = sockets

    def on_change(devices: list[Device], generation: int) -> None:
        if publisher is not None:
            publisher.set_devices(devices)
        host.publish("inventory", {"generation": generation, "devices": [d.to_wire() for d in devices]})

    inventory._on_change = on_change

    def get_inventory(_body: dict[str, Any], _ctx: RequestContext) -> dict[str, Any]:
        return inventory.snapshot()

    def health() -> dict[str, Any]:
        # Healthy: the node can be scanned. Ready: the slices the scheduler needs are published
        # (an API server outage makes discovery not ready, never unhealthy: nothing to fix here).
        out: dict[str, Any] = {
            "healthy": inventory.healthy,
            "ready": publisher is None or publisher.healthy,
            "generation": inventory.generation,
            "scan_ms": round(inventory.last_scan_seconds * 1000, 1),
        }
        if publisher is not None:
            out["pool_generation"] = publisher.generation
            out["publish_error"] = publisher.last_error
            if not publisher.healthy:
                why = publisher.waiting or publisher.last_error or "not yet"
                out["not_ready"] = f"ResourceSlices not published: {why}"
        return out

    host.serve({"get_inventory": get_inventory}, health=health, snapshots={"inventory": inventory.snapshot})
    # every socket is bound: drop root, keeping the kept-devices file writable
    host.switch_user(own=[host.settings.state_dir / "discovery"])
    if publisher is not None:
        publisher.start()
    inventory.start()
    # An attach or detach changes which vanished devices must be kept, a restore that could not
    # complete taints its device: look again.
    sub = Subscriber(
        host.settings.runtime_dir,
        "netns",
        ["attachments", "device_health"],
        lambda _t, _b: inventory.request_rescan(refresh_attached=True),
        context=host.context,
    )
    sub.start()
    host.stop_event.wait()
    sub.close()  # before the host closes the ZeroMQ context under it
    inventory.stop()
    if publisher is not None:
        publisher.stop()
    host.close()
    return 0
