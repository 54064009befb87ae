"""Cloud attributes (issue 16) end to end on the shared driver: discovery in the DaemonSet's pod
reads a GCE metadata stand-in on the node (localcluster/metadata.py, --cloud-provider=gce), the
stand-in NICs' slices carry GCE's attributes and dra.net/cloudNetwork, and a claim that selects a
NIC by its cloud network gets it in its pod."""

from __future__ import annotations

from typing import Any

import pytest

from localcluster.claims import Request, resource_claim
from localcluster.metadata import network_of
from localcluster.node import DaemonSetCluster
from tests.e2e.claims import Nics, assert_home, has_nic, run_pod_retrying, simple_cfg, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]


def attributes_of(driver: DaemonSetCluster, ifname: str) -> dict[str, Any]:
    for s in driver.our_slices():
        for d in s["spec"].get("devices") or []:
            attrs = d.get("attributes") or {}
            if (attrs.get("dra.net/ifName") or {}).get("string") == ifname:
                return {k: next(iter(v.values())) for k, v in attrs.items()}
    return {}


def by_cloud_network(network: str) -> str:
    attrs = 'device.attributes["dra.net"]'
    return f'"cloudNetwork" in {attrs} && {attrs}.cloudNetwork == "{network}"'


def test_a_claim_selects_a_nic_by_its_cloud_network(driver: DaemonSetCluster, nics: Nics) -> None:
    assert driver.net is not None
    (nic,) = nics.take()
    before = driver.net.snapshot()
    attrs = attributes_of(driver, nic.name)
    assert attrs["dra.net/cloudNetwork"] == network_of(nic.name), attrs
    assert attrs["gce.dra.net/networkName"] == network_of(nic.name)
    assert attrs["gce.dra.net/networkProjectNumber"] == 1234
    assert attrs["gce.dra.net/machineType"] == "standin-8"
    name = unique_name("cloud")
    # guarded: a device without the attribute (the node's CNI bridge, which is in no cloud network)
    # is a CEL error, and fails the allocation
    request = Request("nic", [by_cloud_network(network_of(nic.name))])
    claim = resource_claim(name, [request], config=simple_cfg(nic))
    driver.create("resource.k8s.io/v1", "resourceclaims", claim, "default")
    pod = driver.make_pod(unique_name("cloud-pod"), {"net": name})
    run = None
    try:
        run = run_pod_retrying(driver, pod)
        assert run.status is not None
        mac = before[nic.name]["address"]
        assert has_nic(run.status.netns, nic, mac)
    finally:
        driver.remove_pod(pod, run)
    assert_home(driver, before, nic)
    nics.give_back([nic])
