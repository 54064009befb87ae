"""Bus round trip between two processes, beside a raw pyzmq round trip measured in the same run.

Prints p50/p99 latency and throughput of a small request; the difference is what our layer costs
(envelope, msgpack, shape checks, dedupe, metrics). Measures and prints; asserts nothing.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

from dranet.bus import BusClient

N = 5000
RAW_SERVER = """
import sys, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); s.bind(sys.argv[1]); print("ready", flush=True)
while True:
    ident, data = s.recv_multipart(); s.send_multipart([ident, data])
"""


def percentile(samples: list[float], p: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(len(samples) * p))]


def run_raw(endpoint: str) -> list[float]:
    proc = subprocess.Popen([sys.executable, "-c", RAW_SERVER, endpoint], stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline().strip() == "ready"
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(endpoint)
    payload = msgpack.packb({"op": "echo", "body": {"pod_uid": "p" * 36}})
    out = []
    for _ in range(200):
        sock.send(payload)
        sock.recv()
    for _ in range(N):
        t = time.perf_counter()
        sock.send(payload)
        msgpack.unpackb(sock.recv())
        out.append(time.perf_counter() - t)
    sock.close(0)
    proc.kill()
    return out


def run_bus(runtime_dir: Path) -> list[float]:
    here = Path(__file__).parent.parent
    proc = subprocess.Popen(
        [
            sys.executable,
            str(here / "busserver_main.py"),
            "--runtime-dir",
            str(runtime_dir),
            "--log",
            "/dev/null",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout and proc.stdout.readline().strip() == "ready"
    client = BusClient(runtime_dir, "t", timeout=5)
    out = []
    body = {"pod_uid": "p" * 36}
    for _ in range(200):
        client.call("echo", body)
    for _ in range(N):
        t = time.perf_counter()
        client.call("echo", body)
        out.append(time.perf_counter() - t)
    client.close()
    proc.terminate()
    proc.wait()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        raw = run_raw(f"ipc://{d}/raw.sock")
        bus = run_bus(Path(d) / "run")
    print(f"bus round trip, {N} small requests between two processes (echo handler writes one log line)")
    print(f"{'':10}{'p50 us':>10}{'p99 us':>10}{'req/s':>10}")
    for name, s in (("raw pyzmq", raw), ("dranet bus", bus)):
        print(
            f"{name:10}{percentile(s, 0.5) * 1e6:10.1f}{percentile(s, 0.99) * 1e6:10.1f}"
            f"{len(s) / sum(s):10.0f}"
        )
    print(
        f"added by our layer at p50: {(percentile(bus, 0.5) - percentile(raw, 0.5)) * 1e6:.1f} us "
        f"(ratio {statistics.median(bus) / statistics.median(raw):.2f}x)"
    )


if __name__ == "__main__":
    main()
