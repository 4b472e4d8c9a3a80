"""OTLP export when the standard OTEL_* variables ask for it, into a real gRPC collector endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from aios_grpc_client import BlockClient
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mgrpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tgrpc

from tests.blocks.basic import EchoBlock


class Collector(mgrpc.MetricsServiceServicer, tgrpc.TraceServiceServicer):
    """Keeps every OTLP export it receives."""

    def __init__(self) -> None:
        self.metrics: list[mpb.ExportMetricsServiceRequest] = []
        self.traces: list[tpb.ExportTraceServiceRequest] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            if isinstance(request, mpb.ExportMetricsServiceRequest):
                self.metrics.append(request)
                return mpb.ExportMetricsServiceResponse()
            self.traces.append(request)
            return tpb.ExportTraceServiceResponse()

    def sum_of(self, name: str) -> float:
        """The latest cumulative value of a counter, over its label sets."""
        with self.lock:
            requests = list(self.metrics)
        for request in reversed(requests):
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name == name:
                            return sum(p.as_double or p.as_int for p in metric.sum.data_points)
        return -1.0

    def span_names(self) -> list[str]:
        with self.lock:
            return [s.name for r in self.traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def service_names(self) -> set[str]:
        with self.lock:
            return {
                a.value.string_value
                for r in self.traces
                for rs in r.resource_spans
                for a in rs.resource.attributes
                if a.key == "service.name"
            }


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    mgrpc.add_MetricsServiceServicer_to_server(servicer, server)
    # Both services have an RPC named Export; one servicer object answers both.
    tgrpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def test_metrics_and_traces_go_to_the_otlp_endpoint(
    serve: Any, collector: tuple[Collector, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    servicer, port = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    served = serve(EchoBlock, block_id="otlp-block")
    assert served.server.telemetry.tracer is not None  # AIOS_TRACING=auto and an endpoint: on
    with BlockClient(served.address) as client:
        assert all(r.ok for r in client.process([{"i": i} for i in range(3)], timeout=30) if r.terminal)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if servicer.sum_of("aios_packets_answered") == 3 and servicer.span_names().count("aios.packet") == 3:
            break
        time.sleep(0.1)
    assert servicer.sum_of("aios_packets_answered") == 3
    assert servicer.sum_of("aios_packets_received") == 3
    assert servicer.span_names().count("aios.packet") == 3
    assert servicer.service_names() == {"otlp-block"}


def test_otel_metrics_exporter_none_keeps_otlp_metrics_off(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    served = serve(EchoBlock)
    telemetry = served.server.telemetry
    assert telemetry.tracer is None
    assert [type(r).__name__ for r in telemetry.metric_readers] == ["StatsPrometheusReader"]
