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
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

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
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder

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
    """The Prometheus text endpoint (``GET /metrics``) of one server, in a daemon thread.

    Only ``/metrics`` answers (200, in the format the scraper's ``Accept`` asks for);
    every other path is 404, so an HTTP probe pointed at ``/health`` by mistake fails
    instead of reading a 200 while the server is NOT_SERVING. The registry carries the
    process (``process_*``: CPU, memory, open files) and Python runtime (``python_info``,
    ``python_gc_*``) collectors of prometheus_client next to the server's own metrics.
    """

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.requested_port = port
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

    def start(self) -> None:
        """Bind and serve; a port in use is a ``ConfigurationError`` naming the setting."""
        handler = type("Handler", (_MetricsHandler,), {"registry": self.registry})
        server_class = _Server6 if ":" in self.host else ThreadingHTTPServer
        try:
            self._server = server_class((self.host.strip("[]"), self.requested_port), handler)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self.requested_port} (AIOS_METRICS_PORT): {exc}; "
                "use AIOS_METRICS_PORT=0 for a free port or -1 to turn the endpoint off"
            ) from None
        self._server.daemon_threads = True
        self.port = int(self._server.server_port)
        threading.Thread(target=self._server.serve_forever, name="aios-metrics", daemon=True).start()
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


class _MetricsHandler(BaseHTTPRequestHandler):
    registry: CollectorRegistry

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/metrics":
            self._send(404, b"not found: the metrics are at /metrics\n", "text/plain; charset=utf-8")
            return
        encode, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encode(self.registry)
        except Exception as exc:  # a collector failed: say so instead of dropping the connection
            log.exception("metrics collection failed")
            self._send(500, f"metrics collection failed: {type(exc).__name__}\n".encode(), "text/plain")
            return
        self._send(200, body, content_type)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: a scrape every few seconds would fill stderr."""


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


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
