"""Fixtures of the observability tests: served blocks whose spans go to an in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from aios_grpc.settings import load_settings
from aios_grpc.telemetry import Observability
from aios_grpc.testing import ServedBlock


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(exporter: InMemorySpanExporter) -> Iterator[Any]:
    """``traced(BlockClass, sampler=None, **settings)``: a served block whose spans go to ``exporter``.

    Each block gets a tracer provider of its own (the SDK's default sampler unless
    ``sampler`` is given), all exporting to the same ``exporter``.
    """
    providers: list[TracerProvider] = []
    served: list[ServedBlock] = []

    def start(block_class: type[Any], sampler: Sampler | None = None, **overrides: Any) -> ServedBlock:
        provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        settings = load_settings(**{"host": "127.0.0.1", "port": 0, "metrics_port": -1, "workers": 2, **overrides})
        s = ServedBlock(block_class, settings, telemetry=Observability(settings, tracer_provider=provider))
        served.append(s)
        return s

    yield start
    for s in reversed(served):
        s.close()
    for provider in providers:
        provider.shutdown()
