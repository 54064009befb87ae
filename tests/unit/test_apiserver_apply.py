"""Server-side apply of ResourceClaim status.devices on the local API server, as the real one does it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from localcluster.apiserver import LocalAPIServer

APPLY = "application/apply-patch+yaml"


@pytest.fixture
def res(tmp_path: Path) -> Iterator[client.ResourceV1Api]:
    server = LocalAPIServer()
    server.start()
    api = config.new_client_from_config(config_file=str(server.write_kubeconfig(tmp_path / "kc")))
    r = client.ResourceV1Api(api)
    r.create_namespaced_resource_claim(
        "default",
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "c"},
            "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "x"}}]}},
        },
    )
    results = [
        {"request": "nic", "driver": d, "pool": "n1", "device": dev}
        for d, dev in (("a.net", "eth1"), ("b.net", "gpu0"))
    ]
    r.patch_namespaced_resource_claim_status(
        "c",
        "default",
        {"status": {"allocation": {"devices": {"results": results}}}},
        _content_type="application/merge-patch+json",
    )
    yield r
    server.stop()


def entry(driver: str, device: str, message: str = "") -> dict[str, Any]:
    return {
        "driver": driver,
        "pool": "n1",
        "device": device,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Ok",
                "message": message,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }


def apply(
    res: client.ResourceV1Api, manager: str, devices: list[dict[str, Any]], *, force: bool = True, **meta: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "c", **meta},
    }
    if devices:
        body["status"] = {"devices": devices}
    raw: Any = res.patch_namespaced_resource_claim_status(
        "c", "default", body, field_manager=manager, force=force, _content_type=APPLY, _preload_content=False
    )
    return dict(json.loads(raw.data))


def devices_of(obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (d["driver"], d["device"], d["conditions"][0]["message"])
        for d in (obj.get("status") or {}).get("devices") or []
    ]


def test_each_manager_owns_its_entries(res: client.ResourceV1Api) -> None:
    apply(res, "a.net", [entry("a.net", "eth1", "one")])
    out = apply(res, "b.net", [entry("b.net", "gpu0", "gpu")])
    assert devices_of(out) == [("a.net", "eth1", "one"), ("b.net", "gpu0", "gpu")]
    owners = {m["manager"]: m for m in out["metadata"]["managedFields"]}
    assert set(owners) == {"a.net", "b.net"}
    assert owners["a.net"]["operation"] == "Apply" and owners["a.net"]["subresource"] == "status"
    assert list(owners["a.net"]["fieldsV1"]["f:status"]["f:devices"]) == [
        'k:{"device":"eth1","driver":"a.net","pool":"n1"}'
    ]
    out = apply(res, "a.net", [entry("a.net", "eth1", "two")])  # a's update leaves b's entry alone
    assert devices_of(out) == [("a.net", "eth1", "two"), ("b.net", "gpu0", "gpu")]
    out = apply(res, "a.net", [])  # a applies nothing: its entry goes, b's stays
    assert devices_of(out) == [("b.net", "gpu0", "gpu")]
    assert [m["manager"] for m in out["metadata"]["managedFields"]] == ["b.net"]


def test_conflict_unless_forced(res: client.ResourceV1Api) -> None:
    apply(res, "a.net", [entry("a.net", "eth1", "mine")])
    with pytest.raises(client.ApiException) as exc:
        apply(res, "other", [entry("a.net", "eth1", "theirs")], force=False)
    assert exc.value.status == 409 and 'conflict with "a.net"' in json.loads(exc.value.body)["message"]
    out = apply(res, "other", [entry("a.net", "eth1", "theirs")], force=True)
    assert devices_of(out)[0][2] == "theirs"
    assert [m["manager"] for m in out["metadata"]["managedFields"]] == ["other"]


def test_strict_where_the_stand_in_is_smaller(res: client.ResourceV1Api) -> None:
    with pytest.raises(client.ApiException) as exc:  # not a whole object
        res.patch_namespaced_resource_claim_status(
            "c",
            "default",
            {"status": {"devices": [entry("a.net", "eth1")]}},
            field_manager="a.net",
            _content_type=APPLY,
        )
    assert exc.value.status == 400
    with pytest.raises(client.ApiException) as exc:
        res.patch_namespaced_resource_claim_status(
            "c",
            "default",
            {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "status": {"reservedFor": []}},
            field_manager="a.net",
            _content_type=APPLY,
        )
    assert exc.value.status == 422 and "status.reservedFor" in json.loads(exc.value.body)["message"]


def test_uid_precondition_and_missing_claim(res: client.ResourceV1Api) -> None:
    with pytest.raises(client.ApiException) as exc:
        apply(res, "a.net", [entry("a.net", "eth1")], uid="not-the-uid")
    assert exc.value.status == 409 and "Precondition failed" in json.loads(exc.value.body)["message"]
    res.delete_namespaced_resource_claim("c", "default")
    with pytest.raises(client.ApiException) as exc:
        apply(res, "a.net", [entry("a.net", "eth1")])
    assert exc.value.status == 404


def test_put_keeps_managed_fields(res: client.ResourceV1Api) -> None:
    apply(res, "a.net", [entry("a.net", "eth1")])
    raw: Any = res.read_namespaced_resource_claim("c", "default", _preload_content=False)
    obj = json.loads(raw.data)
    obj["metadata"].pop("managedFields")
    obj["metadata"].setdefault("labels", {})["x"] = "y"
    raw = res.replace_namespaced_resource_claim("c", "default", obj, _preload_content=False)
    assert [m["manager"] for m in json.loads(raw.data)["metadata"]["managedFields"]] == ["a.net"]
