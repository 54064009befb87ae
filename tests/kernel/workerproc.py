"""The netns worker as a real process for kernel tests: `dranet netns` inside the node netns of a
Testbed (its own netns is the host it protects), started, stopped and killed."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dranet.services.netns.testbed import Testbed

from dranet.bus import BusClient, BusError

EXIT_WAIT = 30.0  # a hang detector, not a timing assertion


@dataclass
class WorkerNode:
    tb: Testbed
    runtime_dir: str
    state_dir: str
    logs: Path

    @property
    def allowed(self) -> str:
        """The interfaces the worker may attach: those named `<prefix>s...`."""
        return f"{self.tb.prefix}s.*"

    def start(self, name: str) -> subprocess.Popen[str]:
        """Start the worker, logging to <logs>/<name>.log; return once it answers ping (its
        journal reconciled)."""
        with open(self.logs / f"{name}.log", "w") as log:
            proc = subprocess.Popen(
                [
                    *("ip", "netns", "exec", self.tb.node, sys.executable, "-m", "dranet", "netns"),
                    *("--runtime-dir", self.runtime_dir, "--state-dir", self.state_dir),
                    *("--allowed-interfaces", self.allowed, "--log-level", "info"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
            )
        client = BusClient(self.runtime_dir, "netns")
        try:
            for _ in range(150):
                try:
                    client.call("ping", timeout=0.2)
                    return proc
                except BusError:
                    assert proc.poll() is None, f"worker exited {proc.returncode}: {self.log(name)}"
            raise AssertionError(f"worker never answered ping: {self.log(name)}")
        finally:
            client.close()

    def grant(self, pod_uid: str, devices: list[dict]) -> None:
        """Grant these attach devices to the pod, as dra does at prepare (the worker attaches
        nothing else; the grants outlive a restart of the worker)."""
        client = BusClient(self.runtime_dir, "netns")
        try:
            claim = {"uid": f"claim-{pod_uid}", "pod_uids": [pod_uid], "devices": devices}
            client.call("grant", {"claims": [claim]}, timeout=10)
        finally:
            client.close()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def stop(self, proc: subprocess.Popen[str], name: str) -> str:
        """SIGTERM; the worker must exit 0, without a crash, having logged "stopped". Its log."""
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            raise AssertionError(
                f"{name}: no exit {EXIT_WAIT:.0f} s after SIGTERM: {self.log(name)[-2000:]}"
            ) from None
        text = self.log(name)
        assert code == 0, f"{name}: exit code {code}: {text[-2000:]}"
        assert "Assertion failed" not in text and "Traceback" not in text, text[-2000:]
        assert '"msg":"stopped"' in text
        return text

    @staticmethod
    def kill(proc: subprocess.Popen[str]) -> None:
        """kill -9 (no-op once it has exited)."""
        if proc.poll() is None:
            proc.kill()
        proc.wait()
