"""The nri handlers against fake dra and netns collaborators (no bus, no runtime)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dranet.services.nri.handlers import Options, PodHandlers, PodInfo, SandboxError
from dranet.services.nri.reconcile import plan as reconcile_plan

from dranet.bus.messages import BusError
from dranet.rdma import CharDevice
from tests.rdmasysfs import add_rdma_device

NETNS = "/var/run/netns/cni-test"


def dev(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "device": name,
        "ifname": f"net-{name}",
        "config": {"interface": {"mtu": 1400}},
        "claim_uid": "claim-1",
        **extra,
    }


class FakeDra:
    def __init__(self, devices: dict[str, list[dict[str, Any]]] | None = None, error: BusError | None = None):
        self.devices = devices or {}
        self.error = error
        self.calls: list[tuple[str, float]] = []

    def pod_devices(self, pod_uid: str, timeout: float) -> list[dict[str, Any]]:
        self.calls.append((pod_uid, timeout))
        if self.error:
            raise self.error
        return list(self.devices.get(pod_uid, []))


class FakeNetns:
    """The worker as nri sees it: attachments keyed by (pod UID, device) in a netns; detach with a
    netns touches only that sandbox's; which netns are alive, and their identity, is its answer."""

    def __init__(self, alive: Any = lambda p: p.startswith("/var/run/netns/")) -> None:
        self.is_alive = alive
        self.ids: dict[str, str] = {}  # path -> identity, when not "id:<path>" (a re-created path)
        self.attach_error: BusError | None = None
        self.detach_error: BusError | None = None
        self.held: dict[tuple[str, str], tuple[str, str]] = {}  # (uid, device) -> (netns, identity)
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        self.gate: threading.Event | None = None  # attach waits on it when set
        self.list_gate: threading.Event | None = None  # attachments (the list) waits on it when set
        self.busy: set[str] = set()  # pods an op is working on
        self.overlaps: list[str] = []  # pods two ops worked on at once

    def ident(self, path: str) -> str | None:
        return self.ids.get(path, f"id:{path}") if self.is_alive(path) else None

    def hold(self, uid: str, netns: str, *devices: str) -> None:
        for d in devices:
            self.held[(uid, d)] = (netns, self.ident(netns) or f"id:{netns}")

    @property
    def attached(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for uid, d in sorted(self.held):
            out.setdefault(uid, []).append(d)
        return out

    def in_netns(self, netns: str) -> list[str]:
        return sorted(d for (_, d), (path, _) in self.held.items() if path == netns)

    def _enter(self, uid: str) -> None:
        if uid in self.busy:
            self.overlaps.append(uid)
        self.busy.add(uid)

    def attach(self, body: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        self.calls.append(("attach", body, timeout))
        self._enter(body["pod_uid"])
        try:
            if self.gate is not None:
                self.gate.wait(10)
            if self.attach_error:
                raise self.attach_error
            self.hold(body["pod_uid"], body["netns"], *[d["device"] for d in body["devices"]])
        finally:
            self.busy.discard(body["pod_uid"])
        return [
            {
                "pod_uid": body["pod_uid"],
                "device": d["device"],
                "pod_ifname": d["ifname"],
                "hardware_address": "",
                "ips": [],
                "state": "attached",
            }
            for d in body["devices"]
        ]

    def detach(self, body: dict[str, Any], timeout: float) -> list[str]:
        self.calls.append(("detach", body, timeout))
        self._enter(body["pod_uid"])
        self.busy.discard(body["pod_uid"])
        if self.detach_error:
            raise self.detach_error
        netns = body.get("netns")
        now = self.ident(netns) if netns else None
        gone = [
            (uid, d)
            for (uid, d), (path, ident) in self.held.items()
            if uid == body["pod_uid"] and (not netns or (ident == now if now else path == netns))
        ]
        for key in gone:
            del self.held[key]
        return sorted(d for _, d in gone)

    def attachments(self, timeout: float) -> list[dict[str, Any]]:
        if self.list_gate is not None:
            self.list_gate.wait(10)
        return [
            {"pod_uid": uid, "device": d, "netns": path, "netns_id": ident}
            for (uid, d), (path, ident) in sorted(self.held.items())
        ]

    def alive(self, paths: list[str], timeout: float) -> dict[str, str]:
        self.calls.append(("netns_alive", {"netns": paths}, timeout))
        return {p: i for p in paths if (i := self.ident(p)) is not None}

    def ops(self) -> list[str]:
        return [c[0] for c in self.calls]


def make(dra: FakeDra, netns: FakeNetns, **opts: Any) -> tuple[PodHandlers, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    h = PodHandlers(
        dra,
        netns,
        options=Options(**opts),
        publish=lambda t, b: events.append({"topic": t, **b}),
    )
    return h, events


POD = PodInfo(uid="u1", name="web", namespace="ns", sandbox_id="s1", netns=NETNS)


def test_pod_without_devices_is_answered_without_the_worker() -> None:
    netns = FakeNetns()
    h, _ = make(FakeDra(), netns)
    h.run_pod_sandbox(POD)
    h.stop_pod_sandbox(POD)
    h.remove_pod_sandbox(POD)
    assert netns.calls == []


def test_attach_gets_the_netns_and_the_budget() -> None:
    netns = FakeNetns()
    h, events = make(FakeDra({"u1": [dev("eth1"), dev("eth2")]}), netns)
    h.set_request_timeout(2.0)
    h.run_pod_sandbox(POD)
    op, body, timeout = netns.calls[0]
    assert op == "attach" and body["netns"] == NETNS and body["pod_uid"] == "u1"
    assert [d["device"] for d in body["devices"]] == ["eth1", "eth2"]
    assert body["devices"][0] == {
        "device": "eth1",
        "ifname": "net-eth1",
        "config": {"interface": {"mtu": 1400}},
        "claim_uid": "claim-1",
    }
    assert 0 < timeout <= 1.5  # 2 s request timeout minus the 0.5 s margin
    assert events[-1]["topic"] == "pod_events" and events[-1]["event"] == "attached"
    assert h.attached_pods() == {"u1": ["eth1", "eth2"]}


def test_configured_timeout_and_margin_set_the_budget() -> None:
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns, budget_margin=1.0)
    h.set_request_timeout(4.0)
    h.run_pod_sandbox(POD)
    assert 2.0 < netns.calls[0][2] <= 3.0
    h.set_request_timeout(0)  # a runtime that does not say keeps the last value
    assert h.request_timeout == 4.0


def test_attach_failure_fails_the_sandbox_and_detaches() -> None:
    netns = FakeNetns()
    netns.attach_error = BusError("invalid_config", "interface.mtu: 99999 is above the maximum 65535")
    h, events = make(FakeDra({"u1": [dev("eth1")]}), netns)
    with pytest.raises(SandboxError, match=r"interface\.mtu"):
        h.run_pod_sandbox(POD)
    assert netns.ops() == ["attach", "detach"]
    assert netns.calls[1][1] == {"pod_uid": "u1", "netns": NETNS}
    assert events[-1]["event"] == "attach_failed"
    assert h.attached_pods() == {}


def test_exhausted_budget_names_the_budget() -> None:
    netns = FakeNetns()
    netns.attach_error = BusError("timeout", "no reply from netns")
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns)
    with pytest.raises(SandboxError, match=r"budget.*request timeout 2s minus 0.5s"):
        h.run_pod_sandbox(POD)
    assert netns.ops() == ["attach", "detach"]


def test_failed_undo_is_retried_in_the_background() -> None:
    netns = FakeNetns()
    netns.attach_error = BusError("kernel_error", "move failed")
    netns.detach_error = BusError("unavailable", "worker restarting")
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns, detach_retry_max=0.05)
    with pytest.raises(SandboxError):
        h.run_pod_sandbox(POD)
    failed = netns.ops().count("detach")
    assert failed >= 1
    netns.detach_error = None
    ok = threading.Event()
    real_detach = netns.detach

    def detach(body: dict[str, Any], timeout: float) -> list[str]:
        out = real_detach(body, timeout)
        ok.set()
        return out

    netns.detach = detach  # type: ignore[method-assign]
    assert ok.wait(10), "the background retry never detached"
    h.close()


def test_dra_unreachable_fails_closed() -> None:
    netns = FakeNetns()
    h, _ = make(FakeDra(error=BusError("timeout", "no reply from dra")), netns)
    with pytest.raises(SandboxError, match="cannot look up the network devices of pod ns/web"):
        h.run_pod_sandbox(POD)
    assert netns.calls == []


def test_host_network_pod_with_devices_is_refused() -> None:
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns)
    with pytest.raises(SandboxError, match="host network"):
        h.run_pod_sandbox(PodInfo(uid="u1", name="web", namespace="ns", netns=""))
    assert netns.calls == []


def test_stop_detaches_and_remove_is_idempotent() -> None:
    netns = FakeNetns()
    h, events = make(FakeDra({"u1": [dev("eth1")]}), netns)
    h.run_pod_sandbox(POD)
    h.stop_pod_sandbox(POD)
    assert netns.calls[-1][0] == "detach" and netns.calls[-1][1]["netns"] == NETNS
    assert events[-1]["event"] == "detached" and events[-1]["devices"] == ["eth1"]
    n = len(netns.calls)
    h.remove_pod_sandbox(POD)  # already detached at stop: nothing to do
    assert len(netns.calls) == n
    h.remove_pod_sandbox(POD)  # unknown now: asks the worker, which has nothing
    assert netns.calls[-1][:2] == ("detach", {"pod_uid": "u1", "netns": NETNS})
    assert h.attached_pods() == {}
    n = len(netns.calls)
    h.remove_pod_sandbox(PodInfo(uid="u1", sandbox_id="s9"))  # a sandbox nobody can name: no guess
    assert len(netns.calls) == n


def test_stop_uses_the_remembered_netns_when_the_runtime_omits_it() -> None:
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns)
    h.run_pod_sandbox(POD)
    h.stop_pod_sandbox(PodInfo(uid="u1", sandbox_id="s1"))
    assert netns.calls[-1][1] == {"pod_uid": "u1", "netns": NETNS}


def test_rdma_char_devices_for_containers(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    add_rdma_device(sysfs, "0000:01:00.0", "mlx5_0", {"uverbs0": "231:192", "umad0": "231:0"})
    add_rdma_device(sysfs, "0000:01:00.1", "mlx5_1", {"uverbs1": "231:193"})
    netns = FakeNetns()
    dra = FakeDra({"u1": [dev("eth1", rdma_device="mlx5_0")], "u2": [dev("eth2")]})
    h, _ = make(dra, netns, sysfs_root=str(sysfs))
    h.run_pod_sandbox(POD)
    paths = [c.path for c in h.create_container(POD)]
    assert paths == ["/dev/infiniband/uverbs0", "/dev/infiniband/umad0", "/dev/infiniband/rdma_cm"]
    # already in the container (e.g. through CDI): not added twice
    assert len(h.create_container(POD, frozenset({"/dev/infiniband/rdma_cm"}))) == 2
    # a pod this process has not seen start: dra is asked; a pod without RDMA gets nothing
    assert h.create_container(PodInfo(uid="u2", netns=NETNS)) == []
    assert dra.calls[-1][0] == "u2"


def test_char_devices_listed_by_the_worker_are_used() -> None:
    netns = FakeNetns()
    h, _ = make(
        FakeDra(
            {
                "u1": [
                    dev(
                        "eth1", char_devices=[{"path": "/dev/infiniband/uverbs3", "major": 231, "minor": 195}]
                    )
                ]
            }
        ),
        netns,
    )
    h.run_pod_sandbox(POD)
    assert h.create_container(POD) == [CharDevice("/dev/infiniband/uverbs3", 231, 195)]


def test_container_of_a_host_network_pod_is_answered() -> None:
    """CreateContainer in a hostNetwork pod (no netns path; e.g. the driver's own pod when the
    kubelet restarts one of its containers) once deadlocked: the sandbox lookup held the handlers'
    lock while _netns() took it again. The runtime then dropped the plugin at every request."""
    h, _ = make(FakeDra({}), FakeNetns())
    result: list[Any] = []
    t = threading.Thread(
        target=lambda: result.append(h.create_container(PodInfo(uid="u9", sandbox_id="s9", netns=""))),
        daemon=True,
    )
    t.start()
    t.join(5)
    assert result == [[]], "create_container did not return (the handlers' lock taken twice?)"
    h.synchronize([])  # and the lock is free for the next request


def test_reconcile_attaches_late_and_releases_orphans() -> None:
    netns = FakeNetns()
    netns.hold("gone", "/var/run/netns/cni-gone", "eth7")  # its pod no longer exists
    netns.hold("u2", "/var/run/netns/cni-2", "eth2")  # already attached: left alone
    dra = FakeDra({"u1": [dev("eth1")], "u2": [dev("eth2")]})
    h, events = make(dra, netns)
    pods = [
        POD,
        PodInfo(uid="u2", netns="/var/run/netns/cni-2"),
        PodInfo(uid="u3", netns="/var/run/netns/cni-3"),
    ]
    done = h.reconcile(pods)
    assert done == {"late_attached": ["u1"], "released": ["gone"]}
    assert netns.attached == {"u1": ["eth1"], "u2": ["eth2"]}
    assert [e["event"] for e in events] == ["detached", "late_attached"]
    assert h.attached_pods() == {"u1": ["eth1"], "u2": ["eth2"]}
    assert h.reconcile(pods) == {"late_attached": [], "released": []}  # converged


def test_reconcile_asks_the_worker_which_netns_are_alive() -> None:
    """As in the DaemonSet: nri cannot see /var/run/netns at all. The pods' netns paths do not
    exist for this process; the worker says they are alive, and nothing is released."""
    netns = FakeNetns(alive=lambda p: True)
    paths = ["/var/run/netns/dranet-test-invisible-1", "/var/run/netns/dranet-test-invisible-2"]
    netns.hold("u1", paths[0], "eth1")
    dra = FakeDra({"u1": [dev("eth1")], "u2": [dev("eth2")]})
    h = PodHandlers(dra, netns)  # the production defaults
    pods = [PodInfo(uid="u1", netns=paths[0]), PodInfo(uid="u2", netns=paths[1])]
    assert h.reconcile(pods) == {"late_attached": ["u2"], "released": []}
    assert netns.attached == {"u1": ["eth1"], "u2": ["eth2"]}
    assert ("netns_alive", {"netns": paths}, 10.0) in netns.calls


def test_reconcile_compares_the_netns_identity_not_the_path() -> None:
    """The path of the attachment's netns names another netns now (removed and made again): the
    old sandbox is gone, its devices are released from it, and the new one gets them."""
    netns = FakeNetns()
    path = "/var/run/netns/cni-reused"
    netns.hold("u1", path, "eth1")  # recorded with the old identity
    netns.ids[path] = "id:new"
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns)
    assert h.reconcile([PodInfo(uid="u1", netns=path)]) == {"late_attached": ["u1"], "released": ["u1"]}
    assert netns.held == {("u1", "eth1"): (path, "id:new")}


def test_reconcile_releases_only_the_old_sandbox_of_a_pod() -> None:
    netns = FakeNetns()
    old, new = "/gone/netns/attempt-0", "/var/run/netns/attempt-1"
    netns.hold("u1", old, "eth1")
    netns.hold("u1", new, "eth2")
    h, _ = make(FakeDra({"u1": [dev("eth1"), dev("eth2")]}), netns)
    assert h.reconcile([PodInfo(uid="u1", netns=old), PodInfo(uid="u1", netns=new)]) == {
        "late_attached": ["u1"],
        "released": ["u1"],
    }
    detach = [c[1] for c in netns.calls if c[0] == "detach"]
    assert detach == [{"pod_uid": "u1", "netns": old}]
    assert netns.in_netns(new) == ["eth1", "eth2"]


def test_reconcile_spares_pods_that_started_after_the_pod_list() -> None:
    netns = FakeNetns()
    dra = FakeDra({"new": [dev("eth1")]})
    h, _ = make(dra, netns)
    netns.list_gate = threading.Event()
    h.synchronize([])  # the runtime's list was empty; its reconcile is on its way...
    h.run_pod_sandbox(PodInfo(uid="new", netns=NETNS))  # ...when a pod starts
    netns.list_gate.set()  # the reconcile now sees the new pod's attachment
    assert wait_until(lambda: h.background_tasks() == 0)
    assert "new" in netns.attached
    assert not [c for c in netns.calls if c[0] == "detach"]
    h.close()


def test_reconcile_skips_stopped_pods_and_releases_them() -> None:
    netns = FakeNetns()
    netns.hold("u1", "/gone/netns", "eth1")
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns)
    stopped = PodInfo(uid="u1", netns="/gone/netns")  # its netns no longer exists
    assert h.reconcile([stopped]) == {"late_attached": [], "released": ["u1"]}
    assert netns.attached == {}


def test_reconcile_plan_leaves_a_pod_with_two_running_sandboxes_and_no_devices() -> None:
    pods = [PodInfo(uid="u1", netns="/a"), PodInfo(uid="u1", netns="/b"), PodInfo(uid="u2", netns="/c")]
    alive = {"/a": "1", "/b": "2", "/c": "3"}
    todo = reconcile_plan(pods, alive, [{"pod_uid": "u2", "device": "eth2", "netns": "/c", "netns_id": "3"}])
    assert todo.ambiguous == ["u1"] and todo.releases == []
    assert [(t.pod.uid, t.held) for t in todo.late] == [("u2", frozenset({"eth2"}))]
    held = [{"pod_uid": "u1", "device": "eth1", "netns": "/b", "netns_id": "2"}]
    todo = reconcile_plan(pods, alive, held)  # the sandbox that holds the devices is the one
    assert [(t.pod.netns, t.held) for t in todo.late] == [("/b", frozenset({"eth1"})), ("/c", frozenset())]


# ------------------------------------------------------------ several sandboxes of one pod
# The kubelet runs attempt 1 of a pod after attempt 0 failed, and removes attempt 0 later.

OLD = PodInfo(uid="u1", name="web", namespace="ns", sandbox_id="s0", netns="/var/run/netns/attempt-0")
NEW = PodInfo(uid="u1", name="web", namespace="ns", sandbox_id="s1", netns="/var/run/netns/attempt-1")


def two_attempts(**opts: Any) -> tuple[PodHandlers, FakeNetns]:
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns, **opts)
    h.run_pod_sandbox(OLD)
    h.stop_pod_sandbox(OLD)
    h.run_pod_sandbox(NEW)
    assert netns.in_netns(NEW.netns) == ["eth1"]
    return h, netns


def test_stop_and_remove_of_the_old_sandbox_after_the_new_attach() -> None:
    h, netns = two_attempts()
    h.stop_pod_sandbox(OLD)  # a repeated stop of the old one
    h.remove_pod_sandbox(OLD)
    assert netns.in_netns(NEW.netns) == ["eth1"]
    assert [c[1]["netns"] for c in netns.calls if c[0] == "detach"] == [OLD.netns]  # its first stop
    assert h.attached_pods() == {"u1": ["eth1"]}  # nri still knows the live sandbox's devices
    h.stop_pod_sandbox(NEW)  # and its own stop detaches them
    assert netns.calls[-1][:2] == ("detach", {"pod_uid": "u1", "netns": NEW.netns})
    assert netns.attached == {}


def test_remove_of_the_old_sandbox_without_a_netns_path() -> None:
    h, netns = two_attempts()
    h.remove_pod_sandbox(PodInfo(uid="u1", sandbox_id="s0"))  # the runtime omits the path
    assert netns.in_netns(NEW.netns) == ["eth1"]
    h.remove_pod_sandbox(PodInfo(uid="u1", sandbox_id="unknown"))  # nor can we name it: no guess
    assert netns.in_netns(NEW.netns) == ["eth1"]
    assert h.attached_pods() == {"u1": ["eth1"]}


def test_background_detach_retry_of_the_old_sandbox_after_the_new_attach() -> None:
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns, detach_retry_max=0.05)
    h.run_pod_sandbox(OLD)
    netns.detach_error = BusError("unavailable", "worker restarting")
    h.stop_pod_sandbox(OLD)  # fails: retried in the background
    # the new sandbox's attach is under way while the worker comes back
    netns.gate = threading.Event()
    runner = threading.Thread(target=h.run_pod_sandbox, args=(NEW,))
    runner.start()
    assert wait_until(lambda: netns.ops()[-1] == "attach")
    netns.detach_error = None
    time.sleep(0.3)  # the retry is due now: it must wait for the pod lock, not run beside the attach
    netns.gate.set()
    runner.join(5)
    assert wait_until(lambda: netns.ops().count("detach") >= 2 and h.background_tasks() == 0)
    assert netns.overlaps == []
    assert netns.in_netns(NEW.netns) == ["eth1"]
    assert h.attached_pods() == {"u1": ["eth1"]}
    h.close()


def test_background_detach_retry_never_undoes_a_newer_attach_into_its_sandbox() -> None:
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns, detach_retry_max=0.05)
    netns.attach_error = BusError("kernel_error", "move failed")
    netns.detach_error = BusError("unavailable", "worker restarting")
    with pytest.raises(SandboxError):
        h.run_pod_sandbox(NEW)  # the undo's detach fails: retried in the background...
    netns.attach_error = None
    h.synchronize([NEW])  # ...the runtime reconnects: a late attach into the sandbox...
    assert wait_until(lambda: netns.in_netns(NEW.netns) == ["eth1"])
    netns.detach_error = None  # ...then the worker answers detaches again
    assert wait_until(lambda: h.background_tasks() == 0)
    assert netns.in_netns(NEW.netns) == ["eth1"]
    h.close()


def test_run_pod_sandbox_does_not_wait_past_its_budget_for_the_pod_lock() -> None:
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns)
    h.set_request_timeout(0.6)
    with h._locks.hold("u1"), pytest.raises(SandboxError, match="did not finish within the budget"):
        h.run_pod_sandbox(POD)
    assert netns.calls == []


def test_pod_locks_do_not_outlive_their_pods() -> None:
    h, _ = two_attempts()
    h.remove_pod_sandbox(OLD)
    h.remove_pod_sandbox(NEW)
    assert h._locks._locks == {} and h._sandboxes == {} and h._netns_of == {}


def test_reconcile_forgets_sandboxes_the_runtime_no_longer_lists() -> None:
    """Their Remove came while nri was disconnected: what nri remembers follows the node's pods."""
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns)
    h.run_pod_sandbox(OLD)
    h.run_pod_sandbox(PodInfo(uid="u2", sandbox_id="s2", netns="/var/run/netns/no-claim"))
    h.synchronize([OLD])  # the runtime lists only the pod with the claim
    assert wait_until(lambda: h.background_tasks() == 0)
    assert list(h._sandboxes) == [("u1", OLD.netns)] and list(h._netns_of) == ["s0"]
    assert h.attached_pods() == {"u1": ["eth1"]}
    h.close()


def wait_until(cond: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


def test_rdma_only_device_is_named_by_its_rdma_device_in_the_attach() -> None:
    """A device without a netdev (InfiniBand without IPoIB) reaches the worker with its RDMA name."""
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("ib0", ifname="", rdma_device="mlx5_3", config={})]}), netns)
    h.run_pod_sandbox(POD)
    body = netns.calls[0][1]
    assert body["devices"][0]["ifname"] == "" and body["devices"][0]["rdma_device"] == "mlx5_3"


def test_memory_of_pod_events_does_not_grow_with_the_pods_a_node_runs() -> None:
    # Pods seen since a Synchronize matter only while its reconcile runs; a node that stays
    # connected for months must not keep one entry per pod it ever ran.
    h, _ = make(FakeDra({}), FakeNetns())
    h.synchronize([])
    assert wait_until(lambda: h.background_tasks() == 0)
    for i in range(200):
        pod = PodInfo(
            uid=f"p{i}", name=f"p{i}", namespace="ns", sandbox_id=f"s{i}", netns=f"/var/run/netns/x{i}"
        )
        h.run_pod_sandbox(pod)
        h.stop_pod_sandbox(pod)
        h.remove_pod_sandbox(pod)
    assert not h._seen
    assert len(h._locks) == 0 and h._sandboxes == {} and h._netns_of == {}
    h.close()


def test_a_late_attach_that_fails_for_a_while_is_retried_until_it_succeeds() -> None:
    # The sandbox started while nri was away; until the late attach succeeds the CDI hook keeps
    # the pod's containers from starting, so a transient failure must not be the last word.
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns, detach_retry_max=0.05)
    netns.attach_error = BusError("unavailable", "the worker is restarting")
    h.synchronize([POD])
    assert wait_until(lambda: [c for c in netns.calls if c[0] == "attach"])
    netns.attach_error = None
    assert wait_until(lambda: netns.in_netns(POD.netns) == ["eth1"])
    assert wait_until(lambda: h.background_tasks() == 0)
    h.close()


def test_a_late_attach_refused_for_good_is_not_retried() -> None:
    netns = FakeNetns()
    h, events = make(FakeDra({"u1": [dev("eth1")]}), netns, detach_retry_max=0.05)
    netns.attach_error = BusError("invalid_config", "interface.mtu: too large")
    h.synchronize([POD])
    assert wait_until(lambda: h.background_tasks() == 0)
    assert len([c for c in netns.calls if c[0] == "attach"]) == 1
    assert [e["event"] for e in events] == ["late_attach_failed"]
    h.close()
