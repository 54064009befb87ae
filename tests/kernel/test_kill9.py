"""kill -9 at random moments: no NIC lost, no prepared claim lost.

The netns worker runs as a real process in a node netns while two clients attach and detach
their pods' NICs over the bus; the dra service runs as a real process while two kubelet stand-ins
prepare and unprepare claims over gRPC. Each is killed with SIGKILL at a seeded random moment,
restarted, and checked:

- every NIC is either in the pod the worker lists it attached to, configured as asked, or back on
  the host exactly as it was (name, MTU, MAC, state, addresses, routes); nothing else is in a pod;
- the checkpoint holds every claim whose last prepare was answered OK, and none whose last
  unprepare was, and the restarted dra serves them.

The seed is printed; DRANET_TEST_SEED=<seed> reproduces a run.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dranet.services.dra.checkpoint import Checkpoint
from dranet.services.netns.testbed import Testbed, ip_json
from workerproc import WorkerNode

from dranet.bus import BusClient, BusError

pytestmark = pytest.mark.kernel
ROUNDS = 8
NICS = 3
PODS = {"pod-a": (0, 1), "pod-b": (2,)}  # pod UID -> its NICs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from dra_kubelet import DRIVER, NODE, Harness, device, wait_for  # noqa: E402


def seeded(name: str) -> random.Random:
    seed = int(os.environ.get("DRANET_TEST_SEED", random.randrange(2**32)))
    print(f"{name}: seed {seed} (DRANET_TEST_SEED={seed} reproduces)")
    return random.Random(seed)


def run_until_killed(
    proc: subprocess.Popen[str], rng: random.Random, workers: list[Callable[[threading.Event], None]]
) -> None:
    """Run the clients, SIGKILL the process at a random moment, then stop the clients."""
    stop = threading.Event()
    threads = [threading.Thread(target=w, args=(stop,)) for w in workers]
    for t in threads:
        t.start()
    try:
        stop.wait(rng.uniform(0.05, 1.5))
        proc.kill()
        proc.wait()
    finally:
        stop.set()
        for t in threads:
            t.join()


# ---------------------------------------------------------------- the netns worker


def nic_config(i: int) -> dict[str, Any]:
    return {
        "interface": {
            "name": f"net{i}",
            "addresses": [f"10.9.{i}.2/24"],
            "mtu": 1400,
            "hardwareAddr": f"02:aa:00:00:00:{i:02x}",
        },
        "routes": [{"destination": f"10.7{i}.0.0/16", "gateway": f"10.9.{i}.1"}],
    }


def link_view(tb: Testbed, name: str, ns: str | None = None) -> tuple[Any, ...] | None:
    link = tb.link(name, ns=ns)
    if link is None:
        return None
    routes = sorted((r.get("dst"), r.get("gateway")) for r in tb.routes(name, ns=ns))
    return (
        link["mtu"],
        link["address"],
        "UP" in link["flags"],
        tuple(tb.addresses(name, ns=ns)),
        tuple(routes),
    )


def pod_links(ns: str) -> set[str]:
    return {link["ifname"] for link in ip_json("link", "show", ns=ns) if link["ifname"] != "lo"}


@pytest.fixture
def node(worker_node: WorkerNode) -> WorkerNode:
    for i in range(NICS):
        # The host's route moves with the link: its gateway is on-link for the claimed address.
        worker_node.tb.add_nic(f"tnks{i}", addresses=(f"10.9.{i}.3/24",), mtu=1450)
        ip_args = ("route", "add", f"10.5{i}.0.0/16", "via", f"10.9.{i}.1")
        subprocess.run(["ip", "-n", worker_node.tb.node, *ip_args], check=True)
    return worker_node


def check_nics(node: WorkerNode, netns: dict[str, str], before: dict[int, Any], rnd: int) -> None:
    client = BusClient(node.runtime_dir, "netns")
    try:
        listed = {a["device"]: a for a in client.call("list", timeout=5)["attachments"]}
    finally:
        client.close()
    expected_in_pod: dict[str, set[str]] = {ns: set() for ns in netns.values()}
    for i in range(NICS):
        where = f"round {rnd}, NIC {i}"
        a = listed.get(f"k{i}")
        if a is None:
            assert link_view(node.tb, f"tnks{i}") == before[i], f"{where}: not back on the host as it was"
            continue
        assert a["state"] == "attached", f"{where}: {a}"
        pod = netns[a["pod_uid"]]
        view = link_view(node.tb, f"net{i}", ns=pod)
        assert view is not None, f"{where}: listed attached to {a['pod_uid']} but not in its netns"
        mtu, mac, up, addresses, routes = view
        assert (mtu, mac, up, addresses) == (1400, f"02:aa:00:00:00:{i:02x}", True, (f"10.9.{i}.2/24",)), (
            where
        )
        assert (f"10.7{i}.0.0/16", f"10.9.{i}.1") in routes, where
        assert node.tb.link(f"tnks{i}") is None, f"{where}: in a pod and on the host"
        expected_in_pod[pod].add(f"net{i}")
    for pod, names in expected_in_pod.items():
        assert pod_links(pod) == names, f"round {rnd}: untracked links in {pod}"


def test_kill9_worker_during_attach_and_detach(node: WorkerNode) -> None:
    rng = seeded("worker")
    tb = node.tb
    before = {i: link_view(tb, f"tnks{i}") for i in range(NICS)}
    netns = {pod_uid: tb.add_netns() for pod_uid in PODS}

    requests = {
        pod_uid: {
            "pod_uid": pod_uid,
            "netns": f"/run/netns/{netns[pod_uid]}",
            "devices": [
                {"device": f"k{i}", "ifname": f"tnks{i}", "config": nic_config(i)} for i in PODS[pod_uid]
            ],
        }
        for pod_uid in PODS
    }

    def cycle(pod_uid: str, seed: int) -> Callable[[threading.Event], None]:
        request = requests[pod_uid]

        def run(stop: threading.Event) -> None:
            client = BusClient(node.runtime_dir, "netns")
            r = random.Random(seed)
            try:
                while not stop.is_set():
                    op, body = r.choice(
                        [("attach", request), ("detach", {"pod_uid": pod_uid, "devices": []})]
                    )
                    try:
                        client.call(op, body, timeout=2)
                    except BusError:
                        pass  # killed under it, or not attached yet: the checks say what holds
            finally:
                client.close()

        return run

    for rnd in range(ROUNDS):
        proc = node.start(f"round{rnd}")
        if rnd == 0:  # as dra at prepare; the grants are kept across the worker's restarts
            for p in PODS:
                node.grant(p, requests[p]["devices"])
        check_nics(node, netns, before, rnd)  # after the restart's reconcile
        run_until_killed(proc, rng, [cycle(p, rng.randrange(2**32)) for p in PODS])
    proc = node.start("last")
    try:
        check_nics(node, netns, before, ROUNDS)
        client = BusClient(node.runtime_dir, "netns")
        try:
            for pod_uid in PODS:
                client.call("detach", {"pod_uid": pod_uid, "devices": []}, timeout=10)
        finally:
            client.close()
        assert {i: link_view(tb, f"tnks{i}") for i in range(NICS)} == before
    finally:
        node.stop(proc, "last")


# ---------------------------------------------------------------- dra


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(inventory=[device(f"eth{i}") for i in range(1, 5)])
    try:
        yield h
    finally:
        h.close()


def start_dra(h: Harness, name: str) -> subprocess.Popen[str]:
    root = h.root
    with open(root / f"{name}.log", "w") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "dranet", "dra", "--node-name", NODE, "--log-level", "info"),
                *("--runtime-dir", str(root / "run"), "--state-dir", str(root / "state")),
                *("--kubeconfig", str(root / "kubeconfig"), "--kubelet-registry-dir", str(root / "reg")),
                *("--kubelet-plugins-dir", str(root / "plugins")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
    client = BusClient(root / "run", "dra")

    def serving() -> bool:
        assert proc.poll() is None, (root / f"{name}.log").read_text()
        try:
            if client.call("ping", timeout=0.2)["pid"] != proc.pid:
                return False  # a stale socket of the killed one
            return h.kubelet.prepare(endpoint(h), []) == {}
        except (BusError, grpc.RpcError):
            return False

    try:
        wait_for(serving, timeout=20, what="dra serving")
    finally:
        client.close()
    return proc


def endpoint(h: Harness) -> str:
    return str(h.root / "plugins" / DRIVER / "dra.sock")


def test_kill9_dra_during_prepare_and_unprepare(harness: Harness) -> None:
    rng = seeded("dra")
    claims = [harness.cluster.create_claim(devices=[f"eth{i}"], pods=[f"pod-{i}"]) for i in range(1, 5)]
    # uid -> the answered outcome of its last call: "prepared", "unprepared", or None (no answer)
    last: dict[str, str | None] = {uid: "unprepared" for _, uid, _ in claims}
    lock = threading.Lock()

    def cycle(mine: list[tuple[str, str, str]], seed: int) -> Callable[[threading.Event], None]:
        def run(stop: threading.Event) -> None:
            r = random.Random(seed)
            while not stop.is_set():
                claim = r.choice(mine)
                uid = claim[1]
                prepare = last[uid] != "prepared" if last[uid] is not None else r.random() < 0.5
                with lock:
                    last[uid] = None  # from here until an answer, either outcome is legal
                try:
                    if prepare:
                        ok = harness.kubelet.prepare(endpoint(harness), [claim])[uid][1] == ""
                    else:
                        ok = harness.kubelet.unprepare(endpoint(harness), [claim])[uid] == ""
                except grpc.RpcError:
                    continue  # killed under it: no answer
                if ok:
                    with lock:
                        last[uid] = "prepared" if prepare else "unprepared"

        return run

    for rnd in range(ROUNDS):
        proc = start_dra(harness, f"round{rnd}")
        run_until_killed(
            proc, rng, [cycle(claims[:2], rng.randrange(2**32)), cycle(claims[2:], rng.randrange(2**32))]
        )
        stored = Checkpoint(harness.root / "state" / "dra").load()
        for uid, outcome in last.items():
            if outcome == "prepared":
                assert uid in stored, f"round {rnd}: claim {uid} was prepared OK but is not in the checkpoint"
            elif outcome == "unprepared":
                assert uid not in stored, f"round {rnd}: claim {uid} was unprepared OK but is still there"
    proc = start_dra(harness, "last")
    try:
        stored = Checkpoint(harness.root / "state" / "dra").load()
        client = BusClient(harness.root / "run", "dra")
        try:
            assert {c["uid"] for c in client.call("claims", timeout=5)["claims"]} == set(stored)
        finally:
            client.close()
        for claim in claims:
            if claim[1] in stored:  # the restarted dra answers a repeated prepare from its checkpoint
                assert harness.kubelet.prepare(endpoint(harness), [claim])[claim[1]][1] == ""
            assert harness.kubelet.unprepare(endpoint(harness), [claim])[claim[1]] == ""
        assert Checkpoint(harness.root / "state" / "dra").load() == {}
    finally:
        proc.terminate()
        proc.wait(30)
