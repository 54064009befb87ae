"""A hostile peer: a process of a service's uid that tries calls and reads, and the tally of what it
tried and what the system refused (tests/security prints it at the end of the run)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Imports first: the interpreter's files may not be readable by the uid it switches to. Each action
# is {"call": op, "body": {...}} (answer: "ok" or the bus error code) or {"read": path} (answer:
# "ok" or the errno name).
PEER = r"""
import errno, json, os, sys
from dranet.bus import BusClient, BusError
from dranet.capabilities import drop_capabilities
runtime_dir, uid, actions = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
client = BusClient(runtime_dir, "netns", timeout=5)
os.setgroups([]); os.setresgid(0, 0, 0); os.setresuid(uid, uid, uid)
drop_capabilities()  # as the service it plays: no capability (uid 0 keeps none either)
out = []
for a in actions:
    if "call" in a:
        try:
            client.call(a["call"], a["body"]); out.append("ok")
        except BusError as e:
            out.append(e.code)
    else:
        try:
            open(a["read"], "rb").read(1); out.append("ok")
        except OSError as e:
            out.append(errno.errorcode.get(e.errno, str(e.errno)))
client.close()
print(json.dumps(out))
"""


@dataclass
class Attempt:
    role: str
    what: str
    outcome: str

    @property
    def refused(self) -> bool:
        return self.outcome != "ok"


@dataclass
class Tally:
    attempts: list[Attempt] = field(default_factory=list)

    def lines(self) -> list[str]:
        refused = sum(a.refused for a in self.attempts)
        out = [f"hostile peers: {len(self.attempts)} attempts, {refused} refused"]
        out += [
            f"  {'REFUSED' if a.refused else 'ALLOWED'} {a.role}: {a.what} -> {a.outcome}"
            for a in self.attempts
        ]
        return out


TALLY = Tally()


def call(op: str, **body: Any) -> dict[str, Any]:
    return {"call": op, "body": body}


def read(path: str | Path) -> dict[str, Any]:
    return {"read": str(path)}


def act(runtime_dir: Path, role: str, uid: int, actions: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Run (what, action) pairs as `role` with `uid`; record and return each outcome."""
    r = subprocess.run(
        [sys.executable, "-c", PEER, str(runtime_dir), str(uid), json.dumps([a for _, a in actions])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    outcomes = list(json.loads(r.stdout))
    TALLY.attempts += [Attempt(role, what, o) for (what, _), o in zip(actions, outcomes, strict=True)]
    return outcomes
