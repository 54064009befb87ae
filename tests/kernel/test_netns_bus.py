"""The worker behind the real bus: attach/detach/list/ping, the attachments topic, oversize requests."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed
from dranet.services.netns.worker import NetnsWorker

from dranet.bus import BusClient, BusError, Subscriber
from dranet.service import ServiceHost

pytestmark = pytest.mark.kernel


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[Testbed, BusClient, str]]:
    tb = Testbed("tnw")
    ns = argparse.Namespace(
        runtime_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"), log_level="warning"
    )
    svc = ServiceHost("netns", ns, drop_caps=False, install_signals=False)
    worker = NetnsWorker(ns.state_dir, host_netns=tb.node_path, publish=svc.publish)
    worker.start(watch_interval=0)
    svc.serve(worker.handlers(), health=worker.health, snapshots={"attachments": worker.attachments})
    client = BusClient(ns.runtime_dir, "netns", timeout=10)
    try:
        yield tb, client, ns.runtime_dir
    finally:
        client.close()
        svc.close()
        worker.close()
        tb.close()


def test_attach_list_detach_over_bus(bus: tuple[Testbed, BusClient, str]) -> None:
    tb, client, runtime = bus
    tb.add_nic("tnwq0", addresses=("10.1.0.2/24",))
    pod = tb.add_netns()
    seen: list[dict] = []
    got = threading.Event()

    def on_message(_topic: str, body: dict) -> None:
        seen.append(body)
        if body.get("state") == "attached":
            got.set()

    sub = Subscriber(runtime, "netns", ["attachments"], on_message)
    sub.start()
    try:
        assert sub.synced.wait(5)
        req = {
            "pod_uid": "pod-q",
            "netns": f"/run/netns/{pod}",
            "devices": [
                {
                    "device": "q0",
                    "ifname": "tnwq0",
                    "config": {"interface": {"name": "eth0"}},
                    "claim_uid": "c1",
                }
            ],
        }
        res = client.call("attach", req)
        assert [(a["device"], a["pod_ifname"], a["state"]) for a in res["attachments"]] == [
            ("q0", "eth0", "attached")
        ]
        assert client.call("attach", req) == res  # idempotent over the bus too
        assert [a["device"] for a in client.call("list")["attachments"]] == ["q0"]
        assert got.wait(5)
        event = next(b for b in seen if b.get("state") == "attached")
        assert event["claim_uid"] == "c1" and event["network_data"]["interfaceName"] == "eth0"
        assert client.call("ping")["details"]["attachments"] == 1
        assert client.call("detach", {"pod_uid": "pod-q", "devices": []}) == {"released": ["q0"]}
        assert client.call("list") == {"attachments": []}
    finally:
        sub.close()


def test_errors_over_bus(bus: tuple[Testbed, BusClient, str]) -> None:
    tb, client, _ = bus
    pod = tb.add_netns()
    with pytest.raises(BusError) as err:
        client.call(
            "attach",
            {
                "pod_uid": "p",
                "netns": f"/run/netns/{pod}",
                "devices": [{"device": "x", "ifname": "nope0", "config": {}}],
            },
        )
    assert err.value.code == "not_found"
    with pytest.raises(BusError) as err:
        client.call("attach", {"pod_uid": "p", "netns": f"/run/netns/{pod}", "devices": "x"})
    assert err.value.code == "bad_request"
    huge = {"interface": {"name": "eth0"}, "pad": "x" * (5 * 1024 * 1024)}
    with pytest.raises(BusError) as err:
        client.call(
            "attach",
            {
                "pod_uid": "p",
                "netns": f"/run/netns/{pod}",
                "devices": [{"device": "x", "ifname": "nope0", "config": huge}],
            },
        )
    assert err.value.code == "too_large"
