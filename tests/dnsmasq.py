"""A real DHCP server for tests: Debian's dnsmasq (DHCP only, no DNS) in a network namespace the
test made, serving one interface there (the far end of a stand-in NIC)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest


class Dnsmasq:
    def __init__(
        self,
        netns: str,
        ifname: str,
        workdir: Path,
        *,
        server: str = "10.77.0.1/24",
        add_address: bool = True,
        pool: tuple[str, str] = ("10.77.0.50", "10.77.0.60"),
        mtu: int | None = 1400,
        classless: str | None = "10.99.0.0/16,10.77.0.1",
    ) -> None:
        if shutil.which("dnsmasq") is None:
            pytest.skip("dnsmasq is not installed (Debian dnsmasq-base; make system-deps installs it)")
        self.netns, self.ifname, self.dir = netns, ifname, workdir
        self.leasefile = workdir / "dnsmasq.leases"
        self.server_ip = server.split("/")[0]
        if add_address:
            subprocess.run(["ip", "-n", netns, "addr", "add", server, "dev", ifname], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", ifname, "up"], check=True)
        mask = "255.255.255.0"
        argv = [
            "ip", "netns", "exec", netns, "dnsmasq", "--keep-in-foreground", "--port=0",
            f"--interface={ifname}", "--bind-interfaces", "--conf-file=/dev/null",
            f"--dhcp-range={pool[0]},{pool[1]},{mask},120",
            f"--dhcp-option=option:router,{self.server_ip}",
            f"--dhcp-leasefile={self.leasefile}", "--log-dhcp", "--log-facility=-", "--dhcp-authoritative",
            "--user=root", "--no-ping",
        ]  # fmt: skip
        if mtu is not None:
            argv.append(f"--dhcp-option=option:mtu,{mtu}")
        if classless is not None:
            argv.append(f"--dhcp-option=121,{classless}")
        self.log = (workdir / "dnsmasq.log").open("w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        time.sleep(0.2)
        if self.proc.poll() is not None:
            raise RuntimeError(f"dnsmasq did not start: {(workdir / 'dnsmasq.log').read_text()}")

    def leases(self) -> dict[str, int]:
        """address -> expiry (unix time) of every lease the server holds."""
        if not self.leasefile.exists():
            return {}
        out = {}
        for line in self.leasefile.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out[parts[2]] = int(parts[0])
        return out

    def leases_after_release(self, timeout: float = 10.0) -> dict[str, int]:
        """The leases once the server has had up to `timeout` s to act on a DHCPRELEASE: the
        release is one UDP datagram, and dnsmasq rewrites its lease file after it has read it."""
        deadline = time.monotonic() + timeout
        while (held := self.leases()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return held

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.log.close()
