"""The slice publisher against the local API server over real HTTP (loopback)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dranet.services.discovery.model import Device
from dranet.services.discovery.publisher import SlicePublisher
from kubernetes import client, config

from localcluster.apiserver import LocalAPIServer

NODE = "node-tdi"
DRIVER = "dra.net"
DEADLINE = 20.0


def devices(n: int, mtu: int = 1500) -> list[Device]:
    return [
        Device(f"eth{i:04d}", f"eth{i:04d}", attributes={"dra.net/ifName": f"eth{i:04d}", "dra.net/mtu": mtu})
        for i in range(n)
    ]


def wait_for(cond: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = cond()
        except Exception as exc:  # the server may be down in some tests
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Cluster:
    def __init__(self, server: LocalAPIServer, kubeconfig: Path) -> None:
        self.server = server
        self.kubeconfig = kubeconfig
        self.api = config.new_client_from_config(config_file=str(kubeconfig))

    def factory(self) -> Any:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def slices(self) -> dict[str, dict[str, Any]]:
        raw: Any = client.ResourceV1Api(self.api).list_resource_slice(
            field_selector=f"spec.nodeName={NODE}", _preload_content=False
        )
        return {o["metadata"]["name"]: o for o in json.loads(raw.data)["items"]}

    def published_devices(self) -> list[str]:
        return sorted(d["name"] for o in self.slices().values() for d in o["spec"]["devices"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    server = LocalAPIServer()
    server.start()
    kc = server.write_kubeconfig(tmp_path / "kubeconfig")
    c = Cluster(server, kc)
    client.CoreV1Api(c.api).create_node(client.V1Node(metadata=client.V1ObjectMeta(name=NODE)))
    yield c
    server.stop()


@pytest.fixture
def publisher(cluster: Cluster) -> Iterator[SlicePublisher]:
    p = SlicePublisher(cluster.factory, NODE, DRIVER)
    p.start()
    yield p
    p.stop()


def test_300_devices_published_in_three_slices(cluster: Cluster, publisher: SlicePublisher) -> None:
    publisher.set_devices(devices(300))
    wait_for(lambda: len(cluster.published_devices()) == 300, "300 devices")
    slices = cluster.slices()
    assert sorted(slices) == [f"{NODE}-dra.net-{i}" for i in range(3)]
    meta = client.CoreV1Api(cluster.api).read_node(NODE).metadata
    assert meta is not None
    node_uid = meta.uid
    for obj in slices.values():
        spec = obj["spec"]
        assert spec["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 3}
        assert spec["driver"] == DRIVER and spec["nodeName"] == NODE
        assert len(spec["devices"]) <= 128
        assert obj["metadata"]["ownerReferences"][0]["uid"] == node_uid
    assert cluster.published_devices() == [d.name for d in devices(300)]
    dev = next(d for o in slices.values() for d in o["spec"]["devices"] if d["name"] == "eth0007")
    assert dev["attributes"] == {"dra.net/ifName": {"string": "eth0007"}, "dra.net/mtu": {"int": 1500}}


def test_no_change_no_write_and_change_updates(cluster: Cluster, publisher: SlicePublisher) -> None:
    publisher.set_devices(devices(200))
    wait_for(lambda: len(cluster.published_devices()) == 200, "200 devices")
    before = {n: o["metadata"]["resourceVersion"] for n, o in cluster.slices().items()}
    n = publisher.sync_count
    publisher.set_devices(devices(200))
    assert publisher.wait_synced(n, DEADLINE)
    assert {n: o["metadata"]["resourceVersion"] for n, o in cluster.slices().items()} == before
    # one device changes: only its slice is rewritten, the generation stays
    changed = devices(200)
    changed[150].attributes["dra.net/mtu"] = 9000
    publisher.set_devices(changed)

    def mtu_updated() -> bool:
        s = cluster.slices()[f"{NODE}-dra.net-1"]
        return any(d["attributes"]["dra.net/mtu"] == {"int": 9000} for d in s["spec"]["devices"])

    wait_for(mtu_updated, "the new MTU")
    after = cluster.slices()
    assert after[f"{NODE}-dra.net-0"]["metadata"]["resourceVersion"] == before[f"{NODE}-dra.net-0"]
    assert {o["spec"]["pool"]["generation"] for o in after.values()} == {1}
    # fewer devices: stale slice deleted, generation bumped
    publisher.set_devices(devices(10))
    wait_for(lambda: len(cluster.slices()) == 1, "one slice")
    (only,) = cluster.slices().values()
    assert only["spec"]["pool"] == {"name": NODE, "generation": 2, "resourceSliceCount": 1}


def test_slice_deleted_behind_our_back_comes_back(cluster: Cluster, publisher: SlicePublisher) -> None:
    publisher.set_devices(devices(300))
    wait_for(lambda: len(cluster.published_devices()) == 300, "300 devices")
    res = client.ResourceV1Api(cluster.api)
    res.delete_resource_slice(f"{NODE}-dra.net-1")
    wait_for(lambda: len(cluster.published_devices()) == 300, "the deleted slice to come back")
    # the kubelet wipes every slice of the node when it restarts
    res.delete_collection_resource_slice(field_selector=f"spec.nodeName={NODE}")
    wait_for(lambda: len(cluster.published_devices()) == 300, "all slices to come back")
    gens = {o["spec"]["pool"]["generation"] for o in cluster.slices().values()}
    assert len(gens) == 1


def test_empty_inventory_publishes_an_empty_pool(cluster: Cluster, publisher: SlicePublisher) -> None:
    publisher.set_devices([])
    slices = wait_for(cluster.slices, "an empty slice")
    (obj,) = slices.values()
    assert obj["spec"]["devices"] == [] and obj["spec"]["pool"]["resourceSliceCount"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_api_server_down_at_start_then_up(tmp_path: Path) -> None:
    port = _free_port()
    kc = tmp_path / "kubeconfig"
    # No kubeconfig and no server yet: the publisher retries with backoff and never crashes.
    p = SlicePublisher(lambda: config.new_client_from_config(config_file=str(kc)), NODE, DRIVER)
    p.start()
    try:
        p.set_devices(devices(5))
        wait_for(lambda: p.last_error, "a publish error")
        assert not p.healthy
        server = LocalAPIServer(port=port)
        server.start()
        try:
            server.write_kubeconfig(kc)
            c = Cluster(server, kc)
            wait_for(lambda: len(c.published_devices()) == 5, "slices after the server came up")
            wait_for(lambda: p.healthy, "healthy publisher")
            # no Node object in this cluster: published without an owner, not refused
            (obj,) = c.slices().values()
            assert obj["metadata"].get("ownerReferences") in (None, [])
        finally:
            server.stop()
    finally:
        p.stop()


def test_a_burst_of_changes_is_written_at_a_bounded_rate(cluster: Cluster) -> None:
    from dranet.observability.metrics import value

    p = SlicePublisher(cluster.factory, NODE, DRIVER, min_interval=0.5)
    p.start()
    try:
        p.set_devices(devices(10))
        wait_for(lambda: len(cluster.published_devices()) == 10, "10 devices")
        writes = value("dranet_discovery_slice_writes_total", verb="update")
        coalesced = value("dranet_discovery_publish_coalesced_total")
        for mtu in range(1000, 1040):  # 40 changes in a burst (a flapping link)
            p.set_devices(devices(10, mtu=mtu))
            time.sleep(0.005)
        wait_for(
            lambda: all(
                d["attributes"]["dra.net/mtu"] == {"int": 1039}
                for o in cluster.slices().values()
                for d in o["spec"]["devices"]
            ),
            "the last change written",
        )
        assert value("dranet_discovery_slice_writes_total", verb="update") - writes <= 3
        assert value("dranet_discovery_publish_coalesced_total") - coalesced >= 30
    finally:
        p.stop()


def test_a_recreated_node_is_followed(cluster: Cluster, publisher: SlicePublisher) -> None:
    core = client.CoreV1Api(cluster.api)
    publisher.set_devices(devices(3))
    wait_for(lambda: len(cluster.published_devices()) == 3, "3 devices")
    core.delete_node(NODE)
    new = core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=NODE)))
    assert new.metadata is not None
    publisher.set_devices(devices(3, mtu=9000))

    def owner() -> str:
        (obj,) = cluster.slices().values()
        return str(obj["metadata"]["ownerReferences"][0]["uid"])

    wait_for(lambda: owner() == new.metadata.uid, "slices owned by the new Node")


def test_delete_has_uid_and_resource_version_preconditions(cluster: Cluster) -> None:
    from dranet.services.discovery.kubeapi import KubeJSON
    from dranet.services.discovery.slices import NodeRef, build_slice
    from kubernetes.client.exceptions import ApiException

    kube = KubeJSON(cluster.api)
    created = kube.create_slice(build_slice(NodeRef(NODE, ""), DRIVER, 0, devices(1), 1, 1))
    name, uid = created["metadata"]["name"], created["metadata"]["uid"]
    changed = kube.replace_slice({**created, "spec": {**created["spec"], "devices": []}})
    with pytest.raises(ApiException) as exc:
        kube.delete_slice(name, uid, created["metadata"]["resourceVersion"])  # changed since
    assert exc.value.status == 409
    with pytest.raises(ApiException) as exc:
        kube.delete_slice(name, "another-uid", changed["metadata"]["resourceVersion"])
    assert exc.value.status == 409
    kube.delete_slice(name, uid, changed["metadata"]["resourceVersion"])
    assert cluster.slices() == {}


def test_a_field_the_server_drops_causes_no_rewrite_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real API server drops the fields of a feature gate that is off (here `bindsToNode`, gate
    DRADeviceBindingConditions) and stores the rest: the stored slice never equals what we wrote.
    The publisher compares with what the server stored from it, so it writes once, not forever;
    a restarted publisher (nothing remembered) writes once more, then stops too."""
    from dranet.services.discovery import slices as slices_mod

    from dranet.observability.metrics import value

    plain = slices_mod.api_device
    monkeypatch.setattr(slices_mod, "api_device", lambda dev: {**plain(dev), "bindsToNode": True})
    server = LocalAPIServer(dropped_device_fields=("bindsToNode",))
    server.start()
    try:
        c = Cluster(server, server.write_kubeconfig(tmp_path / "kubeconfig"))
        client.CoreV1Api(c.api).create_node(client.V1Node(metadata=client.V1ObjectMeta(name=NODE)))

        def writes() -> float:
            name = "dranet_discovery_slice_writes_total"
            return sum(value(name, verb=v) for v in ("create", "update", "delete"))

        for restart in range(2):
            before = writes()
            p = SlicePublisher(c.factory, NODE, DRIVER, min_interval=0.0)
            p.start()
            try:
                for _ in range(5):  # the same inventory again and again: nothing new to write
                    synced = p.sync_count
                    p.set_devices(devices(3))
                    assert p.wait_synced(synced, DEADLINE)
                stored = [d for o in c.slices().values() for d in o["spec"]["devices"]]
                assert len(stored) == 3 and all("bindsToNode" not in d for d in stored)
                assert writes() - before == 1, f"round {restart}: {writes() - before} writes"
            finally:
                p.stop()
    finally:
        server.stop()


def test_slices_of_an_old_node_name_of_this_host_are_removed(cluster: Cluster, tmp_path: Path) -> None:
    """The host published as `old` before (recorded in its state directory), and comes back as NODE
    while the old Node object still exists: our slices naming `old` go, nothing else does."""
    from dranet.services.discovery.nodenames import NodeNames

    record = NodeNames(tmp_path / "state" / "discovery" / "node-names.json")
    core = client.CoreV1Api(cluster.api)
    for name in ("old", "elsewhere"):
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
        before = SlicePublisher(cluster.factory, name, DRIVER)
        before.start()
        before.set_devices(devices(2))
        assert before.wait_synced(0, DEADLINE)
        before.stop()
    record.save(["old"])  # "elsewhere" is another host: not in this host's record
    other_driver = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": "old-other-driver"},
        "spec": {
            "driver": "gpu.example.com",
            "nodeName": "old",
            "pool": {"name": "old", "generation": 1, "resourceSliceCount": 1},
            "devices": [],
        },
    }
    resource = client.ResourceV1Api(cluster.api)
    resource.create_resource_slice(other_driver, _preload_content=False)  # type: ignore[arg-type]

    p = SlicePublisher(cluster.factory, NODE, DRIVER, node_names=record)
    p.start()
    try:
        p.set_devices(devices(2))
        assert p.wait_synced(0, DEADLINE)
    finally:
        p.stop()
    raw: Any = resource.list_resource_slice(_preload_content=False)
    left = sorted((o["spec"]["nodeName"], o["spec"]["driver"]) for o in json.loads(raw.data)["items"])
    assert left == [("elsewhere", DRIVER), (NODE, DRIVER), ("old", "gpu.example.com")]
    assert record.load() == [NODE]
