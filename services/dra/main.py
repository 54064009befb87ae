"""The dra service: the kubelet's DRA plugin for this node.

Start order follows the kubelet helper: state from the checkpoint, bus, DRA gRPC socket, and only
then the registration socket (the kubelet may call as soon as it sees it). Clean shutdown removes
the registration socket first, then the DRA socket.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client

from dranet.backoff import Backoff
from dranet.bus import BusClient, BusError, Subscriber
from dranet.config import FeatureTable
from dranet.config.lease import Lease
from dranet.providers import ProviderError
from dranet.providers.webhook import WebhookProvider
from dranet.service import ServiceHost
from dranet.settings import kube_api_client

from .addressing import Addressing
from .cdi import DEFAULT_WAIT, CdiSpecs, HookCommand
from .checkpoint import Checkpoint
from .driver import Driver
from .events import POD_EVENTS_TOPIC, EventRecorder, from_attachment
from .health import DEFAULT_TIMEOUT as DEFAULT_HEALTH_TIMEOUT
from .health import HealthMonitor, HealthServicer, Where
from .inventory import InventoryCache
from .kube import KubeClaims
from .metadata import HOST_SUBDIR, MetadataFiles
from .model import PreparedClaim, PrepareError
from .plugin import PluginServer
from .reconcile import ClaimReconciler
from .registration import DRA_VERSIONS, HEALTH_VERSION, RegistrationServer, RegistrationServicer
from .sockets import dra_socket_name, registration_socket_name
from .status import StatusWriter

log = logging.getLogger(__name__)

DEFAULT_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
DEFAULT_PLUGINS_DIR = "/var/lib/kubelet/plugins"
DEFAULT_CDI_DIR = "/var/run/cdi"
EXIT_RESTART = 75  # EX_TEMPFAIL: a standby took over and exits to be started again as root (supervisord)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubelet-registry-dir",
        default=DEFAULT_REGISTRY_DIR,
        help="the kubelet's plugin registration directory (default %(default)s)",
    )
    parser.add_argument(
        "--kubelet-plugins-dir",
        default=DEFAULT_PLUGINS_DIR,
        help="the DRA socket goes in <this>/<driver name>/ (default %(default)s)",
    )
    parser.add_argument(
        "--rolling-update-uid",
        default=os.environ.get("POD_UID", ""),
        help="this driver pod's UID: makes the socket names unique so two driver pods can overlap "
        "during a DaemonSet rolling update (needs kubelet >= 1.33; default $POD_UID, empty = off)",
    )
    parser.add_argument(
        "--health-interval",
        type=float,
        default=2.0,
        help="seconds between link state checks for the health stream (default %(default)s)",
    )
    parser.add_argument(
        "--health-timeout",
        type=float,
        default=DEFAULT_HEALTH_TIMEOUT,
        help="seconds the kubelet should trust one device health report (health_check_timeout_seconds); "
        "the full list is re-sent every third of it, and at least every 10 s (default %(default)s)",
    )
    parser.add_argument(
        "--reconcile-interval",
        type=float,
        default=60.0,
        help="seconds between checks of the prepared claims against the API server: a claim that is "
        "gone or no longer reserved for its pod is released (default %(default)s)",
    )
    parser.add_argument(
        "--cdi-dir",
        default=DEFAULT_CDI_DIR,
        help="the runtime's CDI spec directory: prepare writes a spec per claim whose OCI hook keeps "
        "the pod's containers from starting until their NICs are attached, even when nri is not "
        "connected; empty = off, no CDI devices (default %(default)s)",
    )
    parser.add_argument(
        "--cdi-hook",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --cdi-dir: give each claim the fail-closed OCI hook (needs `dranet` on the host); "
        "--no-cdi-hook writes only the device metadata specs (default on)",
    )
    parser.add_argument(
        "--device-metadata",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="KEP-5304 device metadata: a file per claim request with the devices' attributes and "
        "network data, bind-mounted into the containers that use it by a CDI spec in --cdi-dir; "
        "the files live in <kubelet plugins dir>/<driver>/dra-device-metadata (default off)",
    )
    parser.add_argument(
        "--device-metadata-host-dir",
        default="",
        help="that directory as the runtime sees it, when dra's view of the node's filesystem differs "
        "(default: the same path)",
    )
    parser.add_argument(
        "--cdi-hook-command",
        default=shlex.join([sys.executable, "-m", "dranet"]),
        help="the `dranet` command as the runtime runs it on the host, one shell-quoted string "
        "(default: this interpreter, %(default)s)",
    )
    parser.add_argument(
        "--cdi-hook-wait",
        type=float,
        default=DEFAULT_WAIT,
        help="seconds the hook waits for the attachment before it refuses the container "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--webhook-url",
        default="",
        help="upstream's webhook provider (http://host:port or unix:///path): resolves claims' "
        "`profile` (GetProfileConfig/ReleaseProfileConfig) and, when its /health says "
        "cloudProvider, gives each device's baseline config (GetDeviceConfig); empty = none",
    )
    parser.add_argument(
        "--webhook-timeout",
        type=float,
        default=10.0,
        help="seconds one webhook call may take (default %(default)s, upstream's)",
    )
    parser.add_argument(
        "--dhcp-timeout",
        type=float,
        default=15.0,
        help="seconds prepare waits for the netns worker's DHCP lease (default %(default)s)",
    )
    parser.add_argument(
        "--host-netns",
        default=None,
        help="network namespace (name or path) holding the node's interfaces, for development and tests "
        "where a namespace stands in for the host (default: this process's own)",
    )


class BusLeases:
    """DHCP leases from the netns worker (it runs the client; dra holds no capability)."""

    def __init__(self, netns: BusClient, timeout: float) -> None:
        self._netns = netns
        self._timeout = timeout

    def acquire(self, claim_uid: str, device: str, ifname: str) -> Lease:
        body = {"claim_uid": claim_uid, "device": device, "ifname": ifname}
        try:
            result = self._netns.call("dhcp_acquire", body, timeout=self._timeout)
        except BusError as exc:
            raise PrepareError(
                f"device {device}: interface.dhcp: no lease for {ifname}: {exc.message}",
                retriable=exc.code in ("unavailable", "timeout", "conflict"),
            ) from None
        return Lease.from_dict(result["lease"])

    def release(self, claim_uid: str, device: str) -> None:
        try:
            self._netns.call(
                "dhcp_release", {"claim_uid": claim_uid, "device": device}, timeout=self._timeout
            )
        except BusError as exc:
            raise PrepareError(f"DHCP release of {device}: {exc.message}") from None


class Attachments:
    """Where each attached device's link is now, from the netns worker's "attachments" topic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._where: dict[tuple[str, str], Where] = {}

    def on_message(self, topic: str, body: Mapping[str, Any]) -> None:
        items = body.get("attachments")
        if isinstance(items, list):  # a snapshot: the whole set
            with self._lock:
                self._where.clear()
        for item in items if isinstance(items, list) else [body]:
            if not isinstance(item, Mapping):
                continue
            key = (str(item.get("pod_uid") or ""), str(item.get("device") or ""))
            state = str(item.get("state") or "").lower()
            with self._lock:
                if item.get("error") or state in ("detached", "released", "removed", "failed"):
                    self._where.pop(key, None)
                else:
                    nd = item.get("network_data") or {}
                    name = item.get("pod_ifname") or nd.get("interface_name") or nd.get("interfaceName") or ""
                    netns = item.get("netns") or None
                    if netns:
                        self._where[key] = Where(str(name), str(netns))
                    else:
                        self._where[key] = Where(
                            str(name), None, unknown="attached to the pod; the attachment event gave no netns"
                        )

    def get(self, pod_uid: str, device: str) -> Where | None:
        with self._lock:
            return self._where.get((pod_uid, device))


class DraService:
    """Everything the dra process runs, built from the flags; start() and stop() for tests too."""

    def __init__(self, host: ServiceHost, args: argparse.Namespace, *, api_client: Any = None) -> None:
        self.host = host
        s = host.settings
        self.driver_name = s.driver_name
        self.host_netns: str | None = getattr(args, "host_netns", None) or None
        uid = getattr(args, "rolling_update_uid", "") or ""
        self.registration_path = Path(args.kubelet_registry_dir) / registration_socket_name(
            s.driver_name, uid
        )
        self.dra_path = Path(args.kubelet_plugins_dir) / s.driver_name / dra_socket_name(uid)
        self.kube = KubeClaims(api_client if api_client is not None else lambda: kube_api_client(s))
        self.checkpoint = Checkpoint(s.state_dir / "dra")
        self.checkpoint_rebuilt: dict[str, Any] | None = None
        self.discovery = BusClient(s.runtime_dir, "discovery", context=host.context)
        self.netns = BusClient(s.runtime_dir, "netns", context=host.context)
        self.inventory = InventoryCache(self.discovery)
        self.attachments = Attachments()
        self.status = StatusWriter(self.kube, s.driver_name, claim_of=self._claim_of)
        self.events = EventRecorder(lambda: client.CoreV1Api(self.kube.api.api_client), node=s.node_name)
        self.driver = Driver(
            driver_name=s.driver_name,
            node_name=s.node_name,
            claims=self.kube,
            inventory=self.inventory.lookup,
            checkpoint=self.checkpoint,
            detach=self._detach,
            on_unprepared=self._unprepared,
            on_prepared=lambda _claim: self.health.kick(),
            on_failed=lambda ref, error: self.events.claim_failed(ref.namespace, ref.name, ref.uid, error),
            cdi=self._cdi_specs(args, s.runtime_dir),
            features=self._ethtool_table,
            grant=self._grant,
            revoke=lambda uids: self.netns.call("revoke", {"claim_uids": uids}, timeout=10.0),
            addressing=self._addressing(args),
            metadata=self._metadata_files(args),
        )
        self._sync_kick = threading.Event()
        self._sync_stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        interval = float(getattr(args, "health_interval", 2.0))
        self._list_timeout = min(2.0, max(interval, 0.5))
        self._list_error = ""
        self._serving = False  # the DRA gRPC socket serves (set in start, cleared in stop)
        self.reconcile_interval = float(getattr(args, "reconcile_interval", 60.0))
        self.reconciler: ClaimReconciler | None = None
        self._bus_waiter: threading.Thread | None = None
        self.restart = False  # set by a standby that took over: exit, to be started again as root
        self.instance = uid
        self.health = HealthMonitor(
            self._health_devices,
            interval=interval,
            timeout=float(getattr(args, "health_timeout", DEFAULT_HEALTH_TIMEOUT)),
        )
        self.plugin = PluginServer(self.dra_path, self.driver, HealthServicer(self.health))
        self.registration = RegistrationServer(
            self.registration_path,
            RegistrationServicer(s.driver_name, str(self.dra_path), [*DRA_VERSIONS, HEALTH_VERSION]),
        )
        self.subscribers = [
            Subscriber(
                s.runtime_dir, "discovery", ["inventory"], self.inventory.on_message, context=host.context
            ),
            Subscriber(s.runtime_dir, "netns", ["attachments"], self._on_attachments, context=host.context),
            Subscriber(
                s.runtime_dir, "nri", [POD_EVENTS_TOPIC], self.events.on_message, context=host.context
            ),
        ]

    def _cdi_specs(self, args: argparse.Namespace, runtime_dir: Path) -> CdiSpecs | None:
        directory = getattr(args, "cdi_dir", "") or ""
        if not directory or not getattr(args, "cdi_hook", True):
            return None
        command = getattr(args, "cdi_hook_command", "") or shlex.join([sys.executable, "-m", "dranet"])
        hook = HookCommand(
            argv=tuple(shlex.split(command)),
            runtime_dir=str(Path(runtime_dir).absolute()),
            wait=float(getattr(args, "cdi_hook_wait", DEFAULT_WAIT)),
        )
        return CdiSpecs(directory, self.driver_name, hook)

    def _metadata_files(self, args: argparse.Namespace) -> MetadataFiles | None:
        if not getattr(args, "device_metadata", False):
            return None
        cdi_dir = getattr(args, "cdi_dir", "") or ""
        if not cdi_dir:
            raise ValueError(
                "--device-metadata needs --cdi-dir (the runtime's CDI directory: its specs bind-mount "
                "the files); set --cdi-dir, with --no-cdi-hook when the node has no `dranet` command"
            )
        host_dir = getattr(args, "device_metadata_host_dir", "") or ""
        return MetadataFiles(
            self.driver_name,
            self.dra_path.parent / HOST_SUBDIR,
            Path(cdi_dir),
            Path(host_dir) if host_dir else None,
        )

    def _ethtool_table(self, ifname: str) -> FeatureTable:
        """The interface's ethtool table, read by the netns worker (dra holds no capability)."""
        try:
            return FeatureTable.from_wire(
                self.netns.call("ethtool_features", {"ifname": ifname}, timeout=5.0)
            )
        except BusError as exc:
            raise PrepareError(
                f"cannot check the claim's ethtool settings: the netns worker could not read the "
                f"features of {ifname}: {exc}; the kubelet will retry",
                retriable=True,
            ) from None

    def _addressing(self, args: argparse.Namespace) -> Addressing:
        leases = BusLeases(self.netns, float(getattr(args, "dhcp_timeout", 15.0)))
        url = getattr(args, "webhook_url", "") or ""
        if not url:
            return Addressing(leases=leases)
        webhook = WebhookProvider(url, timeout=float(getattr(args, "webhook_timeout", 10.0)))
        try:
            caps = webhook.health()
        except ProviderError as exc:
            # Not fatal: claims without a profile still prepare; those with one get the reason.
            log.error(
                "webhook provider unreachable at start; asking again at each prepare",
                extra={"error": exc.message},
            )
            return Addressing(leases=leases, profiles=webhook)
        log.info("webhook provider", extra={"url": url, **caps})
        return Addressing(
            leases=leases,
            profiles=webhook if caps["profileProvider"] else None,
            cloud=webhook if caps["cloudProvider"] else None,
        )

    def _detach(self, pod_uid: str, devices: list[str]) -> None:
        self.netns.call("detach", {"pod_uid": pod_uid, "devices": devices}, timeout=10.0)

    def _grant(self, claims: list[PreparedClaim], replace: bool) -> None:
        body = {
            "claims": [
                {
                    "uid": c.uid,
                    "pod_uids": list(c.pod_uids),
                    "devices": [
                        {
                            "device": d.device,
                            "ifname": d.ifname,
                            "config": d.config,
                            "rdma_device": d.rdma_device,
                            **({"share_id": d.share_id} if d.share_id else {}),
                        }
                        for d in c.devices
                        if not d.admin_access
                    ],
                }
                for c in claims
            ],
            "replace": replace,
        }
        self.netns.call("grant", body, timeout=10.0)

    def _sync_grants(self) -> None:
        """Push the whole prepared set to the worker at start, and again whenever it restarts (its
        attachments snapshot arrives), until it went through."""
        delays = Backoff(0.1, 5.0)
        while not self._sync_stop.is_set():
            self._sync_kick.wait()
            self._sync_kick.clear()
            try:
                done = self.driver.sync_grants()
            except BusError as exc:
                log.warning(
                    "cannot push the grants to the netns worker yet",
                    extra={"code": exc.code, "reason": exc.message},
                )
                done = False
            if not done:
                self._sync_kick.set()
                self._sync_stop.wait(delays.next())
            else:
                delays.reset()

    def push_grants(self) -> None:
        """Push the whole prepared set to the worker now (in the background, until it went through)."""
        self._sync_kick.set()

    def _unprepared(self, claim: PreparedClaim) -> None:
        self.status.clear(claim)
        self.health.kick()

    def _claim_of(self, claim_uid: str, pod_uid: str, device: str) -> PreparedClaim | None:
        claim = self.driver.get(claim_uid) if claim_uid else None
        return claim or self.driver.find(pod_uid, device)

    def _on_attachments(self, topic: str, body: dict[str, Any]) -> None:
        if isinstance(body.get("attachments"), list):  # a snapshot: the worker (re)started
            self.push_grants()
        self.attachments.on_message(topic, body)
        self.status.on_message(topic, body)
        items = body.get("attachments")
        for item in items if isinstance(items, list) else [body]:
            if isinstance(item, dict):
                self.driver.on_attachment(
                    self._claim_of(
                        str(item.get("claim_uid") or ""),
                        str(item.get("pod_uid") or ""),
                        str(item.get("device") or ""),
                    ),
                    item,
                )
        self.health.kick()
        if topic == "attachments" and body.get("state") == "restore_incomplete":
            claim = self._claim_of(
                str(body.get("claim_uid") or ""),
                str(body.get("pod_uid") or ""),
                str(body.get("device") or ""),
            )
            spec = from_attachment(body, (claim.namespace, claim.name, claim.uid) if claim else None)
            if spec is not None:
                self.events.record(spec)

    def _health_devices(self) -> dict[tuple[str, str], Where]:
        claims = self.driver.prepared()
        live = self._worker_links() if claims else {}
        out = {}
        for claim in claims:
            for d in claim.devices:
                where = None
                for pod_uid in claim.pod_uids:
                    link = live.get((pod_uid, d.device))
                    if link is not None:  # attached; the worker read the link in the pod netns
                        where = Where(str(link.get("pod_ifname") or d.ifname), link=link)
                        break
                for pod_uid in claim.pod_uids if where is None else ():
                    where = where or self.attachments.get(pod_uid, d.device)
                out[(d.pool, d.device)] = where or Where(d.ifname, self.host_netns)
        return out

    def _worker_links(self) -> dict[tuple[str, str], Mapping[str, Any]]:
        """The link state of every attached device, read by the netns worker in the pod netns
        (dra cannot enter them). Empty when the worker cannot be asked: then the attachments topic
        says where each device is, and health reports what can be seen from here."""
        try:
            res = self.netns.call("list", {}, timeout=self._list_timeout)
        except BusError as exc:
            if self._list_error != exc.code:
                log.warning(
                    "cannot ask the netns worker for link states; attached devices may show UNKNOWN",
                    extra={"code": exc.code, "reason": exc.message},
                )
            self._list_error = exc.code
            return {}
        self._list_error = ""
        out: dict[tuple[str, str], Mapping[str, Any]] = {}
        for a in res.get("attachments") or []:
            if isinstance(a, Mapping) and ("carrier" in a or "link_error" in a):
                out[(str(a.get("pod_uid") or ""), str(a.get("device") or ""))] = a
        return out

    def _health_details(self) -> dict[str, Any]:
        details = self.driver.health()
        state = self.registration.servicer.state
        details["registered"] = state.registered
        details["instance"] = self.instance
        # Ready: the kubelet registered us, so it can call prepare (the DRA socket serves before
        # the registration socket exists).
        details["ready"] = state.registered
        if not state.registered:
            details["not_ready"] = "not registered with the kubelet" + (
                f" (it refused: {state.error})" if state.error else " yet"
            )
        if self.checkpoint_rebuilt:
            details["checkpoint_rebuilt"] = self.checkpoint_rebuilt
        if self.kube.config_error:
            details["healthy"] = False
            details["api_client_error"] = self.kube.config_error
        return details

    def _plugin_state(self, _body: Mapping[str, Any], _ctx: Any) -> dict[str, Any]:
        state = self.registration.servicer.state
        return {
            "registered": state.registered,
            "registered_at": state.registered_at,
            "serving": self._serving,
        }

    def _rebuilt(self, claims: int) -> None:
        """The corrupt checkpoint was rebuilt from the API server: healthy again, with the history."""
        self.checkpoint_rebuilt = {
            **(self.checkpoint.corruption or {}),
            "claims": claims,
            "rebuilt_at": time.time(),
        }
        self.checkpoint.corruption = None

    def start(self, *, load: bool = True) -> None:
        """load=False: a standby instance (the owner lock is the other pod's dra's) that will run
        as --run-as reads the checkpoint, the other's uid's, after the switch (run())."""
        if load:
            self.driver.load()
        self.reconciler = ClaimReconciler(
            self.driver,
            self.kube,
            interval=self.reconcile_interval,
            rebuild=self.checkpoint.corruption is not None,
            on_rebuilt=self._rebuilt,
        )
        try:
            self.kube.api  # noqa: B018  (build the client now so a bad kubeconfig shows in ping at once)
        except PrepareError as exc:
            log.error(
                "no API server access; prepare will fail until it is fixed", extra={"reason": exc.message}
            )
        # The bus is served by one dra per node (dranet.instance); during a rolling update the
        # new pod's dra serves the kubelet at once and takes the bus over when the old one exits.
        if self.host.owner.held:
            self._serve_bus()
        else:
            self._bus_waiter = threading.Thread(target=self._take_over, name="dra-bus-standby", daemon=True)
            self._bus_waiter.start()
        if not self.host.settings.run_as:  # else once the uid is switched: the worker takes dra's
            self._sync_kick.set()  # grants from dra's uid only
        self._sync_thread = threading.Thread(target=self._sync_grants, name="dra-grants", daemon=True)
        self._sync_thread.start()
        for sub in self.subscribers:
            sub.start()
        self.status.start()
        self.events.start()
        self.health.start()
        self.plugin.start()
        self._serving = True
        self.registration.start()
        self.reconciler.start()

    def _take_over(self) -> None:
        """Standby: wait for the other instance's exit, then serve the bus. Binding it needs root
        (the bus dir is root's): a standby that switched to --run-as restarts instead (supervisord
        starts it again, and it binds as the active instance does)."""
        if not self.host.wait_for_turn():
            return
        if self.host.settings.run_as:
            log.info("the other dra exited; restarting to bind the bus as root")
            self.restart = True
            self.host.stop_event.set()
            return
        self._serve_bus()

    def _serve_bus(self) -> None:
        self.host.serve(
            {
                "pod_devices": self.driver.handle_pod_devices,
                "claims": self.driver.handle_claims,
                "plugin_state": self._plugin_state,
            },
            health=self._health_details,
        )

    def stop(self) -> None:
        self.host.stop_event.set()  # a standby bus waiter gives up
        if self._bus_waiter is not None:
            self._bus_waiter.join(5)
        if self.reconciler is not None:
            self.reconciler.close()
        self.registration.stop()
        self._serving = False
        self.plugin.stop()
        self.health.close()
        self.status.close()
        self.events.close()
        self._sync_stop.set()
        self._sync_kick.set()
        if self._sync_thread is not None:
            self._sync_thread.join(15)
        for sub in self.subscribers:
            sub.close()
        self.discovery.close()
        self.netns.close()


def run(args: argparse.Namespace) -> int:
    host = ServiceHost("dra", args)
    # Active: no other driver pod's dra on the node (dranet.instance). A standby one leaves the
    # checkpoint alone until it runs as the same uid as the active one: taking it back as root
    # would lock the active instance out of it.
    active = host.owner.try_acquire()
    if active:
        host.reclaim([host.settings.state_dir / "dra"])  # what a previous life wrote as --run-as
    cdi_dir = str(getattr(args, "cdi_dir", "") or "")
    if host.settings.run_as and cdi_dir:
        log.error(
            "cannot run as another uid with --cdi-dir: the runtime's CDI directory is root's and "
            "every prepare writes there; leave --run-as off (dra stays uid 0) or set --cdi-dir="
        )
        host.close()
        return 1
    try:
        service = DraService(host, args)
    except Exception as exc:
        log.error("cannot start: %s", exc, extra={"error": f"{type(exc).__name__}: {exc}"})
        host.close()
        return 1
    load_late = not active and bool(host.settings.run_as)
    service.start(load=not load_late)
    # The kubelet's sockets and the bus are bound: drop root, keeping the checkpoint writable.
    own = [service.checkpoint.dir] if active else []  # a standby's is the active one's already
    host.switch_user(own=own, clients=[service.netns, service.discovery])
    if load_late:
        service.driver.load()
    service.push_grants()
    host.stop_event.wait()
    service.stop()
    host.close()
    return EXIT_RESTART if service.restart else 0
