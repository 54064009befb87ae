"""`dranet run`: the four services under supervisord; one killed comes back alone; SIGTERM cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dranet.bus.endpoints import SERVICES
from dranet.status import query

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the netns worker keeps NET_ADMIN/SYS_ADMIN: needs root"
)


def _wait(cond: Any, timeout: float = 20.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _all_up(rd: Path) -> dict[str, Any] | None:
    res = query(rd, SERVICES, timeout=0.5)
    return res if all(isinstance(r, dict) for r in res.values()) else None


def test_run_restart_one_and_stop(tmp_path: Path) -> None:
    rd, sd = tmp_path / "run", tmp_path / "state"
    kubelet = tmp_path / "kubelet"
    argv = [
        sys.executable,
        "-m",
        "dranet",
        "run",
        "--runtime-dir",
        str(rd),
        "--state-dir",
        str(sd),
        "--node-name",
        "node-sup",
        "--kubeconfig",
        str(tmp_path / "no-such-kubeconfig"),
        "--dra-args",
        f"--kubelet-registry-dir {kubelet}/plugins_registry --kubelet-plugins-dir {kubelet}/plugins "
        f"--cdi-dir {tmp_path}/cdi",
        "--nri-args",
        f"--nri-socket {tmp_path}/no-nri.sock",
        "--discovery-args",
        "--sysfs-root /nonexistent-sysfs",
    ]
    sup = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = _wait(lambda: _all_up(rd), what="all four services to answer ping")
        victim = "dra"
        os.kill(first[victim]["pid"], signal.SIGKILL)

        # the others keep answering while the victim is down and after it is back
        def back() -> dict[str, Any] | None:
            res = _all_up(rd)
            return res if res and res[victim]["pid"] != first[victim]["pid"] else None

        again = _wait(back, what=f"{victim} to be restarted")
        for other in SERVICES:
            if other != victim:
                assert again[other]["pid"] == first[other]["pid"], f"{other} was restarted too"
        status = subprocess.run(
            [sys.executable, "-m", "dranet", "status", "--runtime-dir", str(rd)],
            capture_output=True,
            text=True,
        )
        for name in SERVICES:
            assert name in status.stdout
        assert "DOWN" not in status.stdout
        # No kubelet, no runtime, no kubeconfig here: alive (liveness passes), but dra and nri are
        # not ready (readiness fails) and say why; only dra, whose kubeconfig is missing, has a
        # fault to fix (unhealthy).
        rows = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
        assert status.returncode == 1
        assert "not registered with the kubelet" in rows["dra"] and "UNHEALTHY" in rows["dra"]
        assert "NOT READY" in rows["nri"] and "not connected to the runtime" in rows["nri"]
        live = subprocess.run(
            [sys.executable, "-m", "dranet", "status", "--live", "--runtime-dir", str(rd)],
            capture_output=True,
            text=True,
        )
        assert live.returncode == 0, live.stdout
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(30)
    assert sup.returncode == 0
    leftovers = sorted(p.name for p in rd.glob("*.sock"))
    assert leftovers == [], f"socket files left behind: {leftovers}"
    res = query(rd, SERVICES, timeout=0.3)
    assert all(isinstance(r, str) for r in res.values())
