"""A process's Prometheus metrics, kept by prometheus-client.

Every process has the library's default registry: its own metrics (declared with counter(),
gauge() and histogram() below), the library's process_* and python_* collectors, and
dranet_build_info. No process serves HTTP itself: each answers the bus op `metrics` with render(),
and the pod's one endpoint (dranet/observability/endpoint.py) gathers them under a `service`
label.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from dranet import __version__

DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

disable_created_metrics()  # no *_created series: a scrape's size stays what the tables list

_declared: dict[str, Counter | Gauge | Histogram] = {}
_lock = threading.Lock()

BUILD_INFO = Info("dranet_build", "The running build: version (a constant 1 with the build as labels)")
BUILD_INFO.info({"version": __version__})


def _declare(kind: type, name: str, help: str, labelnames: Iterable[str], **kw: object) -> object:
    """Declare a metric once per process; declaring the same again returns the first (a module
    imported under two names in tests), a different kind or label set under one name is an error."""
    labels = tuple(labelnames)
    with _lock:
        existing = _declared.get(name)
        if existing is not None:
            if type(existing) is not kind or tuple(existing._labelnames) != labels:
                raise ValueError(f"metric {name} declared twice with different kinds or labels")
            return existing
        metric = kind(name, help, labels, **kw)
        _declared[name] = metric
        return metric


def counter(name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
    m = _declare(Counter, name, help, labelnames)
    assert isinstance(m, Counter)
    return m


def gauge(name: str, help: str, labelnames: Iterable[str] = ()) -> Gauge:
    m = _declare(Gauge, name, help, labelnames)
    assert isinstance(m, Gauge)
    return m


def histogram(
    name: str, help: str, labelnames: Iterable[str] = (), buckets: Sequence[float] | None = None
) -> Histogram:
    m = _declare(Histogram, name, help, labelnames, buckets=tuple(buckets or DEFAULT_BUCKETS))
    assert isinstance(m, Histogram)
    return m


def value(sample: str, **labels: str) -> float:
    """One sample's current value in this process (0 when it has none yet), e.g.
    value("dranet_dra_claims_total", op="prepare", outcome="prepared")."""
    return REGISTRY.get_sample_value(sample, labels) or 0.0


def render() -> str:
    """This process's metrics in the text exposition format (what the bus op `metrics` answers)."""
    return generate_latest(REGISTRY).decode()


class Phases:
    """Times consecutive phases of one operation into a histogram labelled `phase`: each done()
    observes the time since the previous one (or since the start)."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._last = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self._histogram.labels(phase=phase).observe(now - self._last)
        self._last = now
