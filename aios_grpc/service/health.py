"""Instance health: the standard ``grpc.health.v1.Health`` service, kept truthful.

Status is NOT_SERVING until the block's ``__init__`` finished, then follows the
block's ``health()`` (called every ``health_interval_s`` in a worker thread, with a
timeout; an exception, a timeout or anything but ``{"status": "healthy"}`` is
unhealthy and the reason is logged once per change), and goes NOT_SERVING for good
when the instance drains. Both ``""`` and ``aios.block.v1.BlockService`` report it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from aios_grpc._pb import SERVICE_NAME
from aios_grpc.block import BlockAdapter
from aios_grpc.scheduler import Scheduler

log = logging.getLogger("aios_grpc.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", SERVICE_NAME)


def healthy(report: Any) -> tuple[bool, str]:
    """Whether a ``health()`` return value means healthy, and the reason when not."""
    if report is None or report is True:
        return True, ""
    if isinstance(report, dict):
        status = report.get("status")
        if status == "healthy":
            return True, ""
        return False, f"health() reported status {status!r}: {report}"
    if isinstance(report, str) and report.lower() == "healthy":
        return True, ""
    return False, f"health() returned {report!r}"


class HealthMonitor:
    """Owns the health servicer and decides what it reports."""

    def __init__(self, interval_s: float, timeout_s: float) -> None:
        self.servicer = HealthServicer()
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.block: BlockAdapter | None = None
        self.scheduler: Scheduler | None = None
        self.draining = False
        self.serving = False
        self.reason = "starting: block __init__ has not finished"
        self.last_report: Any = None
        self._task: asyncio.Task[None] | None = None

    async def set_all(self, serving: bool, reason: str = "") -> None:
        """Report ``serving`` for every service name; log changes."""
        if serving != self.serving or reason != self.reason:
            if serving:
                log.info("health: SERVING")
            else:
                log.warning("health: NOT_SERVING (%s)", reason)
        self.serving = serving
        self.reason = reason
        status = SERVING if serving else NOT_SERVING
        for name in SERVICES:
            await self.servicer.set(name, status)

    async def start(self) -> None:
        """Report NOT_SERVING while the block starts."""
        await self.set_all(False, self.reason)

    async def block_ready(self, block: BlockAdapter, scheduler: Scheduler) -> None:
        """The block finished ``__init__``: check it once, then keep checking."""
        self.block = block
        self.scheduler = scheduler
        await self.check()
        self._task = asyncio.create_task(self._loop())

    async def check(self) -> bool:
        """Call ``health()`` once and update the status; returns whether healthy."""
        if self.draining:
            return False
        ok, reason = await self._probe()
        if not self.draining:
            await self.set_all(ok, reason)
        return ok

    async def _probe(self) -> tuple[bool, str]:
        block, scheduler = self.block, self.scheduler
        if block is None or scheduler is None:
            return False, self.reason
        if not block.has("health"):
            return True, ""
        method = block.methods["health"]
        try:
            if block.is_async["health"]:
                report = await asyncio.wait_for(method(), self.timeout_s)
            else:
                report = await asyncio.wait_for(scheduler.to_thread(method), self.timeout_s)
        except TimeoutError:
            return False, f"health() took longer than {self.timeout_s}s"
        except Exception as exc:
            return False, f"health() raised {type(exc).__name__}: {exc}"
        self.last_report = report
        return healthy(report)

    async def _loop(self) -> None:
        while not self.draining:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:
                log.exception("health check failed")

    async def drain(self) -> None:
        """NOT_SERVING from now on."""
        self.draining = True
        await self.set_all(False, "draining")
        if self._task is not None:
            self._task.cancel()
