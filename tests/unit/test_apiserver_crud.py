"""The local API server stand-in driven by the official kubernetes client over real HTTP: CRUD,
selectors, conflicts, the status subresource, patches and kubeconfig loading."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from localcluster.apiserver import LocalAPIServer

# The client's typed results are Optional everywhere; the tests handle them as Any.
ResourceV1beta2Api: Any = client.ResourceV1beta2Api
ResourceV1Api: Any = client.ResourceV1Api
CoreV1Api: Any = client.CoreV1Api
VersionApi: Any = client.VersionApi


@pytest.fixture
def server() -> Iterator[LocalAPIServer]:
    srv = LocalAPIServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server: LocalAPIServer, tmp_path: Path) -> client.ApiClient:
    return config.new_client_from_config(str(server.write_kubeconfig(tmp_path / "kubeconfig")))


def slice_body(name: str = "node1-dra.net", node: str = "node1", devices: int = 1, **spec: Any) -> dict:
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": {"node": node}},
        "spec": {"driver": "dra.net", "nodeName": node,
                 "pool": {"name": node, "generation": 0, "resourceSliceCount": 1},
                 "devices": [{"name": f"eth{i}", "attributes": {"dra.net/ifName": {"string": f"eth{i}"}}}
                             for i in range(devices)]},
    }
    body["spec"].update(spec)
    return body


def claim_body(name: str = "claim1") -> dict:
    return {"metadata": {"name": name},
            "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "dranet"}}]}}}


def make_slice(api: client.ApiClient, **kw: Any) -> Any:
    return ResourceV1Api(api).create_resource_slice(client.V1ResourceSlice.from_dict(slice_body(**kw)))


def make_claim(api: client.ApiClient, name: str = "claim1", ns: str = "default") -> Any:
    body = client.ResourceV1ResourceClaim.from_dict(claim_body(name))
    return ResourceV1Api(api).create_namespaced_resource_claim(ns, body)


def error_body(exc: client.ApiException) -> dict:
    return dict(json.loads(exc.body or "{}"))


def test_kubeconfig_loads_with_official_client(server: LocalAPIServer, tmp_path: Path) -> None:
    path = server.write_kubeconfig(tmp_path / "sub" / "kubeconfig")
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    assert cfg.host == server.url
    api = client.ApiClient(cfg)
    assert VersionApi(api).get_code().git_version.startswith("v1.")
    namespaces = [n.metadata.name for n in CoreV1Api(api).list_namespace().items]
    assert "default" in namespaces and "kube-system" in namespaces
    assert CoreV1Api(api).read_namespace("default").status.phase == "Active"


def test_create_fills_server_metadata_and_get_returns_it(api: client.ApiClient) -> None:
    created = make_slice(api)
    meta = created.metadata
    assert meta.uid and meta.resource_version and meta.generation == 1 and meta.creation_timestamp
    got = ResourceV1Api(api).read_resource_slice("node1-dra.net")
    assert got.metadata.uid == meta.uid
    assert got.spec.devices[0].attributes["dra.net/ifName"].string == "eth0"
    assert got.api_version == "resource.k8s.io/v1" and got.kind == "ResourceSlice"


def test_generate_name_gives_unique_names(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    body = slice_body()
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "node1-dra.net-"
    obj = client.V1ResourceSlice.from_dict(body)
    names = {res.create_resource_slice(obj).metadata.name for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("node1-dra.net-") for n in names)


def test_create_twice_is_already_exists(api: client.ApiClient) -> None:
    make_slice(api)
    with pytest.raises(client.ApiException) as exc:
        make_slice(api)
    assert exc.value.status == 409
    body = error_body(exc.value)
    assert body["kind"] == "Status" and body["reason"] == "AlreadyExists"
    assert body["details"] == {"name": "node1-dra.net", "group": "resource.k8s.io", "kind": "resourceslices"}


def test_get_missing_is_not_found_status(api: client.ApiClient) -> None:
    with pytest.raises(client.ApiException) as exc:
        ResourceV1Api(api).read_resource_slice("nope")
    assert exc.value.status == 404
    body = error_body(exc.value)
    assert body["reason"] == "NotFound" and body["code"] == 404
    assert body["message"] == 'resourceslices.resource.k8s.io "nope" not found'


def test_update_with_stale_resource_version_conflicts(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    first = make_slice(api)
    first.spec.pool.generation = 1
    second = res.replace_resource_slice(first.metadata.name, first)
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    first.spec.pool.generation = 2
    with pytest.raises(client.ApiException) as exc:
        res.replace_resource_slice(first.metadata.name, first)  # still carries the old resourceVersion
    assert exc.value.status == 409 and error_body(exc.value)["reason"] == "Conflict"


def test_generation_counts_spec_changes_only(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    obj = make_slice(api)
    obj.metadata.labels["extra"] = "yes"
    obj = res.replace_resource_slice(obj.metadata.name, obj)
    assert obj.metadata.generation == 1
    obj.spec.pool.generation = 5
    obj = res.replace_resource_slice(obj.metadata.name, obj)
    assert obj.metadata.generation == 2


def test_noop_update_keeps_resource_version(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    obj = make_slice(api)
    again = res.replace_resource_slice(obj.metadata.name, obj)
    assert again.metadata.resource_version == obj.metadata.resource_version


def test_label_selectors(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    for node in ("a", "b", "c"):
        make_slice(api, name=f"{node}-dra.net", node=node)

    def names(selector: str) -> list[str]:
        return [s.metadata.name for s in res.list_resource_slice(label_selector=selector).items]

    assert names("node=a") == ["a-dra.net"]
    assert names("node!=a") == ["b-dra.net", "c-dra.net"]
    assert names("node in (a,c)") == ["a-dra.net", "c-dra.net"]
    assert names("node notin (a,c)") == ["b-dra.net"]
    assert names("node") == ["a-dra.net", "b-dra.net", "c-dra.net"]
    assert names("!node") == []


def test_field_selectors_for_slices(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    make_slice(api, name="a-dra.net", node="a")
    make_slice(api, name="b-dra.net", node="b")

    def names(selector: str) -> list[str]:
        return [s.metadata.name for s in res.list_resource_slice(field_selector=selector).items]

    assert names("spec.nodeName=a") == ["a-dra.net"]
    assert names("spec.driver=dra.net,spec.pool.name=b") == ["b-dra.net"]
    assert names("spec.driver=other") == []
    assert names("metadata.name!=a-dra.net") == ["b-dra.net"]
    with pytest.raises(client.ApiException) as exc:
        names("spec.devices=x")
    assert exc.value.status == 400 and "field label not supported" in error_body(exc.value)["message"]


def test_list_limit_and_continue(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    for i in range(5):
        make_slice(api, name=f"n{i}-dra.net", node=f"n{i}")
    seen: list[str] = []
    token = None
    while True:
        page = res.list_resource_slice(limit=2, _continue=token)
        seen += [s.metadata.name for s in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == [f"n{i}-dra.net" for i in range(5)]


def test_delete_returns_object_and_precondition_conflict(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    obj = make_slice(api)
    with pytest.raises(client.ApiException) as exc:
        res.delete_resource_slice(obj.metadata.name, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version="1")))
    assert exc.value.status == 409
    gone = res.delete_resource_slice(obj.metadata.name)
    assert gone.metadata.name == obj.metadata.name
    assert res.list_resource_slice().items == []


def test_delete_collection_with_field_selector(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    make_slice(api, name="a-dra.net", node="a")
    make_slice(api, name="b-dra.net", node="b")
    res.delete_collection_resource_slice(field_selector="spec.nodeName=a")
    assert [s.metadata.name for s in res.list_resource_slice().items] == ["b-dra.net"]


def test_dry_run_stores_nothing(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    res.create_resource_slice(client.V1ResourceSlice.from_dict(slice_body()), dry_run="All")
    assert res.list_resource_slice().items == []


def test_claim_status_subresource(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    body = claim_body()
    body["status"] = {"reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}]}
    claim: Any = client.ResourceV1ResourceClaim.from_dict(body)
    claim = res.create_namespaced_resource_claim("default", claim)
    assert claim.status is None  # status is only written through /status
    allocation = {"devices": {"results": [{"request": "nic", "driver": "dra.net", "pool": "node1",
                                           "device": "eth1"}]}}
    with_status = {**claim.to_dict(), "status": {"allocation": allocation}}
    claim = client.ResourceV1ResourceClaim.from_dict(with_status)
    claim.metadata.labels = {"ignored": "on-status"}
    updated = res.replace_namespaced_resource_claim_status("claim1", "default", claim)
    assert updated.status.allocation.devices.results[0].device == "eth1"
    assert not updated.metadata.labels  # the status subresource changes status only
    # A write to the main resource keeps the stored status.
    updated.status = None
    main = res.replace_namespaced_resource_claim("claim1", "default", updated)
    assert main.status.allocation.devices.results[0].device == "eth1"


def test_claim_status_server_side_apply(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    make_claim(api)
    res.patch_namespaced_resource_claim_status("claim1", "default", {"status": {"allocation": {"devices": {
        "results": [{"request": "nic", "driver": "dra.net", "pool": "node1", "device": "eth1"}]}}}},
        _content_type="application/merge-patch+json")
    status = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "status": {"devices": [{
        "driver": "dra.net", "pool": "node1", "device": "eth1",
        "conditions": [{"type": "Ready", "status": "True", "reason": "NetworkDeviceReady", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "networkData": {"interfaceName": "eth1", "ips": ["192.0.2.5/24"],
                        "hardwareAddress": "aa:bb:cc:dd:ee:ff"},
    }]}}
    out = res.patch_namespaced_resource_claim_status(
        "claim1", "default", status, field_manager="dra.net", force=True,
        _content_type="application/apply-patch+yaml")
    assert out.status.devices[0].network_data.ips == ["192.0.2.5/24"]
    assert out.status.allocation.devices.results[0].device == "eth1"


def test_apply_needs_field_manager(api: client.ApiClient) -> None:
    make_claim(api)
    with pytest.raises(client.ApiException) as exc:
        ResourceV1Api(api).patch_namespaced_resource_claim(
            "claim1", "default", {"metadata": {"labels": {"a": "b"}}},
            _content_type="application/apply-patch+yaml")
    assert exc.value.status == 422
    assert error_body(exc.value)["details"]["causes"][0]["field"] == "fieldManager"


def test_apply_creates_a_missing_object(api: client.ApiClient) -> None:
    out = ResourceV1Api(api).patch_resource_slice(
        "node1-dra.net", slice_body(), field_manager="dra.net", _content_type="application/apply-patch+yaml")
    assert out.metadata.uid and out.spec.node_name == "node1"


def test_strategic_merge_and_json_patch(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    make_slice(api)
    out = res.patch_resource_slice("node1-dra.net", {"metadata": {"labels": {"node": None, "x": "y"}}})
    assert out.metadata.labels == {"x": "y"}
    ops = [{"op": "replace", "path": "/spec/pool/generation", "value": 3}]
    out = res.patch_resource_slice("node1-dra.net", ops)
    assert out.spec.pool.generation == 3 and out.metadata.generation == 2


def test_merge_patch_with_stale_resource_version_conflicts(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    obj = make_slice(api)
    res.patch_resource_slice(obj.metadata.name, {"metadata": {"labels": {"a": "1"}}})
    with pytest.raises(client.ApiException) as exc:
        stale = {"metadata": {"resourceVersion": obj.metadata.resource_version, "labels": {"a": "2"}}}
        res.patch_resource_slice(obj.metadata.name, stale)
    assert exc.value.status == 409


def test_namespaced_objects_need_an_existing_namespace(api: client.ApiClient) -> None:
    with pytest.raises(client.ApiException) as exc:
        make_claim(api, ns="missing")
    assert exc.value.status == 404 and error_body(exc.value)["message"] == 'namespaces "missing" not found'
    CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="missing")))
    make_claim(api, ns="missing")
    make_claim(api, ns="default")
    every = ResourceV1Api(api).list_resource_claim_for_all_namespaces().items
    assert sorted(c.metadata.namespace for c in every) == ["default", "missing"]


def test_core_nodes_pods_events(api: client.ApiClient) -> None:
    core = CoreV1Api(api)
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="node1")))
    owner = client.V1OwnerReference(api_version="v1", kind="Node", name="node1", uid="x", controller=True)
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="p1", owner_references=[owner]),
                       spec=client.V1PodSpec(node_name="node1", containers=[client.V1Container(name="c")]))
    created = core.create_namespaced_pod("default", pod)
    assert created.metadata.owner_references[0].name == "node1"
    assert [p.metadata.name for p in core.list_namespaced_pod(
        "default", field_selector="spec.nodeName=node1").items] == ["p1"]
    core.create_namespaced_event("default", client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="p1."), reason="Attached", message="eth1",
        involved_object=client.V1ObjectReference(kind="Pod", name="p1", namespace="default")))
    events = core.list_namespaced_event("default", field_selector="involvedObject.name=p1").items
    assert [e.reason for e in events] == ["Attached"]


def test_v1beta2_serves_the_same_objects(api: client.ApiClient) -> None:
    make_slice(api)
    got = ResourceV1beta2Api(api).read_resource_slice("node1-dra.net")
    assert got.api_version == "resource.k8s.io/v1beta2" and got.spec.driver == "dra.net"


def test_device_class_and_claim_template(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    res.create_device_class(client.V1DeviceClass.from_dict({"metadata": {"name": "dranet"}, "spec": {
        "selectors": [{"cel": {"expression": 'device.driver == "dra.net"'}}]}}))
    res.create_namespaced_resource_claim_template("default", client.V1ResourceClaimTemplate.from_dict(
        {"metadata": {"name": "t"}, "spec": {"spec": claim_body()["spec"]}}))
    assert res.read_device_class("dranet").spec.selectors[0].cel.expression == 'device.driver == "dra.net"'
    template = res.read_namespaced_resource_claim_template("t", "default")
    assert template.spec.spec.devices.requests[0].name == "nic"


def test_state_file_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = LocalAPIServer(state_file=state)
    first.start()
    try:
        api = config.new_client_from_config(str(first.write_kubeconfig(tmp_path / "kc1")))
        uid = make_slice(api).metadata.uid
    finally:
        first.stop()
    second = LocalAPIServer(state_file=state)
    second.start()
    try:
        api = config.new_client_from_config(str(second.write_kubeconfig(tmp_path / "kc2")))
        res = ResourceV1Api(api)
        assert res.read_resource_slice("node1-dra.net").metadata.uid == uid
        make_slice(api, name="other-dra.net", node="other")  # resourceVersions keep growing
        rvs = [int(s.metadata.resource_version) for s in res.list_resource_slice().items]
        assert len(set(rvs)) == 2
    finally:
        second.stop()


def test_unknown_resources_are_not_found(api: client.ApiClient) -> None:
    resp = api.call_api(*api.param_serialize("GET", "/apis/resource.k8s.io/v1/widgets"))
    resp.read()
    with pytest.raises(client.ApiException) as exc:
        api.response_deserialize(resp, {"200": "object"})
    assert exc.value.status == 404 and error_body(exc.value)["reason"] == "NotFound"
