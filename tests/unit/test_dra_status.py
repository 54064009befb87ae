"""ResourceClaim.status.devices: entries, merging with other drivers, the background writer."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from dranet.services.dra.model import PreparedClaim, PreparedDevice
from dranet.services.dra.status import StatusWriter, device_entry, keep_transition_times, network_of

DRIVER = "dra.net"


def claim() -> PreparedClaim:
    return PreparedClaim(
        uid="u1",
        namespace="ns",
        name="c1",
        pod_uids=["pod-1"],
        devices=[PreparedDevice(request="nic", pool="node-a", device="eth1", ifname="eth1", config={})],
    )


def wait_for(cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_device_entry_ready_and_failed() -> None:
    ok = device_entry(
        DRIVER,
        "p",
        "d",
        ready=True,
        network={"interfaceName": "net1", "ips": ["10.0.0.2/24"], "hardwareAddress": "aa"},
    )
    assert ok["conditions"][0]["status"] == "True" and ok["conditions"][0]["reason"] == "NetworkDeviceReady"
    assert ok["networkData"] == {"interfaceName": "net1", "ips": ["10.0.0.2/24"], "hardwareAddress": "aa"}
    bad = device_entry(DRIVER, "p", "d", ready=False, message="kernel_error: move failed")
    assert bad["conditions"][0]["status"] == "False"
    assert bad["conditions"][0]["reason"] == "NetworkDeviceAttachFailed"
    assert bad["conditions"][0]["message"] == "kernel_error: move failed"
    assert "networkData" not in bad


def test_network_of_accepts_both_spellings() -> None:
    assert network_of({"pod_ifname": "net1", "ips": ["1.2.3.4/32"], "hardware_address": "aa"}) == {
        "interfaceName": "net1",
        "ips": ["1.2.3.4/32"],
        "hardwareAddress": "aa",
    }
    nd = {"network_data": {"interface_name": "n", "ips": [], "hardware_address": "b"}}
    assert network_of(nd)["interfaceName"] == "n"


def test_transition_time_kept_while_the_status_holds() -> None:
    old = device_entry(DRIVER, "node-a", "eth1", ready=True)
    old["conditions"][0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    new = device_entry(DRIVER, "node-a", "eth1", ready=True, network={"interfaceName": "net1"})
    kept = keep_transition_times(old, new)
    assert kept["conditions"][0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert kept["networkData"] == {"interfaceName": "net1"}
    flipped = keep_transition_times(kept, device_entry(DRIVER, "node-a", "eth1", ready=False))
    assert flipped["conditions"][0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert keep_transition_times(None, new) == new


class FakeAPI:
    def __init__(self, fail: int = 0) -> None:
        self.claim: dict[str, Any] | None = {"metadata": {"uid": "u1", "name": "c1"}, "status": {}}
        self.fail = fail
        self.calls = 0
        self.lock = threading.Lock()

    def apply_status(
        self, namespace: str, name: str, uid: str, devices: list[dict[str, Any]], manager: str
    ) -> bool:
        """Our entries only, as server-side apply sends them (the real semantics are tested against
        the local API server in test_apiserver_apply.py and test_dra_kubelet_contract.py)."""
        with self.lock:
            self.calls += 1
            if self.fail > 0:
                self.fail -= 1
                raise ConnectionError("API server unreachable")
            if self.claim is None or self.claim["metadata"]["uid"] != uid:
                return False
            assert manager == DRIVER and all(d["driver"] == DRIVER for d in devices)
            self.claim["status"] = {"devices": copy.deepcopy(devices)} if devices else {}
            return True

    def devices(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(((self.claim or {}).get("status") or {}).get("devices") or [])


def writer(api: FakeAPI) -> StatusWriter:
    c = claim()
    w = StatusWriter(
        api,
        DRIVER,
        claim_of=lambda cu, pu, d: c if (cu == "u1" or pu == "pod-1") else None,
        initial_backoff=0.01,
        max_backoff=0.05,
    )
    w.start()
    return w


def test_attach_success_then_detach_and_clear() -> None:
    api = FakeAPI()
    w = writer(api)
    try:
        w.on_message(
            "attachments",
            {
                "pod_uid": "pod-1",
                "device": "eth1",
                "state": "attached",
                "pod_ifname": "net1",
                "ips": ["10.1.0.2/24"],
                "hardware_address": "aa:bb",
            },
        )
        wait_for(lambda: len(api.devices()) == 1)
        entry = api.devices()[0]
        assert entry["driver"] == DRIVER and entry["pool"] == "node-a" and entry["device"] == "eth1"
        assert entry["conditions"][0]["status"] == "True"
        assert entry["networkData"]["interfaceName"] == "net1"
        w.clear(claim())
        wait_for(lambda: api.devices() == [])
        wait_for(w.idle)
    finally:
        w.close()


def test_attach_failure_writes_false_condition() -> None:
    api = FakeAPI()
    w = writer(api)
    try:
        w.on_message(
            "attachments",
            {
                "claim_uid": "u1",
                "pod_uid": "pod-1",
                "device": "eth1",
                "state": "failed",
                "error": "invalid_config: routes[0].gateway: not reachable",
            },
        )
        wait_for(lambda: len(api.devices()) == 1)
        cond = api.devices()[0]["conditions"][0]
        assert cond["status"] == "False" and "routes[0].gateway" in cond["message"]
    finally:
        w.close()


def test_snapshot_body_and_unknown_devices() -> None:
    api = FakeAPI()
    w = writer(api)
    try:
        w.on_message(
            "attachments",
            {
                "attachments": [
                    {"pod_uid": "other-pod", "device": "eth9", "state": "attached"},  # not ours: ignored
                    {"pod_uid": "pod-1", "device": "eth1", "state": "attached", "pod_ifname": "eth1"},
                ]
            },
        )
        wait_for(lambda: len(api.devices()) == 1)
    finally:
        w.close()


def test_retries_with_backoff_until_the_api_server_answers() -> None:
    api = FakeAPI(fail=3)
    w = writer(api)
    try:
        w.on_message("attachments", {"pod_uid": "pod-1", "device": "eth1", "state": "attached"})
        wait_for(lambda: len(api.devices()) == 1)
        assert api.calls >= 4
    finally:
        w.close()


def test_claim_gone_is_not_retried() -> None:
    api = FakeAPI()
    api.claim = None
    w = writer(api)
    try:
        w.clear(claim())
        wait_for(w.idle)
        time.sleep(0.05)
        assert api.calls == 1 and w.pending() == 0
    finally:
        w.close()


def test_disabled_ebpf_programs_are_named_in_a_condition() -> None:
    """disableEbpfPrograms: the claim status says which programs the attach took off."""
    api = FakeAPI()
    w = writer(api)
    try:
        detached = ["tc ingress dummy_bpf.o:[classifier]", "tcx ingress handle_ingress"]
        w.on_message(
            "attachments",
            {"pod_uid": "pod-1", "device": "eth1", "state": "attached", "ebpf_detached": detached},
        )
        wait_for(lambda: len(api.devices()) == 1)
        conds = {c["type"]: c for c in api.devices()[0]["conditions"]}
        assert conds["Ready"]["status"] == "True"
        ebpf = conds["EBPFProgramsDetached"]
        assert ebpf["status"] == "True" and ebpf["reason"] == "DisableEbpfPrograms"
        assert "tc ingress dummy_bpf.o:[classifier]; tcx ingress handle_ingress" in ebpf["message"]
    finally:
        w.close()
    plain = device_entry(DRIVER, "p", "d", ready=True)
    assert [c["type"] for c in plain["conditions"]] == ["Ready"]
    none = device_entry(DRIVER, "p", "d", ready=True, ebpf_detached=[])
    assert "had no tc, tcx or XDP program" in none["conditions"][1]["message"]
