"""The example IPAM provider (deploy/examples/ipam_webhook.py) inside a network namespace.

DEVELOPMENT AND TEST TOOL, run as root. On the node stand-in (node.py) it runs in the node netns,
where the driver pod's hostNetwork is: dra reaches it at http://127.0.0.1:PORT as it would a
provider on a real node's loopback, and this process asks it for its pool through a socket made in
that namespace.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from localcluster.nodenet import in_netns

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "ipam_webhook.py"
PORT = 8790  # on the node netns's loopback (a private namespace: nothing else binds it)


class IpamError(Exception):
    pass


class IpamProvider:
    """ipam_webhook.py serving `pool` for claims with `profile: <profile>`, in the named netns."""

    def __init__(self, netns: str, pool: str, log: Path, profile: str = "ipam", port: int = PORT) -> None:
        self.netns, self.pool_cidr, self.log, self.profile, self.port = netns, pool, log, profile, port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Where a process in the netns (the driver pod's dra) reaches it."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        argv = [
            *("ip", "netns", "exec", self.netns, sys.executable, str(SCRIPT)),
            *("--listen", f"127.0.0.1:{self.port}", "--pool", self.pool_cidr, "--profile", self.profile),
        ]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log.open("ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("/health")
                return
            except (OSError, IpamError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise IpamError(
                        f"the example IPAM provider did not start in netns {self.netns}; see {self.log}"
                    ) from None
                time.sleep(0.1)

    def get(self, path: str) -> Any:
        """GET path, from inside the netns; the JSON it answers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.sock = in_netns(self.netns, lambda: socket.create_connection(("127.0.0.1", self.port), 5))
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        if r.status != 200:
            raise IpamError(f"IPAM provider {path}: HTTP {r.status}: {body[:200]!r}")
        return json.loads(body)

    def pool(self) -> dict[str, Any]:
        """{"size", "free", "held": {claim: address}} as the provider reports it."""
        return dict(self.get("/pool"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
