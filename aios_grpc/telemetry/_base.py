"""The ``Telemetry`` seam: what the runtime reports about packets as they move.

The default does nothing and costs a method call. ``aios_grpc.telemetry.Observability``
(metrics and traces on OpenTelemetry) is the implementation the server uses unless
told otherwise. The seam is small:

- bulk packet hooks, called on the event loop's thread with every packet of a
  request or a chunk at once: ``packets_received``, ``stages_done``,
  ``packets_answered`` (plus ``batch_formed``, ``loop_lag``, ``muxer_groups``);
- ``wrap(stage, fn)``: the adapter asks for each block method it will call, in
  worker threads, and calls what it gets back;
- ``bind(gauges, metrics)``: the server hands over its live values as callables;
- ``start``/``stop``, and ``snapshot`` for heartbeats.

``packet_received``, ``stage_done`` and ``packet_answered`` are what a call site with
one packet uses; each is the bulk hook with one packet, so an implementation overrides
only the bulk hooks. (A subclass written against the per-packet hooks still works: a
class that defines one of them and not its bulk hook gets a bulk hook that calls it
per packet, made once when the class is defined.)

>>> class Counting(Telemetry):
...     def __init__(self) -> None:
...         self.answered = 0
...     def packets_answered(self, jobs, results) -> None:
...         self.answered += len(jobs)
>>> # BlockServer(MyBlock, telemetry=Counting())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from aios_grpc.job import Job, Result
    from aios_grpc.metrics import AIOSMetrics

#: The gauges ``BlockServer`` passes to ``bind`` (each a callable returning the value now).
GAUGES = ("queue_depth", "in_flight", "open_streams", "serving", "sidecar_push_failures")

# (per-packet hook, its bulk hook): the per-packet one is the bulk one with one packet.
_PAIRS = (
    ("packet_received", "packets_received"),
    ("stage_done", "stages_done"),
    ("packet_answered", "packets_answered"),
)


class Telemetry:
    """No-op telemetry; subclass and override the bulk hooks you record."""

    # The bulk hook each per-packet call goes to, resolved once per class (see
    # __init_subclass__): normally the class's own bulk hook; for a class that
    # overrides a per-packet hook, the bulk hook it inherits (so that the override
    # may call super() without coming back to itself).
    _received_bulk: Callable[[Any, Sequence[Job]], None]
    _stages_bulk: Callable[[Any, Sequence[Job], str, Sequence[float]], None]
    _answered_bulk: Callable[[Any, Sequence[Job], Sequence[Result]], None]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for single, bulk in _PAIRS:
            if single in cls.__dict__ and bulk not in cls.__dict__:
                setattr(cls, bulk, _per_packet(single, bulk))
        _resolve(cls)

    # -- the bulk hooks: what an implementation overrides -----------------------------

    def packets_received(self, jobs: Sequence[Job]) -> None:
        """Packets of one request (one source) entered the scheduler together."""

    def stages_done(self, jobs: Sequence[Job], stage: str, seconds: Sequence[float]) -> None:
        """``stage`` ("queue", "preprocess", "data", "batch", "route") ended for each of ``jobs``.

        ``seconds[i]`` is what it took for ``jobs[i]``; the two have the same length.
        """
        if len(seconds) != len(jobs):
            raise ValueError(f"stages_done: {len(jobs)} jobs but {len(seconds)} durations")

    def packets_answered(self, jobs: Sequence[Job], results: Sequence[Result]) -> None:
        """Each of ``jobs`` got the terminal result at its place in ``results``."""

    def batch_formed(self, size: int, jobs: Any = None) -> None:
        """A batch of ``size`` entries was handed to ``on_batch`` (``jobs``: the jobs it carries)."""

    def loop_lag(self, seconds: float) -> None:
        """The event loop was late by ``seconds`` (measured by the scheduler's watchdog)."""

    def muxer_groups(self, open_groups: int) -> None:
        """The number of incomplete muxer groups changed."""

    # -- one packet: the bulk hook with one packet (not to be overridden) --------------

    def packet_received(self, job: Job) -> None:
        """A packet entered the scheduler: ``packets_received`` with one packet."""
        self._received_bulk(self, (job,))

    def stage_done(self, job: Job, stage: str, seconds: float) -> None:
        """A stage of a packet ended: ``stages_done`` with one packet."""
        self._stages_bulk(self, (job,), stage, (seconds,))

    def packet_answered(self, job: Job, result: Result) -> None:
        """A packet got its terminal result: ``packets_answered`` with one packet."""
        self._answered_bulk(self, (job,), (result,))

    # -- block methods, gauges, lifecycle ----------------------------------------------

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """What to call instead of the block method ``fn`` of ``stage`` ("preprocess", "data", "batch").

        The adapter asks once per method when it is built, and calls what this returns
        (in worker threads, or awaited for an ``async def``); it must be the same kind
        of callable as ``fn`` (plain, ``async def``, async generator function). The
        default returns ``fn``.
        """
        return fn

    def control_done(self, rpc: str, code: str, seconds: float) -> None:
        """A control-plane call (SetParameters, Management, GetInfo) ended with ``code`` (a gRPC code name)."""

    def bind(self, gauges: Mapping[str, Callable[[], float]], metrics: AIOSMetrics | None = None) -> None:
        """The server was built: ``gauges`` read its live values, ``metrics`` is the block's ``AIOSMetrics``.

        ``gauges`` has the names in ``GAUGES``; each callable returns the value now
        (0 until the part it reads has started).
        """

    def snapshot(self) -> dict[str, Any]:
        """Counters for heartbeats: ``received``, ``answered``, ``failed``, ``last_answered_at``."""
        return {}

    async def start(self) -> None:
        """Start exporters (the Prometheus endpoint, OTLP); called by the server at start-up."""

    async def stop(self) -> None:
        """Flush and stop exporters; called once when the server stopped."""


def _per_packet(single: str, bulk: str) -> Callable[..., None]:
    """A bulk hook that calls the per-packet hook ``single`` for each packet (for a class written against it)."""
    if bulk == "stages_done":

        def stages_done(self: Any, jobs: Sequence[Job], stage: str, seconds: Sequence[float]) -> None:
            if len(seconds) != len(jobs):
                raise ValueError(f"stages_done: {len(jobs)} jobs but {len(seconds)} durations")
            hook = getattr(self, single)
            for job, took in zip(jobs, seconds, strict=True):
                hook(job, stage, took)

        made: Callable[..., None] = stages_done
    elif bulk == "packets_answered":

        def packets_answered(self: Any, jobs: Sequence[Job], results: Sequence[Result]) -> None:
            hook = getattr(self, single)
            for job, result in zip(jobs, results, strict=True):
                hook(job, result)

        made = packets_answered
    else:

        def packets_received(self: Any, jobs: Sequence[Job]) -> None:
            hook = getattr(self, single)
            for job in jobs:
                hook(job)

        made = packets_received
    made.__qualname__ = f"Telemetry.{bulk}"
    made.__doc__ = f"``{single}`` for each packet."
    made._per_packet = True  # type: ignore[attr-defined]
    return made


def _resolve(cls: type[Telemetry]) -> None:
    """Point each per-packet hook of ``cls`` at the first bulk hook in its MRO not made by ``_per_packet``."""
    for attr, bulk in (
        ("_received_bulk", "packets_received"),
        ("_stages_bulk", "stages_done"),
        ("_answered_bulk", "packets_answered"),
    ):
        for klass in cls.__mro__:
            fn = klass.__dict__.get(bulk)
            if fn is not None and not getattr(fn, "_per_packet", False):
                setattr(cls, attr, staticmethod(fn))
                break


_resolve(Telemetry)

__all__ = ["GAUGES", "Telemetry"]
