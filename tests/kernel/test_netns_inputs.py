"""Bad identifiers and netns paths at the worker: refused before any change, never `internal`, and
never a NIC restored under a live pod."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusError

pytestmark = pytest.mark.kernel


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    bed = testbed("tni")
    bed.add_nic("tnii0", addresses=("10.1.0.2/24",))
    return bed


def devices(device: str = "i0") -> list[dict]:
    return [{"device": device, "ifname": "tnii0", "config": {"interface": {"name": "eth0"}}}]


def refused(w: NetnsWorker, pod_uid: str, netns: str, devs: list[dict]) -> BusError:
    with pytest.raises(BusError) as err:
        w.attach(pod_uid, netns, devs)
    return err.value


def test_netns_path_with_trailing_slash_is_refused(tb: Testbed, tmp_path: Path) -> None:
    """It was accepted; then the watcher's stat of it failed (ENOTDIR) and it restored the NIC."""
    pod = tb.add_netns()
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        for bad in (f"/run/netns/{pod}/", f"/run/netns//{pod}", f"/run/netns/./{pod}"):
            err = refused(w, "pod-i", bad, devices())
            assert err.code == "not_allowed" and "canonical" in err.message, err.message
        assert tb.link("tnii0") is not None and tb.link("eth0", ns=pod) is None
        # The canonical path attaches, and a watch pass keeps the NIC in the live pod.
        w.attach("pod-i", f"/run/netns/{pod}", devices())
        w.watch.check_pods()
        assert tb.link("eth0", ns=pod) is not None
        w.detach("pod-i")
        assert tb.link("tnii0") is not None
    finally:
        w.close()


@pytest.mark.parametrize("kind", ["mnt", "user"])
def test_other_namespace_kinds_are_not_allowed(tb: Testbed, tmp_path: Path, kind: str) -> None:
    link = Path(f"/run/netns/{tb.prefix}-{kind}-{tb.tag}")
    link.symlink_to(f"/proc/1/ns/{kind}")
    w = NetnsWorker(tmp_path, host_netns=tb.node_path, netns_roots=("/run/netns", "/proc"))
    try:
        for path in (f"/proc/1/ns/{kind}", f"/proc/{os.getpid()}/ns/{kind}", str(link)):
            err = refused(w, "pod-i", path, devices())
            assert err.code == "not_allowed", (path, err.code, err.message)
        assert tb.link("tnii0") is not None
    finally:
        link.unlink()
        w.close()


@pytest.mark.parametrize(
    ("pod_uid", "device"), [("p\n", "i0"), ("p", "i0\n"), ("p\r\n", "i0"), ("../p", "i0"), ("p", "i/0")]
)
def test_identifiers_are_matched_whole(tb: Testbed, tmp_path: Path, pod_uid: str, device: str) -> None:
    """A pod UID ending in a newline was accepted and named a journal file `p\\n.json`."""
    pod = tb.add_netns()
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        err = refused(w, pod_uid, f"/run/netns/{pod}", devices(device))
        assert err.code == "invalid_config", err.message
        assert list(w.journal.dir.iterdir()) == []
        assert tb.link("tnii0") is not None
    finally:
        w.close()
