"""Notifications: PUB/SUB with snapshot-on-join.

Notifications carry state, not deltas (applying one twice is harmless). Each topic has a sequence
number and the publisher an epoch (new at every start). A heartbeat every second carries the epoch
and every topic's latest sequence number, so a subscriber that joined late, missed a message, or
whose publisher restarted notices and asks for a fresh snapshot over the publisher's `snapshot` op.
Nobody depends on having been up when something happened.

Topics are declared in dranet.bus.messages.TOPICS with the shape of a notification's body and of a
snapshot's, and checked like ops: a publisher refuses to send a body that does not fit (our own
bug: BusError internal), a subscriber drops one that does not fit (logged) and resyncs.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

from dranet.bus import endpoints
from dranet.bus.client import BusClient
from dranet.bus.messages import (
    MAX_WIRE_BYTES,
    TOPICS,
    BusError,
    ErrorCode,
    check_notification,
    pack,
    unpack,
)

log = logging.getLogger(__name__)
HEARTBEAT_TOPIC = "_hb"
HEARTBEAT_INTERVAL = 1.0


class Publisher:
    def __init__(
        self,
        runtime_dir: str | Path,
        service: str,
        snapshots: Mapping[str, Callable[[], Mapping[str, Any]]] | None = None,
        *,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        _check_declared(snapshots or {})
        self.service = service
        self.epoch = uuid.uuid4().hex
        self.path = endpoints.events_path(runtime_dir, service)
        self._snapshots = dict(snapshots or {})
        self._seq: dict[str, int] = dict.fromkeys(self._snapshots, 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        endpoints.ensure_runtime_dir(self.path.parent)
        endpoints.remove_stale(self.path)
        self._sock = (context or zmq.Context.instance()).socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(endpoints.ipc(self.path))
        self.path.chmod(endpoints.SOCKET_MODE)
        self._hb = threading.Thread(target=self._heartbeat, name=f"pub-hb-{service}", daemon=True)
        self._hb.start()

    def publish(self, topic: str, body: Mapping[str, Any]) -> None:
        """Send a notification; raises BusError(internal) if the body does not fit the topic."""
        _check_ours(topic, dict(body), snapshot=False)
        with self._lock:
            seq = self._seq.get(topic, 0) + 1
            self._seq[topic] = seq
            self._sock.send_multipart(
                [topic.encode(), pack({"epoch": self.epoch, "seq": seq, "body": dict(body)})]
            )

    def snapshot(self, topic: str) -> dict[str, Any]:
        fn = self._snapshots.get(topic)
        if fn is None:
            raise BusError(ErrorCode.NOT_FOUND, f"{self.service} publishes no topic {topic!r}")
        with self._lock:  # seq and body read together: no event can slip between them
            snap = {"epoch": self.epoch, "seq": self._seq.get(topic, 0), "body": dict(fn())}
        _check_ours(topic, snap["body"], snapshot=True)
        return snap

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            with self._lock:
                msg = pack({"epoch": self.epoch, "seqs": dict(self._seq)})
                self._sock.send_multipart([HEARTBEAT_TOPIC.encode(), msg])

    def close(self) -> None:
        self._stop.set()
        self._hb.join(2)
        with self._lock:
            self._sock.close(0)
        endpoints.remove_stale(self.path)


def _check_declared(topics: Mapping[str, Any] | list[str]) -> None:
    for topic in topics:
        if topic not in TOPICS:
            raise ValueError(f"topic {topic!r} is not declared in dranet.bus.messages.TOPICS")


def _check_ours(topic: str, body: Any, *, snapshot: bool) -> None:
    try:
        check_notification(topic, body, snapshot=snapshot)
    except BusError as err:  # the publisher's own bug, not a subscriber's
        raise BusError(ErrorCode.INTERNAL, f"refused to publish: {err.message}") from None


class Subscriber:
    """Delivers on_message(topic, body) for the snapshot on join and for every notification after."""

    def __init__(
        self,
        runtime_dir: str | Path,
        service: str,
        topics: list[str],
        on_message: Callable[[str, dict[str, Any]], None],
        *,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        _check_declared(topics)
        self.service = service
        self.topics = list(topics)
        self.on_message = on_message
        self._ctx = context or zmq.Context.instance()
        self._endpoint = endpoints.ipc(endpoints.events_path(runtime_dir, service))
        self._client = BusClient(runtime_dir, service, context=self._ctx)
        self._epoch = ""
        self._seq: dict[str, int] = {}
        self._stale: set[str] = set(self.topics)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sub-{service}", daemon=True)
        self.synced = threading.Event()  # set once every topic has had a snapshot

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(3)
        self._client.close()

    def _run(self) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_BYTES)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        for topic in [*self.topics, HEARTBEAT_TOPIC]:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sock.connect(self._endpoint)
        try:
            while not self._stop.is_set():
                self._resync()
                if not sock.poll(200, zmq.POLLIN):
                    continue
                frames = sock.recv_multipart()
                try:
                    self._receive(frames)
                except Exception:
                    log.exception("subscriber: dropped a notification from %s", self.service)
        finally:
            sock.close(0)

    def _receive(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            return
        topic, msg = frames[0].decode(), unpack(frames[1])
        if not isinstance(msg, dict):
            return
        if msg.get("epoch") != self._epoch:
            self._stale.update(self.topics)  # the publisher restarted: everything may have changed
            return
        if topic == HEARTBEAT_TOPIC:
            seqs = msg.get("seqs") or {}
            for t in self.topics:
                if int(seqs.get(t, 0)) > self._seq.get(t, 0):
                    self._stale.add(t)  # we missed something
            return
        if topic not in self.topics or topic in self._stale:
            return
        seq = int(msg.get("seq", 0))
        if seq <= self._seq.get(topic, 0):
            return  # already covered by the snapshot
        if seq > self._seq.get(topic, 0) + 1:
            self._stale.add(topic)
            return
        body: dict[str, Any] = msg.get("body")  # type: ignore[assignment]  # checked just below
        try:
            check_notification(topic, body)
        except BusError as err:
            log.warning("subscriber: dropped a malformed notification from %s: %s", self.service, err.message)
            self._stale.add(topic)  # we did not apply it: the next snapshot brings its state
            return
        self._seq[topic] = seq
        self.on_message(topic, body)

    def _resync(self) -> None:
        for topic in sorted(self._stale):
            try:
                snap = self._client.call("snapshot", {"topic": topic}, timeout=1.0)
            except BusError as err:
                if err.code != ErrorCode.TIMEOUT:
                    log.warning("subscriber: snapshot of %s/%s failed: %s", self.service, topic, err.message)
                return  # the publisher is not there yet; retry on the next loop
            try:
                check_notification(topic, snap["body"], snapshot=True)
            except BusError as err:
                log.warning("subscriber: malformed snapshot from %s: %s", self.service, err.message)
                return  # retried on the next loop
            if snap["epoch"] != self._epoch:
                self._epoch = snap["epoch"]
                self._stale.update(self.topics)
                self._seq = {}
            self._seq[topic] = int(snap["seq"])
            self._stale.discard(topic)
            self.on_message(topic, snap["body"])
        if not self._stale:
            self.synced.set()
