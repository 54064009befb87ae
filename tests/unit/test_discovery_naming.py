import base64

import pytest
from dranet.services.discovery.naming import (
    decode_name,
    encode_name,
    is_dns_label,
    netdev_device_name,
    pci_device_name,
)


def test_pci_name() -> None:
    assert pci_device_name("0000:8a:00.0") == "pci-0000-8a-00-0"
    assert pci_device_name("0000:AF:1F.7") == "pci-0000-af-1f-7"
    with pytest.raises(ValueError):
        pci_device_name("eth0")
    with pytest.raises(ValueError):
        pci_device_name("0000:8a:00.0\n")


@pytest.mark.parametrize("name", ["eth0", "enp1s0f1", "macvlan-1", "a", "x" * 15])
def test_dns_label_names_are_kept(name: str) -> None:
    assert netdev_device_name(name) == name


@pytest.mark.parametrize(
    "name", ["mlx5_6", "flannel.1", "Eth0", "-eth", "eth-", "vxlan.calico", "ib0:1", "é0", "eth0\n"]
)
def test_non_dns_names_are_encoded(name: str) -> None:
    got = netdev_device_name(name)
    assert got.startswith("net-")
    assert is_dns_label(got)
    # upstream rule: lowercase, unpadded base32 of the name
    assert got == "net-" + base64.b32encode(name.encode()).decode().rstrip("=").lower()
    assert decode_name(got) == name


def test_encoding_fits_a_label_for_the_longest_ifname() -> None:
    assert len(encode_name("_" * 15)) <= 63
    assert is_dns_label(encode_name("_" * 15))


def test_known_value() -> None:
    assert encode_name("mlx5_6") == "net-nvwhqnk7gy"


def test_decode_rejects_other_names() -> None:
    assert decode_name("eth0") is None
    assert decode_name("net-!!") is None


def test_empty_name_refused() -> None:
    with pytest.raises(ValueError):
        netdev_device_name("")
