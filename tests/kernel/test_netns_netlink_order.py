"""Regression: the worker's link parser must see the IPv4 GSO/GRO sizes even when pyroute2 parsed a
link before it (pyroute2 caches compiled attribute maps per class, and a subclass inherited them)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for netns")]

SCRIPT = """
import os
from pyroute2 import IPRoute
with IPRoute() as ip:
    ip.get_links()  # compiles pyroute2's own ifinfmsg first
from dranet.services.netns.netlink import Rtnl
fd = os.open("/proc/self/ns/net", os.O_RDONLY)
with Rtnl.open(fd) as nl:
    link = nl.get_link(name="lo")
print(link.gso_ipv4_max_size, link.gro_ipv4_max_size)
"""


def test_ipv4_sizes_parsed_after_pyroute2_compiled_its_own_map() -> None:
    ns = f"tnwo{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    assert out != ["None", "None"] and all(v.isdigit() for v in out), out
