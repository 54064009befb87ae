"""Device metadata in the container (KEP-5304) and a NIC asked for as an extended resource
(KEP-5004), end to end on the shared driver (conftest.py's ``driver``: the DaemonSet's pod with
docs/install.md's device metadata step): a process in the pod's container reads its NIC's name and
address from the metadata file and finds them on its own interface.

The container runs tests/e2e/metaread.c (built statically here, packed into an image and imported
into the node's containerd): it waits for the file's networkData, then logs one line
`METADATA ifname=.. ip=.. generation=.. kernel=<the interface's addresses> file=..`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.claims import by_ifname, device_class
from localcluster.demo import Cluster, links_in
from localcluster.nodeagent import PodRun
from localcluster.nodenet import StandInNic
from tests.e2e.claims import Nics, assert_home, claim_body, run_pod_retrying, unique_name, wait

ROOT = Path(__file__).resolve().parents[2]
READER = "localhost/dranet/metaread:1.0"
CONTAINER_DIR = "/var/run/kubernetes.io/dra-device-attributes"


@pytest.fixture(scope="module")
def reader(driver: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The reader's image in the driver's containerd."""
    ctrd = driver.containerd
    assert ctrd is not None
    work = tmp_path_factory.mktemp("metaread")
    subprocess.run(
        ["gcc", "-static", "-Os", "-o", str(work / "metaread"), str(ROOT / "tests/e2e/metaread.c")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    mkimage = ROOT / "localcluster/containerd/mkimage.py"
    subprocess.run(
        [
            sys.executable,
            str(mkimage),
            str(work / "metaread.tar"),
            READER,
            str(work / "metaread"),
            "metaread",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    # the snapshotter the node's containerd was configured with (up.sh picks overlayfs or native)
    m = re.search(r"snapshotter = '(\w+)'", (ctrd.run_dir / "config.toml").read_text())
    subprocess.run(
        [str(ctrd.ctr), "-a", str(ctrd.cri_socket), "-n", "k8s.io", "images", "import",
         "--snapshotter", m.group(1) if m else "overlayfs", str(work / "metaread.tar")],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    return READER


def reader_pod(
    name: str, path: str, resources: dict[str, Any], claims: list[dict[str, str]]
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeName": "",
        "containers": [{"name": "main", "image": READER, "args": [path], "resources": resources}],
    }
    if claims:
        spec["resourceClaims"] = claims
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def metadata_line(cluster: Cluster, run: PodRun) -> dict[str, str]:
    """The reader's line from its container log (the kubelet stand-in's log directory)."""
    log = cluster.workdir / "pods" / run.uid / "main-0.log"

    def line() -> str:
        text = log.read_text() if log.exists() else ""
        return next((x for x in text.splitlines() if "METADATA" in x), "")

    found = wait(line, 40.0)
    assert found, f"the reader logged nothing in {log}"
    assert "METADATA missing" not in found, found
    return dict(kv.split("=", 1) for kv in found.split("METADATA ", 1)[1].split())


def start(cluster: Cluster, pod: dict[str, Any]) -> PodRun:
    assert cluster.agent is not None
    run = run_pod_retrying(cluster, pod)
    cluster.agent.start_containers(run, pod)
    return run


@pytest.fixture
def nic(nics: Nics, driver: Cluster) -> Iterator[StandInNic]:
    (taken,) = nics.take()
    assert driver.net is not None
    before = driver.net.snapshot()
    yield taken
    assert_home(driver, before, taken)
    nics.give_back([taken])


def test_a_container_reads_its_nic_from_the_metadata_file(
    driver: Cluster, reader: str, nic: StandInNic
) -> None:
    claim = unique_name("claim")
    cfg = {"interface": {"name": "net1", "addresses": [nic.pod_address()]}}
    driver.create("resource.k8s.io/v1", "resourceclaims", claim_body(claim, [("nic", nic, cfg)]), "default")
    body = reader_pod(
        unique_name("pod"),
        f"{CONTAINER_DIR}/resourceclaims/{claim}/nic/dra.net-metadata.json",
        {"claims": [{"name": "net"}]},
        [{"name": "net", "resourceClaimName": claim}],
    )
    body["spec"]["nodeName"] = driver.node_name
    pod = driver.create("v1", "pods", body, "default")
    run = None
    try:
        run = start(driver, pod)
        seen = metadata_line(driver, run)
        # what the process in the container read, and what its own interface has
        assert seen["ifname"] == "net1"
        assert seen["ip"] == nic.pod_address()
        assert nic.pod_address().split("/")[0] in seen["kernel"].split(",")
        assert int(seen["generation"]) >= 2  # prepare's generation 1, then the attach's network data
        # the runtime's side: the CDI spec that mounted it, named by the claim's UID and request
        assert driver.containerd is not None
        uid = driver.get("resource.k8s.io/v1", "resourceclaims", claim, "default")["metadata"]["uid"]
        spec = driver.containerd.cdi_dir / f"dra.net_metadata_{uid}_nic.json"
        assert f"/resourceclaims/{claim}/nic/dra.net-metadata.json" in spec.read_text()
    finally:
        driver.remove_pod(pod, run)
    assert not spec.exists()  # unprepare removed it


def test_a_nic_asked_for_as_an_extended_resource(driver: Cluster, reader: str, nic: StandInNic) -> None:
    """limits {dra.net/nic: 1}: the scheduler's claim (allocator stand-in), its request mapped to the
    container (kubelet stand-in), the NIC in the pod with the class's config, and the metadata file
    under the generated claim's name."""
    assert driver.net is not None
    mac = driver.net.snapshot()[nic.name]["address"]
    # A class of this test's own for dra.net/nic: created after the shipped dranet-nic, it wins the
    # name (the newest class does), and it selects only this test's NIC.
    klass = unique_name("nic-class")
    cfg = {"interface": {"name": "net1", "addresses": [nic.pod_address()]}}
    klass_body = device_class(klass, [by_ifname(nic.name)], cfg, extended_resource="dra.net/nic")
    driver.create("resource.k8s.io/v1", "deviceclasses", klass_body)
    body = reader_pod(
        unique_name("pod"), f"{CONTAINER_DIR}/resourceclaims/", {"limits": {"dra.net/nic": "1"}}, []
    )
    body["spec"]["nodeName"] = driver.node_name
    pod = driver.create("v1", "pods", body, "default")
    run = None
    try:
        run = start(driver, pod)
        status = pod["status"]["extendedResourceClaimStatus"]
        name = status["resourceClaimName"]
        assert name.startswith(f"{pod['metadata']['name']}-extended-resources-")
        assert status["requestMappings"] == [
            {"containerName": "main", "resourceName": "dra.net/nic", "requestName": "container-0-request-0"}
        ]
        claim = driver.get("resource.k8s.io/v1", "resourceclaims", name, "default")
        assert claim["metadata"]["annotations"]["resource.kubernetes.io/extended-resource-claim"] == "true"
        (res,) = claim["status"]["allocation"]["devices"]["results"]
        assert res["request"] == "container-0-request-0"
        assert run.status is not None
        net1 = links_in(run.status.netns)["net1"]
        assert net1["address"] == mac  # this test's NIC, with the class's config
        seen = metadata_line(driver, run)
        assert seen["ifname"] == "net1" and seen["ip"] == nic.pod_address()
        assert (
            seen["file"]
            == f"{CONTAINER_DIR}/resourceclaims/{name}/container-0-request-0/dra.net-metadata.json"
        )
    finally:
        driver.remove_pod(pod, run)
        driver.delete("resource.k8s.io/v1", "deviceclasses", klass)
    names = [
        c["metadata"]["name"] for c in driver.list_objects("resource.k8s.io/v1", "resourceclaims", "default")
    ]
    assert name not in names  # the pod's claim goes with the pod
