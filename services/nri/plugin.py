"""The NRI plugin's lifecycle: connect, register, configure, synchronize, serve events, reconnect.

The runtime drops a plugin whose connection breaks or who misses a deadline, and never calls it
back; so whenever the connection closes we connect again, with backoff, for as long as we run.
Wire messages are converted to handlers.PodInfo here; the handlers never see protobuf.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from dranet.services.nri import framing
from dranet.services.nri.connection import Connection, ConnectionClosed
from dranet.services.nri.framing import TtrpcError
from dranet.services.nri.handlers import PodHandlers, PodInfo, SandboxError

from dranet._generated import nri_pb2
from dranet.backoff import Backoff

log = logging.getLogger(__name__)

RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
EV = nri_pb2.Event
# Exactly the events we handle. Bit = 1 << (event - 1); all below 0x400, so valid on every NRI version.
SUBSCRIBED_EVENTS = (EV.RUN_POD_SANDBOX, EV.STOP_POD_SANDBOX, EV.REMOVE_POD_SANDBOX, EV.CREATE_CONTAINER)
EVENT_MASK = sum(1 << (e - 1) for e in SUBSCRIBED_EVENTS)
RDMA_FILE_MODE = 0o666  # the runtime derives the cgroup rule "rw" from these permission bits


def valid_index(index: str) -> bool:
    return len(index) == 2 and index.isdigit()


def pod_info(pod: nri_pb2.PodSandbox) -> PodInfo:
    netns = ""
    for ns in pod.linux.namespaces:
        if ns.type == "network":
            netns = ns.path
            break
    return PodInfo(
        uid=pod.uid, name=pod.name, namespace=pod.namespace, sandbox_id=pod.id, netns=netns, pid=pod.pid
    )


@dataclass
class PluginOptions:
    socket_path: str = "/var/run/nri/nri.sock"
    name: str = "dranet"
    index: str = "00"
    registration_timeout: float = 5.0  # our wait for the RegisterPlugin reply
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    max_frame_payload: int = framing.MAX_FRAME_PAYLOAD


class NriPlugin:
    def __init__(
        self,
        handlers: PodHandlers,
        options: PluginOptions | None = None,
        *,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.handlers = handlers
        self.opts = options or PluginOptions()
        if not valid_index(self.opts.index):
            raise ValueError(f"--plugin-index must be two digits (00-99), got {self.opts.index!r}")
        if not self.opts.name:
            raise ValueError("--plugin-name must not be empty")
        self._on_state = on_state
        self.connected = threading.Event()  # registered and configured
        self.synchronized = threading.Event()
        self.runtime_name = ""
        self.runtime_version = ""
        self.connections = 0  # successful registrations, for status and tests
        self._conn: Connection | None = None
        self._sync_pods: list[PodInfo] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="nri-plugin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.close("plugin stopping")
        if self._thread is not None:
            self._thread.join(5)

    def run(self) -> None:
        """Connect and serve until stop(); reconnect with backoff whenever the connection ends."""
        backoff = Backoff(self.opts.backoff_initial, self.opts.backoff_max)
        while not self._stop.is_set():
            served = self._serve_once()
            if self._stop.is_set():
                break
            if served:
                backoff.reset()
            self._stop.wait(backoff.next())

    def _state(self, state: str) -> None:
        if self._on_state:
            self._on_state(state)

    def _serve_once(self) -> bool:
        """One connection's life. True if we were registered (the next try starts fast again)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.opts.socket_path)
        except OSError as exc:
            sock.close()
            log.debug("NRI socket not reachable", extra={"socket": self.opts.socket_path, "reason": str(exc)})
            return False
        conn = Connection(sock, self._handle, max_frame_payload=self.opts.max_frame_payload)
        self._conn = conn
        self._sync_pods = []
        self.synchronized.clear()
        conn.start()
        req = nri_pb2.RegisterPluginRequest(plugin_name=self.opts.name, plugin_idx=self.opts.index)
        try:
            conn.call(
                RUNTIME_SERVICE, "RegisterPlugin", req.SerializeToString(), self.opts.registration_timeout
            )
        except (TtrpcError, TimeoutError, ConnectionClosed) as exc:
            log.warning(
                "NRI registration failed", extra={"socket": self.opts.socket_path, "reason": str(exc)}
            )
            conn.close(f"registration failed: {exc}")
            self._conn = None
            return False
        self.connections += 1
        log.info(
            "registered with the runtime",
            extra={"plugin": f"{self.opts.index}-{self.opts.name}", "socket": self.opts.socket_path},
        )
        self._state("registered")
        while not conn.wait_closed(0.5):
            if self._stop.is_set():
                conn.close("plugin stopping")
        self.connected.clear()
        self.synchronized.clear()
        self._conn = None
        log.warning("NRI connection closed; reconnecting", extra={"reason": conn.close_reason})
        self._state("disconnected")
        return True

    # ------------------------------------------------------------ requests from the runtime

    def _handle(self, service: str, method: str, payload: bytes) -> bytes:
        if service != PLUGIN_SERVICE:
            raise TtrpcError(framing.CODE_UNIMPLEMENTED, f"service {service}")
        fn = getattr(self, f"_on_{method}", None)
        if fn is None:
            raise TtrpcError(framing.CODE_UNIMPLEMENTED, f"method {method}")
        try:
            return fn(payload)  # type: ignore[no-any-return]
        except SandboxError as exc:
            raise TtrpcError(framing.CODE_UNKNOWN, str(exc)) from None

    def _on_Configure(self, payload: bytes) -> bytes:
        req = nri_pb2.ConfigureRequest.FromString(payload)
        self.runtime_name, self.runtime_version = req.runtime_name, req.runtime_version
        self.handlers.set_request_timeout(req.request_timeout / 1000.0)
        self.connected.set()
        log.info(
            "configured",
            extra={
                "runtime": f"{req.runtime_name} {req.runtime_version}",
                "request_timeout_ms": req.request_timeout,
                "registration_timeout_ms": req.registration_timeout,
                "events": EVENT_MASK,
            },
        )
        return nri_pb2.ConfigureResponse(events=EVENT_MASK).SerializeToString()

    def _on_Synchronize(self, payload: bytes) -> bytes:
        # Large states arrive in parts: answer more=true to each part, act on the last one.
        req = nri_pb2.SynchronizeRequest.FromString(payload)
        self._sync_pods.extend(pod_info(p) for p in req.pods)
        if not req.more:
            pods, self._sync_pods = self._sync_pods, []
            log.info("synchronize", extra={"pods": len(pods), "containers": len(req.containers)})
            self.handlers.synchronize(pods)
            self.synchronized.set()
            self._state("synchronized")
        return nri_pb2.SynchronizeResponse(more=req.more).SerializeToString()

    def _on_Shutdown(self, payload: bytes) -> bytes:
        return nri_pb2.Empty().SerializeToString()

    def _on_StateChange(self, payload: bytes) -> bytes:
        ev = nri_pb2.StateChangeEvent.FromString(payload)
        pod = pod_info(ev.pod)
        if ev.event == EV.RUN_POD_SANDBOX:
            self.handlers.run_pod_sandbox(pod)
        elif ev.event == EV.STOP_POD_SANDBOX:
            self.handlers.stop_pod_sandbox(pod)
        elif ev.event == EV.REMOVE_POD_SANDBOX:
            self.handlers.remove_pod_sandbox(pod)
        return nri_pb2.Empty().SerializeToString()

    # NRI v0.12 runtimes call dedicated methods first (older ones use StateChange).
    def _on_RunPodSandbox(self, payload: bytes) -> bytes:
        self.handlers.run_pod_sandbox(pod_info(nri_pb2.RunPodSandboxRequest.FromString(payload).pod))
        return nri_pb2.RunPodSandboxResponse().SerializeToString()

    def _on_StopPodSandbox(self, payload: bytes) -> bytes:
        self.handlers.stop_pod_sandbox(pod_info(nri_pb2.StopPodSandboxRequest.FromString(payload).pod))
        return nri_pb2.StopPodSandboxResponse().SerializeToString()

    def _on_RemovePodSandbox(self, payload: bytes) -> bytes:
        self.handlers.remove_pod_sandbox(pod_info(nri_pb2.RemovePodSandboxRequest.FromString(payload).pod))
        return nri_pb2.RemovePodSandboxResponse().SerializeToString()

    def _on_CreateContainer(self, payload: bytes) -> bytes:
        req = nri_pb2.CreateContainerRequest.FromString(payload)
        existing = frozenset(d.path for d in req.container.linux.devices)
        devices = self.handlers.create_container(pod_info(req.pod), existing)
        resp = nri_pb2.CreateContainerResponse()
        for d in devices:
            ld = resp.adjust.linux.devices.add(path=d.path, type=d.type, major=d.major, minor=d.minor)
            ld.file_mode.value = RDMA_FILE_MODE
            ld.uid.value = 0
            ld.gid.value = 0
        return resp.SerializeToString()
