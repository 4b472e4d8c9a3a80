"""The ``Telemetry`` seam: what the runtime reports about packets as they move.

The default does nothing and costs a method call. ``aios_grpc.telemetry.Observability``
(metrics and traces on OpenTelemetry) is the implementation the server uses unless
told otherwise. The scheduler calls the packet hooks on the event loop's thread;
``instrument`` wraps the block's methods, which run in worker threads.

>>> class Counting(Telemetry):
...     def __init__(self) -> None:
...         self.answered = 0
...     def packet_answered(self, job, result) -> None:
...         self.answered += 1
>>> # BlockServer(MyBlock, telemetry=Counting())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aios_grpc.job import Job, Result
    from aios_grpc.runtime.adapter import BlockAdapter


class Telemetry:
    """No-op telemetry; subclass and override what you record."""

    def packet_received(self, job: Job) -> None:
        """A packet entered the scheduler."""

    def packets_received(self, jobs: Sequence[Job]) -> None:
        """Several packets of one request (one source) entered the scheduler together.

        The default calls ``packet_received`` for each, so a subclass may override either.
        """
        for job in jobs:
            self.packet_received(job)

    def stage_done(self, job: Job, stage: str, seconds: float) -> None:
        """A stage ("queue", "preprocess", "data", "batch", "route") of a packet ended."""

    def stages_done(self, jobs: Sequence[Job], stage: str, seconds: Sequence[float]) -> None:
        """``stage`` ended for each of ``jobs``; ``seconds[i]`` is what it took for ``jobs[i]``.

        One call for a whole chunk instead of one ``stage_done`` per job; the default
        calls ``stage_done`` for each, so a subclass may override either.
        """
        for job, took in zip(jobs, seconds, strict=True):
            self.stage_done(job, stage, took)

    def packet_answered(self, job: Job, result: Result) -> None:
        """A packet got its terminal result."""

    def packets_answered(self, jobs: Sequence[Job], results: Sequence[Result]) -> None:
        """Each of ``jobs`` got the terminal result at its place in ``results`` (a batch's answers).

        The default calls ``packet_answered`` for each, so a subclass may override either.
        """
        for job, result in zip(jobs, results, strict=True):
            self.packet_answered(job, result)

    def queue_depth(self, depth: int, in_flight: int) -> None:
        """The scheduler's queue depth and packets in flight changed."""

    def batch_formed(self, size: int, jobs: Any = None) -> None:
        """A batch of ``size`` entries was handed to ``on_batch`` (``jobs``: the jobs it carries)."""

    def loop_lag(self, seconds: float) -> None:
        """The event loop was late by ``seconds`` (measured by the scheduler's watchdog)."""

    def muxer_groups(self, open_groups: int) -> None:
        """The number of incomplete muxer groups changed."""

    def instrument(self, block: BlockAdapter) -> None:
        """The block was loaded; wrap its methods to time them (called once, before serving)."""

    def bind(self, server: Any) -> None:
        """The server was built (its ``scheduler`` comes later); read gauges from it."""

    def snapshot(self) -> dict[str, Any]:
        """Counters for heartbeats: ``received``, ``answered``, ``failed``, ``last_answered_at``."""
        return {}

    async def start(self) -> None:
        """Start exporters (the Prometheus endpoint, OTLP); called by the server at start-up."""

    async def stop(self) -> None:
        """Flush and stop exporters; called once when the server stopped."""


__all__ = ["Telemetry"]
