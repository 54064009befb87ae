"""Each unprivileged service, played by a test under its own uid, tries what it must not against
the real netns worker (issue 13, item 7): moves, bus ops outside its role, reads of the worker's
state and memory. Every attempt is refused, and the pods' NICs stay as they were.

The shape is the DaemonSet's: the worker is root with NET_ADMIN+SYS_ADMIN and knows the services'
uids (--service-uids discovery=65101,dra=65102); nri is uid 0 without any capability, discovery and
dra are their uids. dra (played legitimately first) grants pod A its NIC; nri attaches it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dranet.services.netns.testbed import Testbed
from hostile import act, call, read

from dranet.bus import BusClient, BusError

pytestmark = [pytest.mark.kernel]

DISCOVERY, DRA, NRI = 65101, 65102, 0
CONFIG = {"interface": {"name": "eth0", "addresses": ["10.77.0.2/24"]}}


class Node:
    def __init__(self) -> None:
        self.tb = Testbed("tsh")
        # pytest's tmp_path is root's 0700: the peers of other uids could not reach the bus in it
        self.dir = Path(tempfile.mkdtemp(prefix="tsh-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.run, self.state = self.dir / "run", self.dir / "state"
        self.tb.add_nic("tshs0", addresses=("10.77.0.9/24",))
        self.tb.add_nic("tshs1")
        self.pod_a, self.pod_b = self.tb.add_netns(), self.tb.add_netns()
        self.log = open(self.dir / "netns.log", "w")
        self.proc = subprocess.Popen(
            [
                *("ip", "netns", "exec", self.tb.node, sys.executable, "-m", "dranet", "netns"),
                *("--runtime-dir", str(self.run), "--state-dir", str(self.state)),
                *("--allowed-interfaces", "tshs.*", f"--service-uids=discovery={DISCOVERY},dra={DRA}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        client = BusClient(self.run, "netns")
        try:
            for _ in range(150):
                try:
                    client.call("ping", timeout=0.2)
                    break
                except BusError:
                    assert self.proc.poll() is None, (self.dir / "netns.log").read_text()
        finally:
            client.close()

    def ns(self, pod: str) -> str:
        return f"/run/netns/{pod}"

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()
        self.tb.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and peers of other uids")
    n = Node()
    try:
        s0 = {"device": "s0", "ifname": "tshs0", "config": CONFIG}
        grant = {"claims": [{"uid": "claim-a", "pod_uids": ["pod-a"], "devices": [s0]}]}
        # dra grants pod A its NIC, nri attaches it: the legitimate path, as the services do it.
        assert act(n.run, "dra (legitimate)", DRA, [("grant pod A's NIC", call("grant", **grant))]) == ["ok"]
        attach = call("attach", pod_uid="pod-a", netns=n.ns(n.pod_a), devices=[s0])
        assert act(n.run, "nri (legitimate)", NRI, [("attach pod A's NIC", attach)]) == ["ok"]
        yield n
    finally:
        n.close()


def pods_as_they_were(n: Node) -> None:
    assert n.tb.addresses("eth0", ns=n.pod_a) == ["10.77.0.2/24"]  # pod A keeps its NIC, as configured
    assert n.tb.link("eth0", ns=n.pod_b) is None and n.tb.link("tshs1", ns=n.pod_b) is None
    assert n.tb.link("tshs1") is not None  # the NIC prepared for no pod is on the host
    assert n.tb.link("tshs0") is None  # pod A's is not


def targets(n: Node) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"pod_uid": "pod-a", "netns": n.ns(n.pod_a)}, {"pod_uid": "pod-b", "netns": n.ns(n.pod_b)}


def secrets_of(n: Node) -> list[tuple[str, dict[str, Any]]]:
    """Reads of what only the worker may see: its grants and journal, its memory and environment."""
    pid = n.proc.pid
    return [
        ("read the worker's grants", read(n.state / "netns" / "grants.json")),
        ("read the worker's environment", read(f"/proc/{pid}/environ")),
        ("read the worker's memory", read(f"/proc/{pid}/mem")),
        ("read through the worker's root", read(f"/proc/{pid}/root/etc/hostname")),
    ]


def test_hostile_nri(node: Node) -> None:
    n = node
    s0 = {"device": "s0", "ifname": "tshs0", "config": CONFIG}
    s1 = {"device": "s1", "ifname": "tshs1", "config": {}}
    into_a, into_b = targets(n)
    forged = {"claims": [{"uid": "claim-x", "pod_uids": ["pod-b"], "devices": [s1]}]}
    other_config = {"interface": {"name": "eth0", "mtu": 1280}}
    outcomes = act(
        n.run,
        "nri",
        NRI,
        [
            ("move pod A's NIC into pod B", call("attach", **into_b, devices=[s0])),
            ("move a NIC prepared for no pod into pod B", call("attach", **into_b, devices=[s1])),
            (
                "re-attach pod A's NIC with another config",
                call("attach", **into_a, devices=[{**s0, "config": other_config}]),
            ),
            ("forge a grant from dra", call("grant", **forged)),
            ("revoke pod A's grant", call("revoke", claim_uids=["claim-a"])),
            ("detach pod A's NIC as pod B's", call("detach", pod_uid="pod-b", devices=["s0"])),
            ("forget pod A's attachment (operator's release)", call("release", pod_uid="pod-a", device="s0")),
            # The worker's files: in the DaemonSet another container's (its own mounts); here, the
            # kernel's answer for what uid 0 without capabilities reaches.
            *secrets_of(n)[1:],
        ],
    )
    # release is the operator's where the worker runs (uid 0 with CAP_NET_ADMIN): not nri's
    assert outcomes[:7] == ["not_allowed"] * 7, outcomes
    assert all(o in ("EACCES", "EPERM") for o in outcomes[7:]), outcomes
    pods_as_they_were(n)


def test_hostile_discovery(node: Node) -> None:
    n = node
    s1 = {"device": "s1", "ifname": "tshs1", "config": {}}
    _into_a, into_b = targets(n)
    grant = {"claims": [{"uid": "claim-y", "pod_uids": ["pod-b"], "devices": [s1]}]}
    outcomes = act(
        n.run,
        "discovery",
        DISCOVERY,
        [
            ("attach a NIC to pod B", call("attach", **into_b, devices=[s1])),
            ("detach pod A's NICs", call("detach", pod_uid="pod-a")),
            ("grant pod B a NIC", call("grant", **grant)),
            ("release pod A's attachment", call("release", pod_uid="pod-a", device="s0")),
            ("probe pod netns paths", call("netns_alive", netns=[n.ns(n.pod_a)])),
            ("ask which NICs a netns holds", call("attached_in", netns_id="0:0", devices=["s0"])),
            *secrets_of(n),
        ],
    )
    assert outcomes[:6] == ["not_allowed"] * 6, outcomes
    assert all(o in ("EACCES", "EPERM", "ENOENT") and o != "ok" for o in outcomes[6:]), outcomes
    pods_as_they_were(n)


def test_hostile_dra(node: Node) -> None:
    """dra is the authority on grants (its role); it still cannot move anything itself."""
    n = node
    s1 = {"device": "s1", "ifname": "tshs1", "config": {}}
    _into_a, into_b = targets(n)
    outcomes = act(
        n.run,
        "dra",
        DRA,
        [
            ("attach a NIC to pod B itself", call("attach", **into_b, devices=[s1])),
            ("release pod A's attachment", call("release", pod_uid="pod-a", device="s0")),
            ("probe pod netns paths", call("netns_alive", netns=[n.ns(n.pod_b)])),
            (
                "detach a NIC pod B neither holds nor was granted",
                call("detach", pod_uid="pod-b", devices=["s0"]),
            ),
            *secrets_of(n),
        ],
    )
    assert outcomes[:4] == ["not_allowed"] * 4, outcomes
    assert all(o != "ok" for o in outcomes[4:]), outcomes
    pods_as_they_were(n)
