"""A streaming ``on_data`` is one "data" stage from its call to its last output, in metrics and in traces."""

from __future__ import annotations

from typing import Any

import pytest
from aios_grpc_client import BlockClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id

from tests.telemetry.blocks import AsyncSlowStreamBlock, SlowStreamBlock
from tests.telemetry.test_metrics import scrape, value
from tests.telemetry.test_tracing import by_name, parent_id

PAUSE = 0.05  # seconds the block sleeps before each output
STREAMING = [pytest.param(SlowStreamBlock, id="generator"), pytest.param(AsyncSlowStreamBlock, id="async-generator")]


def stream(address: str, *inputs: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Send ``inputs``; returns (partial results, terminal results)."""
    with BlockClient(address) as client:
        results = list(client.process(list(inputs), timeout=30))
    return [r for r in results if not r.terminal], [r for r in results if r.terminal]


@pytest.mark.parametrize("block", STREAMING)
def test_the_data_stage_lasts_until_the_last_output(serve: Any, block: type[Any]) -> None:
    served = serve(block, metrics_port=0)
    partials, terminals = stream(served.address, {"n": 3, "pause": PAUSE}, {"n": 2, "pause": PAUSE})
    assert len(partials) == 5 and all(r.ok for r in terminals) and len(terminals) == 2
    s = scrape(served.server.telemetry.metrics_port)
    assert value(s, "aios_stage_duration_seconds_count", stage="data") == 2
    # Each packet's stage holds every pause before its outputs (sleeps last at least that long).
    assert value(s, "aios_stage_duration_seconds_sum", stage="data") >= 5 * PAUSE


def test_a_generator_left_early_is_timed_up_to_where_it_stopped(serve: Any) -> None:
    served = serve(SlowStreamBlock, metrics_port=0)
    partials, [terminal] = stream(served.address, {"n": 4, "pause": PAUSE, "bad_at": 1})
    assert len(partials) == 1 and not terminal.ok and terminal.error.stage == "data"
    s = scrape(served.server.telemetry.metrics_port)
    assert value(s, "aios_stage_duration_seconds_count", stage="data") == 1
    assert value(s, "aios_stage_duration_seconds_sum", stage="data") >= 2 * PAUSE


@pytest.mark.parametrize("block", STREAMING)
def test_the_data_span_covers_the_stream_and_is_current_in_it(
    traced: Any, exporter: InMemorySpanExporter, block: type[Any]
) -> None:
    served = traced(block)
    partials, [terminal] = stream(served.address, {"n": 3, "pause": PAUSE})
    assert terminal.ok and len(partials) == 3
    spans = exporter.get_finished_spans()
    [packet] = by_name(spans, "aios.packet")
    [data] = by_name(spans, "aios.data")
    assert parent_id(data) == format_span_id(packet.context.span_id)
    assert data.end_time is not None and data.start_time is not None
    assert data.end_time - data.start_time >= 3 * PAUSE * 1e9
    # The block's code ran under the stage's span at every step, so its own spans nest there.
    assert {r.data["span"] for r in partials} == {format_span_id(data.context.span_id)}
    assert served.server.telemetry._live == {}


def test_a_generator_left_early_still_ends_its_span(traced: Any, exporter: InMemorySpanExporter) -> None:
    served = traced(SlowStreamBlock)
    partials, [terminal] = stream(served.address, {"n": 4, "pause": PAUSE, "bad_at": 1})
    assert len(partials) == 1 and not terminal.ok
    spans = exporter.get_finished_spans()
    [packet] = by_name(spans, "aios.packet")
    [data] = by_name(spans, "aios.data")
    assert not packet.status.is_ok
    assert parent_id(data) == format_span_id(packet.context.span_id)
    assert data.end_time is not None and data.start_time is not None
    assert data.end_time - data.start_time >= 2 * PAUSE * 1e9


def test_stage_time_as_an_attribute_when_stage_spans_are_off(traced: Any, exporter: InMemorySpanExporter) -> None:
    served = traced(SlowStreamBlock, tracing_stages=False)
    partials, [terminal] = stream(served.address, {"n": 2, "pause": PAUSE})
    assert terminal.ok
    [packet] = exporter.get_finished_spans()
    assert (packet.attributes or {})["aios.data_s"] >= 2 * PAUSE
    # No stage span: the block's code runs under the packet's span.
    assert {r.data["span"] for r in partials} == {format_span_id(packet.context.span_id)}
