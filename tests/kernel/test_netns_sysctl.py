"""Per-device IPv4 settings over netlink, and a read-only /proc/sys (as containerd mounts it in a
non-privileged container): IPv4 settings still apply; IPv6 forwarding and VRF are refused with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from dranet.services.netns.netlink import (
    IPV4_DEVCONF_ARP_ANNOUNCE,
    IPV4_DEVCONF_ARP_IGNORE,
    IPV4_DEVCONF_FORWARDING,
    Rtnl,
)
from dranet.services.netns.testbed import Testbed, ip

pytestmark = pytest.mark.kernel


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    bed = testbed("tns")
    bed.add_nic("tnws0", addresses=("10.1.0.2/24",))
    bed.add_nic("tnws1", addresses=("10.2.0.2/24",))
    return bed


def conf(ns: str, ifname: str, *keys: str) -> list[str]:
    """Read /proc/sys/net/<key> for ifname from inside netns ns."""
    paths = [f"/proc/sys/net/{k.format(ifname)}" for k in keys]
    return ip("netns", "exec", ns, "cat", *paths).split()


V4 = ("ipv4/conf/{}/arp_ignore", "ipv4/conf/{}/arp_announce", "ipv4/conf/{}/forwarding")


def test_set_ipv4_conf_over_netlink(tb: Testbed) -> None:
    pod = tb.add_netns()
    ip("link", "set", "tnws0", "netns", pod, ns=tb.node)
    fd = os.open(f"/run/netns/{pod}", os.O_RDONLY)
    try:
        with Rtnl.open(fd) as nl:
            link = nl.get_link(name="tnws0")
            assert link is not None
            assert conf(pod, "tnws0", *V4) == ["0", "0", "0"]
            nl.set_ipv4_conf(
                link.index,
                {IPV4_DEVCONF_ARP_IGNORE: 1, IPV4_DEVCONF_ARP_ANNOUNCE: 2, IPV4_DEVCONF_FORWARDING: 1},
            )
            assert conf(pod, "tnws0", *V4) == ["1", "2", "1"]
            nl.set_ipv4_conf(link.index, {IPV4_DEVCONF_ARP_IGNORE: 8, IPV4_DEVCONF_FORWARDING: 0})
            assert conf(pod, "tnws0", *V4) == ["8", "2", "0"]
    finally:
        os.close(fd)


# A worker in its own mount namespace where /proc/sys is a read-only bind mount, like a
# non-privileged container's. It attaches what argv[4] lists and prints each outcome as JSON.
CHILD = textwrap.dedent(
    """
    import errno, json, sys
    from dranet.bus import BusError
    from dranet.services.netns.worker import NetnsWorker
    state, node, pod, requests = sys.argv[1:5]
    try:
        open("/proc/sys/net/ipv4/conf/all/arp_ignore", "w").write("0")
        ro = False
    except OSError as exc:
        ro = exc.errno == errno.EROFS
    print(json.dumps({"read_only": ro}), flush=True)
    w = NetnsWorker(state, host_netns=node)
    for uid, devices in json.loads(requests):
        try:
            w.attach(uid, pod, devices)
            print(json.dumps({"ok": uid}), flush=True)
        except BusError as err:
            print(json.dumps({"error": err.code, "message": err.message}), flush=True)
    w.close()
    """
)


def test_read_only_proc_sys(tb: Testbed, tmp_path: Path) -> None:
    pod = tb.add_netns()
    before = (tb.link("tnws1"), tb.addresses("tnws1"))
    requests = [
        (
            "pod-v4",
            [
                {
                    "device": "s0",
                    "ifname": "tnws0",
                    "config": {"interface": {"name": "net0", "arpIgnore": 1, "arpAnnounce": 2}},
                }
            ],
        ),
        (
            "pod-v6",
            [
                {
                    "device": "s1",
                    "ifname": "tnws1",
                    "config": {"interface": {"name": "net1", "forwarding": True}},
                }
            ],
        ),
        (
            "pod-vrf",
            [
                {
                    "device": "s1",
                    "ifname": "tnws1",
                    "config": {"interface": {"name": "net1", "vrf": {"name": "blue", "table": 100}}},
                }
            ],
        ),
    ]
    script = (
        "mount --make-rprivate / && mount --bind /proc/sys /proc/sys && "
        'mount -o remount,bind,ro /proc/sys && exec "$0" "$@"'
    )
    res = subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            script,
            sys.executable,
            "-c",
            CHILD,
            str(tmp_path),
            tb.node_path,
            f"/run/netns/{pod}",
            json.dumps(requests),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert res.returncode == 0 and len(lines) == 4, res.stderr
    assert lines[0] == {"read_only": True}, "the child's /proc/sys should be read-only"
    # IPv4 settings went over netlink: in place in the pod netns.
    assert lines[1] == {"ok": "pod-v4"}
    assert conf(pod, "net0", "ipv4/conf/{}/arp_ignore", "ipv4/conf/{}/arp_announce") == ["1", "2"]
    # IPv6 forwarding needs /proc/sys: refused before any change, saying why and what to do.
    assert lines[2]["error"] == "not_allowed"
    assert "read-only" in lines[2]["message"] and "troubleshooting" in lines[2]["message"]
    # A VRF needs the pod netns's l3mdev_accept sysctls (no netlink setter either): refused up
    # front, never half-way through the attach (this kernel has no VRF: the refusal comes first).
    assert lines[3]["error"] == "not_allowed"
    assert "interface.vrf" in lines[3]["message"] and "read-only" in lines[3]["message"]
    assert (tb.link("tnws1"), tb.addresses("tnws1")) == before
    assert tb.link("net1", ns=pod) is None and tb.link("blue", ns=pod) is None
