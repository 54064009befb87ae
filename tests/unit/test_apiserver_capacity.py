"""The local API server checks consumable capacity (KEP-5075) as the real one does."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client

from localcluster import apivalidation
from tests.unit.test_apiserver_validation import res, server, valid_slice  # noqa: F401 (fixtures)

SHARE = "0b3a1c7e-5d2f-4e6a-9c1b-2f3e4d5c6b7a"


def shared_slice(**policy: Any) -> dict[str, Any]:
    body = valid_slice("shared-dra.net")
    dev = body["spec"]["devices"][0]
    dev["allowMultipleAllocations"] = True
    dev["capacity"] = {
        "dra.net/interfaces": {"value": "8", "requestPolicy": {"default": "1"}},
        "dra.net/bandwidth": {"value": "10G", "requestPolicy": policy or {"default": "1G"}},
    }
    return body


def causes(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c.field, c.type) for c in apivalidation.validate_resource_slice(body)}


BW = "spec.devices[0].capacity[dra.net/bandwidth].requestPolicy"
POLICY_RULES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "values-and-range",
        {"default": "1G", "validValues": ["1G"], "validRange": {"min": "1G"}},
        BW,
        "FieldValueForbidden",
    ),
    ("values-without-default", {"validValues": ["1G"]}, f"{BW}.default", "FieldValueRequired"),
    ("range-without-default", {"validRange": {"min": "1G"}}, f"{BW}.default", "FieldValueRequired"),
    (
        "values-unsorted",
        {"default": "1G", "validValues": ["2G", "1G"]},
        f"{BW}.validValues[1]",
        "FieldValueInvalid",
    ),
    (
        "value-above-capacity",
        {"default": "1G", "validValues": ["1G", "20G"]},
        f"{BW}.validValues[1]",
        "FieldValueInvalid",
    ),
    (
        "default-not-a-value",
        {"default": "3G", "validValues": ["1G", "2G"]},
        f"{BW}.validValues",
        "FieldValueInvalid",
    ),
    (
        "too-many-values",
        {"default": "1", "validValues": [str(i) for i in range(1, 12)]},
        f"{BW}.validValues",
        "FieldValueTooMany",
    ),
    (
        "range-without-min",
        {"default": "1G", "validRange": {"max": "2G"}},
        f"{BW}.validRange.min",
        "FieldValueRequired",
    ),
    (
        "default-below-min",
        {"default": "1G", "validRange": {"min": "2G"}},
        f"{BW}.validRange.min",
        "FieldValueInvalid",
    ),
    (
        "max-above-capacity",
        {"default": "1G", "validRange": {"min": "1G", "max": "11G"}},
        f"{BW}.validRange.max",
        "FieldValueInvalid",
    ),
    (
        "default-off-step",
        {"default": "1500M", "validRange": {"min": "1G", "step": "1G"}},
        f"{BW}.validRange.step",
        "FieldValueInvalid",
    ),
]


@pytest.mark.parametrize(
    ("policy", "field", "reason"), [r[1:] for r in POLICY_RULES], ids=[r[0] for r in POLICY_RULES]
)
def test_request_policy_rule(policy: dict[str, Any], field: str, reason: str) -> None:
    assert (field, reason) in causes(shared_slice(**policy))


def test_a_request_policy_needs_allow_multiple_allocations() -> None:
    body = shared_slice()
    del body["spec"]["devices"][0]["allowMultipleAllocations"]
    assert ("spec.devices[0].capacity[dra.net/interfaces].requestPolicy", "FieldValueForbidden") in causes(
        body
    )


def test_a_shared_nic_is_stored_and_read_back_through_the_official_client(res: Any) -> None:  # noqa: F811
    body = shared_slice(default="1G", validRange={"min": "1G", "step": "1G"})
    assert causes(body) == set()
    out = res.create_resource_slice(client.V1ResourceSlice.from_dict(body))
    dev = out.spec.devices[0]
    assert dev.allow_multiple_allocations is True
    assert dev.capacity["dra.net/bandwidth"].request_policy.valid_range.step == "1G"
    bad = shared_slice(default="1G", validValues=["1G", "20G"])
    bad["metadata"]["name"] = "bad-dra.net"
    with pytest.raises(client.ApiException) as exc:
        res.create_resource_slice(client.V1ResourceSlice.from_dict(bad))
    assert exc.value.status == 422
    res.delete_resource_slice("shared-dra.net")


def test_request_capacity_and_result_shares_are_checked() -> None:
    spec = {
        "devices": {
            "requests": [
                {
                    "name": "nic",
                    "exactly": {
                        "deviceClassName": "dranet",
                        "capacity": {"requests": {"dra.net/bandwidth": "lots"}},
                    },
                }
            ]
        }
    }
    assert ("spec.devices.requests[0].exactly.capacity.requests[dra.net/bandwidth]", "FieldValueInvalid") in {
        (c.field, c.type) for c in apivalidation.validate_claim_spec("spec", spec)
    }
    result = {
        "request": "nic",
        "driver": "dra.net",
        "pool": "node1",
        "device": "eth1",
        "shareID": SHARE,
        "consumedCapacity": {"dra.net/interfaces": "1"},
    }
    status = {"allocation": {"devices": {"results": [result]}}}
    assert apivalidation.validate_claim_status(status) == []
    upper = copy.deepcopy(status)
    upper["allocation"]["devices"]["results"][0]["shareID"] = SHARE.upper()
    assert [c.field for c in apivalidation.validate_claim_status(upper)] == [
        "status.allocation.devices.results[0].shareID"
    ]
    # A status entry names its share: without it (or with another) it is no allocated device.
    entry = {"driver": "dra.net", "pool": "node1", "device": "eth1"}
    for share in (None, "1b3a1c7e-5d2f-4e6a-9c1b-2f3e4d5c6b7a"):
        wrong = {**status, "devices": [{**entry, **({"shareID": share} if share else {})}]}
        assert "must be an allocated device" in json.dumps(
            [c.as_status_cause() for c in apivalidation.validate_claim_status(wrong)]
        )
    assert apivalidation.validate_claim_status({**status, "devices": [{**entry, "shareID": SHARE}]}) == []
