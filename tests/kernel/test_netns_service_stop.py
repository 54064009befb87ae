"""The netns service stops cleanly and starts in order, as a real process in a node netns.

SIGTERM while a pod is attached and requests are in flight sometimes aborted in ZeroMQ
(`Assertion failed: pfd.revents & POLLIN (src/signaler.cpp)`: a handler thread's socket closed
under it by the context teardown) or hung; at start, the reconcile published before the bus
served (`publish() before serve()`) and its events were lost. Repeated, with a seeded random
delay before each SIGTERM (the seed is printed).
"""

from __future__ import annotations

import os
import random
import threading

import pytest
from workerproc import WorkerNode

from dranet.bus import BusClient, BusError, Subscriber

pytestmark = pytest.mark.kernel
ROUNDS = 12


def attach_request(pod: str) -> dict:
    return {
        "pod_uid": "pod-k",
        "netns": f"/run/netns/{pod}",
        "devices": [{"device": "k0", "ifname": "tnks0", "config": {"interface": {"name": "eth0"}}}],
    }


@pytest.fixture
def node(worker_node: WorkerNode) -> WorkerNode:
    worker_node.tb.add_nic("tnks0", addresses=("10.1.0.2/24",))
    return worker_node


def test_sigterm_with_an_attached_pod_and_requests_in_flight(node: WorkerNode) -> None:
    seed = int(os.environ.get("DRANET_TEST_SEED", random.randrange(2**32)))
    print(f"seed {seed} (DRANET_TEST_SEED={seed} reproduces)")
    rng = random.Random(seed)
    pod = node.tb.add_netns()
    request = attach_request(pod)
    for rnd in range(ROUNDS):
        name = f"round{rnd}"
        proc = node.start(name)
        if rnd == 0:
            node.grant("pod-k", request["devices"])
        stop = threading.Event()

        def load(stop: threading.Event = stop) -> None:
            # Idempotent re-attaches and lists: handler threads busy when SIGTERM lands.
            client = BusClient(node.runtime_dir, "netns")
            try:
                while not stop.is_set():
                    try:
                        client.call("attach", request, timeout=2)
                        client.call("list", timeout=2)
                    except BusError:
                        pass
            finally:
                client.close()

        sub = Subscriber(node.runtime_dir, "netns", ["attachments"], lambda _t, _b: None)
        sub.start()
        threads = [threading.Thread(target=load) for _ in range(4)]
        try:
            for t in threads:
                t.start()
            stop.wait(rng.uniform(0.05, 0.8))
            node.stop(proc, name)
        finally:
            stop.set()
            for t in threads:
                t.join()
            sub.close()
            node.kill(proc)
        # The pod kept its NIC through every stop and start.
        assert node.tb.link("eth0", ns=pod) is not None, f"round {rnd}: NIC not in the pod"
    proc = node.start("last")
    client = BusClient(node.runtime_dir, "netns")
    try:
        assert client.call("detach", {"pod_uid": "pod-k", "devices": []}, timeout=10) == {"released": ["k0"]}
    finally:
        client.close()
        node.stop(proc, "last")
    assert node.tb.link("tnks0") is not None


def test_reconcile_publishes_after_the_bus_serves(node: WorkerNode) -> None:
    """A restore at start (the pod's netns went while the worker was down) is published: the
    attachments topic's sequence number moved, and nothing was refused for publishing too early."""
    pod = node.tb.add_netns()
    proc = node.start("first")
    node.grant("pod-k", attach_request(pod)["devices"])
    client = BusClient(node.runtime_dir, "netns")
    try:
        client.call("attach", attach_request(pod), timeout=10)
    finally:
        node.stop(proc, "first")
    node.tb.del_netns(pod)  # the veth goes with it (the kernel's rule for virtual devices)
    proc = node.start("second")
    try:
        snap = client.call("snapshot", {"topic": "attachments"}, timeout=5)
        assert snap["body"] == {"attachments": []}
        assert snap["seq"] >= 1, "the reconcile's 'detached' event was never published"
    finally:
        client.close()
        text = node.stop(proc, "second")
    assert "publish() before serve()" not in text
    assert '"msg":"detached"' in text
