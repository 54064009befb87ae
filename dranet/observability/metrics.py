"""Prometheus metrics: counters, gauges and histograms with the text exposition format.

Small on purpose (the project's dependency list stays short); thread-safe; one module-level REGISTRY.
"""

from __future__ import annotations

import abc
import bisect
import math
import threading
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def register(self, metric: _Metric) -> _Metric:
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is not None:
                if type(existing) is not type(metric) or existing.labelnames != metric.labelnames:
                    raise ValueError(f"metric {metric.name} registered twice with different types or labels")
                return existing
            self._metrics[metric.name] = metric
            return metric

    def render(self) -> str:
        with self._lock:
            metrics = list(self._metrics.values())
        return "".join(m.render() for m in metrics)


REGISTRY = Registry()


def _fmt_labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_value(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric(abc.ABC):
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.labelnames)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> str:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"

    @abc.abstractmethod
    def render(self) -> str:
        """This metric in the text exposition format."""


class _Value:
    def __init__(self, metric: _ScalarMetric, key: tuple[str, ...]) -> None:
        self._metric, self._key = metric, key

    def inc(self, amount: float = 1.0) -> None:
        with self._metric._lock:
            self._metric._values[self._key] = self._metric._values.get(self._key, 0.0) + amount

    def set(self, value: float) -> None:
        with self._metric._lock:
            self._metric._values[self._key] = float(value)

    def get(self) -> float:
        with self._metric._lock:
            return self._metric._values.get(self._key, 0.0)


class _ScalarMetric(_Metric):
    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def labels(self, **labels: str) -> _Value:
        return _Value(self, self._key(labels))

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def render(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        lines = [f"{self.name}{_fmt_labels(self.labelnames, k)} {_fmt_value(v)}\n" for k, v in items]
        return self.header() + "".join(lines)


class Counter(_ScalarMetric):
    kind = "counter"


class Gauge(_ScalarMetric):
    kind = "gauge"


class _HistValue:
    def __init__(self, metric: Histogram, key: tuple[str, ...]) -> None:
        self._metric, self._key = metric, key

    def observe(self, value: float) -> None:
        m = self._metric
        with m._lock:
            counts, total = m._data.get(self._key, ([0] * (len(m.buckets) + 1), 0.0))
            counts[bisect.bisect_left(m.buckets, value)] += 1
            m._data[self._key] = (counts, total + value)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Iterable[str] = (), buckets: Sequence[float] | None = None
    ) -> None:
        super().__init__(name, help, labelnames)
        self.buckets = tuple(sorted(buckets or DEFAULT_BUCKETS))
        self._data: dict[tuple[str, ...], tuple[list[int], float]] = {}

    def labels(self, **labels: str) -> _HistValue:
        return _HistValue(self, self._key(labels))

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def render(self) -> str:
        with self._lock:
            items = sorted((k, (list(c), s)) for k, (c, s) in self._data.items())
        out = [self.header()]
        for key, (counts, total) in items:
            running = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                running += count
                le = f'le="{_fmt_value(bound)}"'
                out.append(f"{self.name}_bucket{_fmt_labels(self.labelnames, key, le)} {running}\n")
            out.append(f"{self.name}_sum{_fmt_labels(self.labelnames, key)} {_fmt_value(total)}\n")
            out.append(f"{self.name}_count{_fmt_labels(self.labelnames, key)} {running}\n")
        return "".join(out)


def counter(name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
    """Register (or fetch the already registered) counter."""
    m = REGISTRY.register(Counter(name, help, labelnames))
    assert isinstance(m, Counter)
    return m


def gauge(name: str, help: str, labelnames: Iterable[str] = ()) -> Gauge:
    m = REGISTRY.register(Gauge(name, help, labelnames))
    assert isinstance(m, Gauge)
    return m


def histogram(
    name: str, help: str, labelnames: Iterable[str] = (), buckets: Sequence[float] | None = None
) -> Histogram:
    m = REGISTRY.register(Histogram(name, help, labelnames, buckets))
    assert isinstance(m, Histogram)
    return m


def render() -> str:
    return REGISTRY.render()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "only /metrics is served")
            return
        body = render().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return  # scrapes are not log events


def serve_metrics(address: str) -> ThreadingHTTPServer:
    """Serve /metrics on "host:port" in a daemon thread; returns the server (call shutdown())."""
    host, _, port = address.rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
