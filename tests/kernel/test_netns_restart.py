"""Restart safety: kill -9 of the worker mid-attach, then a new worker reconciles from its journal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed, ip
from dranet.services.netns.worker import NetnsWorker

pytestmark = pytest.mark.kernel

CONFIG = {
    "interface": {
        "name": "eth0",
        "addresses": ["10.9.0.2/24"],
        "mtu": 1400,
        "hardwareAddr": "02:aa:bb:cc:dd:03",
    },
    "routes": [{"destination": "10.77.0.0/16", "gateway": "10.9.0.1"}],
}

# A worker process that attaches and stops dead at `step` (prints PAUSED, then sleeps until killed).
CHILD = textwrap.dedent(
    """
    import sys, time
    from dranet.services.netns.worker import NetnsWorker
    state, node, pod, step, config = sys.argv[1:6]
    import json
    at_step, _, at_device = step.partition("@")
    devices = [{"device": "k0", "ifname": "tnwk0", "config": json.loads(config)}]
    if at_device:  # a second device, so the kill can land between the two
        devices.append({"device": "k1", "ifname": "tnwk1", "config": {"interface": {"name": "net1"}}})
    def hook(s, d):
        if s == at_step and d == (at_device or d):
            print("PAUSED", flush=True)
            time.sleep(3600)
    w = NetnsWorker(state, host_netns=node, hook=hook)
    w.attach("pod-k", pod, devices)
    print("DONE", flush=True)
    time.sleep(3600)
    """
)


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    bed = testbed("tnt")
    # The host's route moves with the link: its gateway is on-link for the claimed 10.9.0.2/24.
    bed.add_nic("tnwk0", addresses=("10.9.0.3/24",), mtu=1450)
    ip("route", "add", "10.50.0.0/16", "via", "10.9.0.1", ns=bed.node)
    return bed


def host_view(tb: Testbed, name: str = "tnwk0") -> tuple:
    link = tb.link(name)
    assert link is not None, f"{name} is not back on the host"
    return (
        link["mtu"],
        link["address"],
        "UP" in link["flags"],
        tuple(tb.addresses(name)),
        tuple(sorted((r.get("dst"), r.get("gateway")) for r in tb.routes(name))),
    )


def run_and_kill(tb: Testbed, state: Path, pod: str, step: str) -> None:
    import json

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(state),
            tb.node_path,
            f"/run/netns/{pod}",
            step,
            json.dumps(CONFIG),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert line in ("PAUSED", "DONE"), line
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("step", ["move", "lookup", "addresses", "up", "routes", "journal"])
def test_kill_mid_attach_then_reconcile_restores(tb: Testbed, tmp_path: Path, step: str) -> None:
    before = host_view(tb)
    pod = tb.add_netns()
    run_and_kill(tb, tmp_path, pod, step)
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        w.start(watch_interval=0)
        assert host_view(tb) == before
        assert tb.link("eth0", ns=pod) is None
        assert w.queries.attachments() == {"attachments": []}
        # and the device can be attached again afterwards
        w.attach("pod-k", f"/run/netns/{pod}", [{"device": "k0", "ifname": "tnwk0", "config": CONFIG}])
        w.detach("pod-k")
        assert host_view(tb) == before
    finally:
        w.close()


def test_kill_after_attach_keeps_attachment(tb: Testbed, tmp_path: Path) -> None:
    before = host_view(tb)
    pod = tb.add_netns()
    run_and_kill(tb, tmp_path, pod, "never")
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        w.start(watch_interval=0)
        atts = w.queries.attachments()["attachments"]
        assert [(a["device"], a["state"], a["pod_ifname"]) for a in atts] == [("k0", "attached", "eth0")]
        assert tb.addresses("eth0", ns=pod) == ["10.9.0.2/24"]
        # repeat of the same attach after the restart: success, nothing touched
        res = w.attach("pod-k", f"/run/netns/{pod}", [{"device": "k0", "ifname": "tnwk0", "config": CONFIG}])
        assert res["attachments"][0]["hardware_address"] == "02:aa:bb:cc:dd:03"
        w.detach("pod-k", ["k0"])
        assert host_view(tb) == before
    finally:
        w.close()


def test_netns_gone_while_worker_down(tb: Testbed, tmp_path: Path) -> None:
    """The pod netns died while no worker held it: the veth died with it (the kernel's rule for
    virtual devices); reconcile drops the entry instead of looping on it."""
    pod = tb.add_netns()
    run_and_kill(tb, tmp_path, pod, "never")
    tb.del_netns(pod)
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        w.start(watch_interval=0)
        assert w.queries.attachments() == {"attachments": []}
        assert list(w.journal.dir.glob("*.json")) == []
    finally:
        w.close()


@pytest.mark.parametrize("step", ["move@k1", "up@k1", "journal@k1"])
def test_kill_between_devices_restores_both(tb: Testbed, tmp_path: Path, step: str) -> None:
    """Both devices' snapshots are journaled (one write) before the first change: a kill after k0
    is configured and before or during k1 restores both, and k1 was never left half-done."""
    tb.add_nic("tnwk1", addresses=("10.2.0.2/24",))
    before = (host_view(tb), host_view(tb, "tnwk1"))
    pod = tb.add_netns()
    run_and_kill(tb, tmp_path, pod, step)
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        w.start(watch_interval=0)
        assert (host_view(tb), host_view(tb, "tnwk1")) == before
        assert tb.link("eth0", ns=pod) is None and tb.link("net1", ns=pod) is None
        assert w.queries.attachments() == {"attachments": []}
        assert list(w.journal.dir.glob("*.json")) == []
    finally:
        w.close()
