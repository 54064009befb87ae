"""A share of a shared NIC through dra and the worker's grants (pure): the child by default, the
MTU rule, shares that coexist, the share checked at attach, the status entry of each share."""

from __future__ import annotations

from typing import Any

import pytest
from dranet.services.dra.prepare import PrepareError, device_conflicts, prepare_claim
from dranet.services.dra.status import device_entry
from dranet.services.netns.grants import Grant, Refused, check_attach

from tests.unit.test_dra_prepare import DRIVER, NODE, claim_json, config, result

SHARE = "0b3a1c7e-5d2f-4e6a-9c1b-2f3e4d5c6b7a"
INVENTORY = {"fast0": {"name": "fast0", "ifname": "fast0", "attributes": {"dra.net/mtu": 1500}}}


def shared(uid: str, share: str, *configs: dict[str, Any]) -> Any:
    r = {**result("fast0"), "shareID": share, "consumedCapacity": {"dra.net/interfaces": "1"}}
    c = claim_json(uid=uid, name=uid, results=[r], configs=list(configs), pod_uid=f"pod-{uid}")
    return prepare_claim(c, driver=DRIVER, node_name=NODE, inventory=INVENTORY.get)


def test_a_share_gets_a_macvlan_child_unless_its_config_says_ipvlan() -> None:
    d = shared("c1", SHARE).devices[0]
    assert d.share_id == SHARE and d.ifname == "fast0"
    assert d.config["interface"]["type"] == "macvlan" and d.config["interface"]["macvlan"] == {
        "mode": "bridge"
    }
    d = shared("c1", SHARE, config({"interface": {"type": "ipvlan"}})).devices[0]
    assert d.config["interface"]["ipvlan"] == {"mode": "l2", "flag": "bridge"}


def test_a_share_never_moves_the_nic_and_its_mtu_stays_under_the_parents() -> None:
    with pytest.raises(PrepareError, match=r"interface\.type: passthrough would move a shared NIC"):
        shared("c1", SHARE, config({"interface": {"type": "passthrough"}}))
    with pytest.raises(
        PrepareError, match=r"interface\.mtu: 9000 is above the MTU 1500 of the shared NIC fast0"
    ):
        shared("c1", SHARE, config({"interface": {"mtu": 9000}}))


def test_shares_of_one_nic_do_not_conflict() -> None:
    a, b = shared("c1", SHARE), shared("c2", "1b3a1c7e-5d2f-4e6a-9c1b-2f3e4d5c6b7a")
    assert device_conflicts(b, [a]) == []


def test_the_worker_checks_the_share_dra_granted() -> None:
    grant = Grant.from_request(
        {
            "uid": "c1",
            "pod_uids": ["p"],
            "devices": [{"device": "fast0", "ifname": "fast0", "config": {}, "share_id": SHARE}],
        }
    )
    check_attach([grant], "p", [{"device": "fast0", "ifname": "fast0", "config": {}, "share_id": SHARE}])
    for other in ("", "1b3a1c7e-5d2f-4e6a-9c1b-2f3e4d5c6b7a"):
        with pytest.raises(Refused, match="share"):
            check_attach(
                [grant], "p", [{"device": "fast0", "ifname": "fast0", "config": {}, "share_id": other}]
            )
    assert Grant.from_dict(grant.to_dict()) == grant


def test_each_share_has_its_own_status_entry() -> None:
    entry = device_entry(DRIVER, NODE, "fast0", ready=True, network={"interfaceName": "net1"}, share_id=SHARE)
    assert entry["shareID"] == SHARE and entry["networkData"]["interfaceName"] == "net1"
    assert "shareID" not in device_entry(DRIVER, NODE, "eth1", ready=True)
