"""A small CRI client (runtime.v1 over gRPC on the runtime's unix socket) for tests and the demo.

It plays the kubelet's part for pod sandboxes: run, status (with the netns path), stop, remove,
list. `python -m localcluster.cri --socket S cleanup` stops and removes every pod.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from dranet._generated import cri_pb2, cri_pb2_grpc

DEFAULT_IMAGE = "localhost/dranet/pause:1.0"


class CriError(Exception):
    """A CRI call failed; `code` is the gRPC status name, `details` the runtime's message."""

    def __init__(self, call: str, code: str, details: str) -> None:
        super().__init__(f"{call}: {code}: {details}")
        self.call = call
        self.code = code
        self.details = details


@dataclass(frozen=True)
class SandboxStatus:
    id: str
    uid: str
    name: str
    namespace: str
    state: str  # SANDBOX_READY | SANDBOX_NOTREADY
    ip: str
    netns: str  # "" for a hostNetwork pod
    pid: int


class CriClient:
    def __init__(self, socket_path: str, *, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._channel = grpc.insecure_channel("unix://" + socket_path)
        self._stub = cri_pb2_grpc.RuntimeServiceStub(self._channel)
        self._configs: dict[str, cri_pb2.PodSandboxConfig] = {}

    def _call(self, name: str, req: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, name)(req, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise CriError(name, exc.code().name, exc.details() or "") from None

    def close(self) -> None:
        self._channel.close()

    def version(self) -> dict[str, str]:
        r = self._call("Version", cri_pb2.VersionRequest(version="v1"))
        return {
            "runtime_name": r.runtime_name,
            "runtime_version": r.runtime_version,
            "runtime_api_version": r.runtime_api_version,
        }

    def run_pod_sandbox(
        self,
        name: str,
        *,
        uid: str | None = None,
        namespace: str = "default",
        host_network: bool = False,
        log_dir: str = "/tmp",
        timeout: float | None = None,
        attempt: int = 0,
    ) -> str:
        """Start a pod sandbox; returns its id. Raises CriError (e.g. an NRI plugin refused it).
        attempt: the kubelet's sandbox attempt (it makes attempt N+1 of a pod after a failure)."""
        uid = uid or str(uuid.uuid4())
        mode = cri_pb2.NODE if host_network else cri_pb2.POD
        config = cri_pb2.PodSandboxConfig(
            metadata=cri_pb2.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=attempt),
            hostname=name,
            log_directory=os.path.join(log_dir, uid),
            labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace},
            linux=cri_pb2.LinuxPodSandboxConfig(
                security_context=cri_pb2.LinuxSandboxSecurityContext(
                    namespace_options=cri_pb2.NamespaceOption(
                        network=mode, pid=cri_pb2.CONTAINER, ipc=cri_pb2.POD
                    )
                )
            ),
        )
        r = self._call("RunPodSandbox", cri_pb2.RunPodSandboxRequest(config=config), timeout)
        self._configs[r.pod_sandbox_id] = config
        return str(r.pod_sandbox_id)

    def status(self, sandbox_id: str) -> SandboxStatus:
        r = self._call(
            "PodSandboxStatus", cri_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
        )
        info = json.loads(r.info.get("info", "") or "{}")
        netns = ""
        for ns in ((info.get("runtimeSpec") or {}).get("linux") or {}).get("namespaces") or []:
            if ns.get("type") == "network":
                netns = ns.get("path", "")
        s = r.status
        return SandboxStatus(
            id=s.id,
            uid=s.metadata.uid,
            name=s.metadata.name,
            namespace=s.metadata.namespace,
            state=cri_pb2.PodSandboxState.Name(s.state),
            ip=s.network.ip,
            netns=netns,
            pid=int(info.get("pid") or 0),
        )

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self._call("StopPodSandbox", cri_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self._call("RemovePodSandbox", cri_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
        self._configs.pop(sandbox_id, None)

    def list_pod_sandboxes(self) -> list[dict[str, str]]:
        r = self._call("ListPodSandbox", cri_pb2.ListPodSandboxRequest())
        return [
            {
                "id": p.id,
                "name": p.metadata.name,
                "uid": p.metadata.uid,
                "namespace": p.metadata.namespace,
                "state": cri_pb2.PodSandboxState.Name(p.state),
            }
            for p in r.items
        ]

    def create_container(
        self,
        sandbox_id: str,
        name: str,
        image: str = DEFAULT_IMAGE,
        *,
        attempt: int = 0,
        cdi_devices: Sequence[str] = (),
        command: Sequence[str] = (),
        args: Sequence[str] = (),
    ) -> str:
        """Create (not start) a container in a sandbox run by this client. Raises CriError.

        cdi_devices: fully qualified CDI device names the runtime applies (as the kubelet passes
        the IDs NodePrepareResources returned); command, args: the pod spec's (the image's
        entrypoint and arguments when empty)."""
        config = cri_pb2.ContainerConfig(
            metadata=cri_pb2.ContainerMetadata(name=name, attempt=attempt),
            image=cri_pb2.ImageSpec(image=image),
            command=list(command),
            args=list(args),
            log_path=f"{name}-{attempt}.log",
            CDI_devices=[cri_pb2.CDIDevice(name=d) for d in cdi_devices],
        )
        return self.create(sandbox_id, config)

    def run_sandbox(self, config: cri_pb2.PodSandboxConfig) -> str:
        """RunPodSandbox with a config the caller built (the DaemonSet pod's, daemonpod.py)."""
        r = self._call("RunPodSandbox", cri_pb2.RunPodSandboxRequest(config=config))
        self._configs[r.pod_sandbox_id] = config
        return str(r.pod_sandbox_id)

    def create(self, sandbox_id: str, config: cri_pb2.ContainerConfig) -> str:
        """CreateContainer with a full config in a sandbox this client ran. Raises CriError."""
        sandbox_config = self._configs.get(sandbox_id, cri_pb2.PodSandboxConfig())
        r = self._call(
            "CreateContainer",
            cri_pb2.CreateContainerRequest(
                pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config
            ),
        )
        return str(r.container_id)

    def start_container(self, container_id: str) -> None:
        self._call("StartContainer", cri_pb2.StartContainerRequest(container_id=container_id))

    def list_containers(self, sandbox_id: str = "") -> list[dict[str, Any]]:
        """The containers (of one sandbox, when given): id, name, attempt, state (CONTAINER_RUNNING...)."""
        r = self._call("ListContainers", cri_pb2.ListContainersRequest())
        return [
            {
                "id": c.id,
                "sandbox_id": c.pod_sandbox_id,
                "name": c.metadata.name,
                "attempt": c.metadata.attempt,
                "state": cri_pb2.ContainerState.Name(c.state),
            }
            for c in r.containers
            if not sandbox_id or c.pod_sandbox_id == sandbox_id
        ]

    def stop_container(self, container_id: str, grace: int = 2) -> None:
        """SIGTERM, then SIGKILL after grace seconds (the pod's terminationGracePeriodSeconds)."""
        req = cri_pb2.StopContainerRequest(container_id=container_id, timeout=grace)
        self._call("StopContainer", req, timeout=grace + self.timeout)

    def remove_container(self, container_id: str, grace: int = 2) -> None:
        self.stop_container(container_id, grace)
        self._call("RemoveContainer", cri_pb2.RemoveContainerRequest(container_id=container_id))

    def container_status(self, container_id: str) -> cri_pb2.ContainerStatus:
        r = self._call("ContainerStatus", cri_pb2.ContainerStatusRequest(container_id=container_id))
        return r.status

    def container_pid(self, container_id: str) -> int:
        """The container's init process on this machine (from the verbose status)."""
        req = cri_pb2.ContainerStatusRequest(container_id=container_id, verbose=True)
        info = json.loads(self._call("ContainerStatus", req).info.get("info", "") or "{}")
        return int(info.get("pid") or 0)

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int) -> tuple[int, str, str]:
        """ExecSync, what exec probes use: (exit code, stdout, stderr). A timeout is exit code -1."""
        req = cri_pb2.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        try:
            r = self._call("ExecSync", req, timeout=timeout + 10)
        except CriError as exc:
            if exc.code == "DEADLINE_EXCEEDED":
                return -1, "", f"timed out after {timeout}s"
            raise
        return int(r.exit_code), r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def cleanup(self) -> list[str]:
        """Stop and remove every container and pod sandbox; returns what failed."""
        errors: list[str] = []
        for c in self._call("ListContainers", cri_pb2.ListContainersRequest()).containers:
            try:
                self.remove_container(c.id)
            except CriError as exc:
                errors.append(str(exc))
        for p in self.list_pod_sandboxes():
            try:
                self.stop_pod_sandbox(p["id"])
                self.remove_pod_sandbox(p["id"])
            except CriError as exc:
                errors.append(str(exc))
        return errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m localcluster.cri", description=__doc__)
    ap.add_argument("--socket", required=True, help="the runtime's CRI socket")
    ap.add_argument("command", choices=["version", "list", "cleanup"])
    args = ap.parse_args(argv)
    client = CriClient(args.socket)
    try:
        if args.command == "version":
            print(json.dumps(client.version()))
        elif args.command == "list":
            print(json.dumps(client.list_pod_sandboxes(), indent=2))
        else:
            errors = client.cleanup()
            for e in errors:
                print(e)
            return 1 if errors else 0
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
