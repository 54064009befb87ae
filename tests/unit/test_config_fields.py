"""Each field of the claim configuration: accepted values (and how they decode) and refused ones
(with the field path the error names)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dranet.config import ConfigError, NetworkConfig, parse_network_config


def iface(**fields: Any) -> dict[str, Any]:
    return {"interface": fields}


def route(**fields: Any) -> dict[str, Any]:
    return {"routes": [fields]}


def rule(**fields: Any) -> dict[str, Any]:
    return {"rules": [fields]}


def neigh(**fields: Any) -> dict[str, Any]:
    return {"neighbors": [fields]}


# (document, attribute path on the NetworkConfig, expected value)
GOOD: list[tuple[dict[str, Any], str, Any]] = [
    ({}, "interface.name", None),
    ({"profile": "whereabouts-profile"}, "profile", "whereabouts-profile"),
    ({"profile": ""}, "profile", None),
    (iface(), "interface.addresses", ()),
    (iface(name="eth1"), "interface.name", "eth1"),
    (iface(name="a"), "interface.name", "a"),
    (iface(name="net-0.1_x"), "interface.name", "net-0.1_x"),
    (iface(name="abcdefghijklmno"), "interface.name", "abcdefghijklmno"),
    (iface(name=""), "interface.name", None),
    (iface(name=None), "interface.name", None),
    (iface(addresses=["10.0.0.2/24"]), "interface.addresses", ("10.0.0.2/24",)),
    (iface(addresses=["FD00::0002/64"]), "interface.addresses", ("fd00::2/64",)),
    (
        iface(addresses=["10.0.0.2/32", "2001:db8::1/128"]),
        "interface.addresses",
        ("10.0.0.2/32", "2001:db8::1/128"),
    ),
    (iface(addresses=["10.0.0.0/24"]), "interface.addresses", ("10.0.0.0/24",)),
    (iface(addresses=["169.254.169.13/24"]), "interface.addresses", ("169.254.169.13/24",)),
    (iface(addresses=[]), "interface.addresses", ()),
    (iface(dhcp=True), "interface.dhcp", True),
    (iface(dhcp=False, addresses=["10.0.0.2/24"]), "interface.dhcp", False),
    (iface(mtu=68), "interface.mtu", 68),
    (iface(mtu=1500), "interface.mtu", 1500),
    (iface(mtu=65535), "interface.mtu", 65535),
    (iface(mtu=1280, addresses=["fd00::2/64"]), "interface.mtu", 1280),
    (iface(mtu=576, addresses=["10.0.0.2/24"]), "interface.mtu", 576),
    (iface(hardwareAddr="00:11:22:33:44:55"), "interface.hardware_addr", "00:11:22:33:44:55"),
    (iface(hardwareAddr="02-AB-cd-EF-00-01"), "interface.hardware_addr", "02:ab:cd:ef:00:01"),
    (iface(gsoMaxSize=65536), "interface.gso_max_size", 65536),
    (iface(groMaxSize=1), "interface.gro_max_size", 1),
    (iface(gsoIPv4MaxSize=524280), "interface.gso_ipv4_max_size", 524280),
    (iface(groIPv4MaxSize=185000), "interface.gro_ipv4_max_size", 185000),
    (iface(disableEbpfPrograms=True), "interface.disable_ebpf_programs", True),
    (iface(disableEbpfPrograms=False), "interface.disable_ebpf_programs", False),
    (iface(forwarding=True), "interface.forwarding", True),
    (iface(forwarding=False), "interface.forwarding", False),
    (iface(), "interface.forwarding", None),
    *[(iface(arpIgnore=n), "interface.arp_ignore", n) for n in (0, 1, 2, 3, 8)],
    *[(iface(arpAnnounce=n), "interface.arp_announce", n) for n in (0, 1, 2)],
    (iface(vrf={"name": "blue", "table": 100}), "interface.vrf.table", 100),
    (iface(vrf={"name": "blue", "table": 252}), "interface.vrf.table", 252),
    (iface(vrf={"name": "blue", "table": 256}), "interface.vrf.table", 256),
    (iface(vrf={"name": "blue", "table": 4294967295}), "interface.vrf.table", 4294967295),
    (iface(vrf={"name": "test-vrf"}), "interface.vrf.table", 1890),
    (iface(vrf={"name": "blue", "table": None}), "interface.vrf.name", "blue"),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1"), "routes.0.destination", "10.0.0.0/8"),
    (route(destination="10.1.2.3/16", gateway="192.0.2.1"), "routes.0.destination", "10.1.0.0/16"),
    (route(destination="0.0.0.0/0", gateway="192.0.2.1"), "routes.0.gateway", "192.0.2.1"),
    (route(destination="192.0.2.7/32", gateway="192.0.2.1"), "routes.0.destination", "192.0.2.7/32"),
    (route(destination="2001:db8::/32", gateway="FE80::1"), "routes.0.gateway", "fe80::1"),
    (route(destination="2001:db8::1/128", scope=253), "routes.0.scope", 253),
    (route(destination="10.0.0.0/8", scope=253), "routes.0.gateway", None),
    (route(destination="10.0.0.0/8", scope=253, gateway=""), "routes.0.gateway", None),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", scope=0), "routes.0.scope", 0),
    (
        route(destination="10.0.0.0/8", gateway="192.0.2.1", source="192.0.2.9"),
        "routes.0.source",
        "192.0.2.9",
    ),
    (route(destination="::/0", gateway="fe80::1", source="2001:db8::5"), "routes.0.source", "2001:db8::5"),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", table=100), "routes.0.table", 100),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", table=0), "routes.0.table", 0),
    (route(destination="224.0.0.0/4", scope=253), "routes.0.destination", "224.0.0.0/4"),
    (rule(priority=0), "rules.0.priority", 0),
    (rule(priority=32767), "rules.0.priority", 32767),
    (rule(table=100), "rules.0.priority", None),
    (rule(source="192.168.100.7/24", table=100), "rules.0.source", "192.168.100.0/24"),
    (rule(destination="2001:db8::/64"), "rules.0.destination", "2001:db8::/64"),
    (rule(source="10.0.0.0/8", destination="10.1.0.0/16"), "rules.0.destination", "10.1.0.0/16"),
    (rule(source="", table=5), "rules.0.source", None),
    (neigh(destination="10.0.0.9", hardwareAddr="00:11:22:33:44:55"), "neighbors.0.destination", "10.0.0.9"),
    (
        neigh(destination="2001:DB8::9", hardwareAddr="00:11:22:33:44:55"),
        "neighbors.0.destination",
        "2001:db8::9",
    ),
    (
        neigh(destination="10.0.0.9", hardwareAddr="01:00:5E:00:00:01"),
        "neighbors.0.hardware_addr",
        "01:00:5e:00:00:01",
    ),
    ({"ethtool": {}}, "ethtool.features", {}),
    (
        {"ethtool": {"features": {"tso": False, "rx-gro-hw": True}}},
        "ethtool.features",
        {"tso": False, "rx-gro-hw": True},
    ),
    (
        {"ethtool": {"privateFlags": {"disable-fw-lldp": True}}},
        "ethtool.private_flags",
        {"disable-fw-lldp": True},
    ),
    ({"ethtool": {"features": {"a" * 31: True}}}, "ethtool.features", {"a" * 31: True}),
    ({"ethtool": {"features": None}}, "ethtool.features", {}),
]


def attr(cfg: NetworkConfig, path: str) -> Any:
    value: Any = cfg
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    return value


@pytest.mark.parametrize(("doc", "path", "expected"), GOOD, ids=[json.dumps(g[0])[:80] for g in GOOD])
def test_good_value(doc: dict[str, Any], path: str, expected: Any) -> None:
    assert attr(parse_network_config(doc), path) == expected
    # The same document as JSON text and as bytes decodes the same.
    assert attr(parse_network_config(json.dumps(doc)), path) == expected
    assert attr(parse_network_config(json.dumps(doc).encode()), path) == expected


# (document, field path in the error, words the reason must contain)
BAD: list[tuple[Any, str, str]] = [
    # the document as a whole
    ([], "", "must be a JSON object"),
    ('"x"', "", "must be a JSON object, got string"),
    ({"bogus": 1}, "bogus", "unknown field"),
    ({"Interface": {}}, "Interface", "did you mean 'interface'"),
    ({"subInterface": {"type": "ipvlan"}}, "subInterface", "not supported"),
    ({"profile": 3}, "profile", "must be a string"),
    ({"profile": "a\nb"}, "profile", "printable"),
    ({"interface": []}, "interface", "must be an object"),
    ({"interface": "eth0"}, "interface", "must be an object"),
    ({"routes": {}}, "routes", "must be an array"),
    ({"routes": [None]}, "routes[0]", "must be an object"),
    ({"rules": "x"}, "rules", "must be an array"),
    ({"neighbors": [1]}, "neighbors[0]", "must be an object"),
    ({"ethtool": []}, "ethtool", "must be an object"),
    # interface.name
    (iface(name=1), "interface.name", "must be a string"),
    (iface(name="abcdefghijklmnop"), "interface.name", "longer than 15"),
    (iface(name="a/b"), "interface.name", "'/'"),
    (iface(name="a b"), "interface.name", "' '"),
    (iface(name="a\tb"), "interface.name", "'\\t'"),
    (iface(name="eth:0"), "interface.name", "':'"),
    (iface(name="eth\u00e9"), "interface.name", "ASCII"),
    (iface(name="."), "interface.name", "not a valid interface name"),
    (iface(name=".."), "interface.name", "not a valid interface name"),
    (iface(name="lo"), "interface.name", "reserved"),
    (iface(name="all"), "interface.name", "reserved"),
    (iface(name="default"), "interface.name", "reserved"),
    (iface(name="bonding_masters"), "interface.name", "reserved"),
    (iface(hostName="x"), "interface.hostName", "unknown field"),
    (iface(hardwareAddress="00:11:22:33:44:55"), "interface.hardwareAddress", "did you mean 'hardwareAddr'"),
    # interface.addresses
    (iface(addresses="10.0.0.2/24"), "interface.addresses", "must be an array"),
    (iface(addresses=[1]), "interface.addresses[0]", "must be a string"),
    (iface(addresses=[None]), "interface.addresses[0]", "must be a string"),
    (iface(addresses=["10.0.0.2"]), "interface.addresses[0]", "CIDR"),
    (iface(addresses=["10.0.0.2/33"]), "interface.addresses[0]", "not a valid"),
    (iface(addresses=["fd00::1/129"]), "interface.addresses[0]", "not a valid"),
    (iface(addresses=["10.0.0.2/024"]), "interface.addresses[0]", "prefix length"),
    (iface(addresses=["10.0.0.2/"]), "interface.addresses[0]", "prefix length"),
    (iface(addresses=["10.0.0.2/255.255.255.0"]), "interface.addresses[0]", "prefix length"),
    (iface(addresses=["10.0.0.256/24"]), "interface.addresses[0]", "not a valid"),
    (iface(addresses=["010.0.0.2/24"]), "interface.addresses[0]", "not a valid"),
    (iface(addresses=["fe80::1%eth0/64"]), "interface.addresses[0]", "zone"),
    (iface(addresses=["0.0.0.0/0"]), "interface.addresses[0]", "cannot be assigned"),
    (iface(addresses=["224.0.0.1/24"]), "interface.addresses[0]", "cannot be assigned"),
    (iface(addresses=["127.0.0.2/8"]), "interface.addresses[0]", "cannot be assigned"),
    (iface(addresses=["::1/128"]), "interface.addresses[0]", "cannot be assigned"),
    (iface(addresses=["255.255.255.255/32"]), "interface.addresses[0]", "broadcast"),
    (iface(addresses=["10.0.0.2/24", "10.0.0.2/24"]), "interface.addresses[1]", "addresses[0]"),
    (iface(addresses=["10.0.0.2/24", "10.0.0.2/16"]), "interface.addresses[1]", "addresses[0]"),
    (iface(addresses=["fd00::2/64", "FD00::2/48"]), "interface.addresses[1]", "addresses[0]"),
    # interface.dhcp
    (iface(dhcp="true"), "interface.dhcp", "true or false"),
    (iface(dhcp=1), "interface.dhcp", "true or false"),
    (iface(dhcp=True, addresses=["10.0.0.2/24"]), "interface.dhcp", "mutually exclusive"),
    # interface.mtu
    (iface(mtu=67), "interface.mtu", "between 68 and 65535"),
    (iface(mtu=0), "interface.mtu", "between 68 and 65535"),
    (iface(mtu=-1), "interface.mtu", "between 68 and 65535"),
    (iface(mtu=65536), "interface.mtu", "between 68 and 65535"),
    (iface(mtu=True), "interface.mtu", "must be an integer, got boolean"),
    (iface(mtu="1500"), "interface.mtu", "must be an integer, got string"),
    (iface(mtu=1500.0), "interface.mtu", "must be an integer, got number"),
    (iface(mtu=1279, addresses=["fd00::2/64"]), "interface.mtu", "1280"),
    # interface.hardwareAddr
    (iface(hardwareAddr=""), "interface.hardwareAddr", "not a MAC"),
    (iface(hardwareAddr=5), "interface.hardwareAddr", "must be a string"),
    (iface(hardwareAddr="00:11:22:33:44"), "interface.hardwareAddr", "not a MAC"),
    (iface(hardwareAddr="00:11:22:33:44:55:66"), "interface.hardwareAddr", "not a MAC"),
    (iface(hardwareAddr="00:11:22-33:44:55"), "interface.hardwareAddr", "not a MAC"),
    (iface(hardwareAddr="0011.2233.4455"), "interface.hardwareAddr", "not a MAC"),
    (iface(hardwareAddr="00:11:22:33:44:5g"), "interface.hardwareAddr", "not a MAC"),
    (iface(hardwareAddr="00:00:00:00:00:00"), "interface.hardwareAddr", "all-zero"),
    (iface(hardwareAddr="01:00:5e:00:00:01"), "interface.hardwareAddr", "multicast"),
    (iface(hardwareAddr="ff:ff:ff:ff:ff:ff"), "interface.hardwareAddr", "multicast"),
    (iface(hardwareAddr="03:00:00:00:00:01"), "interface.hardwareAddr", "multicast"),
    # GSO / GRO sizes
    *[
        (iface(**{f: v}), f"interface.{f}", why)
        for f in ("gsoMaxSize", "groMaxSize", "gsoIPv4MaxSize", "groIPv4MaxSize")
        for v, why in (
            (0, "between 1 and 524280"),
            (-5, "between 1 and 524280"),
            (524281, "between 1 and 524280"),
            (False, "got boolean"),
            ("65536", "got string"),
        )
    ],
    # booleans
    (iface(disableEbpfPrograms="yes"), "interface.disableEbpfPrograms", "true or false"),
    (iface(forwarding=1), "interface.forwarding", "true or false"),
    # ARP sysctls
    *[(iface(arpIgnore=n), "interface.arpIgnore", "0, 1, 2, 3 or 8") for n in (4, 5, 6, 7)],
    (iface(arpIgnore=9), "interface.arpIgnore", "between 0 and 8"),
    (iface(arpIgnore=-1), "interface.arpIgnore", "between 0 and 8"),
    (iface(arpIgnore=True), "interface.arpIgnore", "got boolean"),
    (iface(arpAnnounce=3), "interface.arpAnnounce", "between 0 and 2"),
    (iface(arpAnnounce=-1), "interface.arpAnnounce", "between 0 and 2"),
    (iface(arpAnnounce="1"), "interface.arpAnnounce", "got string"),
    # VRF
    (iface(vrf={}), "interface.vrf.name", "required"),
    (iface(vrf={"name": ""}), "interface.vrf.name", "required"),
    (iface(vrf={"name": None}), "interface.vrf.name", "required"),
    (iface(vrf={"name": 7}), "interface.vrf.name", "must be a string"),
    (iface(vrf={"table": 100}), "interface.vrf.name", "required"),
    (iface(vrf={"name": "a/b"}), "interface.vrf.name", "'/'"),
    (iface(vrf={"name": "default"}), "interface.vrf.name", "reserved"),
    (iface(vrf={"name": "vrf-with-long-name"}), "interface.vrf.name", "longer than 15"),
    (iface(name="eth1", vrf={"name": "eth1"}), "interface.vrf.name", "interface's name"),
    (iface(vrf={"name": "blue", "table": 0}), "interface.vrf.table", "between 1 and"),
    (iface(vrf={"name": "blue", "table": -3}), "interface.vrf.table", "between 1 and"),
    (iface(vrf={"name": "blue", "table": 253}), "interface.vrf.table", "reserved"),
    (iface(vrf={"name": "blue", "table": 254}), "interface.vrf.table", "reserved"),
    (iface(vrf={"name": "blue", "table": 255}), "interface.vrf.table", "reserved"),
    (iface(vrf={"name": "blue", "table": 4294967296}), "interface.vrf.table", "between 1 and"),
    (iface(vrf={"name": "blue", "table": "100"}), "interface.vrf.table", "got string"),
    (iface(vrf={"name": "blue", "id": 1}), "interface.vrf.id", "unknown field"),
    (iface(vrf="blue"), "interface.vrf", "must be an object"),
    # routes
    (route(), "routes[0].destination", "required"),
    (route(destination="", gateway="10.0.0.1"), "routes[0].destination", "required"),
    (route(destination=10, gateway="10.0.0.1"), "routes[0].destination", "must be a string"),
    (route(destination="10.0.0.1", gateway="10.0.0.1"), "routes[0].destination", "/32 or /128"),
    (route(destination="10.0.0.0/40", gateway="10.0.0.1"), "routes[0].destination", "not a valid"),
    (route(destination="default", gateway="10.0.0.1"), "routes[0].destination", "CIDR"),
    (route(destination="10.0.0.0/8"), "routes[0].gateway", "required for a universe-scope"),
    (route(destination="10.0.0.0/8", gateway=""), "routes[0].gateway", "required for a universe-scope"),
    (route(destination="10.0.0.0/8", gateway="10.0.0.0/24"), "routes[0].gateway", "not an IPv4 or IPv6"),
    (route(destination="10.0.0.0/8", gateway="fe80::1"), "routes[0].gateway", "IPv6 but destination"),
    (route(destination="::/0", gateway="192.0.2.1"), "routes[0].gateway", "IPv4 but destination"),
    (route(destination="::/0", gateway="fe80::1%eth0"), "routes[0].gateway", "zone"),
    (route(destination="10.0.0.0/8", gateway="0.0.0.0"), "routes[0].gateway", "cannot be a gateway"),
    (route(destination="10.0.0.0/8", gateway="224.0.0.1"), "routes[0].gateway", "cannot be a gateway"),
    (route(destination="10.0.0.0/8", gateway="127.0.0.1"), "routes[0].gateway", "cannot be a gateway"),
    (route(destination="10.0.0.0/8", gateway=1), "routes[0].gateway", "must be a string"),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", scope=253), "routes[0].gateway", "link-scope"),
    *[
        (route(destination="10.0.0.0/8", gateway="192.0.2.1", scope=s), "routes[0].scope", "not allowed")
        for s in (1, 200, 254, 255)
    ],
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", scope=256), "routes[0].scope", "between 0 and 255"),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", scope="link"), "routes[0].scope", "got string"),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", source="fd00::1"), "routes[0].source", "IPv6 but"),
    (
        route(destination="10.0.0.0/8", gateway="192.0.2.1", source="10.0.0.2/24"),
        "routes[0].source",
        "not an IPv4",
    ),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", source="0.0.0.0"), "routes[0].source", "cannot be"),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", table=-1), "routes[0].table", "between 0 and"),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", table=2**32), "routes[0].table", "between 0 and"),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", table=True), "routes[0].table", "got boolean"),
    (route(destination="10.0.0.0/8", gateway="192.0.2.1", metric=5), "routes[0].metric", "unknown field"),
    (
        {
            "routes": [
                {"destination": "10.0.0.0/8", "scope": 253},
                {"destination": "10.0.0.0/8", "scope": 253},
            ]
        },
        "routes[1].destination",
        "routes[0]",
    ),
    (
        {
            "routes": [
                {"destination": "10.0.0.0/8", "scope": 253},
                {"destination": "10.9.0.0/8", "scope": 253},
            ]
        },
        "routes[1].destination",
        "routes[0]",
    ),
    (
        {
            "routes": [
                {"destination": "10.0.0.0/8", "scope": 253},
                {"destination": "10.0.0.0/8", "scope": 253, "table": 254},
            ]
        },
        "routes[1].destination",
        "same table",
    ),
    # rules
    (rule(priority=-1), "rules[0].priority", "between 0 and 32767"),
    (rule(priority=32768), "rules[0].priority", "between 0 and 32767"),
    (rule(priority="1"), "rules[0].priority", "got string"),
    (rule(priority=1.5), "rules[0].priority", "got number"),
    (rule(table=-1), "rules[0].table", "between 0 and"),
    (rule(table=False), "rules[0].table", "got boolean"),
    (rule(source="10.0.0.1"), "rules[0].source", "CIDR"),
    (rule(source="bad/8"), "rules[0].source", "not a valid"),
    (rule(destination="10.0.0.0/8x"), "rules[0].destination", "prefix length"),
    (rule(source="10.0.0.0/8", destination="fd00::/8"), "rules[0].destination", "IPv6 but source"),
    (rule(source="10.0.0.0/8", iif="eth0"), "rules[0].iif", "unknown field"),
    ({"rules": [{"table": 100}, {"table": 100}]}, "rules[1]", "same rule as rules[0]"),
    (
        {"interface": {"vrf": {"name": "blue"}}, "rules": [{"table": 100}]},
        "rules",
        "not supported with interface.vrf",
    ),
    (
        {
            "interface": {"vrf": {"name": "blue", "table": 10}},
            "routes": [{"destination": "10.0.0.0/8", "scope": 253, "table": 11}],
        },
        "routes[0].table",
        "VRF's table 10",
    ),
    # neighbors
    (neigh(hardwareAddr="00:11:22:33:44:55"), "neighbors[0].destination", "required"),
    (neigh(destination="10.0.0.9"), "neighbors[0].hardwareAddr", "required"),
    (
        neigh(destination="10.0.0.0/24", hardwareAddr="00:11:22:33:44:55"),
        "neighbors[0].destination",
        "not an IPv4",
    ),
    (neigh(destination="", hardwareAddr="00:11:22:33:44:55"), "neighbors[0].destination", "not an IPv4"),
    (
        neigh(destination="224.0.0.1", hardwareAddr="00:11:22:33:44:55"),
        "neighbors[0].destination",
        "cannot be",
    ),
    (
        neigh(destination="10.0.0.9", hardwareAddr="00:00:00:00:00:00"),
        "neighbors[0].hardwareAddr",
        "all-zero",
    ),
    (neigh(destination="10.0.0.9", hardwareAddr="zz"), "neighbors[0].hardwareAddr", "not a MAC"),
    (
        neigh(ipAddress="10.0.0.9", hardwareAddr="00:11:22:33:44:55"),
        "neighbors[0].ipAddress",
        "use 'destination'",
    ),
    (
        {
            "neighbors": [
                {"destination": "10.0.0.9", "hardwareAddr": "00:11:22:33:44:55"},
                {"destination": "10.0.0.9", "hardwareAddr": "00:11:22:33:44:66"},
            ]
        },
        "neighbors[1].destination",
        "neighbors[0]",
    ),
    # ethtool
    ({"ethtool": {"features": []}}, "ethtool.features", "must be an object"),
    ({"ethtool": {"features": {"tso": "off"}}}, "ethtool.features.tso", "true or false"),
    ({"ethtool": {"features": {"tso": 0}}}, "ethtool.features.tso", "true or false"),
    ({"ethtool": {"features": {"tso": None}}}, "ethtool.features.tso", "true or false"),
    ({"ethtool": {"features": {"": True}}}, "ethtool.features", "must not be empty"),
    ({"ethtool": {"features": {"a" * 32: True}}}, "ethtool.features", "longer than 31"),
    ({"ethtool": {"features": {"rx gro": True}}}, "ethtool.features", "printable ASCII"),
    ({"ethtool": {"features": {"rx\u00e9": True}}}, "ethtool.features", "printable ASCII"),
    ({"ethtool": {"privateFlags": {"x": "on"}}}, "ethtool.privateFlags.x", "true or false"),
    ({"ethtool": {"privateFlags": "x"}}, "ethtool.privateFlags", "must be an object"),
    ({"ethtool": {"ringSize": 1}}, "ethtool.ringSize", "unknown field"),
]


@pytest.mark.parametrize(("doc", "field", "words"), BAD, ids=[json.dumps(b[0])[:80] for b in BAD])
def test_bad_value(doc: Any, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_network_config(doc if isinstance(doc, str) else json.dumps(doc))
    assert info.value.field == field
    assert words in info.value.reason
    assert str(info.value) == f"{field}: {info.value.reason}"
    if not isinstance(doc, str):
        # An already decoded object gives the same error as its JSON text.
        with pytest.raises(ConfigError) as again:
            parse_network_config(doc)
        assert (again.value.field, again.value.reason) == (field, info.value.reason)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{", "invalid JSON"),
        ('{"interface": {"mtu": 1500,}}', "invalid JSON"),
        ('{"interface": {"mtu": NaN}}', "NaN is not valid JSON"),
        ('{"interface": {"mtu": Infinity}}', "Infinity is not valid JSON"),
        ('{"profile": "a", "profile": "b"}', "'profile' appears twice"),
        ('{"interface": {"mtu": 1500, "mtu": 9000}}', "'mtu' appears twice"),
        ('{"interface": {"mtu": 1e3}}', "must be an integer, got number"),
        ("null", "must be a JSON object, got null"),
        ("42", "must be a JSON object, got integer"),
        ('"text"', "must be a JSON object, got string"),
    ],
)
def test_bad_json_text(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_network_config(text)
    assert words in str(info.value)


def test_bytes_must_be_utf8() -> None:
    with pytest.raises(ConfigError) as info:
        parse_network_config(b'{"profile": "\xff"}')
    assert info.value.field == "" and "UTF-8" in info.value.reason


@pytest.mark.parametrize("empty", ["", "  \n", b"", b" "])
def test_empty_text_is_no_configuration(empty: str | bytes) -> None:
    assert parse_network_config(empty) == NetworkConfig()


def test_null_fields_mean_unset() -> None:
    doc = {"profile": None, "interface": {"mtu": None, "vrf": None}, "routes": None, "ethtool": None}
    assert parse_network_config(doc) == NetworkConfig()


def test_unknown_field_lists_allowed_fields() -> None:
    with pytest.raises(ConfigError) as info:
        parse_network_config({"routes": [{"destination": "10.0.0.0/8", "scope": 253, "via": "x"}]})
    assert "allowed: destination, gateway, source, scope, table" in info.value.reason
