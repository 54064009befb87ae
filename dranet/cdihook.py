"""`dranet cdi-hook`: the OCI hook that keeps a claimed pod's containers from running without their NICs.

The runtime runs it (stage `createRuntime`, from the CDI spec dra writes at prepare; see
services/dra/cdi.py) for every container of the pod that uses the claim, after the container's
namespaces exist and before its process starts. It reads the OCI state on stdin, takes the
container's network namespace identity (st_dev, st_ino of /proc/<pid>/ns/net) and asks the netns
worker over the bus whether the device is attached there. It waits up to --wait seconds (the NRI
plugin may be attaching right now), then refuses: exit 1, and the runtime fails the container
with our message; the kubelet retries later, after late attach has repaired the sandbox.

It runs on every container start of a claimed pod: it imports only the bus client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dranet.backoff import Backoff
from dranet.bus.client import BusClient
from dranet.bus.messages import BusError

DEFAULT_WAIT = 5.0
_FIRST_POLL = 0.1
_MAX_POLL = 0.5


class HookError(Exception):
    """The hook cannot decide (bad input): it refuses the container with this reason."""


@dataclass(frozen=True)
class OciState:
    container_id: str
    pid: int
    annotations: Mapping[str, str]

    @property
    def pod(self) -> str:
        """namespace/name of the pod, from containerd's annotations ("" when not there)."""
        ns = self.annotations.get("io.kubernetes.cri.sandbox-namespace", "")
        name = self.annotations.get("io.kubernetes.cri.sandbox-name", "")
        return f"{ns}/{name}" if name else ""


def parse_state(data: bytes) -> OciState:
    """The OCI runtime state the runtime writes to a hook's stdin."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise HookError(f"the OCI state on stdin is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise HookError("the OCI state on stdin is not a JSON object")
    pid = doc.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise HookError(f"the OCI state has no process id (pid={pid!r}); run this as a createRuntime hook")
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    return OciState(str(doc.get("id") or ""), pid, {str(k): str(v) for k, v in annotations.items()})


def netns_identity(pid: int, proc: str = "/proc") -> str:
    """The process's network namespace identity as the bus carries it, "<st_dev>:<st_ino>" of its
    nsfs file: how the worker knows the pod netns."""
    try:
        st = os.stat(f"{proc}/{pid}/ns/net")
    except OSError as exc:
        raise HookError(f"cannot read the network namespace of process {pid}: {exc.strerror}") from None
    return f"{st.st_dev}:{st.st_ino}"


# ask(devices, timeout) -> the devices not attached in the container's netns; raises BusError
Ask = Callable[[Sequence[str], float], list[str]]


def wait_attached(
    ask: Ask,
    devices: Sequence[str],
    wait: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Ask until every device is attached or `wait` seconds have passed. Returns "" when attached,
    else why not (the devices still missing, or the worker's last error)."""
    deadline = clock() + wait
    polls = Backoff(_FIRST_POLL, _MAX_POLL)
    while True:
        left = deadline - clock()
        try:
            missing = ask(devices, max(0.05, min(1.0, left)))
            reason = f"{', '.join(missing)} not attached in the container's network namespace"
        except BusError as exc:
            missing = list(devices)
            reason = f"the netns worker did not answer ({exc.code}: {exc.message})"
        if not missing:
            return ""
        left = deadline - clock()
        if left <= 0:
            return reason
        sleep(min(polls.next(), left))


def refusal(state: OciState, claim: str, reason: str, wait: float) -> str:
    pod = f"pod {state.pod}" if state.pod else f"container {state.container_id}"
    return (
        f"dranet: {pod}, claim {claim}: {reason} after {wait:g}s. The NRI plugin (dranet nri) "
        "attaches claimed NICs when the sandbox starts and repairs a sandbox that started without "
        "them when it reconnects; check that it is running and connected (`dranet status`). "
        "The container is refused so that the pod never runs without its NIC; the kubelet retries it."
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime-dir", default="/run/dranet", help="the bus directory (default %(default)s)"
    )
    parser.add_argument("--claim", required=True, help="the claim UID (for the message)")
    parser.add_argument("--device", action="append", required=True, help="a device to wait for; repeatable")
    parser.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT,
        help="seconds to wait for the attachment before refusing (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        state = parse_state(sys.stdin.buffer.read())
        ident = netns_identity(state.pid)
    except HookError as exc:
        print(f"dranet: claim {args.claim}: {exc}; the container is refused", file=sys.stderr)
        return 1
    client = BusClient(args.runtime_dir, "netns")

    def ask(devices: Sequence[str], timeout: float) -> list[str]:
        body = {"netns_id": ident, "devices": list(devices)}
        return list(client.call("attached_in", body, timeout=timeout)["missing"])

    try:
        reason = wait_attached(ask, args.device, args.wait)
    finally:
        client.close()
    if reason:
        print(refusal(state, args.claim, reason, args.wait), file=sys.stderr)
        return 1
    return 0
