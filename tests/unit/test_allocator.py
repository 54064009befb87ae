"""The local allocator's pure core: slices -> candidates, CEL matching, allocation."""

from __future__ import annotations

from typing import Any

import pytest

from localcluster.allocator import (
    POD_CLAIM_NAME_ANNOTATION,
    AllocationError,
    Candidate,
    Selector,
    allocate,
    candidates_from_slices,
    claim_from_template,
    in_use,
    parse_quantity,
)

NODE = "node-a"


def device(name: str, ifname: str, **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "dra.net/ifName": {"string": ifname},
        "dra.net/type": {"string": "veth"},
        "dra.net/mtu": {"int": 1500},
        "dra.net/virtual": {"bool": True},
    }
    attrs.update(extra.pop("attributes", {}))
    return {"name": name, "attributes": attrs, **extra}


def slice_(
    devices: list[dict[str, Any]],
    *,
    node: str = NODE,
    pool: str = NODE,
    gen: int = 0,
    count: int = 1,
    driver: str = "dra.net",
    name: str = "s",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "driver": driver,
            "nodeName": node,
            "pool": {"name": pool, "generation": gen, "resourceSliceCount": count},
            "devices": devices,
        },
    }


def dclass(name: str = "dranet", *exprs: str, config: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": e}} for e in exprs]}
    if config:
        spec["config"] = config
    return {"metadata": {"name": name}, "spec": spec}


def claim(
    *requests: dict[str, Any], config: list[dict[str, Any]] | None = None, uid: str = "c1"
) -> dict[str, Any]:
    devices: dict[str, Any] = {"requests": list(requests)}
    if config:
        devices["config"] = config
    return {"metadata": {"name": "claim", "namespace": "default", "uid": uid}, "spec": {"devices": devices}}


def req(name: str = "nic", cls: str = "dranet", *selectors: str, **extra: Any) -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": cls, **extra}
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": s}} for s in selectors]
    return {"name": name, "exactly": exactly}


DRIVER_CLASS = dclass("dranet", 'device.driver == "dra.net"')
NICS = candidates_from_slices(
    [slice_([device("nic0", "tlc0"), device("nic1", "tlc1"), device("nic2", "tlc2")])], NODE
)


def names(allocation: dict[str, Any]) -> list[str]:
    return [r["device"] for r in allocation["devices"]["results"]]


# ------------------------------------------------------------------ slices


def test_candidates_group_attributes_by_domain_and_default_to_driver_domain() -> None:
    dev = device(
        "nic0",
        "tlc0",
        attributes={"resource.kubernetes.io/pcieRoot": {"string": "pci0000:00"}, "alias": {"string": "x"}},
        capacity={"dra.net/bw": {"value": "10G"}},
    )
    (c,) = candidates_from_slices([slice_([dev])], NODE)
    assert c.attributes["dra.net"]["ifName"] == "tlc0"
    assert c.attributes["dra.net"]["alias"] == "x"
    assert c.attributes["dra.net"]["mtu"] == 1500
    assert c.attributes["resource.kubernetes.io"]["pcieRoot"] == "pci0000:00"
    assert c.capacity["dra.net"]["bw"] == 10**10
    assert c.key == ("dra.net", NODE, "nic0")


def test_candidates_only_this_node_and_newest_complete_generation() -> None:
    slices = [
        slice_([device("old", "x")], gen=1),
        slice_([device("new", "y")], gen=2),
        slice_([device("other", "z")], node="node-b", pool="node-b"),
        slice_([device("half", "h")], pool="split", gen=0, count=2),  # second slice missing
        {
            "spec": {
                "driver": "dra.net",
                "allNodes": True,
                "pool": {"name": "net", "generation": 0, "resourceSliceCount": 1},
                "devices": [device("shared", "s")],
            }
        },
    ]
    assert sorted(c.name for c in candidates_from_slices(slices, NODE)) == ["new", "shared"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("10G", 10**10), ("1Gi", 2**30), ("500m", 0.5), ("1e3", 1000), ("7", 7), (3, 3), ("1.5k", 1500)],
)
def test_parse_quantity(text: Any, value: float) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "ten", "1GB", "1..0"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


# ------------------------------------------------------------------ CEL


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('device.driver == "dra.net"', True),
        ('device.driver == "gpu.example.com"', False),
        ('device.attributes["dra.net"].ifName == "tlc0"', True),
        ('device.attributes["dra.net"].ifName.startsWith("tlc")', True),
        ('device.attributes["dra.net"].mtu >= 9000', False),
        ('device.attributes["dra.net"].virtual', True),
        ('"rdma" in device.attributes["dra.net"] && device.attributes["dra.net"].rdma', False),
        ('device.attributes["resource.kubernetes.io"].pcieRoot == "pci0000:00"', True),
        ('"pcieRoot" in device.attributes["unknown.example.com"]', False),  # unknown domain: empty map
        ('device.capacity["dra.net"].bw >= quantity("10G")', True),
    ],
)
def test_selector_semantics(expr: str, expected: bool) -> None:
    dev = Candidate(
        "dra.net",
        NODE,
        "nic0",
        {
            "dra.net": {"ifName": "tlc0", "mtu": 1500, "virtual": True},
            "resource.kubernetes.io": {"pcieRoot": "pci0000:00"},
        },
        {"dra.net": {"bw": 25 * 10**9}},
    )
    assert Selector(expr, "test").matches(dev) is expected


def test_selector_unknown_attribute_is_an_error_like_kubernetes() -> None:
    with pytest.raises(AllocationError, match=r"CEL runtime error.*nic0"):
        Selector('device.attributes["dra.net"].rdma', "DeviceClass x selector #0").matches(NICS[0])


def test_selector_non_bool_and_syntax_errors() -> None:
    with pytest.raises(AllocationError, match="must return a bool"):
        Selector('device.attributes["dra.net"].mtu', "w").matches(NICS[0])
    with pytest.raises(AllocationError, match="does not compile"):
        Selector("device.driver ==", "w")


# ------------------------------------------------------------------ allocation


def test_allocates_first_free_matching_device_with_node_selector() -> None:
    a = allocate(claim(req()), {"dranet": DRIVER_CLASS}, NICS, set(), NODE)
    assert a["devices"]["results"] == [
        {"request": "nic", "driver": "dra.net", "pool": NODE, "device": "nic0"}
    ]
    terms = a["nodeSelector"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}]
    assert "config" not in a["devices"]


def test_request_and_class_selectors_both_apply() -> None:
    cls = dclass("dranet", 'device.driver == "dra.net"', 'device.attributes["dra.net"].ifName != "tlc0"')
    a = allocate(
        claim(req("nic", "dranet", 'device.attributes["dra.net"].ifName.endsWith("2")')),
        {"dranet": cls},
        NICS,
        set(),
        NODE,
    )
    assert names(a) == ["nic2"]


def test_skips_devices_allocated_to_other_claims() -> None:
    other = {
        "metadata": {"uid": "c0"},
        "status": {
            "allocation": {
                "devices": {
                    "results": [{"request": "r", "driver": "dra.net", "pool": NODE, "device": "nic0"}]
                }
            }
        },
    }
    admin = {
        "metadata": {"uid": "c9"},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {
                            "request": "r",
                            "driver": "dra.net",
                            "pool": NODE,
                            "device": "nic1",
                            "adminAccess": True,
                        }
                    ]
                }
            }
        },
    }
    mine = {
        "metadata": {"uid": "c1"},
        "status": {
            "allocation": {
                "devices": {
                    "results": [{"request": "r", "driver": "dra.net", "pool": NODE, "device": "nic2"}]
                }
            }
        },
    }
    busy = in_use([other, admin, mine], exclude_uid="c1")
    assert busy == {("dra.net", NODE, "nic0")}
    assert names(allocate(claim(req()), {"dranet": DRIVER_CLASS}, NICS, busy, NODE)) == ["nic1"]


def test_count_and_two_requests_never_share_a_device() -> None:
    a = allocate(claim(req("a", count=2), req("b")), {"dranet": DRIVER_CLASS}, NICS, set(), NODE)
    assert [(r["request"], r["device"]) for r in a["devices"]["results"]] == [
        ("a", "nic0"),
        ("a", "nic1"),
        ("b", "nic2"),
    ]


def test_not_enough_devices_says_how_many_match_and_are_free() -> None:
    with pytest.raises(AllocationError, match=r"needs 2 device\(s\).*3 match and 1 of them are free"):
        allocate(
            claim(req(count=2)),
            {"dranet": DRIVER_CLASS},
            NICS,
            {("dra.net", NODE, "nic0"), ("dra.net", NODE, "nic1")},
            NODE,
        )


def test_allocation_mode_all() -> None:
    a = allocate(claim(req(allocationMode="All")), {"dranet": DRIVER_CLASS}, NICS, set(), NODE)
    assert names(a) == ["nic0", "nic1", "nic2"]
    with pytest.raises(AllocationError, match="nic1 already allocated"):
        allocate(
            claim(req(allocationMode="All")),
            {"dranet": DRIVER_CLASS},
            NICS,
            {("dra.net", NODE, "nic1")},
            NODE,
        )
    with pytest.raises(AllocationError, match="no device matches"):
        allocate(
            claim(req("r", "dranet", "false", allocationMode="All")),
            {"dranet": DRIVER_CLASS},
            NICS,
            set(),
            NODE,
        )


def test_admin_access_does_not_need_a_free_device() -> None:
    busy = {c.key for c in NICS}
    a = allocate(claim(req(adminAccess=True)), {"dranet": DRIVER_CLASS}, NICS, busy, NODE)
    assert a["devices"]["results"][0]["adminAccess"] is True


def test_first_available_takes_the_first_sub_request_that_fits() -> None:
    r = {
        "name": "nic",
        "firstAvailable": [
            {
                "name": "fast",
                "deviceClassName": "dranet",
                "selectors": [{"cel": {"expression": 'device.attributes["dra.net"].mtu >= 9000'}}],
            },
            {"name": "any", "deviceClassName": "dranet"},
        ],
    }
    a = allocate(claim(r), {"dranet": DRIVER_CLASS}, NICS, set(), NODE)
    assert a["devices"]["results"][0]["request"] == "nic/any"


def test_tainted_devices_need_a_toleration() -> None:
    tainted = [
        Candidate(
            "dra.net",
            NODE,
            "nic0",
            {"dra.net": {}},
            {},
            ({"key": "broken", "value": "yes", "effect": "NoSchedule"},),
        )
    ]
    with pytest.raises(AllocationError):
        allocate(claim(req()), {"dranet": DRIVER_CLASS}, tainted, set(), NODE)
    tol = [{"key": "broken", "operator": "Exists", "effect": "NoSchedule"}]
    assert names(allocate(claim(req(tolerations=tol)), {"dranet": DRIVER_CLASS}, tainted, set(), NODE)) == [
        "nic0"
    ]


@pytest.mark.parametrize(
    ("tolerations", "allocated"),
    [
        ([], False),
        ([{"operator": "Exists"}], True),
        ([{"key": "dra.net/unhealthy", "operator": "Exists"}], True),
        ([{"key": "dra.net/unhealthy", "value": "link-down"}], True),  # Equal by default
        ([{"key": "dra.net/unhealthy", "operator": "Equal", "value": "restore-failed"}], False),
        ([{"key": "dra.net/unhealthy", "operator": "Exists", "effect": "NoExecute"}], False),
        ([{"key": "other", "operator": "Exists"}], False),
    ],
)
def test_tolerations_as_the_scheduler_matches_them(
    tolerations: list[dict[str, Any]], allocated: bool
) -> None:
    taint = {"key": "dra.net/unhealthy", "value": "link-down", "effect": "NoSchedule"}
    nics = [Candidate("dra.net", NODE, "nic0", {"dra.net": {}}, {}, (taint,))]
    request = claim(req(tolerations=tolerations) if tolerations else req())
    if allocated:
        assert names(allocate(request, {"dranet": DRIVER_CLASS}, nics, set(), NODE)) == ["nic0"]
    else:
        with pytest.raises(AllocationError):
            allocate(request, {"dranet": DRIVER_CLASS}, nics, set(), NODE)


def test_a_taint_with_effect_none_only_informs() -> None:
    taint = {"key": "dra.net/unhealthy", "value": "link-down", "effect": "None"}
    nics = [Candidate("dra.net", NODE, "nic0", {"dra.net": {}}, {}, (taint,))]
    assert names(allocate(claim(req()), {"dranet": DRIVER_CLASS}, nics, set(), NODE)) == ["nic0"]


def test_configs_from_class_first_then_from_claim() -> None:
    class_cfg = [{"opaque": {"driver": "dra.net", "parameters": {"interface": {"mtu": 1400}}}}]
    claim_cfg = [
        {"requests": ["nic"], "opaque": {"driver": "dra.net", "parameters": {"interface": {"name": "eth1"}}}}
    ]
    cls = dclass("dranet", 'device.driver == "dra.net"', config=class_cfg)
    a = allocate(claim(req(), config=claim_cfg), {"dranet": cls}, NICS, set(), NODE)
    assert a["devices"]["config"] == [
        {"source": "FromClass", "requests": ["nic"], **class_cfg[0]},
        {"source": "FromClaim", **claim_cfg[0]},
    ]


def test_unsupported_and_missing_things_are_refused_with_a_reason() -> None:
    with pytest.raises(AllocationError, match="DeviceClass 'nope' not found"):
        allocate(claim(req("nic", "nope")), {"dranet": DRIVER_CLASS}, NICS, set(), NODE)
    c = claim(req())
    c["spec"]["devices"]["constraints"] = [{"matchAttribute": "dra.net/pciRoot"}]
    with pytest.raises(AllocationError, match="constraints"):
        allocate(c, {"dranet": DRIVER_CLASS}, NICS, set(), NODE)
    # A capacity request on devices that publish no such capacity: none of them can serve it.
    with pytest.raises(AllocationError, match="without the capacity asked"):
        allocate(
            claim(req(capacity={"requests": {"dra.net/bw": "1G"}})),
            {"dranet": DRIVER_CLASS},
            NICS,
            set(),
            NODE,
        )


def test_claim_from_template() -> None:
    pod = {"metadata": {"name": "web", "namespace": "ns1", "uid": "p-1"}}
    tmpl = {"spec": {"metadata": {"labels": {"a": "b"}}, "spec": {"devices": {"requests": [req()]}}}}
    c = claim_from_template(pod, "net", tmpl, suffix="x1y2")
    assert c["metadata"]["name"] == "web-net-x1y2"
    assert c["metadata"]["namespace"] == "ns1"
    assert c["metadata"]["labels"] == {"a": "b"}
    assert c["metadata"]["annotations"][POD_CLAIM_NAME_ANNOTATION] == "net"
    assert c["metadata"]["ownerReferences"][0]["uid"] == "p-1"
    assert c["spec"] == tmpl["spec"]["spec"]
