"""The ``Telemetry`` seam: what the runtime reports about packets as they move.

The default does nothing and costs a method call; the OpenTelemetry
implementation (metrics and traces) plugs in here. The scheduler calls these hooks
on the event loop's thread.
"""

from __future__ import annotations

from aios_grpc.scheduler.job import Job, Result


class Telemetry:
    """No-op telemetry; subclass and override what you record."""

    def packet_received(self, job: Job) -> None:
        """A packet entered the scheduler."""

    def stage_done(self, job: Job, stage: str, seconds: float) -> None:
        """A stage ("queue", "preprocess", "data", "batch", "route") of a packet ended."""

    def packet_answered(self, job: Job, result: Result) -> None:
        """A packet got its terminal result."""

    def queue_depth(self, depth: int, in_flight: int) -> None:
        """The scheduler's queue depth and packets in flight changed."""

    def batch_formed(self, size: int) -> None:
        """A batch of ``size`` entries was handed to ``on_batch``."""


__all__ = ["Telemetry"]
