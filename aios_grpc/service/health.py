"""Instance health: the standard ``grpc.health.v1.Health`` service, kept truthful.

Status is NOT_SERVING until the block's ``__init__`` finished, then follows the
block's ``health()`` (called every ``health_interval_s`` in a thread of its own, with
a timeout; see ``healthy`` for what counts as unhealthy, and the reason is logged once
per change) and the scheduler watchdog
(packets in flight but none answered for ``stall_s`` seconds is unhealthy), and goes
NOT_SERVING for good when the instance drains. Both ``""`` and
``aios.block.v1.BlockService`` report it (the readiness probe); probes read the stored
status, so a probe never calls ``health()``.

``aios.liveness`` (``LIVENESS_SERVICE``, the liveness probe) fails only when the process
is wedged: it is SERVING from start-up on, through an unhealthy ``health()`` and through
the drain, and NOT_SERVING only while the scheduler watchdog finds packets in flight and
none answered for ``stall_s``. An event loop that does not turn cannot answer the probe
at all, which the kubelet counts as a failure too. A slow or unhealthy ``health()`` so
takes the pod out of the Service without restarting it.

``health()`` gets its own thread rather than the block's worker pool: a pool busy
with slow ``on_data`` calls must not make a healthy block look dead. A ``health()``
call that never returns keeps that thread; later checks see it still running and
report unhealthy instead of starting another.

Open ``Watch`` streams (client-side load balancers keep one per server) are ended by
``end_watches()`` once the drain is over: each gets the NOT_SERVING update, then its
stream ends with OK, so a watcher does not hold the server's shutdown until the grace
period ends. A ``Watch`` opened after that gets the current status and ends at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from aios_grpc._pb import SERVICE_NAME
from aios_grpc._text import quote
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.adapter import BlockAdapter

log = logging.getLogger("aios_grpc.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", SERVICE_NAME)
LIVENESS_SERVICE = "aios.liveness"


FAILURE_WORDS = frozenset({"unhealthy", "error", "failed", "down", "not_serving"})
"""``status`` values (any case) of a ``health()`` dict that mean unhealthy."""


def healthy(report: Any) -> tuple[bool, str]:
    """Whether a ``health()`` return value means healthy, and the reason when not.

    Unhealthy is explicit (the seed lets ``health()`` return any JSON value): ``False``;
    a dict whose ``status`` is one of ``FAILURE_WORDS`` in any case, or whose
    ``healthy`` is false; a string that is one of those words. Anything else
    (``{"status": "ok"}``, ``"OK"``, ``None``, a number) is healthy. A ``health()``
    that raises or times out is unhealthy too (``HealthMonitor``).

    >>> healthy({"status": "OK", "gpu_temp": 71})
    (True, '')
    >>> healthy({"status": "Down"})[0], healthy({"healthy": False})[0], healthy(False)[0]
    (False, False, False)
    """
    if report is False:
        return False, "health() returned False"
    if isinstance(report, dict):
        status = report.get("status")
        if isinstance(status, str) and status.lower() in FAILURE_WORDS:
            return False, f"health() reported status {cut(status)!r}: {cut(str(report), 200)}"
        if "healthy" in report and not report["healthy"]:
            return False, f"health() reported healthy={cut(str(report['healthy']))}: {cut(str(report), 200)}"
        return True, ""
    if isinstance(report, str) and report.lower() in FAILURE_WORDS:
        return False, f"health() returned {cut(report)!r}"
    return True, ""


def cut(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (a block's report goes into logs and heartbeats)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_value(report: Any) -> Any:
    """``report`` as a JSON value: itself when it encodes, else its ``repr`` (cut)."""
    try:
        json.dumps(report)
    except (TypeError, ValueError):
        return cut(repr(report), 200)
    return report


class HealthService:
    """``grpc.health.v1.Health`` (Check, List, Watch) over one stored status per service name.

    grpcio's own asyncio servicer cannot end a ``Watch``: its streams stay open until the
    client leaves or the server's grace period cancels them.
    """

    def __init__(self) -> None:
        self._status: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {}
        self._changed: asyncio.Event | None = None  # replaced on every change; made on the loop
        self._ended = False

    def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        """Store ``status`` for ``service`` and wake the watchers."""
        self._status[service] = status
        self._wake()

    def end_watches(self) -> None:
        """End every open ``Watch`` once it sent the current status (and every later one at once)."""
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        """The stored status; NOT_FOUND for a service name never set."""
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {quote(request.service)}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        """Every service name with its status."""
        response = health_pb2.HealthListResponse()
        for name, status in self._status.items():
            response.statuses[name].status = status
        return response

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Send the status now and on every change (SERVICE_UNKNOWN for a name never set)."""
        last: int | None = None
        while True:
            # Taken before the status is read: a change during the write below sets it.
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            status = self._status.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self._ended:
                return
            await changed.wait()


class HealthMonitor:
    """Owns the health servicer and decides what it reports."""

    def __init__(self, interval_s: float, timeout_s: float, *, stall_s: float = 0.0) -> None:
        self.servicer = HealthService()
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stall_s = stall_s
        self._executor: ThreadPoolExecutor | None = None
        self._running: Future[Any] | None = None
        self._running_since = 0.0
        self._progress = (0, 0.0)  # (scheduler.completed, when it last changed)
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
            self.servicer.set(name, status)

    def set_live(self, live: bool) -> None:
        """Report ``live`` for ``LIVENESS_SERVICE``."""
        self.servicer.set(LIVENESS_SERVICE, SERVING if live else NOT_SERVING)

    async def start(self) -> None:
        """Report NOT_SERVING while the block starts (and live: the process is not wedged)."""
        self.set_live(True)
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
        # The watchdog is read before health() runs: a health() that hangs must not hide a stall.
        progressing, stall = self._progressing()
        self.set_live(progressing)
        ok, reason = await self._probe()
        if ok and not progressing:
            ok, reason = progressing, stall
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
                report = await asyncio.wait_for(self._in_thread(method), self.timeout_s)
        except _StillRunning as exc:
            return False, str(exc)
        except TimeoutError:
            return False, f"health() took longer than {self.timeout_s}s"
        except Exception as exc:
            return False, f"health() raised {type(exc).__name__}: {exc}"
        self.last_report = json_value(report)
        return healthy(report)

    async def _in_thread(self, method: Any) -> Any:
        if self._running is not None and not self._running.done():
            age = time.monotonic() - self._running_since
            raise _StillRunning(f"health() has not returned for {age:.1f}s")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="aios-health")
        self._running_since = time.monotonic()
        self._running = self._executor.submit(method)
        return await asyncio.wrap_future(self._running)

    def _progressing(self) -> tuple[bool, str]:
        """The watchdog: unhealthy when packets are in flight and none was answered for ``stall_s``."""
        scheduler = self.scheduler
        if scheduler is None or self.stall_s <= 0:
            return True, ""
        now = time.monotonic()
        completed = scheduler.completed
        if completed != self._progress[0] or scheduler.in_flight <= 0:
            self._progress = (completed, now)
            return True, ""
        stalled = now - self._progress[1]
        if stalled >= self.stall_s:
            return False, (
                f"scheduler stalled: {scheduler.in_flight} packets in flight "
                f"({scheduler.queue_depth} queued), none answered for {stalled:.1f}s "
                f"(AIOS_HEALTH_STALL_S={self.stall_s:g})"
            )
        return True, ""

    def status(self) -> dict[str, Any]:
        """What heartbeats publish: serving, the reason when not, the last ``health()`` report."""
        return {"serving": self.serving, "reason": self.reason, "report": self.last_report}

    async def health_action(self, data: dict[str, Any]) -> dict[str, Any]:
        """The management action ``aios.health``: ``{"serving", "data"}`` (the last
        ``health()`` value; None before the first check or when it raised at once),
        plus ``reason`` when not serving."""
        answer: dict[str, Any] = {"serving": self.serving, "data": self.last_report}
        if not self.serving:
            answer["reason"] = self.reason
        return answer

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
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def end_watches(self) -> None:
        """End the open ``Watch`` streams (after ``drain``: their last update is NOT_SERVING)."""
        self.servicer.end_watches()


class _StillRunning(Exception):
    """The previous ``health()`` call has not returned yet."""
