"""Child interfaces of a shared NIC: `interface.type`, `interface.macvlan`, `interface.ipvlan`.

A claim on a shared NIC (allocated with a shareID, KEP-5075 consumable capacity) does not move the
NIC: the worker creates a macvlan or ipvlan child of it directly in the pod's netns, and deletes
the child at release. The JSON names follow upstream dranet (#241: `interface.type` ipvlan with
`ipvlan.mode` and `ipvlan.flag`); `macvlan` is this driver's, with the modes the kernel names.
Pure: decoding and the rules, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dranet.config import values as v
from dranet.config.errors import ConfigError

PASSTHROUGH, MACVLAN, IPVLAN = "passthrough", "macvlan", "ipvlan"
TYPES = (PASSTHROUGH, MACVLAN, IPVLAN)
# The kernel's names (ip-link(8)); the first of each is the default.
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru", "source")
IPVLAN_MODES = ("l2", "l3", "l3s")
IPVLAN_FLAGS = ("bridge", "private", "vepa")
MACVLAN_FIELDS = ("mode",)
IPVLAN_FIELDS = ("mode", "flag")


@dataclass(frozen=True)
class ChildConfig:
    """The child to create: kind macvlan (mode) or ipvlan (mode, flag)."""

    kind: str
    mode: str
    flag: str = ""  # ipvlan only

    def to_dict(self) -> dict[str, Any]:
        """The `interface` fields of this child in upstream's JSON (defaults written out)."""
        block = {"mode": self.mode, **({"flag": self.flag} if self.kind == IPVLAN else {})}
        return {"type": self.kind, self.kind: block}


def _choice(obj: Mapping[str, Any], key: str, path: str, allowed: tuple[str, ...]) -> str:
    if key not in obj or obj[key] == "":
        return allowed[0]
    value = v.want_str(obj[key], f"{path}.{key}")
    if value not in allowed:
        raise ConfigError(f"{path}.{key}", f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _block(obj: Mapping[str, Any], key: str, allowed: tuple[str, ...], path: str) -> Mapping[str, Any]:
    raw = obj.get(key) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}.{key}", f"must be an object, got {v.json_type(raw)}")
    for field in raw:
        if field not in allowed:
            raise ConfigError(f"{path}.{key}.{field}", f"unknown field; allowed: {', '.join(allowed)}")
    return {k: val for k, val in raw.items() if val is not None}


def decode_child(obj: Mapping[str, Any], path: str) -> ChildConfig | None:
    """The child asked by an `interface` object (its type and macvlan/ipvlan blocks), or None for
    passthrough (the NIC itself moves). A block for another type is an error, never ignored."""
    kind = _choice(obj, "type", path, TYPES)
    for block in (MACVLAN, IPVLAN):
        if block in obj and obj[block] is not None and kind != block:
            raise ConfigError(
                f"{path}.{block}", f"applies only with interface.type {block!r} (type is {kind!r})"
            )
    if kind == MACVLAN:
        macvlan = _block(obj, MACVLAN, MACVLAN_FIELDS, path)
        return ChildConfig(MACVLAN, _choice(macvlan, "mode", f"{path}.macvlan", MACVLAN_MODES))
    if kind == IPVLAN:
        ipvlan = _block(obj, IPVLAN, IPVLAN_FIELDS, path)
        where = f"{path}.ipvlan"
        return ChildConfig(
            IPVLAN, _choice(ipvlan, "mode", where, IPVLAN_MODES), _choice(ipvlan, "flag", where, IPVLAN_FLAGS)
        )
    return None


# Interface fields a child cannot take, with the reason (checked on the decoded values).
_NOT_FOR_CHILDREN = {
    "dhcp": "the lease is taken on the host interface before an attach; give interface.addresses",
    "vrf": "not supported on a child interface yet",
    "disableEbpfPrograms": "the programs are the parent's, which stays on the host",
    "gsoMaxSize": "a child takes its parent's GSO/GRO sizes",
    "groMaxSize": "a child takes its parent's GSO/GRO sizes",
    "gsoIPv4MaxSize": "a child takes its parent's GSO/GRO sizes",
    "groIPv4MaxSize": "a child takes its parent's GSO/GRO sizes",
}


def check_child_fields(child: ChildConfig, set_fields: Mapping[str, bool], has_ethtool: bool) -> None:
    """Refuse what a child interface cannot apply (set_fields: interface field -> is set)."""
    for name, reason in _NOT_FOR_CHILDREN.items():
        if set_fields.get(name):
            raise ConfigError(f"interface.{name}", f"not with interface.type {child.kind!r}: {reason}")
    if child.kind == IPVLAN and set_fields.get("hardwareAddr"):
        raise ConfigError(
            "interface.hardwareAddr", "an ipvlan child always has its parent's MAC; remove it or use macvlan"
        )
    if has_ethtool:
        raise ConfigError(
            "ethtool", f"not with interface.type {child.kind!r}: offloads are the parent's, on the host"
        )


def check_child_mtu(mtu: int | None, parent_mtu: int, parent: str) -> None:
    """A child's MTU can never exceed its parent's (the kernel refuses it)."""
    if mtu is not None and parent_mtu and mtu > parent_mtu:
        raise ConfigError(
            "interface.mtu",
            f"{mtu} is above the MTU {parent_mtu} of the shared NIC {parent}; a child interface's MTU "
            f"cannot exceed its parent's: ask for {parent_mtu} or less",
        )
