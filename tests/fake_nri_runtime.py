"""A fake container runtime on the NRI socket, speaking the real mux + ttrpc wire to the plugin.

It does what containerd does and what makes it hard: it calls Configure before it answers
RegisterPlugin, and it records the largest frame the plugin sends, so that tests can check none is
over 4096 bytes of payload. Used by the plugin's unit tests, the soak test and its benchmark.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from dranet.services.nri import framing
from dranet.services.nri.plugin import PLUGIN_SERVICE

from dranet._generated import nri_pb2


class FakeRuntime:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(4)
        self.registrations: list[nri_pb2.RegisterPluginRequest] = []
        self.max_frame = 0
        self.sock: socket.socket | None = None
        self._responses: dict[int, framing.Message] = {}
        self._cond = threading.Condition()
        self._next = 1

    def accept_and_register(
        self, timeout: float = 10.0, request_timeout_ms: int = 2000
    ) -> nri_pb2.ConfigureResponse:
        self.srv.settimeout(timeout)
        sock, _ = self.srv.accept()
        sock.settimeout(None)
        self.sock = sock
        self._responses = {}
        self._next = 1
        self._reg = threading.Event()
        self._reg_stream = 0
        threading.Thread(target=self._read, args=(sock,), daemon=True).start()
        assert self._reg.wait(timeout), "no RegisterPlugin"
        # like containerd: Configure before the RegisterPlugin reply
        conf = nri_pb2.ConfigureRequest(
            runtime_name="fake",
            runtime_version="9.9",
            registration_timeout=5000,
            request_timeout=request_timeout_ms,
        )
        resp = nri_pb2.ConfigureResponse.FromString(self.call("Configure", conf.SerializeToString()))
        self._send(
            framing.RUNTIME_CONN,
            framing.encode_response(self._reg_stream, nri_pb2.Empty().SerializeToString()),
        )
        return resp

    def _send(self, conn: int, msg: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(framing.mux_frames(conn, msg, max_payload=1 << 20))

    def _read(self, sock: socket.socket) -> None:
        mux, decoders = framing.MuxDecoder(), {1: framing.MessageDecoder(), 2: framing.MessageDecoder()}
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            for conn, payload in mux.feed(data):
                self.max_frame = max(self.max_frame, len(payload))
                for msg in decoders[conn].feed(payload):
                    if conn == framing.RUNTIME_CONN:
                        req = framing.decode_request(msg.body)
                        assert req.method == "RegisterPlugin"
                        self.registrations.append(nri_pb2.RegisterPluginRequest.FromString(req.payload))
                        self._reg_stream = msg.stream_id
                        self._reg.set()
                    else:
                        with self._cond:
                            self._responses[msg.stream_id] = msg
                            self._cond.notify_all()

    def send_request(self, method: str, payload: bytes) -> int:
        """Send a Plugin request without waiting; returns its stream id for wait_response()."""
        with self._cond:
            stream = self._next
            self._next += 2
        self._send(framing.PLUGIN_CONN, framing.encode_request(stream, PLUGIN_SERVICE, method, payload))
        return stream

    def wait_response(self, stream: int, timeout: float = 10.0) -> bytes:
        """The payload of the response on `stream`; raises TtrpcError for an error status."""
        with self._cond:
            assert self._cond.wait_for(lambda: stream in self._responses, timeout), f"no reply on {stream}"
            msg = self._responses.pop(stream)
        return framing.decode_response(msg.body)

    def call(self, method: str, payload: bytes, timeout: float = 10.0) -> bytes:
        return self.wait_response(self.send_request(method, payload), timeout)

    def drop(self) -> None:
        assert self.sock is not None
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def close(self) -> None:
        self.srv.close()


def pod(uid: str, netns: str = "/var/run/netns/cni-x", **annotations: str) -> nri_pb2.PodSandbox:
    p = nri_pb2.PodSandbox(id="sb-" + uid, uid=uid, name="p-" + uid, namespace="ns", annotations=annotations)
    if netns:
        p.linux.namespaces.add(type="ipc", path="/proc/1/ns/ipc")
        p.linux.namespaces.add(type="network", path=netns)
    return p
