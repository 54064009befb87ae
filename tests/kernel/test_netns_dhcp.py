"""DHCP in the netns worker against a real dnsmasq serving the far end of a stand-in NIC: the lease
at prepare (host netns, before the move), applied by the attach, renewed in the pod's netns,
released at unprepare; no server: a clear error and the host interface as it was."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dranet.services.netns.dhcp import CLIENT_PATHS, DhcpClient
from dranet.services.netns.testbed import Testbed, ip_json
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusError
from dranet.config import parse_network_config
from dranet.config.lease import Lease, apply_lease
from tests.dnsmasq import Dnsmasq

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(
        not any(Path(p).exists() for p in CLIENT_PATHS), reason="dhclient (isc-dhcp-client) is not installed"
    ),
]


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    return testbed("tnh")


@pytest.fixture
def worker(tb: Testbed, tmp_path: Path) -> Iterator[NetnsWorker]:
    dhcp = DhcpClient(tmp_path, timeout=4.0, max_renew_interval=1.0)
    w = NetnsWorker(tmp_path, host_netns=tb.node_path, dhcp=dhcp)
    w.start(watch_interval=0)
    try:
        yield w
    finally:
        w.close()


def _link(tb: Testbed, name: str, ns: str | None = None) -> dict:
    link = tb.link(name, ns)
    assert link is not None
    return link


def test_lease_attach_renew_release(tb: Testbed, worker: NetnsWorker, tmp_path: Path) -> None:
    nic = tb.add_nic("tnhd0", up=False)
    server = Dnsmasq(tb.wire, tb.peers[nic], tmp_path)
    claim = str(uuid.uuid4())
    try:
        lease = Lease.from_dict(worker.leases.acquire(claim, "nic-d", nic)["lease"])
        assert lease.address.startswith("10.77.0.") and lease.address.endswith("/24")
        assert lease.mtu == 1400 and lease.server == "10.77.0.1" and lease.lease_time == 120
        assert [(r.destination, r.gateway) for r in lease.routes] == [("10.99.0.0/16", "10.77.0.1")]
        ip_only = lease.address.split("/")[0]
        first_expiry = server.leases()[ip_only]
        # Taking the lease configured nothing on the host: link down again, no address.
        assert "UP" not in _link(tb, nic)["flags"] and tb.addresses(nic) == []
        # Asked again (a kubelet retry): the same lease, no new exchange.
        assert worker.leases.acquire(claim, "nic-d", nic)["lease"]["address"] == lease.address

        config = apply_lease({"interface": {"dhcp": True, "name": "net1"}}, lease)
        parse_network_config(config)
        pod = tb.add_netns()
        worker.attach(
            "pod-d",
            f"/run/netns/{pod}",
            [{"device": "nic-d", "ifname": nic, "config": config, "claim_uid": claim}],
        )
        assert tb.addresses("net1", pod) == [lease.address]
        assert _link(tb, "net1", pod)["mtu"] == 1400
        routes = {(r["dst"], r.get("gateway")) for r in ip_json("-4", "route", "show", "dev", "net1", ns=pod)}
        assert ("10.99.0.0/16", "10.77.0.1") in routes

        # Renewed from the pod's netns while attached: the server's expiry moves on.
        deadline = time.monotonic() + 15
        while server.leases().get(ip_only, 0) <= first_expiry and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.leases().get(ip_only, 0) > first_expiry, "the lease was not renewed"
        assert tb.addresses("net1", pod) == [lease.address]

        worker.detach("pod-d")
        assert worker.leases.release(claim, "nic-d") == {"released": True}
        assert ip_only not in server.leases_after_release()
        # The release's temporary address is gone again, and the link is down as it was.
        assert tb.addresses(nic) == [] and "UP" not in _link(tb, nic)["flags"]
        assert worker.leases.release(claim, "nic-d") == {"released": False}
        assert not list((tmp_path / "netns" / "dhcp").glob(f"{claim}*"))
    finally:
        server.stop()


def test_release_works_from_our_record_when_dhclients_lease_file_is_missing(
    tb: Testbed, worker: NetnsWorker, tmp_path: Path
) -> None:
    # dhclient writes its lease file after it has run the hook, and not at all within 15 s of its
    # last write (MIN_LEASE_WRITE): the worker ends it once the hook has reported, so the file may
    # never hold the lease. Renew and release must work from the worker's own record.
    nic = tb.add_nic("tnhf0", up=False)
    server = Dnsmasq(tb.wire, tb.peers[nic], tmp_path)
    claim = str(uuid.uuid4())
    try:
        lease = worker.leases.acquire(claim, "nic-f", nic)["lease"]
        (lease_file,) = (tmp_path / "netns" / "dhcp").glob(f"{claim}*.lease")
        lease_file.unlink()
        assert worker.leases.release(claim, "nic-f") == {"released": True}
        assert lease["address"].split("/")[0] not in server.leases_after_release()
    finally:
        server.stop()


# The worker's process as the service runs it: its seccomp filter loaded first (inherited by nsenter,
# dhclient and the hook script), then a lease taken and given back.
UNDER_FILTER = r"""
import json, sys
from dranet import syscalls
from dranet.services.netns.dhcp import DhcpClient
from dranet.services.netns.worker import NetnsWorker
syscalls.install("netns")
state, node, nic, claim = sys.argv[1:5]
w = NetnsWorker(state, host_netns=node, dhcp=DhcpClient(state, timeout=4.0))
try:
    lease = w.leases.acquire(claim, "nic-s", nic)["lease"]
    print(json.dumps({"lease": lease, "release": w.leases.release(claim, "nic-s")}))
finally:
    w.close()
"""


def test_dhclient_runs_under_the_workers_seccomp_filter(tb: Testbed, tmp_path: Path) -> None:
    pytest.importorskip("seccomp", reason="python3-seccomp is not linked into the venv (make seccomp)")
    nic = tb.add_nic("tnhs0", up=False)
    server = Dnsmasq(tb.wire, tb.peers[nic], tmp_path)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", UNDER_FILTER, str(tmp_path / "w"), tb.node_path, nic, str(uuid.uuid4())],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["lease"]["address"].startswith("10.77.0.") and out["release"] == {"released": True}
        assert server.leases_after_release() == {}
    finally:
        server.stop()


def test_no_server_is_a_clear_error_and_leaves_nothing(
    tb: Testbed, worker: NetnsWorker, tmp_path: Path
) -> None:
    nic = tb.add_nic("tnhn0", up=False)
    claim = str(uuid.uuid4())
    with pytest.raises(BusError) as err:
        worker.leases.acquire(claim, "nic-n", nic)
    assert err.value.code == "unavailable"
    assert "no DHCP server answered on tnhn0" in err.value.message
    assert "UP" not in _link(tb, nic)["flags"] and tb.addresses(nic) == []
    assert not list((tmp_path / "netns" / "dhcp").glob(f"{claim}*"))
    assert worker.leases.release(claim, "nic-n") == {"released": False}


def test_refuses_what_it_may_not_touch(tb: Testbed, tmp_path: Path) -> None:
    tb.add_nic("tnhx0")
    w = NetnsWorker(tmp_path, host_netns=tb.node_path, allowed={"other"}, dhcp=DhcpClient(tmp_path))
    try:
        with pytest.raises(BusError) as err:
            w.leases.acquire(str(uuid.uuid4()), "nic-x", "tnhx0")
        assert err.value.code == "not_allowed"
        with pytest.raises(BusError) as err:
            w.leases.acquire("../x", "nic-x", "tnhx0")
        assert err.value.code == "invalid_config" and "claim_uid" in err.value.message
    finally:
        w.close()
    plain = NetnsWorker(tmp_path / "b", host_netns=tb.node_path)
    try:
        with pytest.raises(BusError) as err:
            plain.leases.acquire(str(uuid.uuid4()), "nic-x", "tnhx0")
        assert err.value.code == "unavailable" and "--dhcp" in err.value.message
    finally:
        plain.close()
