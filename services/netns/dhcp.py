"""DHCPv4 leases for claims with ``interface.dhcp``, taken with ISC dhclient (Debian's
isc-dhcp-client), run by the worker in the right network namespace (nsenter).

The worker never configures from the client: dhclient runs with a hook script that only records
what the server gave (reason and ``new_*`` variables) in a file, and stays in the foreground so
the worker ends it once that file appears. Each lease lives in ``<state>/netns/dhcp/<key>.*``:
``.lease`` (dhclient's lease file), ``.json`` (our record: the host interface, the lease, when to
renew), ``.out`` (the hook's report for the run in progress).

- acquire: at prepare, on the host interface in the host netns, before the move (upstream's
  timing). The link is set up for it when it was down and set down again after.
- renew: while the device is attached, at T1 and then every T1 after, in the pod's netns on the
  pod-side name: dhclient starts from the lease file (INIT-REBOOT: a REQUEST for the same
  address), which extends the lease at the server.
- release: at unprepare, when the device is back on the host: DHCPRELEASE is unicast to the
  server, so the leased address is put on the interface for the duration of the call and taken
  off again (with the link up, and down again if it was).

Our record is the truth, never dhclient's lease file: dhclient writes that file only after the
hook has run (the worker may have ended it by then) and skips the write within 15 s of its last
one, so before a renewal or a release the file is written afresh from the record.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dranet.services.netns.netlink import Address, LinkChange, Rtnl

from dranet.config.lease import Lease, lease_routes

log = logging.getLogger(__name__)

CLIENT_PATHS = ("/usr/sbin/dhclient", "/sbin/dhclient")
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
# Options asked for; 121 (RFC 3442) is not known to dhclient by name unless declared.
CONF = """option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
timeout {timeout};
retry 60;
request subnet-mask, broadcast-address, routers, interface-mtu,
        rfc3442-classless-static-routes, dhcp-lease-time, dhcp-renewal-time;
"""
# The hook only reports: dhclient passes the server's answer in its environment.
HOOK = """#!/bin/sh
case "$reason" in
BOUND|RENEW|REBIND|REBOOT) env > "$DRANET_OUT.tmp" && mv "$DRANET_OUT.tmp" "$DRANET_OUT" ;;
esac
exit 0
"""


class DhcpError(Exception):
    """Why no lease could be had (or renewed); the message says what to check."""


def lease_from_env(env: Mapping[str, str], now: float) -> Lease:
    """The lease in the variables dhclient gives its script (``new_*``)."""
    ip = env.get("new_ip_address", "")
    mask = env.get("new_subnet_mask", "")
    if not ip or not mask:
        raise DhcpError(f"the DHCP server's answer has no address or subnet mask: {dict(env)}")
    prefix = sum(bin(int(o)).count("1") for o in mask.split("."))
    lease_time = int(env.get("new_dhcp_lease_time") or 0)
    renewal = int(env.get("new_dhcp_renewal_time") or 0) or lease_time // 2
    mtu = env.get("new_interface_mtu")
    try:
        routes = lease_routes(env.get("new_rfc3442_classless_static_routes", ""), env.get("new_routers", ""))
    except ValueError as exc:
        raise DhcpError(f"the DHCP server's classless routes cannot be read: {exc}") from None
    extra = {k[4:]: v for k, v in env.items() if k in ("new_routers", "new_broadcast_address")}
    return Lease(
        address=f"{ip}/{prefix}",
        server=env.get("new_dhcp_server_identifier", ""),
        lease_time=lease_time,
        renewal_time=renewal,
        routes=routes,
        mtu=int(mtu) if mtu else None,
        obtained_at=now,
        extra=extra,
    )


def lease_file(lease: Lease, ifname: str) -> str:
    """dhclient's lease file holding `lease` as the one active lease of `ifname` (its own
    syntax: times in UTC as "weekday year/month/day hour:minute:second", weekday 0 = Sunday)."""
    ip, _, prefix = lease.address.partition("/")
    mask = ipaddress.IPv4Network(f"0.0.0.0/{prefix or 32}").netmask
    lines = ["lease {", f'  interface "{ifname}";', f"  fixed-address {ip};", f"  option subnet-mask {mask};"]
    if lease.server:
        lines.append(f"  option dhcp-server-identifier {lease.server};")
    if _expires(lease):
        t, t1 = lease.obtained_at, lease.renewal_time or lease.lease_time // 2
        lines.append(f"  option dhcp-lease-time {lease.lease_time};")
        lines += [
            f"  renew {_lease_time(t + t1)};",
            f"  rebind {_lease_time(t + lease.lease_time * 7 // 8)};",
            f"  expire {_lease_time(t + lease.lease_time)};",
        ]
    else:
        lines += ["  renew never;", "  rebind never;", "  expire never;"]
    return "\n".join([*lines, "}", ""])


def lease_expired(lease: Lease, now: float) -> bool:
    return _expires(lease) and lease.obtained_at + lease.lease_time <= now


def _expires(lease: Lease) -> bool:
    """False for an infinite lease (0xffffffff) or one whose server gave no lease time."""
    return 0 < lease.lease_time < 0xFFFFFFFF


def _lease_time(t: float) -> str:
    when = time.gmtime(int(t))
    return f"{(when.tm_wday + 1) % 7} {time.strftime('%Y/%m/%d %H:%M:%S', when)}"


def parse_env(text: str) -> dict[str, str]:
    """`env` output: NAME=value lines (values of DHCP options have no newlines)."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and (name.startswith("new_") or name == "reason"):
            out[name] = value
    return out


@dataclass
class Record:
    """Our record of one lease: where it was taken and when it is due for renewal."""

    key: str
    ifname: str  # the host interface name it was taken on
    lease: Lease
    renew_at: float  # unix time

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "ifname": self.ifname,
            "lease": self.lease.to_dict(),
            "renew_at": self.renew_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        return cls(str(d["key"]), str(d["ifname"]), Lease.from_dict(d["lease"]), float(d["renew_at"]))


# Where a device is now, for a renewal: (netns fd, interface name) or None (not attached).
Locate = Callable[[str], tuple[int, str] | None]


class DhcpClient:
    def __init__(
        self,
        state_dir: str | Path,
        *,
        client: str | None = None,
        timeout: float = 5.0,
        max_renew_interval: float | None = None,
    ) -> None:
        """timeout: seconds to wait for a server at acquire and renew. max_renew_interval: renew
        at least this often (tests; default: at the lease's T1)."""
        self.dir = Path(state_dir) / "netns" / "dhcp"
        self.client = client or next((p for p in CLIENT_PATHS if os.access(p, os.X_OK)), "")
        self.nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
        self.timeout = timeout
        self.max_renew_interval = max_renew_interval
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ records
    def load(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.dir / "dhclient.conf").write_text(CONF.format(timeout=max(1, round(self.timeout))))
        hook = self.dir / "hook.sh"
        hook.write_text(HOOK)
        hook.chmod(0o700)
        for path in self.dir.glob("*.json"):
            try:
                rec = Record.from_dict(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("unreadable DHCP lease record", extra={"path": str(path), "error": str(exc)})
                continue
            self._records[rec.key] = rec

    def get(self, key: str) -> Record | None:
        with self._lock:
            return self._records.get(key)

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records.values())

    def _save(self, rec: Record) -> None:
        tmp = self.dir / f"{rec.key}.json.tmp"
        tmp.write_text(json.dumps(rec.to_dict()))
        os.replace(tmp, self.dir / f"{rec.key}.json")
        with self._lock:
            self._records[rec.key] = rec

    def _drop(self, key: str) -> None:
        for suffix in (".json", ".lease", ".lease.tmp", ".out", ".out.tmp"):
            with suppress(FileNotFoundError):
                (self.dir / f"{key}{suffix}").unlink()
        with self._lock:
            self._records.pop(key, None)

    def _next_renewal(self, lease: Lease) -> float:
        interval = float(lease.renewal_time or max(1, lease.lease_time // 2))
        if self.max_renew_interval is not None:
            interval = min(interval, self.max_renew_interval)
        return time.time() + max(1.0, interval)

    # ------------------------------------------------------------ the three operations
    def acquire(self, key: str, ifname: str, rtnl: Rtnl, netns_fd: int) -> Lease:
        """A lease on the host interface; idempotent per key (the kept lease is returned)."""
        check_key(key)
        held = self.get(key)
        if held is not None and held.ifname == ifname:
            return held.lease
        link = rtnl.get_link(name=ifname)
        if link is None:
            raise DhcpError(f"interface {ifname} is not on the host")
        self._drop(key)
        try:
            with _link_up(rtnl, link.index, link.up):
                lease = self._run(key, ifname, netns_fd, None)
        except BaseException:
            self._drop(key)
            raise
        self._save(Record(key, ifname, lease, self._next_renewal(lease)))
        return lease

    def renew(self, key: str, ifname: str, netns_fd: int) -> Lease:
        """Extend the lease from where the interface is now (the pod's netns, its pod-side name)."""
        rec = self.get(key)
        if rec is None:
            raise DhcpError(f"no lease is held for {key}")
        lease = self._run(key, ifname, netns_fd, rec.lease)
        if lease.address != rec.lease.address:
            # The pod keeps the address it has; the server moved it: say so, keep renewing ours.
            log.warning(
                "DHCP server offered another address at renewal",
                extra={"key": key, "held": rec.lease.address, "offered": lease.address},
            )
        self._save(Record(key, rec.ifname, lease, self._next_renewal(lease)))
        return lease

    def release(self, key: str, rtnl: Rtnl, netns_fd: int) -> bool:
        """Give the lease back from the host interface and forget it; False when none was held."""
        check_key(key)
        rec = self.get(key)
        if rec is None:
            self._drop(key)
            return False
        if lease_expired(rec.lease, time.time()):
            log.info("DHCP lease expired before its release", extra={"key": key, "lease": rec.lease.address})
            self._drop(key)  # the server has let it go (dhclient would not send a release for it)
            return False
        link = rtnl.get_link(name=rec.ifname)
        if link is None:
            raise DhcpError(
                f"interface {rec.ifname} is not on the host: the lease of {rec.lease.address} is "
                "released once it is back (or expires at the server)"
            )
        address = Address(rec.lease.address)
        had = any(a.cidr == address.cidr for a in rtnl.addresses(link.index))
        with _link_up(rtnl, link.index, link.up):
            if not had:
                rtnl.add_address(link.index, address)
            try:
                self._write_lease_file(key, rec.lease, rec.ifname)
                self._client(key, rec.ifname, netns_fd, ["-r"], wait=self.timeout + 2)
                # The release is unicast: it leaves once the server's MAC is resolved. Taking the
                # address off before that would drop it from the ARP queue unsent.
                _wait_resolved(rtnl, link.index, rec.lease.server, 1.0)
            finally:
                if not had:
                    with suppress(OSError):
                        rtnl.del_address(link.index, address)
        self._drop(key)
        return True

    # ------------------------------------------------------------ running dhclient
    def _run(self, key: str, ifname: str, netns_fd: int, held: Lease | None) -> Lease:
        """A DHCPDISCOVER from nothing (`held` None: acquire) or a DHCPREQUEST for `held` (renew)."""
        what = "acquire" if held is None else "renew"
        out = self.dir / f"{key}.out"
        with suppress(FileNotFoundError):
            out.unlink()
        if held is None:
            with suppress(FileNotFoundError):
                (self.dir / f"{key}.lease").unlink()
        else:
            self._write_lease_file(key, held, ifname)
        proc = self._client(key, ifname, netns_fd, ["-1", "-d"], wait=None)
        deadline = time.monotonic() + self.timeout + 2
        try:
            while not out.exists():
                if proc.poll() is not None:
                    why = _tail(proc)
                    if "No DHCPOFFERS" in why or "Unable to obtain" in why or not why:
                        raise DhcpError(
                            f"no DHCP server answered on {ifname} within {self.timeout:.0f}s ({what}); "
                            "check that a DHCP server serves that network"
                        )
                    raise DhcpError(f"dhclient could not run on {ifname} ({what}){why}")
                if time.monotonic() > deadline:
                    raise DhcpError(f"no DHCP lease on {ifname} after {self.timeout + 2:.0f}s ({what})")
                time.sleep(0.02)
        finally:
            _end(proc)
        env = parse_env(out.read_text())
        out.unlink()
        return lease_from_env(env, time.time())

    def _write_lease_file(self, key: str, lease: Lease, ifname: str) -> None:
        """dhclient finds leases in its file by interface name: the pod-side name for a renewal,
        the host's for a release."""
        path = self.dir / f"{key}.lease"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(lease_file(lease, ifname))
        os.replace(tmp, path)

    def _client(
        self, key: str, ifname: str, netns_fd: int, args: list[str], *, wait: float | None
    ) -> subprocess.Popen[bytes]:
        if not self.client:
            raise DhcpError(
                "no DHCP client: install Debian's isc-dhcp-client (dhclient) where the netns worker runs"
            )
        argv = [
            self.nsenter,
            f"--net=/proc/self/fd/{netns_fd}",
            self.client,
            "-4",
            *args,
            "--no-pid",
            "-cf",
            str(self.dir / "dhclient.conf"),
            "-sf",
            str(self.dir / "hook.sh"),
            "-lf",
            str(self.dir / f"{key}.lease"),
            "-e",
            f"DRANET_OUT={self.dir / f'{key}.out'}",
            ifname,
        ]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(netns_fd,),
            start_new_session=True,
        )
        if wait is not None:
            try:
                proc.wait(wait)
            finally:
                _end(proc)
            if proc.returncode:
                raise DhcpError(f"dhclient {' '.join(args)} on {ifname} failed{_tail(proc)}")
        return proc

    # ------------------------------------------------------------ renewals
    def start(self, locate: Locate, interval: float = 1.0) -> None:
        """Renew due leases of attached devices in the background."""
        self._thread = threading.Thread(
            target=self._loop, args=(locate, interval), name="dhcp-renew", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def renew_due(self, locate: Locate) -> None:
        now = time.time()
        for rec in self.records():
            if rec.renew_at > now:
                continue
            where = locate(rec.key)
            if where is None:
                continue  # on the host, not yet attached (or being moved): renewed once attached
            fd, ifname = where
            try:
                self.renew(rec.key, ifname, fd)
                log.info("DHCP lease renewed", extra={"key": rec.key, "address": rec.lease.address})
            except (DhcpError, OSError) as exc:
                log.warning("DHCP renewal failed; retried", extra={"key": rec.key, "error": str(exc)})
                retry = Record(rec.key, rec.ifname, rec.lease, now + min(30.0, self.timeout * 2))
                with suppress(OSError):
                    self._save(retry)
            finally:
                os.close(fd)

    def _loop(self, locate: Locate, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.renew_due(locate)
            except Exception:  # the renewer must outlive one bad record
                log.exception("DHCP renewal loop")


def check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise DhcpError(f"{key!r} is not a valid lease key")


@contextmanager
def _link_up(rtnl: Rtnl, index: int, was_up: bool) -> Iterator[None]:
    """dhclient sends on the link: up for the call, down again after when it was down."""
    if not was_up:
        rtnl.set_link(index, LinkChange(up=True))
    try:
        yield
    finally:
        if not was_up:
            with suppress(OSError):
                rtnl.set_link(index, LinkChange(up=False))


def _wait_resolved(rtnl: Rtnl, index: int, address: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(n.destination == address for n in rtnl.neighbors(index)):
            time.sleep(0.02)  # resolution flushes the queue; give the driver the frame
            return
        time.sleep(0.01)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Stop dhclient without a release (SIGTERM is dhclient's own -x) and reap it."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# dhclient's banner and its advice text around a fatal error: not the reason.
_BOILERPLATE = (
    "Internet Systems", "Copyright", "All rights", "For info", "Listening on", "Sending on",
    "If you think", "than a configuration", "bugs on either", "before submitting", "process and the",
    "Please make sure", "running and that", "bootp in", "are not running HP", "includes a bootp", "exiting.",
)  # fmt: skip


def _tail(proc: subprocess.Popen[bytes]) -> str:
    if proc.stderr is None:
        return ""
    with suppress(ValueError, OSError):
        lines = [ln for ln in proc.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        proc.stderr.close()
        interesting = [ln for ln in lines if not any(b in ln for b in _BOILERPLATE)]
        if interesting:
            return ": " + " | ".join(interesting[:3])
    return ""
