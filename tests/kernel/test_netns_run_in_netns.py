"""netlink.run_in_netns: a socket made there lands in the asked netns, and the calling thread is
back in its own netns afterwards, whether the call worked or not (a thread left in a pod's netns
would do its later work there, and keep a gone pod's netns alive)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from dranet.services.netns.netlink import NetlinkError, Rtnl, run_in_netns
from dranet.services.netns.testbed import Testbed


def _here() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def _fail() -> None:
    raise OSError(5, "boom")


def test_run_in_netns_returns_home_after_each_call(testbed: Callable[[str], Testbed]) -> None:
    tb = testbed("tnj")
    pod = tb.add_netns()
    fd = os.open(f"/run/netns/{pod}", os.O_RDONLY | os.O_CLOEXEC)
    home = _here()
    try:
        tb.add_nic("tnhx")  # in the node netns, not the pod's
        assert run_in_netns(fd, _here) != home
        with Rtnl.open(fd) as rtnl:
            assert [link.name for link in rtnl.links()] == ["lo"]  # the socket is in the pod netns
        assert _here() == home
        with pytest.raises(OSError, match="boom"):
            run_in_netns(fd, _fail)
        assert _here() == home
        with pytest.raises(NetlinkError):
            run_in_netns(-1, _here)  # setns refused: nothing ran, still home
        assert _here() == home
    finally:
        os.close(fd)
