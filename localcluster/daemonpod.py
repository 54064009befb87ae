"""The kubelet's pod-side work for one pod (the DaemonSet's), through CRI on a real containerd.

DEVELOPMENT AND TEST TOOL. podspec.plan() says what to send; this module does it:

    pod = DaemonPod(plan, CriClient(socket))
    pod.up()                 # volumes on the node, RunPodSandbox, Create+Start each container, prober
    pod.wait_ready(60)       # readiness probes pass (after the startup probes)
    pod.exec("netns", [...]) # ExecSync
    pod.down()               # Stop (grace period), Remove, StopPodSandbox, RemovePodSandbox, volumes

The prober runs each container's exec and httpGet probes (an httpGet connects from the node's
netns) with the manifest's periods, timeouts and thresholds, as the kubelet does: the startup
probe first (liveness and readiness wait for it), readiness sets the container's ready flag, and
liveness failing failureThreshold times in a row restarts the container (StopContainer with the
grace period, RemoveContainer, CreateContainer with attempt + 1, StartContainer); so does a
container that exited (restartPolicy Always), with the kubelet's doubling back-off from 10 s.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dranet._generated import cri_pb2
from localcluster.cri import CriClient, CriError
from localcluster.nodenet import in_netns
from localcluster.podspec import ContainerPlan, PodPlan, Probe

log = logging.getLogger(__name__)
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0


class PodError(Exception):
    """The pod could not be brought up or did not become ready; the message says what to look at."""


@dataclass
class ProbeState:
    """One probe's counters, the kubelet's prober semantics (pure: fed results and times)."""

    probe: Probe
    started_at: float
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    passed: bool = False  # the result the kubelet reports (ready / started / alive)

    def __post_init__(self) -> None:
        self.next_at = self.started_at + self.probe.initial_delay

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, now: float) -> bool:
        """Count one result; returns True when the failure threshold was just reached."""
        self.next_at = now + self.probe.period
        if ok:
            self.failures = 0
            self.successes += 1
            if self.successes >= self.probe.success_threshold:
                self.passed = True
            return False
        self.successes = 0
        self.failures += 1
        if self.failures >= self.probe.failure_threshold:
            self.passed = False
            return True
        return False


@dataclass
class RunningContainer:
    plan: ContainerPlan
    id: str = ""
    attempt: int = 0
    probes: dict[str, ProbeState] = field(default_factory=dict)
    restarts: list[str] = field(default_factory=list)  # why each restart happened
    backoff: float = BACKOFF_START
    not_before: float = 0.0  # an exited container is restarted no earlier than this

    @property
    def started(self) -> bool:
        s = self.probes.get("startupProbe")
        return s is None or s.passed

    @property
    def ready(self) -> bool:
        r = self.probes.get("readinessProbe")
        return self.started and (r is None or r.passed)


def http_probe(netns: str, probe: Probe) -> tuple[bool, str]:
    """The kubelet's httpGet from the node's network: passes on a status from 200 to 399."""
    h = probe.http
    assert h is not None

    def get() -> int:
        conn = http.client.HTTPConnection(h.host, h.port, timeout=probe.timeout)
        try:
            conn.request("GET", h.path, headers={"User-Agent": "kube-probe/stand-in"})
            return conn.getresponse().status
        finally:
            conn.close()

    try:
        status = in_netns(netns, get)
    except OSError as exc:
        return False, f"GET http://{h.host}:{h.port}{h.path}: {exc}"
    return 200 <= status < 400, f"GET http://{h.host}:{h.port}{h.path}: {status}"


class DaemonPod:
    """One pod on the node: its sandbox, its containers and their prober."""

    def __init__(self, plan: PodPlan, cri: CriClient, *, tick: float = 0.5) -> None:
        self.plan = plan
        self.cri = cri
        self.tick = tick
        self.sandbox_id = ""
        self.containers = {c.name: RunningContainer(c) for c in plan.containers}
        self._mounts: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._prober: threading.Thread | None = None
        self.prober_errors: list[str] = []

    # ------------------------------------------------------------ volumes

    def _prepare_volumes(self) -> None:
        for v in self.plan.volumes:
            path = Path(v.host_path)
            if v.kind == "hostPath":
                if v.host_type == "Directory" and not path.is_dir():
                    raise PodError(f"hostPath volume {v.name}: {path} is not a directory (type Directory)")
                path.mkdir(parents=True, exist_ok=True)  # DirectoryOrCreate, and "" on this node
            elif v.kind == "emptyDir":
                path.mkdir(parents=True, exist_ok=True)
                if v.tmpfs_bytes:
                    opts = f"mode=0777,size={v.tmpfs_bytes}"
                    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
                    self._mounts.append(str(path))
                else:
                    path.chmod(0o777)
            else:  # projected: written once; nothing here rotates the token
                path.mkdir(parents=True, exist_ok=True)
                for rel, content in v.files.items():
                    f = path / rel
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_text(content)
                    f.chmod(v.mode)
        for c in self.plan.containers:
            for m in c.config.mounts:
                if m.container_path == "/dev/termination-log":
                    Path(m.host_path).parent.mkdir(parents=True, exist_ok=True)
                    Path(m.host_path).touch()
        Path(self.plan.sandbox.log_directory).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ lifecycle

    def up(self) -> None:
        """Volumes, sandbox, containers, prober. On failure what was made is removed and PodError raised."""
        try:
            self._prepare_volumes()
            self.sandbox_id = self.cri.run_sandbox(self.plan.sandbox)
            for rc in self.containers.values():
                self._start(rc, 0)
        except (CriError, OSError, subprocess.CalledProcessError) as exc:
            self.down()
            raise PodError(f"pod {self.plan.name}: {exc}") from None
        self._prober = threading.Thread(target=self._probe_loop, name="prober", daemon=True)
        self._prober.start()

    def _start(self, rc: RunningContainer, attempt: int) -> None:
        cfg = cri_pb2.ContainerConfig()
        cfg.CopyFrom(rc.plan.config)
        cfg.metadata.attempt = attempt
        cfg.annotations["io.kubernetes.container.restartCount"] = str(attempt)
        cfg.log_path = f"{rc.plan.name}/{attempt}.log"
        cid = self.cri.create(self.sandbox_id, cfg)
        self.cri.start_container(cid)
        now = time.monotonic()
        rc.id, rc.attempt = cid, attempt
        rc.probes = {kind: ProbeState(p, now) for kind, p in rc.plan.probes.items()}

    def restart(self, name: str, why: str = "requested") -> None:
        """What the kubelet does to a container that failed liveness or exited: a new one, attempt + 1;
        the sandbox, its volumes and the other containers stay."""
        with self._lock:
            rc = self.containers[name]
            old = rc.id
            with contextlib.suppress(CriError):
                self.cri.remove_container(old, self.plan.grace)
            self._start(rc, rc.attempt + 1)
            rc.restarts.append(why)  # last: whoever watches restarts sees the new container
        log.info("container restarted", extra={"container": name, "why": why, "attempt": rc.attempt})

    def down(self) -> list[str]:
        """Stop the prober, the containers (grace period), the sandbox; unmount and remove the pod
        directory. Returns what failed."""
        self._stop.set()
        if self._prober is not None:
            self._prober.join(timeout=30)
        errors = []
        with self._lock:
            for rc in self.containers.values():
                if rc.id:
                    try:
                        self.cri.remove_container(rc.id, self.plan.grace)
                    except CriError as exc:
                        errors.append(str(exc))
                    rc.id = ""
            if self.sandbox_id:
                try:
                    self.cri.stop_pod_sandbox(self.sandbox_id)
                    self.cri.remove_pod_sandbox(self.sandbox_id)
                except CriError as exc:
                    errors.append(str(exc))
                self.sandbox_id = ""
        for m in reversed(self._mounts):
            r = subprocess.run(["umount", m], capture_output=True, text=True)
            if r.returncode != 0:
                errors.append(f"umount {m}: {r.stderr.strip()}")
        self._mounts.clear()
        pod_dir = Path(self.plan.sandbox.log_directory).parent
        shutil.rmtree(pod_dir, ignore_errors=True)
        return errors

    # ------------------------------------------------------------ probes

    def exec(self, name: str, cmd: list[str], timeout: int = 10) -> tuple[int, str, str]:
        """ExecSync in the container; PodError with its state and log tail when it cannot run."""
        rc = self.containers[name]
        try:
            return self.cri.exec_sync(rc.id, cmd, timeout)
        except CriError as exc:
            raise PodError(
                f"exec in {name} (attempt {rc.attempt}, restarts {rc.restarts}): {exc}; "
                f"log tails: {self.log_tails()}"
            ) from None

    def _probe_once(self, rc: RunningContainer, kind: str, now: float) -> None:
        state = rc.probes[kind]
        if state.probe.http is not None:
            ok, why = http_probe(self.plan.netns, state.probe)
        else:
            try:
                code, _, err = self.cri.exec_sync(rc.id, state.probe.command, state.probe.timeout)
            except CriError as exc:
                code, err = -1, str(exc)
            ok, why = code == 0, f"exit {code} {err.strip()[:200]}"
        if state.record(ok, time.monotonic()) and kind in ("livenessProbe", "startupProbe"):
            self.restart(rc.plan.name, f"{kind} failed {state.failures} times: {why}")

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.tick):
            for rc in list(self.containers.values()):
                try:
                    self._tend(rc)
                except CriError as exc:
                    self.prober_errors.append(f"{rc.plan.name}: {exc}")

    def _tend(self, rc: RunningContainer) -> None:
        now = time.monotonic()
        status = self.cri.container_status(rc.id)
        if status.state == cri_pb2.CONTAINER_EXITED:
            if not rc.not_before:
                rc.not_before = now + rc.backoff
            elif now >= rc.not_before:
                why = f"exited with {status.exit_code} ({status.reason})"
                rc.backoff, rc.not_before = min(rc.backoff * 2, BACKOFF_MAX), 0.0
                self.restart(rc.plan.name, why)
            return
        if "startupProbe" in rc.probes and not rc.started:
            if rc.probes["startupProbe"].due(now):
                self._probe_once(rc, "startupProbe", now)
            return
        for kind in ("livenessProbe", "readinessProbe"):
            if kind in rc.probes and rc.probes[kind].due(now) and not self._stop.is_set():
                self._probe_once(rc, kind, now)

    # ------------------------------------------------------------ queries

    def ready(self) -> dict[str, bool]:
        return {name: rc.ready for name, rc in self.containers.items()}

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.ready().values()):
                return
            time.sleep(0.2)
        raise PodError(
            f"pod {self.plan.name} not ready within {timeout:.0f}s: {self.ready()}; "
            f"logs in {self.plan.sandbox.log_directory}: {self.log_tails()}"
        )

    def log_tails(self, lines: int = 15) -> dict[str, list[str]]:
        out = {}
        for name, rc in self.containers.items():
            path = Path(self.plan.sandbox.log_directory, name, f"{rc.attempt}.log")
            with contextlib.suppress(OSError):
                out[name] = path.read_text(errors="replace").splitlines()[-lines:]
        return out

    def host_pids(self) -> dict[str, int]:
        """Host pids of the pod's processes by the first words of their command lines (e.g.
        "dranet netns"), found through its containers' pid namespaces (one each, or the sandbox's
        with shareProcessNamespace)."""
        pidns = {
            os.readlink(f"/proc/{self.cri.container_pid(rc.id)}/ns/pid") for rc in self.containers.values()
        }
        out = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") not in pidns:
                    continue
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            out[" ".join(a.decode(errors="replace") for a in argv if a)] = int(entry)
        return out
