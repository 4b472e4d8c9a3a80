"""Cheap in-process aggregates for the built-in metrics, turned into OpenTelemetry data on collection.

An OpenTelemetry SDK histogram costs about 5 µs per ``record`` on this Python, and a
packet feeds five of them; the stream path handles a packet in a few tens of
microseconds, so the SDK instruments would eat a large share of the throughput.

Recording here is one ``list.append`` of the raw sample (or label key), which is
atomic under the GIL, so writers on any thread take no lock. The pending samples are
*folded* into totals and buckets, under a lock, when something reads (a Prometheus
scrape, an OTLP export, ``Counter.total``, ``Histo.count``) and whenever a series
holds ``FOLD_AT`` pending samples, which keeps memory bounded when nothing collects.
A fold removes only the samples it counted (``del pending[:n]``) and writers only
append, so a sample recorded while a fold runs is kept for the next one: nothing is
lost or counted twice.

Hot paths may append to ``Counter.pending`` / ``Histo.pending_list(key)`` directly
(saving a Python call per sample); they must then call ``fold()`` once the list holds
``FOLD_AT`` items or more, as ``add`` and ``observe`` do.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left, bisect_right
from collections import Counter as _Tally
from collections.abc import Sequence

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

Key = tuple[str, ...]

FOLD_AT = 1024
"""Pending samples per series that make the writer fold them (bounds memory between collections)."""


class Counter:
    """A monotonic total per label values (``add`` is called from any thread)."""

    def __init__(self, name: str, description: str, unit: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.description = description
        self.unit = unit
        self.labelnames = tuple(labelnames)
        self.values: dict[Key, float] = {}
        self.pending: list[Key] = []  # one key per increment of 1, not folded yet
        self._lock = threading.Lock()

    def add(self, key: Key, amount: float = 1.0) -> None:
        """Add ``amount`` to the series named by ``key`` (label values, in order)."""
        if amount == 1.0:
            pending = self.pending
            pending.append(key)
            if len(pending) >= FOLD_AT:
                self.fold()
            return
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def fold(self) -> None:
        """Move the pending increments into the totals."""
        with self._lock:
            self._fold()

    def _fold(self) -> None:
        pending = self.pending
        n = len(pending)
        if not n:
            return
        taken = pending[:n]
        del pending[:n]  # only the ones taken: writers may have appended more meanwhile
        values = self.values
        for key, count in _Tally(taken).items():
            values[key] = values.get(key, 0.0) + count

    def total(self) -> float:
        """Sum over every series."""
        with self._lock:
            self._fold()
            return sum(self.values.values())

    def metric(self, start_ns: int, now_ns: int) -> Metric:
        """The OpenTelemetry ``Sum`` of every series."""
        with self._lock:
            self._fold()
            items = list(self.values.items())
        points = [NumberDataPoint(dict(zip(self.labelnames, k, strict=True)), start_ns, now_ns, v) for k, v in items]
        data = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
        return Metric(self.name, self.description, self.unit, data)


class _Series:
    __slots__ = ("count", "counts", "max", "min", "pending", "shown", "sum")

    def __init__(self, buckets: int) -> None:
        self.shown = False  # exported even with no samples (otherwise from the first one on)
        self.counts = [0] * buckets
        self.sum = 0.0
        self.count = 0
        self.min = math.inf
        self.max = -math.inf
        self.pending: list[float] = []  # raw samples, not folded yet

    def fold(self, bounds: tuple[float, ...]) -> None:
        """Fold the pending samples into count, sum, buckets, min and max (caller holds the lock)."""
        pending = self.pending
        n = len(pending)
        if not n:
            return
        values = pending[:n]
        del pending[:n]  # only the ones taken: writers may have appended more meanwhile
        part = sum(values)
        self.count += n
        self.sum = sum(values, self.sum)  # left to right, as adding one sample at a time does
        counts = self.counts
        if part != part:  # a NaN (or +inf and -inf): sorting is undefined, so one at a time
            for value in values:
                counts[bisect_left(bounds, value)] += 1
                if value < self.min:
                    self.min = value
                if value > self.max:
                    self.max = value
            return
        values.sort()
        # Bucket i holds bounds[i-1] < value <= bounds[i]; the last one, value > bounds[-1].
        below = 0
        for i, bound in enumerate(bounds):
            upto = bisect_right(values, bound)
            counts[i] += upto - below
            below = upto
        counts[-1] += n - below
        if values[0] < self.min:
            self.min = values[0]
        if values[-1] > self.max:
            self.max = values[-1]


class Histo:
    """An explicit-bucket histogram per label values (``observe`` from any thread)."""

    def __init__(
        self,
        name: str,
        description: str,
        unit: str,
        labelnames: Sequence[str],
        bounds: Sequence[float],
    ) -> None:
        self.name = name
        self.description = description
        self.unit = unit
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(bounds)
        self.series: dict[Key, _Series] = {}
        self._lock = threading.Lock()

    def pending_list(self, key: Key = ()) -> list[float]:
        """The list that samples of the series ``key`` are appended to.

        Appending to it records a sample; call ``fold()`` once it holds ``FOLD_AT`` items.
        The series is exported from its first sample on, not from this call.
        """
        s = self.series.get(key)
        if s is None:
            with self._lock:
                s = self.series.get(key)
                if s is None:
                    s = self.series[key] = _Series(len(self.bounds) + 1)
        return s.pending

    def observe(self, value: float, key: Key = ()) -> None:
        """Record one sample."""
        s = self.series.get(key)
        pending = s.pending if s is not None else self.pending_list(key)
        pending.append(value)
        if len(pending) >= FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Fold every series' pending samples into its totals."""
        with self._lock:
            for s in self.series.values():
                s.fold(self.bounds)

    def count(self, key: Key = ()) -> int:
        """How many samples the series ``key`` holds."""
        with self._lock:
            s = self.series.get(key)
            if s is None:
                return 0
            s.fold(self.bounds)
            return s.count

    def metric(self, start_ns: int, now_ns: int) -> Metric:
        """The OpenTelemetry ``Histogram`` of every series."""
        with self._lock:
            for s in self.series.values():
                s.fold(self.bounds)
            points = [
                HistogramDataPoint(
                    attributes=dict(zip(self.labelnames, k, strict=True)),
                    start_time_unix_nano=start_ns,
                    time_unix_nano=now_ns,
                    count=s.count,
                    sum=s.sum,
                    bucket_counts=list(s.counts),
                    explicit_bounds=self.bounds,
                    min=s.min,
                    max=s.max,
                )
                for k, s in self.series.items()
                if s.count or s.shown
            ]
        return Metric(self.name, self.description, self.unit, Histogram(points, AggregationTemporality.CUMULATIVE))


class Stats:
    """The set of built-in aggregates of one server."""

    def __init__(self) -> None:
        self.start_ns = time.time_ns()
        self.items: list[Counter | Histo] = []

    def counter(self, name: str, description: str, unit: str, labelnames: Sequence[str] = ()) -> Counter:
        """Add a counter."""
        c = Counter(name, description, unit, labelnames)
        self.items.append(c)
        return c

    def histogram(
        self, name: str, description: str, unit: str, labelnames: Sequence[str], bounds: Sequence[float]
    ) -> Histo:
        """Add a histogram with upper bucket bounds ``bounds``."""
        h = Histo(name, description, unit, labelnames, bounds)
        if not labelnames:
            # One series only: export it from the start, so that a scrape shows 0, not nothing.
            h.pending_list(())
            h.series[()].shown = True
        self.items.append(h)
        return h

    def metrics(self) -> list[Metric]:
        """Every aggregate as OpenTelemetry data, now."""
        now = time.time_ns()
        return [item.metric(self.start_ns, now) for item in self.items]


__all__ = ["FOLD_AT", "Counter", "Histo", "Stats"]
