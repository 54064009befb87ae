"""What every service process does the same way: ServiceHost.

Logging, capability drop, signal handling, the bus server with `ping` (liveness: it answers;
`healthy`: no fault; `ready`: able to do its job now), `snapshot` and `metrics` (the pod's HTTP
endpoint, dranet/observability/endpoint.py, gathers every service's), and the notification
publisher. A service's main() builds one, registers its
handlers with serve(), starts its own work and calls wait().

Order matters at both ends. At start, a service that publishes while it recovers state calls
start_publishing() first, recovers, then serve(). At stop, stop_serving() lets the requests in
flight finish, so the service can then stop its own threads and close what the handlers use, and
close() last tears down the publisher and the ZeroMQ context (no thread uses a socket by then).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import zmq

from dranet import __version__, syscalls
from dranet.bus.client import BusClient
from dranet.bus.endpoints import ensure_runtime_dir
from dranet.bus.messages import BusError
from dranet.bus.pubsub import Publisher
from dranet.bus.server import BusServer, Handler, RequestContext
from dranet.capabilities import drop_capabilities, make_undumpable
from dranet.instance import OwnerLock, standby_marker
from dranet.observability import metrics
from dranet.observability.logging import setup_logging
from dranet.settings import settings_from_args

log = logging.getLogger(__name__)
SWITCH_CAPS = frozenset({"CAP_SETUID", "CAP_SETGID", "CAP_CHOWN"})
Snapshot = Callable[[], Mapping[str, Any]]


class ServiceHost:
    def __init__(
        self,
        name: str,
        args: argparse.Namespace,
        *,
        keep_caps: frozenset[str] = frozenset(),
        drop_caps: bool = True,
        install_signals: bool = True,
    ) -> None:
        """drop_caps/install_signals are for tests that host a service inside the test process."""
        self.name = name
        self.settings = settings_from_args(args)
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        if drop_caps:
            # Before any thread exists (see dranet.capabilities). What switching to --run-as needs
            # is kept until then; the switch itself clears every capability, in every thread.
            switch = SWITCH_CAPS if self.settings.run_as else frozenset()
            drop_capabilities(keep_caps | switch)
        setup_logging(name, self.settings.log_level)
        if drop_caps:  # then the syscall allowlist (dranet/syscalls.py), still before any thread
            try:
                allowed = syscalls.install(name)
                log.info("seccomp filter installed", extra={"syscalls_allowed": allowed})
            except syscalls.SeccompUnavailable as exc:
                log.error("running without a seccomp filter: %s", exc)
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._server: BusServer | None = None
        self._publisher: Publisher | None = None
        self._health: Callable[[], Mapping[str, Any]] | None = None
        instance = os.environ.get("POD_UID") or str(os.getpid())
        self.owner = OwnerLock(
            self.settings.runtime_dir / f"{name}.lock",
            standby_marker(self.settings.runtime_dir, name, instance),
        )
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        self.stop_event.set()

    @property
    def context(self) -> zmq.Context[Any]:
        """The process's ZeroMQ context, for the service's own bus clients and subscribers."""
        return self._ctx

    def wait_for_turn(self) -> bool:
        """Block until this instance owns the service on the node (see dranet.instance): call it
        before acting on anything shared. False when stopped while waiting."""
        ensure_runtime_dir(self.settings.runtime_dir)
        return self.owner.acquire(self.stop_event, self.name)

    def start_publishing(
        self, snapshots: Mapping[str, Callable[[], Mapping[str, Any]]] | None = None
    ) -> None:
        """Open the notification publisher before serving, for events of a start-up recovery.
        Its `snapshot` op is answered once serve() runs; subscribers resync then."""
        if not self.owner.held and not self.wait_for_turn():
            raise RuntimeError(f"{self.name}: stopped before this instance became active")
        if self._publisher is None:
            self._publisher = Publisher(self.settings.runtime_dir, self.name, snapshots, context=self._ctx)

    def serve(
        self,
        handlers: Mapping[str, Handler],
        *,
        health: Callable[[], Mapping[str, Any]] | None = None,
        snapshots: Mapping[str, Snapshot] | None = None,
    ) -> None:
        """Serve `handlers` (plus ping and snapshot); opens the publisher unless already open."""
        self._health = health
        rd = self.settings.runtime_dir
        self.start_publishing(snapshots)
        all_handlers: dict[str, Handler] = {
            "ping": self._ping,
            "snapshot": self._snapshot,
            "metrics": self._metrics,
            **handlers,
        }
        self._server = BusServer(
            rd, self.name, all_handlers, context=self._ctx, policy=self.settings.peers
        )
        self._server.start()
        log.info("serving", extra={"runtime_dir": str(rd), "pid": os.getpid(), "ops": sorted(all_handlers)})

    def reclaim(self, own: Sequence[Path]) -> None:
        """At start, before reading them: take back (uid 0) what a previous life wrote as --run-as,
        which root without CAP_DAC_OVERRIDE could not read (switch_user gives it back)."""
        if not self.settings.run_as:
            return
        for top in own:
            if top.exists():
                for path in [top, *top.rglob("*")]:
                    os.chown(path, 0, 0, follow_symlinks=False)

    def switch_user(self, own: Sequence[Path] = (), clients: Sequence[BusClient] = ()) -> None:
        """Become --run-as (group 0, the bus group: the sockets are root's, 0660) once every socket
        is bound; `own` (and what is in them) is chowned first, for the files the service writes
        later. The kernel clears every capability of every thread with the switch (glibc applies
        setresuid to all threads). `clients` reconnect: a connection made before still speaks as
        root (the bus knows callers by their uid at connect time). A no-op without --run-as."""
        uid = self.settings.run_as
        if not uid:
            return
        for top in own:
            top.mkdir(parents=True, exist_ok=True)
            for path in [top, *top.rglob("*")]:
                os.chown(path, uid, 0, follow_symlinks=False)
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(uid, uid, uid)
        make_undumpable()  # a uid change sets the dumpable flag again
        for client in clients:
            client.reconnect()
        log.info("switched user", extra={"uid": uid, "owns": [str(p) for p in own]})

    def publish(self, topic: str, body: Mapping[str, Any]) -> None:
        if self._publisher is None:
            raise RuntimeError("publish() before serve()")
        self._publisher.publish(topic, body)

    def _ping(self, _body: dict[str, Any], _ctx: RequestContext) -> dict[str, Any]:
        # Three questions, three answers: answering at all is liveness; `healthy` is false on a
        # fault an operator must fix; `ready` is true when the service can do its job now.
        details = dict(self._health()) if self._health else {}
        healthy = bool(details.pop("healthy", True))
        ready = healthy and bool(details.pop("ready", True))
        return {
            "service": self.name,
            "pid": os.getpid(),
            "pid_ns": _pid_namespace(),  # with pid, names this process seen from another pid namespace
            "uid": os.getuid(),
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "healthy": healthy,
            "ready": ready,
            "details": {**details, "peer_policy": self.settings.peers.to_dict()},
        }

    def _metrics(self, _body: dict[str, Any], _ctx: RequestContext) -> dict[str, Any]:
        return {"text": metrics.render()}

    def _snapshot(self, body: dict[str, Any], _ctx: RequestContext) -> dict[str, Any]:
        if self._publisher is None:
            raise BusError("not_found", "no publisher")
        return self._publisher.snapshot(body["topic"])

    def wait(self) -> None:
        """Block until SIGTERM/SIGINT (or stop_event), then close the bus and remove its sockets."""
        self.stop_event.wait()
        self.close()

    def stop_serving(self) -> None:
        """Take no more requests; return once those in flight have finished and been answered."""
        if self._server:
            self._server.stop()
            self._server = None

    def close(self) -> None:
        """Stop serving, close the publisher, then the ZeroMQ context. Call it after
        the service's own threads that use the bus (subscribers, publishing loops) have stopped."""
        self.stop_serving()
        if self._publisher:
            self._publisher.close()
            self._publisher = None
        self._ctx.destroy(linger=0)
        self.owner.release()  # last: the next instance binds the sockets this one just closed
        log.info("stopped")


def _pid_namespace() -> str:
    """This process's pid namespace, e.g. "pid:[4026531836]" (`dranet audit` on the host finds a
    container's process by it and NSpid)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
