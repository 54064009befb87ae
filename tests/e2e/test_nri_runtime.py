"""The NRI plugin against the real containerd 2.1 (collaborators faked: no dra, no worker).

Checks the protocol on the real runtime: registration, Configure's timeout, the netns path in
RunPodSandbox, an error that fails the sandbox, a slow attach answered within the budget without
losing the connection, a >4096-byte response split into frames, late attach after a plugin restart,
and reconnection after containerd restarts.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from dranet.services.nri.handlers import PodHandlers
from dranet.services.nri.plugin import NriPlugin, PluginOptions

from dranet.bus.messages import BusError
from localcluster.containerd import Containerd
from localcluster.cri import CriClient, CriError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


class Dra:
    """Pods whose name starts with "dev-" have one device; "rdma-" ones many RDMA char devices."""

    def __init__(self) -> None:
        self.by_uid: dict[str, list[dict[str, Any]]] = {}

    def pod_devices(self, pod_uid: str, timeout: float) -> list[dict[str, Any]]:
        return self.by_uid.get(pod_uid, [])


class Netns:
    def __init__(self) -> None:
        self.mode = "ok"  # ok | fail | slow
        self.attached: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        self.lock = threading.Lock()

    def attach(self, body: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        with self.lock:
            self.calls.append(("attach", body, timeout))
        if self.mode == "fail":
            raise BusError("invalid_config", "interface.mtu: 99999 is above the maximum 65535 (claim c1)")
        if self.mode == "slow":  # a worker slower than any budget: the client gives up at its deadline
            time.sleep(timeout)
            raise BusError("timeout", "no reply from netns")
        with self.lock:
            self.attached[body["pod_uid"]] = body
        return [
            {
                "pod_uid": body["pod_uid"],
                "device": d["device"],
                "pod_ifname": d["ifname"],
                "hardware_address": "",
                "ips": [],
                "state": "attached",
            }
            for d in body["devices"]
        ]

    def detach(self, body: dict[str, Any], timeout: float) -> list[str]:
        with self.lock:
            self.calls.append(("detach", body, timeout))
            gone = self.attached.pop(body["pod_uid"], None)
        return [d["device"] for d in gone["devices"]] if gone else []

    def attachments(self, timeout: float) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"pod_uid": u, "device": d["device"], "netns": b["netns"], "netns_id": b["netns"]}
                for u, b in self.attached.items()
                for d in b["devices"]
            ]

    def alive(self, paths: list[str], timeout: float) -> dict[str, str]:
        """This test runs in the node's mount namespace: a netns path that exists is alive."""
        return {p: p for p in paths if os.path.exists(p)}

    def last(self, op: str, pod_uid: str) -> tuple[dict[str, Any], float] | None:
        with self.lock:
            for o, body, timeout in reversed(self.calls):
                if o == op and body["pod_uid"] == pod_uid:
                    return body, timeout
        return None


class Harness:
    def __init__(self, ctrd: Containerd) -> None:
        self.ctrd = ctrd
        self.dra = Dra()
        self.netns = Netns()
        self.handlers = PodHandlers(self.dra, self.netns)
        self.plugin = self._new_plugin()

    def _new_plugin(self) -> NriPlugin:
        return NriPlugin(
            self.handlers,
            PluginOptions(
                socket_path=str(self.ctrd.nri_socket),
                name="dranet-test",
                index="10",
                backoff_initial=0.05,
                backoff_max=0.5,
            ),
        )

    def restart_plugin(self) -> None:
        self.plugin = self._new_plugin()
        self.plugin.start()

    def pod_with_device(self, prefix: str = "dev", **extra: Any) -> str:
        uid = f"{prefix}-{uuid.uuid4()}"
        self.dra.by_uid[uid] = [
            {"device": "eth9", "ifname": "net1", "config": {}, "claim_uid": "c1", **extra}
        ]
        return uid


def wait_for(cond: Any, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def name() -> str:
    return f"tnr-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def harness(containerd: Containerd) -> Iterator[Harness]:
    h = Harness(containerd)
    h.plugin.start()
    assert h.plugin.synchronized.wait(30), "the plugin did not register with containerd"
    yield h
    h.plugin.stop()
    h.handlers.close()


def test_registers_and_reads_the_request_timeout(harness: Harness) -> None:
    assert harness.plugin.connected.is_set()
    assert harness.plugin.runtime_name == "containerd"
    assert harness.plugin.runtime_version.startswith(harness.ctrd.version)
    assert harness.handlers.request_timeout == 2.0  # plugin_request_timeout from up.sh


def test_run_pod_sandbox_gets_the_pods_netns_and_stop_detaches(harness: Harness, cri: CriClient) -> None:
    uid = harness.pod_with_device()
    sid = cri.run_pod_sandbox(name(), uid=uid)
    status = cri.status(sid)
    attach = harness.netns.last("attach", uid)
    assert attach is not None
    body, timeout = attach
    assert status.netns and body["netns"] == status.netns
    assert 0 < timeout <= 1.5  # the 2 s runtime timeout minus the 0.5 s margin
    cri.stop_pod_sandbox(sid)
    detach = harness.netns.last("detach", uid)
    assert detach is not None and detach[0]["netns"] == status.netns
    cri.remove_pod_sandbox(sid)
    assert uid not in harness.netns.attached


def test_pod_without_devices_runs_untouched(harness: Harness, cri: CriClient) -> None:
    uid = str(uuid.uuid4())
    sid = cri.run_pod_sandbox(name(), uid=uid)
    assert cri.status(sid).state == "SANDBOX_READY"
    assert harness.netns.last("attach", uid) is None


def test_an_attach_error_fails_the_sandbox_with_our_message(harness: Harness, cri: CriClient) -> None:
    uid = harness.pod_with_device()
    harness.netns.mode = "fail"
    try:
        with pytest.raises(CriError) as err:
            cri.run_pod_sandbox(name(), uid=uid)
    finally:
        harness.netns.mode = "ok"
    assert "NRI RunPodSandbox failed" in err.value.details
    assert "interface.mtu: 99999" in err.value.details
    assert harness.netns.last("detach", uid) is not None  # nothing left half-attached
    assert uid not in [p["uid"] for p in cri.list_pod_sandboxes()]


def test_a_slow_attach_is_answered_within_the_budget_and_the_plugin_stays(
    harness: Harness, cri: CriClient
) -> None:
    connections = harness.plugin.connections
    log_start = harness.ctrd.log_path.stat().st_size  # earlier tests may have dropped plugins on purpose
    uid = harness.pod_with_device()
    harness.netns.mode = "slow"
    try:
        with pytest.raises(CriError) as err:
            cri.run_pod_sandbox(name(), uid=uid)
    finally:
        harness.netns.mode = "ok"
    assert "budget" in err.value.details  # our error, not the runtime's deadline
    # still the same connection: containerd did not drop us, and the next pod works
    assert harness.plugin.connected.is_set() and harness.plugin.connections == connections
    uid2 = harness.pod_with_device()
    cri.run_pod_sandbox(name(), uid=uid2)
    assert uid2 in harness.netns.attached
    assert "closing plugin" not in harness.ctrd.log_path.read_text()[log_start:]


def test_a_response_over_4096_bytes_is_split_into_frames(harness: Harness, cri: CriClient) -> None:
    connections = harness.plugin.connections
    log_start = harness.ctrd.log_path.stat().st_size
    chars = [{"path": f"/dev/tnr-test/uverbs{i}", "major": 231, "minor": i} for i in range(160)]
    uid = harness.pod_with_device("rdma", char_devices=chars)
    sid = cri.run_pod_sandbox(name(), uid=uid)
    cid = cri.create_container(sid, "app")  # CreateContainer's adjustment is ~6 KB
    assert cid
    assert harness.plugin.connected.is_set() and harness.plugin.connections == connections
    assert "closing plugin" not in harness.ctrd.log_path.read_text()[log_start:]


def test_late_attach_after_the_plugin_was_down(harness: Harness, cri: CriClient) -> None:
    harness.plugin.stop()
    uid = harness.pod_with_device()
    sid = cri.run_pod_sandbox(name(), uid=uid)  # nobody attaches: the plugin is down
    assert uid not in harness.netns.attached
    harness.restart_plugin()
    assert wait_for(lambda: uid in harness.netns.attached), "no late attach after reconnecting"
    assert harness.netns.attached[uid]["netns"] == cri.status(sid).netns


def test_reconnects_after_containerd_restarts(harness: Harness, cri: CriClient) -> None:
    assert harness.plugin.synchronized.wait(30)
    connections = harness.plugin.connections
    harness.ctrd.restart()
    assert wait_for(lambda: harness.plugin.connections > connections and harness.plugin.synchronized.is_set())
    uid = harness.pod_with_device()
    cri2 = CriClient(str(harness.ctrd.cri_socket))
    try:
        cri2.run_pod_sandbox(name(), uid=uid)
        assert uid in harness.netns.attached
    finally:
        cri2.cleanup()
        cri2.close()
