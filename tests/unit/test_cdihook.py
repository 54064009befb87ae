"""The CDI hook's decisions: the OCI state it accepts, how long it waits, what it tells the user."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from dranet.bus import BusError, ErrorCode
from dranet.cdihook import HookError, OciState, parse_state, refusal, wait_attached


def test_parse_state_takes_pid_id_and_pod_annotations() -> None:
    state = parse_state(
        json.dumps(
            {
                "ociVersion": "1.2.0",
                "id": "c0ffee",
                "status": "created",
                "pid": 4242,
                "bundle": "/run/x",
                "annotations": {
                    "io.kubernetes.cri.sandbox-namespace": "default",
                    "io.kubernetes.cri.sandbox-name": "web-0",
                },
            }
        ).encode()
    )
    assert state == OciState(
        "c0ffee",
        4242,
        {"io.kubernetes.cri.sandbox-namespace": "default", "io.kubernetes.cri.sandbox-name": "web-0"},
    )
    assert state.pod == "default/web-0"
    assert parse_state(b'{"id": "x", "pid": 7}').pod == ""


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"id": "x"}', "no process id"),
        (b'{"pid": 0}', "no process id"),
        (b'{"pid": true}', "no process id"),
        (b'{"pid": "12"}', "no process id"),
    ],
)
def test_parse_state_refuses_what_is_not_a_running_container(data: bytes, why: str) -> None:
    with pytest.raises(HookError, match=why):
        parse_state(data)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_attached_at_once_passes_without_waiting() -> None:
    clock = Clock()
    asked: list[tuple[list[str], float]] = []

    def ask(devices: Sequence[str], timeout: float) -> list[str]:
        asked.append((list(devices), timeout))
        return []

    assert wait_attached(ask, ["eth1"], 5.0, clock=clock, sleep=clock.sleep) == ""
    assert asked == [(["eth1"], 1.0)] and clock.sleeps == []


def test_attachment_that_arrives_within_the_wait_passes() -> None:
    clock = Clock()

    def ask(devices: Sequence[str], timeout: float) -> list[str]:
        return [] if clock.now >= 101.0 else list(devices)  # late attach lands after one second

    assert wait_attached(ask, ["eth1"], 5.0, clock=clock, sleep=clock.sleep) == ""
    assert 101.0 <= clock.now < 101.6


def test_never_attached_refuses_after_the_bounded_wait_naming_the_devices() -> None:
    clock = Clock()

    def ask(devices: Sequence[str], timeout: float) -> list[str]:
        assert 0 < timeout <= 1.0
        return [d for d in devices if d != "eth1"]

    reason = wait_attached(ask, ["eth1", "eth2"], 3.0, clock=clock, sleep=clock.sleep)
    assert reason == "eth2 not attached in the container's network namespace"
    assert clock.now == pytest.approx(103.0)  # exactly the wait, never more
    assert clock.sleeps[:3] == [0.1, 0.2, 0.4] and max(clock.sleeps) <= 0.5  # backs off, keeps asking


def test_worker_down_refuses_with_its_error() -> None:
    clock = Clock()

    def ask(devices: Sequence[str], timeout: float) -> list[str]:
        clock.now += timeout  # a call that times out uses its time
        raise BusError(ErrorCode.TIMEOUT, "no reply from netns")

    reason = wait_attached(ask, ["eth1"], 2.0, clock=clock, sleep=clock.sleep)
    assert reason == "the netns worker did not answer (timeout: no reply from netns)"
    assert clock.now <= 102.0 + 0.05


def test_refusal_names_pod_claim_reason_and_what_to_do() -> None:
    state = OciState(
        "c0ffee", 1, {"io.kubernetes.cri.sandbox-namespace": "ns", "io.kubernetes.cri.sandbox-name": "p"}
    )
    msg = refusal(state, "claim-1", "eth1 not attached in the container's network namespace", 5.0)
    assert msg.startswith("dranet: pod ns/p, claim claim-1: eth1 not attached")
    assert "after 5s" in msg and "dranet status" in msg and "kubelet retries" in msg
    assert "container c0ffee" in refusal(OciState("c0ffee", 1, {}), "claim-1", "x", 5.0)
