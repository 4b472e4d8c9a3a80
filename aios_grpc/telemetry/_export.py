"""Exporters: the Prometheus endpoint and OTLP, for metrics and traces.

Both metric readers append the built-in aggregates (``Stats``) to what the SDK
collected, so one collection carries the user's ``AIOSMetrics`` and the runtime's
own metrics. Every server gets its own prometheus ``CollectorRegistry`` (never the
process-global one), so several servers in one process do not clash. OTLP exporters
are imported only when ``OTEL_EXPORTER_OTLP_*ENDPOINT`` asks for them (the ``otlp``
extra).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import (
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_http_server

from aios_grpc._version import __version__
from aios_grpc.errors import ConfigurationError
from aios_grpc.telemetry._stats import Stats

log = logging.getLogger("aios_grpc.telemetry")

SCOPE = InstrumentationScope("aios_grpc", __version__)


def _with_stats(data: MetricsData, stats: Stats, resource: Resource) -> MetricsData:
    extra = ScopeMetrics(SCOPE, stats.metrics(), "")
    if data.resource_metrics:
        first = data.resource_metrics[0]
        merged = ResourceMetrics(first.resource, [*first.scope_metrics, extra], first.schema_url)
        return MetricsData([merged, *data.resource_metrics[1:]])
    return MetricsData([ResourceMetrics(resource, [extra], "")])


class StatsPrometheusReader(PrometheusMetricReader):
    """The SDK's Prometheus reader, plus the built-in aggregates."""

    def __init__(self, stats: Stats, resource: Resource, registry: CollectorRegistry) -> None:
        super().__init__(registry=registry, scope_info_enabled=False)
        self._stats = stats
        self._resource = resource

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        super()._receive_metrics(_with_stats(metrics_data, self._stats, self._resource), timeout_millis, **kwargs)


class StatsPeriodicReader(PeriodicExportingMetricReader):
    """The SDK's periodic (OTLP) reader, plus the built-in aggregates."""

    def __init__(self, exporter: Any, stats: Stats, resource: Resource) -> None:
        super().__init__(exporter)
        self._stats = stats
        self._resource = resource

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        super()._receive_metrics(_with_stats(metrics_data, self._stats, self._resource), timeout_millis, **kwargs)


def _env_set(*names: str) -> bool:
    return any(os.environ.get(n, "").strip() for n in names)


def otlp_metrics_wanted() -> bool:
    """Whether the standard environment asks for OTLP metrics."""
    if os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        return False
    return _env_set("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")


def tracing_wanted(mode: str) -> bool:
    """Whether traces are exported: ``mode`` is the ``AIOS_TRACING`` setting."""
    if mode == "off" or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if mode == "on":
        return True
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter) or _env_set("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def _otlp_protocol(signal: str) -> str:
    return (
        (
            os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        .strip()
        .lower()
    )


def otlp_metric_exporter() -> Any:
    """An OTLP metric exporter configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables."""
    try:
        if _otlp_protocol("METRICS").startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    except ImportError as exc:
        raise ConfigurationError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is missing ({exc}): "
            "pip install 'aios-grpc[otlp]'"
        ) from None
    return OTLPMetricExporter()


def tracer_provider_from_env(resource: Resource) -> TracerProvider:
    """A tracer provider exporting by ``OTEL_TRACES_EXPORTER`` (``otlp`` by default, or ``console``)."""
    provider = TracerProvider(resource=resource)
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()]
    for name in names:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            try:
                if _otlp_protocol("TRACES").startswith("http"):
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                else:
                    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise ConfigurationError(
                    f"tracing exports over OTLP but the exporter is missing ({exc}): pip install 'aios-grpc[otlp]'"
                ) from None
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name != "none":
            raise ConfigurationError(f"OTEL_TRACES_EXPORTER={name!r} is not supported (use otlp, console or none)")
    return provider


class MetricsEndpoint:
    """The Prometheus text endpoint (``GET /metrics``) of one server, in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.requested_port = port
        self.port = 0
        self._server: Any = None

    def start(self) -> None:
        """Bind and serve; a port in use is a ``ConfigurationError`` naming the setting."""
        try:
            self._server, _ = start_http_server(self.requested_port, self.host, self.registry)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self.requested_port} (AIOS_METRICS_PORT): {exc}; "
                "use AIOS_METRICS_PORT=0 for a free port or -1 to turn the endpoint off"
            ) from None
        self.port = int(self._server.server_port)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        """Stop serving and release the port, without waiting for it.

        ``shutdown()`` waits for the serving thread's next poll (up to half a second);
        a helper thread takes that wait so the caller's event loop never does.
        """
        server, self._server = self._server, None
        if server is None:
            return

        def close() -> None:
            server.shutdown()
            server.server_close()

        threading.Thread(target=close, name="aios-metrics-stop", daemon=True).start()


def build_readers(
    stats: Stats, resource: Resource, metrics_port: int, host: str
) -> tuple[list[MetricReader], MetricsEndpoint | None]:
    """The metric readers wanted by settings and environment, and the endpoint (not started)."""
    readers: list[MetricReader] = []
    endpoint = None
    if metrics_port >= 0:
        registry = CollectorRegistry(auto_describe=False)
        readers.append(StatsPrometheusReader(stats, resource, registry))
        endpoint = MetricsEndpoint(registry, host, metrics_port)
    if otlp_metrics_wanted():
        readers.append(StatsPeriodicReader(otlp_metric_exporter(), stats, resource))
    return readers, endpoint


__all__ = [
    "MetricsEndpoint",
    "StatsPeriodicReader",
    "StatsPrometheusReader",
    "build_readers",
    "otlp_metric_exporter",
    "otlp_metrics_wanted",
    "tracer_provider_from_env",
    "tracing_wanted",
]
