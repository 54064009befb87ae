"""The real runtime and the driver for end-to-end tests.

- ``driver`` (session): the driver as it ships, the DaemonSet's pod (deploy/kubernetes, kustomized)
  from the image `make image` builds, run through CRI on a private containerd 2.1 with NRI inside a
  node stand-in's network namespace (localcluster/node.py), with the local API server, allocator and
  kubelet stand-in (real DRA gRPC through the registration socket the pod creates, real CRI). Every
  e2e test of the driver uses it; ``nics`` hands out its stand-in NICs. dra asks the example
  IPAM provider (deploy/examples/ipam_webhook.py), running on the node, for `profile: ipam`
  claims. A test that stops or restarts part of the driver brings it back before it returns
  (``driver.wait_services()``).
- ``containerd`` (session) and ``cri``: a bare private containerd for the tests of the runtime and
  the NRI protocol alone (no driver).

containerd's Debian packages are fetched once into the cache ($DRANET_CTRD_CACHE or
/var/cache/dranet-ctrd), the image's layers are cached under /var/cache/dranet-image; everything
started here is torn down after the session, whatever the outcome.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.containerd import Containerd, PackagesUnavailable
from localcluster.cri import CriClient
from localcluster.node import DaemonSetCluster, kustomized_docs
from tests.e2e.claims import Nics

# Stand-in NICs of the driver's node for the whole session; a test takes what it uses (Nics.take)
# and may give back the ones it found home again (Nics.give_back).
NIC_COUNT = 40
# The example IPAM provider's pool, served on the driver's node (dra's --webhook-url): claims with
# `profile: ipam` get their addresses from it (test_addressing.py).
IPAM_POOL = "10.63.0.0/27"
# A NIC whose alias is SHARED_ALIAS is shared (KEP-5075): discovery publishes it with
# allowMultipleAllocations and SHARED_INTERFACES child interfaces (test_shared_nic.py sets the alias
# on a NIC it took, and clears it after).
SHARED_ALIAS = "dranet-e2e-shared"
SHARED_INTERFACES = 10
SHARED_FILTER = (
    f'"dra.net/alias" in attributes && attributes["dra.net/alias"].StringValue == "{SHARED_ALIAS}"'
)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the e2e tests start containerd and need root")


@pytest.fixture(scope="session")
def driver() -> Iterator[DaemonSetCluster]:
    need_root()
    for tool in ("mmdebstrap", "openssl"):  # kubectl optional (kustomized_docs)
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: `make system-deps` installs the tools the tests use")
    workdir = Path(tempfile.mkdtemp(prefix="tds-", dir="/tmp"))
    # CDI on as docs/install.md describes (the fail-closed tests need the hook), device metadata
    # files too (test_device_metadata.py). containerd's NRI
    # request timeout at 10 s instead of its 2 s default (plugin_request_timeout, an operator's
    # setting): on this shared 2-core machine a single attach has missed the 1.5 s budget, and a
    # test must not depend on the machine's speed.
    c = DaemonSetCluster(
        workdir,
        nic_count=NIC_COUNT,
        log=lambda s: None,
        cdi=True,
        device_metadata=True,
        nri_request_timeout="10s",
        ipam_pool=IPAM_POOL,
        # the worker renews DHCP leases within 2 s, so test_addressing sees a renewal (its default
        # follows the lease's T1); discovery shares the NIC test_shared_nic.py marks with SHARED_ALIAS
        extra_args={
            "netns": ["--dhcp-renew-max", "2"],
            "discovery": ["--shared-filter", SHARED_FILTER, "--shared-interfaces", str(SHARED_INTERFACES)],
        },
        gce_metadata=True,  # discovery publishes GCE's attributes (test_cloud_attributes.py)
    )
    _running.append(c)
    try:
        c.start()
        c.wait_slices(timeout=60)
        for doc in kustomized_docs():  # the shipped DeviceClasses, as `kubectl apply -k` creates them
            if doc["kind"] == "DeviceClass":
                c.create("resource.k8s.io/v1", "deviceclasses", doc)
        yield c
    except PackagesUnavailable as exc:
        pytest.skip(f"containerd's Debian packages could not be downloaded: {exc}")
    finally:
        stop_driver()


_running: list[DaemonSetCluster] = []  # the session's driver while it is up


def stop_driver() -> None:
    """Tear the driver down (once) and say what could not be cleaned."""
    while _running:
        c = _running.pop()
        errors = c.stop()
        subprocess.run(["rm", "-rf", str(c.workdir)], check=False)
        assert not errors, errors


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The driver goes as soon as the last e2e test is done, not at the end of the whole session:
    the tests after these do not share the machine with its pod."""
    here = Path(__file__).parent
    if nextitem is None or here not in Path(nextitem.path).parents:
        stop_driver()


@pytest.fixture(scope="session")
def nics(driver: DaemonSetCluster) -> Nics:
    return Nics(driver)


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    need_root()
    tag = uuid.uuid4().hex[:8]
    # a bridge of its own, so that two test sessions on one machine never tear down each other's
    ctrd = Containerd(f"/tmp/tnr-ctrd-{tag}", bridge=f"tnr{tag}")
    try:
        ctrd.up()
    except PackagesUnavailable as exc:
        ctrd.down()
        pytest.skip(f"containerd's Debian packages could not be downloaded: {exc}")
    try:
        yield ctrd
    finally:
        ctrd.down()


@pytest.fixture
def cri(containerd: Containerd) -> Iterator[CriClient]:
    client = CriClient(str(containerd.cri_socket))
    yield client
    client.cleanup()
    client.close()
