"""Rolling updates (DaemonSet maxSurge > 0): two dra instances side by side on one node, as the
kubelet (1.33+) runs them: each registers under a socket name with its pod UID, both serve the
kubelet, their prepare and unprepare calls share the checkpoint under a file lock, and one bus
owner per service (dranet.instance) hands over when the old instance exits. The kubelet side is the
kubelet stand-in (newest registration wins) and the kubelet's official protos."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dranet.services.dra.checkpoint import Checkpoint, decode
from dranet.services.dra.driver import NOT_LOADED, ClaimRef, Driver
from dranet.services.dra.main import DraService
from dranet.services.dra.model import PreparedClaim, PreparedDevice

from dranet.instance import OwnerLock, standing_by
from dranet.service import ServiceHost
from dranet.status import all_live, all_ready, query, state_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from dra_kubelet import Harness, device, service_args, wait_for

from localcluster.nodeagent import NodeAgent

DEVICES = [f"eth{i}" for i in range(1, 13)]


def start_instance(h: Harness, uid: str) -> tuple[ServiceHost, DraService]:
    args = service_args(h.root, rolling_update_uid=uid)
    host = ServiceHost("dra", args, drop_caps=False, install_signals=False)
    dra = DraService(host, args)
    dra.start()
    return host, dra


def stop_instance(host: ServiceHost, dra: DraService) -> None:
    dra.stop()
    host.close()


def test_two_instances_share_the_node_and_hand_over() -> None:
    h = Harness(inventory=[device(d) for d in DEVICES])
    old = start_instance(h, "uid-old")
    agent = NodeAgent(h.root / "reg", str(h.root / "no-cri.sock"))
    new: tuple[ServiceHost, DraService] | None = None
    try:
        agent.start()
        wait_for(lambda: agent.plugin is not None, what="the old instance registered")
        new = start_instance(h, "uid-new")
        a, b = old[1], new[1]
        # Socket names carry the pod UID, so both are registered at once and none replaces the other.
        assert "uid-old" in a.registration_path.name and "uid-new" in b.registration_path.name
        assert "uid-old" in a.dra_path.name and "uid-new" in b.dra_path.name
        assert a.registration_path.exists() and b.registration_path.exists()
        # The kubelet uses the most recently registered instance.
        wait_for(
            lambda: agent.plugin is not None and agent.plugin.endpoint == str(b.dra_path),
            what="the kubelet stand-in switched to the new instance",
        )

        # One bus per node: the old instance keeps serving it, the new one stands by.
        from dranet.bus import BusClient, BusError

        bus = BusClient(h.root / "run", "dra", timeout=5.0)
        assert bus.call("ping", {})["details"]["instance"] == "uid-old"

        # Both serve the kubelet at once, on one checkpoint: prepares and unprepares through
        # either instance, concurrently, lose nothing.
        claims = [h.cluster.create_claim(devices=[d]) for d in DEVICES]
        errors: list[str] = []

        def prepare(i: int) -> None:
            endpoint = str((a if i % 2 else b).dra_path)
            ((_, error),) = h.kubelet.prepare(endpoint, [claims[i]]).values()
            if error:
                errors.append(error)

        threads = [threading.Thread(target=prepare, args=(i,)) for i in range(len(claims))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        stored = decode(a.checkpoint.path.read_bytes())
        assert sorted(stored) == sorted(uid for _, uid, _ in claims)
        # A claim prepared by the new instance is served to nri by the bus owner, the old one.
        pod_uid = stored[claims[0][1]].pod_uids[0]
        devices = bus.call("pod_devices", {"pod_uid": pod_uid})["devices"]
        assert [d["device"] for d in devices] == [DEVICES[0]]
        # Unprepare through the other instance than the one that prepared.
        gone = claims[:6]
        for i, claim in enumerate(gone):
            endpoint = str((b if i % 2 else a).dra_path)
            assert h.kubelet.unprepare(endpoint, [claim]) == {claim[1]: ""}
        left = sorted(uid for _, uid, _ in claims[6:])
        assert sorted(decode(a.checkpoint.path.read_bytes())) == left
        assert sorted(c["uid"] for c in bus.call("claims", {})["claims"]) == left
        assert sorted(c.uid for c in b.driver.prepared()) == left

        # The old pod goes (SIGTERM): its sockets are removed, the new instance takes the bus.
        stop_instance(*old)
        assert not a.registration_path.exists()

        def served_by_new() -> bool:
            try:  # a call in flight while the old socket closes is lost: ask again
                return bool(bus.call("ping", {}, timeout=1.0)["details"]["instance"] == "uid-new")
            except BusError:
                return False

        wait_for(served_by_new, timeout=20, what="the new instance serves the bus")
        assert sorted(c["uid"] for c in bus.call("claims", {})["claims"]) == left
        assert agent.plugin is not None and agent.plugin.endpoint == str(b.dra_path)
        bus.close()
    finally:
        agent.close()
        if new is not None:
            stop_instance(*new)
        stop_instance(*old)
        h.close()


def test_one_active_instance_per_service_and_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never two nri plugins or two netns workers on one node: the second instance of a service
    stands by until the first exits, whatever way it exits. Its pod's probes (`dranet status`,
    POD_UID in the environment) count it live and ready meanwhile, without asking the bus, which is
    the other pod's: the update never waits on the old pod's health."""
    args = service_args(tmp_path)
    rd = Path(args.runtime_dir)
    monkeypatch.setenv("POD_UID", "pod-old")
    first = ServiceHost("nri", args, drop_caps=False, install_signals=False)
    monkeypatch.setenv("POD_UID", "pod-new")
    second = ServiceHost("nri", args, drop_caps=False, install_signals=False)
    other = ServiceHost("netns", args, drop_caps=False, install_signals=False)
    try:
        assert first.wait_for_turn()
        assert other.wait_for_turn()  # another service: its own lock
        turn: list[bool] = []
        waiter = threading.Thread(target=lambda: turn.append(second.wait_for_turn()))
        waiter.start()
        time.sleep(1.0)
        assert turn == [] and not second.owner.held  # standing by while the first is active
        standby = query(rd, ["nri"], timeout=0.3, instance="pod-new")
        assert state_of(standby["nri"]) == "standby"  # type: ignore[arg-type]
        assert all_ready(standby) and all_live(standby)
        assert query(rd, ["nri"], timeout=0.3, instance="pod-old")["nri"] == (
            "no reply from nri to ping within 0.300s; is the nri service running? (try `dranet status`)"
        )  # the active instance answers on the bus (here it does not serve: nothing answers)
        first.close()
        waiter.join(10)
        assert turn == [True] and second.owner.held
        assert not query(rd, ["nri"], timeout=0.3, instance="pod-new")["nri"] == standby["nri"]
    finally:
        for host in (first, second, other):
            host.close()


_STANDBY_THAT_SWITCHES_UID = """
import os, sys, time
from pathlib import Path
from dranet.instance import OwnerLock
lock = OwnerLock(Path(sys.argv[1]) / "dra.lock")
print("first try", lock.try_acquire(), flush=True)
os.setresgid(65102, 65102, 65102)
os.setresuid(65102, 65102, 65102)  # as dra does with --run-as, the bus dir being root's (0700 here)
try:
    os.open(Path(sys.argv[1]) / "dra.lock", os.O_RDWR)
    print("reopened", flush=True)
except PermissionError:
    print("cannot reopen", flush=True)
end = time.monotonic() + 30
while not lock.try_acquire() and time.monotonic() < end:
    time.sleep(0.05)
print("held", lock.held, flush=True)
"""


def test_a_standby_that_switched_uid_still_takes_the_owner_lock(tmp_path: Path) -> None:
    """The owner lock is root's file in the root-owned bus dir: a standby dra that became uid
    65102 (--run-as) since its first try cannot open it again, and takes it through the
    descriptor it opened first."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    active = OwnerLock(run / "dra.lock")
    assert active.try_acquire()
    child = subprocess.Popen(
        [sys.executable, "-c", _STANDBY_THAT_SWITCHES_UID, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "first try False"
        assert child.stdout.readline().strip() == "cannot reopen"
        active.release()
        assert child.stdout.readline().strip() == "held True"
    finally:
        active.release()
        child.wait(30)


def test_a_marker_counts_only_while_its_standby_waits(tmp_path: Path) -> None:
    """The standby marker is held by flock, not named by pid: a killed standby's marker is stale at
    once (and a pid means nothing across the pod's containers, which share no pid namespace)."""
    marker = tmp_path / "nri.standby-pod-new"
    marker.write_text("")  # left behind by a killed standby: nobody holds it
    assert not standing_by(marker)
    active = OwnerLock(tmp_path / "nri.lock")
    standby = OwnerLock(tmp_path / "nri.lock", marker)
    try:
        assert active.try_acquire()
        assert not standby.try_acquire()
        assert standing_by(marker)
        active.release()
        assert standby.try_acquire()
        assert not marker.exists() and not standing_by(marker)
    finally:
        active.release()
        standby.release()


def test_a_standby_answers_no_kubelet_call_before_it_read_the_checkpoint(tmp_path: Path) -> None:
    """A standby dra with --run-as reads the checkpoint (the active instance's uid's) only after its
    own switch: until then no read of the file (its health poll crashed it on the real runtime),
    and every kubelet call is refused for a retry; an unprepare that succeeded for a claim it does
    not know yet would leak the claim's NICs."""
    checkpoint = Checkpoint(tmp_path / "dra")
    dev = PreparedDevice(request="nic", pool="node-a", device="eth1", ifname="eth1", config={})
    checkpoint.save({"c1": PreparedClaim(uid="c1", namespace="ns", name="c", pod_uids=["p1"], devices=[dev])})
    detached: list[tuple[str, list[str]]] = []
    pushed: list[list[str]] = []
    driver = Driver(
        driver_name="dra.net",
        node_name="node-a",
        claims=None,  # type: ignore[arg-type]  (no API read in these calls)
        inventory=lambda _name: None,
        checkpoint=checkpoint,
        detach=lambda pod, devices: detached.append((pod, devices)),
        grant=lambda claims, replace: pushed.append([c.uid for c in claims]),
    )
    (tmp_path / "dra" / "checkpoint.json").chmod(0)  # as the other uid's file is to a standby
    ref = ClaimRef(uid="c1", namespace="ns", name="c")
    assert driver.prepared() == [] and driver.get("c1") is None
    assert driver.unprepare([ref]) == {"c1": NOT_LOADED} and detached == []
    assert driver.prepare([ref])["c1"].error == NOT_LOADED
    assert not driver.sync_grants() and pushed == []
    (tmp_path / "dra" / "checkpoint.json").chmod(0o600)
    driver.load()
    assert [c.uid for c in driver.prepared()] == ["c1"]
    assert driver.sync_grants() and pushed == [["c1"]]
    assert driver.unprepare([ref]) == {"c1": ""} and detached == [("p1", ["eth1"])]
