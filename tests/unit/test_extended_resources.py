"""Extended resources through DRA (KEP-5004) in the stand-ins: the API's rule for
DeviceClass.extendedResourceName, the scheduler's special claim and request mappings, and the
allocator stand-in making, allocating and releasing it against the local API server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from localcluster.allocator import AllocationError, Allocator
from localcluster.apiserver import LocalAPIServer
from localcluster.apivalidation import is_extended_resource_name, validate_device_class
from localcluster.extended import (
    EXTENDED_RESOURCE_CLAIM_ANNOTATION,
    ExtendedResourceError,
    class_for_resource,
    container_request_names,
    special_claim,
)

ROOT = Path(__file__).resolve().parents[2]
NODE = "node-a"


def device_class(
    name: str, resource: str | None = None, created: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": 'device.driver == "dra.net"'}}]}
    if resource is not None:
        spec["extendedResourceName"] = resource
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": spec,
    }


def pod(containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": NODE, "containers": containers}
    if init:
        spec["initContainers"] = init
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "pod-uid"},
        "spec": spec,
    }


def container(
    name: str, limits: dict[str, str] | None = None, requests: dict[str, str] | None = None
) -> dict:
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if requests:
        resources["requests"] = requests
    return {"name": name, "image": "pause", "resources": resources}


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("dra.net/nic", True),
        ("example.com/a_b.c-d", True),
        ("nic", False),  # no domain: a native resource
        ("kubernetes.io/nic", False),
        ("example.kubernetes.io/nic", False),
        ("deviceclass.resource.kubernetes.io/dranet", False),  # the implicit names are not for classes
        ("requests.dra.net/nic", False),
        ("dra.net/", False),
        ("Dra.Net/nic", False),
        ("dra.net/-nic", False),
        ("dra.net/" + "n" * 64, False),
    ],
)
def test_extended_resource_names_as_the_api_validates_them(name: str, ok: bool) -> None:
    assert is_extended_resource_name(name) is ok
    causes = validate_device_class(device_class("c", name))
    assert [c.field for c in causes] == ([] if ok else ["spec.extendedResourceName"])


def test_the_shipped_class_serves_dra_net_nic() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/deviceclass.yaml").read_text()))
    (dc,) = [d for d in docs if d["spec"].get("extendedResourceName")]
    assert validate_device_class(dc) == []
    assert class_for_resource(docs)["dra.net/nic"] == dc["metadata"]["name"] == "dranet-nic"


def test_class_for_resource_newest_wins_then_the_first_name_and_every_class_has_its_implicit_name() -> None:
    classes = [
        device_class("old", "dra.net/nic", "2026-01-01T00:00:00Z"),
        device_class("zeta", "dra.net/nic", "2026-02-01T00:00:00Z"),
        device_class("alpha", "dra.net/nic", "2026-02-01T00:00:00Z"),
        device_class("plain"),
    ]
    mapping = class_for_resource(classes)
    assert mapping["dra.net/nic"] == "alpha"
    assert mapping["deviceclass.resource.kubernetes.io/plain"] == "plain"
    assert mapping["deviceclass.resource.kubernetes.io/old"] == "old"


def test_the_special_claim_has_one_request_per_container_and_resource_and_the_mappings() -> None:
    p = pod(
        [
            container("app", limits={"dra.net/nic": "2", "cpu": "1", "memory": "1Gi"}),
            container("side", requests={"deviceclass.resource.kubernetes.io/plain": "1"}),
            container("none", limits={"cpu": "1"}),
        ],
        init=[container("setup", limits={"dra.net/nic": "1"})],
    )
    made = special_claim(p, [device_class("dranet-nic", "dra.net/nic"), device_class("plain")])
    assert made is not None
    claim, mappings = made
    assert claim["metadata"] == {
        "generateName": "web-extended-resources-",
        "namespace": "default",
        "annotations": {EXTENDED_RESOURCE_CLAIM_ANNOTATION: "true"},
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "pod-uid", "controller": True,
             "blockOwnerDeletion": True}
        ],
    }  # fmt: skip
    # i: index in initContainers + containers; j: index among the container's sorted request names
    # (cpu, dra.net/nic, memory); sorted by name
    assert claim["spec"]["devices"]["requests"] == [
        {"name": "container-0-request-0",
         "exactly": {"deviceClassName": "dranet-nic", "allocationMode": "ExactCount", "count": 1}},
        {"name": "container-1-request-1",
         "exactly": {"deviceClassName": "dranet-nic", "allocationMode": "ExactCount", "count": 2}},
        {"name": "container-2-request-0",
         "exactly": {"deviceClassName": "plain", "allocationMode": "ExactCount", "count": 1}},
    ]  # fmt: skip
    assert mappings == [
        {"containerName": "setup", "resourceName": "dra.net/nic", "requestName": "container-0-request-0"},
        {"containerName": "app", "resourceName": "dra.net/nic", "requestName": "container-1-request-1"},
        {"containerName": "side", "resourceName": "deviceclass.resource.kubernetes.io/plain",
         "requestName": "container-2-request-0"},
    ]  # fmt: skip


def test_no_extended_resource_no_claim_and_one_no_class_serves_is_unschedulable() -> None:
    assert (
        special_claim(pod([container("a", limits={"cpu": "1"})]), [device_class("x", "dra.net/nic")]) is None
    )
    assert (
        special_claim(pod([container("a", limits={"dra.net/nic": "0"})]), [device_class("x", "dra.net/nic")])
        is None
    )
    with pytest.raises(ExtendedResourceError, match=r"example\.com/gpu"):
        special_claim(
            pod([container("a", limits={"example.com/gpu": "1"})]), [device_class("x", "dra.net/nic")]
        )


def test_the_kubelet_reads_the_container_s_requests_from_the_pod_status() -> None:
    p = pod([container("app")])
    assert container_request_names(p, "app") == ("", [])
    p["status"] = {
        "extendedResourceClaimStatus": {
            "resourceClaimName": "web-extended-resources-x",
            "requestMappings": [
                {
                    "containerName": "app",
                    "resourceName": "dra.net/nic",
                    "requestName": "container-0-request-0",
                },
                {
                    "containerName": "other",
                    "resourceName": "dra.net/nic",
                    "requestName": "container-1-request-0",
                },
            ],
        }
    }
    assert container_request_names(p, "app") == ("web-extended-resources-x", ["container-0-request-0"])


# ---------------------------------------------------------------- against the local API server


@pytest.fixture
def api(tmp_path: Path) -> Iterator[client.ApiClient]:
    srv = LocalAPIServer()
    srv.start()
    try:
        yield config.new_client_from_config(str(srv.write_kubeconfig(tmp_path / "kubeconfig")))
    finally:
        srv.stop()


def nic_slice(count: int) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{NODE}-dra.net-0"},
        "spec": {
            "driver": "dra.net",
            "nodeName": NODE,
            "pool": {"name": NODE, "generation": 0, "resourceSliceCount": 1},
            "devices": [
                {"name": f"nic{i}", "attributes": {"dra.net/ifName": {"string": f"eth{i}"}}}
                for i in range(count)
            ],
        },
    }


def test_the_allocator_makes_allocates_records_and_releases_the_special_claim(api: client.ApiClient) -> None:
    resource: Any = client.ResourceV1Api(api)
    core: Any = client.CoreV1Api(api)
    with pytest.raises(client.ApiException) as bad:  # refused as a real API server refuses it
        resource.create_device_class(device_class("bad", "nic"))
    assert bad.value.status == 422 and "spec.extendedResourceName" in bad.value.body
    for doc in yaml.safe_load_all((ROOT / "deploy/kubernetes/deviceclass.yaml").read_text()):
        resource.create_device_class(doc)
    resource.create_resource_slice(nic_slice(2))
    body = pod([container("app", limits={"dra.net/nic": "1"})])
    del body["metadata"]["uid"]
    created = json.loads(core.create_namespaced_pod("default", body, _preload_content=False).data)
    alloc = Allocator(api, NODE)
    (claim,) = alloc.allocate_pod(created)
    meta = claim["metadata"]
    assert meta["name"].startswith("web-extended-resources-")
    assert meta["annotations"][EXTENDED_RESOURCE_CLAIM_ANNOTATION] == "true"
    (res,) = claim["status"]["allocation"]["devices"]["results"]
    assert res["request"] == "container-0-request-0" and res["device"] in {"nic0", "nic1"}
    assert claim["status"]["reservedFor"][0]["uid"] == created["metadata"]["uid"]
    stored = alloc.read_pod("default", "web")
    expected = {
        "resourceClaimName": meta["name"],
        "requestMappings": [
            {"containerName": "app", "resourceName": "dra.net/nic", "requestName": "container-0-request-0"}
        ],
    }
    assert stored["status"]["extendedResourceClaimStatus"] == expected
    assert created["status"]["extendedResourceClaimStatus"] == expected  # the caller's copy too
    # scheduling again (a retry) finds the same claim
    assert [c["metadata"]["name"] for c in alloc.allocate_pod(created)] == [meta["name"]]
    # a second pod asking for two NICs when one is left is unschedulable
    two = pod([container("app", limits={"dra.net/nic": "2"})])
    two["metadata"] = {"name": "greedy", "namespace": "default"}
    greedy = json.loads(core.create_namespaced_pod("default", two, _preload_content=False).data)
    with pytest.raises(AllocationError, match="needs 2 device"):
        alloc.allocate_pod(greedy)
    alloc.release_pod(created)
    names = [c.metadata.name for c in resource.list_namespaced_resource_claim("default").items]
    assert meta["name"] not in names
