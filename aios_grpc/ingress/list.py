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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from aios_grpc.errors import PacketError, status_of
from aios_grpc.ingress._base import TRANSIENT, decode_packet, keep_reading, pause
from aios_grpc.scheduler.core import Scheduler
from aios_grpc.scheduler.job import Job, Kind, Result

log = logging.getLogger("aios_grpc.ingress")


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
        self.processing = f"{queue}:processing:{consumer}"
        self.alive = f"{queue}:alive:{consumer}"
        self.dead_letter = dead_letter or f"{queue}:dead"
        self.deliveries = f"{queue}:deliveries"
        self.max_deliveries = max_deliveries
        self.block_s = block_s
        self.heartbeat_s = heartbeat_s
        self.window = asyncio.Semaphore(max_in_flight)
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

    async def _beat(self) -> None:
        await self.client.set(self.alive, b"1", px=int(self.heartbeat_s * 3000))

    async def _requeue(self, processing: str) -> int:
        moved = 0
        # Bounded: a list cannot grow while nobody moves items into it.
        for _ in range(1_000_000):
            item = await self.client.lmove(processing, self.queue, "RIGHT", "RIGHT")
            if item is None:
                break
            moved += 1
        if moved:
            log.info("moved %d unfinished items of %s back onto %s", moved, processing, self.queue)
        return moved

    async def _read(self) -> None:
        await keep_reading(self._read_forever, self.queue, lambda: self._stopping)

    async def _read_forever(self) -> None:
        failures = 0
        while not self._started:
            try:
                await self._beat()
                # Only at start: later, the processing list holds packets in flight here.
                self.recovered += await self._requeue(self.processing)
                self._started = True
            except TRANSIENT as exc:
                failures += 1
                await pause(failures, f"recovering {self.processing}", exc)
        failures = 0
        while not self._stopping:
            await self.window.acquire()
            if self._stopping:
                self.window.release()
                return
            try:
                item = await self.client.blmove(
                    self.queue,
                    self.processing,
                    self.block_s,  # type: ignore[arg-type]  # redis-py's stub says int; Redis takes seconds as a float
                    "RIGHT",
                    "LEFT",
                )
                failures = 0
            except TRANSIENT as exc:
                self.window.release()
                failures += 1
                await pause(failures, f"BLMOVE {self.queue}", exc)
                continue
            if item is None:
                self.window.release()
                continue
            self.in_flight += 1
            self._idle.clear()
            raw = bytes(item) if not isinstance(item, str) else item.encode()
            delivered = await self._count_delivery(raw)
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

    async def _count_delivery(self, raw: bytes) -> int:
        """This delivery's number for ``raw`` (1 when Redis cannot say: the item is processed)."""
        for failures in range(1, 6):
            try:
                return int(await self.client.hincrby(self.deliveries, _item_key(raw), 1))
            except TRANSIENT as exc:
                # Already in our processing list: it is ours to finish, counted or not.
                await pause(failures, f"counting a delivery on {self.deliveries}", exc)
            except Exception as exc:
                log.error("counting a delivery on %s failed: %s: %s", self.deliveries, type(exc).__name__, exc)
                break
        return 1

    def _replier(self, raw: bytes) -> Callable[[Result], None]:
        return lambda result: self._answered(raw, result)

    def _answered(self, raw: bytes, result: Result) -> None:
        if result.terminal:
            self._finish.put_nowait((raw, result))

    async def _finisher(self) -> None:
        failures = 0
        while True:
            raw, result = await self._finish.get()
            while True:
                try:
                    await self._complete(raw, result)
                    failures = 0
                    break
                except TRANSIENT as exc:
                    failures += 1
                    await pause(failures, f"finishing an item of {self.queue}", exc)
                except Exception as exc:
                    # The item stays in the processing list; it returns to the queue when
                    # this instance is gone.
                    log.error("finishing an item of %s failed: %s", self.queue, exc)
                    break
            self.in_flight -= 1
            self.done += 1
            self.window.release()
            if self.in_flight <= 0:
                self._idle.set()

    async def _complete(self, raw: bytes, result: Result) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.lrem(self.processing, -1, raw)  # type: ignore[arg-type]
        retryable = result.error is not None and status_of(result.error)[1]
        if not retryable:
            pipe.hdel(self.deliveries, _item_key(raw))
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
        failures = 0
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._beat()
                await self._recover_dead()
                failures = 0
            except TRANSIENT as exc:
                failures += 1
                await pause(failures, f"heartbeat on {self.queue}", exc)
            except Exception as exc:
                log.error("watching %s failed: %s: %s", self.queue, type(exc).__name__, exc)

    async def _recover_dead(self) -> None:
        prefix = f"{self.queue}:processing:"
        names: list[Any] = [n async for n in self.client.scan_iter(match=prefix + "*", count=200)]
        for name in names:
            consumer = name.decode()[len(prefix) :]
            if consumer == self.consumer:
                continue
            if not await self.client.exists(f"{self.queue}:alive:{consumer}"):
                self.recovered += await self._requeue(name.decode())


def _item_key(raw: bytes) -> str:
    """The field of an item in the delivery-count hash (items can be large; this is short)."""
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


__all__ = ["ListIngress"]
