"""The dra service driven as the kubelet drives it: over its unix sockets, against the local API server.

See tests/conformance/dra_kubelet.py for the harness (official kubelet protos when fetched).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from dra_kubelet import DRIVER, NODE, Harness, device, opaque, wait_for

from dranet.bus import BusError


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    harness.start_dra()
    try:
        yield harness
    finally:
        harness.close()


def devices_of(resp: dict[str, Any], uid: str) -> list[tuple[Any, ...]]:
    devs, err = resp[uid]
    assert err == ""
    return devs


# ------------------------------------------------------------------ registration


def test_registration_handshake(h: Harness) -> None:
    assert h.dra is not None
    reg_path = Path(h.dra_args.get("kubelet_registry_dir", h.root / "reg")) / f"{DRIVER}-reg.sock"
    assert reg_path.is_socket()
    stub, ch = h.kubelet.registration(reg_path)
    with ch:
        info = stub.GetInfo(h.kubelet.reg_pb.InfoRequest(), timeout=1)
        assert info.type == "DRAPlugin"
        assert info.name == DRIVER
        assert info.endpoint == str(h.root / "plugins" / DRIVER / "dra.sock")
        assert list(info.supported_versions) == [
            "v1.DRAPlugin",
            "v1beta1.DRAPlugin",
            "v1alpha1.DRAResourceHealth",
        ]
        stub.NotifyRegistrationStatus(h.kubelet.reg_pb.RegistrationStatus(plugin_registered=True), timeout=5)
    assert h.dra.registration.servicer.wait_registered(1)


def test_sockets_removed_on_clean_shutdown_and_stale_ones_replaced(h: Harness) -> None:
    assert h.dra is not None
    reg, dra = h.dra.registration_path, h.dra.dra_path
    h.stop_dra()
    assert not reg.exists() and not dra.exists()
    # a crash leaves socket files behind: the next start must not trip over them
    for path in (reg, dra):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    h.start_dra()
    assert reg.is_socket() and dra.is_socket()
    ns, uid, name = h.cluster.create_claim(devices=["eth1"])
    assert devices_of(h.kubelet.prepare(h.endpoint, [(ns, uid, name)]), uid)


# ------------------------------------------------------------------ prepare / unprepare


@pytest.mark.parametrize("api", ["v1", "v1beta1"])
def test_prepare_and_unprepare(h: Harness, api: str) -> None:
    ns, uid, name = h.cluster.create_claim(devices=["eth1"], pods=["pod-a"])
    resp = h.kubelet.prepare(h.endpoint, [(ns, uid, name)], api=api)
    assert devices_of(resp, uid) == [(("nic",), NODE, "eth1", (f"k8s.{DRIVER}/nic={uid}-eth1",))]
    assert (h.root / "cdi" / f"k8s.{DRIVER}-nic_{uid}.json").is_file()

    devs = h.bus("pod_devices", {"pod_uid": "pod-a"})["devices"]
    assert [(d["claim_uid"], d["device"], d["ifname"], d["request"], d["pool"]) for d in devs] == [
        (uid, "eth1", "eth1", "nic", NODE)
    ]
    assert devs[0]["claim_namespace"] == ns and devs[0]["claim_name"] == name
    claims = h.bus("claims")["claims"]
    assert [c["uid"] for c in claims] == [uid] and claims[0]["pod_uids"] == ["pod-a"]

    assert h.kubelet.unprepare(h.endpoint, [(ns, uid, name)], api=api) == {uid: ""}
    assert h.neighbours.detach_calls == [{"pod_uid": "pod-a", "devices": ["eth1"]}]
    assert h.bus("pod_devices", {"pod_uid": "pod-a"})["devices"] == []
    doc = json.loads((h.root / "state" / "dra" / "checkpoint.json").read_text())
    assert doc["payload"]["claims"] == {}
    assert list((h.root / "cdi").iterdir()) == []  # the spec goes with the claim


def test_empty_request_succeeds(h: Harness) -> None:
    assert h.kubelet.prepare(h.endpoint, []) == {}
    assert h.kubelet.unprepare(h.endpoint, []) == {}


def test_unknown_claim_unprepare_succeeds(h: Harness) -> None:
    assert h.kubelet.unprepare(h.endpoint, [("default", "no-such-uid", "gone")]) == {"no-such-uid": ""}
    assert h.neighbours.detach_calls == []


def test_several_claims_one_bad(h: Harness) -> None:
    good = h.cluster.create_claim(devices=["eth1"])
    bad = h.cluster.create_claim(devices=["eth2"], configs=[opaque({"interface": {"mtu": 20}})])
    missing = ("default", "uid-of-nothing", "never-created")
    other = h.cluster.create_claim(devices=["eth3"])
    resp = h.kubelet.prepare(h.endpoint, [good, bad, missing, other])
    assert set(resp) == {good[1], bad[1], missing[1], other[1]}  # an entry for every claim
    assert [d[:3] for d in devices_of(resp, good[1])] == [(("nic",), NODE, "eth1")]
    assert [d[:3] for d in devices_of(resp, other[1])] == [(("nic",), NODE, "eth3")]
    specs = sorted(p.name for p in (h.root / "cdi").iterdir())
    assert specs == sorted(f"k8s.{DRIVER}-nic_{c[1]}.json" for c in (good, other))  # none for the failures
    assert resp[bad[1]][0] == [] and "interface.mtu" in resp[bad[1]][1] and "eth2" in resp[bad[1]][1]
    assert "not found" in resp[missing[1]][1]


def test_uid_mismatch_is_refused(h: Harness) -> None:
    ns, _uid, name = h.cluster.create_claim(devices=["eth1"])
    resp = h.kubelet.prepare(h.endpoint, [(ns, "an-older-uid", name)])
    assert "re-created" in resp["an-older-uid"][1]


def test_multi_pod_claim_is_refused(h: Harness) -> None:
    ns, uid, name = h.cluster.create_claim(devices=["eth1"], pods=["p1", "p2"])
    err = h.kubelet.prepare(h.endpoint, [(ns, uid, name)])[uid][1]
    assert "reserved for 2 consumers" in err and "exactly one pod" in err


def test_device_already_prepared_for_another_claim(h: Harness) -> None:
    first = h.cluster.create_claim(devices=["eth1"])
    second = h.cluster.create_claim(devices=["eth1"])
    assert devices_of(h.kubelet.prepare(h.endpoint, [first]), first[1])
    err = h.kubelet.prepare(h.endpoint, [second])[second[1]][1]
    assert "already prepared for claim default/claim-1" in err


# ------------------------------------------------------------------ configuration


def test_config_merging_class_then_claim(h: Harness) -> None:
    configs = [
        opaque({"interface": {"name": "fromclaim", "addresses": ["10.9.0.2/24"]}}, "FromClaim"),
        opaque({"interface": {"name": "fromclass", "mtu": 1400}}, "FromClass"),
        opaque({"routes": [{"destination": "10.10.0.0/16", "gateway": "10.9.0.1"}]}, "FromClaim", ["nic"]),
        opaque({"interface": {"mtu": 9000}}, "FromClaim", ["other"]),
    ]
    ns, uid, name = h.cluster.create_claim(devices=["eth1"], configs=configs, pods=["pod-m"])
    assert devices_of(h.kubelet.prepare(h.endpoint, [(ns, uid, name)]), uid)
    cfg = h.bus("pod_devices", {"pod_uid": "pod-m"})["devices"][0]["config"]
    assert cfg["interface"] == {"name": "fromclaim", "addresses": ["10.9.0.2/24"], "mtu": 1400}
    assert cfg["routes"] == [{"destination": "10.10.0.0/16", "gateway": "10.9.0.1"}]


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"interface": {"mtu": 20}}, "interface.mtu", "between"),
        ({"interface": {"name": "a/b"}}, "interface.name", ""),
        ({"interface": {"addresses": ["300.1.1.1/24"]}}, "interface.addresses[0]", ""),
        ({"interface": {"hardwareAddr": "zz"}}, "interface.hardwareAddr", ""),
        ({"interface": {"dhcp": True, "addresses": ["10.0.0.2/24"]}}, "interface", ""),
        ({"interface": {"addressing": "Unnumbered"}}, "interface.addressing", "sub-interface"),
        ({"routes": [{"destination": "10.1.0.0/16"}]}, "routes[0]", ""),
        ({"rules": [{"priority": 99999, "table": 100}]}, "rules[0].priority", ""),
        ({"neighbors": [{"destination": "10.0.0.9"}]}, "neighbors[0]", ""),
        ({"unknownField": 1}, "unknownField", "unknown field"),
        (
            {
                "interface": {"addresses": ["10.0.0.2/24"]},
                "routes": [{"destination": "10.5.0.0/16", "gateway": "1.2.3.4"}],
            },
            "routes[0].gateway",
            "",
        ),
    ],
)
def test_validation_error_reaches_the_kubelet(
    h: Harness, params: dict[str, Any], field: str, reason: str
) -> None:
    ns, uid, name = h.cluster.create_claim(devices=["eth1"], configs=[opaque(params)])
    devs, err = h.kubelet.prepare(h.endpoint, [(ns, uid, name)])[uid]
    assert devs == []
    assert f"device {NODE}/eth1 (request nic): invalid config: {field}" in err
    assert reason in err


# ------------------------------------------------------------------ idempotency, restarts, failures


def test_repeated_prepare_is_idempotent_and_cheap(h: Harness) -> None:
    claim = h.cluster.create_claim(devices=["eth1", "eth2"], requests=["a", "b"])
    first = h.kubelet.prepare(h.endpoint, [claim])
    h.cluster.stop()  # a repeated call must not need the API server
    assert h.kubelet.prepare(h.endpoint, [claim]) == first
    assert sorted(devices_of(first, claim[1])) == [
        (("a",), NODE, "eth1", (f"k8s.{DRIVER}/nic={claim[1]}-eth1",)),
        (("b",), NODE, "eth2", (f"k8s.{DRIVER}/nic={claim[1]}-eth2",)),
    ]


def test_restart_between_prepare_and_pod_start(h: Harness) -> None:
    claim = h.cluster.create_claim(
        devices=["eth2"], pods=["pod-r"], configs=[opaque({"interface": {"mtu": 1300}})]
    )
    assert devices_of(h.kubelet.prepare(h.endpoint, [claim]), claim[1])
    h.stop_dra()
    h.start_dra()  # the kubelet does not prepare again: nri must still get the devices
    devs = h.bus("pod_devices", {"pod_uid": "pod-r"})["devices"]
    assert [(d["device"], d["config"]["interface"]["mtu"]) for d in devs] == [("eth2", 1300)]
    assert h.kubelet.unprepare(h.endpoint, [claim]) == {claim[1]: ""}


def test_restart_rewrites_the_cdi_specs_of_prepared_claims(h: Harness) -> None:
    # /var/run/cdi is a tmpfs: after a reboot the kubelet still has the claim prepared, the spec is gone
    claim = h.cluster.create_claim(devices=["eth2"], pods=["pod-r"])
    assert devices_of(h.kubelet.prepare(h.endpoint, [claim]), claim[1])
    spec = h.root / "cdi" / f"k8s.{DRIVER}-nic_{claim[1]}.json"
    before = spec.read_text()
    h.stop_dra()
    spec.unlink()
    h.start_dra()
    assert spec.read_text() == before


def test_corrupt_checkpoint_is_detected_and_reported(h: Harness) -> None:
    claim = h.cluster.create_claim(devices=["eth1"], pods=["pod-c"])
    assert devices_of(h.kubelet.prepare(h.endpoint, [claim]), claim[1])
    h.stop_dra()
    path = h.root / "state" / "dra" / "checkpoint.json"
    path.write_text(path.read_text().replace("pod-c", "pod-x"))
    h.start_dra()
    # reported while it is being rebuilt from the API server, and after (test_dra_kubelet_contract)
    details = h.bus("ping")["details"]
    report = details.get("checkpoint_corrupt") or details.get("checkpoint_rebuilt")
    assert "checksum mismatch" in report["reason"]
    # the corrupt file is moved aside (the rebuild may already have written a new checkpoint.json)
    assert len([p for p in path.parent.iterdir() if p.name.startswith("checkpoint.json.corrupt-")]) == 1
    assert h.bus("pod_devices", {"pod_uid": "pod-x"})["devices"] == []  # never silently used


def test_api_server_unreachable(h: Harness) -> None:
    claim = h.cluster.create_claim(devices=["eth1"])
    h.cluster.stop()
    err = h.kubelet.prepare(h.endpoint, [claim])[claim[1]][1]
    assert "unreachable" in err and "retry" in err


def test_inventory_unavailable_and_unknown_device(h: Harness) -> None:
    claim = h.cluster.create_claim(devices=["eth7"])
    err = h.kubelet.prepare(h.endpoint, [claim])[claim[1]][1]
    assert "not in this node's inventory" in err
    h.neighbours.inventory.append(device("eth7", "enp7s0"))  # appears later: a retry finds it
    wait_for(lambda: not h.kubelet.prepare(h.endpoint, [claim])[claim[1]][1], what="device found")
    assert h.bus("claims")["claims"][0]["devices"][0]["ifname"] == "enp7s0"


def test_unprepare_fails_while_the_worker_cannot_detach(h: Harness) -> None:
    claim = h.cluster.create_claim(devices=["eth1"], pods=["pod-d"])
    assert devices_of(h.kubelet.prepare(h.endpoint, [claim]), claim[1])
    h.neighbours.detach_error = BusError("kernel_error", "move back failed")
    err = h.kubelet.unprepare(h.endpoint, [claim])[claim[1]]
    assert "kernel_error" in err and "retry" in err
    assert h.bus("pod_devices", {"pod_uid": "pod-d"})["devices"]  # kept until the detach works
    h.neighbours.detach_error = None
    assert h.kubelet.unprepare(h.endpoint, [claim]) == {claim[1]: ""}


# ------------------------------------------------------------------ claim status


def test_status_written_on_attach_and_cleared_on_unprepare(h: Harness) -> None:
    ns, uid, name = h.cluster.create_claim(devices=["eth1", "eth2"], requests=["a", "b"], pods=["pod-s"])
    assert devices_of(h.kubelet.prepare(h.endpoint, [(ns, uid, name)]), uid)
    h.neighbours.attached(
        pod_uid="pod-s",
        device="eth1",
        claim_uid=uid,
        state="attached",
        pod_ifname="net1",
        ips=["10.3.0.2/24"],
        hardware_address="02:00:00:00:00:01",
    )
    h.neighbours.attached(
        pod_uid="pod-s", device="eth2", claim_uid=uid, state="failed", error="kernel_error: boom"
    )

    def status_devices() -> list[dict[str, Any]]:
        return list((h.cluster.claim(ns, name).get("status") or {}).get("devices") or [])

    devs = wait_for(lambda: (d := status_devices()) and len(d) == 2 and d, what="status written")
    by_dev = {d["device"]: d for d in devs}
    ok, bad = by_dev["eth1"], by_dev["eth2"]
    assert ok["driver"] == DRIVER and ok["pool"] == NODE
    assert (ok["conditions"][0]["type"], ok["conditions"][0]["status"]) == ("Ready", "True")
    assert ok["conditions"][0]["reason"] == "NetworkDeviceReady"
    assert ok["networkData"] == {
        "interfaceName": "net1",
        "ips": ["10.3.0.2/24"],
        "hardwareAddress": "02:00:00:00:00:01",
    }
    assert bad["conditions"][0]["status"] == "False" and "boom" in bad["conditions"][0]["message"]

    assert h.kubelet.unprepare(h.endpoint, [(ns, uid, name)]) == {uid: ""}
    wait_for(lambda: status_devices() == [], what="status cleared")


# ------------------------------------------------------------------ process level


def test_rolling_update_socket_names() -> None:
    harness = Harness(rolling_update_uid="0123-abcd")
    dra = harness.start_dra()
    try:
        assert dra.registration_path.name == f"{DRIVER}-0123-abcd-reg.sock"
        assert dra.dra_path == harness.root / "plugins" / DRIVER / "dra-0123-abcd.sock"
        stub, ch = harness.kubelet.registration(dra.registration_path)
        with ch:
            assert stub.GetInfo(harness.kubelet.reg_pb.InfoRequest(), timeout=1).endpoint == str(dra.dra_path)
    finally:
        harness.close()


def test_the_process_serves_and_removes_its_sockets_on_sigterm() -> None:
    harness = Harness()  # API server and neighbours only; dra runs as a real process
    root = harness.root
    cmd = [
        sys.executable,
        "-m",
        "dranet",
        "dra",
        "--runtime-dir",
        str(root / "run"),
        "--state-dir",
        str(root / "state"),
        "--node-name",
        NODE,
        "--kubeconfig",
        str(root / "kubeconfig"),
        "--kubelet-registry-dir",
        str(root / "reg"),
        "--kubelet-plugins-dir",
        str(root / "plugins"),
        "--cdi-dir",
        str(root / "cdi"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reg, dra = root / "reg" / f"{DRIVER}-reg.sock", root / "plugins" / DRIVER / "dra.sock"
    try:
        wait_for(reg.exists, what="registration socket")
        claim = harness.cluster.create_claim(devices=["eth1"], pods=["pod-p"])
        assert devices_of(harness.kubelet.prepare(str(dra), [claim]), claim[1])
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert not reg.exists() and not dra.exists()
        assert '"msg":"claim prepared"' in err  # structured JSON logs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        harness.close()


def test_starts_without_a_usable_kubeconfig() -> None:
    harness = Harness(kubeconfig="/nonexistent/tdr-kubeconfig")
    harness.start_dra()
    try:
        err = harness.kubelet.prepare(harness.endpoint, [("default", "u1", "c1")])["u1"][1]
        assert "check --kubeconfig" in err
        ping = harness.bus("ping")
        assert ping["healthy"] is False and "kubeconfig" in ping["details"]["api_client_error"]
    finally:
        harness.close()


def test_prepare_grants_the_worker_and_unprepare_revokes(h: Harness) -> None:
    """The netns worker attaches only what dra granted (issue 13): the grant reaches it before the
    kubelet hears the claim is prepared, carries the validated config, and goes at unprepare."""
    ns, uid, name = h.cluster.create_claim(
        devices=["eth1"], pods=["pod-g"], configs=[opaque({"interface": {"name": "net1"}})]
    )
    assert h.kubelet.prepare(h.endpoint, [(ns, uid, name)])[uid][1] == ""
    (granted,) = h.neighbours.grants.values()
    (prepared,) = h.bus("pod_devices", {"pod_uid": "pod-g"})["devices"]
    assert granted["pod_uids"] == ["pod-g"]
    assert granted["devices"] == [
        {"device": "eth1", "ifname": "eth1", "config": prepared["config"], "rdma_device": ""}
    ]
    assert h.kubelet.unprepare(h.endpoint, [(ns, uid, name)]) == {uid: ""}
    assert h.neighbours.grants == {}


def test_a_grant_the_worker_refuses_fails_the_prepare_until_it_takes_it(h: Harness) -> None:
    ns, uid, name = h.cluster.create_claim(devices=["eth2"], pods=["pod-r"])
    h.neighbours.grant_error = BusError("unavailable", "worker restarting")
    error = h.kubelet.prepare(h.endpoint, [(ns, uid, name)])[uid][1]
    assert "did not take the grant" in error
    h.neighbours.grant_error = None
    assert h.kubelet.prepare(h.endpoint, [(ns, uid, name)])[uid][1] == ""  # the retry grants it
    assert list(h.neighbours.grants) == [uid]


def test_a_restarted_dra_pushes_its_whole_set(h: Harness) -> None:
    ns, uid, name = h.cluster.create_claim(devices=["eth3"], pods=["pod-s"])
    assert h.kubelet.prepare(h.endpoint, [(ns, uid, name)])[uid][1] == ""
    h.neighbours.grants = {"stale": {"uid": "stale", "pod_uids": ["x"], "devices": []}}
    h.stop_dra()
    h.start_dra()
    wait_for(lambda: list(h.neighbours.grants) == [uid])
