"""Many runtime requests through the NRI plugin, with the real dra, netns and nri processes.

The services run as `python -m dranet <service>` in one runtime dir; dra and the netns worker each
in a network namespace of their own (`unshare --net`), so nothing here sees the machine's
interfaces. A fake runtime (tests/fake_nri_runtime.py) is the nri service's peer on a real ttrpc
connection. Pods have no claim, so the real path is: nri asks dra over the bus on RunPodSandbox, and
a pod nri has never seen (started before it) makes nri ask the worker to detach on Stop/Remove.

Used by tests/integration/test_soak.py (asserts nothing grows) and tests/bench/bench_soak.py (prints
the growth). Needs root (the netns worker keeps its capabilities; unshare).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from dranet._generated import nri_pb2
from dranet.status import query

from .fake_nri_runtime import FakeRuntime, pod

SOAK_SERVICES = ("nri", "dra", "netns")


@dataclass(frozen=True)
class Usage:
    fds: int
    sockets: int
    threads: int
    rss_kib: int


def usage(pid: int) -> Usage:
    """What the process holds now, from /proc."""
    fd_dir = Path(f"/proc/{pid}/fd")
    targets = []
    for fd in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(fd_dir / fd))
        except FileNotFoundError:  # closed while we looked
            pass
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return Usage(
        fds=len(targets),
        sockets=sum(t.startswith("socket:") for t in targets),
        threads=len(os.listdir(f"/proc/{pid}/task")),
        rss_kib=rss,
    )


class Soak:
    """The three services as processes and the fake runtime connected to nri."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.runtime_dir = tmp / "run"
        self.state_dir = tmp / "state"
        self.runtime = FakeRuntime(tmp / "nri.sock")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.requests = 0
        self.failed = 0
        self.errors: list[str] = []  # the first few failures

    def _start(self, service: str, extra: list[str], *, own_netns: bool) -> None:
        argv = [sys.executable, "-m", "dranet", service, "--runtime-dir", str(self.runtime_dir)]
        argv += ["--state-dir", str(self.state_dir), "--node-name", "soak", "--log-level", "warning"]
        argv += ["--kubeconfig", str(self.tmp / "no-kubeconfig"), *extra]
        if own_netns:
            argv = ["unshare", "--net", *argv]  # exec, not fork: the pid is the service's
        with open(self.logs / f"{service}.log", "wb") as log:
            self.procs[service] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        kubelet = self.tmp / "kubelet"
        self._start("netns", [], own_netns=True)
        self._start(
            "dra",
            [
                "--kubelet-registry-dir",
                str(kubelet / "plugins_registry"),
                "--kubelet-plugins-dir",
                str(kubelet / "plugins"),
            ],
            own_netns=True,
        )
        # nri registers with the runtime as soon as it connects and gives up after 5 s without an
        # answer; the fake runtime answers once every service is up: start nri last, when the
        # others answer (their start takes seconds on a loaded machine).
        self._wait_up([s for s in SOAK_SERVICES if s != "nri"])
        self._start("nri", ["--nri-socket", str(self.runtime.path)], own_netns=False)
        self._wait_up(SOAK_SERVICES)
        # a long request timeout: this measures growth, not time, and must not fail on a busy machine
        self.runtime.accept_and_register(timeout=30, request_timeout_ms=30000)
        self.runtime.call("Synchronize", nri_pb2.SynchronizeRequest().SerializeToString())

    def _wait_up(self, services: list[str]) -> None:
        end = time.monotonic() + 30
        while True:
            res = query(self.runtime_dir, services, timeout=0.5)
            if all(isinstance(r, dict) for r in res.values()):
                break
            dead = {s: p.returncode for s, p in self.procs.items() if p.poll() is not None}
            if dead or time.monotonic() > end:
                raise RuntimeError(
                    f"services did not come up (exited: {dead}; answers: {res}); see {self.logs}"
                )
            time.sleep(0.1)

    def pids(self) -> dict[str, int]:
        return {s: p.pid for s, p in self.procs.items()}

    def usage(self) -> dict[str, Usage]:
        return {s: usage(pid) for s, pid in self.pids().items()}

    def _call(self, method: str, payload: bytes) -> None:
        self.requests += 1
        try:
            self.runtime.call(method, payload, timeout=60)
        except Exception as exc:  # counted: the test fails on any, the benchmark reports them
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"request {self.requests} ({method}): {exc}")

    def drive(self, requests: int) -> None:
        """About `requests` runtime requests: per pod Run, CreateContainer, Stop, Remove; every
        fourth pod was started before nri (Stop and Remove only, and nri asks the worker)."""
        sent = 0
        n = 0
        while sent < requests:
            n += 1
            uid = str(uuid.uuid4())
            if n % 4 == 0:
                p = pod(uid, netns=f"/var/run/netns/soak-{uid}")  # unknown to nri: it asks the worker
                self._call("StopPodSandbox", nri_pb2.StopPodSandboxRequest(pod=p).SerializeToString())
                self._call("RemovePodSandbox", nri_pb2.RemovePodSandboxRequest(pod=p).SerializeToString())
                sent += 2
                continue
            p = pod(uid)
            self._call("RunPodSandbox", nri_pb2.RunPodSandboxRequest(pod=p).SerializeToString())
            create = nri_pb2.CreateContainerRequest(pod=p, container=nri_pb2.Container(id="c-" + uid))
            self._call("CreateContainer", create.SerializeToString())
            self._call("StopPodSandbox", nri_pb2.StopPodSandboxRequest(pod=p).SerializeToString())
            self._call("RemovePodSandbox", nri_pb2.RemovePodSandboxRequest(pod=p).SerializeToString())
            sent += 4

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.runtime.close()
