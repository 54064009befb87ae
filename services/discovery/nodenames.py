"""The node names this host published slices under: a small file in the state directory.

A host that comes back under another node name (renamed, re-joined to the cluster) would leave its
slices naming the old name behind while the old Node object lives (they are owned by it, so only
its deletion removes them): the scheduler would keep allocating NICs of a node that no longer
answers to that name. Discovery records every name it publishes under, and deletes this driver's
slices that name any other recorded name. The record is on the host's own disk (the state directory
is a hostPath), not in the API: a machine ID from the Node would also match hosts cloned from one
image, which would delete each other's slices.
"""

from __future__ import annotations

import json
from pathlib import Path

from dranet.atomic import write_atomic


class NodeNames:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[str]:
        """The recorded names; [] when there is no record. Raises OSError/ValueError when unreadable."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        names = data.get("node_names") if isinstance(data, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{self.path}: expected {{'node_names': [<name>...]}}")
        return list(names)

    def save(self, names: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        write_atomic(self.path, json.dumps({"node_names": names}).encode(), 0o640)

    def remember(self, current: str) -> list[str]:
        """Record `current` (before anything is published under it); returns the other names."""
        names = self.load()
        if current not in names:
            self.save([*names, current])
        return [n for n in names if n != current]
