"""Traces: one trace across chained blocks; context from headers or metadata; sampling; off costs nothing."""

from __future__ import annotations

from typing import Any

from aios_grpc_client import BlockClient, make_packet
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import format_span_id, format_trace_id

from tests.blocks.basic import EchoBlock
from tests.runtime.blocks import BatchBlock
from tests.telemetry.blocks import ForwardBlock

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


def by_name(spans: list[ReadableSpan], name: str, block: str | None = None) -> list[ReadableSpan]:
    return [
        s for s in spans if s.name == name and (block is None or (s.attributes or {}).get("aios.block_id") == block)
    ]


def parent_id(span: ReadableSpan) -> str | None:
    return format_span_id(span.parent.span_id) if span.parent is not None else None


def test_one_trace_across_two_blocks_chained_by_grpc(traced: Any, exporter: InMemorySpanExporter) -> None:
    downstream = traced(EchoBlock, block_id="b")
    upstream = traced(ForwardBlock, block_id="a", block_init_data={"next": downstream.address})
    packet = make_packet({"x": 1}, session_id="s", seq_no=7, headers={"traceparent": TRACEPARENT})
    with BlockClient(upstream.address) as client:
        [result] = [r for r in client.process([packet], timeout=30) if r.terminal]
    assert result.ok, result.error
    assert result.data == {"downstream": {"echo": {"x": 1}}}

    spans = exporter.get_finished_spans()
    assert {format_trace_id(s.context.trace_id) for s in spans} == {TRACE_ID}
    [a] = by_name(spans, "aios.packet", "a")
    [b] = by_name(spans, "aios.packet", "b")
    assert parent_id(a) == CALLER_SPAN
    assert parent_id(b) == format_span_id(a.context.span_id)
    assert a.attributes["aios.session_id"] == "s" and a.attributes["aios.seq_no"] == 7
    # Child spans per stage, under each block's packet span.
    # (ForwardBlock has no on_preprocess; EchoBlock has one.)
    for packet_span, stages in ((a, {"aios.queue", "aios.data"}), (b, {"aios.queue", "aios.preprocess", "aios.data"})):
        children = {s.name for s in spans if parent_id(s) == format_span_id(packet_span.context.span_id)}
        assert stages <= children, children
    # The output carries the context on to whatever comes next.
    assert result.output is not None
    assert result.output.headers["traceparent"].split("-")[1] == TRACE_ID


def test_context_from_grpc_metadata(traced: Any, exporter: InMemorySpanExporter) -> None:
    served = traced(EchoBlock, block_id="m")
    with BlockClient(served.address, metadata=[("traceparent", TRACEPARENT)]) as client:
        assert client.run({"x": 2}, timeout=30).ok
    [span] = by_name(exporter.get_finished_spans(), "aios.packet")
    assert format_trace_id(span.context.trace_id) == TRACE_ID
    assert parent_id(span) == CALLER_SPAN


def test_failed_packet_span_has_error_status(traced: Any, exporter: InMemorySpanExporter) -> None:
    served = traced(EchoBlock)
    with BlockClient(served.address) as client:
        assert not client.run({"fail": "model said no"}, timeout=30).ok
    [span] = by_name(exporter.get_finished_spans(), "aios.packet")
    assert not span.status.is_ok
    assert "model said no" in (span.status.description or "")
    assert span.attributes["rpc.grpc.status_code"] == "UNKNOWN"


def test_batch_span_links_the_packets_it_carried(traced: Any, exporter: InMemorySpanExporter) -> None:
    served = traced(BatchBlock, block_init_parameters={"n": 4, "t": 2.0})
    packets = [make_packet({"i": i}, session_id=f"s{i}", seq_no=1) for i in range(4)]
    with BlockClient(served.address) as client:
        results = [r for r in client.process(packets, coalesce=4, timeout=30) if r.terminal]
    assert all(r.ok for r in results) and len(results) == 4
    spans = exporter.get_finished_spans()
    packet_ids = {format_span_id(s.context.span_id) for s in by_name(spans, "aios.packet")}
    assert len(packet_ids) == 4
    linked = set()
    for batch in by_name(spans, "aios.batch"):
        linked |= {format_span_id(link.context.span_id) for link in batch.links}
    assert linked == packet_ids


def test_tracing_off_touches_nothing(serve: Any) -> None:
    served = serve(EchoBlock, tracing="off")
    assert served.server.telemetry.tracer is None
    packet = make_packet({"x": 3}, session_id="s", seq_no=1, headers={"traceparent": TRACEPARENT, "k": "v"})
    with BlockClient(served.address) as client:
        [result] = [r for r in client.process([packet], timeout=30) if r.terminal]
    assert result.ok
    assert dict(result.output.headers) == {"traceparent": TRACEPARENT, "k": "v"}


def test_packet_span_only_when_stage_spans_are_off(traced: Any, exporter: InMemorySpanExporter) -> None:
    served = traced(EchoBlock, tracing_stages=False)
    with BlockClient(served.address) as client:
        assert client.run({"x": 4}, timeout=30).ok
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["aios.packet"]
    attributes = spans[0].attributes or {}
    assert {"aios.queue_s", "aios.preprocess_s", "aios.data_s"} <= set(attributes)
    assert all(attributes[k] >= 0 for k in ("aios.queue_s", "aios.preprocess_s", "aios.data_s"))


def test_an_unsampled_caller_gets_no_spans_but_its_decision_travels_on(
    traced: Any, exporter: InMemorySpanExporter
) -> None:
    served = traced(EchoBlock)
    unsampled = f"00-{TRACE_ID}-{CALLER_SPAN}-00"
    packet = make_packet({"x": 5}, session_id="s", seq_no=1, headers={"traceparent": unsampled})
    with BlockClient(served.address) as client:
        [result] = [r for r in client.process([packet], timeout=30) if r.terminal]
    assert result.ok
    assert exporter.get_finished_spans() == ()
    version, trace_id, _span, flags = result.output.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "00")


def test_an_unsampled_packet_records_nothing_and_the_next_block_follows_its_decision(
    traced: Any, exporter: InMemorySpanExporter
) -> None:
    # Upstream samples nothing of its own; downstream keeps the default (follow the parent,
    # sample a root): only the not-sampled traceparent keeps downstream from tracing.
    downstream = traced(EchoBlock, block_id="b")
    upstream = traced(
        ForwardBlock, sampler=ParentBased(ALWAYS_OFF), block_id="a", block_init_data={"next": downstream.address}
    )
    with BlockClient(upstream.address) as client:
        [result] = [r for r in client.process([{"x": 6}], timeout=30) if r.terminal]
    assert result.ok, result.error
    assert result.data == {"downstream": {"echo": {"x": 6}}}
    assert exporter.get_finished_spans() == ()
    version, trace_id, span_id, flags = result.output.headers["traceparent"].split("-")
    assert version == "00" and int(trace_id, 16) and int(span_id, 16)
    assert not int(flags, 16) & 1  # not sampled (the SDK may set 0x02: a random trace id)
    for served in (upstream, downstream):
        assert served.server.telemetry._live == {}


def test_sampled_and_unsampled_packets_side_by_side(traced: Any, exporter: InMemorySpanExporter) -> None:
    served = traced(EchoBlock, sampler=ParentBased(TraceIdRatioBased(0.5)))
    packets = [make_packet({"i": i}, session_id=f"s{i % 4}", seq_no=i) for i in range(60)]
    with BlockClient(served.address) as client:
        results = [r for r in client.process(packets, timeout=30) if r.terminal]
    assert len(results) == 60 and all(r.ok for r in results)
    sampled = {}
    for r in results:
        _, _, span_id, flags = r.output.headers["traceparent"].split("-")
        if int(flags, 16) & 1:
            sampled[span_id] = (r.session_id, r.seq_no)
    assert 0 < len(sampled) < 60  # 2**-60 odds of failing by chance
    spans = exporter.get_finished_spans()
    packet_spans = {format_span_id(s.context.span_id): s for s in by_name(spans, "aios.packet")}
    # Exactly the packets whose outgoing context says "sampled" were recorded, each whole.
    assert packet_spans.keys() == sampled.keys()
    for span_id, span in packet_spans.items():
        attributes = span.attributes or {}
        assert (attributes["aios.session_id"], attributes["aios.seq_no"]) == sampled[span_id]
        children = {s.name for s in spans if parent_id(s) == span_id}
        assert children == {"aios.queue", "aios.preprocess", "aios.data"}, children
    assert {parent_id(s) for s in spans if s.name != "aios.packet"} <= packet_spans.keys()
    assert served.server.telemetry._live == {}
