"""`dranet audit`: least-privilege audit of the running services, read from /proc.

For each service it finds the process (by the pid and pid namespace the service reports over the
bus, through NSpid; else by a scan of /proc for its command line, used only when it finds one),
reads its credentials from /proc/<pid>/status and its sockets from /proc/<pid>/fd, checks them
against the privilege split of the design, and checks the runtime
directory's permissions. Exit status: 0 every check passed, 1 a violation, 2 nothing violated but
something could not be audited (a service not found).

The policy, in one place (docs/troubleshooting.md explains each finding):
- discovery, dra and nri may hold none of RESTRICTED_CAPS: capabilities that change the network or
  administer the machine, bypass file permissions or change identity. Any other capability they
  hold is a warning (the design says they drop every capability).
- netns may hold CAP_NET_ADMIN and CAP_SYS_ADMIN and nothing else; started with --dhcp (its
  command line), also dhclient's CAP_NET_RAW and CAP_NET_BIND_SERVICE.
- "Hold" covers what an execve could regain: while no_new_privs is off, a setuid-root or file-
  capability program would get the whole bounding set, so the bounding set counts too.
- The runtime directory must not be group-writable nor accessible to others (0750 or stricter),
  and its sockets must give others nothing and the group at most read/write (0660 or stricter).
- Every thread (/proc/<pid>/task/*) is checked, not just the main one: capset and prctl act per
  thread, so a thread started before the drop would keep what the main thread gave up.
- Every service sets no_new_privs and runs under its seccomp filter (mode "filter").
- Identities: each service runs as the uid the bus peer policy (--service-uids) takes it for, and a
  uid shared by services is reported with what it costs (dranet/bus/policy.py); nri and the
  worker stay uid 0, and the audit says why.
- Secrets: the worker must see no ServiceAccount token, neither in its own filesystem nor through
  /proc/<pid>/root of a service it shares a pid namespace with.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dranet.bus.endpoints import SERVICES
from dranet.bus.policy import PeerPolicy
from dranet.capabilities import CAP_NAMES, WORKER_CAPS, WORKER_DHCP_CAPS, cap_number, names_of

WORKER = "netns"

# Capabilities an unprivileged service must never hold. Network: change or snoop on the network, or
# bind privileged ports. Admin: change the kernel, other processes or the security policy. Identity
# and files: read or write any file, or become another user. Unknown numbers (a newer kernel)
# count as restricted.
NETWORK_CAPS = frozenset({"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST"})
ADMIN_CAPS = frozenset(
    {
        "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_PTRACE", "CAP_SYS_BOOT",
        "CAP_SYS_TIME", "CAP_SYS_CHROOT", "CAP_SYS_RESOURCE", "CAP_BPF", "CAP_PERFMON",
        "CAP_CHECKPOINT_RESTORE", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_AUDIT_CONTROL",
        "CAP_SYSLOG", "CAP_LINUX_IMMUTABLE", "CAP_MKNOD", "CAP_IPC_OWNER", "CAP_KILL",
    }
)  # fmt: skip
IDENTITY_CAPS = frozenset(
    {
        "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_CHOWN",
        "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETFCAP",
    }
)  # fmt: skip
RESTRICTED_CAPS = NETWORK_CAPS | ADMIN_CAPS | IDENTITY_CAPS

RUNTIME_DIR_FORBIDDEN = 0o027  # group write, anything for others
SOCKET_FORBIDDEN = 0o117  # execute bits, anything for others: 0660 or stricter

SECCOMP_MODES = {0: "disabled", 1: "strict", 2: "filter"}
SECCOMP_FILTER = 2  # what the design says for every service (dranet/syscalls.py)
TOKEN_PATH = "var/run/secrets/kubernetes.io/serviceaccount/token"
# Seen through /proc/<pid>/root, an absolute symlink (Debian's /var/run -> /run) resolves in the
# auditor's root, not the process's: look under both spellings.
TOKEN_PATHS = (TOKEN_PATH, TOKEN_PATH.removeprefix("var/"))
# Why a service keeps uid 0 (the audit says so; docs/architecture.md, threat model).
ROOT_REASONS = {
    "nri": "the runtime's NRI socket is root's, and nri reconnects to it whenever the runtime restarts",
    "netns": "it opens pod netns files and holds CAP_NET_ADMIN+CAP_SYS_ADMIN",
}
NETLINK_PROTOCOLS = {0: "route", 4: "sock_diag", 9: "audit", 15: "uevent", 16: "generic"}

EXIT_OK, EXIT_VIOLATION, EXIT_INCOMPLETE = 0, 1, 2


class AuditError(Exception):
    """The audit itself could not run (bad flag value); the message says what to fix."""


# ---------------------------------------------------------------- pure: decoding


@dataclass(frozen=True)
class ProcStatus:
    """The credential fields of /proc/<pid>/status."""

    name: str
    uid: int  # effective
    cap_eff: int
    cap_prm: int
    cap_bnd: int
    cap_amb: int
    no_new_privs: bool
    seccomp: int


def parse_status(text: str) -> ProcStatus:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    try:
        return ProcStatus(
            name=fields.get("Name", ""),
            uid=int(fields["Uid"].split()[1]),
            cap_eff=int(fields["CapEff"], 16),
            cap_prm=int(fields["CapPrm"], 16),
            cap_bnd=int(fields["CapBnd"], 16),
            cap_amb=int(fields.get("CapAmb", "0"), 16),
            no_new_privs=fields.get("NoNewPrivs", "0") == "1",
            seccomp=int(fields.get("Seccomp", "0")),
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"not a /proc/<pid>/status text: {exc!r}") from None


def all_caps_mask(last_cap: int = len(CAP_NAMES) - 1) -> int:
    return (1 << (last_cap + 1)) - 1


def mask_of(names: Iterable[str]) -> int:
    mask = 0
    for n in names:
        mask |= 1 << cap_number(n)
    return mask


def format_caps(mask: int, full: int | None = None) -> str:
    """Short text for a capability set: '-', 'ALL', 'ALL-{X,Y}' or 'NET_ADMIN,SYS_ADMIN'."""
    full = all_caps_mask() if full is None else full
    if mask == 0:
        return "-"
    short = [n.removeprefix("CAP_") for n in names_of(mask)]
    if mask & full == full:
        return "ALL"
    missing = full & ~mask
    if bin(missing).count("1") < len(short):
        return "ALL-{" + ",".join(n.removeprefix("CAP_") for n in names_of(missing)) + "}"
    return ",".join(short)


def match_service_cmdline(argv: Sequence[str], service: str) -> bool:
    """True for `dranet <service> ...` and `python -m dranet <service> ...` (any path to either)."""
    for i, arg in enumerate(argv[:-1]):
        if os.path.basename(arg) == "dranet" or (arg == "-m" and argv[i + 1] in ("dranet", "dranet.cli")):
            rest = argv[i + 2 :] if arg == "-m" else argv[i + 1 :]
            return bool(rest) and rest[0] == service
    return False


def parse_net_unix(text: str) -> dict[int, str]:
    """/proc/net/unix -> inode: 'unix PATH' (with ' listen' for listening sockets)."""
    out: dict[int, str] = {}
    for line in text.splitlines()[1:]:
        parts = line.split(None, 7)
        if len(parts) < 7:
            continue
        inode, flags = int(parts[6]), int(parts[3], 16)
        path = parts[7] if len(parts) == 8 else "(unnamed)"
        out[inode] = f"unix {path}" + (" listen" if flags & 0x10000 else "")
    return out


def _inet_addr(hexaddr: str) -> str:
    host, port = hexaddr.split(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        addr = ".".join(str(b) for b in words)
    else:
        addr = "[" + str(ipaddress.IPv6Address(words)) + "]"
    return f"{addr}:{int(port, 16)}"


def parse_net_tcp(text: str, family: str = "tcp") -> dict[int, str]:
    """/proc/net/tcp or tcp6 -> inode: 'tcp ADDR:PORT listen' or 'tcp ADDR:PORT'."""
    out: dict[int, str] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        state = " listen" if parts[3] == "0A" else ""
        out[int(parts[9])] = f"{family} {_inet_addr(parts[1])}{state}"
    return out


def parse_net_netlink(text: str) -> dict[int, str]:
    """/proc/net/netlink -> inode: 'netlink route' (protocol name or number)."""
    out: dict[int, str] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        proto = int(parts[1])
        out[int(parts[9])] = f"netlink {NETLINK_PROTOCOLS.get(proto, str(proto))}"
    return out


def describe_sockets(inodes: Iterable[int], known: Mapping[int, str]) -> list[str]:
    """Sorted, de-duplicated descriptions ('unix /run/dranet/dra.sock listen', '... x3')."""
    counts = Counter(known.get(i, "other") for i in inodes)
    return [f"{d} x{n}" if n > 1 else d for d, n in sorted(counts.items())]


# ---------------------------------------------------------------- pure: policy


@dataclass
class ProcessReport:
    service: str
    pid: int
    status: ProcStatus
    sockets: list[str] | None  # None: /proc/<pid>/fd not readable from here
    found_by: str  # "bus", "scan" or "flag"
    threads: dict[int, ProcStatus] = field(default_factory=dict)  # tid -> its credentials
    sees_token: bool = False  # a ServiceAccount token is readable in its root filesystem
    pidns: str = ""  # its pid namespace ("pid:[...]"), "" when unreadable
    dhcp: bool = False  # the worker runs with --dhcp (its command line)


@dataclass(frozen=True)
class Finding:
    severity: str  # "fail" or "warn"
    subject: str  # "dra (pid 42)", "runtime dir /run/dranet", ...
    message: str


def check_process(p: ProcessReport) -> list[Finding]:
    """Every thread's credentials against the service's role (a finding once per message)."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for tid, status in [(p.pid, p.status), *sorted(p.threads.items())]:
        subject = f"{p.service} (pid {p.pid})" if tid == p.pid else f"{p.service} (pid {p.pid}, thread {tid})"
        for f in _check_status(p.service, subject, status, p.dhcp):
            if f.message not in seen:
                seen.add(f.message)
                findings.append(f)
    return findings


def _check_status(service: str, subject: str, s: ProcStatus, dhcp: bool) -> list[Finding]:
    findings = []
    if not s.no_new_privs:
        findings.append(Finding("fail", subject, "no_new_privs is off: every service sets it at start"))
    if s.seccomp != SECCOMP_FILTER:
        mode = SECCOMP_MODES.get(s.seccomp, str(s.seccomp))
        findings.append(
            Finding(
                "fail",
                subject,
                f"seccomp is {mode}, not filter: every service loads its syscall allowlist at start "
                "(install python3-seccomp)",
            )
        )
    return findings + _check_caps(service, subject, s, dhcp)


def _check_caps(service: str, subject: str, s: ProcStatus, dhcp: bool) -> list[Finding]:
    held = s.cap_eff | s.cap_prm | s.cap_amb
    # Without no_new_privs, executing a setuid-root or file-capability program grants the bounding set.
    regainable = 0 if s.no_new_privs else s.cap_bnd & ~held
    findings: list[Finding] = []
    if service == WORKER:
        allowed = mask_of(WORKER_CAPS | (WORKER_DHCP_CAPS if dhcp else frozenset()))
        if held & ~allowed:
            policy = "CAP_NET_ADMIN+CAP_SYS_ADMIN" + ("+CAP_NET_RAW+CAP_NET_BIND_SERVICE" if dhcp else "")
            findings.append(Finding("fail", subject, f"holds {_names(held & ~allowed)} beyond {policy}"))
        if regainable & ~allowed:
            findings.append(Finding("fail", subject, _regain_message(regainable & ~allowed)))
        missing = mask_of(WORKER_CAPS) & ~s.cap_eff
        if missing:
            findings.append(
                Finding(
                    "warn",
                    subject,
                    f"lacks {_names(missing)} in its effective set: it cannot attach interfaces",
                )
            )
        return findings
    restricted = mask_of(RESTRICTED_CAPS) | ~all_caps_mask()
    if held & restricted:
        findings.append(
            Finding(
                "fail", subject, f"holds {_names(held & restricted)}: only the netns worker may have these"
            )
        )
    if regainable & restricted:
        findings.append(Finding("fail", subject, _regain_message(regainable & restricted)))
    if held & ~restricted:
        findings.append(
            Finding(
                "warn", subject, f"holds {_names(held & ~restricted)}: unprivileged services should hold none"
            )
        )
    return findings


def _names(mask: int) -> str:
    return ",".join(names_of(mask))


def _regain_message(mask: int) -> str:
    return (
        f"could regain {_names(mask)} by executing a setuid or file-capability program: no_new_privs is off "
        "and its bounding set still has them (set no_new_privs or drop them from the bounding set)"
    )


def check_identities(processes: Sequence[ProcessReport], policy: PeerPolicy) -> list[Finding]:
    """Each service runs as the uid the bus takes it for; what a shared uid costs; why uid 0."""
    findings = []
    for p in processes:
        subject = f"{p.service} (pid {p.pid})"
        want = policy.uid_of(p.service)
        if p.status.uid != want:
            findings.append(
                Finding(
                    "fail",
                    subject,
                    f"runs as uid {p.status.uid}, but the bus peer policy takes uid {want} for it "
                    "(--service-uids and --run-as disagree): its calls are refused or another's",
                )
            )
        elif want == 0 and p.service in ROOT_REASONS:
            findings.append(Finding("info", subject, f"uid 0: {ROOT_REASONS[p.service]}"))
    for uid, names in sorted(policy.shared().items()):
        if "dra" in names or "discovery" in names:
            findings.append(
                Finding(
                    "warn",
                    "bus peer policy",
                    f"{', '.join(names)} share uid {uid}: the bus cannot tell them apart, so each may "
                    "call the others' ops (a hostile nri could push grants as dra); run discovery and "
                    "dra with --run-as and name their uids in --service-uids",
                )
            )
    return findings


def check_secrets(processes: Sequence[ProcessReport]) -> list[Finding]:
    """The worker needs no API credentials: it must see no token, its own or another's."""
    findings = []
    holders = [p for p in processes if p.service != WORKER and p.sees_token]
    for w in (p for p in processes if p.service == WORKER):
        subject = f"{w.service} (pid {w.pid})"
        if w.sees_token:
            findings.append(
                Finding("fail", subject, f"a ServiceAccount token is in its filesystem (/{TOKEN_PATH})")
            )
        shared = [h.service for h in holders if w.pidns and h.pidns == w.pidns]
        if shared:
            findings.append(
                Finding(
                    "warn",
                    subject,
                    f"shares a pid namespace with {', '.join(shared)}, which hold the token: only their "
                    "undumpable flag keeps it from /proc/<pid>/root (the DaemonSet shares none)",
                )
            )
    return findings


def check_runtime_dir(path: str, mode: int | None, sockets: Mapping[str, int]) -> list[Finding]:
    """mode: the directory's st_mode (None when it does not exist); sockets: file name -> st_mode."""
    subject = f"runtime dir {path}"
    if mode is None:
        return [Finding("warn", subject, "does not exist: no service is running with this --runtime-dir")]
    findings = []
    if mode & RUNTIME_DIR_FORBIDDEN:
        findings.append(
            Finding(
                "fail",
                subject,
                f"mode {stat.S_IMODE(mode):04o} lets the group write or others in; want 0750 or stricter",
            )
        )
    for name, smode in sorted(sockets.items()):
        if smode & SOCKET_FORBIDDEN:
            findings.append(
                Finding(
                    "fail",
                    f"socket {os.path.join(path, name)}",
                    f"mode {stat.S_IMODE(smode):04o} is wider than 0660",
                )
            )
    return findings


# ---------------------------------------------------------------- /proc and filesystem reading


@dataclass
class AuditResult:
    processes: list[ProcessReport] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # service -> why it was not audited
    runtime_dir: str = ""
    runtime_dir_mode: int | None = None
    sockets: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(f.severity == "fail" for f in self.findings):
            return EXIT_VIOLATION
        return EXIT_INCOMPLETE if self.missing else EXIT_OK


def read_cmdline(pid: int, proc_root: Path) -> list[str]:
    try:
        raw = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def scan_pids(service: str, proc_root: Path, exclude: Iterable[int] = ()) -> list[int]:
    """Pids whose command line is `dranet <service>`."""
    skip = set(exclude)
    pids = []
    for entry in proc_root.iterdir():
        if entry.name.isdigit() and int(entry.name) not in skip:
            if match_service_cmdline(read_cmdline(int(entry.name), proc_root), service):
                pids.append(int(entry.name))
    return sorted(pids)


def read_socket_table(pid: int, proc_root: Path) -> dict[int, str]:
    """inode -> description from the pid's network namespace view of /proc/net."""
    known: dict[int, str] = {}
    parsers: list[tuple[str, Callable[[str], dict[int, str]]]] = [
        ("unix", parse_net_unix),
        ("tcp", lambda t: parse_net_tcp(t, "tcp")),
        ("tcp6", lambda t: parse_net_tcp(t, "tcp6")),
        ("netlink", parse_net_netlink),
    ]
    for name, parser in parsers:
        for base in (proc_root / str(pid) / "net", proc_root / "net"):
            try:
                known.update(parser((base / name).read_text()))
                break
            except OSError:
                continue
    return known


def read_socket_inodes(pid: int, proc_root: Path) -> list[int] | None:
    """Inodes of the pid's socket fds; None when its fd table is not readable from here."""
    fd_dir = proc_root / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except PermissionError:
        return None
    inodes = []
    for name in names:
        try:
            target = os.readlink(fd_dir / name)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:[") and target.endswith("]"):
            inodes.append(int(target[8:-1]))
    return inodes


def read_threads(pid: int, proc_root: Path) -> dict[int, ProcStatus]:
    """Each thread's credentials (threads that ended meanwhile are skipped)."""
    out = {}
    try:
        tids = [int(t) for t in os.listdir(proc_root / str(pid) / "task") if t.isdigit()]
    except OSError:
        return {}
    for tid in tids:
        if tid != pid:
            try:
                out[tid] = parse_status((proc_root / str(pid) / "task" / str(tid) / "status").read_text())
            except (OSError, ValueError):
                continue
    return out


def read_process(service: str, pid: int, proc_root: Path, found_by: str) -> ProcessReport:
    """Raises OSError when the process is gone or its status is unreadable."""
    base = proc_root / str(pid)
    status = parse_status((base / "status").read_text())
    inodes = read_socket_inodes(pid, proc_root)
    sockets = None if inodes is None else describe_sockets(inodes, read_socket_table(pid, proc_root))
    try:
        pidns = os.readlink(base / "ns" / "pid")
    except OSError:
        pidns = ""
    try:
        sees_token = any(os.path.isfile(base / "root" / p) for p in TOKEN_PATHS)
    except OSError:
        sees_token = False
    dhcp = service == WORKER and "--dhcp" in read_cmdline(pid, proc_root)
    return ProcessReport(
        service, pid, status, sockets, found_by, read_threads(pid, proc_root), sees_token, pidns, dhcp
    )


def read_runtime_dir(runtime_dir: Path) -> tuple[int | None, dict[str, int]]:
    try:
        mode = runtime_dir.stat().st_mode
    except FileNotFoundError:
        return None, {}
    sockets = {}
    for entry in os.scandir(runtime_dir):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISSOCK(st.st_mode):
            sockets[entry.name] = st.st_mode
    return mode, sockets


def ping_answer(runtime_dir: Path, service: str, timeout: float) -> Mapping[str, Any] | None:
    """The service's ping reply (its pid and pid namespace), or None when it does not answer."""
    try:
        from dranet.bus.client import BusClient
        from dranet.bus.messages import BusError
    except ImportError:
        return None
    client = BusClient(runtime_dir, service, timeout=timeout)
    try:
        reply = client.call("ping", timeout=timeout)
        return reply if isinstance(reply, Mapping) and isinstance(reply.get("pid"), int) else None
    except BusError:
        return None
    finally:
        client.close()


def ping_policy(runtime_dir: Path, timeout: float) -> PeerPolicy | None:
    """The bus peer policy the worker enforces (its ping details), or None when it does not answer."""
    answer = ping_answer(runtime_dir, WORKER, timeout)
    if answer is None:
        return None
    try:
        uids = answer["details"]["peer_policy"]["uids"]
        return PeerPolicy({str(s): int(u) for s, u in uids.items()})
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def read_pid_ns(pid: int, proc_root: Path) -> str | None:
    return _readlink(proc_root / str(pid) / "ns" / "pid")


def read_nspid(pid: int, proc_root: Path) -> list[int]:
    """The pid in each pid namespace the process is in, outermost first (NSpid of its status)."""
    try:
        for line in (proc_root / str(pid) / "status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


def host_pid(pid: int, pid_ns: str, proc_root: Path) -> int | None:
    """The pid here of the process that is `pid` in the pid namespace `pid_ns` (e.g. a service in a
    container answering from its own namespace), or None when that namespace is not visible here."""
    if _readlink(proc_root / "self" / "ns" / "pid") == pid_ns:
        return pid  # our own namespace (the process's ns link may be unreadable: undumpable)
    if read_pid_ns(pid, proc_root) == pid_ns and read_nspid(pid, proc_root)[-1:] == [pid]:
        return pid  # the same namespace as ours
    for entry in proc_root.iterdir():
        if entry.name.isdigit() and read_pid_ns(int(entry.name), proc_root) == pid_ns:
            if read_nspid(int(entry.name), proc_root)[-1:] == [pid]:
                return int(entry.name)
    return None


def find_pids(
    service: str,
    runtime_dir: Path,
    proc_root: Path,
    ask: Callable[[Path, str], Mapping[str, Any] | None] | None,
) -> tuple[list[int], str, str]:
    """(pids, how found, why none). The service answering on the bus names itself: its pid in its
    own pid namespace (a container's), found here through that namespace and NSpid. Without an
    answer, a scan of /proc for `dranet <service>`, used only when it finds exactly one: on a
    machine with several (other pods, other nodes' stand-ins) it cannot tell which is this one."""
    answer = ask(runtime_dir, service) if ask is not None else None
    if answer is not None:
        pid, pid_ns = int(answer["pid"]), answer.get("pid_ns")
        here = host_pid(pid, str(pid_ns), proc_root) if pid_ns else pid
        if here is not None and match_service_cmdline(read_cmdline(here, proc_root), service):
            return [here], "bus", ""
        if pid_ns:
            return [], "bus", (
                f"answers on the bus as pid {pid} of pid namespace {pid_ns}, which is not visible "
                f"from here: run the audit in the driver's pod or on its node, or pass --pid {service}=PID"
            )
    found = scan_pids(service, proc_root, exclude=[os.getpid()])
    if len(found) > 1:
        return [], "scan", (
            f"{len(found)} processes run `dranet {service}` here (pids {', '.join(map(str, found))}) and "
            f"none answered on {runtime_dir}: pass --pid {service}=PID"
        )
    return found, "scan", "" if found else "not running, or not visible from this pid namespace"


def audit(
    runtime_dir: Path,
    services: Sequence[str] = SERVICES,
    *,
    proc_root: Path = Path("/proc"),
    pids: Mapping[str, int] | None = None,
    ask: Callable[[Path, str], Mapping[str, Any] | None] | None = None,
    policy: PeerPolicy | None = None,
) -> AuditResult:
    """policy: the services' uids as the bus knows them (--service-uids; default: all uid 0)."""
    result = AuditResult(runtime_dir=str(runtime_dir))
    for service in services:
        if pids and service in pids:
            found, how, why = [pids[service]], "flag", ""
        else:
            found, how, why = find_pids(service, runtime_dir, proc_root, ask)
        if not found:
            result.missing[service] = why
            continue
        for pid in found:
            try:
                report = read_process(service, pid, proc_root, how)
            except OSError as exc:
                result.missing[service] = f"pid {pid}: {exc.strerror or exc}"
                continue
            result.processes.append(report)
            result.findings += check_process(report)
            if report.sockets is None:
                result.findings.append(
                    Finding(
                        "warn",
                        f"{service} (pid {pid})",
                        "its sockets are not readable from here (it holds capabilities this process "
                        "lacks): run the audit where the netns worker runs",
                    )
                )
    result.findings += check_identities(result.processes, policy or PeerPolicy({}))
    result.findings += check_secrets(result.processes)
    result.runtime_dir_mode, result.sockets = read_runtime_dir(runtime_dir)
    result.findings += check_runtime_dir(str(runtime_dir), result.runtime_dir_mode, result.sockets)
    for service, why in result.missing.items():
        result.findings.append(Finding("warn", service, f"not audited: {why}"))
    return result


# ---------------------------------------------------------------- output


def format_report(result: AuditResult) -> str:
    rows = [
        (
            "SERVICE",
            "PID",
            "THREADS",
            "UID",
            "NO_NEW_PRIVS",
            "SECCOMP",
            "EFFECTIVE",
            "PERMITTED",
            "BOUNDING",
            "FOUND",
        )
    ]
    for p in result.processes:
        s = p.status
        rows.append(
            (
                p.service,
                str(p.pid),
                str(1 + len(p.threads)),
                str(s.uid),
                "yes" if s.no_new_privs else "no",
                SECCOMP_MODES.get(s.seccomp, str(s.seccomp)),
                format_caps(s.cap_eff),
                format_caps(s.cap_prm),
                format_caps(s.cap_bnd),
                p.found_by,
            )
        )
    for service, why in result.missing.items():
        rows.append((service, "-", "-", "-", "-", "-", "-", "-", "-", why))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]
    lines.append("")
    lines.append("sockets:")
    for p in result.processes:
        lines.append(f"  {p.service} (pid {p.pid}):")
        for desc in p.sockets if p.sockets is not None else ["(fd table not readable from here)"]:
            lines.append(f"    {desc}")
    mode = result.runtime_dir_mode
    lines.append("")
    lines.append(f"runtime dir {result.runtime_dir}: " + ("missing" if mode is None else stat.filemode(mode)))
    for name, smode in sorted(result.sockets.items()):
        lines.append(f"  {stat.filemode(smode)}  {name}")
    lines.append("")
    fails = [f for f in result.findings if f.severity == "fail"]
    for f in result.findings:
        lines.append(f"{f.severity.upper()}  {f.subject}: {f.message}")
    verdict = {
        EXIT_OK: "PASS",
        EXIT_VIOLATION: f"FAIL ({len(fails)} violations)",
        EXIT_INCOMPLETE: "INCOMPLETE",
    }
    lines.append(f"result: {verdict[result.exit_code]}")
    return "\n".join(lines)


def to_json(result: AuditResult) -> dict[str, Any]:
    return {
        "processes": [
            {
                "service": p.service,
                "pid": p.pid,
                "found_by": p.found_by,
                **asdict(p.status),
                "effective": names_of(p.status.cap_eff),
                "permitted": names_of(p.status.cap_prm),
                "bounding": names_of(p.status.cap_bnd),
                "sockets": p.sockets,
                "threads": 1 + len(p.threads),
                "sees_token": p.sees_token,
                "dhcp": p.dhcp,
            }
            for p in result.processes
        ],
        "missing": result.missing,
        "runtime_dir": result.runtime_dir,
        "runtime_dir_mode": None
        if result.runtime_dir_mode is None
        else f"{stat.S_IMODE(result.runtime_dir_mode):04o}",
        "sockets": {n: f"{stat.S_IMODE(m):04o}" for n, m in result.sockets.items()},
        "findings": [asdict(f) for f in result.findings],
        "exit_code": result.exit_code,
    }


# ---------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--services", default=",".join(SERVICES), help="comma-separated services to audit (default: all four)"
    )
    parser.add_argument(
        "--pid",
        action="append",
        default=[],
        metavar="SERVICE=PID",
        help="audit this pid as SERVICE instead of looking it up (repeatable)",
    )
    parser.add_argument("--proc-root", default="/proc", help="procfs to read (default %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=1.0, help="seconds to wait for each ping (default 1)"
    )
    parser.add_argument("--no-bus", action="store_true", help="find processes by scanning /proc only")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def parse_pid_flags(values: Sequence[str]) -> dict[str, int]:
    out = {}
    for v in values:
        service, sep, pid = v.partition("=")
        if not sep or service not in SERVICES or not pid.isdigit():
            raise AuditError(f"--pid {v!r}: expected SERVICE=PID with SERVICE one of {', '.join(SERVICES)}")
        out[service] = int(pid)
    return out


def run(args: argparse.Namespace) -> int:
    services = [s for s in args.services.split(",") if s]
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise SystemExit(
            f"dranet audit: unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}"
        )
    try:
        pids = parse_pid_flags(args.pid)
    except AuditError as exc:
        raise SystemExit(f"dranet audit: {exc}") from None
    timeout = float(args.timeout)
    from dranet.settings import settings_from_args

    runtime_dir = Path(getattr(args, "runtime_dir", "/run/dranet"))
    # The uids the bus knows each service by: --service-uids, else what the worker enforces.
    policy = settings_from_args(args).peers
    if not policy.uids and not args.no_bus:
        policy = ping_policy(runtime_dir, timeout) or policy
    result = audit(
        runtime_dir,
        services,
        proc_root=Path(args.proc_root),
        pids=pids,
        ask=None if args.no_bus else (lambda rd, svc: ping_answer(rd, svc, timeout)),
        policy=policy,
    )
    print(json.dumps(to_json(result), indent=2) if args.json else format_report(result))
    return result.exit_code
