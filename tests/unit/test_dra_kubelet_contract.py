"""The dra service against the rules the real kubelet enforces (kubelet-contract in docs/dra-plugin.md),
played by the kubelet stand-in (localcluster.nodeagent) with its timeouts shortened."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dranet.services.discovery.main import plugin_state_of
from dranet.services.discovery.model import Device
from dranet.services.discovery.publisher import WIPE_GIVE_UP, PluginState, SlicePublisher, may_publish
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from dra_kubelet import DRIVER, NODE, Harness, device, opaque, wait_for

from dranet._generated import dra_health_v1alpha1_pb2 as hpb
from localcluster.nodeagent import HEALTHY, UNKNOWN, DeviceHealthCache, NodeAgent


def health_message(*devices: tuple[str, int, int]) -> hpb.NodeWatchResourcesResponse:
    return hpb.NodeWatchResourcesResponse(
        devices=[
            hpb.DeviceHealth(
                device=hpb.DeviceIdentifier(pool_name=NODE, device_name=name),
                health=health,  # type: ignore[arg-type]
                health_check_timeout_seconds=timeout,
            )
            for name, health, timeout in devices
        ]
    )


def test_the_stand_in_expires_health_like_the_kubelet() -> None:
    cache = DeviceHealthCache(default_timeout=30)
    cache.record(health_message(("a", hpb.HEALTHY, 0), ("b", hpb.HEALTHY, 60)), now=100.0)
    assert cache.get(NODE, "a", now=129.0)[0] == HEALTHY
    assert cache.get(NODE, "a", now=131.0)[0] == UNKNOWN  # the default timeout
    assert cache.get(NODE, "b", now=159.0)[0] == HEALTHY  # its own timeout
    cache.record(health_message(("a", hpb.HEALTHY, 0)), now=150.0)  # b missing from a later report
    assert cache.get(NODE, "a", now=170.0)[0] == HEALTHY
    assert cache.get(NODE, "b", now=161.0)[0] == UNKNOWN
    assert cache.get(NODE, "never", now=100.0)[0] == UNKNOWN


@pytest.fixture
def agent_and_harness() -> Iterator[tuple[NodeAgent, Harness]]:
    # "lo" is up with carrier in any netns: a device that stays healthy (read, never changed).
    # dra promises health for 3 s at a time (re-sent every 1 s: 2 s of slack on a loaded machine);
    # the stand-in's own default is 0.3 s, so a device reads Healthy throughout only if dra both
    # re-sends and says how long a report holds.
    h = Harness(inventory=[device("lo")], health_timeout=3.0)
    h.start_dra()
    agent = NodeAgent(h.root / "reg", str(h.root / "no-cri.sock"), health_timeout=0.3)
    try:
        yield agent, h
    finally:
        agent.close()
        h.close()


def test_a_healthy_device_never_reads_unknown(agent_and_harness: tuple[NodeAgent, Harness]) -> None:
    agent, h = agent_and_harness
    agent.register(timeout=10)
    agent.watch_health()
    claim = h.cluster.create_claim(devices=["lo"])
    assert h.kubelet.prepare(h.endpoint, [claim])[claim[1]][1] == ""
    wait_for(lambda: agent.device_health(NODE, "lo")[0] == HEALTHY, what="lo healthy")
    seen = set()
    end = time.monotonic() + 4.5  # longer than dra's timeout, 15 times the stand-in's default
    while time.monotonic() < end:
        seen.add(agent.device_health(NODE, "lo"))
        time.sleep(0.05)
    assert {health for health, _ in seen} == {HEALTHY}, seen


def test_ready_only_once_the_kubelet_registered_it() -> None:
    h = Harness()
    dra = h.start_dra()
    try:
        ping = h.bus("ping")
        assert ping["healthy"] is True and ping["ready"] is False
        assert "not registered with the kubelet" in ping["details"]["not_ready"]
        stub, ch = h.kubelet.registration(dra.registration_path)
        with ch:
            stub.NotifyRegistrationStatus(
                h.kubelet.reg_pb.RegistrationStatus(plugin_registered=True), timeout=5
            )
        ping = h.bus("ping")
        assert ping["healthy"] is True and ping["ready"] is True and "not_ready" not in ping["details"]
    finally:
        h.close()


# ------------------------------------------------------------------ slices and the kubelet's wipes


def test_publishing_waits_for_the_plugin_pure() -> None:
    registered = PluginState(registered=True, registered_at=1000.0)
    assert may_publish(registered, 0.0, 2000.0) == (True, "")
    assert not may_publish(None, 0.0, 2000.0)[0]  # dra does not answer
    assert not may_publish(PluginState(False, 0.0), 0.0, 2000.0)[0]
    assert not may_publish(PluginState(True, 1000.0, serving=False), 0.0, 2000.0)[0]
    # wiped after the last registration: wait for the kubelet to register the plugin again
    assert "register the plugin again" in may_publish(registered, 1500.0, 1600.0)[1]
    assert may_publish(PluginState(True, 1501.0), 1500.0, 1600.0)[0]
    assert may_publish(PluginState(True, 1498.0), 1500.0, 1600.0)[0]  # registered just before we saw it
    assert may_publish(registered, 1500.0, 1500.0 + WIPE_GIVE_UP)[0]  # someone else deleted them


def test_slices_only_while_the_kubelet_can_use_the_plugin() -> None:
    h = Harness()
    api = h.cluster.api_client
    client.CoreV1Api(api).create_node(client.V1Node(metadata=client.V1ObjectMeta(name=NODE)))
    resources = client.ResourceV1Api(api)

    def slices() -> list[str]:
        items = resources.list_resource_slice(field_selector=f"spec.nodeName={NODE}").items
        return sorted(o.metadata.name for o in items)

    publisher = SlicePublisher(lambda: api, NODE, DRIVER, plugin_state=plugin_state_of(h.root / "run"))
    agent = NodeAgent(
        h.root / "reg", str(h.root / "no-cri.sock"), api_client=api, node_name=NODE, wipe_delay=0.5
    )
    publisher.start()
    publisher.set_devices([Device("eth1", "eth1")])
    try:
        h.start_dra()
        # dra serves, but no kubelet has registered it: nothing may be published
        wait_for(lambda: "not registered" in publisher.waiting, what="the publisher to wait for the plugin")
        assert slices() == []
        agent.start()  # the kubelet starts: wipes the node's slices, registers the plugin
        wait_for(slices, what="slices once the plugin is registered")
        assert agent.wipes == [f"spec.nodeName={NODE}"]

        h.stop_dra()  # the plugin is gone: after the wiping delay the kubelet deletes our slices
        wait_for(lambda: len(agent.wipes) == 2, what="the kubelet's wipe")
        assert agent.wipes[1] == f"spec.nodeName={NODE},spec.driver={DRIVER}"
        n = publisher.sync_count
        wait_for(lambda: publisher.waiting, what="the publisher to wait")
        time.sleep(1.0)  # discovery keeps polling dra meanwhile; it must not fight the wipe
        assert slices() == [] and publisher.sync_count == n

        h.start_dra()  # back: the kubelet registers it again, then the slices come back
        wait_for(slices, what="slices after the plugin came back")
        assert not publisher.waiting

        agent.close()  # a kubelet restart: the new one wipes the node at its start and registers
        agent = NodeAgent(
            h.root / "reg", str(h.root / "no-cri.sock"), api_client=api, node_name=NODE, wipe_delay=0.5
        )
        agent.start()
        wait_for(slices, what="slices after the kubelet restart")
    finally:
        agent.close()
        publisher.stop()
        h.close()


# ------------------------------------------------------------------ claim status by server-side apply


def test_claim_status_by_server_side_apply_beside_another_driver() -> None:
    h = Harness()
    h.start_dra()
    try:
        res = h.cluster.resource
        ns, name = "default", "shared"
        res.create_namespaced_resource_claim(
            ns,
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"name": name},
                "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "x"}}]}},
            },
        )
        results = [
            {"request": "nic", "driver": DRIVER, "pool": NODE, "device": "eth1"},
            {"request": "nic", "driver": "gpu.example.com", "pool": NODE, "device": "gpu0"},
        ]
        selector = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}
        res.patch_namespaced_resource_claim_status(
            name,
            ns,
            {
                "status": {
                    "allocation": {
                        "devices": {"results": results},
                        "nodeSelector": {"nodeSelectorTerms": [selector]},
                    },
                    "reservedFor": [{"resource": "pods", "name": "p", "uid": "pod-ssa"}],
                }
            },
            _content_type="application/merge-patch+json",
        )
        gpu = {
            "driver": "gpu.example.com",
            "pool": NODE,
            "device": "gpu0",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ok",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
        res.patch_namespaced_resource_claim_status(
            name,
            ns,
            {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "status": {"devices": [gpu]}},
            field_manager="gpu.example.com",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        uid = h.cluster.claim(ns, name)["metadata"]["uid"]
        assert h.kubelet.prepare(h.endpoint, [(ns, uid, name)])[uid][1] == ""
        h.neighbours.attached(pod_uid="pod-ssa", device="eth1", claim_uid=uid, state="attached")

        def drivers() -> list[str]:
            return [d["driver"] for d in (h.cluster.claim(ns, name).get("status") or {}).get("devices") or []]

        wait_for(lambda: drivers() == ["gpu.example.com", DRIVER], what="our entry beside the gpu's")
        managers = {m["manager"]: m for m in h.cluster.claim(ns, name)["metadata"]["managedFields"]}
        assert managers[DRIVER]["operation"] == "Apply" and managers[DRIVER]["subresource"] == "status"
        assert h.kubelet.unprepare(h.endpoint, [(ns, uid, name)]) == {uid: ""}
        wait_for(lambda: drivers() == ["gpu.example.com"], what="only our entry removed")

        # a claim that is gone: its pending update is dropped, not retried forever
        assert h.kubelet.prepare(h.endpoint, [(ns, uid, name)])[uid][1] == ""
        res.delete_namespaced_resource_claim(name, ns)
        h.neighbours.attached(pod_uid="pod-ssa", device="eth1", claim_uid=uid, state="attached")
        assert h.dra is not None
        status = h.dra.status
        wait_for(
            lambda: status.idle() and status.pending() == 0, what="the update for the gone claim dropped"
        )
    finally:
        h.close()


# ------------------------------------------------------------------ prepared claims never leak


def test_leak_reasons_pure() -> None:
    from dranet.services.dra.model import PreparedClaim, PreparedDevice
    from dranet.services.dra.reconcile import claims_of_node, leak_reason

    prepared = PreparedClaim("u1", "ns", "c", ["pod-1"], [PreparedDevice("nic", NODE, "eth1", "eth1", {})])

    def api_claim(
        uid: str = "u1", pods: tuple[str, ...] = ("pod-1",), device: str = "eth1"
    ) -> dict[str, Any]:
        return {
            "metadata": {"uid": uid, "namespace": "ns", "name": "c"},
            "status": {
                "allocation": {"devices": {"results": [{"driver": DRIVER, "pool": NODE, "device": device}]}},
                "reservedFor": [{"resource": "pods", "name": p, "uid": p} for p in pods],
            },
        }

    assert leak_reason(prepared, api_claim(), DRIVER) == ""
    assert "gone" in leak_reason(prepared, None, DRIVER)
    assert "re-created" in leak_reason(prepared, api_claim(uid="u2"), DRIVER)
    assert "no longer reserved" in leak_reason(prepared, api_claim(pods=()), DRIVER)
    assert "no longer allocated" in leak_reason(prepared, api_claim(device="eth9"), DRIVER)
    other_node = api_claim(uid="u3")
    other_node["status"]["allocation"]["devices"]["results"][0]["pool"] = "elsewhere"
    unreserved = api_claim(uid="u4", pods=())
    refs = claims_of_node([api_claim(), other_node, unreserved], DRIVER, NODE)
    assert [r.uid for r in refs] == ["u1"]


def test_a_claim_gone_or_unreserved_is_released() -> None:
    h = Harness(reconcile_interval=0.2)
    h.start_dra()
    try:
        gone = h.cluster.create_claim(devices=["eth1"], pods=["pod-g"])
        unreserved = h.cluster.create_claim(devices=["eth2"], pods=["pod-u"])
        kept = h.cluster.create_claim(devices=["eth3"], pods=["pod-k"])
        for c in (gone, unreserved, kept):
            assert h.kubelet.prepare(h.endpoint, [c])[c[1]][1] == ""
        h.cluster.resource.delete_namespaced_resource_claim(gone[2], gone[0])
        h.cluster.resource.patch_namespaced_resource_claim_status(
            unreserved[2],
            unreserved[0],
            {"status": {"reservedFor": None}},
            _content_type="application/merge-patch+json",
        )

        def prepared() -> set[str]:
            return {c["uid"] for c in h.bus("claims")["claims"]}

        wait_for(lambda: prepared() == {kept[1]}, what="the leaked claims released")
        assert {c["pod_uid"] for c in h.neighbours.detach_calls} == {"pod-g", "pod-u"}
    finally:
        h.close()


def test_a_corrupt_checkpoint_is_rebuilt_from_the_api_server() -> None:
    h = Harness(reconcile_interval=0.2)
    h.start_dra()
    try:
        claim = h.cluster.create_claim(
            devices=["eth2"], pods=["pod-c"], configs=[opaque({"interface": {"mtu": 1300}})]
        )
        assert h.kubelet.prepare(h.endpoint, [claim])[claim[1]][1] == ""
        h.stop_dra()
        path = h.root / "state" / "dra" / "checkpoint.json"
        path.write_text(path.read_text()[:-20])
        h.start_dra()  # the kubelet does not prepare again: nri must still find the pod's devices

        def devices() -> list[tuple[str, int]]:
            devs = h.bus("pod_devices", {"pod_uid": "pod-c"})["devices"]
            return [(d["device"], d["config"]["interface"]["mtu"]) for d in devs]

        wait_for(lambda: devices() == [("eth2", 1300)], what="the claim rebuilt from the API server")
        ping = wait_for(lambda: (p := h.bus("ping"))["healthy"] and p, what="healthy after the rebuild")
        assert "not JSON" in ping["details"]["checkpoint_rebuilt"]["reason"]
        assert ping["details"]["checkpoint_rebuilt"]["claims"] == 1
    finally:
        h.close()
