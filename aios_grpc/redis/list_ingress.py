"""``ListIngress``: the original executor's list queues, made reliable.

The original pops jobs with ``BRPOP``: a packet popped by an instance that then
dies is gone. Here each instance moves an item atomically into its own processing
list (``BLMOVE <queue> <queue>:processing:<instance> RIGHT LEFT``) and removes it
from there only once the packet's terminal result has been routed. An instance
keeps a heartbeat key (``<queue>:alive:<instance>``) fresh; the processing list of
an instance whose heartbeat expired is moved back onto the queue by whichever
instance notices first. Items are protobuf ``Packet`` bytes, as the original
pushes them. A packet answered with a retryable error goes back onto the queue;
one answered with another error goes to the dead-letter list with its error.

Deliveries are counted per item in the hash ``<queue>:deliveries`` (field: a hash of
the item's bytes), counted when an instance takes the item, so a packet that keeps
failing with a retryable error, or keeps killing the instance that runs it, goes to
the dead-letter list once it was taken more than ``max_deliveries`` times. The field
is removed when the item is finished. Identical items share a count.

The processing lists, heartbeats, recovery and counting are ``ListClaims``
(``aios_grpc/redis/claims.py``), shared with the ``PARAMETER_UPDATES`` list: a
dead instance's processing list returns in one step and in its original order, and a
queue name with glob characters matches only its own processing lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable

import redis.asyncio as aioredis

from aios_grpc.errors import PacketError, status_of
from aios_grpc.job import Job, Kind, Result
from aios_grpc.redis._ingress import decode_packet, keep_reading
from aios_grpc.redis.claims import ListClaims
from aios_grpc.redis.retry import TRANSIENT, Retry
from aios_grpc.runtime.scheduler import Scheduler
from aios_grpc.runtime.window import Window

log = logging.getLogger("aios_grpc.redis")


class ListIngress:
    """Feeds a Redis list's items to the scheduler, one processing list per instance."""

    def __init__(
        self,
        client: aioredis.Redis,
        scheduler: Scheduler,
        *,
        queue: str,
        consumer: str,
        dead_letter: str = "",
        block_s: float = 1.0,
        heartbeat_s: float = 10.0,
        max_in_flight: int = 1000,
        max_deliveries: int = 5,
    ) -> None:
        self.client = client
        self.scheduler = scheduler
        self.queue = queue
        self.consumer = consumer
        self.claims = ListClaims(client, queue, consumer, heartbeat_s=heartbeat_s)
        self.processing = self.claims.processing
        self.alive = self.claims.alive
        self.dead_letter = dead_letter or f"{queue}:dead"
        self.deliveries = self.claims.deliveries
        self.max_deliveries = max_deliveries
        self.block_s = block_s
        self.heartbeat_s = heartbeat_s
        self.window = Window(max_in_flight)
        self.in_flight = 0
        self.done = 0
        self.recovered = 0
        self._finish: asyncio.Queue[tuple[bytes, Result]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._started = False

    async def start(self) -> None:
        """Start reading (after recovering this instance's own leftovers), finishing, watching.

        Returns at once: while Redis is unreachable the reader retries in the background.
        """
        self._reader = asyncio.create_task(self._read(), name=f"aios-list-{self.queue}")
        self._tasks = [
            asyncio.create_task(self._finisher(), name="aios-list-finish"),
            asyncio.create_task(self._watch(), name="aios-list-watch"),
        ]

    async def stop(self, timeout_s: float) -> None:
        """Stop reading, wait up to ``timeout_s`` for packets in flight, then stop."""
        # A BLMOVE in progress returns (its item is processed) rather than being cancelled
        # with the item already in our processing list.
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s + self.block_s
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), max(0.0, deadline - loop.time()))
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Unfinished items stay in the processing list; our heartbeat expires and they return.

    async def _read(self) -> None:
        await keep_reading(self._read_forever, self.queue, lambda: self._stopping)

    async def _read_forever(self) -> None:
        recovering = Retry(f"recovering {self.processing}")
        while not self._started:
            async with recovering:
                await self.claims.beat()
                # Only at start: later, the processing list holds packets in flight here.
                self.recovered += await self.claims.requeue(self.processing)
                self._started = True
        taking = Retry(f"BLMOVE {self.queue}")
        while not self._stopping:
            await self.window.acquire()
            if self._stopping:
                self.window.release()
                return
            try:
                raw = await self.claims.take(self.block_s)
            except TRANSIENT as exc:
                self.window.release()
                await taking.fail(exc)
                continue
            taking.succeeded()
            if raw is None:
                self.window.release()
                continue
            self.in_flight += 1
            self._idle.clear()
            # Already in our processing list: it is ours to finish, counted or not.
            delivered = await self.claims.count_delivery(raw)
            if delivered > self.max_deliveries:
                error = PacketError(
                    f"delivered {delivered} times (AIOS_REDIS_MAX_DELIVERIES={self.max_deliveries})",
                    stage="queue",
                    retryable=False,
                )
                self._finish.put_nowait((raw, Result(Kind.ERROR, error=error)))
                continue
            try:
                packet = decode_packet(raw)
            except PacketError as exc:
                self._finish.put_nowait((raw, Result(Kind.ERROR, error=exc)))
                continue
            await self.scheduler.submit(Job(packet, self._replier(raw), source="redis-list"))

    def _replier(self, raw: bytes) -> Callable[[Result], None]:
        return lambda result: self._answered(raw, result)

    def _answered(self, raw: bytes, result: Result) -> None:
        if result.terminal:
            self._finish.put_nowait((raw, result))

    async def _finisher(self) -> None:
        finishing = Retry(f"finishing an item of {self.queue}")
        while True:
            raw, result = await self._finish.get()
            try:
                await finishing.call(functools.partial(self._complete, raw, result))
            except Exception as exc:
                # The item stays in the processing list; it returns to the queue when
                # this instance is gone.
                log.error("finishing an item of %s failed: %s", self.queue, exc)
            self.in_flight -= 1
            self.done += 1
            self.window.release()
            if self.in_flight <= 0:
                self._idle.set()

    async def _complete(self, raw: bytes, result: Result) -> None:
        pipe = self.client.pipeline(transaction=True)
        retryable = result.error is not None and status_of(result.error)[1]
        # A retryable failure goes back onto the queue and keeps its delivery count.
        self.claims.finish(pipe, raw, forget=not retryable)
        if result.error is not None:
            code, _ = status_of(result.error)
            if retryable:
                pipe.lpush(self.queue, raw)
            else:
                message = getattr(result.error, "message", str(result.error))
                pipe.lpush(
                    self.dead_letter,
                    json.dumps(
                        {
                            "packet_hex": raw.hex(),
                            "code": code.name,
                            "error": message,
                            "queue": self.queue,
                        }
                    ),
                )
        await pipe.execute()

    async def _watch(self) -> None:
        beating = Retry(f"heartbeat on {self.queue}")
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                async with beating:
                    await self.claims.beat()
                    self.recovered += await self.claims.recover_dead()
            except Exception as exc:
                log.error("watching %s failed: %s: %s", self.queue, type(exc).__name__, exc)


__all__ = ["ListIngress"]
