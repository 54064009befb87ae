"""A claim's `ethtool` names against one device's feature table (pure: no I/O).

A feature may be named as the kernel names it (`rx-gro`, `tx-tcp-segmentation`), or by one of
ethtool's legacy short (`-K`) or long (`-k`) names, which upstream dranet accepts too. A legacy
name stands for every kernel feature its pattern matches on that device: `tso` and
`tcp-segmentation-offload` turn all of `tx-tcp*-segmentation` on or off (on 6.18 that includes
`tx-tcp-accecn-segmentation`). dra resolves the names at prepare with the table the netns worker
reads; the worker resolves them again at attach against the table of that moment.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dranet.config.errors import ConfigError
from dranet.config.model import EthtoolConfig

# (short name, long name, kernel feature pattern): ethtool's table of legacy offload flags.
LEGACY_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("rx", "rx-checksumming", "rx-checksum"),
    ("tx", "tx-checksumming", "tx-checksum-*"),
    ("sg", "scatter-gather", "tx-scatter-gather*"),
    ("tso", "tcp-segmentation-offload", "tx-tcp*-segmentation"),
    ("ufo", "udp-fragmentation-offload", "tx-udp-fragmentation"),
    ("gso", "generic-segmentation-offload", "tx-generic-segmentation"),
    ("gro", "generic-receive-offload", "rx-gro"),
    ("lro", "large-receive-offload", "rx-lro"),
    ("rxvlan", "rx-vlan-offload", "rx-vlan-hw-parse"),
    ("txvlan", "tx-vlan-offload", "tx-vlan-hw-insert"),
    ("ntuple", "ntuple-filters", "rx-ntuple-filter"),
    ("rxhash", "receive-hashing", "rx-hashing"),
)
LEGACY_PATTERNS: Mapping[str, str] = {
    name: pattern for short, long, pattern in LEGACY_FEATURES for name in (short, long)
}


@dataclass(frozen=True)
class FeatureTable:
    """One device's ethtool state: each feature's value, the fixed ones, each private flag's value."""

    features: Mapping[str, bool] = field(default_factory=dict)
    fixed: frozenset[str] = frozenset()  # features the driver cannot change
    private_flags: Mapping[str, bool] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "features": dict(self.features),
            "fixed": sorted(self.fixed),
            "private_flags": dict(self.private_flags),
        }

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> FeatureTable:
        return cls(
            features={str(k): bool(v) for k, v in (body.get("features") or {}).items()},
            fixed=frozenset(str(n) for n in body.get("fixed") or ()),
            private_flags={str(k): bool(v) for k, v in (body.get("private_flags") or {}).items()},
        )


def feature_members(name: str, features: Mapping[str, bool]) -> list[str]:
    """The device's kernel features a claim's name stands for: itself when the device has a
    feature of that name, else every match of its legacy pattern (sorted); [] when none."""
    if name in features:
        return [name]
    pattern = LEGACY_PATTERNS.get(name)
    if pattern is None:
        return []
    return sorted(n for n in features if fnmatch.fnmatchcase(n, pattern))


def resolve_features(wanted: Mapping[str, bool], table: FeatureTable) -> dict[str, bool]:
    """The kernel features to change for a claim's `ethtool.features`: every member of each name
    that is not already as asked. ConfigError naming the field for a name the device lacks, or a
    member its driver cannot change; a fixed feature already at the asked value is a no-op."""
    changes: dict[str, bool] = {}
    for key, on in wanted.items():
        path = f"ethtool.features.{key}"
        members = feature_members(key, table.features)
        if not members:
            hint = "" if key in LEGACY_PATTERNS else " (nor one of ethtool's short or long names)"
            raise ConfigError(
                path,
                f"the device has no such feature{hint}; `ethtool -k` on the node lists the ones it has",
            )
        differ = [n for n in members if table.features[n] != on]
        fixed = [n for n in differ if n in table.fixed]
        if fixed:
            state = "on" if table.features[fixed[0]] else "off"
            raise ConfigError(
                path,
                f"{', '.join(fixed)} cannot be changed on this device (fixed {state} by its driver); "
                "remove it from the claim",
            )
        changes.update({n: on for n in differ})
    return changes


def check_private_flags(wanted: Mapping[str, bool], table: FeatureTable) -> None:
    """ConfigError for a private flag the device does not have."""
    for key in wanted:
        if key not in table.private_flags:
            raise ConfigError(
                f"ethtool.privateFlags.{key}",
                "the device has no such private flag; `ethtool --show-priv-flags` on the node lists them",
            )


def check_ethtool(cfg: EthtoolConfig | None, table: FeatureTable) -> None:
    """Every name of a claim's `ethtool` section is one the device has and can set as asked."""
    if cfg is not None:
        resolve_features(cfg.features, table)
        check_private_flags(cfg.private_flags, table)
