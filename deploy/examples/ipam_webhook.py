#!/usr/bin/env python3
"""An example profile provider for dranet's webhook protocol: IPAM from one address pool.

  python3 ipam_webhook.py --listen 127.0.0.1:8080 --pool 10.60.0.0/24 [--gateway 10.60.0.1]
                          [--profile ipam] [--state /var/lib/ipam.json]
  (or --listen unix:///run/dranet-ipam.sock)

It takes the profile's roles only (/health says profileProvider). GetProfileConfig hands the
claim's device the next free address of the pool, keyed by (claim UID, device name): a retried
prepare gets the same address. ReleaseProfileConfig takes it back (200 also when it holds
nothing). Asking for an unknown profile is 404; a full pool is 409; a malformed request is 400.
GET /pool shows what is handed out. Standard library only: copy it next to the driver and run it
(a DaemonSet, or a host service); --state keeps the allocations across restarts.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Pool:
    def __init__(self, cidr: str, gateway: str | None, state: str | None) -> None:
        self.net = ipaddress.ip_network(cidr)
        self.gateway = ipaddress.ip_address(gateway) if gateway else None
        reserved = {self.gateway} if self.gateway else set()
        self.free = [a for a in self.net.hosts() if a not in reserved]
        self.size = len(self.free)
        self.held: dict[str, str] = {}  # "claim/device" -> address
        self.state = state
        self.lock = threading.Lock()
        if state and os.path.exists(state):
            with open(state) as f:
                for key, addr in json.load(f).items():
                    self.held[key] = addr
                    self.free.remove(ipaddress.ip_address(addr))

    def _save(self) -> None:
        if self.state:
            tmp = self.state + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.held, f)
            os.replace(tmp, self.state)

    def take(self, key: str) -> str | None:
        with self.lock:
            if key not in self.held:
                if not self.free:
                    return None
                self.held[key] = str(self.free.pop(0))
                self._save()
            return self.held[key]

    def give_back(self, key: str) -> None:
        with self.lock:
            addr = self.held.pop(key, None)
            if addr is not None:
                self.free.append(ipaddress.ip_address(addr))
                self.free.sort()
                self._save()


def make_handler(pool: Pool, profile: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # one line per call, on stderr
            sys.stderr.write(f"ipam: {format % args}\n")

        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(200, {"cloudProvider": False, "profileProvider": True})
            elif self.path == "/pool":
                with pool.lock:
                    self._answer(200, {"size": pool.size, "free": len(pool.free), "held": dict(pool.held)})
            else:
                self._answer(404, {"error": f"no {self.path}"})

        def do_POST(self) -> None:
            if self.path in ("/GetDeviceAttributes", "/GetDeviceConfig"):
                self._answer(501, {"error": "this provider is a profile provider only"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                req = json.loads(self.rfile.read(length) or b"{}")
                claim = str(req["claim_uid"])
                device = str(req["device"]["name"])
                asked = (req.get("config") or {}).get("profile")
            except (ValueError, KeyError, TypeError) as exc:
                self._answer(400, {"error": f"malformed request: {exc!r}"})
                return
            key = f"{claim}/{device}"
            if self.path == "/GetProfileConfig":
                if asked != profile:
                    self._answer(
                        404, {"error": f"unknown profile {asked!r}; this provider serves {profile!r}"}
                    )
                    return
                addr = pool.take(key)
                if addr is None:
                    self._answer(
                        409, {"error": f"pool {pool.net} is exhausted ({pool.size} addresses in use)"}
                    )
                    return
                config: dict[str, Any] = {"interface": {"addresses": [f"{addr}/{pool.net.prefixlen}"]}}
                if pool.gateway:
                    config["routes"] = [{"destination": "0.0.0.0/0", "gateway": str(pool.gateway)}]
                self._answer(200, config)
            elif self.path == "/ReleaseProfileConfig":
                pool.give_back(key)
                self._answer(200, {})
            else:
                self._answer(404, {"error": f"no {self.path}"})

    return Handler


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[Any, Any]:
        conn, _ = super().get_request()
        return conn, ("unix", 0)  # BaseHTTPRequestHandler logs a client address


def serve(listen: str, handler: type[BaseHTTPRequestHandler]) -> socketserver.BaseServer:
    if listen.startswith("unix://"):
        path = listen[len("unix://") :]
        if os.path.exists(path):
            os.unlink(path)
        return UnixHTTPServer(path, handler)
    host, _, port = listen.rpartition(":")
    return ThreadingHTTPServer((host or "127.0.0.1", int(port)), handler)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:8080", help="host:port or unix:///path")
    p.add_argument("--pool", required=True, help="the address pool, a CIDR")
    p.add_argument("--gateway", default=None, help="default gateway handed out with each address")
    p.add_argument("--profile", default="ipam", help="the profile name claims ask for (default ipam)")
    p.add_argument("--state", default=None, help="file keeping the allocations across restarts")
    args = p.parse_args(argv)
    server = serve(args.listen, make_handler(Pool(args.pool, args.gateway, args.state), args.profile))
    print(f"ipam webhook: pool {args.pool}, profile {args.profile!r}, on {args.listen}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
