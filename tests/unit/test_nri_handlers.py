"""The nri handlers against fake dra and netns collaborators (no bus, no runtime)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from dranet.services.nri.handlers import Options, PodHandlers, PodInfo, SandboxError
from dranet.services.nri.rdma import CharDevice, rdma_char_devices

from dranet.bus.messages import BusError

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
    def __init__(self) -> None:
        self.attach_error: BusError | None = None
        self.detach_error: BusError | None = None
        self.attached: dict[str, dict[str, Any]] = {}  # pod uid -> attach body
        self.calls: list[tuple[str, dict[str, Any], float]] = []

    def attach(self, body: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        self.calls.append(("attach", body, timeout))
        if self.attach_error:
            raise self.attach_error
        self.attached.setdefault(body["pod_uid"], {"devices": []})["devices"] += body["devices"]
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
        if self.detach_error:
            raise self.detach_error
        gone = self.attached.pop(body["pod_uid"], None)
        return [d["device"] for d in gone["devices"]] if gone else []

    def attachments(self, timeout: float) -> list[dict[str, Any]]:
        return [
            {"pod_uid": uid, "device": d["device"]} for uid, a in self.attached.items() for d in a["devices"]
        ]

    def ops(self) -> list[str]:
        return [c[0] for c in self.calls]


def make(dra: FakeDra, netns: FakeNetns, **opts: Any) -> tuple[PodHandlers, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    h = PodHandlers(
        dra,
        netns,
        options=Options(**opts),
        publish=lambda t, b: events.append({"topic": t, **b}),
        netns_exists=lambda p: p.startswith("/var/run/netns/"),
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
    h.remove_pod_sandbox(PodInfo(uid="u1"))  # already detached at stop: nothing to do
    assert len(netns.calls) == n
    h.remove_pod_sandbox(PodInfo(uid="u1"))  # unknown now: asks the worker, which has nothing
    assert netns.calls[-1][0] == "detach" and h.attached_pods() == {}


def test_stop_uses_the_remembered_netns_when_the_runtime_omits_it() -> None:
    netns = FakeNetns()
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns)
    h.run_pod_sandbox(POD)
    h.stop_pod_sandbox(PodInfo(uid="u1"))
    assert netns.calls[-1][1] == {"pod_uid": "u1", "netns": NETNS}


def test_rdma_char_devices_for_containers(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    for cls, entry, ibdev, devno in [
        ("infiniband_verbs", "uverbs0", "mlx5_0", "231:192"),
        ("infiniband_verbs", "uverbs1", "mlx5_1", "231:193"),
        ("infiniband_mad", "umad0", "mlx5_0", "231:0"),
    ]:
        (sysfs / "class" / cls / entry).mkdir(parents=True)
        (sysfs / "class" / cls / entry / "ibdev").write_text(ibdev + "\n")
        (sysfs / "class" / cls / entry / "dev").write_text(devno + "\n")
    (sysfs / "class/misc/rdma_cm").mkdir(parents=True)
    (sysfs / "class/misc/rdma_cm/dev").write_text("10:58\n")
    assert rdma_char_devices("mlx5_0", sysfs) == [
        CharDevice("/dev/infiniband/uverbs0", 231, 192),
        CharDevice("/dev/infiniband/umad0", 231, 0),
        CharDevice("/dev/infiniband/rdma_cm", 10, 58),
    ]
    assert rdma_char_devices("absent", sysfs) == []

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


def test_reconcile_attaches_late_and_releases_orphans() -> None:
    netns = FakeNetns()
    netns.attached = {
        "gone": {"devices": [{"device": "eth7"}]},  # pod no longer exists
        "u2": {"devices": [{"device": "eth2"}]},  # already attached: left alone
    }
    dra = FakeDra({"u1": [dev("eth1")], "u2": [dev("eth2")]})
    h, events = make(dra, netns)
    pods = [
        POD,
        PodInfo(uid="u2", netns="/var/run/netns/cni-2"),
        PodInfo(uid="u3", netns="/var/run/netns/cni-3"),
    ]
    done = h.reconcile(pods)
    assert done == {"late_attached": ["u1"], "released": ["gone"]}
    assert set(netns.attached) == {"u1", "u2"}
    assert [e["event"] for e in events] == ["late_attached", "detached"]
    assert h.attached_pods() == {"u1": ["eth1"], "u2": ["eth2"]}
    assert h.reconcile(pods) == {"late_attached": [], "released": []}  # converged


def test_reconcile_spares_pods_that_started_after_the_pod_list() -> None:
    netns = FakeNetns()
    dra = FakeDra({"new": [dev("eth1")]})
    h, _ = make(dra, netns)
    h.synchronize([])  # the runtime's list was empty...
    h.run_pod_sandbox(PodInfo(uid="new", netns=NETNS))  # ...then a pod started
    assert h.reconcile([]) == {"late_attached": [], "released": []}
    assert "new" in netns.attached
    h.close()


def test_reconcile_skips_stopped_pods_and_releases_them() -> None:
    netns = FakeNetns()
    netns.attached = {"u1": {"devices": [{"device": "eth1"}]}}
    h, _ = make(FakeDra({"u1": [dev("eth1")]}), netns)
    stopped = PodInfo(uid="u1", netns="/gone/netns")  # its netns no longer exists
    assert h.reconcile([stopped]) == {"late_attached": [], "released": ["u1"]}
