"""W3C trace context in a packet's headers, and the span of a packet being traced.

``extract`` reads the caller's context (parsing the common form itself, which takes half
the propagator's time) and ``write_context`` writes a span's context back, as
``TraceContextTextMapPropagator`` would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def extract(carrier: Mapping[str, str]) -> Any:
    """The OpenTelemetry context of the W3C trace context in ``carrier``.

    The common form (version 00, no ``tracestate``) is parsed here, in half the time
    the propagator takes; anything else goes to the propagator.
    """
    tp = carrier.get("traceparent")
    if type(tp) is str and "tracestate" not in carrier:
        found = _TRACEPARENT_00.fullmatch(tp)
        if found is not None:
            trace_id = int(found[1], 16)
            span_id = int(found[2], 16)
            if trace_id and span_id:
                flags = TraceFlags(int(found[3], 16))
                return trace.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, span_id, True, flags)))
    return _PROPAGATOR.extract(carrier)


def write_context(headers: dict[str, str], span_context: Any) -> str | None:
    """Write ``span_context`` into ``headers`` as W3C trace context; returns the ``traceparent``.

    What ``TraceContextTextMapPropagator.inject`` writes, without building a context
    object first; None (and nothing written) for an invalid span context.
    """
    if not span_context.is_valid:
        return None
    tp = f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}"
    headers["traceparent"] = tp
    if span_context.trace_state:
        headers["tracestate"] = span_context.trace_state.to_header()
    return tp


class Traced:
    """A recorded (sampled) packet span, its context, and the ``traceparent`` it was written as."""

    __slots__ = ("ctx", "key", "span")

    def __init__(self, span: Any, ctx: Any, key: str) -> None:
        self.span = span
        self.ctx = ctx
        self.key = key


def drained(
    items: Generator[Any, None, Any],
    start: float,
    record: Callable[[float], None] | None,
    ctx: Any = None,
    close: Callable[[float], None] | None = None,
) -> Generator[Any, None, None]:
    """``items``, timed from ``start`` until drained (or closed, or failed).

    With ``ctx``, the block's generator runs under that OpenTelemetry context each time
    it is resumed, and ``close(seconds)`` ends its stage span at the end.
    """
    clock = time.perf_counter
    try:
        if ctx is None:
            yield from items
            return
        while True:
            token = otel_context.attach(ctx)
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                otel_context.detach(token)
            yield item
    finally:
        items.close()
        seconds = clock() - start
        if record is not None:
            record(seconds)
        if close is not None:
            close(seconds)


__all__ = ["Traced", "drained", "extract", "write_context"]
