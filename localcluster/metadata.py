"""A GCE metadata server stand-in inside a network namespace, for discovery's --cloud-provider=gce.

DEVELOPMENT AND TEST TOOL, run as root. On the node stand-in (node.py) it listens on the node
netns's loopback, where the driver pod's hostNetwork is, and answers the paths dranet/providers/gce.py
reads as GCE's documented API does: `Metadata-Flavor: Google` asked for and given, the machine
type, the instance's network interfaces (by MAC, with their VPC network), 404 for the rest (a VM
without a physical_host).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from localcluster.nodenet import in_netns

PORT = 8791  # on the node netns's loopback (a private namespace: nothing else binds it)
ROOT = "/computeMetadata/v1/"
URL = f"http://127.0.0.1:{PORT}{ROOT.rstrip('/')}"  # discovery's --metadata-url, in the netns
MACHINE_TYPE = "projects/1234/machineTypes/standin-8"


def network_of(nic_name: str) -> str:
    """The VPC network the stand-in gives a NIC: one of its own, so a claim can select it by it."""
    return f"{nic_name}-vpc"


class GceMetadata:
    """Serves `interfaces` ({"mac", "network"} per NIC) in the named netns until stop()."""

    def __init__(self, netns: str, interfaces: Sequence[Mapping[str, Any]]) -> None:
        self.netns = netns
        paths = {
            "instance/machine-type": MACHINE_TYPE,
            "instance/network-interfaces/?recursive=true&alt=json": json.dumps(list(interfaces)),
        }
        self.server = ThreadingHTTPServer(("127.0.0.1", PORT), _handler(paths), bind_and_activate=False)
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.server.socket.close()
        self.server.socket = in_netns(self.netns, lambda: socket.create_server(("127.0.0.1", PORT)))
        self.thread = threading.Thread(target=self.server.serve_forever, name="gce-metadata", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread = None
        self.server.server_close()


def _handler(paths: Mapping[str, str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Metadata-Flavor") != "Google":
                self._send(403, "Missing Metadata-Flavor:Google header.")
                return
            body = paths.get(self.path.removeprefix(ROOT)) if self.path.startswith(ROOT) else None
            self._send(404, "not found") if body is None else self._send(200, body)

        def _send(self, code: int, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler
