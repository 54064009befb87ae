"""dranet/rdma.py: the RDMA char devices a container needs, read from a synthetic sysfs laid out as
the kernel does (tests/rdmasysfs.py), as the worker reports them and nri injects them."""

from __future__ import annotations

from pathlib import Path

from dranet.services.netns.steps import char_device_records

from dranet.rdma import CharDevice, char_devices, char_devices_from, dedupe
from tests.rdmasysfs import add_rdma_device


def two_devices(tmp_path: Path) -> Path:
    sysfs = tmp_path / "sys"
    add_rdma_device(
        sysfs, "0000:01:00.0", "mlx5_0", {"uverbs0": "231:192", "umad0": "231:0", "issm0": "231:64"}, "ib0"
    )
    add_rdma_device(sysfs, "0000:01:00.1", "mlx5_1", {"uverbs1": "231:193", "umad1": "231:1"})
    return sysfs


def test_a_device_has_its_own_nodes_and_rdma_cm(tmp_path: Path) -> None:
    sysfs = two_devices(tmp_path)
    assert char_devices("mlx5_0", sysfs) == [
        CharDevice("/dev/infiniband/uverbs0", 231, 192),
        CharDevice("/dev/infiniband/issm0", 231, 64),
        CharDevice("/dev/infiniband/umad0", 231, 0),
        CharDevice("/dev/infiniband/rdma_cm", 10, 58),
    ]
    assert [c.path for c in char_devices("mlx5_1", sysfs, dev_root="/host/dev")] == [
        "/host/dev/infiniband/uverbs1",
        "/host/dev/infiniband/umad1",
        "/host/dev/infiniband/rdma_cm",
    ]


def test_a_device_sysfs_does_not_know_has_none(tmp_path: Path) -> None:
    sysfs = two_devices(tmp_path)
    assert char_devices("mlx5_7", sysfs) == []
    assert char_devices("mlx5_0", tmp_path / "nothing") == []


def test_the_class_entries_are_enough(tmp_path: Path) -> None:
    """After an exclusive-mode move the host may no longer list the RDMA device itself
    (/sys/class/infiniband/<dev>); its char-device class entries still name it."""
    sysfs = two_devices(tmp_path)
    (sysfs / "class" / "infiniband" / "mlx5_0").unlink()
    assert [c.path for c in char_devices("mlx5_0", sysfs)][-1] == "/dev/infiniband/rdma_cm"
    assert len(char_devices("mlx5_0", sysfs)) == 4


def test_the_workers_records_read_back_as_the_same_devices(tmp_path: Path) -> None:
    """The worker puts them in the attachment (and its journal) as dicts; nri reads them back."""
    sysfs = two_devices(tmp_path)
    records = char_device_records("mlx5_0", str(sysfs), "/dev")
    assert records[0] == {"path": "/dev/infiniband/uverbs0", "type": "c", "major": 231, "minor": 192}
    assert char_devices_from([{"char_devices": list(records)}]) == char_devices("mlx5_0", sysfs)


def test_records_with_bad_entries_skip_them_and_repeats_go() -> None:
    good = {"path": "/dev/infiniband/uverbs3", "major": 231, "minor": 195}
    found = char_devices_from(
        [{"char_devices": [good, {"path": "/dev/x"}, {"path": "/dev/y", "major": "z", "minor": 1}]}, {}]
    )
    assert found == [CharDevice("/dev/infiniband/uverbs3", 231, 195)]
    other = CharDevice("/dev/infiniband/uverbs3", 1, 1)
    assert dedupe([*found, other, CharDevice("/dev/infiniband/rdma_cm", 10, 58)]) == [
        found[0],
        CharDevice("/dev/infiniband/rdma_cm", 10, 58),
    ]
