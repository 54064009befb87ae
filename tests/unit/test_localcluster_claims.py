"""localcluster/claims.py, the one builder of the claims and device classes the demo, the e2e tests
and the benchmarks create: every variant against the official client's schema (unknown fields,
wrong types, missing required fields) and the stand-in API server's validation."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes.client as k8s
import pytest

from localcluster.apivalidation import (
    validate_device_class,
    validate_resource_claim,
    validate_resource_claim_template,
)
from localcluster.claims import Request, by_ifname, claim_spec, device_class, resource_claim

from .test_deploy_manifests import required_field_error, schema_errors

CFG = {"interface": {"name": "net1", "addresses": ["10.0.0.2/24"]}}

CLAIMS: dict[str, dict[str, Any]] = {
    "one NIC by name": resource_claim("a", [Request("nic", [by_ifname("eth1")])]),
    "own class and config": resource_claim(
        "b", [Request("nic", [by_ifname("eth1")], device_class="dranet-demo", config=CFG)]
    ),
    "several requests, some configured": resource_claim(
        "c",
        [Request("r0", [by_ifname("eth1")], config=CFG), Request("r1", [by_ifname("eth2")])],
        namespace="ns1",
    ),
    "claim-wide config": resource_claim("d", [Request("nic", ["device.driver == 'dra.net'"])], config=CFG),
    "count": resource_claim("e", [Request("nics", count=2)]),
    "a share by capacity, tolerating a taint": resource_claim(
        "f",
        [
            Request(
                "nic",
                ["device.allowMultipleAllocations"],
                capacity={"dra.net/bandwidth": "1G", "dra.net/interfaces": "1"},
                tolerations=[{"key": "dra.net/unhealthy", "operator": "Exists", "effect": "NoSchedule"}],
            )
        ],
    ),
}


def schema_problems(doc: dict[str, Any], model: type) -> list[str]:
    errors = schema_errors(doc, model.__name__, doc["kind"])
    missing = required_field_error(doc, model)
    return errors + ([missing] if missing else [])


@pytest.mark.parametrize("name", CLAIMS)
def test_every_claim_variant_fits_the_schema_and_the_api_server(name: str) -> None:
    claim = CLAIMS[name]
    assert schema_problems(claim, k8s.ResourceV1ResourceClaim) == []
    assert validate_resource_claim(claim) == []


def test_a_wrong_field_fails_the_schema_check() -> None:
    """The check above can fail: a misspelt field and a wrong type are both found."""
    claim = copy.deepcopy(CLAIMS["own class and config"])
    claim["spec"]["devices"]["requests"][0]["exactly"]["deviceClass"] = "dranet"
    claim["spec"]["devices"]["config"][0]["requests"] = "nic"
    errors = schema_problems(claim, k8s.ResourceV1ResourceClaim)
    assert any("deviceClass: unknown field" in e for e in errors), errors
    assert any("config[0].requests: expected a list" in e for e in errors), errors


def test_config_scope_and_order() -> None:
    """The claim-wide config applies to every request (no `requests`), each request's own config
    to that request alone, after it; a request without config adds no entry."""
    spec = claim_spec(
        [Request("r0", config={"interface": {"mtu": 1400}}), Request("r1"), Request("r2", config=CFG)],
        config={"profile": "ipam"},
    )
    assert spec["devices"]["config"] == [
        {"opaque": {"driver": "dra.net", "parameters": {"profile": "ipam"}}},
        {"requests": ["r0"], "opaque": {"driver": "dra.net", "parameters": {"interface": {"mtu": 1400}}}},
        {"requests": ["r2"], "opaque": {"driver": "dra.net", "parameters": CFG}},
    ]
    assert "config" not in claim_spec([Request("r0")])["devices"]


def test_request_fields() -> None:
    body = Request("n", ["a", "b"], device_class="c", count=3, capacity={"x/y": "2"}).body()
    assert body == {
        "name": "n",
        "exactly": {
            "deviceClassName": "c",
            "selectors": [{"cel": {"expression": "a"}}, {"cel": {"expression": "b"}}],
            "allocationMode": "ExactCount",
            "count": 3,
            "capacity": {"requests": {"x/y": "2"}},
        },
    }


def test_a_template_spec_fits_the_schema() -> None:
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "t", "namespace": "default"},
        "spec": {"spec": claim_spec([Request("nic", [by_ifname("eth1")])], config={"profile": "ipam"})},
    }
    assert schema_problems(template, k8s.V1ResourceClaimTemplate) == []
    assert validate_resource_claim_template(template) == []


@pytest.mark.parametrize(
    "dc",
    [
        device_class("plain"),
        device_class("with-config", config={"interface": {"mtu": 1450}}),
        device_class("extended", [by_ifname("eth1")], CFG, extended_resource="dra.net/nic"),
    ],
    ids=["plain", "config", "extended"],
)
def test_device_classes_fit_the_schema_and_the_api_server(dc: dict[str, Any]) -> None:
    assert schema_problems(dc, k8s.V1DeviceClass) == []
    assert validate_device_class(dc) == []
