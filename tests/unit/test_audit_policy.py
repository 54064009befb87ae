"""dranet.audit: decoding /proc text, the privilege policy, and the audit over a synthetic /proc."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest

from dranet import audit
from dranet.audit import Finding, ProcessReport, ProcStatus
from dranet.bus.policy import PeerPolicy

ALL = audit.all_caps_mask()
WORKER = audit.mask_of({"CAP_NET_ADMIN", "CAP_SYS_ADMIN"})


def status_text(
    uid: int = 0, eff: int = 0, prm: int = 0, bnd: int = 0, nnp: int = 1, seccomp: int = 2
) -> str:
    return (
        "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t42\n"
        f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\n"
        f"CapInh:\t0000000000000000\nCapPrm:\t{prm:016x}\nCapEff:\t{eff:016x}\n"
        f"CapBnd:\t{bnd:016x}\nCapAmb:\t0000000000000000\nNoNewPrivs:\t{nnp}\n"
        f"Seccomp:\t{seccomp}\nSeccomp_filters:\t1\n"
    )


def report(
    service: str, eff: int = 0, prm: int | None = None, bnd: int = 0, nnp: bool = True
) -> ProcessReport:
    st = ProcStatus("python3", 0, eff, eff if prm is None else prm, bnd, 0, nnp, 2)
    return ProcessReport(service, 42, st, [], "bus")


NNP_OFF = "no_new_privs is off: every service sets it at start"


def fails(findings: list[Finding]) -> list[str]:
    """The failures besides no_new_privs being off (its own finding, checked apart)."""
    return [f.message for f in findings if f.severity == "fail" and f.message != NNP_OFF]


# ---------------------------------------------------------------- decoding


def test_parse_status_reads_credentials() -> None:
    st = audit.parse_status(status_text(uid=1000, eff=WORKER, prm=WORKER, bnd=ALL, nnp=0, seccomp=2))
    assert st == ProcStatus("python3", 1000, WORKER, WORKER, ALL, 0, False, 2)


def test_parse_status_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="status"):
        audit.parse_status("Name:\tx\n")


def test_real_status_of_this_process_parses() -> None:
    st = audit.parse_status(Path("/proc/self/status").read_text())
    assert st.uid == os.geteuid()


@pytest.mark.parametrize(
    ("mask", "text"),
    [
        (0, "-"),
        (WORKER, "NET_ADMIN,SYS_ADMIN"),
        (ALL, "ALL"),
        (ALL & ~audit.mask_of({"CAP_NET_RAW"}), "ALL-{NET_RAW}"),
        (1 << 12, "NET_ADMIN"),
    ],
)
def test_format_caps(mask: int, text: str) -> None:
    assert audit.format_caps(mask) == text


def test_mask_of_and_names_round_trip() -> None:
    assert audit.mask_of({"CAP_CHOWN"}) == 1
    assert audit.mask_of({"CAP_NET_ADMIN"}) == 1 << 12
    assert audit.mask_of({"CAP_SYS_ADMIN"}) == 1 << 21


@pytest.mark.parametrize(
    ("argv", "service", "ok"),
    [
        (["/usr/bin/python3", "-m", "dranet", "dra", "--runtime-dir=/run/dranet"], "dra", True),
        (["/usr/local/bin/dranet", "netns"], "netns", True),
        (["dranet", "netns"], "nri", False),
        (["/usr/bin/python3", "/usr/local/bin/dranet", "nri"], "nri", True),
        (["/usr/bin/python3", "-m", "dranet", "audit"], "dra", False),
        (["/usr/bin/python3", "-m", "dranet"], "dra", False),
        (["/bin/sh", "-c", "dranet dra"], "dra", False),
        ([], "dra", False),
    ],
)
def test_match_service_cmdline(argv: list[str], service: str, ok: bool) -> None:
    assert audit.match_service_cmdline(argv, service) is ok


def test_parse_net_unix() -> None:
    text = (
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 111 /run/dranet/dra.sock\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 112 /run/dranet/dra.sock\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 113\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 114 @abstract\n"
    )
    assert audit.parse_net_unix(text) == {
        111: "unix /run/dranet/dra.sock listen",
        112: "unix /run/dranet/dra.sock",
        113: "unix (unnamed)",
        114: "unix @abstract listen",
    }


def test_parse_net_tcp_v4_and_v6() -> None:
    v4 = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:23D9 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 501 1 0\n"
        "   1: 0100007F:23D9 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 502 1 0\n"
    )
    assert audit.parse_net_tcp(v4) == {501: "tcp 127.0.0.1:9177 listen", 502: "tcp 127.0.0.1:9177"}
    v6 = (
        "  sl  local_address                         remote_address                        st tx rx tr tm "
        "retr uid timeout inode\n"
        "   0: 00000000000000000000000001000000:23DA 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000     0        0 601 1 0\n"
    )
    assert audit.parse_net_tcp(v6, "tcp6") == {601: "tcp6 [::1]:9178 listen"}


def test_parse_net_netlink() -> None:
    text = (
        "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n"
        "0000000000000000 0   1234       00000000 0        0        0     2        0        701\n"
        "0000000000000000 16  1235       00000000 0        0        0     2        0        702\n"
        "0000000000000000 99  1236       00000000 0        0        0     2        0        703\n"
    )
    assert audit.parse_net_netlink(text) == {701: "netlink route", 702: "netlink generic", 703: "netlink 99"}


def test_describe_sockets_counts_duplicates() -> None:
    known = {1: "unix /a listen", 2: "unix (unnamed)", 3: "unix (unnamed)"}
    assert audit.describe_sockets([1, 2, 3, 9], known) == ["other", "unix (unnamed) x2", "unix /a listen"]


# ---------------------------------------------------------------- policy


@pytest.mark.parametrize("service", ["discovery", "dra", "nri"])
def test_unprivileged_service_with_nothing_passes(service: str) -> None:
    assert audit.check_process(report(service)) == []


@pytest.mark.parametrize("cap", sorted(audit.RESTRICTED_CAPS))
def test_unprivileged_service_holding_a_restricted_cap_fails(cap: str) -> None:
    msgs = fails(audit.check_process(report("dra", eff=audit.mask_of({cap}))))
    assert len(msgs) == 1 and cap in msgs[0]


def test_permitted_only_counts_as_held() -> None:
    msgs = fails(audit.check_process(report("nri", eff=0, prm=audit.mask_of({"CAP_NET_RAW"}))))
    assert msgs and "CAP_NET_RAW" in msgs[0]


def test_harmless_capability_is_only_a_warning() -> None:
    findings = audit.check_process(report("discovery", eff=audit.mask_of({"CAP_AUDIT_WRITE"})))
    assert [f.severity for f in findings] == ["warn"]


def test_unknown_capability_number_is_restricted() -> None:
    findings = audit.check_process(report("dra", eff=1 << 50))
    assert fails(findings) and "CAP_50" in fails(findings)[0]


def test_bounding_set_counts_without_no_new_privs() -> None:
    msgs = fails(audit.check_process(report("discovery", bnd=ALL, nnp=False)))
    assert len(msgs) == 1 and "could regain" in msgs[0] and "CAP_NET_ADMIN" in msgs[0]
    # With no_new_privs an exec cannot gain anything: the bounding set does not matter.
    assert audit.check_process(report("discovery", bnd=ALL, nnp=True)) == []


def test_worker_with_exactly_its_two_capabilities_passes() -> None:
    assert audit.check_process(report("netns", eff=WORKER, bnd=WORKER)) == []
    assert [f.message for f in audit.check_process(report("netns", eff=WORKER, bnd=WORKER, nnp=False))] == [
        NNP_OFF
    ]


def test_worker_with_more_fails() -> None:
    extra = audit.mask_of({"CAP_SYS_PTRACE"})
    msgs = fails(audit.check_process(report("netns", eff=WORKER | extra)))
    assert len(msgs) == 1 and "CAP_SYS_PTRACE beyond" in msgs[0]


def test_worker_even_a_harmless_extra_fails() -> None:
    assert fails(audit.check_process(report("netns", eff=WORKER | audit.mask_of({"CAP_AUDIT_WRITE"}))))


def test_worker_regaining_more_fails() -> None:
    msgs = fails(audit.check_process(report("netns", eff=WORKER, bnd=ALL, nnp=False)))
    assert len(msgs) == 1 and "could regain" in msgs[0] and "CAP_NET_ADMIN" not in msgs[0]


DHCP = audit.mask_of({"CAP_NET_RAW", "CAP_NET_BIND_SERVICE"})


def test_worker_serving_dhcp_may_hold_dhclients_two_as_well() -> None:
    serving = report("netns", eff=WORKER | DHCP, bnd=WORKER | DHCP)
    serving.dhcp = True
    assert audit.check_process(serving) == []
    # without --dhcp the same two are beyond its policy
    msgs = fails(audit.check_process(report("netns", eff=WORKER | DHCP, bnd=WORKER | DHCP)))
    assert len(msgs) == 1 and "CAP_NET_BIND_SERVICE,CAP_NET_RAW beyond" in msgs[0]
    # and --dhcp allows those two only
    more = WORKER | DHCP | audit.mask_of({"CAP_SYS_PTRACE"})
    serving.status = ProcStatus("python3", 0, more, 0, 0, 0, True, 2)
    (msg,) = fails(audit.check_process(serving))
    assert "holds CAP_SYS_PTRACE beyond CAP_NET_ADMIN+CAP_SYS_ADMIN+CAP_NET_RAW+CAP_NET_BIND_SERVICE" in msg


def test_worker_missing_its_capabilities_warns() -> None:
    findings = audit.check_process(report("netns", eff=audit.mask_of({"CAP_NET_ADMIN"})))
    assert [f.severity for f in findings] == ["warn"]
    assert "CAP_SYS_ADMIN" in findings[0].message


DIR = stat.S_IFDIR
SOCK = stat.S_IFSOCK


@pytest.mark.parametrize(
    ("mode", "ok"), [(0o750, True), (0o700, True), (0o770, False), (0o755, False), (0o751, False)]
)
def test_runtime_dir_mode(mode: int, ok: bool) -> None:
    assert (fails(audit.check_runtime_dir("/run/dranet", DIR | mode, {})) == []) is ok


@pytest.mark.parametrize(
    ("mode", "ok"), [(0o660, True), (0o600, True), (0o700, False), (0o666, False), (0o664, False)]
)
def test_socket_mode(mode: int, ok: bool) -> None:
    assert (fails(audit.check_runtime_dir("/run/dranet", DIR | 0o750, {"dra.sock": SOCK | mode})) == []) is ok


def test_missing_runtime_dir_warns() -> None:
    assert [f.severity for f in audit.check_runtime_dir("/nope", None, {})] == ["warn"]


# ---------------------------------------------------------------- the audit over a synthetic /proc


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "net").mkdir(parents=True)
        (root / "net" / "unix").write_text("Num       RefCount Protocol Flags    Type St Inode Path\n")

    def add(
        self,
        pid: int,
        argv: list[str],
        status: str,
        sockets: dict[int, str] | None = None,
        pid_ns: tuple[str, int] | None = None,  # (its pid namespace, its pid there)
    ) -> None:
        d = self.root / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "ns").mkdir()
        ns, inner = pid_ns or ("pid:[4026531836]", pid)
        (d / "ns" / "pid").symlink_to(ns)
        status += f"NSpid:\t{pid}\t{inner}\n" if pid_ns else f"NSpid:\t{pid}\n"
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (d / "status").write_text(status)
        (d / "fd" / "0").symlink_to("/dev/null")
        lines = ["Num       RefCount Protocol Flags    Type St Inode Path"]
        for i, (inode, path) in enumerate((sockets or {}).items()):
            (d / "fd" / str(3 + i)).symlink_to(f"socket:[{inode}]")
            lines.append(f"0000000000000000: 00000002 00000000 00010000 0001 01 {inode} {path}")
        (d / "net").mkdir()
        (d / "net" / "unix").write_text("\n".join(lines) + "\n")


def good_fleet(tmp_path: Path) -> tuple[FakeProc, Path]:
    proc = FakeProc(tmp_path / "proc")
    rd = tmp_path / "run"
    rd.mkdir()
    rd.chmod(0o750)
    for i, svc in enumerate(("discovery", "dra", "nri")):
        proc.add(100 + i, ["python3", "-m", "dranet", svc], status_text(), {900 + i: f"{rd}/{svc}.sock"})
    proc.add(200, ["/usr/local/bin/dranet", "netns"], status_text(eff=WORKER, prm=WORKER, bnd=WORKER))
    proc.add(300, ["/usr/bin/sleep", "100"], status_text(eff=ALL, prm=ALL, bnd=ALL))
    return proc, rd


def test_audit_of_a_good_fleet_by_scan(tmp_path: Path) -> None:
    proc, rd = good_fleet(tmp_path)
    result = audit.audit(rd, proc_root=proc.root)
    # All four as uid 0: the bus cannot tell them apart (a warning), and why nri and netns are root.
    assert [(f.severity, f.subject) for f in result.findings] == [
        ("info", "nri (pid 102)"),
        ("info", "netns (pid 200)"),
        ("warn", "bus peer policy"),
    ]
    assert result.exit_code == audit.EXIT_OK
    split = audit.audit(rd, proc_root=proc.root, policy=PeerPolicy({"discovery": 0, "dra": 0}))
    assert [f.severity for f in split.findings] == ["info", "info", "warn"]
    assert [(p.service, p.pid, p.found_by) for p in result.processes] == [
        ("discovery", 100, "scan"),
        ("dra", 101, "scan"),
        ("nri", 102, "scan"),
        ("netns", 200, "scan"),
    ]
    assert result.processes[1].sockets == [f"unix {rd}/dra.sock listen"]
    text = audit.format_report(result)
    assert "result: PASS" in text and "NET_ADMIN,SYS_ADMIN" in text
    json.dumps(audit.to_json(result))


def test_audit_allows_dhclients_capabilities_to_a_worker_started_with_dhcp(tmp_path: Path) -> None:
    proc, rd = good_fleet(tmp_path)
    four = WORKER | DHCP
    proc.add(201, ["/usr/local/bin/dranet", "netns", "--dhcp"], status_text(eff=four, prm=four, bnd=four))
    (worker,) = audit.audit(rd, ["netns"], proc_root=proc.root, pids={"netns": 201}).processes
    assert worker.dhcp and audit.check_process(worker) == []
    (plain,) = audit.audit(rd, ["netns"], proc_root=proc.root, pids={"netns": 200}).processes
    assert not plain.dhcp


def test_audit_uses_the_bus_pid_only_when_it_runs_the_service(tmp_path: Path) -> None:
    proc, rd = good_fleet(tmp_path)
    # dra answers with its pid; nri (an older version) with a pid that here is another process
    answers = {"dra": {"pid": 101, "pid_ns": "pid:[4026531836]"}, "nri": {"pid": 300}}
    result = audit.audit(rd, ["dra", "nri"], proc_root=proc.root, ask=lambda _rd, svc: answers.get(svc))
    assert [(p.service, p.pid, p.found_by) for p in result.processes] == [
        ("dra", 101, "bus"),
        ("nri", 102, "scan"),
    ]


def two_pods(tmp_path: Path) -> tuple[FakeProc, Path]:
    """Two driver pods on one machine (two nodes' stand-ins, or a pod and a test's processes): the
    same service at the same pid (7) in two pid namespaces, 110 and 210 here."""
    proc = FakeProc(tmp_path / "proc")
    rd = tmp_path / "run"
    rd.mkdir(mode=0o750)
    proc.add(
        110, ["/opt/dranet/bin/python", "/opt/dranet/bin/dranet", "dra"], status_text(), {}, ("pid:[41]", 7)
    )
    proc.add(
        210, ["/opt/dranet/bin/python", "/opt/dranet/bin/dranet", "dra"], status_text(), {}, ("pid:[42]", 7)
    )
    proc.add(7, ["/usr/bin/sleep", "100"], status_text(eff=ALL, prm=ALL, bnd=ALL))  # pid 7 here
    return proc, rd


def test_audit_from_the_host_finds_the_pods_process_by_its_pid_namespace(tmp_path: Path) -> None:
    """The service answers from its container: pid 7 in pid namespace 42. From the host, that is
    the process whose NSpid ends in 7 in that namespace, not pid 7 and not every `dranet dra`."""
    proc, rd = two_pods(tmp_path)
    ask = {"dra": {"pid": 7, "pid_ns": "pid:[42]"}}
    result = audit.audit(rd, ["dra"], proc_root=proc.root, ask=lambda _rd, svc: ask.get(svc))
    assert [(p.service, p.pid, p.found_by) for p in result.processes] == [("dra", 210, "bus")]
    assert result.missing == {}


def test_audit_does_not_guess_between_several_processes_of_a_service(tmp_path: Path) -> None:
    """No answer on the bus and two `dranet dra` on the machine: neither is audited as the one."""
    proc, rd = two_pods(tmp_path)
    result = audit.audit(rd, ["dra"], proc_root=proc.root, ask=lambda _rd, svc: None)
    assert result.processes == []
    assert "--pid dra=" in result.missing["dra"] and "110" in result.missing["dra"]
    assert result.exit_code == audit.EXIT_INCOMPLETE


def test_audit_of_a_service_answering_from_a_pid_namespace_not_visible_here(tmp_path: Path) -> None:
    proc, rd = two_pods(tmp_path)
    ask = {"dra": {"pid": 7, "pid_ns": "pid:[43]"}}
    result = audit.audit(rd, ["dra"], proc_root=proc.root, ask=lambda _rd, svc: ask.get(svc))
    assert result.processes == []
    assert "pid:[43]" in result.missing["dra"]


def test_audit_in_the_services_own_pid_namespace_needs_not_read_its_namespace(tmp_path: Path) -> None:
    """In the netns container the worker is pid 1 and undumpable: without CAP_SYS_PTRACE its
    /proc/1/ns/pid cannot be read. The auditor's own pid namespace is the one the worker names."""
    proc, rd = good_fleet(tmp_path)
    (proc.root / "101" / "ns" / "pid").unlink()  # unreadable, as for an undumpable process
    (proc.root / "self" / "ns").mkdir(parents=True)
    (proc.root / "self" / "ns" / "pid").symlink_to("pid:[4026531836]")
    ask = {"dra": {"pid": 101, "pid_ns": "pid:[4026531836]"}}
    result = audit.audit(rd, ["dra"], proc_root=proc.root, ask=lambda _rd, svc: ask.get(svc))
    assert [(p.service, p.pid, p.found_by) for p in result.processes] == [("dra", 101, "bus")]


def test_audit_pid_flag_and_violation(tmp_path: Path) -> None:
    proc, rd = good_fleet(tmp_path)
    result = audit.audit(rd, ["dra"], proc_root=proc.root, pids={"dra": 300})
    assert result.exit_code == audit.EXIT_VIOLATION
    assert result.processes[0].found_by == "flag"


def test_audit_missing_service_is_incomplete(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path / "proc")
    rd = tmp_path / "run"
    rd.mkdir(mode=0o750)
    rd.chmod(0o750)
    result = audit.audit(rd, ["dra"], proc_root=proc.root)
    assert result.exit_code == audit.EXIT_INCOMPLETE
    assert "dra" in result.missing
    assert "result: INCOMPLETE" in audit.format_report(result)


def test_audit_gone_pid_is_incomplete(tmp_path: Path) -> None:
    proc, rd = good_fleet(tmp_path)
    result = audit.audit(rd, ["dra"], proc_root=proc.root, pids={"dra": 999})
    assert result.exit_code == audit.EXIT_INCOMPLETE


def test_audit_reads_socket_modes_in_runtime_dir(tmp_path: Path) -> None:
    proc, rd = good_fleet(tmp_path)
    path = rd / "dra.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        path.chmod(0o666)
        (rd / "not-a-socket").write_text("x")
        result = audit.audit(rd, ["dra"], proc_root=proc.root)
    assert set(result.sockets) == {"dra.sock"}
    assert result.exit_code == audit.EXIT_VIOLATION


@pytest.mark.parametrize("value", ["dra", "dra=x", "nope=12", "=12"])
def test_pid_flag_errors(value: str) -> None:
    with pytest.raises(audit.AuditError, match="SERVICE=PID"):
        audit.parse_pid_flags([value])


def test_pid_flag_parses() -> None:
    assert audit.parse_pid_flags(["dra=12", "netns=13"]) == {"dra": 12, "netns": 13}


# ---------------------------------------------------------------- issue 13: threads, identities, secrets


def test_a_thread_that_kept_a_capability_fails(tmp_path: Path) -> None:
    """capset and prctl act per thread: a thread started before the drop keeps what it had."""
    proc, rd = good_fleet(tmp_path)
    task = proc.root / "101" / "task"
    (task / "101").mkdir(parents=True)
    (task / "101" / "status").write_text(status_text())
    (task / "107").mkdir()
    (task / "107" / "status").write_text(status_text(eff=audit.mask_of({"CAP_NET_ADMIN"}), nnp=0, seccomp=0))
    result = audit.audit(rd, ["dra"], proc_root=proc.root)
    assert result.exit_code == audit.EXIT_VIOLATION
    failing = {(f.subject, f.message.split(":")[0]) for f in result.findings if f.severity == "fail"}
    assert ("dra (pid 101, thread 107)", "no_new_privs is off") in failing
    assert any(s == "dra (pid 101, thread 107)" and "CAP_NET_ADMIN" in m for s, m in failing)
    assert "THREADS" in audit.format_report(result)


def test_seccomp_off_fails() -> None:
    st = ProcStatus("python3", 0, 0, 0, 0, 0, True, 0)
    msgs = [f.message for f in audit.check_process(ProcessReport("nri", 42, st, [], "bus"))]
    assert len(msgs) == 1 and msgs[0].startswith("seccomp is disabled, not filter")


def test_a_service_under_another_uid_than_the_bus_expects_fails() -> None:
    st = ProcStatus("python3", 0, 0, 0, 0, 0, True, 2)
    dra = ProcessReport("dra", 42, st, [], "bus")
    policy = PeerPolicy({"discovery": 65101, "dra": 65102})
    msgs = [f.message for f in audit.check_identities([dra], policy) if f.severity == "fail"]
    assert len(msgs) == 1 and "runs as uid 0, but the bus peer policy takes uid 65102" in msgs[0]
    ok = ProcessReport("dra", 42, ProcStatus("python3", 65102, 0, 0, 0, 0, True, 2), [], "bus")
    assert audit.check_identities([ok], policy) == []  # nri and netns share uid 0: no warning


def test_the_worker_seeing_a_token_fails() -> None:
    st = ProcStatus("python3", 0, WORKER, WORKER, WORKER, 0, True, 2)
    worker = ProcessReport("netns", 7, st, [], "bus", sees_token=True, pidns="pid:[1]")
    dra = ProcessReport("dra", 8, st, [], "bus", sees_token=True, pidns="pid:[1]")
    found = audit.check_secrets([worker, dra])
    assert [f.severity for f in found] == ["fail", "warn"]
    assert (
        "token is in its filesystem" in found[0].message
        and "shares a pid namespace with dra" in found[1].message
    )
    alone = ProcessReport("netns", 7, st, [], "bus", pidns="pid:[2]")
    assert audit.check_secrets([alone, dra]) == []
