"""Profiles through upstream's webhook protocol: the example IPAM provider (deploy/examples) served
on loopback, the dra Driver preparing and unpreparing claims against it. Also: the merge rule,
refusals, timeouts and an unreachable webhook, each a clear per-claim error with nothing kept."""

from __future__ import annotations

import copy
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dranet.services.dra.addressing import Addressing
from dranet.services.dra.checkpoint import Checkpoint
from dranet.services.dra.driver import ClaimRef, Driver
from dranet.services.netns.grants import Grant, Refused, check_attach

from dranet.providers import DeviceIdentifiers, ProviderError
from dranet.providers.webhook import WebhookProvider
from tests.unit.test_dra_prepare import DRIVER, NODE, claim_json, config, result

ROOT = Path(__file__).resolve().parents[2]


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("ipam_webhook", ROOT / "deploy/examples/ipam_webhook.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Serving:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ipam() -> Iterator[tuple[Serving, Any]]:
    mod = _example()
    pool = mod.Pool("10.60.0.0/29", "10.60.0.1", None)  # 5 addresses to hand out
    srv = Serving(ThreadingHTTPServer(("127.0.0.1", 0), mod.make_handler(pool, "ipam")))
    try:
        yield srv, pool
    finally:
        srv.close()


class Claims:
    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, claim: dict[str, Any]) -> ClaimRef:
        meta = claim["metadata"]
        self.claims[(meta["namespace"], meta["name"])] = claim
        return ClaimRef(meta["uid"], meta["namespace"], meta["name"])

    def get_claim(self, namespace: str, name: str) -> dict[str, Any]:
        return self.claims[(namespace, name)]


INVENTORY = {
    f"nic{i}": {"name": f"nic{i}", "ifname": f"eth{i}", "allocatable": True, "attributes": {}}
    for i in range(8)
}


def driver(tmp_path: Path, addressing: Addressing, grant: Any = None) -> tuple[Driver, Claims]:
    claims = Claims()
    d = Driver(
        driver_name=DRIVER,
        node_name=NODE,
        claims=claims,
        inventory=INVENTORY.get,
        checkpoint=Checkpoint(tmp_path / "dra"),
        detach=lambda _pod, _devices: None,
        addressing=addressing,
        grant=grant,
    )
    d.load()
    return d, claims


def profile_claim(i: int, params: dict[str, Any], device: str | None = None) -> dict[str, Any]:
    return claim_json(
        uid=f"claim-{i}",
        name=f"c{i}",
        pod_uid=f"pod-{i}",
        results=[result(device or f"nic{i}")],
        configs=[config(params)],
    )


def test_profile_addresses_from_the_pool_and_back(tmp_path: Path, ipam: tuple[Serving, Any]) -> None:
    srv, pool = ipam
    web = WebhookProvider(srv.url)
    assert web.health() == {"cloudProvider": False, "profileProvider": True}
    d, claims = driver(tmp_path, Addressing(profiles=web))
    refs = [
        claims.add(profile_claim(i, {"profile": "ipam", "interface": {"name": "net1"}})) for i in range(5)
    ]
    out = d.prepare(refs)
    addresses = set()
    for ref in refs:
        assert out[ref.uid].error == ""
        cfg = out[ref.uid].devices[0].config
        addresses.add(cfg["interface"]["addresses"][0])
        # merge: the profile gives the address and the route; the claim's own fields stay
        assert cfg["interface"]["name"] == "net1" and cfg["profile"] == "ipam"
        assert cfg["routes"] == [{"destination": "0.0.0.0/0", "gateway": "10.60.0.1"}]
    assert len(addresses) == 5 and not pool.free
    # a retry (kubelet) is answered from the checkpoint: no second address
    assert d.prepare(refs[:1])[refs[0].uid].devices[0].config == out[refs[0].uid].devices[0].config
    # the pool is exhausted: the sixth claim fails at prepare with the provider's reason
    sixth = claims.add(profile_claim(5, {"profile": "ipam"}))
    err = d.prepare([sixth])[sixth.uid].error
    assert "profile 'ipam'" in err and "HTTP 409" in err and "exhausted" in err
    assert d.get(sixth.uid) is None
    assert d.unprepare(refs) == {r.uid: "" for r in refs}
    assert len(pool.free) == pool.size and pool.held == {}


def test_the_grant_carries_the_config_with_the_profile_merged(
    tmp_path: Path, ipam: tuple[Serving, Any]
) -> None:
    """The worker refuses an attach whose config differs from the granted one (its digest): the
    grant must be of the config after the profile (and a DHCP lease) went in, as nri attaches it."""
    srv, _pool = ipam
    granted: list[Grant] = []

    def grant(prepared: list[Any], _replace: bool) -> None:  # as dra's service sends it (main.py)
        for c in prepared:
            devices = [
                {"device": d.device, "ifname": d.ifname, "config": copy.deepcopy(d.config)} for d in c.devices
            ]
            granted.append(Grant.from_request({"uid": c.uid, "pod_uids": c.pod_uids, "devices": devices}))

    d, claims = driver(tmp_path, Addressing(profiles=WebhookProvider(srv.url)), grant=grant)
    ref = claims.add(profile_claim(0, {"profile": "ipam", "interface": {"name": "net1"}}))
    dev = d.prepare([ref])[ref.uid].devices[0]
    assert dev.config["interface"]["addresses"]  # the profile's address is in
    attach = {"device": "nic0", "ifname": "eth0", "config": dev.config, "claim_uid": ref.uid}
    check_attach(granted, "pod-0", [attach])  # not refused
    with pytest.raises(Refused):  # the claim's config alone (before the merge) would be
        check_attach(
            granted, "pod-0", [{**attach, "config": {"profile": "ipam", "interface": {"name": "net1"}}}]
        )
    assert d.unprepare([ref]) == {ref.uid: ""}


def test_claim_config_wins_over_the_profile(tmp_path: Path, ipam: tuple[Serving, Any]) -> None:
    srv, _pool = ipam
    d, claims = driver(tmp_path, Addressing(profiles=WebhookProvider(srv.url)))
    mine = [{"destination": "0.0.0.0/0", "gateway": "10.60.0.6"}]
    ref = claims.add(profile_claim(1, {"profile": "ipam", "routes": mine, "interface": {"mtu": 1400}}))
    cfg = d.prepare([ref])[ref.uid].devices[0].config
    assert cfg["routes"] == mine and cfg["interface"]["mtu"] == 1400
    assert cfg["interface"]["addresses"][0].startswith("10.60.0.")


def test_refusals_are_per_claim_errors_and_nothing_is_kept(tmp_path: Path, ipam: tuple[Serving, Any]) -> None:
    srv, pool = ipam
    d, claims = driver(tmp_path, Addressing(profiles=WebhookProvider(srv.url)))
    good = claims.add(profile_claim(1, {"profile": "ipam"}))
    unknown = claims.add(profile_claim(2, {"profile": "gold"}))
    out = d.prepare([good, unknown])
    assert out[good.uid].error == ""
    assert "profile 'gold'" in out[unknown.uid].error and "HTTP 404" in out[unknown.uid].error
    # a profile whose configuration does not validate once merged: refused, and given back
    bad = claims.add(profile_claim(3, {"profile": "ipam", "interface": {"dhcp": True}}))
    err = d.prepare([bad])[bad.uid].error
    assert "merged with the provider's" in err and "interface.dhcp" in err
    assert set(pool.held) == {"claim-1/eth1"}


def test_no_provider_configured(tmp_path: Path) -> None:
    d, claims = driver(tmp_path, Addressing())
    ref = claims.add(profile_claim(1, {"profile": "ipam"}))
    assert "no profile provider is configured" in d.prepare([ref])[ref.uid].error


def test_unreachable_webhook(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    d, claims = driver(tmp_path, Addressing(profiles=WebhookProvider(f"http://127.0.0.1:{port}")))
    ref = claims.add(profile_claim(1, {"profile": "ipam"}))
    err = d.prepare([ref])[ref.uid].error
    assert "cannot reach the webhook" in err and "/GetProfileConfig" in err and "retry" in err


class Slow(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        time.sleep(1.0)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_webhook_timeout(tmp_path: Path) -> None:
    srv = Serving(ThreadingHTTPServer(("127.0.0.1", 0), Slow))
    try:
        d, claims = driver(tmp_path, Addressing(profiles=WebhookProvider(srv.url, timeout=0.2)))
        ref = claims.add(profile_claim(1, {"profile": "ipam"}))
        err = d.prepare([ref])[ref.uid].error
        assert "no answer within 0.2s" in err
    finally:
        srv.close()


class Released(BaseHTTPRequestHandler):
    """A provider whose answer makes the second device's config invalid: both are given back."""

    calls: list[tuple[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Released.calls.append((self.path, body["device"]["name"]))
        answer: dict[str, Any] = {"interface": {"addresses": ["10.70.0.2/24"]}}
        if body["device"]["name"] == "eth2":
            answer = {"interface": {"mtu": 10}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: Any) -> None:
        pass


def test_a_failing_device_gives_back_the_others_profile(tmp_path: Path) -> None:
    srv = Serving(ThreadingHTTPServer(("127.0.0.1", 0), Released))
    try:
        d, claims = driver(tmp_path, Addressing(profiles=WebhookProvider(srv.url)))
        claim = claim_json(uid="claim-9", name="c9", results=[result("nic1"), result("nic2")])
        claim["status"]["allocation"]["devices"]["config"] = [config({"profile": "p"})]
        ref = claims.add(claim)
        assert "interface.mtu" in d.prepare([ref])[ref.uid].error
        assert Released.calls == [
            ("/GetProfileConfig", "eth1"),
            ("/GetProfileConfig", "eth2"),
            ("/ReleaseProfileConfig", "eth1"),
            ("/ReleaseProfileConfig", "eth2"),  # what eth2's answer allocated goes back too
        ]
    finally:
        srv.close()


def test_unix_socket_webhook(tmp_path: Path) -> None:
    mod = _example()
    path = tmp_path / "ipam.sock"
    pool = mod.Pool("10.61.0.0/30", None, None)
    srv = Serving(mod.serve(f"unix://{path}", mod.make_handler(pool, "ipam")))
    try:
        web = WebhookProvider(f"unix://{path}")
        assert web.health()["profileProvider"] is True
        ids = DeviceIdentifiers(name="eth1", mac_address="02:00:00:00:00:01")
        got = web.profile_config(ids, "claim-1", {"profile": "ipam"})
        assert got == {"interface": {"addresses": ["10.61.0.1/30"]}}
        web.release_profile_config(ids, "claim-1", {"profile": "ipam"})
        assert pool.held == {}
        with pytest.raises(ProviderError) as err:
            web.device_attributes(ids)
        assert "HTTP 501" in err.value.message
    finally:
        srv.close()
