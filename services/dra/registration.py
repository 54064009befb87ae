"""The kubelet plugin registration socket (pluginregistration v1).

The kubelet watches its plugin registry directory; a socket appearing there is dialled and asked
GetInfo (within 1 s: answer from memory only), then told the outcome with NotifyRegistrationStatus.
Removing the socket is what tells the kubelet the plugin is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from dranet._generated import pluginregistration_pb2 as pb
from dranet._generated import pluginregistration_pb2_grpc as pb_grpc

from .sockets import bind_unix, remove_socket

log = logging.getLogger(__name__)

PLUGIN_TYPE = "DRAPlugin"
DRA_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")  # v1 first: a 1.34+ kubelet takes the first it knows
HEALTH_VERSION = "v1alpha1.DRAResourceHealth"


@dataclass
class RegistrationState:
    registered: bool = False
    error: str = ""
    notifications: int = 0
    registered_at: float = 0.0  # unix time of the kubelet's last successful registration; 0: never


class RegistrationServicer(pb_grpc.RegistrationServicer):
    def __init__(self, driver_name: str, endpoint: str, versions: Sequence[str]) -> None:
        self.info = pb.PluginInfo(
            type=PLUGIN_TYPE, name=driver_name, endpoint=endpoint, supported_versions=list(versions)
        )
        self.state = RegistrationState()
        self.changed = threading.Condition()

    def GetInfo(self, request: pb.InfoRequest, context: Any) -> pb.PluginInfo:
        return self.info

    def NotifyRegistrationStatus(
        self, request: pb.RegistrationStatus, context: Any
    ) -> pb.RegistrationStatusResponse:
        with self.changed:
            self.state.registered = request.plugin_registered
            self.state.error = request.error
            self.state.notifications += 1
            if request.plugin_registered:
                self.state.registered_at = time.time()
            self.changed.notify_all()
        if request.plugin_registered:
            log.info("registered with the kubelet", extra={"endpoint": self.info.endpoint})
        else:
            log.error(
                "the kubelet refused the registration; it retries on its own",
                extra={"error": request.error, "versions": list(self.info.supported_versions)},
            )
        return pb.RegistrationStatusResponse()

    def wait_registered(self, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.state.registered, timeout)


class RegistrationServer:
    """The registration gRPC server on <registry dir>/<socket name>."""

    def __init__(self, socket_path: Path, servicer: RegistrationServicer) -> None:
        self.path = socket_path
        self.servicer = servicer
        self._server: grpc.Server | None = None

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="dra-reg"))
        pb_grpc.add_RegistrationServicer_to_server(self.servicer, server)
        bind_unix(server, self.path)
        server.start()
        self._server = server
        log.info("registration socket ready", extra={"socket": str(self.path)})

    def stop(self, grace: float = 1.0) -> None:
        # Remove the file first: that is the kubelet's signal that we are gone.
        remove_socket(self.path)
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
