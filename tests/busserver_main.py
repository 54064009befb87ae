"""A bus server process for the bus tests: serves `echo` (optionally sleeping) and publishes a topic.

Every executed request id is appended to --log, so the tests can count executions across restarts.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from typing import Any

from dranet.bus import BusServer, Publisher, RequestContext


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runtime-dir", required=True)
    p.add_argument("--service", default="t")
    p.add_argument("--log", required=True)
    args = p.parse_args()
    state = {"value": 0}
    lock = threading.Lock()

    def echo(body: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        if body.get("sleep"):
            time.sleep(float(body["sleep"]))
        with lock, open(args.log, "a") as f:
            f.write(f"{os.getpid()} {ctx.request_id}\n")
        if "set" in body:
            state["value"] = int(body["set"])
            pub.publish("echo", dict(state))
        return body

    pub = Publisher(args.runtime_dir, args.service, {"echo": lambda: dict(state)})
    server = BusServer(
        args.runtime_dir, args.service, {"echo": echo, "snapshot": lambda b, c: pub.snapshot(b["topic"])}
    )
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.stop()
    pub.close()


if __name__ == "__main__":
    main()
