"""Restore is complete and never touches the wrong device; a name clash never loses a NIC.

Real kernel, namespaces made here: a NIC comes back with everything it had on the host (addresses
with their attributes, routes with metrics and flags, rules, permanent neighbours, per-device
sysctls, its bridge master); a restore that cannot complete still returns the NIC up and reports
it; a device is found by identity, never by MAC alone.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dranet.services.netns.main import handlers
from dranet.services.netns.netlink import Ethtool
from dranet.services.netns.testbed import Testbed, ip, ip_json
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusError
from dranet.config import FeatureTable
from dranet.observability import metrics

pytestmark = pytest.mark.kernel


class Hook:
    """Fails the named step (OSError), or runs `action` there first."""

    def __init__(self) -> None:
        self.fail: str | None = None
        self.action: Any = None
        self.at: str | None = None

    def __call__(self, step: str, device: str) -> None:
        if step == self.at and self.action is not None:
            self.action()
        if step == self.fail:
            raise OSError(errno.EIO, f"injected failure at {step}")


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    bed = testbed("tnr")
    bed.add_uplink("tnrup0")
    return bed


@pytest.fixture
def hook() -> Hook:
    return Hook()


@pytest.fixture
def worker(tb: Testbed, tmp_path: Path, hook: Hook) -> Iterator[NetnsWorker]:
    events: list[dict] = []
    w = NetnsWorker(tmp_path, host_netns=tb.node_path, hook=hook, publish=lambda _t, b: events.append(b))
    w.events = events  # type: ignore[attr-defined]
    w.start(watch_interval=0)
    try:
        yield w
    finally:
        w.close()


def sysctl(ns: str, *keys: str) -> list[str]:
    return ip("netns", "exec", ns, "cat", *(f"/proc/sys/net/{k}" for k in keys)).split()


def full_view(tb: Testbed, name: str, ns: str | None = None) -> dict[str, Any]:
    """Everything restore must bring back, as iproute2 reports it."""
    ns = ns or tb.node
    link = tb.link(name, ns=ns)
    assert link is not None, f"{name} is not in {ns}"
    addrs = []
    for a in ip_json("addr", "show", "dev", name, ns=ns)[0]["addr_info"]:
        if a["family"] == "inet6" and a.get("scope") == "link":
            continue
        addrs.append(
            (
                a["local"],
                a["prefixlen"],
                a.get("broadcast"),
                a.get("label"),
                a.get("address"),
                a.get("valid_life_time", 0) > 10**9,  # forever or not (the count goes down)
                a.get("preferred_life_time", 0) > 10**9,
                a.get("noprefixroute", False),
            )
        )
    routes = []
    for fam in ("-4", "-6"):
        for r in ip_json(fam, "-d", "route", "show", "table", "all", ns=ns):
            if r.get("dev") != name or r.get("type", "unicast") != "unicast":
                continue
            if str(r.get("dst", "")).startswith("fe80") or r.get("table") == "local":
                continue
            routes.append(
                (
                    r.get("dst"),
                    r.get("gateway"),
                    r.get("table", "main"),
                    r.get("metric"),
                    tuple(r.get("flags", [])),
                    str(r.get("metrics", "")),
                    r.get("protocol"),
                    r.get("scope"),
                )
            )
    neigh = sorted(
        (n["dst"], n.get("lladdr"), tuple(n.get("state", [])))
        for n in ip_json("neigh", "show", "dev", name, ns=ns)
        if "PERMANENT" in n.get("state", [])
    )
    return {
        "mtu": link["mtu"],
        "mac": link["address"],
        "up": "UP" in link["flags"],
        "master": link.get("master"),
        "addrs": sorted(addrs, key=str),
        "routes": sorted(routes, key=str),
        "neigh": neigh,
        "sysctl": sysctl(
            ns,
            f"ipv4/conf/{name}/arp_ignore",
            f"ipv4/conf/{name}/rp_filter",
            f"ipv4/conf/{name}/proxy_arp",
            f"ipv6/conf/{name}/accept_ra",
            f"ipv6/conf/{name}/hop_limit",
        ),
    }


def rules(ns: str) -> list[tuple]:
    return sorted((r.get("priority"), r.get("src"), r.get("table")) for r in ip_json("rule", "show", ns=ns))


def test_restore_brings_back_everything(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnra0", addresses=())
    n = tb.node
    ip("addr", "add", "10.1.0.2/24", "brd", "10.1.0.255", "label", "tnra0:web", "dev", "tnra0", ns=n)
    ip("addr", "add", "10.5.0.1", "peer", "10.5.0.2/32", "dev", "tnra0", ns=n)
    ip("addr", "add", "10.6.0.1/24", "dev", "tnra0", "valid_lft", "3600", "preferred_lft", "1800", ns=n)
    ip("addr", "add", "10.7.0.1/24", "dev", "tnra0", "noprefixroute", ns=n)
    ip("addr", "add", "fd00:1::2/64", "dev", "tnra0", "nodad", ns=n)
    ip("route", "add", "10.50.0.0/16", "via", "10.1.0.1", "metric", "50", "mtu", "1400", ns=n)
    ip("route", "add", "10.60.0.0/16", "via", "10.200.0.1", "dev", "tnra0", "onlink", ns=n)
    ip("route", "add", "10.70.0.0/16", "via", "10.1.0.1", "table", "100", ns=n)
    ip("route", "add", "10.7.0.0/24", "dev", "tnra0", "metric", "7", "proto", "static", ns=n)
    ip("rule", "add", "from", "10.1.0.0/24", "table", "100", "priority", "1000", ns=n)
    ip("neigh", "add", "10.1.0.9", "lladdr", "02:00:00:00:00:09", "dev", "tnra0", "nud", "permanent", ns=n)
    for key, value in (
        ("ipv4/conf/tnra0/arp_ignore", "2"),
        ("ipv4/conf/tnra0/rp_filter", "2"),
        ("ipv4/conf/tnra0/proxy_arp", "1"),
        ("ipv6/conf/tnra0/accept_ra", "0"),
        ("ipv6/conf/tnra0/hop_limit", "33"),
    ):
        ip("netns", "exec", n, "sh", "-c", f"echo {value} > /proc/sys/net/{key}")
    before, rules_before = full_view(tb, "tnra0"), rules(n)
    pod = tb.add_netns()
    worker.attach("pod-r", f"/run/netns/{pod}", [{"device": "r0", "ifname": "tnra0", "config": {}}])
    # Inherited: the pod sees the host's addresses (attributes kept) and routes (onlink kept).
    inpod = full_view(tb, "tnra0", ns=pod)
    assert inpod["addrs"] == before["addrs"]
    assert ("10.60.0.0/16", "10.200.0.1") in {(r[0], r[1]) for r in inpod["routes"]}
    worker.detach("pod-r")
    after = full_view(tb, "tnra0")
    assert after == before
    assert rules(n) == rules_before


def test_bridge_master_restored(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnrb0")
    ip("link", "add", "tnrbr0", "type", "bridge", ns=tb.node)
    ip("link", "set", "tnrbr0", "up", ns=tb.node)
    ip("link", "set", "tnrb0", "master", "tnrbr0", ns=tb.node)
    before = full_view(tb, "tnrb0")
    assert before["master"] == "tnrbr0"
    pod = tb.add_netns()
    worker.attach("pod-b", f"/run/netns/{pod}", [{"device": "b0", "ifname": "tnrb0", "config": {}}])
    assert tb.link("tnrb0", ns=pod)
    worker.detach("pod-b")
    assert full_view(tb, "tnrb0") == before


def test_fixed_ethtool_feature_refused_before_any_change(tb: Testbed, worker: NetnsWorker) -> None:
    """veth cannot change rx-lro ("lro"): asking to turn it on is refused up front; the NIC stays
    on the host, up, with its addresses (it used to come back down, empty, stuck in `detaching`)."""
    tb.add_nic("tnre0", addresses=("10.1.0.2/24",))
    before = full_view(tb, "tnre0")
    pod = tb.add_netns()
    with pytest.raises(BusError) as err:
        worker.attach(
            "pod-e",
            f"/run/netns/{pod}",
            [{"device": "e0", "ifname": "tnre0", "config": {"ethtool": {"features": {"lro": True}}}}],
        )
    assert err.value.code == "invalid_config"
    assert "ethtool.features.lro" in err.value.message and "cannot be changed" in err.value.message
    assert full_view(tb, "tnre0") == before
    assert worker.queries.attachments() == {"attachments": []}
    assert list(worker.journal.dir.glob("*.json")) == []


def test_fixed_ethtool_feature_at_its_value_attaches_and_restores(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnrf0", addresses=("10.1.0.2/24",))
    before = full_view(tb, "tnrf0")
    pod = tb.add_netns()
    cfg = {"ethtool": {"features": {"lro": False, "tx-checksum-ip-generic": False}}}
    worker.attach("pod-f", f"/run/netns/{pod}", [{"device": "f0", "ifname": "tnrf0", "config": cfg}])
    assert worker.detach("pod-f") == {"released": ["f0"]}
    assert full_view(tb, "tnrf0") == before


def _incomplete() -> float:
    """dranet_netns_restore_incomplete_total, summed over its labels, from the exposition text."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.render().splitlines()
        if line.startswith("dranet_netns_restore_incomplete_total")
    )


def test_restore_that_cannot_complete_returns_the_nic_up_and_reports(
    tb: Testbed, worker: NetnsWorker, hook: Hook
) -> None:
    tb.add_nic("tnrg0", addresses=("10.1.0.2/24",))
    ip("route", "add", "10.50.0.0/16", "via", "10.1.0.1", ns=tb.node)
    ip("route", "add", "10.70.0.0/16", "via", "10.1.0.1", "table", "100", ns=tb.node)
    ip("rule", "add", "from", "10.1.0.0/24", "table", "100", "priority", "1000", ns=tb.node)
    before = full_view(tb, "tnrg0")
    pod = tb.add_netns()
    worker.attach("pod-g", f"/run/netns/{pod}", [{"device": "g0", "ifname": "tnrg0", "config": {}}])
    count = _incomplete()
    hook.fail = "restore-rules"
    assert worker.detach("pod-g") == {"released": ["g0"]}
    # Everything but the rules is back: up, addresses, routes.
    assert full_view(tb, "tnrg0") == before
    assert worker.queries.attachments() == {"attachments": []}
    last = worker.events[-1]  # type: ignore[attr-defined]
    assert last["state"] == "restore_incomplete" and last["error"]["code"] == "restore_incomplete"
    assert "restore-rules" in last["error"]["message"] and "back on the host" in last["error"]["message"]
    assert _incomplete() == count + 1
    # The device is not blocked: the next claim of it proceeds.
    hook.fail = None
    pod2 = tb.add_netns()
    worker.attach("pod-g2", f"/run/netns/{pod2}", [{"device": "g0", "ifname": "tnrg0", "config": {}}])
    worker.detach("pod-g2")


def test_a_sibling_with_the_same_mac_is_never_touched(tb: Testbed, tmp_path: Path) -> None:
    """VLAN siblings share their parent's MAC (no VLAN here: two veths with one MAC). The attached
    one dies with its pod netns while no worker runs; reconcile must not take the other for it."""
    tb.add_nic("tnrm0", addresses=("10.1.0.2/24",), mtu=1450)
    tb.add_nic("tnrm1", addresses=("10.2.0.2/24",))
    mac = tb.link("tnrm0")["address"]  # type: ignore[index]
    ip("link", "set", "tnrm1", "address", mac, ns=tb.node)
    sibling = full_view(tb, "tnrm1")
    pod = tb.add_netns()
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        w.attach(
            "pod-m",
            f"/run/netns/{pod}",
            [{"device": "m0", "ifname": "tnrm0", "config": {"interface": {"name": "eth0", "mtu": 1300}}}],
        )
    finally:
        w.close()
    tb.del_netns(pod)  # the veth dies with it
    w = NetnsWorker(tmp_path, host_netns=tb.node_path)
    try:
        w.start(watch_interval=0)
        assert full_view(tb, "tnrm1") == sibling
        assert w.queries.attachments() == {"attachments": []}
    finally:
        w.close()


def test_name_clash_in_the_pod_is_refused_before_the_move(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnrc0", addresses=("10.4.0.2/24",))
    before = full_view(tb, "tnrc0")
    pod = tb.add_netns()
    ip("link", "add", "eth0", "type", "veth", "peer", "name", "cni0", ns=pod)  # the CNI's eth0
    with pytest.raises(BusError) as err:
        worker.attach(
            "pod-c",
            f"/run/netns/{pod}",
            [{"device": "c0", "ifname": "tnrc0", "config": {"interface": {"name": "eth0"}}}],
        )
    assert err.value.code == "invalid_config"
    assert "interface.name" in err.value.message and "eth0" in err.value.message
    assert full_view(tb, "tnrc0") == before
    assert tb.link("cni0", ns=pod) is not None and tb.link("eth0", ns=pod) is not None
    assert worker.queries.attachments() == {"attachments": []}


def test_rollback_finds_the_device_by_identity(tb: Testbed, worker: NetnsWorker, hook: Hook) -> None:
    """After the move the device is not where the worker assumed (another name, another index):
    rollback still finds it in the pod netns and brings it back."""
    tb.add_nic("tnri0", addresses=("10.5.0.2/24",))
    before = full_view(tb, "tnri0")
    index = tb.link("tnri0")["ifindex"]  # type: ignore[index]
    pod = tb.add_netns()
    # Something else holds the host index in the pod netns, so the NIC gets a new index there.
    ip("link", "add", "other0", "index", str(index), "type", "veth", "peer", "name", "other1", ns=pod)
    hook.at, hook.fail = "lookup", "lookup"
    hook.action = lambda: ip("link", "set", "net1", "name", "zz9", ns=pod)
    with pytest.raises(BusError):
        worker.attach(
            "pod-i",
            f"/run/netns/{pod}",
            [{"device": "i0", "ifname": "tnri0", "config": {"interface": {"name": "net1"}}}],
        )
    assert full_view(tb, "tnri0") == before
    assert tb.link("zz9", ns=pod) is None and tb.link("other0", ns=pod) is not None
    assert worker.queries.attachments() == {"attachments": []}


def test_a_device_that_cannot_leave_the_pod_names_the_release_command(
    tb: Testbed, worker: NetnsWorker, hook: Hook
) -> None:
    tb.add_nic("tnrx0", addresses=("10.6.0.2/24",))
    before = full_view(tb, "tnrx0")
    pod, pod2 = tb.add_netns(), tb.add_netns()
    req = [{"device": "x0", "ifname": "tnrx0", "config": {"interface": {"name": "net1"}}}]
    worker.attach("pod-x", f"/run/netns/{pod}", req)
    hook.fail = "move-back"
    with pytest.raises(BusError) as err:
        worker.detach("pod-x")
    assert err.value.code == "kernel_error" and "move-back" in err.value.message
    hook.fail = None
    with pytest.raises(BusError) as err:
        worker.attach("pod-y", f"/run/netns/{pod2}", req)
    assert err.value.code == "conflict"
    assert "dranet netns-release --pod-uid pod-x --device x0" in err.value.message
    # The operator puts the interface back by hand, then releases it; the next claim proceeds.
    ip("link", "set", "net1", "netns", tb.node, "name", "tnrx0", ns=pod)
    assert "release" in handlers(worker)
    assert worker.watch.release("pod-x", "x0") == {"released": ["x0"]}
    assert worker.watch.release("pod-x", "x0") == {"released": []}
    assert worker.events[-1]["state"] == "detached"  # type: ignore[attr-defined]
    worker.attach("pod-y", f"/run/netns/{pod2}", req)
    worker.detach("pod-y")
    after = full_view(tb, "tnrx0")  # as the operator left it (the hand-made move dropped its address)
    assert (after["mtu"], after["mac"]) == (before["mtu"], before["mac"])


def test_a_failing_restore_is_retried_with_a_growing_delay(
    tb: Testbed, worker: NetnsWorker, hook: Hook
) -> None:
    """The watcher does not retry (and log) a restore that keeps failing on every pass."""
    tb.add_nic("tnrw0", addresses=("10.6.0.2/24",))
    pod = tb.add_netns()
    worker.attach("pod-w", f"/run/netns/{pod}", [{"device": "w0", "ifname": "tnrw0", "config": {}}])
    attempts: list[str] = []
    hook.fail, hook.at = "move-back", "move-back"
    hook.action = lambda: attempts.append("move-back")
    tb.del_netns(pod)  # the worker's fd keeps it (and the NIC) alive: the restore is attempted
    for _ in range(5):
        worker.watch.check_pods()
    assert attempts == ["move-back"]
    assert [a["device"] for a in worker.queries.attachments()["attachments"]] == ["w0"]
    hook.fail = None
    worker.watch.retry.clear()  # the delay has passed
    worker.watch.check_pods()
    assert worker.queries.attachments() == {"attachments": []}
    assert tb.addresses("tnrw0") == ["10.6.0.2/24"]


def test_a_restore_that_cannot_complete_is_reported_for_the_taint_until_it_does(
    tb: Testbed, worker: NetnsWorker, hook: Hook
) -> None:
    """The worker tells discovery (op and topic device_health) which device it could not give back,
    so its slice entry gets a NoSchedule taint; the report goes when a retry restores it."""
    tb.add_nic("tnrt0", addresses=("10.6.0.2/24",))
    pod = tb.add_netns()
    worker.attach("pod-t", f"/run/netns/{pod}", [{"device": "t0", "ifname": "tnrt0", "config": {}}])
    hook.fail = "move-back"
    with pytest.raises(BusError):
        worker.detach("pod-t")
    stuck = {"device": "t0", "ifname": "tnrt0", "reason": "restore-failed"}
    (got,) = handlers(worker)["device_health"]({}, None)["devices"]
    assert {k: got[k] for k in stuck} == stuck and "move-back" in got["message"]
    published = [e for e in worker.events if "devices" in e]  # type: ignore[attr-defined]
    assert published == [{"devices": [got]}]
    hook.fail = None
    worker.detach("pod-t")  # the retry (the next StopPodSandbox, unprepare or the watcher)
    assert worker.notifier.device_health.snapshot() == {"devices": []}
    assert [e for e in worker.events if "devices" in e][-1] == {"devices": []}  # type: ignore[attr-defined]
    assert tb.addresses("tnrt0") == ["10.6.0.2/24"]


def test_feature_table_for_prepare_and_the_whole_tso_group(tb: Testbed, worker: NetnsWorker) -> None:
    """dra's question at prepare (`ethtool_features`), and `tcp-segmentation-offload: false`
    turning off every tx-tcp*-segmentation the kernel has (tx-tcp-accecn-segmentation on 6.18),
    back on at detach."""
    tb.add_nic("tnrh0", addresses=("10.1.0.2/24",))
    table = FeatureTable.from_wire(worker.queries.ethtool_features("tnrh0"))
    assert "rx-lro" in table.fixed and table.features["rx-lro"] is False
    group = sorted(n for n in table.features if n.startswith("tx-tcp") and n.endswith("-segmentation"))
    assert len(group) >= 4 and all(table.features[n] for n in group)
    with pytest.raises(BusError) as err:
        worker.queries.ethtool_features("tnnope0")
    assert err.value.code == "not_found"
    pod = tb.add_netns()
    cfg = {"ethtool": {"features": {"tcp-segmentation-offload": False, "large-receive-offload": False}}}
    worker.attach("pod-h", f"/run/netns/{pod}", [{"device": "h0", "ifname": "tnrh0", "config": cfg}])
    in_pod = pod_features(pod, "tnrh0")
    assert {n: in_pod[n] for n in group} == dict.fromkeys(group, False)
    worker.detach("pod-h")
    assert FeatureTable.from_wire(worker.queries.ethtool_features("tnrh0")).features == table.features


def pod_features(ns: str, ifname: str) -> dict[str, bool]:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        eth = Ethtool(fd)
        try:
            return eth.features(ifname)
        finally:
            eth.close()
    finally:
        os.close(fd)


def altnames(tb: Testbed, name: str, ns: str | None = None) -> list[str]:
    link = tb.link(name, ns=ns)
    assert link is not None, f"{name} is not in {ns or tb.node}"
    return sorted(link.get("altnames", []))


def nic_with_altnames(tb: Testbed, name: str, *alts: str) -> dict[str, Any]:
    """A NIC with alternative names; what the host shows of it (full_view and the altnames)."""
    tb.add_nic(name, addresses=("10.8.0.2/24",))
    for alt in alts:
        ip("link", "property", "add", "dev", name, "altname", alt, ns=tb.node)
    return {**full_view(tb, name), "altnames": altnames(tb, name)}


def test_a_nic_asked_by_its_altname_keeps_its_name_in_the_pod(tb: Testbed, worker: NetnsWorker) -> None:
    """Asked by an alternative name with no interface.name, the NIC keeps its own name in the pod
    (as upstream, whose default is the host name): the kernel refuses to rename a device to one of
    its own altnames, after the move."""
    before = nic_with_altnames(tb, "tnrn0", "tnrn0-x", "tnrn0-y")
    pod = tb.add_netns()
    out = worker.attach("pod-n", f"/run/netns/{pod}", [{"device": "n0", "ifname": "tnrn0-x", "config": {}}])
    assert out["attachments"][0]["pod_ifname"] == "tnrn0"
    assert altnames(tb, "tnrn0", ns=pod) == ["tnrn0-x", "tnrn0-y"]
    assert full_view(tb, "tnrn0", ns=pod)["addrs"] == before["addrs"]
    assert tb.link("tnrn0") is None
    with pytest.raises(BusError) as err:  # asked by another altname, for another pod
        worker.attach("pod-o", f"/run/netns/{tb.add_netns()}", [{"device": "o0", "ifname": "tnrn0-y"}])
    assert err.value.code == "conflict" and "attached to pod pod-n" in err.value.message
    worker.detach("pod-n")
    assert {**full_view(tb, "tnrn0"), "altnames": altnames(tb, "tnrn0")} == before
    assert worker.queries.attachments() == {"attachments": []}


def test_a_nic_renamed_to_its_other_altname_gets_it_back_on_restore(tb: Testbed, worker: NetnsWorker) -> None:
    before = nic_with_altnames(tb, "tnrm0", "tnrm0-x", "tnrm0-y")
    pod = tb.add_netns()
    asked = [{"device": "m0", "ifname": "tnrm0-x", "config": {"interface": {"name": "tnrm0-y"}}}]
    out = worker.attach("pod-m", f"/run/netns/{pod}", asked)
    assert out["attachments"][0]["pod_ifname"] == "tnrm0-y"
    link = tb.link("tnrm0-y", ns=pod)
    assert link is not None and link["ifname"] == "tnrm0-y" and "UP" in link["flags"]
    assert altnames(tb, "tnrm0-y", ns=pod) == ["tnrm0-x"]
    worker.detach("pod-m")
    assert {**full_view(tb, "tnrm0"), "altnames": altnames(tb, "tnrm0")} == before


@pytest.mark.parametrize("step", ["down", "altname", "move", "up"])
def test_a_rollback_gives_back_the_altname_given_up_for_the_rename(
    tb: Testbed, worker: NetnsWorker, hook: Hook, step: str
) -> None:
    before = nic_with_altnames(tb, "tnrk0", "tnrk0-x", "tnrk0-y")
    pod = tb.add_netns()
    hook.fail = step
    with pytest.raises(BusError) as err:
        worker.attach(
            "pod-k",
            f"/run/netns/{pod}",
            [{"device": "k0", "ifname": "tnrk0", "config": {"interface": {"name": "tnrk0-x"}}}],
        )
    assert f"step {step!r}" in err.value.message
    assert {**full_view(tb, "tnrk0"), "altnames": altnames(tb, "tnrk0")} == before
    assert [link["ifname"] for link in ip_json("link", ns=pod)] == ["lo"]
    assert worker.queries.attachments() == {"attachments": []}


@pytest.mark.parametrize("clash", ["name", "nic-altname"])
def test_an_altname_clash_in_the_pod_is_refused_before_the_move(
    tb: Testbed, worker: NetnsWorker, clash: str
) -> None:
    """interface.name is an altname of another link in the pod, or the NIC brings an altname the
    pod already uses: either would fail in the kernel during the move; refused before it."""
    before = nic_with_altnames(tb, "tnrp0", "tnrp0-x")
    pod = tb.add_netns()
    ip("link", "add", "eth0", "type", "veth", "peer", "name", "cni0", ns=pod)
    taken = "tnrp0-x" if clash == "nic-altname" else "net1"
    ip("link", "property", "add", "dev", "eth0", "altname", taken, ns=pod)
    with pytest.raises(BusError) as err:
        worker.attach(
            "pod-p",
            f"/run/netns/{pod}",
            [{"device": "p0", "ifname": "tnrp0", "config": {"interface": {"name": "net1"}}}],
        )
    assert err.value.code == "invalid_config"
    assert ("net1" if clash == "name" else "tnrp0-x") in err.value.message
    assert {**full_view(tb, "tnrp0"), "altnames": altnames(tb, "tnrp0")} == before
    assert sorted(link["ifname"] for link in ip_json("link", ns=pod)) == ["cni0", "eth0", "lo"]
    assert worker.queries.attachments() == {"attachments": []}
