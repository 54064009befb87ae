"""A kubelet stand-in for pods on one node: DRA prepare, CRI sandbox, and the reverse.

DEVELOPMENT AND TEST TOOL. It plays the kubelet's part of a pod's life that matters to a network
driver, over the same wire protocols the kubelet uses:

1. plugin discovery: the registration socket in the plugin registry directory answers GetInfo
   (type DRAPlugin, our driver name, the DRA endpoint, the versions); we pick the first version in
   the plugin's order that we speak (v1, v1beta1) and send NotifyRegistrationStatus(true);
2. NodePrepareResources over the DRA socket for the pod's claims that have results for the driver
   and are not yet prepared (one call per pod, like the kubelet), before the sandbox;
3. CRI RunPodSandbox (the runtime calls the NRI plugin, which attaches the interfaces);
4. start_containers: CRI CreateContainer + StartContainer for each container of the pod spec, with
   the CDI device IDs of the claim requests the container uses (ContainerConfig.CDI_devices, as
   the kubelet passes them), those of its extended resources too (the requests
   pod.status.extendedResourceClaimStatus maps to it), and the spec's command and args; a
   container that fails to start is retried with the next attempt
   number after a back-off, as the kubelet does (ours is shorter: 0.5 s doubling to 4 s);
5. on removal: StopPodSandbox, RemovePodSandbox, then NodeUnprepareResources for the claims no
   other pod of this agent uses;
6. device health (watch_health): the DRAResourceHealth stream, with the kubelet's expiry rule
   (DeviceHealthCache): a device whose last report is older than its timeout reads Unknown;
7. start(): the kubelet's start and plugin watcher. It deletes all of the node's ResourceSlices
   (every driver), registers the driver's plugin whenever its registration socket appears (again
   after a plugin restart), and deletes the driver's slices on the node once no plugin has been
   connected for `wipe_delay` (the kubelet's defaultWipingDelay, 30 s).

Errors are typed (PrepareError, SandboxError) and carry the kubelet-like message.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from dranet._generated import (
    dra_health_v1alpha1_pb2,
    dra_health_v1alpha1_pb2_grpc,
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
)
from dranet._generated import pluginregistration_pb2 as reg_pb
from dranet._generated import pluginregistration_pb2_grpc as reg_grpc
from localcluster.cri import DEFAULT_IMAGE, CriClient, CriError, SandboxStatus
from localcluster.extended import container_request_names

log = logging.getLogger(__name__)

DEFAULT_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
PREPARE_TIMEOUT = 45.0  # the kubelet's DRA call timeout
DEFAULT_WIPING_DELAY = 30.0  # the kubelet's defaultWipingDelay (cm/dra/plugin/dra_plugin_manager.go)
DEFAULT_HEALTH_TIMEOUT = 30.0  # the kubelet's DefaultHealthTimeout (pkg/kubelet/cm/dra/healthinfo.go)
HEALTH_SERVICE = "v1alpha1.DRAResourceHealth"
UNKNOWN, HEALTHY, UNHEALTHY = "Unknown", "Healthy", "Unhealthy"
# Our versions, by the name the plugin advertises -> (pb2 module, grpc module).
_VERSIONS: dict[str, tuple[Any, Any]] = {
    "v1.DRAPlugin": (dra_v1_pb2, dra_v1_pb2_grpc),
    "v1beta1.DRAPlugin": (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc),
}


class NodeAgentError(Exception):
    """Base for the node agent's errors."""


class PluginNotFound(NodeAgentError):
    """No registration socket of the driver answered in time."""


class PrepareError(NodeAgentError):
    """NodePrepareResources/NodeUnprepareResources failed (gRPC error or a per-claim error)."""

    def __init__(self, message: str, claim_errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.claim_errors = dict(claim_errors or {})


class ContainerError(NodeAgentError):
    """A container of the pod did not start before the deadline; `errors` holds every attempt's."""

    def __init__(self, message: str, errors: Sequence[str]) -> None:
        super().__init__(message)
        self.errors = list(errors)


class SandboxError(NodeAgentError):
    """The runtime refused or failed the sandbox (e.g. the NRI plugin returned an error)."""

    def __init__(self, message: str, cri: CriError | None = None, run: PodRun | None = None) -> None:
        super().__init__(message)
        self.cri = cri
        self.run = run  # the pod as far as it got (claims prepared): remove_pod(run) gives up on it


@dataclass(frozen=True)
class ClaimRef:
    namespace: str
    uid: str
    name: str

    @staticmethod
    def of(claim: Mapping[str, Any]) -> ClaimRef:
        m = claim.get("metadata") or {}
        return ClaimRef(m.get("namespace", "default"), m.get("uid", ""), m.get("name", ""))


@dataclass(frozen=True)
class PluginEndpoint:
    registration_socket: str
    endpoint: str
    version: str  # e.g. "v1.DRAPlugin"
    supported: tuple[str, ...]
    # (inode, mtime ns) of the registration socket: a new file is a new plugin, registered again
    socket_id: tuple[int, int] = (0, 0)


@dataclass
class PodRun:
    """A pod this agent started."""

    uid: str
    name: str
    namespace: str
    claims: list[ClaimRef]
    prepared: dict[str, list[dict[str, Any]]]  # claim uid -> devices from the prepare answer
    sandbox_id: str = ""
    status: SandboxStatus | None = None
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds, for the demo's output
    containers: dict[str, str] = field(default_factory=dict)  # container name -> running container id
    attempts: dict[str, int] = field(default_factory=dict)  # container name -> attempts made


def claims_for_driver(claims: Iterable[Mapping[str, Any]], driver: str) -> list[Mapping[str, Any]]:
    """The claims whose allocation has results for driver (the kubelet asks each driver for its own)."""
    out = []
    for c in claims:
        results = (((c.get("status") or {}).get("allocation") or {}).get("devices") or {}).get(
            "results"
        ) or []
        if any(r.get("driver") == driver for r in results):
            out.append(c)
    return out


class DeviceHealthCache:
    """The kubelet's view of device health (healthinfo.go): each device's last report is stamped
    with the time it arrived; once its timeout (health_check_timeout_seconds, or the default when
    that is <= 0) has passed without a new report, the device reads Unknown. A device missing from a
    later report keeps its old stamp, so it too turns Unknown when that expires. Thread-safe."""

    def __init__(self, default_timeout: float = DEFAULT_HEALTH_TIMEOUT) -> None:
        self.default_timeout = default_timeout
        self._lock = threading.Lock()
        # (pool, device) -> (health name, message, arrival on the monotonic clock, timeout seconds)
        self._last: dict[tuple[str, str], tuple[str, str, float, float]] = {}
        self.messages = 0

    def record(self, response: Any, now: float | None = None) -> None:
        """One NodeWatchResourcesResponse, as it arrives."""
        now = time.monotonic() if now is None else now
        names = {0: UNKNOWN, 1: HEALTHY, 2: UNHEALTHY}
        with self._lock:
            self.messages += 1
            for d in response.devices:
                timeout = float(d.health_check_timeout_seconds) or self.default_timeout
                key = (d.device.pool_name, d.device.device_name)
                self._last[key] = (names.get(int(d.health), UNKNOWN), d.message[:1024], now, timeout)

    def get(self, pool: str, device: str, now: float | None = None) -> tuple[str, str]:
        """(health, message) as the kubelet would put it in the pod's status now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._last.get((pool, device))
        if last is None:
            return UNKNOWN, "no health reported"
        health, message, arrived, timeout = last
        if now - arrived > timeout:
            return UNKNOWN, f"last health report is {now - arrived:.1f}s old (timeout {timeout:g}s)"
        return health, message


class NodeAgent:
    """The kubelet's side of DRA and CRI for pods on one node.

    registry_dir: the kubelet plugin registry directory the dra service registers in; cri_socket:
    the runtime's CRI socket. Thread-safe: pods may be started and removed concurrently.
    """

    def __init__(
        self,
        registry_dir: str | Path,
        cri_socket: str,
        *,
        driver_name: str = "dra.net",
        log_dir: str = "/tmp",
        prepare_timeout: float = PREPARE_TIMEOUT,
        health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
        api_client: Any = None,
        node_name: str = "",
        wipe_delay: float = DEFAULT_WIPING_DELAY,
        host_path: Callable[[str], str] | None = None,
    ) -> None:
        """health_timeout, wipe_delay: the kubelet's timeouts (tests shorten them). api_client (a
        kubernetes ApiClient) and node_name: for start()'s ResourceSlice wiping. host_path: where a
        path in the plugin's container (its endpoint) is on this machine."""
        self.host_path = host_path or (lambda p: p)
        self.registry_dir = Path(registry_dir)
        self.api_client = api_client
        self.node_name = node_name
        self.wipe_delay = wipe_delay
        self.wipes: list[str] = []  # the field selectors of the wipes done, for tests
        self._register_lock = threading.Lock()
        self._seen_sockets: set[tuple[int, int]] = set()  # registration sockets asked already
        self._short_dir: Path | None = None  # symlinks to socket paths too long to dial (_target)
        self._short_links: dict[str, Path] = {}
        self._links_lock = threading.Lock()
        self._watch_thread: threading.Thread | None = None
        self.health = DeviceHealthCache(health_timeout)
        self._health_stop = threading.Event()
        self._health_thread: threading.Thread | None = None
        self._health_stream: Any = None
        self.driver_name = driver_name
        self.prepare_timeout = prepare_timeout
        self.log_dir = log_dir
        self.cri = CriClient(cri_socket)
        self._lock = threading.Lock()
        self._plugin: PluginEndpoint | None = None
        self._channel: grpc.Channel | None = None
        self._stub: Any = None
        self._pb: Any = None
        self._users: dict[str, set[str]] = {}  # prepared claim uid -> pod uids using it (kubelet checkpoint)
        self._devices: dict[str, list[dict[str, Any]]] = {}  # prepared claim uid -> devices (with CDI IDs)

    # ------------------------------------------------------------ plugin registration

    def _target(self, path: str | Path) -> str:
        """The gRPC target for a unix socket. A path longer than sun_path allows (108 bytes; the
        stand-in's kubelet root is deep under a test directory, and rolling-update socket names
        carry a 36-character pod UID) is reached through a short symlink: connect() follows it."""
        if len(str(path).encode()) < 100:
            return f"unix://{path}"
        with self._links_lock:
            link = self._short_links.get(str(path))
            if link is None:
                if self._short_dir is None:
                    self._short_dir = Path(tempfile.mkdtemp(prefix="na-"))
                link = self._short_dir / f"{len(self._short_links)}.sock"
                link.symlink_to(path)
                self._short_links[str(path)] = link
        return f"unix://{link}"

    def register(self, timeout: float = 30.0) -> PluginEndpoint:
        """Find the driver's registration socket, GetInfo, pick a version, notify; like the kubelet.
        Returns the plugin at once when it is registered and its socket is the same."""
        deadline = time.monotonic() + timeout
        while True:
            found, last = self._scan()
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise PluginNotFound(
                    f"no DRA plugin {self.driver_name!r} registered in {self.registry_dir} "
                    f"within {timeout:.0f}s "
                    f"({last}); is the dra service running with --kubelet-registry-dir={self.registry_dir}?"
                )
            time.sleep(0.1)

    def _scan(self, *, newer: bool = False) -> tuple[PluginEndpoint | None, str]:
        """(the registered plugin, or None and why not): register the plugin when its socket is new.

        newer: also look for a socket that appeared after the current plugin's and switch to it,
        as the kubelet (1.33+) uses the most recently registered instance of a driver while two
        run side by side in a rolling update (each registers under a name with its pod UID)."""
        with self._register_lock:
            current = self._plugin
            alive = current is not None and _socket_id(Path(current.registration_socket)) == current.socket_id
            if alive and not newer:
                return current, ""
            last = "no socket yet"
            for sock in sorted(self.registry_dir.glob("*.sock")) if self.registry_dir.is_dir() else []:
                if sock.name.startswith(".") or (alive and _socket_id(sock) in self._seen_sockets):
                    continue
                try:
                    found = self._try_register(sock)
                except grpc.RpcError as exc:
                    last = f"{sock}: {exc.code().name} {exc.details()}"
                    continue
                finally:
                    self._seen_sockets.add(_socket_id(sock))
                if found is not None:
                    return found, ""
                last = f"{sock}: not the {self.driver_name} DRA plugin"
            return (current, "") if alive else (None, last)

    def _try_register(self, sock: Path) -> PluginEndpoint | None:
        socket_id = _socket_id(sock)
        with grpc.insecure_channel(self._target(sock)) as ch:
            stub = reg_grpc.RegistrationStub(ch)
            info = stub.GetInfo(reg_pb.InfoRequest(), timeout=1.0)  # the kubelet allows 1 s
            if info.type != "DRAPlugin" or info.name != self.driver_name:
                return None
            version = next((v for v in info.supported_versions if v in _VERSIONS), None)
            if version is None:
                stub.NotifyRegistrationStatus(
                    reg_pb.RegistrationStatus(
                        plugin_registered=False,
                        error=f"none of the plugin's versions {list(info.supported_versions)} is supported",
                    ),
                    timeout=5.0,
                )
                raise PluginNotFound(f"{sock}: no supported DRA version in {list(info.supported_versions)}")
            endpoint = self.host_path(info.endpoint) if info.endpoint else str(sock)
            plugin = PluginEndpoint(str(sock), endpoint, version, tuple(info.supported_versions), socket_id)
            self._connect(plugin)
            stub.NotifyRegistrationStatus(reg_pb.RegistrationStatus(plugin_registered=True), timeout=5.0)
        log.info("DRA plugin registered", extra={"endpoint": endpoint, "version": version})
        return plugin

    def _connect(self, plugin: PluginEndpoint) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._plugin = plugin
            self._channel = grpc.insecure_channel(self._target(plugin.endpoint))
            pb2, pb2_grpc = _VERSIONS[plugin.version]
            self._pb = pb2
            self._stub = pb2_grpc.DRAPluginStub(self._channel)

    @property
    def plugin(self) -> PluginEndpoint | None:
        return self._plugin

    # ------------------------------------------------------------ kubelet start, plugin watcher, wiping

    def start(self) -> None:
        """Start as the kubelet does: wipe the node's ResourceSlices, then watch for the plugin."""
        if self._watch_thread is not None:
            return
        self.wipe_slices(all_drivers=True)
        self._watch_thread = threading.Thread(target=self._watch_plugin, name="plugin-watch", daemon=True)
        self._watch_thread.start()

    def connected(self, *, probe: bool = True) -> bool:
        """A plugin of the driver is registered, its registration socket is the one it registered
        and (probe) answers GetInfo."""
        plugin = self._plugin
        if plugin is None or _socket_id(Path(plugin.registration_socket)) != plugin.socket_id:
            return False
        if not probe:
            return True
        try:
            with grpc.insecure_channel(self._target(plugin.registration_socket)) as ch:
                reg_grpc.RegistrationStub(ch).GetInfo(reg_pb.InfoRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
        return True

    def wipe_slices(self, *, all_drivers: bool = False) -> None:
        """Delete the node's ResourceSlices: every driver's (kubelet start) or only ours."""
        if self.api_client is None or not self.node_name:
            return
        from kubernetes import client  # only the start and the watcher need it

        selector = f"spec.nodeName={self.node_name}"
        if not all_drivers:
            selector += f",spec.driver={self.driver_name}"
        client.ResourceV1Api(self.api_client).delete_collection_resource_slice(field_selector=selector)
        self.wipes.append(selector)
        log.info("ResourceSlices wiped", extra={"field_selector": selector})

    def _watch_plugin(self) -> None:
        gone_since: float | None = None
        wiped = False
        probed = 0.0
        while not self._health_stop.wait(0.2):
            # The socket file is looked at every round; the plugin is asked (a gRPC call) once a
            # second, enough to notice a killed process that left its socket behind.
            probe = time.monotonic() - probed >= 1.0
            probed = time.monotonic() if probe else probed
            alive = self.connected(probe=probe)
            if alive and probe:  # a newer instance of the driver (rolling update) takes over
                with contextlib.suppress(NodeAgentError, OSError):
                    self._scan(newer=True)
            if not alive:
                try:
                    alive = self._scan()[0] is not None and self.connected()
                except NodeAgentError as exc:
                    log.warning("plugin registration failed", extra={"error": str(exc)})
            if alive:
                gone_since, wiped = None, False
                continue
            now = time.monotonic()
            gone_since = now if gone_since is None else gone_since
            if not wiped and now - gone_since >= self.wipe_delay:
                try:
                    self.wipe_slices()
                    wiped = True
                except Exception as exc:  # the API server may be down: try again next round
                    log.warning("wiping ResourceSlices failed", extra={"error": str(exc)})

    # ------------------------------------------------------------ DRA calls

    def _dra_call(self, method: str, claims: Sequence[ClaimRef], timeout: float | None) -> Any:
        if self._stub is None:
            self.register()
        pb = self._pb
        req_type = (
            pb.NodePrepareResourcesRequest
            if method == "NodePrepareResources"
            else (pb.NodeUnprepareResourcesRequest)
        )
        request = req_type(claims=[pb.Claim(namespace=c.namespace, uid=c.uid, name=c.name) for c in claims])
        # wait_for_ready: a dra service restarting right now is waited for, within the kubelet's timeout.
        try:
            return getattr(self._stub, method)(
                request, timeout=timeout or self.prepare_timeout, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            raise PrepareError(f"{method}: {exc.code().name}: {exc.details()}") from None

    def prepare(
        self, claims: Sequence[ClaimRef], timeout: float | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """NodePrepareResources; returns claim uid -> devices. Raises PrepareError like the kubelet:
        a per-claim error, a missing entry, or an entry for a claim it did not ask about."""
        if not claims:
            return {}
        resp = self._dra_call("NodePrepareResources", claims, timeout)
        asked = {c.uid: c for c in claims}
        errors: dict[str, str] = {}
        out: dict[str, list[dict[str, Any]]] = {}
        for uid, result in resp.claims.items():
            if uid not in asked:
                raise PrepareError(f"NodePrepareResources returned result for unknown claim UID {uid}")
            if result.error:
                errors[uid] = result.error
                continue
            out[uid] = [
                {
                    "requests": list(d.request_names),
                    "pool": d.pool_name,
                    "device": d.device_name,
                    "cdi_device_ids": list(d.cdi_device_ids),
                }
                for d in result.devices
            ]
        if errors:
            msg = "; ".join(
                f"NodePrepareResources failed for ResourceClaim {asked[u].name}: {e}"
                for u, e in errors.items()
            )
            raise PrepareError(msg, errors)
        missing = [c.name for u, c in asked.items() if u not in out]
        if missing:
            raise PrepareError(
                f"NodePrepareResources skipped {len(missing)} ResourceClaims: {', '.join(missing)}"
            )
        return out

    def unprepare(self, claims: Sequence[ClaimRef], timeout: float | None = None) -> None:
        if not claims:
            return
        resp = self._dra_call("NodeUnprepareResources", claims, timeout)
        errors = {u: r.error for u, r in resp.claims.items() if r.error}
        missing = [c.name for c in claims if c.uid not in resp.claims]
        if errors or missing:
            raise PrepareError(f"NodeUnprepareResources: errors {errors}, missing {missing}", errors)

    # ------------------------------------------------------------ device health

    def watch_health(self) -> None:
        """Keep a DRAResourceHealth stream open to the registered plugin (reopened when it ends),
        as the kubelet does for a plugin that advertises the health service; see self.health."""
        if self._health_thread is None:
            self._health_thread = threading.Thread(target=self._watch_health, name="health", daemon=True)
            self._health_thread.start()

    def device_health(self, pool: str, device: str) -> tuple[str, str]:
        return self.health.get(pool, device)

    def _watch_health(self) -> None:
        while not self._health_stop.is_set():
            plugin = self._plugin
            if plugin is None or HEALTH_SERVICE not in plugin.supported:
                self._health_stop.wait(0.1)
                continue
            try:
                with grpc.insecure_channel(self._target(plugin.endpoint)) as ch:
                    stub = dra_health_v1alpha1_pb2_grpc.DRAResourceHealthStub(ch)
                    stream = stub.NodeWatchResources(dra_health_v1alpha1_pb2.NodeWatchResourcesRequest())
                    self._health_stream = stream  # close() cancels it
                    if self._health_stop.is_set():
                        stream.cancel()
                    for response in stream:
                        self.health.record(response)
            except grpc.RpcError as exc:
                if not self._health_stop.is_set():
                    log.info("health stream ended; reopening", extra={"code": exc.code().name})
            self._health_stop.wait(0.2)

    # ------------------------------------------------------------ pods

    def start_pod(
        self, pod: Mapping[str, Any], claims: Iterable[Mapping[str, Any]], attempt: int = 0
    ) -> PodRun:
        """Prepare the pod's claims of our driver, then run its sandbox through CRI.

        On a sandbox failure the claims stay prepared (the kubelet retries the sandbox with the next
        `attempt`, part of the sandbox's name; call remove_pod to give up, which unprepares)."""
        meta = pod.get("metadata") or {}
        ours = [ClaimRef.of(c) for c in claims_for_driver(claims, self.driver_name)]
        run = PodRun(
            uid=meta.get("uid", ""),
            name=meta.get("name", ""),
            namespace=meta.get("namespace", "default"),
            claims=ours,
            prepared={},
        )
        with self._lock:
            todo = [c for c in ours if c.uid not in self._users]
            for c in ours:
                self._users.setdefault(c.uid, set()).add(run.uid)
        t0 = time.monotonic()
        try:
            run.prepared = self.prepare(todo)
        except Exception:
            self._forget(run)
            raise
        run.timings["prepare"] = time.monotonic() - t0
        with self._lock:
            self._devices.update(run.prepared)
        t0 = time.monotonic()
        try:
            run.sandbox_id = self.cri.run_pod_sandbox(
                run.name, uid=run.uid, namespace=run.namespace, log_dir=self.log_dir, attempt=attempt
            )
        except CriError as exc:
            raise SandboxError(
                f"RunPodSandbox for pod {run.namespace}/{run.name}: {exc.details}", exc, run
            ) from None
        finally:
            run.timings["run_pod_sandbox"] = time.monotonic() - t0
        run.status = self.cri.status(run.sandbox_id)
        return run

    def cdi_devices(self, run: PodRun, pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
        """The CDI IDs the kubelet gives a container: those of the devices of each claim request
        the container lists in resources.claims (all requests of the claim when none is named)."""
        spec = pod.get("spec") or {}
        names = {rc.get("name"): rc.get("resourceClaimName") for rc in spec.get("resourceClaims") or []}
        for st in (pod.get("status") or {}).get("resourceClaimStatuses") or []:  # from templates
            names.setdefault(st.get("name"), st.get("resourceClaimName"))
        uids = {c.name: c.uid for c in run.claims}
        out: list[str] = []
        for use in (container.get("resources") or {}).get("claims") or []:
            uid = uids.get(names.get(use.get("name")) or "")
            with self._lock:
                devices = list(self._devices.get(uid or "", []))
            for d in devices:
                if not use.get("request") or not d["requests"] or use["request"] in d["requests"]:
                    out.extend(i for i in d["cdi_device_ids"] if i not in out)
        # extended resources backed by DRA: the requests pod.status.extendedResourceClaimStatus maps
        # to this container, in the claim the scheduler made
        special, requests = container_request_names(pod, str(container.get("name") or ""))
        with self._lock:
            devices = list(self._devices.get(uids.get(special) or "", [])) if special else []
        for d in devices:
            if set(requests) & set(d["requests"]):
                out.extend(i for i in d["cdi_device_ids"] if i not in out)
        return out

    def start_containers(
        self,
        run: PodRun,
        pod: Mapping[str, Any],
        *,
        timeout: float = 60.0,
        backoff: float = 0.5,
        max_backoff: float = 4.0,
    ) -> dict[str, str]:
        """Create and start every container of the pod spec not yet running, retrying a failed one
        with the next attempt number after a back-off until `timeout`, like the kubelet's sync loop.
        Returns container name -> id; raises ContainerError with every attempt's error."""
        deadline = time.monotonic() + timeout
        containers = (pod.get("spec") or {}).get("containers") or []
        errors: list[str] = []
        t0 = time.monotonic()
        for container in containers:
            name = str(container.get("name") or "main")
            if name in run.containers:
                continue
            cdi = self.cdi_devices(run, pod, container)
            delay = backoff
            while True:
                attempt = run.attempts.get(name, 0)
                run.attempts[name] = attempt + 1
                try:
                    run.containers[name] = self._start_container(run, name, container, attempt, cdi)
                    break
                except CriError as exc:
                    errors.append(f"{name} attempt {attempt}: {exc.call}: {exc.details}")
                    log.info("container start failed; retrying", extra={"error": errors[-1]})
                if time.monotonic() + delay > deadline:
                    raise ContainerError(
                        f"container {name} of pod {run.namespace}/{run.name} did not start within "
                        f"{timeout:.0f}s: {errors[-1]}",
                        errors,
                    )
                time.sleep(delay)
                delay = min(delay * 2, max_backoff)
        run.timings["start_containers"] = time.monotonic() - t0
        return dict(run.containers)

    def _start_container(
        self, run: PodRun, name: str, container: Mapping[str, Any], attempt: int, cdi: Sequence[str]
    ) -> str:
        image = str(container.get("image") or DEFAULT_IMAGE)
        cid = self.cri.create_container(
            run.sandbox_id,
            name,
            image,
            attempt=attempt,
            cdi_devices=cdi,
            command=container.get("command") or (),
            args=container.get("args") or (),
        )
        try:
            self.cri.start_container(cid)
        except CriError:
            # the kubelet leaves the dead attempt to its garbage collector; we remove it at once
            with contextlib.suppress(CriError):
                self.cri.remove_container(cid)
            raise
        return cid

    def _forget(self, run: PodRun) -> list[ClaimRef]:
        """Drop the pod from the users of its claims; returns the claims nobody uses any more."""
        free = []
        with self._lock:
            for c in run.claims:
                users = self._users.get(c.uid)
                if users is None:
                    continue
                users.discard(run.uid)
                if not users:
                    del self._users[c.uid]
                    self._devices.pop(c.uid, None)
                    free.append(c)
        return free

    def remove_pod(self, run: PodRun) -> None:
        """StopPodSandbox, RemovePodSandbox, then NodeUnprepareResources (kubelet order)."""
        t0 = time.monotonic()
        if run.sandbox_id:
            self.cri.stop_pod_sandbox(run.sandbox_id)
            run.timings["stop_pod_sandbox"] = time.monotonic() - t0
            self.cri.remove_pod_sandbox(run.sandbox_id)
            run.sandbox_id = ""  # a retry of remove_pod goes straight to unprepare
        t0 = time.monotonic()
        free = self._forget(run)
        try:
            self.unprepare(free)
        except Exception:
            with self._lock:  # still prepared: a retry unprepares them again, as the kubelet does
                for c in free:
                    self._users.setdefault(c.uid, set()).add(run.uid)
            raise
        run.timings["unprepare"] = time.monotonic() - t0

    def close(self) -> None:
        self._health_stop.set()  # also stops the plugin watcher
        if self._watch_thread is not None:
            self._watch_thread.join(5)
        if self._health_stream is not None:
            self._health_stream.cancel()
        if self._health_thread is not None:
            self._health_thread.join(5)
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
                self._stub = None
        self.cri.close()
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)


def _socket_id(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_ino, st.st_mtime_ns)
