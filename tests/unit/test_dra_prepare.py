"""From a ResourceClaim to a prepared claim (pure): consumer, results, config merging, validation."""

from __future__ import annotations

from typing import Any

import pytest
from dranet.services.dra.model import PreparedClaim, PreparedDevice
from dranet.services.dra.prepare import (
    PrepareError,
    applicable_configs,
    device_conflicts,
    driver_results,
    pod_consumer,
    prepare_claim,
)

from dranet.config import FeatureTable

DRIVER = "dra.net"
NODE = "node-a"
INVENTORY = {
    "eth1": {"name": "eth1", "ifname": "eth1", "allocatable": True, "rdma_device": ""},
    "eth2": {"name": "eth2", "ifname": "eth2", "allocatable": True, "rdma_device": ""},
    "uplink": {"name": "uplink", "ifname": "eth0", "allocatable": False},
    "in-a-pod": {"name": "in-a-pod", "ifname": "", "allocatable": True},
    "ib0": {"name": "ib0", "ifname": "", "rdma_device": "mlx5_0", "allocatable": True},
}


def result(device: str, request: str = "nic", driver: str = DRIVER, pool: str = NODE) -> dict[str, Any]:
    return {"request": request, "driver": driver, "pool": pool, "device": device}


def config(
    params: dict[str, Any], source: str = "FromClaim", requests: list[str] | None = None, driver: str = DRIVER
) -> dict[str, Any]:
    return {"source": source, "requests": requests or [], "opaque": {"driver": driver, "parameters": params}}


def claim_json(
    *,
    uid: str = "claim-uid-1",
    name: str = "claim-1",
    namespace: str = "default",
    results: list[dict[str, Any]] | None = None,
    configs: list[dict[str, Any]] | None = None,
    reserved: list[dict[str, Any]] | None = None,
    pod_uid: str = "pod-uid-1",
) -> dict[str, Any]:
    """A resource.k8s.io/v1 ResourceClaim as the API server returns it, allocated on NODE."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "dra.net"}}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": results if results is not None else [result("eth1")],
                    "config": configs or [],
                },
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}
                    ]
                },
            },
            "reservedFor": reserved
            if reserved is not None
            else [{"resource": "pods", "name": "pod-1", "uid": pod_uid}],
        },
    }


def prep(claim: dict[str, Any]) -> PreparedClaim:
    return prepare_claim(claim, driver=DRIVER, node_name=NODE, inventory=INVENTORY.get)


def test_single_pod_consumer() -> None:
    assert pod_consumer(claim_json()) == "pod-uid-1"


@pytest.mark.parametrize(
    ("reserved", "fragment"),
    [
        ([], "not reserved for any pod"),
        (
            [{"resource": "pods", "name": "a", "uid": "1"}, {"resource": "pods", "name": "b", "uid": "2"}],
            "exactly one pod",
        ),
        ([{"apiGroup": "batch", "resource": "jobs", "name": "j", "uid": "1"}], "not a pod"),
    ],
)
def test_consumer_refusals(reserved: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(PrepareError, match=fragment):
        pod_consumer(claim_json(reserved=reserved))


def test_results_of_other_drivers_are_skipped() -> None:
    c = claim_json(results=[result("gpu0", driver="gpu.example.com"), result("eth1")])
    assert [r["device"] for r in driver_results(c, DRIVER)] == ["eth1"]
    out = prep(c)
    assert [d.device for d in out.devices] == ["eth1"]


def test_unallocated_claim_is_refused() -> None:
    c = claim_json()
    del c["status"]["allocation"]
    with pytest.raises(PrepareError, match="not allocated"):
        prep(c)


def test_class_configs_come_first_whatever_the_order() -> None:
    c = claim_json(
        configs=[
            config({"interface": {"mtu": 9000}}, "FromClaim"),
            config({"interface": {"mtu": 1400, "name": "net1"}}, "FromClass"),
            config({"interface": {"mtu": 1}}, "FromClaim", driver="other.example.com"),
            config({"interface": {"mtu": 2}}, "FromClaim", requests=["other"]),
        ]
    )
    assert applicable_configs(c, DRIVER, "nic") == [
        {"interface": {"mtu": 1400, "name": "net1"}},
        {"interface": {"mtu": 9000}},
    ]
    dev = prep(c).devices[0]
    # merged field by field: the claim's mtu wins, the class's name stays (upstream kept only the first)
    assert dev.config["interface"] == {"name": "net1", "mtu": 9000}


def test_sub_request_matches_parent_request_configs() -> None:
    c = claim_json(
        results=[result("eth1", request="nic/fast")],
        configs=[
            config({"interface": {"name": "a"}}, requests=["nic"]),
            config({"interface": {"mtu": 1500}}, requests=["nic/fast"]),
        ],
    )
    dev = prep(c).devices[0]
    assert dev.config["interface"] == {"name": "a", "mtu": 1500}
    assert dev.request == "nic/fast" and dev.request_name == "nic"


def test_prepared_claim_content() -> None:
    c = claim_json(results=[result("eth1"), result("eth2", request="second")])
    out = prep(c)
    assert (out.uid, out.namespace, out.name, out.pod_uids) == (
        "claim-uid-1",
        "default",
        "claim-1",
        ["pod-uid-1"],
    )
    assert [(d.request, d.pool, d.device, d.ifname) for d in out.devices] == [
        ("nic", NODE, "eth1", "eth1"),
        ("second", NODE, "eth2", "eth2"),
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"interface": {"mtu": 10}}, "interface.mtu"),
        ({"interface": {"addresses": ["10.0.0.300/24"]}}, "interface.addresses[0]"),
        ({"routes": [{"destination": "10.1.0.0/16"}]}, "routes[0]"),
        ({"bogus": 1}, "bogus"),
        (
            {
                "interface": {"addresses": ["10.0.0.2/24"]},
                "routes": [{"destination": "10.9.0.0/16", "gateway": "192.168.7.1"}],
            },
            "routes[0].gateway",
        ),
    ],
)
def test_validation_errors_name_device_field_and_reason(params: dict[str, Any], field: str) -> None:
    with pytest.raises(PrepareError) as exc:
        prep(claim_json(configs=[config(params)]))
    msg = exc.value.message
    assert f"device {NODE}/eth1 (request nic)" in msg
    assert f"invalid config: {field}" in msg


@pytest.mark.parametrize("params", [["interface"], "{}", 7, True, None])
def test_parameters_that_are_not_an_object_are_refused(params: Any) -> None:
    """Never read as "no configuration": the pod would get a NIC without what the claim asked for."""
    good = config({"interface": {"mtu": 1500}}, "FromClass")
    with pytest.raises(PrepareError) as exc:
        prep(claim_json(configs=[good, config(params)]))
    msg = exc.value.message
    assert f"device {NODE}/eth1 (request nic): invalid config" in msg
    assert "status.allocation.devices.config[1].opaque.parameters: must be a JSON object" in msg


def test_merge_errors_are_prepare_errors() -> None:
    deep: Any = 1
    for _ in range(100):
        deep = {"k": deep}
    with pytest.raises(PrepareError, match="nested more than"):
        prep(claim_json(configs=[config({"interface": deep})]))


def test_inventory_errors() -> None:
    with pytest.raises(PrepareError, match="not in this node's inventory"):
        prep(claim_json(results=[result("eth7")]))
    with pytest.raises(PrepareError, match="not allocatable"):
        prep(claim_json(results=[result("uplink")]))
    with pytest.raises(PrepareError, match="no interface on the host right now") as err:
        prep(claim_json(results=[result("in-a-pod")]))
    assert err.value.retriable
    with pytest.raises(PrepareError, match="not this node's pool"):
        prep(claim_json(results=[result("eth1", pool="node-b")]))


def test_rdma_only_device_refuses_netdev_config() -> None:
    out = prep(claim_json(results=[result("ib0")]))
    assert out.devices[0].rdma_device == "mlx5_0" and out.devices[0].ifname == ""
    with pytest.raises(PrepareError, match="RDMA-only"):
        prep(claim_json(results=[result("ib0")], configs=[config({"interface": {"mtu": 1500}})]))


def test_admin_access_is_refused_with_the_reason() -> None:
    """A NIC is in one netns at a time: an adminAccess claim (which may be on a device another
    pod holds, even reserved for several pods) is refused before the consumer rules, naming it."""
    r = result("eth1")
    r["adminAccess"] = True
    pods = [{"resource": "pods", "name": f"p{i}", "uid": f"u{i}"} for i in range(2)]
    for reserved in (None, pods):
        with pytest.raises(PrepareError) as err:
            prep(claim_json(results=[result("eth2", request="other"), r], reserved=reserved))
        assert f"device {NODE}/eth1 (request nic): adminAccess is not supported" in err.value.message
        assert "one network namespace at a time" in err.value.message and not err.value.retriable


def test_device_conflicts() -> None:
    a = PreparedClaim("a", "ns", "a", ["p1"], [PreparedDevice("nic", NODE, "eth1", "eth1", {})])
    b = PreparedClaim("b", "ns", "b", ["p2"], [PreparedDevice("nic", NODE, "eth1", "eth1", {})])
    assert device_conflicts(b, [a]) == [f"device {NODE}/eth1 is already prepared for claim ns/a"]
    assert device_conflicts(a, [a]) == []


# The features of eth1 as the netns worker reads them (rx-lro fixed off, as on a veth).
ETH1_FEATURES = FeatureTable(
    features={
        "rx-gro": True,
        "rx-lro": False,
        "tx-tcp-segmentation": True,
        "tx-tcp-accecn-segmentation": True,
    },
    fixed=frozenset({"rx-lro"}),
)


def prep_with_features(params: dict[str, Any], asked: list[str]) -> PreparedClaim:
    def features(ifname: str) -> FeatureTable:
        asked.append(ifname)
        return ETH1_FEATURES

    return prepare_claim(
        claim_json(configs=[config(params)]),
        driver=DRIVER,
        node_name=NODE,
        inventory=INVENTORY.get,
        features=features,
    )


def test_ethtool_names_are_checked_against_the_device_at_prepare() -> None:
    """Upstream's long names pass; a fixed feature at its value is a no-op; the table is asked
    only when the claim names ethtool settings."""
    asked: list[str] = []
    ok = {"tcp-segmentation-offload": False, "generic-receive-offload": False, "large-receive-offload": False}
    prepared = prep_with_features({"ethtool": {"features": ok}}, asked)
    assert prepared.devices[0].config["ethtool"]["features"] == ok and asked == ["eth1"]
    prep_with_features({"interface": {"mtu": 1400}}, asked)
    assert asked == ["eth1"]


@pytest.mark.parametrize(
    ("features", "fragment"),
    [
        ({"warp-drive": True}, "ethtool.features.warp-drive: the device has no such feature"),
        ({"lro": True}, "ethtool.features.lro: rx-lro cannot be changed on this device (fixed off"),
    ],
)
def test_ethtool_refusals_at_prepare_name_the_field(features: dict[str, bool], fragment: str) -> None:
    with pytest.raises(PrepareError) as err:
        prep_with_features({"ethtool": {"features": features}}, [])
    assert fragment in err.value.message and not err.value.retriable


def test_ethtool_private_flag_the_device_lacks_is_refused_at_prepare() -> None:
    with pytest.raises(PrepareError) as err:
        prep_with_features({"ethtool": {"privateFlags": {"legacy-rx": True}}}, [])
    assert "ethtool.privateFlags.legacy-rx" in err.value.message
