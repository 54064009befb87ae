"""`make demo` in the test suite: the demo runs non-interactively, its checks pass, nothing is left."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def leftovers(prefix: str) -> set[str]:
    """Links and network namespaces named like the demo's own (its stand-in NICs, node and wire netns)."""
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    links = {f"link {i['ifname']}" for i in json.loads(out or "[]") if i["ifname"].startswith(prefix)}
    try:
        netns = {f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(prefix)}
    except FileNotFoundError:
        netns = set()
    return links | netns


def test_demo_runs_and_all_checks_pass() -> None:
    """`make demo`: the driver as the DaemonSet's pod on containerd; every check passes and nothing
    the demo made is left (what other sessions on the machine make is not the demo's)."""
    if os.geteuid() != 0:
        pytest.skip("the demo needs root (network namespaces, containerd)")
    r = subprocess.run(
        [sys.executable, "-m", "localcluster", "demo", "--non-interactive"],
        capture_output=True,
        text=True,
        timeout=840,
        stdin=subprocess.DEVNULL,
    )
    output = r.stdout + r.stderr
    if "could not be downloaded" in output:
        pytest.skip("containerd's Debian packages could not be downloaded")
    assert r.returncode == 0, output[-6000:]
    assert "[FAIL]" not in output
    assert "checks passed" in output
    for step in (
        "DaemonSet",
        "ResourceSlices",
        "allocat",
        "NodePrepareResources",
        "ip addr",
        "claim status",
        "back on the node",
        "extendedResourceClaimStatus",
        "dranet audit",
    ):
        assert step in output, f"the demo did not show {step!r}"
    named = re.search(r"everything the demo makes on the machine is named (\S+)\*", output)
    assert named, "the demo did not say how its links and netns are named"
    assert leftovers(named.group(1)) == set()
