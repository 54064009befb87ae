"""`dranet audit` against real processes holding real capability sets.

Each fake service is a small program named `dranet` (so its command line reads `dranet <service>`)
that serves the bus with the real ServiceHost, after dropping capabilities one of several ways.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dranet import audit
from dranet.settings import add_common_flags

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start processes with capabilities"),
]

# argv: dranet SERVICE RUNTIME_DIR MODE [CAPS]
#   MODE keep:    ServiceHost drops all but CAPS (comma-separated), sets no_new_privs
#   MODE nodrop:  keeps everything it was started with (root: all capabilities)
#   MODE capset:  clears effective/permitted only: bounding set full, no_new_privs off
FAKE_SERVICE = textwrap.dedent(
    """
    import argparse, ctypes, ctypes.util, sys
    from dranet.service import ServiceHost

    service, runtime_dir, mode = sys.argv[1:4]
    caps = frozenset(c for c in (sys.argv[4] if len(sys.argv) > 4 else "").split(",") if c)
    if mode == "capset":
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [("e", ctypes.c_uint32), ("p", ctypes.c_uint32), ("i", ctypes.c_uint32)]
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:
            sys.exit("capset failed")
    args = argparse.Namespace(runtime_dir=runtime_dir, state_dir=runtime_dir, log_level="error")
    host = ServiceHost(service, args, keep_caps=caps, drop_caps=(mode == "keep"))
    host.serve({})
    print("ready", flush=True)
    host.wait()
    """
)


class Fleet:
    """Fake services in one runtime dir; stops them all at the end."""

    def __init__(self, tmp: Path) -> None:
        self.runtime_dir = tmp / "run"
        self.runtime_dir.mkdir(mode=0o750)
        self.runtime_dir.chmod(0o750)
        self.script = tmp / "bin" / "dranet"
        self.script.parent.mkdir()
        self.script.write_text(FAKE_SERVICE)
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, service: str, mode: str = "keep", caps: str = "") -> int:
        cmd = [sys.executable, str(self.script), service, str(self.runtime_dir), mode, caps]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs[service] = proc
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"fake {service} did not start (exit {proc.poll()})"
        return proc.pid

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def audit(self, services: list[str]) -> audit.AuditResult:
        return audit.audit(self.runtime_dir, services, ask=lambda rd, svc: audit.ping_answer(rd, svc, 2.0))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.stop()


def _fails(result: audit.AuditResult) -> list[str]:
    return [f"{f.subject}: {f.message}" for f in result.findings if f.severity == "fail"]


def test_least_privilege_fleet_passes(fleet: Fleet) -> None:
    pids = {s: fleet.start(s) for s in ("discovery", "dra", "nri")}
    pids["netns"] = fleet.start("netns", "keep", "CAP_NET_ADMIN,CAP_SYS_ADMIN")
    result = fleet.audit(["discovery", "dra", "nri", "netns"])
    assert _fails(result) == []
    assert result.exit_code == audit.EXIT_OK
    by_service = {p.service: p for p in result.processes}
    assert {s: p.pid for s, p in by_service.items()} == pids
    assert all(p.found_by == "bus" for p in result.processes)
    assert by_service["dra"].status.cap_eff == 0
    assert by_service["dra"].status.no_new_privs
    assert by_service["netns"].status.cap_eff == audit.mask_of(audit.WORKER_CAPS)
    # Each service's own listening socket shows in its socket list.
    listen = f"unix {fleet.runtime_dir / 'dra.sock'} listen"
    sockets = by_service["dra"].sockets or []
    assert any(s == listen or s.startswith(listen + " x") for s in sockets), sockets


def _run_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`dranet audit ARGV` through the command's own entry points (add_arguments, run)."""
    parser = argparse.ArgumentParser(prog="dranet audit")
    add_common_flags(parser)
    audit.add_arguments(parser)
    code = audit.run(parser.parse_args(argv))
    return code, capsys.readouterr().out


def test_command_exit_status_and_table(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.start("dra")
    argv = ["--runtime-dir", str(fleet.runtime_dir), "--services", "dra", "--timeout", "2"]
    code, out = _run_command(argv, capsys)
    assert code == 0, out
    assert "result: PASS" in out
    fleet.runtime_dir.chmod(0o777)
    code, out = _run_command(argv, capsys)
    assert code == 1, out
    assert "FAIL  runtime dir" in out
    code, out = _run_command([*argv, "--json"], capsys)
    assert code == 1
    assert json.loads(out)["processes"][0]["found_by"] == "bus"


def test_unprivileged_service_with_network_capability_fails(fleet: Fleet) -> None:
    fleet.start("dra", "keep", "CAP_NET_RAW")
    result = fleet.audit(["dra"])
    assert result.exit_code == audit.EXIT_VIOLATION
    assert any("holds CAP_NET_RAW" in f for f in _fails(result))


def test_service_that_never_dropped_fails(fleet: Fleet) -> None:
    fleet.start("nri", "nodrop")
    result = fleet.audit(["nri"])
    assert result.exit_code == audit.EXIT_VIOLATION
    assert any("CAP_NET_ADMIN" in f and "CAP_SYS_ADMIN" in f for f in _fails(result))


def test_capabilities_regainable_by_exec_fail(fleet: Fleet) -> None:
    # Effective and permitted are empty, but the bounding set is full and no_new_privs is off.
    fleet.start("discovery", "capset")
    result = fleet.audit(["discovery"])
    (report,) = result.processes
    assert report.status.cap_eff == 0 and report.status.cap_prm == 0
    assert result.exit_code == audit.EXIT_VIOLATION
    assert any("could regain" in f for f in _fails(result))


def test_worker_with_more_than_its_two_capabilities_fails(fleet: Fleet) -> None:
    fleet.start("netns", "keep", "CAP_NET_ADMIN,CAP_SYS_ADMIN,CAP_NET_RAW")
    result = fleet.audit(["netns"])
    assert result.exit_code == audit.EXIT_VIOLATION
    assert any("CAP_NET_RAW beyond" in f for f in _fails(result))


def test_loose_socket_mode_fails(fleet: Fleet) -> None:
    fleet.start("dra")
    (fleet.runtime_dir / "dra.sock").chmod(0o666)
    result = fleet.audit(["dra"])
    assert result.exit_code == audit.EXIT_VIOLATION
    assert any("dra.sock" in f and "wider than 0660" in f for f in _fails(result))


def test_scan_finds_the_process_without_the_bus(fleet: Fleet) -> None:
    pid = fleet.start("dra")
    result = audit.audit(fleet.runtime_dir, ["dra"], ask=None)
    # Other `dranet dra` may run on this machine (other sessions): then none is audited as the one,
    # and ours is among the candidates the audit names.
    if result.processes:
        assert [(p.pid, p.found_by) for p in result.processes] == [(pid, "scan")]
    else:
        assert str(pid) in result.missing["dra"] and "--pid dra=" in result.missing["dra"]
