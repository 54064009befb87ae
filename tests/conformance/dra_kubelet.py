"""A test harness that plays the kubelet (and the dra service's neighbours) around a real dra service.

- the local API server holds the ResourceClaims (created and allocated by the test, as the
  scheduler would);
- stand-ins for discovery (`get_inventory`, topic "inventory") and the netns worker (`detach`, topic
  "attachments") serve on the bus with ServiceHost, like the real services;
- the dra service runs in-process (DraService), with its sockets in a short temporary directory;
- the kubelet side talks gRPC over the unix sockets with stubs generated from the kubelet's official
  protos (v1beta1, pluginregistration) when they are present, our own otherwise (and always for v1,
  which the packaged 1.32 protos do not have).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from dranet.services.dra.main import DraService
from kubernetes import client as kclient
from kubernetes import config as kconfig

from dranet._generated import (
    dra_health_v1alpha1_pb2,
    dra_health_v1alpha1_pb2_grpc,
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)
from dranet.bus import BusClient, BusError
from dranet.service import ServiceHost
from localcluster.apiserver import LocalAPIServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kubelet_protos

DRIVER = "dra.net"
NODE = "tdr-node"


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def service_args(root: Path, **extra: Any) -> argparse.Namespace:
    ns = argparse.Namespace(
        runtime_dir=str(root / "run"),
        state_dir=str(root / "state"),
        node_name=NODE,
        driver_name=DRIVER,
        kubeconfig=str(root / "kubeconfig"),
        log_level="warning",
        kubelet_registry_dir=str(root / "reg"),
        kubelet_plugins_dir=str(root / "plugins"),
        rolling_update_uid="",
        health_interval=0.1,
        host_netns=None,
        cdi_dir=str(root / "cdi"),
        cdi_hook_command="/usr/bin/dranet",
        cdi_hook_wait=5.0,
    )
    for k, v in extra.items():
        setattr(ns, k, v)
    return ns


class FakeNeighbours:
    """discovery and netns stand-ins on the bus."""

    def __init__(self, root: Path, inventory: list[dict[str, Any]]) -> None:
        self.inventory = inventory
        self.detach_calls: list[dict[str, Any]] = []
        self.detach_error: BusError | None = None
        self.attachments: list[dict[str, Any]] = []
        args = service_args(root)
        self.discovery = ServiceHost("discovery", args, drop_caps=False, install_signals=False)
        self.discovery.serve(
            {"get_inventory": lambda body, ctx: self.inventory_body()},
            snapshots={"inventory": self.inventory_body},
        )
        self.netns = ServiceHost("netns", args, drop_caps=False, install_signals=False)
        self.grants: dict[str, dict[str, Any]] = {}  # claim UID -> what dra granted the worker
        self.grant_error: BusError | None = None
        self.netns.serve(
            {"detach": self._detach, "grant": self._grant, "revoke": self._revoke},
            snapshots={"attachments": lambda: {"attachments": self.attachments}},
        )

    def inventory_body(self) -> dict[str, Any]:
        return {"generation": 1, "devices": self.inventory}

    def _detach(self, body: dict[str, Any], _ctx: Any) -> dict[str, Any]:
        self.detach_calls.append(body)
        if self.detach_error is not None:
            raise self.detach_error
        return {"released": list(body.get("devices") or [])}

    def _grant(self, body: dict[str, Any], _ctx: Any) -> dict[str, Any]:
        if self.grant_error is not None:
            raise self.grant_error
        fresh = {c["uid"]: c for c in body["claims"]}
        self.grants = fresh if body.get("replace") else {**self.grants, **fresh}
        return {"granted": len(fresh)}

    def _revoke(self, body: dict[str, Any], _ctx: Any) -> dict[str, Any]:
        return {"revoked": [u for u in body["claim_uids"] if self.grants.pop(u, None) is not None]}

    def attached(self, **body: Any) -> None:
        self.attachments.append(body)
        self.netns.publish("attachments", body)

    def close(self) -> None:
        self.discovery.close()
        self.netns.close()


def device(name: str, ifname: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "ifname": ifname if ifname is not None else name,
        "pci_address": "",
        "rdma_device": "",
        "allocatable": True,
        "attributes": {},
        **extra,
    }


class Kubelet:
    """gRPC clients for the plugin's sockets, as the kubelet uses them."""

    def __init__(self, workdir: Path) -> None:
        self.official = kubelet_protos.source_root() is not None
        self.reg_pb: ModuleType = pluginregistration_pb2
        self.reg_grpc: ModuleType = pluginregistration_pb2_grpc
        self.apis: dict[str, tuple[ModuleType, ModuleType]] = {
            "v1": (dra_v1_pb2, dra_v1_pb2_grpc),
            "v1beta1": (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc),
        }
        if self.official:
            self.reg_pb, self.reg_grpc = kubelet_protos.official_modules(
                workdir / "reg", "pluginregistration"
            )
            self.apis["v1beta1"] = kubelet_protos.official_modules(workdir / "dra", "dra_v1beta1")

    def registration(self, path: Path) -> tuple[Any, grpc.Channel]:
        ch = grpc.insecure_channel(f"unix://{path}")
        return self.reg_grpc.RegistrationStub(ch), ch

    def prepare(self, endpoint: str, claims: list[tuple[str, str, str]], api: str = "v1") -> dict[str, Any]:
        """claims: (namespace, uid, name). Returns {uid: (devices as tuples, error)}."""
        pb, stub_mod = self.apis[api]
        with grpc.insecure_channel(f"unix://{endpoint}") as ch:
            req = pb.NodePrepareResourcesRequest(
                claims=[pb.Claim(namespace=n, uid=u, name=m) for n, u, m in claims]
            )
            resp = stub_mod.DRAPluginStub(ch).NodePrepareResources(req, timeout=45)
        return {
            uid: (
                [
                    (tuple(d.request_names), d.pool_name, d.device_name, tuple(d.cdi_device_ids))
                    for d in r.devices
                ],
                r.error,
            )
            for uid, r in resp.claims.items()
        }

    def unprepare(self, endpoint: str, claims: list[tuple[str, str, str]], api: str = "v1") -> dict[str, str]:
        pb, stub_mod = self.apis[api]
        with grpc.insecure_channel(f"unix://{endpoint}") as ch:
            req = pb.NodeUnprepareResourcesRequest(
                claims=[pb.Claim(namespace=n, uid=u, name=m) for n, u, m in claims]
            )
            resp = stub_mod.DRAPluginStub(ch).NodeUnprepareResources(req, timeout=45)
        return {uid: r.error for uid, r in resp.claims.items()}

    @staticmethod
    def watch_health(endpoint: str) -> tuple[grpc.Channel, Any]:
        ch = grpc.insecure_channel(f"unix://{endpoint}")
        stream = dra_health_v1alpha1_pb2_grpc.DRAResourceHealthStub(ch).NodeWatchResources(
            dra_health_v1alpha1_pb2.NodeWatchResourcesRequest(), timeout=60
        )
        return ch, stream


class Cluster:
    """The local API server plus the claim objects a scheduler would have written."""

    def __init__(self, root: Path) -> None:
        self.server = LocalAPIServer()
        self.server.start()
        self.kubeconfig = self.server.write_kubeconfig(root / "kubeconfig")
        self.api_client = kconfig.new_client_from_config(config_file=str(self.kubeconfig))
        self.resource = kclient.ResourceV1Api(self.api_client)
        self._n = 0

    def create_claim(
        self,
        *,
        devices: list[str],
        configs: list[dict[str, Any]] | None = None,
        pods: list[str] | None = None,
        requests: list[str] | None = None,
        namespace: str = "default",
    ) -> tuple[str, str, str]:
        """A claim allocated on NODE and reserved for `pods`; returns (namespace, uid, name)."""
        self._n += 1
        name = f"claim-{self._n}"
        reqs = requests or ["nic"] * len(devices)
        spec = {
            "devices": {
                "requests": [
                    {"name": r, "exactly": {"deviceClassName": "dra.net", "count": reqs.count(r)}}
                    for r in dict.fromkeys(reqs)
                ],
            }
        }
        body: Any = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        created = self.api_client.sanitize_for_serialization(
            self.resource.create_namespaced_resource_claim(namespace, body)
        )
        pod_uids = pods if pods is not None else [f"pod-{self._n}"]
        created["status"] = {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": r, "driver": DRIVER, "pool": NODE, "device": d}
                        for r, d in zip(reqs, devices, strict=True)
                    ],
                    "config": configs or [],
                },
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}
                    ]
                },
            },
            "reservedFor": [{"resource": "pods", "name": f"pod-{u}", "uid": u} for u in pod_uids],
        }
        self.resource.replace_namespaced_resource_claim_status(name, namespace, created)
        return namespace, created["metadata"]["uid"], name

    def claim(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self.resource.read_namespaced_resource_claim(name, namespace)
        return dict(self.api_client.sanitize_for_serialization(obj))

    def stop(self) -> None:
        self.server.stop()


def opaque(
    params: dict[str, Any], source: str = "FromClaim", requests: list[str] | None = None
) -> dict[str, Any]:
    return {"source": source, "requests": requests or [], "opaque": {"driver": DRIVER, "parameters": params}}


class Harness:
    """Everything around one dra service; start_dra()/stop_dra() simulate process restarts."""

    def __init__(self, inventory: list[dict[str, Any]] | None = None, **dra_args: Any) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tdr-"))  # short: unix socket paths are limited
        self.cluster = Cluster(self.root)
        self.neighbours = FakeNeighbours(
            self.root, inventory or [device("eth1"), device("eth2"), device("eth3")]
        )
        self.kubelet = Kubelet(self.root / "gen")
        self.dra_args = dra_args
        self.host: ServiceHost | None = None
        self.dra: DraService | None = None
        self._bus: BusClient | None = None
        self._lock = threading.Lock()

    def start_dra(self) -> DraService:
        args = service_args(self.root, **self.dra_args)
        self.host = ServiceHost("dra", args, drop_caps=False, install_signals=False)
        self.dra = DraService(self.host, args)
        self.dra.start()
        self._bus = BusClient(self.root / "run", "dra", timeout=5.0)
        return self.dra

    def stop_dra(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None
        if self.dra is not None:
            self.dra.stop()
            self.dra = None
        if self.host is not None:
            self.host.close()
            self.host = None

    @property
    def endpoint(self) -> str:
        assert self.dra is not None
        return str(self.dra.dra_path)

    def bus(self, op: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self._bus is not None
        return self._bus.call(op, body or {})

    def close(self) -> None:
        self.stop_dra()
        self.neighbours.close()
        self.cluster.stop()
        shutil.rmtree(self.root, ignore_errors=True)
