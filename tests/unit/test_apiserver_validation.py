"""Validation of the local API server stand-in, one test per rule, through the official kubernetes
client over HTTP: each invalid object is refused with a metav1.Status 422 Invalid body whose causes
name the field. The same rules are also checked on the pure functions in apivalidation."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from localcluster import apivalidation
from localcluster.apiserver import LocalAPIServer

# The client's typed results are Optional everywhere; the tests handle them as Any.
ResourceV1Api: Any = client.ResourceV1Api
CoreV1Api: Any = client.CoreV1Api


@pytest.fixture(scope="module")
def server() -> Iterator[LocalAPIServer]:
    srv = LocalAPIServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def res(server: LocalAPIServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = server.write_kubeconfig(tmp_path_factory.mktemp("kc") / "kubeconfig")
    return ResourceV1Api(config.new_client_from_config(str(path)))


def valid_slice(name: str = "node1-dra.net") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"driver": "dra.net", "nodeName": "node1",
                 "pool": {"name": "node1", "generation": 0, "resourceSliceCount": 1},
                 "devices": [{"name": "eth1",
                              "attributes": {"dra.net/ifName": {"string": "eth1"}, "mtu": {"int": 1500}},
                              "capacity": {"dra.net/bandwidth": {"value": "10G"}}}]},
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        cur: Any = body
        keys = path.split(".")
        for key in keys[:-1]:
            cur = cur[int(key)] if isinstance(cur, list) else cur[key]
        cur[keys[-1]] = value
    return apply


def _attrs(n: int) -> dict[str, Any]:
    return {f"a{i}": {"int": i} for i in range(n)}


SLICE_RULES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("no-node-selection", _set("spec.nodeName", None), "spec", "FieldValueRequired"),
    ("two-node-selections", _set("spec.allNodes", True), "spec", "FieldValueInvalid"),
    ("node-selector-and-per-device", lambda b: b["spec"].update(
        nodeName=None, nodeSelector={"nodeSelectorTerms": [{}]}, perDeviceNodeSelection=True), "spec",
     "FieldValueInvalid"),
    ("driver-missing", _set("spec.driver", ""), "spec.driver", "FieldValueRequired"),
    ("driver-not-dns", _set("spec.driver", "Dra_Net"), "spec.driver", "FieldValueInvalid"),
    ("driver-too-long", _set("spec.driver", "d" * 60 + ".net"), "spec.driver", "FieldValueTooLong"),
    ("pool-name-missing", _set("spec.pool.name", ""), "spec.pool.name", "FieldValueRequired"),
    ("pool-name-bad-segment", _set("spec.pool.name", "a//b"), "spec.pool.name", "FieldValueInvalid"),
    ("pool-name-too-long", _set("spec.pool.name", "/".join(["a" * 60] * 5)), "spec.pool.name",
     "FieldValueTooLong"),
    ("pool-generation-negative", _set("spec.pool.generation", -1), "spec.pool.generation",
     "FieldValueInvalid"),
    ("pool-slice-count-zero", _set("spec.pool.resourceSliceCount", 0), "spec.pool.resourceSliceCount",
     "FieldValueInvalid"),
    ("too-many-devices", _set("spec.devices", [{"name": f"d{i}"} for i in range(129)]), "spec.devices",
     "FieldValueTooMany"),
    ("too-many-devices-with-taints", _set("spec.devices", [
        {"name": f"d{i}", "taints": [{"key": "k", "effect": "NoSchedule"}]} for i in range(65)]),
     "spec.devices", "FieldValueTooMany"),
    ("taint-key-missing", _set("spec.devices.0.taints", [{"key": "", "effect": "NoSchedule"}]),
     "spec.devices[0].taints[0].key", "FieldValueRequired"),
    ("taint-key-not-a-label-name", _set("spec.devices.0.taints", [{"key": "dra.net/link down",
                                                                  "effect": "NoSchedule"}]),
     "spec.devices[0].taints[0].key", "FieldValueInvalid"),
    ("taint-value-not-a-label-value", _set("spec.devices.0.taints", [
        {"key": "dra.net/unhealthy", "value": "link down", "effect": "NoSchedule"}]),
     "spec.devices[0].taints[0].value", "FieldValueInvalid"),
    ("taint-effect-missing", _set("spec.devices.0.taints", [{"key": "k", "effect": ""}]),
     "spec.devices[0].taints[0].effect", "FieldValueRequired"),
    ("taint-effect-of-nodes", _set("spec.devices.0.taints", [{"key": "k", "effect": "PreferNoSchedule"}]),
     "spec.devices[0].taints[0].effect", "FieldValueNotSupported"),
    ("too-many-taints", _set("spec.devices.0.taints",
                             [{"key": f"k{i}", "effect": "None"} for i in range(17)]),
     "spec.devices[0].taints", "FieldValueTooMany"),
    ("device-name-not-label", _set("spec.devices.0.name", "eth1.100"), "spec.devices[0].name",
     "FieldValueInvalid"),
    ("device-name-missing", _set("spec.devices.0.name", ""), "spec.devices[0].name", "FieldValueRequired"),
    ("device-name-duplicate", _set("spec.devices", [{"name": "eth1"}, {"name": "eth1"}]),
     "spec.devices[1].name", "FieldValueDuplicate"),
    ("attributes-and-capacity-over-32", _set("spec.devices.0.attributes", _attrs(32)), "spec.devices[0]",
     "FieldValueInvalid"),
    ("attribute-id-not-c-identifier", _set("spec.devices.0.attributes", {"dra.net/if-name": {"string": "x"}}),
     "spec.devices[0].attributes[dra.net/if-name]", "FieldValueInvalid"),
    ("attribute-id-too-long", _set("spec.devices.0.attributes", {"x" * 33: {"int": 1}}),
     f"spec.devices[0].attributes[{'x' * 33}]", "FieldValueTooLong"),
    ("attribute-domain-not-dns", _set("spec.devices.0.attributes", {"Dra_Net/ifName": {"string": "x"}}),
     "spec.devices[0].attributes[Dra_Net/ifName]", "FieldValueInvalid"),
    ("attribute-domain-too-long", _set("spec.devices.0.attributes", {"d" * 61 + ".io/x": {"int": 1}}),
     f"spec.devices[0].attributes[{'d' * 61}.io/x]", "FieldValueTooLong"),
    ("attribute-same-as-driver-domain", _set("spec.devices.0.attributes",
                                             {"ifName": {"string": "a"}, "dra.net/ifName": {"string": "b"}}),
     "spec.devices[0].attributes[dra.net/ifName]", "FieldValueDuplicate"),
    ("attribute-no-value", _set("spec.devices.0.attributes", {"x": {}}), "spec.devices[0].attributes[x]",
     "FieldValueRequired"),
    ("attribute-two-values", _set("spec.devices.0.attributes", {"x": {"int": 1, "string": "a"}}),
     "spec.devices[0].attributes[x]", "FieldValueInvalid"),
    ("attribute-string-over-64-bytes", _set("spec.devices.0.attributes", {"x": {"string": "é" * 33}}),
     "spec.devices[0].attributes[x].string", "FieldValueTooLong"),
    ("attribute-version-not-semver", _set("spec.devices.0.attributes", {"x": {"version": "1.2"}}),
     "spec.devices[0].attributes[x].version", "FieldValueInvalid"),
    ("attribute-version-too-long", _set("spec.devices.0.attributes", {"x": {"version": "1.2.3-" + "a" * 60}}),
     "spec.devices[0].attributes[x].version", "FieldValueTooLong"),
    ("capacity-not-a-quantity", _set("spec.devices.0.capacity", {"bw": {"value": "ten"}}),
     "spec.devices[0].capacity[bw].value", "FieldValueInvalid"),
    ("object-name-not-dns", _set("metadata.name", "Node1_dra"), "metadata.name", "FieldValueInvalid"),
    ("object-name-missing", _set("metadata.name", None), "metadata.name", "FieldValueRequired"),
    ("label-key-invalid", _set("metadata.labels", {"a/b/c": "x"}), "metadata.labels", "FieldValueInvalid"),
]


def _create(res: Any, body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(client.ApiException) as exc:
        res.create_resource_slice(client.V1ResourceSlice.from_dict(body))
    assert exc.value.status == 422
    status: dict[str, Any] = json.loads(exc.value.body or "{}")
    assert status["kind"] == "Status" and status["reason"] == "Invalid" and status["code"] == 422
    return status


@pytest.mark.parametrize(("mutate", "field", "reason"), [r[1:] for r in SLICE_RULES],
                         ids=[r[0] for r in SLICE_RULES])
def test_slice_rule(res: Any, mutate: Callable[[dict[str, Any]], None], field: str,
                    reason: str) -> None:
    body = valid_slice()
    mutate(body)
    status = _create(res, body)
    assert {"field": field, "reason": reason} in [
        {"field": c["field"], "reason": c["reason"]} for c in status["details"]["causes"]], status
    # The pure rule agrees with what the server answered.
    causes = apivalidation.validate_resource_slice(body)
    assert (field, reason) in [(c.field, c.type) for c in causes]


def test_valid_slice_at_the_limits_is_accepted(res: Any) -> None:
    body = valid_slice("limits-dra.net")
    body["spec"]["devices"] = [
        {"name": f"d{i}", "attributes": {**_attrs(30), "dra.net/s": {"string": "x" * 64},
                                         "resource.kubernetes.io/pcieRoot": {"string": "pci0000:00"}},
         "capacity": {}} for i in range(128)]
    body["spec"]["devices"][0]["attributes"]["v"] = {"version": "1.2.3-rc.1+build.5"}
    del body["spec"]["devices"][0]["attributes"]["a0"]
    assert apivalidation.validate_resource_slice(body) == []
    out = res.create_resource_slice(client.V1ResourceSlice.from_dict(body))
    assert len(out.spec.devices) == 128
    res.delete_resource_slice("limits-dra.net")


def test_every_cause_is_listed(res: Any) -> None:
    body = valid_slice()
    body["spec"]["driver"] = "BAD"
    body["spec"]["pool"]["resourceSliceCount"] = 0
    body["spec"]["devices"][0]["name"] = "Eth1"
    status = _create(res, body)
    fields = {c["field"] for c in status["details"]["causes"]}
    assert {"spec.driver", "spec.pool.resourceSliceCount", "spec.devices[0].name"} <= fields
    assert status["message"].startswith('ResourceSlice.resource.k8s.io "node1-dra.net" is invalid: [')
    assert status["details"]["kind"] == "ResourceSlice" and status["details"]["group"] == "resource.k8s.io"


@pytest.mark.parametrize(("field", "value"), [("driver", "other.net"), ("nodeName", "node2")])
def test_slice_immutable_fields(res: Any, field: str, value: str) -> None:
    name = f"imm-{field.lower()}"
    res.create_resource_slice(client.V1ResourceSlice.from_dict(valid_slice(name)))
    try:
        with pytest.raises(client.ApiException) as exc:
            res.patch_resource_slice(name, {"spec": {field: value}})
        assert exc.value.status == 422
        assert json.loads(exc.value.body or "{}")["details"]["causes"][0]["field"] == f"spec.{field}"
    finally:
        res.delete_resource_slice(name)


# --------------------------------------------------------------------------------------------- claims

ALLOCATION = {"devices": {"results": [
    {"request": "nic", "driver": "dra.net", "pool": "node1", "device": "eth1"}]}}


def device_status(**overrides: Any) -> dict[str, Any]:
    entry = {"driver": "dra.net", "pool": "node1", "device": "eth1",
             "conditions": [{"type": "Ready", "status": "True", "reason": "NetworkDeviceReady",
                             "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
             "networkData": {"interfaceName": "eth1", "ips": ["192.0.2.5/24", "2001:db8::5/64"],
                             "hardwareAddress": "aa:bb:cc:dd:ee:ff"}}
    entry.update(overrides)
    return entry


def _cond(**kw: Any) -> list[dict[str, Any]]:
    base = {"type": "Ready", "status": "True", "reason": "Ok", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}
    base.update(kw)
    return [{k: v for k, v in base.items() if v is not None}]


CLAIM_STATUS_RULES: list[tuple[str, dict[str, Any], str, str]] = [
    ("driver-missing", device_status(driver=""), "status.devices[0].driver", "FieldValueRequired"),
    ("pool-missing", device_status(pool=""), "status.devices[0].pool", "FieldValueRequired"),
    ("device-missing", device_status(device=""), "status.devices[0].device", "FieldValueRequired"),
    ("device-not-allocated", device_status(device="eth9"), "status.devices[0]", "FieldValueInvalid"),
    ("condition-type-missing", device_status(conditions=_cond(type="")),
     "status.devices[0].conditions[0].type", "FieldValueRequired"),
    ("condition-status-unknown-value", device_status(conditions=_cond(status="Yes")),
     "status.devices[0].conditions[0].status", "FieldValueNotSupported"),
    ("condition-reason-malformed", device_status(conditions=_cond(reason="not ok")),
     "status.devices[0].conditions[0].reason", "FieldValueInvalid"),
    ("condition-time-missing", device_status(conditions=_cond(lastTransitionTime=None)),
     "status.devices[0].conditions[0].lastTransitionTime", "FieldValueRequired"),
    ("condition-duplicate-type", device_status(conditions=_cond() + _cond()),
     "status.devices[0].conditions[1].type", "FieldValueDuplicate"),
    ("interface-name-over-256", device_status(networkData={"interfaceName": "x" * 257}),
     "status.devices[0].networkData.interfaceName", "FieldValueTooLong"),
    ("ip-not-cidr", device_status(networkData={"ips": ["192.0.2.5"]}), "status.devices[0].networkData.ips[0]",
     "FieldValueInvalid"),
    ("ip-garbage", device_status(networkData={"ips": ["300.1.1.1/24"]}),
     "status.devices[0].networkData.ips[0]", "FieldValueInvalid"),
    ("too-many-ips", device_status(networkData={"ips": [f"10.0.0.{i}/24" for i in range(17)]}),
     "status.devices[0].networkData.ips", "FieldValueTooMany"),
    ("hardware-address-over-128", device_status(networkData={"hardwareAddress": "a" * 129}),
     "status.devices[0].networkData.hardwareAddress", "FieldValueTooLong"),
]


@pytest.fixture
def claim(res: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"claim-{abs(hash(request.node.name)) % 10**8}"
    res.create_namespaced_resource_claim("default", client.ResourceV1ResourceClaim.from_dict({
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "dranet"}}]}}}))
    res.patch_namespaced_resource_claim_status(name, "default", {"status": {"allocation": ALLOCATION}},
                                               _content_type="application/merge-patch+json")
    yield name
    res.delete_namespaced_resource_claim(name, "default")


@pytest.mark.parametrize(("entry", "field", "reason"), [r[1:] for r in CLAIM_STATUS_RULES],
                         ids=[r[0] for r in CLAIM_STATUS_RULES])
def test_claim_status_rule(res: Any, claim: str, entry: dict[str, Any], field: str,
                           reason: str) -> None:
    with pytest.raises(client.ApiException) as exc:
        res.patch_namespaced_resource_claim_status(
            claim, "default",
            {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "status": {"devices": [entry]}},
            field_manager="dra.net", force=True,
            _content_type="application/apply-patch+yaml")
    assert exc.value.status == 422
    causes = json.loads(exc.value.body or "{}")["details"]["causes"]
    assert (field, reason) in [(c["field"], c["reason"]) for c in causes]


def test_valid_claim_status_is_accepted(res: Any, claim: str) -> None:
    out = res.patch_namespaced_resource_claim_status(
        claim, "default", {"status": {"devices": [device_status()]}},
        _content_type="application/merge-patch+json")
    assert out.status.devices[0].conditions[0].reason == "NetworkDeviceReady"


def test_claim_name_rule(res: Any) -> None:
    with pytest.raises(client.ApiException) as exc:
        res.create_namespaced_resource_claim("default", client.ResourceV1ResourceClaim.from_dict({
            "metadata": {"name": "Bad_Name"},
            "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "dranet"}}]}}}))
    assert exc.value.status == 422
    assert json.loads(exc.value.body or "{}")["details"]["causes"][0]["field"] == "metadata.name"


def test_claim_spec_is_immutable(res: Any, claim: str) -> None:
    with pytest.raises(client.ApiException) as exc:
        res.patch_namespaced_resource_claim(claim, "default", {"spec": {"devices": {"requests": [
            {"name": "other", "exactly": {"deviceClassName": "dranet"}}]}}},
            _content_type="application/merge-patch+json")
    assert exc.value.status == 422
    assert json.loads(exc.value.body or "{}")["details"]["causes"][0]["field"] == "spec"


def test_claim_allocation_is_immutable_once_set(res: Any, claim: str) -> None:
    other = copy.deepcopy(ALLOCATION)
    other["devices"]["results"][0]["device"] = "eth2"
    with pytest.raises(client.ApiException) as exc:
        res.patch_namespaced_resource_claim_status(claim, "default", {"status": {"allocation": other}},
                                                   _content_type="application/merge-patch+json")
    assert exc.value.status == 422


def test_claim_request_rules_pure() -> None:
    spec = {"devices": {"requests": [{"name": "nic"}, {"name": "nic", "exactly": {"deviceClassName": "x"},
                                                        "firstAvailable": []}]}}
    fields = {(c.field, c.type) for c in apivalidation.validate_claim_spec("spec", spec)}
    assert ("spec.devices.requests[0]", "FieldValueInvalid") in fields
    assert ("spec.devices.requests[1].name", "FieldValueDuplicate") in fields


def test_taints_and_tolerations_pure() -> None:
    """The rules of validateDeviceTaint and validateDeviceToleration (kubernetes pkg/apis/resource)."""
    ok = {"key": "dra.net/unhealthy", "value": "link-down", "effect": "NoSchedule",
          "timeAdded": "2026-12-03T17:40:00Z"}
    assert apivalidation.validate_device_taint("t", ok) == []
    bad_time = apivalidation.validate_device_taint("t", {**ok, "timeAdded": "yesterday"})
    assert [(c.field, c.type) for c in bad_time] == [("t.timeAdded", "FieldValueInvalid")]
    tolerations = [
        {"operator": "Exists"},  # everything
        {"key": "dra.net/unhealthy", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dra.net/unhealthy", "value": "link-down"},  # operator defaults to Equal
        {"key": "", "operator": "Equal"},
        {"key": "k", "operator": "Exists", "value": "v"},
        {"key": "k", "operator": "In"},
        {"key": "k", "effect": "PreferNoSchedule"},
        {"key": "k", "value": "not a label value"},
        {"key": "k", "effect": "NoExecute", "tolerationSeconds": "60"},
    ]
    spec = {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "dra.net",
                                                                 "tolerations": tolerations}}]}}
    causes = apivalidation.validate_claim_spec("spec", spec)
    got = {(c.field.rsplit("tolerations", 1)[1], c.type) for c in causes}
    assert got == {
        ("[3].operator", "FieldValueInvalid"),
        ("[4].value", "FieldValueInvalid"),
        ("[5].operator", "FieldValueNotSupported"),
        ("[6].effect", "FieldValueNotSupported"),
        ("[7].value", "FieldValueInvalid"),
        ("[8].tolerationSeconds", "FieldValueInvalid"),
    }


def test_namespace_names_are_dns_labels(server: LocalAPIServer, tmp_path: Path) -> None:
    core = CoreV1Api(config.new_client_from_config(str(server.write_kubeconfig(tmp_path / "kc"))))
    with pytest.raises(client.ApiException) as exc:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="a.b")))
    assert exc.value.status == 422


def test_names_are_matched_whole() -> None:
    """Go's `$` is the end of the text; Python's also matches before a trailing newline."""
    assert apivalidation.dns_label("f", "abc\n")
    assert apivalidation.dns_subdomain("f", "a.b\n")
    assert not apivalidation.dns_label("f", "abc")
