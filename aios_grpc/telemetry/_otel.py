"""``Observability``: the built-in metrics and the traces of one server, on OpenTelemetry.

Metrics (names as Prometheus shows them):

- ``aios_packets_received_total{source}``, ``aios_packets_answered_total{code}``,
  ``aios_packets_failed_total{stage,code}``
- ``aios_stage_duration_seconds{stage}`` (queue, preprocess, data, batch, route) and
  ``aios_packet_duration_seconds`` (received to terminal answer)
- ``aios_queue_depth``, ``aios_packets_in_flight``, ``aios_open_streams``,
  ``aios_muxer_open_groups``, ``aios_serving`` (1 when the health status is SERVING),
  ``aios_sidecar_push_failures_total`` (side-car pushes that failed after their retry)
- ``aios_batch_size`` (entries per ``on_batch`` call), ``aios_event_loop_lag_seconds``

Traces (only when a tracer provider is configured; otherwise no span is made and
no header is touched): a span ``aios.packet`` per packet, parented on the W3C
``traceparent`` of the packet's headers or, failing that, of the stream's gRPC
metadata; child spans for the queue wait, ``on_preprocess``, ``on_data`` and
routing; an ``aios.batch`` span per ``on_batch`` call linked to every packet it
carried. The packet span's context is written back into the packet's headers, so
outputs (which copy the input's headers) and anything the block forwards carry it
to the next block: a chain of blocks yields one trace. An unsampled packet keeps
nothing but that header (which carries the "not sampled" decision on); its stages
are only timed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.exemplar import AlwaysOffExemplarFilter
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TracerProvider

from aios_grpc._version import __version__
from aios_grpc.errors import status_of
from aios_grpc.telemetry._base import Telemetry
from aios_grpc.telemetry._export import (
    MetricsEndpoint,
    build_readers,
    tracer_provider_from_env,
    tracing_wanted,
)
from aios_grpc.telemetry._metrics_backend import OTelMetricsBackend, attach_backend
from aios_grpc.telemetry._stats import FOLD_AT, Key, Stats
from aios_grpc.telemetry._trace import Traced, extract, write_context
from aios_grpc.telemetry._trace import drained as _drained

if TYPE_CHECKING:
    from aios_grpc.job import Job, Result
    from aios_grpc.metrics import AIOSMetrics
    from aios_grpc.settings import Settings

log = logging.getLogger("aios_grpc.telemetry")

LATENCY_BOUNDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STAGES = ("queue", "preprocess", "data", "batch", "route")
_OK: Key = ("OK",)


class Observability(Telemetry):
    """Metrics and traces of one block server.

    ``tracer_provider`` turns tracing on from code (tests pass one with an in-memory
    exporter); otherwise ``settings.tracing`` and the standard ``OTEL_*`` variables
    decide. ``metric_readers`` adds readers to the Prometheus/OTLP ones chosen by
    settings.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tracer_provider: TracerProvider | None = None,
        metric_readers: list[Any] | None = None,
    ) -> None:
        self.settings = settings
        self.resource = Resource.create(
            {"service.name": settings.block_id, "service.instance.id": settings.instance_id}
        )
        self._gauges: Mapping[str, Callable[[], float]] = {}  # the server's, from bind()
        self.stats = Stats()
        self._define_metrics()
        readers, self.endpoint = build_readers(
            self.stats, self.resource, settings.metrics_port, settings.metrics_host or settings.host
        )
        readers.extend(metric_readers or [])
        self.metric_readers = readers
        self.meter_provider = MeterProvider(
            metric_readers=readers, resource=self.resource, exemplar_filter=AlwaysOffExemplarFilter()
        )
        self.meter = self.meter_provider.get_meter("aios_grpc.runtime.adapter", __version__)
        self._define_gauges()
        if tracer_provider is None and tracing_wanted(settings.tracing):
            tracer_provider = tracer_provider_from_env(self.resource)
            self._own_tracer_provider: Any = tracer_provider
        else:
            self._own_tracer_provider = None
        self.tracer = tracer_provider.get_tracer("aios_grpc", __version__) if tracer_provider else None
        self._live: dict[str, Traced] = {}  # traceparent of a live packet span -> the span
        self.stage_spans = settings.tracing_stages
        self._muxer_groups = 0
        self._last_answered = 0.0  # time.monotonic() of the last answer

    # -- metrics ---------------------------------------------------------------------

    def _define_metrics(self) -> None:
        s = self.stats
        self.received = s.counter("aios_packets_received", "Packets that entered the scheduler", "", ["source"])
        self.answered = s.counter(
            "aios_packets_answered", "Packets that got their terminal answer, by gRPC status code", "", ["code"]
        )
        self.failed = s.counter(
            "aios_packets_failed",
            "Packets answered with an error, by failing stage and status code",
            "",
            ["stage", "code"],
        )
        self.stage_seconds = s.histogram(
            "aios_stage_duration_seconds", "Time a packet spent in one stage", "s", ["stage"], LATENCY_BOUNDS
        )
        self.packet_seconds = s.histogram(
            "aios_packet_duration_seconds",
            "Time from a packet's arrival to its terminal answer",
            "s",
            [],
            LATENCY_BOUNDS,
        )
        self.batch_size = s.histogram("aios_batch_size", "Entries per on_batch call", "", [], BATCH_BOUNDS)
        self.control_calls = s.counter(
            "aios_control_requests", "Control-plane calls, by RPC and gRPC status code", "", ["rpc", "code"]
        )
        self.control_seconds = s.histogram(
            "aios_control_duration_seconds", "Time a control-plane call took", "s", ["rpc"], LATENCY_BOUNDS
        )
        self.lag_seconds = s.histogram(
            "aios_event_loop_lag_seconds", "How late the event loop ran a timer", "s", [], LATENCY_BOUNDS
        )
        self._stage_keys: dict[str, Key] = {name: (name,) for name in STAGES}
        # The hooks append to these lists directly (see _stats): one C call per sample.
        self._stage_pending: dict[str, list[float]] = {
            name: self.stage_seconds.pending_list(key) for name, key in self._stage_keys.items()
        }
        self._packet_pending = self.packet_seconds.pending_list()
        self._received_pending = self.received.pending
        self._answered_pending = self.answered.pending

    def _define_gauges(self) -> None:
        # Gauges are read when a reader collects, so they cost nothing per packet; they
        # are SDK instruments, which also makes every collection carry SDK data (the
        # SDK skips a collection that has none, and the aggregates ride along with it).
        def gauge(name: str, description: str, read: Callable[[], float]) -> None:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                return [Observation(read())]

            self.meter.create_observable_gauge(name, [callback], description=description)

        def of(name: str) -> Callable[[], float]:
            # Looked up at each collection: bind() may come after the readers start.
            def read() -> float:
                live = self._gauges.get(name)
                return float(live() or 0) if live is not None else 0.0

            return read

        gauge("aios_queue_depth", "Packets waiting for a worker", of("queue_depth"))
        gauge("aios_packets_in_flight", "Packets received and not answered yet", of("in_flight"))
        gauge("aios_open_streams", "Open Process streams", of("open_streams"))
        gauge("aios_muxer_open_groups", "Incomplete muxer groups", lambda: float(self._muxer_groups))
        gauge("aios_serving", "1 when the gRPC health status is SERVING", of("serving"))
        read_failures = of("sidecar_push_failures")

        def failures(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read_failures())]

        self.meter.create_observable_counter(
            "aios_sidecar_push_failures", [failures], description="Side-car pushes that failed after their retry"
        )

    def control_done(self, rpc: str, code: str, seconds: float) -> None:
        """Count a control-plane call and time it."""
        self.control_calls.add((rpc, code))
        self.control_seconds.observe(seconds, (rpc,))

    @property
    def metrics_port(self) -> int:
        """The Prometheus endpoint's port (0 when it is off)."""
        return self.endpoint.port if self.endpoint is not None else 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the Prometheus endpoint (if any)."""
        if self.endpoint is not None and not self.endpoint.port:
            self.endpoint.start()

    def bind(self, gauges: Mapping[str, Callable[[], float]], metrics: AIOSMetrics | None = None) -> None:
        """Read the gauges from ``gauges`` and send the block's ``AIOSMetrics`` (``metrics``) to OpenTelemetry."""
        self._gauges = dict(gauges)
        if metrics is not None:
            attach_backend(metrics, OTelMetricsBackend(self.meter))

    async def stop(self) -> None:
        """Stop the endpoint; flush and shut down the providers this object made."""
        endpoint: MetricsEndpoint | None = self.endpoint
        if endpoint is not None:
            endpoint.stop()
        # A final OTLP push can take a while; it must not stall the loop's last steps.
        await asyncio.to_thread(self.meter_provider.shutdown, timeout_millis=2000)
        if self._own_tracer_provider is not None:
            await asyncio.to_thread(self._own_tracer_provider.shutdown)

    # -- hooks -------------------------------------------------------------------------

    def packets_received(self, jobs: Sequence[Job]) -> None:
        """Count packets of one request (one source); with tracing, open each one's span (``_open_packet_span``)."""
        if not jobs:
            return
        pending = self._received_pending
        if len(jobs) == 1:
            pending.append((jobs[0].source,))
        else:
            pending.extend([(jobs[0].source,)] * len(jobs))
        if len(pending) >= FOLD_AT:
            self.received.fold()
        if self.tracer is None:
            return
        for job in jobs:
            self._open_packet_span(job)

    def _open_packet_span(self, job: Job) -> None:
        """Open the packet's span (parented on its ``traceparent``) and write its context into the headers."""
        assert self.tracer is not None
        packet = job.packet
        headers = packet.headers
        carrier = headers if "traceparent" in headers else job.trace
        # The attributes go in at the start, where a sampler can see them.
        span = self.tracer.start_span(
            "aios.packet",
            context=extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes={
                "aios.block_id": self.settings.block_id,
                "aios.session_id": packet.session_id,
                "aios.seq_no": packet.seq_no,
                "aios.source": job.source,
            },
        )
        # Even an unsampled span's context is written on: it carries the "not sampled"
        # decision downstream, so the next block does not start a trace of its own.
        # Nothing else is kept for it: its stages cost a type check each.
        tp = write_context(headers, span.get_span_context())
        if tp is None or not span.is_recording():
            job.span = None
            return
        traced = Traced(span, trace.set_span_in_context(span), tp)
        self._live[tp] = traced
        job.span = traced

    def stages_done(self, jobs: Sequence[Job], stage: str, seconds: Sequence[float]) -> None:
        """Time the stage of each of ``jobs``; with tracing, add it to each packet's span as a child span."""
        if len(seconds) != len(jobs):
            raise ValueError(f"stages_done: {len(jobs)} jobs but {len(seconds)} durations")
        pending = self._stage_pending.get(stage)
        if pending is None:
            pending = self._stage_pending[stage] = self.stage_seconds.pending_list((stage,))
        pending.extend(seconds)
        if len(pending) >= FOLD_AT:
            self.stage_seconds.fold()
        if self.tracer is None:
            return
        for job, took in zip(jobs, seconds, strict=True):
            traced = job.span
            if type(traced) is Traced:
                self._stage_span(traced, stage, took)

    def _stage_span(self, traced: Traced, stage: str, seconds: float) -> None:
        """A stage that ended just now, as a child span (or an attribute) of the packet span."""
        if not self.stage_spans:
            traced.span.set_attribute(f"aios.{stage}_s", seconds)
            return
        assert self.tracer is not None
        end = time.time_ns()
        child = self.tracer.start_span(f"aios.{stage}", context=traced.ctx, start_time=end - int(seconds * 1e9))
        child.end(end_time=end)

    def packets_answered(self, jobs: Sequence[Job], results: Sequence[Result]) -> None:
        """Count the answers and time the packets, with one clock read; with tracing, close their spans."""
        now = time.monotonic()
        self._last_answered = now
        seconds = self._packet_pending
        ok = 0
        for job, result in zip(jobs, results, strict=True):
            if result.error is None and job.members is None:
                # The common case, a packet answered OK, in as few steps as it takes.
                seconds.append(now - job.received)
                ok += 1
                traced = job.span
                if type(traced) is Traced:
                    span = traced.span
                    span.set_attribute("rpc.grpc.status_code", "OK")
                    span.end()
                    self._live.pop(traced.key, None)
            else:
                self._answered_other(job, result, now)
        if ok:
            answered = self._answered_pending
            if ok == 1:
                answered.append(_OK)
            else:
                answered.extend([_OK] * ok)
            if len(seconds) >= FOLD_AT:
                self.packet_seconds.fold()
            if len(answered) >= FOLD_AT:
                self.answered.fold()

    def _answered_other(self, job: Job, result: Result, now: float) -> None:
        """A failed packet, or a merged (muxed) job answered for each of its members."""
        error = result.error
        members = job.members or (job,)
        key: Key = _OK if error is None else (status_of(error)[0].name,)
        for member in members:
            self.answered.add(key)
            if error is not None:
                self.failed.add((getattr(error, "stage", "") or "unknown", key[0]))
            self.packet_seconds.observe(now - member.received)
        if self.tracer is None:
            return
        # A merged (muxed) job carries its last member's span: end each span once.
        spans = {id(m.span): m.span for m in (*members, job) if type(m.span) is Traced}
        for traced in spans.values():
            span = traced.span
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, str(error)))
            span.set_attribute("rpc.grpc.status_code", key[0])
            span.end()
            self._live.pop(traced.key, None)

    def batch_formed(self, size: int, jobs: Any = None) -> None:
        """Record the batch's size."""
        self.batch_size.observe(size)

    def loop_lag(self, seconds: float) -> None:
        """Record the event loop's lag."""
        self.lag_seconds.observe(seconds)

    def muxer_groups(self, open_groups: int) -> None:
        """Remember the number of open muxer groups for the gauge."""
        self._muxer_groups = open_groups

    def snapshot(self) -> dict[str, Any]:
        """Totals for heartbeats."""
        return {
            "received": self.received.total(),
            "answered": self.answered.total(),
            "failed": self.failed.total(),
            # Kept as monotonic time per packet (cheaper); told as wall-clock time here.
            "last_answered_at": time.time() - (time.monotonic() - self._last_answered) if self._last_answered else 0.0,
        }

    # -- block methods -----------------------------------------------------------------

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``on_preprocess`` and ``on_data`` timed (and traced), ``on_batch`` traced.

        The batcher times batches itself (``stages_done(jobs, "batch", ...)`` and
        ``batch_formed``), so ``on_batch`` is wrapped only when tracing is on. An
        ``on_data`` that streams (a generator, or an async generator function) is timed,
        and its span kept open, until the scheduler has drained it.
        """
        if stage == "batch" and self.tracer is None:
            return fn
        if inspect.isasyncgenfunction(fn):
            # Wrapped by an async generator function, so that the adapter still sees one.
            return self._wrap_async_gen(fn, stage)
        if inspect.iscoroutinefunction(fn):
            return self._wrap_async(fn, stage)
        return self._wrap_sync(fn, stage)

    def _recorder(self, stage: str) -> Callable[[float], None] | None:
        """What records one sample of ``stage`` (None for "batch", which the batcher times)."""
        if stage == "batch":
            return None
        samples = self._stage_pending.get(stage)
        if samples is None:
            samples = self._stage_pending[stage] = self.stage_seconds.pending_list((stage,))
        fold = self.stage_seconds.fold

        # Runs on worker threads: list.append is atomic, so no lock is taken.
        def record(seconds: float) -> None:
            samples.append(seconds)
            if len(samples) >= FOLD_AT:
                fold()

        return record

    def _traced_of(self, arg: Any, stage: str) -> Traced | None:
        """The recorded packet span an ``on_preprocess(packet)`` / ``on_data(entry)`` call belongs to."""
        packet = arg if stage == "preprocess" else getattr(arg, "packet", None)
        headers = getattr(packet, "headers", None)
        tp = headers.get("traceparent") if headers else None
        return self._live.get(tp) if tp else None

    def _open(self, stage: str, arg: Any) -> tuple[Any, Any, Any]:
        """Open the stage's span (or none); returns (span, the context to run under, the packet span)."""
        assert self.tracer is not None
        if stage == "batch":
            links = []
            for entry in arg if isinstance(arg, list | tuple) else ():
                traced = self._traced_of(entry, "data")
                if traced is not None:
                    links.append(Link(traced.span.get_span_context()))
            if not links:
                return None, None, None
            span = self.tracer.start_span("aios.batch", links=links, attributes={"aios.batch_size": len(arg)})
            return span, trace.set_span_in_context(span), None
        traced = self._traced_of(arg, stage)
        if traced is None:
            return None, None, None
        if not self.stage_spans:
            # No stage span: block code's own spans still nest under the packet's.
            return None, traced.ctx, traced
        span = self.tracer.start_span(f"aios.{stage}", context=traced.ctx)
        return span, trace.set_span_in_context(span), traced

    def _close(self, stage: str, span: Any, traced: Traced | None, seconds: float) -> None:
        """End the stage's span, or note its time on the packet span when stage spans are off."""
        if span is not None:
            span.end()
        elif traced is not None:
            traced.span.set_attribute(f"aios.{stage}_s", seconds)

    def _wrap_sync(self, method: Callable[..., Any], stage: str) -> Callable[..., Any]:
        record = self._recorder(stage)
        clock = time.perf_counter
        untraced = method
        if record is not None:

            @functools.wraps(method)
            def timed_fast(arg: Any, *rest: Any) -> Any:
                start = clock()
                try:
                    ret = method(arg, *rest) if rest else method(arg)
                except BaseException:
                    record(clock() - start)
                    raise
                if type(ret) is GeneratorType:
                    return _drained(ret, start, record)
                record(clock() - start)
                return ret

            untraced = timed_fast
        if self.tracer is None:
            return untraced
        live = self._live

        @functools.wraps(method)
        def timed(arg: Any, *rest: Any) -> Any:
            # No recorded packet in flight (tracing off for them all, or unsampled): only timed.
            if not live:
                return untraced(arg, *rest)
            span, ctx, traced = self._open(stage, arg)
            if ctx is None:
                return untraced(arg, *rest)
            token = otel_context.attach(ctx)
            start = clock()
            try:
                ret = method(arg, *rest)
            except BaseException:
                seconds = clock() - start
                otel_context.detach(token)
                if record is not None:
                    record(seconds)
                self._close(stage, span, traced, seconds)
                raise
            otel_context.detach(token)
            if type(ret) is GeneratorType:
                return _drained(ret, start, record, ctx, functools.partial(self._close, stage, span, traced))
            seconds = clock() - start
            if record is not None:
                record(seconds)
            self._close(stage, span, traced, seconds)
            return ret

        return timed

    def _wrap_async(self, method: Callable[..., Any], stage: str) -> Callable[..., Any]:
        record = self._recorder(stage)
        tracing = self.tracer is not None
        live = self._live
        clock = time.perf_counter

        @functools.wraps(method)
        async def timed(arg: Any, *rest: Any) -> Any:
            span, ctx, traced = self._open(stage, arg) if tracing and live else (None, None, None)
            token = otel_context.attach(ctx) if ctx is not None else None
            start = clock()
            try:
                ret = await method(arg, *rest)
            except BaseException:
                seconds = clock() - start
                if token is not None:
                    otel_context.detach(token)
                if record is not None:
                    record(seconds)
                if ctx is not None:
                    self._close(stage, span, traced, seconds)
                raise
            if token is not None:
                otel_context.detach(token)
            if type(ret) is GeneratorType:
                # The adapter drains it in a worker thread.
                close = functools.partial(self._close, stage, span, traced) if ctx is not None else None
                return _drained(ret, start, record, ctx, close)
            seconds = clock() - start
            if record is not None:
                record(seconds)
            if ctx is not None:
                self._close(stage, span, traced, seconds)
            return ret

        return timed

    def _wrap_async_gen(self, method: Callable[..., Any], stage: str) -> Callable[..., Any]:
        record = self._recorder(stage)
        tracing = self.tracer is not None
        live = self._live
        clock = time.perf_counter

        @functools.wraps(method)
        async def timed(arg: Any, *rest: Any) -> Any:
            span, ctx, traced = self._open(stage, arg) if tracing and live else (None, None, None)
            start = clock()
            items = method(arg, *rest)
            try:
                while True:
                    token = otel_context.attach(ctx) if ctx is not None else None
                    try:
                        item = await items.__anext__()
                    except StopAsyncIteration:
                        return
                    finally:
                        if token is not None:
                            otel_context.detach(token)
                    yield item
            finally:
                await items.aclose()
                seconds = clock() - start
                if record is not None:
                    record(seconds)
                if ctx is not None:
                    self._close(stage, span, traced, seconds)

        return timed


__all__ = ["Observability"]
