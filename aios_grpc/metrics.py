"""``AIOSMetrics``: the seed's metrics API (counters, gauges, histograms with labels).

Mistakes are errors at the call: using a name that was never registered, registering
one name twice with another type, or passing labels that differ from the registered
label names all raise ``ValueError`` naming the metric.

>>> m = AIOSMetrics()
>>> m.register_counter("images_processed_total", "Images processed", ["camera"])
>>> m.increment_counter("images_processed_total", labels={"camera": "front"})
>>> m.value("images_processed_total", {"camera": "front"})
1.0
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

LabelKey = tuple[str, ...]


@dataclass
class MetricSpec:
    """What was registered under one name."""

    name: str
    kind: str
    documentation: str
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    values: dict[LabelKey, Any] = field(default_factory=dict)


class MetricsBackend:
    """Where metric updates go besides the in-memory values (OpenTelemetry, say).

    The default does nothing; ``AIOSMetrics`` validates every call before it reaches
    the backend, so a backend only sees well-formed updates.
    """

    def register(self, spec: MetricSpec) -> None:
        """A metric was registered."""

    def record(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        """A counter increment, gauge value or histogram observation."""


class AIOSMetrics:
    """Register and update block metrics (names and signatures of the original SDK)."""

    def __init__(self, backend: MetricsBackend | None = None) -> None:
        self._lock = threading.Lock()
        self._specs: dict[str, MetricSpec] = {}
        self.backend = backend or MetricsBackend()

    def register_counter(self, name: str, documentation: str, labelnames: Sequence[str] | None = None) -> None:
        """Register a counter (a total that only goes up)."""
        self._register(name, "counter", documentation, labelnames, ())

    def register_gauge(self, name: str, documentation: str, labelnames: Sequence[str] | None = None) -> None:
        """Register a gauge (a value that goes up and down)."""
        self._register(name, "gauge", documentation, labelnames, ())

    def register_histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] | None = None,
        buckets: Sequence[float] | None = None,
    ) -> None:
        """Register a histogram; ``buckets`` are upper bounds (default: latency buckets)."""
        bounds = tuple(sorted(float(b) for b in buckets)) if buckets else DEFAULT_BUCKETS
        self._register(name, "histogram", documentation, labelnames, bounds)

    def increment_counter(self, name: str, labels: Mapping[str, str] | None = None, amount: float = 1.0) -> None:
        """Add ``amount`` (default 1) to a counter."""
        if amount < 0:
            raise ValueError(f"counter {name!r} can only go up (amount={amount})")
        spec, key = self._lookup(name, "counter", labels)
        with self._lock:
            spec.values[key] = spec.values.get(key, 0.0) + amount
        self.backend.record(spec, amount, labels or {})

    def set_gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set a gauge to ``value``."""
        spec, key = self._lookup(name, "gauge", labels)
        with self._lock:
            spec.values[key] = float(value)
        self.backend.record(spec, float(value), labels or {})

    def observe_histogram(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record one sample in a histogram."""
        spec, key = self._lookup(name, "histogram", labels)
        with self._lock:
            counts, total, n = spec.values.get(key) or ([0] * (len(spec.buckets) + 1), 0.0, 0)
            counts[bisect.bisect_left(spec.buckets, value)] += 1
            spec.values[key] = (counts, total + value, n + 1)
        self.backend.record(spec, float(value), labels or {})

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> Any:
        """The current value (for a histogram: ``(bucket_counts, sum, count)``)."""
        spec, key = self._lookup(name, None, labels)
        with self._lock:
            return spec.values.get(key)

    def registered(self) -> list[MetricSpec]:
        """Every registered metric."""
        with self._lock:
            return list(self._specs.values())

    def _register(
        self,
        name: str,
        kind: str,
        documentation: str,
        labelnames: Sequence[str] | None,
        buckets: tuple[float, ...],
    ) -> None:
        if not name or not name.replace("_", "a").replace(":", "a").isalnum() or name[0].isdigit():
            raise ValueError(f"invalid metric name {name!r}: use letters, digits, '_' and ':'")
        labels = tuple(labelnames or ())
        with self._lock:
            old = self._specs.get(name)
            if old is not None:
                if old.kind != kind or old.labelnames != labels:
                    raise ValueError(
                        f"metric {name!r} is already registered as a {old.kind} with labels {list(old.labelnames)}"
                    )
                return
            spec = MetricSpec(name, kind, documentation, labels, buckets)
            self._specs[name] = spec
        self.backend.register(spec)

    def _lookup(self, name: str, kind: str | None, labels: Mapping[str, str] | None) -> tuple[MetricSpec, LabelKey]:
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self._specs)) or "none"
            raise ValueError(f"metric {name!r} is not registered (registered: {known})")
        if kind is not None and spec.kind != kind:
            raise ValueError(f"metric {name!r} is a {spec.kind}, not a {kind}")
        given = labels or {}
        if set(given) != set(spec.labelnames):
            raise ValueError(f"metric {name!r} takes labels {sorted(spec.labelnames)}, got {sorted(given)}")
        return spec, tuple(str(given[n]) for n in spec.labelnames)


__all__ = ["AIOSMetrics", "MetricSpec", "MetricsBackend"]
