"""Validators for single values (names, addresses, MACs, integers); each raises ConfigError."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from dranet.config.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
IFNAME_MAX = 15  # IFNAMSIZ - 1
# Names with a meaning of their own in a network namespace: the loopback, the sysctl trees
# net.ipv{4,6}.conf.{all,default}, and the bonding driver's control file in /sys/class/net.
RESERVED_IFNAMES = frozenset({"lo", "all", "default", "bonding_masters"})
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_PREFIX_LEN_RE = re.compile(r"0|[1-9][0-9]{0,2}")
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}")
# ethtool strings are ETH_GSTRING_LEN (32) bytes with the terminating NUL.
ETHTOOL_NAME_MAX = 31
_ETHTOOL_NAME_RE = re.compile(r"[\x21-\x7e]+")


def show(value: Any, limit: int = 64) -> str:
    """A value as an error message may quote it: bounded in length, and safe for integers too
    large for Python to print (str() of one raises ValueError)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if value is None or isinstance(value, str | bytes | int | float):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return f"a {json_type(value)}"


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def want_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {json_type(value)}")
    return value


def want_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, got {json_type(value)}")
    return value


def want_int(value: Any, path: str, lo: int, hi: int) -> int:
    """An integer in lo..hi; JSON numbers with a fraction or exponent and booleans are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"must be an integer, got {json_type(value)}")
    if not lo <= value <= hi:
        raise ConfigError(path, f"must be between {lo} and {hi}, got {show(value)}")
    return value


def ifname(value: Any, path: str) -> str:
    """A Linux interface name the pod can use: 1-15 of letters, digits, '-', '_', '.'."""
    name = want_str(value, path)
    if not name:
        raise ConfigError(path, "must not be empty")
    if len(name) > IFNAME_MAX:
        raise ConfigError(path, f"{name!r} is longer than {IFNAME_MAX} characters (the kernel's limit)")
    if name in (".", ".."):
        raise ConfigError(path, f"{name!r} is not a valid interface name")
    if not _IFNAME_RE.fullmatch(name):
        bad = next(ch for ch in name if not _IFNAME_RE.fullmatch(ch))
        raise ConfigError(
            path, f"{name!r} contains {bad!r}; use only ASCII letters, digits, '-', '_' and '.'"
        )
    if name in RESERVED_IFNAMES:
        raise ConfigError(path, f"{name!r} is reserved in a network namespace; choose another name")
    return name


def _split_cidr(text: str, path: str) -> tuple[str, int]:
    addr, slash, bits = text.partition("/")
    if not slash:
        raise ConfigError(path, f"{text!r} is not in CIDR form; add a prefix length (host: /32 or /128)")
    if not _PREFIX_LEN_RE.fullmatch(bits):
        raise ConfigError(path, f"{text!r} has an invalid prefix length {bits!r}")
    if "%" in addr:
        raise ConfigError(path, f"{text!r}: zone indices (%) are not allowed")
    return addr, int(bits)


def ip(value: Any, path: str) -> IPAddress:
    """A bare IPv4 or IPv6 address (no prefix length, no zone)."""
    text = want_str(value, path)
    if "%" in text:
        raise ConfigError(path, f"{text!r}: zone indices (%) are not allowed")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(path, f"{text!r} is not an IPv4 or IPv6 address") from None


def interface_cidr(value: Any, path: str) -> IPInterface:
    """An address with its prefix length as assigned to an interface, e.g. 10.0.0.2/24."""
    text = want_str(value, path)
    addr, bits = _split_cidr(text, path)
    try:
        iface = ipaddress.ip_interface((ipaddress.ip_address(addr), bits))
    except ValueError:
        raise ConfigError(path, f"{text!r} is not a valid IP address in CIDR form") from None
    if iface.ip.is_unspecified or iface.ip.is_multicast or iface.ip.is_loopback:
        raise ConfigError(
            path, f"{text!r} cannot be assigned to an interface (unspecified, multicast or loopback)"
        )
    if iface.version == 4 and iface.ip == ipaddress.IPv4Address("255.255.255.255"):
        raise ConfigError(path, f"{text!r} is the limited broadcast address")
    return iface


def network_cidr(value: Any, path: str) -> IPNetwork:
    """A network in CIDR form; host bits are cleared (10.0.0.7/24 -> 10.0.0.0/24), as the kernel wants."""
    text = want_str(value, path)
    addr, bits = _split_cidr(text, path)
    try:
        return ipaddress.ip_network((ipaddress.ip_address(addr), bits), strict=False)
    except ValueError:
        raise ConfigError(path, f"{text!r} is not a valid IP network in CIDR form") from None


def mac(value: Any, path: str, *, allow_multicast: bool = False) -> str:
    """A 48-bit MAC address (':' or '-' separated), returned lower case with ':'."""
    text = want_str(value, path)
    if not _MAC_RE.fullmatch(text):
        raise ConfigError(path, f"{text!r} is not a MAC address like 02:00:5e:10:00:01")
    octets = [int(part, 16) for part in re.split("[:-]", text)]
    if not any(octets):
        raise ConfigError(path, f"{text!r} is the all-zero MAC address")
    if octets[0] & 1 and not allow_multicast:
        raise ConfigError(path, f"{text!r} is a multicast or broadcast MAC address; use a unicast one")
    return ":".join(f"{o:02x}" for o in octets)


def ethtool_name(name: Any, path: str) -> str:
    """A feature or private flag name as ethtool prints it: printable ASCII, no spaces, < 32 bytes."""
    if not isinstance(name, str):
        # msgpack keeps byte-string keys as bytes: say so rather than fail on them.
        raise ConfigError(path, f"names must be strings, got {show(name)}")
    if not name:
        raise ConfigError(path, "names must not be empty")
    if len(name) > ETHTOOL_NAME_MAX:
        raise ConfigError(path, f"{name!r} is longer than {ETHTOOL_NAME_MAX} characters")
    if not _ETHTOOL_NAME_RE.fullmatch(name):
        raise ConfigError(path, f"{name!r} must be printable ASCII without spaces, as ethtool shows it")
    return name
