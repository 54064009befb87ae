"""The uplink rule (dranet/uplinks.py) on values: lookups, upstream's main-table rule, the walk."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest

from dranet.settings import uplink_policy
from dranet.uplinks import (
    APISERVER,
    DEFAULT_ROUTE,
    LOWER,
    MAIN_DEFAULT,
    MASTER,
    OPERATOR,
    PORT,
    Lookup,
    RouteFacts,
    UplinkPolicy,
    endpoint_host,
    main_table_defaults,
    node_uplinks,
)

V4, V6 = socket.AF_INET, socket.AF_INET6
RTN_LOCAL, RTN_UNREACHABLE = 2, 7


@dataclass(frozen=True)
class L:
    index: int
    name: str
    master: int = 0
    parent: int = 0


def route(
    oifs: tuple[int, ...], dst_len: int = 0, table: int = 254, family: int = V4, **kw: int
) -> RouteFacts:
    return RouteFacts(family=family, table=table, dst_len=dst_len, oifs=oifs, **kw)


def lookups(answers: Mapping[str, RouteFacts]) -> Lookup:
    """A kernel stand-in: the route matched for each destination; no route for the others."""
    return lambda _family, destination: answers.get(destination)


def run(
    links: list[L],
    routes: Sequence[RouteFacts] = (),
    answers: Mapping[str, RouteFacts] | None = None,
    **policy: tuple[str, ...],
) -> dict[str, str]:
    found = node_uplinks(links, routes, lookups(answers or {}), UplinkPolicy(**policy))
    return {u.name: u.reason for u in found.values()}


ETHS = [L(2, "eth0"), L(3, "eth1"), L(4, "eth2")]


def test_the_lookup_for_the_default_destination_decides() -> None:
    # The kernel sends the node's traffic through eth1 (a rule to another table), not the main default.
    answers = {"203.0.113.1": route((3,), table=100)}
    assert run(ETHS, answers=answers) == {"eth1": DEFAULT_ROUTE}


def test_a_probe_covered_by_a_specific_route_is_skipped() -> None:
    answers = {"203.0.113.1": route((2,), dst_len=24), "198.51.100.1": route((3,))}
    assert run(ETHS, answers=answers) == {"eth1": DEFAULT_ROUTE}


def test_every_nexthop_and_both_families() -> None:
    answers = {"203.0.113.1": route((2, 3)), "3fff::1": route((4,), family=V6)}
    assert run(ETHS, answers=answers) == {"eth0": DEFAULT_ROUTE, "eth1": DEFAULT_ROUTE, "eth2": DEFAULT_ROUTE}


def test_non_unicast_answers_make_no_uplink() -> None:
    answers = {"203.0.113.1": route((2,), type=RTN_UNREACHABLE), "10.0.0.1": route((1,), 32, type=RTN_LOCAL)}
    assert run(ETHS, answers=answers, apiserver=("10.0.0.1",)) == {}


def test_the_interface_towards_the_api_server() -> None:
    answers = {
        "203.0.113.1": route((2,)),
        "10.1.0.5": route((3,), dst_len=24),
        "fd00::5": route((4,), 64, family=V6),
    }
    got = run(ETHS, answers=answers, apiserver=("10.1.0.5", "fd00::5"))
    assert got == {"eth0": DEFAULT_ROUTE, "eth1": APISERVER, "eth2": APISERVER}


def test_upstreams_rule_lowest_metric_of_the_main_table_per_family() -> None:
    routes = [
        route((2,), metric=100),
        route((3,), metric=200),  # a second DHCP NIC: not an uplink
        route((4,), table=100),  # a table nothing sends the node's traffic to
        route((3,), dst_len=8),  # 0.0.0.0/8 is no default
        route((4,), family=V6, metric=1024),
        route((3,), family=V6, metric=1024),  # same lowest metric: both
    ]
    assert main_table_defaults(routes) == {V4: (2,), V6: (4, 3)}
    assert run(ETHS, routes) == {"eth0": MAIN_DEFAULT, "eth1": MAIN_DEFAULT, "eth2": MAIN_DEFAULT}
    assert main_table_defaults([route((2,), type=RTN_UNREACHABLE)]) == {}


def test_masters_upwards_and_ports_downwards() -> None:
    # eth0 carries the default; it is a port of br0, whose other port bond0 has slaves eth1/eth2.
    links = [
        L(2, "eth0", master=10),
        L(10, "br0"),
        L(11, "bond0", master=10),
        L(3, "eth1", master=11),
        L(4, "eth2", master=11),
        L(5, "eth3"),
    ]
    got = run(links, answers={"203.0.113.1": route((2,))})
    assert got == {"eth0": DEFAULT_ROUTE, "br0": MASTER, "bond0": PORT, "eth1": PORT, "eth2": PORT}


def test_the_lower_device_of_an_uplink_vlan_and_its_master() -> None:
    links = [
        L(2, "eth0", master=6),
        L(3, "eth1", master=6),
        L(6, "bond0"),
        L(7, "vlan7", parent=6),
        L(8, "eth2"),
    ]
    got = run(links, answers={"203.0.113.1": route((7,))})
    assert got == {"vlan7": DEFAULT_ROUTE, "bond0": LOWER, "eth0": PORT, "eth1": PORT}


def test_macvlan_children_of_the_uplink_stay_offered() -> None:
    links = [L(2, "eth0"), L(7, "macvlan0", parent=2)]
    assert run(links, answers={"203.0.113.1": route((2,))}) == {"eth0": DEFAULT_ROUTE}


def test_operator_patterns_and_what_hangs_under_them() -> None:
    links = [L(2, "eth0"), L(3, "ens1f0", master=5), L(4, "ens1f1", master=5), L(5, "bond1"), L(6, "eth9")]
    assert run(links, always=("bond*",)) == {"bond1": OPERATOR, "ens1f0": PORT, "ens1f1": PORT}


def test_loops_and_unknown_indexes_end() -> None:
    links = [L(2, "a", master=3), L(3, "b", master=2, parent=2)]
    assert set(run(links, answers={"203.0.113.1": route((2, 99))})) == {"a", "b"}


def test_reasons_say_why() -> None:
    found = node_uplinks(
        [L(2, "eth0", master=3), L(3, "br0")],
        [],
        lookups({"203.0.113.1": route((2,), table=7)}),
        UplinkPolicy(),
    )
    assert found[2].detail == "the node's IPv4 default route (table 7) uses it"
    assert found[3].detail == "eth0 is enslaved to it"


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        ("https://10.0.0.1:6443", "10.0.0.1"),
        ("https://[fd00::1]:6443", "fd00::1"),
        ("[fd00::1]:6443", "fd00::1"),
        ("fd00::1", "fd00::1"),
        ("10.96.0.1", "10.96.0.1"),
        ("api.example.com:443", "api.example.com"),
        ("https://api.example.com", "api.example.com"),
        ("", ""),
    ],
)
def test_endpoint_host(endpoint: str, host: str) -> None:
    assert endpoint_host(endpoint) == host


def test_flags_to_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    args = argparse.Namespace(apiserver_endpoint=None, uplink_interfaces=" eth9, bond* ,")
    assert uplink_policy(args) == UplinkPolicy(apiserver=("10.96.0.1",), always=("eth9", "bond*"))
    assert uplink_policy(args, "https://[fd00::7]:6443").apiserver == ("fd00::7",)
    args.apiserver_endpoint = "https://127.0.0.1:6443"
    assert uplink_policy(args, "https://10.0.0.9").apiserver == ("127.0.0.1",)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert uplink_policy(argparse.Namespace()) == UplinkPolicy()
