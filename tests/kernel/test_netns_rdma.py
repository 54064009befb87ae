"""RDMA-only devices (InfiniBand without IPoIB: no netdev) attach: the worker accepts an empty
interface name when the request names the RDMA device, checks it against sysfs, and moves it.

This kernel has no RDMA: the device is a synthetic sysfs tree, and the move itself (RDMA netlink)
is shown only as far as the kernel goes: the request passes every check, reaches the `rdma` step,
and fails there with the kernel's reason, rolled back with nothing left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dranet.services.netns import rdma
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusError
from tests.rdmasysfs import add_rdma_device

pytestmark = pytest.mark.kernel


def synthetic_sysfs(root: Path, rdma_dev: str = "mlx5_9") -> Path:
    """The RDMA device with its uverbs node and rdma_cm, as the kernel lays them out."""
    add_rdma_device(root, "0000:00:09.0", rdma_dev, {"uverbs9": "231:9"})
    return root


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    return testbed("tnq")


@pytest.fixture
def worker(tb: Testbed, tmp_path: Path) -> Iterator[NetnsWorker]:
    sysfs = synthetic_sysfs(tmp_path / "sys")
    w = NetnsWorker(tmp_path / "state", host_netns=tb.node_path, sysfs_root=str(sysfs))
    try:
        yield w
    finally:
        w.close()


def ib(rdma_device: str = "mlx5_9", config: dict | None = None) -> list[dict]:
    return [{"device": "ib-0", "ifname": "", "rdma_device": rdma_device, "config": config or {}}]


def test_rdma_only_device_reaches_the_rdma_move(tb: Testbed, worker: NetnsWorker) -> None:
    pod = tb.add_netns()
    if rdma.rdma_available():
        pytest.skip("this kernel has RDMA netlink: a synthetic device cannot be moved by it")
    with pytest.raises(BusError) as err:
        worker.attach("pod-q", f"/run/netns/{pod}", ib())
    # Every check passed (it used to be refused: "'' is not a legal interface name"); the kernel
    # here has no RDMA netlink family, so the move is where it stops.
    assert err.value.code == "kernel_error", err.value.message
    assert "ib-0: step 'rdma' failed" in err.value.message
    assert worker.queries.attachments() == {"attachments": []}
    assert list(worker.journal.dir.glob("*.json")) == []


def test_rdma_only_device_not_in_sysfs_is_not_found(tb: Testbed, worker: NetnsWorker) -> None:
    pod = tb.add_netns()
    with pytest.raises(BusError) as err:
        worker.attach("pod-q", f"/run/netns/{pod}", ib("mlx5_7"))
    assert err.value.code == "not_found" and "mlx5_7" in err.value.message


def test_rdma_only_device_refuses_netdev_config(tb: Testbed, worker: NetnsWorker) -> None:
    pod = tb.add_netns()
    with pytest.raises(BusError) as err:
        worker.attach("pod-q", f"/run/netns/{pod}", ib(config={"interface": {"mtu": 1400}}))
    assert err.value.code == "invalid_config" and "mtu" in err.value.message


def test_rdma_only_device_must_be_allowed(tb: Testbed, tmp_path: Path) -> None:
    sysfs = synthetic_sysfs(tmp_path / "sys")
    w = NetnsWorker(tmp_path / "state", host_netns=tb.node_path, sysfs_root=str(sysfs), allowed={"eth9"})
    try:
        with pytest.raises(BusError) as err:
            w.attach("pod-q", f"/run/netns/{tb.add_netns()}", ib())
        assert err.value.code == "not_allowed" and "inventory" in err.value.message
    finally:
        w.close()


def test_inventory_allows_an_rdma_only_device_by_its_rdma_name() -> None:
    from dranet.services.netns.main import Inventory

    inv = Inventory(None)
    inv.update(
        {
            "devices": [
                {"name": "ib-0", "ifname": "", "rdma_device": "mlx5_3", "allocatable": True},
                {"name": "eth-1", "ifname": "eth1", "rdma_device": "mlx5_4", "allocatable": True},
                {"name": "ib-5", "ifname": "", "rdma_device": "mlx5_5", "allocatable": False},
            ]
        }
    )
    assert inv("mlx5_3") and inv("eth1")
    assert not inv("mlx5_4") and not inv("mlx5_5")


def test_inventory_keeps_allowing_an_attached_device_by_its_host_name() -> None:
    """While a device is in a pod, discovery keeps it with no host interface (ifname "") and its
    last attributes; the worker's allowlist still knows its host name, so restore may rename a
    device that came back as devN to it."""
    from dranet.services.netns.main import Inventory

    inv = Inventory(None)
    inv.update(
        {
            "devices": [
                {"name": "eth1", "ifname": "", "allocatable": True, "attributes": {"dra.net/ifName": "eth1"}},
            ]
        }
    )
    assert inv("eth1")
