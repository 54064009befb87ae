"""Device names, the same rules as upstream dranet (pure).

A device name must be a DNS label (RFC 1123: lowercase alphanumerics and '-', starting and ending
with an alphanumeric, at most 63 characters) and unique in the pool.
- PCI devices are named by address, which survives renames and moves into pods:
  "0000:8a:00.0" -> "pci-0000-8a-00-0".
- Other devices are named by interface name when it already is a DNS label ("eth1"), otherwise by
  "net-" + the lowercase, unpadded base32 of the name ("mlx5_6", "flannel.1", "Eth0"). Interface
  names are at most 15 bytes, so the encoded form is at most 4 + 24 characters.
"""

from __future__ import annotations

import base64
import re

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_PCI_ADDRESS = re.compile(r"([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")
MAX_LABEL = 63


def is_dns_label(name: str) -> bool:
    return len(name) <= MAX_LABEL and bool(_DNS_LABEL.fullmatch(name))


def is_pci_address(address: str) -> bool:
    return bool(_PCI_ADDRESS.fullmatch(address))


def pci_device_name(address: str) -> str:
    """ "0000:8a:00.0" -> "pci-0000-8a-00-0". Raises ValueError for something that is not a BDF."""
    if not is_pci_address(address):
        raise ValueError(f"{address!r} is not a PCI address (domain:bus:device.function)")
    return "pci-" + address.lower().replace(":", "-").replace(".", "-")


def encode_name(name: str) -> str:
    """ "net-" + lowercase unpadded base32 of the name's UTF-8 bytes."""
    return "net-" + base64.b32encode(name.encode()).decode().rstrip("=").lower()


def netdev_device_name(ifname: str) -> str:
    """The interface name when it is a DNS label, else its "net-" encoding."""
    if not ifname:
        raise ValueError("an interface name cannot be empty")
    return ifname if is_dns_label(ifname) else encode_name(ifname)


def decode_name(device_name: str) -> str | None:
    """The interface name behind a "net-" encoded device name, or None if it is not one."""
    if not device_name.startswith("net-"):
        return None
    body = device_name[4:].upper()
    try:
        return base64.b32decode(body + "=" * (-len(body) % 8)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
