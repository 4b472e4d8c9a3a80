"""``extract`` and ``write_context`` agree with OpenTelemetry's W3C propagator on every input."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aios_grpc.telemetry._trace import extract, write_context

PROPAGATOR = TraceContextTextMapPropagator()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"

CARRIERS = [
    {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"},
    {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-00"},
    {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-03"},
    {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01", "tracestate": "vendor=abc,other=1"},
    {"traceparent": f"00-{TRACE_ID.upper()}-{SPAN_ID}-01"},  # upper case: invalid
    {"traceparent": f"00-{'0' * 32}-{SPAN_ID}-01"},  # zero trace id
    {"traceparent": f"00-{TRACE_ID}-{'0' * 16}-01"},  # zero span id
    {"traceparent": f"ff-{TRACE_ID}-{SPAN_ID}-01"},  # forbidden version
    {"traceparent": f"01-{TRACE_ID}-{SPAN_ID}-01-future"},  # a later version may add fields
    {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01-extra"},  # version 00 may not
    {"traceparent": f"  00-{TRACE_ID}-{SPAN_ID}-01 "},
    {"traceparent": f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01"},
    {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-0x"},
    {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}_01"},
    {"traceparent": ""},
    {"other": "header"},
]


def described(context: object) -> tuple[object, ...]:
    sc = trace.get_current_span(context).get_span_context()  # type: ignore[arg-type]
    return (sc.trace_id, sc.span_id, int(sc.trace_flags), sc.is_remote, sc.is_valid, sc.trace_state.to_header())


@pytest.mark.parametrize("carrier", CARRIERS, ids=lambda c: c.get("traceparent", "none") or "empty")
def test_extract_reads_what_the_propagator_reads(carrier: dict[str, str]) -> None:
    assert described(extract(carrier)) == described(PROPAGATOR.extract(carrier))


@pytest.mark.parametrize(
    "span_context",
    [
        SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), False, TraceFlags(1)),
        SpanContext(int(TRACE_ID, 16), 1, False, TraceFlags(0)),
        SpanContext(1, int(SPAN_ID, 16), True, TraceFlags(3), TraceState([("vendor", "abc"), ("k", "v")])),
        SpanContext(0, 0, False),  # invalid: nothing written
    ],
)
def test_write_context_writes_what_the_propagator_injects(span_context: SpanContext) -> None:
    ours: dict[str, str] = {"k": "v"}
    theirs: dict[str, str] = {"k": "v"}
    tp = write_context(ours, span_context)
    PROPAGATOR.inject(theirs, context=trace.set_span_in_context(NonRecordingSpan(span_context)))
    assert ours == theirs
    assert tp == theirs.get("traceparent")
