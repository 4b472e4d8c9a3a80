"""``OTelMetricsBackend``: ``AIOSMetrics`` updates recorded on OpenTelemetry SDK instruments.

``AIOSMetrics`` validates every call (names, kinds, label sets) before the backend
sees it, so this module only maps a registered ``MetricSpec`` to an instrument:
counter to ``Counter``, gauge to the synchronous ``Gauge``, histogram to
``Histogram`` with the registered buckets as its explicit bounds.

>>> from opentelemetry.sdk.metrics import MeterProvider
>>> metrics = AIOSMetrics(OTelMetricsBackend(MeterProvider().get_meter("block")))
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry.metrics import Meter

from aios_grpc.metrics import MetricsBackend, MetricSpec


class OTelMetricsBackend(MetricsBackend):
    """Sends validated ``AIOSMetrics`` updates to instruments of ``meter``."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._instruments: dict[str, Any] = {}
        self._lock = threading.Lock()

    def register(self, spec: MetricSpec) -> None:
        """Create the instrument for ``spec`` (once per name)."""
        with self._lock:
            if spec.name in self._instruments:
                return
            if spec.kind == "counter":
                inst: Any = self.meter.create_counter(spec.name, description=spec.documentation)
            elif spec.kind == "gauge":
                inst = self.meter.create_gauge(spec.name, description=spec.documentation)
            else:
                inst = self.meter.create_histogram(
                    spec.name,
                    description=spec.documentation,
                    explicit_bucket_boundaries_advisory=list(spec.buckets),
                )
            self._instruments[spec.name] = inst

    def record(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        """Add to a counter, set a gauge, or record a histogram sample."""
        inst = self._instruments.get(spec.name)
        if inst is None:
            self.register(spec)
            inst = self._instruments[spec.name]
        attributes = {k: str(v) for k, v in labels.items()}
        if spec.kind == "counter":
            inst.add(value, attributes)
        elif spec.kind == "gauge":
            inst.set(value, attributes)
        else:
            inst.record(value, attributes)


def attach_backend(metrics: Any, backend: MetricsBackend) -> None:
    """Point ``metrics`` (an ``AIOSMetrics``) at ``backend`` and register what it already holds."""
    metrics.backend = backend
    for spec in metrics.registered():
        backend.register(spec)


__all__ = ["OTelMetricsBackend", "attach_backend"]
