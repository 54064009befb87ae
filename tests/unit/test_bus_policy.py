"""Bus peers are known by the kernel (SO_PEERCRED through libzmq's Peer-Address) and each may call
only its role's ops (issue 13, item 2): pure policy, then a real server and callers of real uids."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dranet.bus import BusClient, BusServer
from dranet.bus.messages import OPS
from dranet.bus.policy import OPERATOR, ROLES, Peer, PeerPolicy, parse_peer, parse_service_uids

DISCOVERY, DRA = 65101, 65102
POLICY = PeerPolicy({"discovery": DISCOVERY, "dra": DRA})


def test_every_declared_op_has_its_roles() -> None:
    assert set(ROLES) == set(OPS)


def test_peer_address_and_flags_parse() -> None:
    assert parse_peer("localhost:65102:0:4242") == Peer(65102, 0, 4242)
    assert parse_peer("127.0.0.1") is None and parse_peer("") is None and parse_peer(None) is None
    assert parse_service_uids("discovery=1, dra=2") == {"discovery": 1, "dra": 2}
    with pytest.raises(ValueError):
        parse_service_uids("kubelet=1")


def test_roles_per_uid() -> None:
    assert POLICY.roles(DRA) == {"dra"}
    assert POLICY.roles(0) == {"nri", "netns", OPERATOR}
    assert POLICY.allows("grant", Peer(DRA, 0, 1)) and not POLICY.allows("grant", Peer(0, 0, 1))
    assert POLICY.allows("attach", Peer(0, 0, 1)) and not POLICY.allows("attach", Peer(DRA, 0, 1))
    assert not POLICY.allows("attach", None)  # no credentials: only the open ops
    for op in ("dhcp_acquire", "dhcp_release"):  # leases are dra's: not nri's (uid 0), not discovery's
        assert POLICY.allows(op, Peer(DRA, 0, 1))
        assert not POLICY.allows(op, Peer(0, 0, 1)) and not POLICY.allows(op, Peer(DISCOVERY, 0, 1))
    assert POLICY.allows("ping", None)
    assert PeerPolicy({}).shared() == {0: ["discovery", "dra", "nri", "netns"]}
    assert POLICY.shared() == {0: ["nri", "netns"]}


# Imports first: the interpreter's files may not be readable by the uid it switches to.
CALLER = r"""
import json, os, sys
from dranet.bus import BusClient, BusError
client = BusClient(sys.argv[1], "netns", timeout=3)
os.setgroups([]); os.setresgid(0, 0, 0); uid = int(sys.argv[2]); os.setresuid(uid, uid, uid)
out = {}
for op, body in json.loads(sys.argv[3]):
    try:
        client.call(op, body); out[op] = "ok"
    except BusError as e:
        out[op] = e.code
client.close()
print(json.dumps(out))
"""


def call_as(runtime_dir: Path, uid: int, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    r = subprocess.run(
        [sys.executable, "-c", CALLER, str(runtime_dir), str(uid), json.dumps(calls)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


@pytest.fixture
def server() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to play callers of other uids")
    # pytest's tmp_path is root's 0700: the callers of other uids could not reach the bus in it.
    tmp_path = Path(tempfile.mkdtemp(prefix="tbp-", dir="/tmp"))
    tmp_path.chmod(0o755)
    handlers = {
        "grant": lambda body, ctx: {"granted": len(body["claims"])},
        "attach": lambda body, ctx: {"attachments": []},
        "ping": lambda body, ctx: {
            "service": "netns", "pid": 1, "uid": 0, "version": "x", "uptime_s": 0.0,
            "healthy": True, "ready": True, "details": {},
        },
    }  # fmt: skip
    srv = BusServer(tmp_path / "run", "netns", handlers, policy=POLICY)
    srv.start()
    try:
        yield tmp_path / "run"
    finally:
        srv.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


GRANT = ("grant", {"claims": []})
ATTACH = ("attach", {"pod_uid": "p", "netns": "/run/netns/x", "devices": []})


def test_the_server_refuses_ops_outside_the_callers_role(server: Path) -> None:
    assert call_as(server, DRA, [GRANT, ATTACH, ("ping", {})]) == {
        "grant": "ok",
        "attach": "not_allowed",
        "ping": "ok",
    }
    assert call_as(server, DISCOVERY, [GRANT, ATTACH]) == {"grant": "not_allowed", "attach": "not_allowed"}
    assert call_as(server, 0, [GRANT, ATTACH]) == {"grant": "not_allowed", "attach": "ok"}
    # An unknown uid (someone given the bus group) is nobody: open ops only.
    assert call_as(server, 4242, [GRANT, ATTACH, ("ping", {})]) == {
        "grant": "not_allowed",
        "attach": "not_allowed",
        "ping": "ok",
    }
    client = BusClient(server, "netns", timeout=3)  # this test process: root
    try:
        assert client.call("attach", dict(ATTACH[1])) == {"attachments": []}
    finally:
        client.close()


def test_reconnect_drops_the_connections_made_before(server: Path) -> None:
    """After a switch of uid a service reconnects: the server knows callers by their credentials
    at connect time, so an old connection would still speak as root."""
    client = BusClient(server, "netns", timeout=3)
    try:
        client.call("ping")
        assert client.open_sockets() == 1
        client.reconnect()
        assert client.open_sockets() == 0
        client.call("ping")  # a new connection
        assert client.open_sockets() == 1
    finally:
        client.close()
