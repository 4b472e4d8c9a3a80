"""The ``Router`` seam: where a packet's outputs go after the block produced them.

The default sends every output back on the caller's stream (an empty
``output_ptr``). The graph router (``output_ptr`` targets: other blocks over gRPC,
Redis queues) replaces it by configuration.
"""

from __future__ import annotations

from aios_grpc.job import Job
from aios_grpc.packet import AIOSPacket


class Router:
    """Returns outputs to the caller; subclasses forward them elsewhere."""

    def wants(self, job: Job) -> bool:
        """Whether ``route`` must be awaited for this job (False: fast path, to the caller)."""
        return False

    def check(self, job: Job) -> None:
        """Refuse ``job`` before the block runs it (a bad or refused ``output_ptr``) by raising a
        ``PacketError``. Called from a worker thread, only for a packet with a non-empty pointer."""

    async def route(self, job: Job, outputs: list[AIOSPacket]) -> list[AIOSPacket]:
        """Deliver ``outputs`` to their targets; return those that go back to the caller.

        Raise a ``PacketError`` (UNAVAILABLE, PERMISSION_DENIED, ...) to fail the job.
        """
        return outputs

    async def close(self) -> None:
        """Release connections."""


__all__ = ["Router"]
