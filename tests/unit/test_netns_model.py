"""Pure parts of the netns worker: uplinks, ethtool names, snapshots, journal, netns paths, RDMA sysfs."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from dranet.services.netns import rdma
from dranet.services.netns.journal import SPARES, Journal
from dranet.services.netns.model import (
    ATTACHED,
    HostSnapshot,
    JournalEntry,
    RequestError,
    check_device_name,
    check_ifname,
    check_pod_uid,
    config_digest,
    snapshot_routes,
    snapshot_rules,
    sorted_routes,
    uplinks,
)
from dranet.services.netns.netlink import Address, Link, Neighbor, Route, Rule
from dranet.services.netns.nspath import DEFAULT_ROOTS, open_netns, resolve

from dranet.uplinks import UplinkPolicy
from tests.rdmasysfs import add_rdma_device


def link(index: int, name: str, **kw: object) -> Link:
    return Link(index=index, name=name, mtu=1500, mac=f"02:00:00:00:00:{index:02x}", up=True, **kw)  # type: ignore[arg-type]


def test_uplinks_cover_default_routes_masters_slaves_and_lower_devices() -> None:
    """The shared rule over the worker's records: the main table's default (upstream's rule), the
    kernel's IPv6 lookup (a rule sends IPv6 to table 100), masters, slaves and lower devices."""
    links = [
        link(2, "eth0", master=5),
        link(3, "eth1", master=5),
        link(5, "bond0"),
        link(6, "eth2"),
        link(7, "eth3"),
        link(8, "vlan9", parent=7),
        link(9, "eth4"),
    ]
    routes = [
        Route("0.0.0.0/0", gateway="10.0.0.1", oif=5, table=254),
        Route("0.0.0.0/0", gateway="10.9.0.1", oif=9, table=254, priority=500),
        Route("10.0.0.0/8", oif=9),
    ]

    def lookup(family: int, _destination: str) -> Route | None:
        return Route("::/0", oif=8, table=100) if family == socket.AF_INET6 else None

    assert set(uplinks(links, routes, lookup, UplinkPolicy())) == {2, 3, 5, 7, 8}
    assert set(uplinks(links, routes, lambda _f, _d: None, UplinkPolicy(always=("eth2",)))) == {2, 3, 5, 6}


@pytest.mark.parametrize("name", ["", "a/b", "a b", ".", "..", "x" * 16, "a:b"])
def test_illegal_ifnames(name: str) -> None:
    with pytest.raises(RequestError):
        check_ifname(name, "ifname")


@pytest.mark.parametrize(
    "check", [check_pod_uid, lambda n: check_device_name(n, "d"), lambda n: check_ifname(n, "i")]
)
@pytest.mark.parametrize("name", ["p\n", "p\r\n", "\np", "p\x00", "p/..", ""])
def test_identifiers_match_whole(check: object, name: str) -> None:
    """`$` also matches before a trailing newline: `p\n` got through and named a journal file."""
    with pytest.raises(RequestError):
        check(name)  # type: ignore[operator]


def test_snapshot_filters() -> None:
    routes = [
        Route("10.0.0.0/24", protocol=2, oif=3),
        Route("10.1.0.0/16", gateway="10.0.0.1", oif=3),
        Route("fe80::/64", oif=3),
        Route("10.2.0.0/16", oif=3, table=255),
    ]
    assert snapshot_routes(routes) == (routes[1],)
    rules = [Rule(socket.AF_INET, 100, 1000), Rule(socket.AF_INET, 254, 32766)]
    assert snapshot_rules(rules, {100, 254}) == (rules[0],)
    assert [r.destination for r in sorted_routes([Route("a/1", gateway="g"), Route("b/1", scope=253)])] == [
        "b/1",
        "a/1",
    ]


def test_journal_roundtrip_and_bad_files(tmp_path: Path) -> None:
    snap = HostSnapshot(
        link=link(4, "eth1", alt_names=("x",)),
        addresses=(Address("10.0.0.2/24"),),
        routes=(Route("10.1.0.0/16", gateway="10.0.0.1", oif=4),),
        rules=(Rule(2, 100, 1000, "10.0.0.0/24"),),
        neighbors=(Neighbor("10.0.0.9", "02:00:00:00:00:09"),),
        ethtool_features={"rx-gro": True},
    )
    entry = JournalEntry(
        "pod-1",
        "dev-1",
        "claim",
        "/run/netns/x",
        (1, 2),
        ATTACHED,
        snap,
        "eth0",
        {"interface": {"name": "eth0"}},
        "02:00:00:00:00:04",
        ("10.0.0.2/24",),
    )
    j = Journal(tmp_path)
    j.write(entry)
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "half.tmp").write_text("x")
    assert j.load() == [entry]
    assert (tmp_path / "garbage.json.bad").exists() and not (tmp_path / "half.tmp").exists()
    other = replace(entry, device="dev-2")
    j.write(other, durable=False)
    assert [p.name for p in tmp_path.glob("*.json")] == ["pod-1.json"]  # one file per pod
    assert Journal(tmp_path).load() == [entry, other]
    j.remove("pod-1", "dev-1")
    assert j.load() == [other]
    j.remove("pod-1", "dev-1")
    j.remove("pod-1")
    assert j.load() == [] and list(tmp_path.glob("*.json")) == []
    j.close()
    assert config_digest({"a": 1, "b": [1]}) == config_digest({"b": [1], "a": 1})


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every file fsynced from now on, in order."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def _entry(device: str = "dev-1", phase: str = ATTACHED) -> JournalEntry:
    snap = HostSnapshot(link=link(4, "eth1"), addresses=(Address("10.0.0.2/24"),))
    return JournalEntry("pod-1", device, "claim", "/run/netns/x", (1, 2), phase, snap, "eth0", {})


def test_journal_fsyncs_only_durable_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshots' write reaches the disk (file, then directory) before it returns; the later
    writes (phases) are not fsynced: on the start path each fsync cost milliseconds."""
    synced = record_fsyncs(monkeypatch)
    j = Journal(tmp_path)
    j.write(_entry(phase="attaching"), durable=True)
    assert synced == [str(tmp_path / "pod-1.json.tmp"), str(tmp_path)]
    synced.clear()
    j.write(_entry(phase=ATTACHED), durable=False)
    j.write(_entry(phase="detaching"), durable=False)
    j.remove("pod-1")
    assert synced == []
    assert list(tmp_path.iterdir()) == []
    j.close()


def test_journal_torn_live_file_falls_back_to_the_snapshots(tmp_path: Path) -> None:
    """A power loss may tear the unsynced live file: the start then reads the durable one, which
    holds every snapshot (and the pod netns are gone, so any phase means restore)."""
    j = Journal(tmp_path)
    j.write(_entry(phase="attaching"), durable=True)
    j.write(_entry(phase=ATTACHED), durable=False)
    assert Journal(tmp_path).load() == [_entry(phase=ATTACHED)]  # the newest version wins
    (tmp_path / "pod-1.live").write_bytes(b"\0" * 64)  # rename on disk, data not
    assert Journal(tmp_path).load() == [_entry(phase="attaching")]
    # A durable write after a live one is the newer: a stale live file is never preferred.
    j.write(_entry(phase=ATTACHED), durable=False)
    j.write(_entry("dev-2", phase="attaching"), durable=True)
    (tmp_path / "pod-1.live").write_bytes(b'{"seq":1,"entries":[]}')
    again = Journal(tmp_path)
    assert again.load() == [_entry(phase=ATTACHED), _entry("dev-2", phase="attaching")]
    again.write(_entry("dev-2", phase=ATTACHED), durable=False)  # numbered after what it read
    assert Journal(tmp_path).load() == [_entry(phase=ATTACHED), _entry("dev-2", phase=ATTACHED)]
    j.close()
    again.close()


def test_journal_durable_write_into_a_spare_fsyncs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a spare ready (made at load, its name already durable) the snapshots' write costs one
    fsync, of the file; a power loss that undoes the rename leaves the spare, and the next start
    reads it as the pod's journal."""
    j = Journal(tmp_path)
    assert j.load() == []
    spares = sorted(p.name for p in tmp_path.iterdir())
    assert len(spares) == SPARES and all(n.startswith(".spare-") for n in spares)
    synced = record_fsyncs(monkeypatch)
    j.write(_entry(phase="attaching"), durable=True)
    assert len(synced) == 1 and synced[0].startswith(str(tmp_path / ".spare-"))
    assert (tmp_path / "pod-1.json").exists() and len(list(tmp_path.glob(".spare-*"))) == SPARES - 1
    monkeypatch.undo()
    j.prepare_spares()
    assert len(list(tmp_path.glob(".spare-*"))) == SPARES
    # The power loss: the spare's data reached the disk, its rename did not.
    (tmp_path / "pod-1.json").rename(tmp_path / ".spare-999")
    again = Journal(tmp_path)
    assert again.load() == [_entry(phase="attaching")]
    assert (tmp_path / "pod-1.json").exists() and len(list(tmp_path.glob(".spare-*"))) == SPARES
    # A spare torn by the power loss (written, never fsynced: nothing had moved) is set aside.
    (tmp_path / ".spare-1000").write_bytes(b'{"seq":9,"ent')
    assert Journal(tmp_path).load() == [_entry(phase="attaching")]
    j.close()
    again.close()


def test_netns_path_resolution(tmp_path: Path) -> None:
    roots = [str(tmp_path / "netns")]
    (tmp_path / "netns").mkdir()
    (tmp_path / "netns" / "ok").write_text("")
    (tmp_path / "escape").symlink_to("/etc/passwd")
    (tmp_path / "netns" / "link").symlink_to(tmp_path / "elsewhere")
    assert resolve(str(tmp_path / "netns" / "ok"), roots) == str(tmp_path / "netns" / "ok")
    for bad in (
        str(tmp_path / "netns" / "link"),
        str(tmp_path / "escape"),
        "relative",
        "/proc/1/ns/net",
        str(tmp_path / "netns" / ".." / "escape"),
    ):
        with pytest.raises(RequestError) as err:
            resolve(bad, roots)
        assert err.value.code == "not_allowed"
    assert resolve("/proc/1/ns/net", ["/proc"]) == "/proc/1/ns/net"


@pytest.mark.parametrize(
    "path",
    [
        "/run/netns/x/",
        "/run/netns/x//",
        "//run/netns/x",
        "/run//netns/x",
        "/run/netns/./x",
        "/run/netns/y/../x",
    ],
)
def test_netns_path_must_be_canonical(path: str) -> None:
    """A trailing slash was accepted, then the watcher's stat of it failed (ENOTDIR) and it restored
    the NIC under a live pod: refuse every path that is not already in canonical form."""
    with pytest.raises(RequestError) as err:
        resolve(path, ["/run/netns"])
    assert err.value.code == "not_allowed" and "canonical" in err.value.reason


def test_proc_is_not_a_default_root() -> None:
    assert "/proc" not in DEFAULT_ROOTS
    with pytest.raises(RequestError) as err:
        resolve(f"/proc/{os.getpid()}/ns/net", DEFAULT_ROOTS)
    assert err.value.code == "not_allowed"


@pytest.mark.parametrize("pid", ["1", "self", "thread-self", "own"])
@pytest.mark.parametrize("kind", ["mnt", "user", "pid", "uts"])
def test_other_namespace_kinds_are_not_allowed(tmp_path: Path, pid: str, kind: str) -> None:
    """Not `internal` (PermissionError from readlink) nor `not_found` (realpath's 'mnt:[...]')."""
    roots = ["/proc", str(tmp_path)]
    pid = str(os.getpid()) if pid == "own" else pid
    link = tmp_path / "link"
    link.symlink_to(f"/proc/{pid}/ns/{kind}")
    for path in (f"/proc/{pid}/ns/{kind}", str(link)):
        with pytest.raises(RequestError) as err:
            open_netns(path, roots, [])
        assert err.value.code == "not_allowed", (path, err.value.reason)


def test_unresolvable_path_is_not_allowed() -> None:
    with pytest.raises(RequestError) as err:
        open_netns("/proc/1/root/run/netns/x", ["/proc", "/run/netns"], [])
    assert err.value.code in ("not_allowed", "not_found")


def test_rdma_device_of_a_netdev_from_synthetic_sysfs(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    add_rdma_device(sysfs, "0000:01:00.0", "mlx5_0", {"uverbs0": "231:192"}, netdev="ib0")
    (sysfs / "class/net/eth0/device").mkdir(parents=True)  # a NIC without RDMA
    assert rdma.rdma_device_of("ib0", sysfs) == "mlx5_0"
    assert rdma.rdma_device_of("eth0", sysfs) == ""
    assert rdma.rdma_device_of("eth9", sysfs) == ""
