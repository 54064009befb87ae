"""Failures: rollback at every step, all-or-nothing, and every bad input refused with nothing changed."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dranet.services.netns.testbed import Testbed, ip

from dranet.bus import BusError

pytestmark = pytest.mark.kernel

from dranet.services.netns.worker import NetnsWorker  # noqa: E402

FULL = {
    "interface": {
        "name": "net1",
        # 10.1.0.5/24: the host's route via 10.1.0.1 moves with the link and needs it on-link
        "addresses": ["10.9.0.2/24", "10.1.0.5/24", "fd00:9::2/64"],
        "mtu": 1400,
        "arpIgnore": 1,
        "hardwareAddr": "02:aa:bb:cc:dd:02",
    },
    "routes": [{"destination": "10.77.0.0/16", "gateway": "10.9.0.1"}],
    "rules": [{"priority": 500, "source": "10.9.0.0/24", "table": 200}],
    "neighbors": [{"destination": "10.9.0.7", "hardwareAddr": "02:00:00:00:00:07"}],
    "ethtool": {"features": {"tx-checksum-ip-generic": False}},
}
STEPS = ["move", "lookup", "sysctl", "addresses", "up", "routes", "rules", "neighbors", "ethtool", "journal"]


class Boom:
    def __init__(self) -> None:
        self.step: str | None = None
        self.device: str | None = None

    def __call__(self, step: str, device: str) -> None:
        if step == self.step and (self.device is None or device == self.device):
            raise OSError(errno.EIO, f"injected failure at {step}")


@pytest.fixture
def tb(testbed: Callable[[str], Testbed]) -> Testbed:
    bed = testbed("tnf")
    bed.add_uplink("tnwup0")
    bed.add_nic("tnwa0", addresses=("10.1.0.2/24", "fd00:1::2/64"), mtu=1450)
    bed.add_nic("tnwa1", addresses=("10.2.0.2/24",))
    ip("route", "add", "10.50.0.0/16", "via", "10.1.0.1", ns=bed.node)
    return bed


@pytest.fixture
def boom() -> Boom:
    return Boom()


@pytest.fixture
def worker(tb: Testbed, tmp_path: Path, boom: Boom) -> Iterator[NetnsWorker]:
    w = NetnsWorker(
        tmp_path, host_netns=tb.node_path, hook=boom, allowed={"tnwa0", "tnwa1", "tnwup0", "eth9"}
    )
    w.start(watch_interval=0)
    try:
        yield w
    finally:
        w.close()


def snapshot(tb: Testbed, pod: str) -> tuple:
    host = tuple(
        (
            n,
            tb.link(n)["mtu"],
            tb.link(n)["address"],
            tuple(tb.addresses(n)),  # type: ignore[index]
            tuple(sorted(str(r) for r in tb.routes(n))),
        )
        for n in ("tnwa0", "tnwa1")
    )
    pod_links = tuple(sorted(link["ifname"] for link in __import__("json").loads(ip("-j", "link", ns=pod))))
    return host, pod_links


@pytest.mark.parametrize("step", STEPS)
def test_rollback_at_each_step(tb: Testbed, worker: NetnsWorker, boom: Boom, step: str) -> None:
    pod = tb.add_netns()
    before = snapshot(tb, pod)
    boom.step = step
    with pytest.raises(BusError) as err:
        worker.attach("pod-x", f"/run/netns/{pod}", [{"device": "a0", "ifname": "tnwa0", "config": FULL}])
    assert err.value.code == "kernel_error"
    if step != "journal":
        assert f"step {step!r}" in err.value.message and "injected failure" in err.value.message
    assert snapshot(tb, pod) == before
    assert worker.queries.attachments() == {"attachments": []}
    assert list((worker.journal.dir).glob("*.json")) == []


def test_all_or_nothing_across_devices(tb: Testbed, worker: NetnsWorker, boom: Boom) -> None:
    pod = tb.add_netns()
    before = snapshot(tb, pod)
    boom.step, boom.device = "up", "a1"
    devs = [
        {"device": "a0", "ifname": "tnwa0", "config": FULL},
        {"device": "a1", "ifname": "tnwa1", "config": {"interface": {"name": "net2"}}},
    ]
    with pytest.raises(BusError) as err:
        worker.attach("pod-x", f"/run/netns/{pod}", devs)
    assert "a1: step 'up'" in err.value.message
    assert snapshot(tb, pod) == before


def test_deadline_not_started(tb: Testbed, worker: NetnsWorker) -> None:
    import time

    pod = tb.add_netns()
    before = snapshot(tb, pod)
    with pytest.raises(BusError) as err:
        worker.attach(
            "pod-x",
            f"/run/netns/{pod}",
            [{"device": "a0", "ifname": "tnwa0", "config": {}}],
            deadline=time.monotonic() + 0.001,
        )
    assert err.value.code == "deadline_exceeded"
    assert snapshot(tb, pod) == before


def _bad_cases(tb: Testbed, tmp: Path) -> list[tuple[str, str, list[dict], str]]:
    ok = [{"device": "a0", "ifname": "tnwa0", "config": {}}]
    regular = Path(f"/run/netns/{tb.prefix}-file-{tb.tag}")
    regular.write_text("not a netns")
    outside = tmp / "ns"
    outside.write_text("")
    ip("netns", "add", f"{tb.prefix}-out-{tb.tag}")
    tb.namespaces.append(f"{tb.prefix}-out-{tb.tag}")
    os.system(f"mount --bind /run/netns/{tb.prefix}-out-{tb.tag} {outside}")
    link = Path(f"/run/netns/{tb.prefix}-link-{tb.tag}")
    link.symlink_to(outside)
    pod = tb.add_netns()
    p = f"/run/netns/{pod}"

    def cfg(c: dict) -> list[dict]:
        return [{"device": "a0", "ifname": "tnwa0", "config": c}]

    return [
        ("unknown interface", p, [{"device": "a0", "ifname": "eth9", "config": {}}], "not_found"),
        ("not in inventory", p, [{"device": "a0", "ifname": "tnwup9", "config": {}}], "not_found"),
        ("the uplink", p, [{"device": "a0", "ifname": "tnwup0", "config": {}}], "not_allowed"),
        ("not a netns", str(regular), ok, "not_allowed"),
        ("missing netns", "/run/netns/tnw-nope-x", ok, "not_found"),
        ("the host netns", tb.node_path, ok, "not_allowed"),
        ("init netns", "/proc/1/ns/net", ok, "not_allowed"),
        ("our own netns", "/proc/self/ns/net", ok, "not_allowed"),
        ("symlink escape", str(link), ok, "not_allowed"),
        ("outside roots", str(outside), ok, "not_allowed"),
        ("relative path", "run/netns/x", ok, "not_allowed"),
        ("bad host name", p, [{"device": "a0", "ifname": "bad/name", "config": {}}], "invalid_config"),
        ("bad device name", p, [{"device": "../x", "ifname": "tnwa0", "config": {}}], "invalid_config"),
        ("bad pod name", p, cfg({"interface": {"name": "way-too-long-name0"}}), "invalid_config"),
        ("bad cidr", p, cfg({"interface": {"addresses": ["10.0.0.300/24"]}}), "invalid_config"),
        ("mtu too small", p, cfg({"interface": {"mtu": 10}}), "invalid_config"),
        ("unknown field", p, cfg({"interface": {"nmae": "x"}}), "invalid_config"),
        (
            "off-link gateway",
            p,
            cfg(
                {
                    "interface": {"addresses": ["10.9.0.2/24"]},
                    "routes": [{"destination": "10.8.0.0/16", "gateway": "10.10.0.1"}],
                }
            ),
            "invalid_config",
        ),
        (
            "unknown ethtool feature",
            p,
            cfg({"ethtool": {"features": {"warp-drive": True}}}),
            "invalid_config",
        ),
        (
            "too many devices",
            p,
            [{"device": f"d{i}", "ifname": f"x{i}", "config": {}} for i in range(65)],
            "invalid_config",
        ),
        ("duplicate device", p, [ok[0], {"device": "a0", "ifname": "tnwa1", "config": {}}], "invalid_config"),
        (
            "same pod name twice",
            p,
            [
                {"device": "a0", "ifname": "tnwa0", "config": {"interface": {"name": "e"}}},
                {"device": "a1", "ifname": "tnwa1", "config": {"interface": {"name": "e"}}},
            ],
            "invalid_config",
        ),
    ]


def test_bad_inputs_refused_and_nothing_changed(tb: Testbed, worker: NetnsWorker, tmp_path: Path) -> None:
    cases = _bad_cases(tb, tmp_path)
    pod = cases[0][1].rsplit("/", 1)[1]
    before = snapshot(tb, pod)
    try:
        for name, path, devs, code in cases:
            with pytest.raises(BusError) as err:
                worker.attach("pod-bad", path, devs)
            assert err.value.code == code, f"{name}: {err.value}"
            assert err.value.message, name
            assert snapshot(tb, pod) == before, name
        with pytest.raises(BusError) as err:
            worker.attach("../pod", f"/run/netns/{pod}", [{"device": "a0", "ifname": "tnwa0", "config": {}}])
        assert err.value.code == "invalid_config"
        assert worker.queries.attachments() == {"attachments": []}
    finally:
        os.system(f"umount {tmp_path / 'ns'} 2>/dev/null")
        for leftover in (f"file-{tb.tag}", f"link-{tb.tag}"):
            Path(f"/run/netns/{tb.prefix}-{leftover}").unlink(missing_ok=True)


def test_not_in_allowed_set(tb: Testbed, worker: NetnsWorker) -> None:
    tb.add_nic("tnwz0")
    pod = tb.add_netns()
    with pytest.raises(BusError) as err:
        worker.attach("pod-z", f"/run/netns/{pod}", [{"device": "z", "ifname": "tnwz0", "config": {}}])
    assert err.value.code == "not_allowed" and "inventory" in err.value.message
