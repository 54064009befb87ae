"""The worker behind the real bus: attach/detach/list/ping, the attachments topic, oversize requests,
and `dranet cdi-hook` asking it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dranet.services.netns.main import handlers
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusClient, BusError, Subscriber
from dranet.service import ServiceHost

pytestmark = pytest.mark.kernel


@pytest.fixture
def bus(testbed: Callable[[str], Testbed], tmp_path: Path) -> Iterator[tuple[Testbed, BusClient, str]]:
    tb = testbed("tnb")
    ns = argparse.Namespace(
        runtime_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"), log_level="warning"
    )
    svc = ServiceHost("netns", ns, drop_caps=False, install_signals=False)
    worker = NetnsWorker(ns.state_dir, host_netns=tb.node_path, publish=svc.publish)
    worker.start(watch_interval=0)
    svc.serve(handlers(worker), health=worker.health, snapshots={"attachments": worker.queries.attachments})
    client = BusClient(ns.runtime_dir, "netns", timeout=10)
    try:
        yield tb, client, ns.runtime_dir
    finally:
        client.close()
        svc.close()
        worker.close()


def test_attach_list_detach_over_bus(bus: tuple[Testbed, BusClient, str]) -> None:
    tb, client, runtime = bus
    tb.add_nic("tnwq0", addresses=("10.1.0.2/24",))
    pod = tb.add_netns()
    seen: list[dict] = []
    got = threading.Event()

    def on_message(_topic: str, body: dict) -> None:
        seen.append(body)
        if body.get("state") == "attached":
            got.set()

    sub = Subscriber(runtime, "netns", ["attachments"], on_message)
    sub.start()
    try:
        assert sub.synced.wait(5)
        req = {
            "pod_uid": "pod-q",
            "netns": f"/run/netns/{pod}",
            "devices": [
                {
                    "device": "q0",
                    "ifname": "tnwq0",
                    "config": {"interface": {"name": "eth0"}},
                    "claim_uid": "c1",
                }
            ],
        }
        res = client.call("attach", req)
        assert [(a["device"], a["pod_ifname"], a["state"]) for a in res["attachments"]] == [
            ("q0", "eth0", "attached")
        ]
        assert client.call("attach", req) == res  # idempotent over the bus too
        assert [a["device"] for a in client.call("list")["attachments"]] == ["q0"]
        assert got.wait(5)
        event = next(b for b in seen if b.get("state") == "attached")
        assert event["claim_uid"] == "c1" and event["network_data"]["interfaceName"] == "eth0"
        assert client.call("ping")["details"]["attachments"] == 1
        assert client.call("detach", {"pod_uid": "pod-q", "devices": []}) == {"released": ["q0"]}
        assert client.call("list") == {"attachments": []}
    finally:
        sub.close()


def test_errors_over_bus(bus: tuple[Testbed, BusClient, str]) -> None:
    tb, client, _ = bus
    pod = tb.add_netns()
    with pytest.raises(BusError) as err:
        client.call(
            "attach",
            {
                "pod_uid": "p",
                "netns": f"/run/netns/{pod}",
                "devices": [{"device": "x", "ifname": "nope0", "config": {}}],
            },
        )
    assert err.value.code == "not_found"
    with pytest.raises(BusError) as err:
        client.call("attach", {"pod_uid": "p", "netns": f"/run/netns/{pod}", "devices": "x"})
    assert err.value.code == "bad_request"
    huge = {"interface": {"name": "eth0"}, "pad": "x" * (5 * 1024 * 1024)}
    with pytest.raises(BusError) as err:
        client.call(
            "attach",
            {
                "pod_uid": "p",
                "netns": f"/run/netns/{pod}",
                "devices": [{"device": "x", "ifname": "nope0", "config": huge}],
            },
        )
    assert err.value.code == "too_large"


# ------------------------------------------------------------------ the CDI hook against the worker
# `dranet cdi-hook` as the runtime runs it: a process in a pod netns stands in for the container's
# init process (the runtime passes its pid in the OCI state); the hook must pass only when the
# claim's device is attached in that netns.


def in_netns(name: str) -> subprocess.Popen[bytes]:
    """A process in the pod netns: the container's init process as the hook sees it."""
    return subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"])


def hook(runtime: str, pid: int, wait: float = 1.0, device: str = "q0") -> subprocess.CompletedProcess[str]:
    state = {
        "ociVersion": "1.2.0",
        "id": "ctr1",
        "status": "creating",
        "pid": pid,
        "annotations": {
            "io.kubernetes.cri.sandbox-namespace": "default",
            "io.kubernetes.cri.sandbox-name": "web-0",
        },
    }
    argv = [
        sys.executable,
        "-m",
        "dranet",
        "cdi-hook",
        f"--runtime-dir={runtime}",
        "--claim=c1",
        f"--device={device}",
        f"--wait={wait}",
    ]
    return subprocess.run(argv, input=json.dumps(state), capture_output=True, text=True, timeout=30)


def attach(client: BusClient, pod: str) -> None:
    client.call(
        "attach",
        {
            "pod_uid": "pod-h",
            "netns": f"/run/netns/{pod}",
            "devices": [{"device": "q0", "ifname": "tnwq0", "config": {}, "claim_uid": "c1"}],
        },
    )


def wait_netns(proc: subprocess.Popen[bytes], pod: str) -> None:
    want = Path(f"/run/netns/{pod}").stat().st_ino
    for _ in range(200):
        try:
            if Path(f"/proc/{proc.pid}/ns/net").stat().st_ino == want:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError("the stand-in process did not enter the pod netns")


def test_passes_only_where_the_device_is_attached(bus: tuple[Testbed, BusClient, str]) -> None:
    tb, client, runtime = bus
    tb.add_nic("tnwq0")
    pod, other = tb.add_netns(), tb.add_netns()
    procs = [in_netns(pod), in_netns(other)]
    try:
        for p, name in zip(procs, (pod, other), strict=True):
            wait_netns(p, name)
        refused = hook(runtime, procs[0].pid, wait=0.5)  # nothing attached yet
        assert refused.returncode == 1
        assert "pod default/web-0, claim c1: q0 not attached" in refused.stderr
        attach(client, pod)
        ok = hook(runtime, procs[0].pid)
        assert ok.returncode == 0, ok.stderr
        # another pod's netns: the same device attached elsewhere does not count
        assert hook(runtime, procs[1].pid, wait=0.3).returncode == 1
        assert hook(runtime, procs[0].pid, device="q9", wait=0.3).returncode == 1
        client.call("detach", {"pod_uid": "pod-h", "devices": []})
        assert hook(runtime, procs[0].pid, wait=0.3).returncode == 1
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_waits_for_an_attach_that_lands_within_the_wait(bus: tuple[Testbed, BusClient, str]) -> None:
    tb, client, runtime = bus
    tb.add_nic("tnwq0")
    pod = tb.add_netns()
    proc = in_netns(pod)
    try:
        wait_netns(proc, pod)
        late = threading.Timer(0.8, attach, (client, pod))
        late.start()
        res = hook(runtime, proc.pid, wait=5.0)
        late.join()
        assert res.returncode == 0, res.stderr
    finally:
        proc.kill()
        proc.wait()


def test_refuses_when_the_worker_is_not_there(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        res = hook(str(tmp_path / "run"), proc.pid, wait=0.5)
        assert res.returncode == 1
        assert "the netns worker did not answer (timeout" in res.stderr
    finally:
        proc.kill()
        proc.wait()
