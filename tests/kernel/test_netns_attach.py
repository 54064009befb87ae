"""Attach and detach on a real kernel: every supported field read back, restore, repeats, races."""

from __future__ import annotations

import os
import threading

import pytest
from dranet.services.netns.netlink import Link, Rtnl
from dranet.services.netns.testbed import Testbed, ip, ip_json
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusError
from dranet.observability import metrics

pytestmark = pytest.mark.kernel


def read_link(ns: str, name: str) -> Link:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        with Rtnl.open(fd) as nl:
            link = nl.get_link(name=name)
    finally:
        os.close(fd)
    assert link is not None
    return link


def host_state(tb: Testbed, name: str) -> dict:
    link = tb.link(name)
    assert link is not None, f"{name} not on the host"
    return {
        "mtu": link["mtu"],
        "mac": link["address"],
        "up": "UP" in link["flags"],
        "gso": link.get("gso_max_size"),
        "gro": link.get("gro_max_size"),
        "addrs": tb.addresses(name),
        "v4sizes": (read_link(tb.node, name).gso_ipv4_max_size, read_link(tb.node, name).gro_ipv4_max_size),
        "routes": sorted((r.get("dst"), r.get("gateway"), r.get("table", "main")) for r in tb.routes(name)),
    }


def test_attach_every_field_and_detach_restores(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnwa0", addresses=("10.1.0.2/24", "fd00:1::2/64"), mtu=1450)
    ip("route", "add", "10.50.0.0/16", "via", "10.1.0.1", ns=tb.node)
    ip("route", "add", "10.60.0.0/16", "via", "10.1.0.1", "table", "100", ns=tb.node)
    ip("rule", "add", "from", "10.1.0.0/24", "table", "100", "priority", "1000", ns=tb.node)
    ip(
        "neigh",
        "add",
        "10.1.0.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "tnwa0",
        "nud",
        "permanent",
        ns=tb.node,
    )
    before = host_state(tb, "tnwa0")
    pod = tb.add_netns()
    config = {
        "interface": {
            "name": "net1",
            # 10.1.0.5/24 keeps the host's gateway 10.1.0.1 on-link: the host's routes move too
            "addresses": ["10.9.0.2/24", "10.1.0.5/24", "fd00:9::2/64"],
            "mtu": 1400,
            "hardwareAddr": "02:aa:bb:cc:dd:01",
            "gsoMaxSize": 60000,
            "groMaxSize": 60000,
            "gsoIPv4MaxSize": 50000,
            "groIPv4MaxSize": 50000,
            "arpIgnore": 1,
            "arpAnnounce": 2,
            "forwarding": True,
        },
        "routes": [
            {"destination": "10.77.0.0/16", "gateway": "10.9.0.1"},
            {"destination": "10.88.0.0/16", "gateway": "10.9.0.1", "table": 200},
            {"destination": "fd00:77::/64", "gateway": "fd00:9::1"},
            {"destination": "10.99.0.0/24", "scope": 253},
        ],
        "rules": [{"priority": 500, "source": "10.9.0.0/24", "table": 200}],
        "neighbors": [{"destination": "10.9.0.7", "hardwareAddr": "02:00:00:00:00:07"}],
        "ethtool": {"features": {"tx-checksum-ip-generic": False}},
    }
    res = worker.attach(
        "pod-a", f"/run/netns/{pod}", [{"device": "nic-a", "ifname": "tnwa0", "config": config}]
    )
    att = res["attachments"][0]
    assert att["pod_ifname"] == "net1" and att["hardware_address"] == "02:aa:bb:cc:dd:01"
    assert att["ips"] == ["10.9.0.2/24", "10.1.0.5/24", "fd00:9::2/64"]
    assert tb.link("tnwa0") is None
    link = tb.link("net1", ns=pod)
    assert link is not None and "UP" in link["flags"]
    assert (link["mtu"], link["address"], link["gso_max_size"], link["gro_max_size"]) == (
        1400,
        "02:aa:bb:cc:dd:01",
        60000,
        60000,
    )
    nl = read_link(pod, "net1")  # iproute2 here does not print the IPv4 sizes
    assert (nl.gso_ipv4_max_size, nl.gro_ipv4_max_size) == (50000, 50000)
    assert tb.addresses("net1", ns=pod) == ["10.1.0.5/24", "10.9.0.2/24", "fd00:9::2/64"]
    routes = {(r.get("dst"), r.get("gateway"), r.get("table", "main")) for r in tb.routes("net1", ns=pod)}
    assert {
        ("10.77.0.0/16", "10.9.0.1", "main"),
        ("10.88.0.0/16", "10.9.0.1", "200"),
        ("fd00:77::/64", "fd00:9::1", "main"),
        ("10.99.0.0/24", None, "main"),
        ("10.50.0.0/16", "10.1.0.1", "main"),  # the host's, moved with the link
        ("10.60.0.0/16", "10.1.0.1", "100"),
    } <= routes
    rules = ip_json("rule", "show", ns=pod)
    assert any(
        r.get("priority") == 500 and r.get("src") == "10.9.0.0" and r.get("table") == "200" for r in rules
    )
    assert any(r.get("priority") == 1000 and r.get("table") == "100" for r in rules)  # the host's
    neigh = ip_json("neigh", "show", "dev", "net1", ns=pod)
    assert any(n["dst"] == "10.9.0.7" and n["lladdr"] == "02:00:00:00:00:07" for n in neigh)
    assert any(n["dst"] == "10.1.0.9" for n in neigh)  # the host's permanent neighbour came along
    sysctl = ip(
        "netns",
        "exec",
        pod,
        "sysctl",
        "-n",
        "net.ipv4.conf.net1.arp_ignore",
        "net.ipv4.conf.net1.arp_announce",
        "net.ipv4.conf.net1.forwarding",
        "net.ipv6.conf.net1.forwarding",
    )
    assert sysctl.split() == ["1", "2", "1", "1"]
    feats = ip("netns", "exec", pod, "ethtool", "-k", "net1", check=False)
    if feats:
        assert "tx-checksum-ip-generic: off" in feats
    assert [e["state"] for e in worker.events] == ["attached"]  # type: ignore[attr-defined]
    assert worker.events[0]["network_data"]["interfaceName"] == "net1"  # type: ignore[attr-defined]

    assert worker.detach("pod-a") == {"released": ["nic-a"]}
    assert tb.link("net1", ns=pod) is None
    assert host_state(tb, "tnwa0") == before
    assert any(r.get("priority") == 1000 for r in ip_json("rule", "show", ns=tb.node))
    neigh = ip_json("neigh", "show", "dev", "tnwa0", ns=tb.node)
    assert any(n["dst"] == "10.1.0.9" and "PERMANENT" in n["state"] for n in neigh)
    if feats:
        assert "tx-checksum-ip-generic: on" in ip("netns", "exec", tb.node, "ethtool", "-k", "tnwa0")
    assert worker.queries.attachments() == {"attachments": []}
    assert worker.detach("pod-a") == {"released": []}  # idempotent


def test_inherits_host_addresses_and_routes(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnwb0", addresses=("10.2.0.2/24", "fd00:2::2/64"))
    ip("route", "add", "10.51.0.0/16", "via", "10.2.0.1", ns=tb.node)
    pod = tb.add_netns()
    worker.attach("pod-b", f"/run/netns/{pod}", [{"device": "nic-b", "ifname": "tnwb0", "config": {}}])
    assert tb.addresses("tnwb0", ns=pod) == ["10.2.0.2/24", "fd00:2::2/64"]
    assert ("10.51.0.0/16", "10.2.0.1") in {
        (r.get("dst"), r.get("gateway")) for r in tb.routes("tnwb0", ns=pod)
    }
    worker.detach("pod-b", ["nic-b"])
    assert tb.addresses("tnwb0") == ["10.2.0.2/24", "fd00:2::2/64"]
    assert ("10.51.0.0/16", "10.2.0.1") in {(r.get("dst"), r.get("gateway")) for r in tb.routes("tnwb0")}


def test_name_clash_pod_eth0_while_host_has_eth0(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("eth0", addresses=("10.3.0.2/24",))
    tb.add_nic("tnwc0", addresses=("10.4.0.2/24",))
    pod = tb.add_netns()
    cfg = {"interface": {"name": "eth0"}}
    worker.attach("pod-c", f"/run/netns/{pod}", [{"device": "nic-c", "ifname": "tnwc0", "config": cfg}])
    assert tb.link("eth0", ns=pod) is not None and tb.link("eth0") is not None
    assert tb.addresses("eth0", ns=pod) == ["10.4.0.2/24"]
    worker.detach("pod-c")
    assert tb.addresses("tnwc0") == ["10.4.0.2/24"] and tb.addresses("eth0") == ["10.3.0.2/24"]


def test_idempotent_repeat_does_not_touch(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnwd0", addresses=("10.5.0.2/24",))
    pod = tb.add_netns()
    req = [{"device": "nic-d", "ifname": "tnwd0", "config": {"interface": {"mtu": 1300}}}]
    first = worker.attach("pod-d", f"/run/netns/{pod}", req)
    ip("link", "set", "tnwd0", "mtu", "1280", ns=pod)  # a repeat must not "fix" this: untouched
    second = worker.attach("pod-d", f"/run/netns/{pod}", req)
    assert first == second
    assert tb.link("tnwd0", ns=pod)["mtu"] == 1280  # type: ignore[index]
    assert len(worker.events) == 1  # type: ignore[attr-defined]


def test_several_devices_and_macvlan(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnwe0", addresses=("10.6.0.2/24",))
    tb.add_macvlan("tnwmv0", "tnwbr0")
    pod = tb.add_netns()
    devs = [
        {"device": "nic-e", "ifname": "tnwe0", "config": {"interface": {"name": "net1"}}},
        {
            "device": "mv-0",
            "ifname": "tnwmv0",
            "config": {"interface": {"name": "net2", "addresses": ["10.7.0.2/24"]}},
        },
    ]
    phases = ("check", "open", "plan", "journal", "devices", "commit", "notify")
    count = lambda: [metrics.value("dranet_netns_attach_phase_seconds_count", phase=p) for p in phases]  # noqa: E731
    before = count()
    res = worker.attach("pod-e", f"/run/netns/{pod}", devs)
    assert [a["pod_ifname"] for a in res["attachments"]] == ["net1", "net2"]
    assert [n - b for n, b in zip(count(), before, strict=True)] == [1] * len(phases)  # each once per pod
    assert tb.link("net2", ns=pod)["linkinfo"]["info_kind"] == "macvlan"  # type: ignore[index]
    worker.detach("pod-e")
    assert tb.link("tnwmv0") is not None and tb.link("tnwe0") is not None


def test_concurrent_attaches_for_different_pods(tb: Testbed, worker: NetnsWorker) -> None:
    n = 6
    for i in range(n):
        tb.add_nic(f"tnwp{i}", addresses=(f"10.20.{i}.2/24",))
    pods = [tb.add_netns() for _ in range(n)]
    errors: list[BaseException] = []

    def go(i: int) -> None:
        try:
            worker.attach(
                f"pod-{i}",
                f"/run/netns/{pods[i]}",
                [{"device": f"nic-{i}", "ifname": f"tnwp{i}", "config": {"interface": {"name": "eth0"}}}],
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(n):
        assert tb.addresses("eth0", ns=pods[i]) == [f"10.20.{i}.2/24"]
    assert len(worker.queries.attachments()["attachments"]) == n
    for i in range(n):
        worker.detach(f"pod-{i}")
    for i in range(n):
        assert tb.addresses(f"tnwp{i}") == [f"10.20.{i}.2/24"]


def test_device_attached_elsewhere_is_a_conflict(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnwf0", addresses=("10.8.0.2/24",))
    p1, p2 = tb.add_netns(), tb.add_netns()
    worker.attach("pod-f1", f"/run/netns/{p1}", [{"device": "nic-f", "ifname": "tnwf0", "config": {}}])
    with pytest.raises(BusError) as err:
        worker.attach("pod-f2", f"/run/netns/{p2}", [{"device": "nic-f", "ifname": "tnwf0", "config": {}}])
    assert err.value.code == "conflict"
    worker.detach("pod-f1")


def test_pod_netns_deleted_while_attached_restores_to_host(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnwg0", addresses=("10.10.0.2/24",), mtu=1450)
    before = host_state(tb, "tnwg0")
    pod = tb.add_netns()
    worker.attach(
        "pod-g",
        f"/run/netns/{pod}",
        [{"device": "nic-g", "ifname": "tnwg0", "config": {"interface": {"name": "eth0", "mtu": 1300}}}],
    )
    tb.del_netns(pod)
    worker.watch.check_pods()
    assert host_state(tb, "tnwg0") == before
    assert worker.queries.attachments() == {"attachments": []}
    assert worker.events[-1]["state"] == "detached"  # type: ignore[attr-defined]


def test_host_routes_and_rules_move_even_with_claimed_addresses(tb: Testbed, worker: NetnsWorker) -> None:
    """Upstream's e2e "route rules and routes with non-default table are copied": the claim gives
    addresses, and the host's routes through the interface (other tables too) and the rules that
    point at those tables still move with it, and come back at detach."""
    tb.add_nic("tnwr0", addresses=("169.254.169.13/24",))
    ip("route", "add", "10.10.10.0/24", "via", "169.254.169.1", "dev", "tnwr0", "table", "100", ns=tb.node)
    ip("route", "add", "10.11.0.0/16", "via", "169.254.169.1", "dev", "tnwr0", ns=tb.node)
    ip("rule", "add", "from", "10.20.30.0/24", "table", "100", "priority", "500", ns=tb.node)
    pod = tb.add_netns()
    cfg = {"interface": {"name": "eth99", "addresses": ["169.254.169.13/24"]}}
    worker.attach("pod-r", f"/run/netns/{pod}", [{"device": "nic-r", "ifname": "tnwr0", "config": cfg}])
    routes = {(r.get("dst"), r.get("gateway"), r.get("table", "main")) for r in tb.routes("eth99", ns=pod)}
    assert ("10.10.10.0/24", "169.254.169.1", "100") in routes
    assert ("10.11.0.0/16", "169.254.169.1", "main") in routes
    assert any(
        r.get("priority") == 500 and r.get("src") == "10.20.30.0" and r.get("table") == "100"
        for r in ip_json("rule", "show", ns=pod)
    )
    worker.detach("pod-r")
    assert ("10.10.10.0/24", "169.254.169.1", "100") in {
        (r.get("dst"), r.get("gateway"), r.get("table", "main")) for r in tb.routes("tnwr0")
    }
    assert any(r.get("priority") == 500 for r in ip_json("rule", "show", ns=tb.node))


def test_host_route_the_claimed_addresses_cannot_reach_is_refused(tb: Testbed, worker: NetnsWorker) -> None:
    """A host route that moves with the interface but whose gateway is off-link for the claimed
    addresses is refused before any change, naming the route (the kernel would refuse it half-way)."""
    tb.add_nic("tnwq0", addresses=("10.12.0.2/24",))
    ip("route", "add", "10.13.0.0/16", "via", "10.12.0.1", ns=tb.node)
    pod = tb.add_netns()
    cfg = {"interface": {"addresses": ["10.14.0.2/24"]}}
    with pytest.raises(BusError) as err:
        worker.attach("pod-q", f"/run/netns/{pod}", [{"device": "nic-q", "ifname": "tnwq0", "config": cfg}])
    assert err.value.code == "invalid_config"
    assert "10.13.0.0/16 via 10.12.0.1" in err.value.message and "not on-link" in err.value.message
    assert tb.link("tnwq0") is not None and tb.addresses("tnwq0") == ["10.12.0.2/24"]
