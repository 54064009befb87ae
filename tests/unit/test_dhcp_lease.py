"""The pure side of DHCP: what dhclient reports becomes a Lease, and a Lease becomes configuration
by the documented merge rule (address; the claim's routes win; the claim's MTU wins)."""

from __future__ import annotations

import pytest
from dranet.services.netns.dhcp import DhcpError, lease_expired, lease_file, lease_from_env, parse_env

from dranet.config import ConfigError, check_supported, parse_network_config
from dranet.config.lease import Lease, LeaseRoute, apply_lease, classless_routes, lease_routes

ENV = """reason=BOUND
interface=eth1
new_ip_address=10.77.0.60
new_subnet_mask=255.255.255.0
new_routers=10.77.0.1 10.77.0.254
new_interface_mtu=1400
new_dhcp_lease_time=120
new_dhcp_renewal_time=60
new_dhcp_server_identifier=10.77.0.1
new_rfc3442_classless_static_routes=16 10 99 10 77 0 1 0 10 77 0 1 32 192 0 2 7 0 0 0 0
PATH=/usr/bin
"""


def test_lease_from_dhclient_env() -> None:
    lease = lease_from_env(parse_env(ENV), 1000.0)
    assert lease.address == "10.77.0.60/24" and lease.server == "10.77.0.1"
    assert (lease.lease_time, lease.renewal_time, lease.mtu, lease.obtained_at) == (120, 60, 1400, 1000.0)
    # option 121 wins over option 3 (RFC 3442); router 0.0.0.0 is on-link
    assert lease.routes == (
        LeaseRoute("10.99.0.0/16", "10.77.0.1"),
        LeaseRoute("0.0.0.0/0", "10.77.0.1"),
        LeaseRoute("192.0.2.7/32", None),
    )
    assert Lease.from_dict(lease.to_dict()) == lease


def test_router_option_without_classless_routes_is_the_default_route() -> None:
    assert lease_routes("", "10.0.0.1 10.0.0.2") == (LeaseRoute("0.0.0.0/0", "10.0.0.1"),)
    assert lease_routes("", "") == ()
    env = parse_env(ENV.replace("new_dhcp_renewal_time=60\n", ""))
    assert lease_from_env(env, 0).renewal_time == 60  # half the lease when T1 is not given


@pytest.mark.parametrize("text", ["33 10 0 0 0 0 1 2 3 4", "24 10 0", "8 10 1 2 3 400"])
def test_bad_classless_routes(text: str) -> None:
    with pytest.raises(ValueError):
        classless_routes(text)


def test_answer_without_an_address() -> None:
    with pytest.raises(DhcpError, match="no address"):
        lease_from_env({"reason": "BOUND"}, 0)


LEASE = Lease(
    address="10.77.0.60/24",
    server="10.77.0.1",
    lease_time=120,
    renewal_time=60,
    routes=(LeaseRoute("10.99.0.0/16", "10.77.0.1"), LeaseRoute("192.0.2.7/32", None)),
    mtu=1400,
)


def test_apply_lease() -> None:
    cfg = apply_lease({"interface": {"name": "net1", "dhcp": True}}, LEASE)
    assert cfg == {
        "interface": {"name": "net1", "addresses": ["10.77.0.60/24"], "mtu": 1400},
        "routes": [
            {"destination": "10.99.0.0/16", "gateway": "10.77.0.1"},
            {"destination": "192.0.2.7/32", "scope": 253},
        ],
    }
    check_supported(parse_network_config(cfg))  # what the worker gets has no dhcp left


def test_the_claims_routes_and_mtu_win() -> None:
    mine = {"destination": "10.99.0.0/16", "gateway": "10.77.0.254"}
    cfg = apply_lease({"interface": {"dhcp": True, "mtu": 9000}, "routes": [mine]}, LEASE)
    assert cfg["interface"]["mtu"] == 9000
    assert cfg["routes"] == [mine, {"destination": "192.0.2.7/32", "scope": 253}]


def test_dhcp_with_hardware_address_is_refused() -> None:
    cfg = parse_network_config({"interface": {"dhcp": True, "hardwareAddr": "02:00:00:00:00:01"}})
    with pytest.raises(ConfigError) as err:
        check_supported(cfg, dhcp=True)
    assert err.value.field == "interface.hardwareAddr"


def test_dhclients_lease_file_is_written_from_our_record() -> None:
    # 2026-12-04 02:00:00 UTC is a Friday (weekday 5 in dhclient's count from Sunday = 0)
    lease = Lease("10.77.0.60/24", "10.77.0.1", 120, 60, obtained_at=1796349600.0)
    assert lease_file(lease, "net1") == (
        "lease {\n"
        '  interface "net1";\n'
        "  fixed-address 10.77.0.60;\n"
        "  option subnet-mask 255.255.255.0;\n"
        "  option dhcp-server-identifier 10.77.0.1;\n"
        "  option dhcp-lease-time 120;\n"
        "  renew 5 2026/12/04 02:01:00;\n"
        "  rebind 5 2026/12/04 02:01:45;\n"
        "  expire 5 2026/12/04 02:02:00;\n"
        "}\n"
    )
    assert not lease_expired(lease, 1796349719.0) and lease_expired(lease, 1796349720.0)


@pytest.mark.parametrize("lease_time", [0, 0xFFFFFFFF])
def test_a_lease_without_an_end_never_expires(lease_time: int) -> None:
    lease = Lease("10.77.0.60/24", "10.77.0.1", lease_time, 0, obtained_at=1.0)
    text = lease_file(lease, "eth1")
    assert "  expire never;\n" in text and "dhcp-lease-time" not in text
    assert not lease_expired(lease, 1e10)
