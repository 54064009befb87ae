"""The worker attaches only what dra prepared (issue 13, item 1): a caller playing a hostile nri
asks for a device prepared for another pod, for no pod, with another config, interface or claim;
each is refused before any change, logged and counted, and the NICs stay where they were."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from dranet.services.netns.grants import Grant, Grants, Refused, check_attach
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusError
from dranet.observability import metrics

pytestmark = pytest.mark.kernel

CONFIG = {"interface": {"name": "eth0"}}


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    bed = testbed("tng")
    bed.add_nic("tngs0", addresses=("10.9.0.2/24",))
    bed.add_nic("tngs1")
    return bed


def claim(uid: str, pods: list[str], device: str, ifname: str, config: dict) -> dict:
    return {"uid": uid, "pod_uids": pods, "devices": [{"device": device, "ifname": ifname, "config": config}]}


def refused_count(op: str, reason: str) -> float:
    return metrics.value("dranet_netns_refused_total", op=op, reason=reason)


def test_hostile_attaches_are_refused_logged_and_counted(
    tb: Testbed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pod_a, pod_b = tb.add_netns(), tb.add_netns()
    grants = Grants(tmp_path / "grants.json")
    grants.grant([claim("claim-a", ["pod-a"], "s0", "tngs0", CONFIG)])
    w = NetnsWorker(tmp_path, host_netns=tb.node_path, grants=grants)
    ns_b = f"/run/netns/{pod_b}"
    ns_a = f"/run/netns/{pod_a}"
    s0 = {"device": "s0", "ifname": "tngs0", "config": CONFIG}
    attempts = [
        ("another pod's device", "pod-b", ns_b, s0, "other_pod"),
        (
            "a device prepared for no pod",
            "pod-b",
            ns_b,
            {"device": "s1", "ifname": "tngs1", "config": {}},
            "not_prepared",
        ),
        (
            "another config",
            "pod-a",
            ns_a,
            {**s0, "config": {"interface": {"name": "eth9", "mtu": 9000}}},
            "config",
        ),
        ("another host interface", "pod-a", ns_a, {**s0, "ifname": "tngs1"}, "mismatch"),
        ("another claim", "pod-a", ns_a, {**s0, "claim_uid": "claim-x"}, "mismatch"),
    ]
    try:
        for what, pod_uid, netns, dev, reason in attempts:
            before = refused_count("attach", reason)
            with caplog.at_level(logging.WARNING), pytest.raises(BusError) as err:
                w.attach(pod_uid, netns, [dev])
            assert err.value.code == "not_allowed", (what, err.value)
            assert refused_count("attach", reason) == before + 1, what
            assert any(
                "refused" in r.getMessage() and getattr(r, "pod_uid", "") == pod_uid for r in caplog.records
            )
            caplog.clear()
        # Nothing moved: both NICs on the host, nothing in either pod, nothing journaled.
        assert tb.link("tngs0") is not None and tb.link("tngs1") is not None
        assert tb.link("eth0", ns=pod_a) is None and tb.link("eth0", ns=pod_b) is None
        assert w.ledger.entries() == []
        # A detach naming a device the pod neither holds nor was granted is refused too.
        with pytest.raises(BusError) as err:
            w.detach("pod-b", ["s0"])
        assert err.value.code == "not_allowed"
        # What dra prepared attaches; once revoked, the same request is refused.
        w.attach("pod-a", f"/run/netns/{pod_a}", [attempts[0][3]])
        assert tb.link("eth0", ns=pod_a) is not None
        w.detach("pod-a", ["s0"])
        grants.revoke(["claim-a"])
        with pytest.raises(BusError) as err:
            w.attach("pod-a", f"/run/netns/{pod_a}", [attempts[0][3]])
        assert err.value.code == "not_allowed"
        assert tb.link("tngs0") is not None
    finally:
        w.close()


def test_grants_survive_a_restart_of_the_worker(tmp_path: Path) -> None:
    Grants(tmp_path / "grants.json").grant([claim("c1", ["p1"], "d1", "x1", CONFIG)])
    again = Grants(tmp_path / "grants.json")
    assert [g.claim_uid for g in again.snapshot()] == ["c1"]
    again.grant([claim("c2", ["p2"], "d2", "x2", {})], replace=True)
    assert [g.claim_uid for g in Grants(tmp_path / "grants.json").snapshot()] == ["c2"]


def test_a_netdev_with_an_rdma_device_is_matched_by_its_interface() -> None:
    """nri names a netdev by its interface only; the grant also knows its RDMA device."""
    grant = Grant.from_request(
        {
            "uid": "c",
            "pod_uids": ["p"],
            "devices": [{"device": "d", "ifname": "x0", "config": {}, "rdma_device": "mlx5_0"}],
        }
    )
    check_attach([grant], "p", [{"device": "d", "ifname": "x0", "config": {}}])
    rdma_only = Grant.from_request(
        {
            "uid": "c",
            "pod_uids": ["p"],
            "devices": [{"device": "r", "ifname": "", "config": {}, "rdma_device": "mlx5_1"}],
        }
    )
    check_attach([rdma_only], "p", [{"device": "r", "ifname": "", "config": {}, "rdma_device": "mlx5_1"}])
    with pytest.raises(Refused):
        check_attach([rdma_only], "p", [{"device": "r", "ifname": "", "config": {}, "rdma_device": "mlx5_2"}])
