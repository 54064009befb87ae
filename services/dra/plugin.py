"""The DRAPlugin gRPC service (v1 and v1beta1: same handlers, the messages are wire-identical).

Adapts the kubelet's messages to Driver.prepare/unprepare. Every claim of a request gets an entry
in the answer; a per-claim failure is that claim's `error`; an empty request succeeds (peers use
it as a liveness probe).
"""

from __future__ import annotations

import logging
import uuid
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from dranet._generated import (
    dra_health_v1alpha1_pb2_grpc,
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
)
from dranet.observability.logging import bind

from .driver import ClaimRef, Driver
from .health import HealthServicer
from .sockets import bind_unix, remove_socket

log = logging.getLogger(__name__)


class DRAPluginServicer:
    """One instance per API version; `pb` is that version's generated message module."""

    def __init__(self, driver: Driver, pb: ModuleType, version: str) -> None:
        self.driver = driver
        self.pb = pb
        self.version = version

    def NodePrepareResources(self, request: Any, context: Any) -> Any:
        refs = [ClaimRef(c.uid, c.namespace, c.name) for c in request.claims]
        with bind(request_id=uuid.uuid4().hex[:12], api=self.version):
            log.info("NodePrepareResources", extra={"claims": [f"{r.namespace}/{r.name}" for r in refs]})
            results = self.driver.prepare(refs)
        resp = self.pb.NodePrepareResourcesResponse()
        for ref in refs:
            res = results[ref.uid]
            entry = resp.claims[ref.uid]
            if res.error:
                entry.error = res.error
                continue
            for d in res.devices:
                entry.devices.add(
                    request_names=[d.request_name],
                    pool_name=d.pool,
                    device_name=d.device,
                    cdi_device_ids=res.cdi_ids.get(d.device, []),
                )
        return resp

    def NodeUnprepareResources(self, request: Any, context: Any) -> Any:
        refs = [ClaimRef(c.uid, c.namespace, c.name) for c in request.claims]
        with bind(request_id=uuid.uuid4().hex[:12], api=self.version):
            log.info("NodeUnprepareResources", extra={"claims": [f"{r.namespace}/{r.name}" for r in refs]})
            errors = self.driver.unprepare(refs)
        resp = self.pb.NodeUnprepareResourcesResponse()
        for ref in refs:
            resp.claims[ref.uid].error = errors.get(ref.uid, "")
        return resp


class PluginServer:
    """The DRA gRPC server on <plugins dir>/<driver>/dra.sock."""

    def __init__(self, socket_path: Path, driver: Driver, health: HealthServicer | None = None) -> None:
        self.path = socket_path
        self.driver = driver
        self.health = health
        self._server: grpc.Server | None = None

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="dra-grpc"))
        dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(  # type: ignore[no-untyped-call]
            DRAPluginServicer(self.driver, dra_v1_pb2, "v1"), server
        )
        dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(  # type: ignore[no-untyped-call]
            DRAPluginServicer(self.driver, dra_v1beta1_pb2, "v1beta1"), server
        )
        if self.health is not None:
            dra_health_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(self.health, server)
        bind_unix(server, self.path)
        server.start()
        self._server = server
        log.info("DRA socket ready", extra={"socket": str(self.path), "health": self.health is not None})

    def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        remove_socket(self.path)
