"""What the fail-closed CDI hook adds to a claimed pod's start (run by `make bench`).

(a) `dranet cdi-hook` as the runtime runs it (a new process, OCI state on stdin), against the real
    netns worker on the bus, the device attached in the netns of the process it is given: the
    hook's whole run time per container, next to a bare `python -c pass` (the interpreter's own
    start) and to the one `attached_in` bus round trip it makes;
(b) on the real containerd with the four services: CRI CreateContainer + StartContainer of a pod's
    container, with a claimed NIC (CDI device, the hook runs and passes: the NIC is attached) and
    without a claim (no CDI device, no hook), interleaved.

NodePrepareResources with and without the spec write is in bench_dra.py.
Measures and prints; asserts nothing. Needs root; everything it creates is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_pod_start import DEVICE_CLASS, claim_body  # this directory: one claim shape for both
from dranet.services.netns.main import handlers
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusClient
from dranet.service import ServiceHost
from localcluster.claims import device_class

N_HOOK = 30
N_PODS = 12


def row(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{name:<58} {len(ms):>4} {statistics.median(ms):>8.1f} {p90:>8.1f} {ms[-1]:>8.1f}"


def header() -> str:
    return f"{'measurement (ms)':<58} {'n':>4} {'p50':>8} {'p90':>8} {'max':>8}"


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_hook() -> None:
    tb = Testbed("tbc")
    tmp = Path(tempfile.mkdtemp(prefix="tbc-", dir="/tmp"))
    ns = argparse.Namespace(runtime_dir=str(tmp / "run"), state_dir=str(tmp / "state"), log_level="error")
    svc = ServiceHost("netns", ns, drop_caps=False, install_signals=False)
    worker = NetnsWorker(ns.state_dir, host_netns=tb.node_path, publish=svc.publish)
    worker.start(watch_interval=0)
    svc.serve(handlers(worker), health=worker.health)
    client = BusClient(ns.runtime_dir, "netns", timeout=10)
    proc: subprocess.Popen[bytes] | None = None
    try:
        tb.add_nic("tbcq0")
        pod = tb.add_netns()
        client.call(
            "attach",
            {
                "pod_uid": "pod-b",
                "netns": f"/run/netns/{pod}",
                "devices": [{"device": "q0", "ifname": "tbcq0", "config": {}, "claim_uid": "c1"}],
            },
        )
        proc = subprocess.Popen(["ip", "netns", "exec", pod, "sleep", "600"])
        want = os.stat(f"/run/netns/{pod}").st_ino
        while os.stat(f"/proc/{proc.pid}/ns/net").st_ino != want:
            time.sleep(0.01)
        st = os.stat(f"/proc/{proc.pid}/ns/net")
        state = json.dumps({"ociVersion": "1.2.0", "id": "c", "pid": proc.pid, "annotations": {}})
        argv = [
            sys.executable,
            "-m",
            "dranet",
            "cdi-hook",
            f"--runtime-dir={ns.runtime_dir}",
            "--claim=c1",
            "--device=q0",
            "--wait=5",
        ]

        def hook() -> None:
            r = subprocess.run(argv, input=state, capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr

        def bare() -> None:
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        body = {"netns_id": f"{st.st_dev}:{st.st_ino}", "devices": ["q0"]}
        assert client.call("attached_in", body) == {"attached": ["q0"], "missing": []}
        hooks, bares, calls = [], [], []
        for _ in range(N_HOOK):
            hooks.append(timed(hook))
            bares.append(timed(bare))
        for _ in range(500):
            calls.append(timed(lambda: client.call("attached_in", body)))
        print(header())
        print(row("python -c pass (the interpreter's start, for reference)", bares))
        print(row("dranet cdi-hook, NIC attached (whole process)", hooks))
        print(row("attached_in bus round trip (in-process client)", calls))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        client.call("detach", {"pod_uid": "pod-b", "devices": []})
        client.close()
        svc.close()
        worker.close()
        tb.close()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_containers() -> None:
    from localcluster.containerd import Containerd, PackagesUnavailable
    from localcluster.demo import Cluster

    tag = secrets.token_hex(2)
    workdir = Path(tempfile.mkdtemp(prefix=f"tbc-{tag}-", dir="/tmp"))
    ctrd = Containerd(workdir / "ctrd", bridge=f"tbc{tag}br", subnet="10.227.0.0/24")
    cluster = Cluster(workdir, nic_count=N_PODS, prefix=f"tbc{tag}", containerd=ctrd, log=lambda _: None)
    from localcluster.nodeagent import SandboxError

    claimed: list[float] = []
    plain: list[float] = []
    failed: list[str] = []
    try:
        try:
            ctrd.up()
        except PackagesUnavailable as exc:
            print(f"(b) skipped: containerd's Debian packages are unavailable ({exc})")
            return
        cluster.start()
        cluster.wait_slices()
        cluster.create("resource.k8s.io/v1", "deviceclasses", device_class(DEVICE_CLASS))
        assert cluster.net is not None and cluster.agent is not None
        agent = cluster.agent
        for i, nic in enumerate(cluster.net.nics):
            for with_claim in (True, False):
                claims = {}
                if with_claim:
                    cluster.create(
                        "resource.k8s.io/v1", "resourceclaims", claim_body(f"tbc-{i}", [nic]), "default"
                    )
                    claims = {"net": f"tbc-{i}"}
                pod = cluster.make_pod(f"tbc-{'c' if with_claim else 'p'}-{i}", claims)
                try:
                    run = cluster.run_pod(pod)
                except SandboxError as exc:  # a loaded machine can miss the NRI budget: no sample
                    failed.append(str(exc))
                    cluster.remove_pod(pod, exc.run)
                    continue
                try:
                    took = timed(lambda run=run, pod=pod: agent.start_containers(run, pod, timeout=30))  # type: ignore[misc]
                    assert run.attempts == {"main": 1}, run.attempts
                    (claimed if with_claim else plain).append(took)
                finally:
                    cluster.remove_pod(pod, run)
        print()
        print(header())
        print(row("container start (CRI create+start), no claim", plain))
        print(row("container start (CRI create+start), claimed NIC: the hook runs", claimed))
        added = (statistics.median(claimed) - statistics.median(plain)) * 1000
        print(f"added by the hook at p50: {added:.1f} ms; sandboxes that failed (no sample): {len(failed)}")
    finally:
        cluster.stop()
        try:
            ctrd.down()
        except Exception as exc:
            print(f"containerd down: {exc}")
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    if os.geteuid() != 0:
        print("bench_cdi: needs root (network namespaces, containerd); skipped")
        return 0
    print("(a) the hook process")
    bench_hook()
    print("\n(b) container start on the real containerd")
    bench_containers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
