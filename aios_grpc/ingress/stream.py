"""``StreamIngress``: packets from a Redis Stream through a consumer group.

Delivery is at least once:

- ``XREADGROUP`` (group = block id, consumer = instance id) reads entries; each
  entry's ``packet`` field holds the packet as protobuf bytes.
- An entry is ``XACK``-ed only once its packet's terminal result has been routed
  (the router waited for every downstream target), so a crash before that leaves
  it pending.
- Entries pending on any consumer for ``claim_idle_s`` (a dead instance's) are
  taken over with ``XAUTOCLAIM`` and processed again.
- An entry delivered more than ``max_deliveries`` times, one that is not a packet,
  and one answered with a non-retryable error go to the dead-letter stream (with
  the error) and are acknowledged. A retryable error leaves the entry pending.

>>> # ingress = StreamIngress(redis.asyncio.Redis(...), scheduler, stream="jobs",
>>> #                         group="block-a", consumer="instance-1")
>>> # await ingress.start(); ...; await ingress.stop(5.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from aios_grpc.converters import packet_to_proto
from aios_grpc.errors import PacketError, status_of
from aios_grpc.ingress._base import TRANSIENT, decode_packet, pause
from aios_grpc.scheduler.core import Scheduler
from aios_grpc.scheduler.job import Job, Kind, Result

log = logging.getLogger("aios_grpc.ingress")

FIELD = b"packet"


@dataclass(slots=True)
class _Done:
    entry_id: bytes
    payload: bytes
    result: Result


class StreamIngress:
    """Feeds a Redis Stream's entries to the scheduler and acknowledges them when answered."""

    def __init__(
        self,
        client: aioredis.Redis,
        scheduler: Scheduler,
        *,
        stream: str,
        group: str,
        consumer: str,
        batch: int = 100,
        block_ms: int = 1000,
        claim_idle_s: float = 30.0,
        max_deliveries: int = 5,
        dead_letter: str = "",
        results_stream: str = "",
        max_in_flight: int = 1000,
    ) -> None:
        self.client = client
        self.scheduler = scheduler
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.max_deliveries = max_deliveries
        self.dead_letter = dead_letter or f"{stream}:dead"
        self.results_stream = results_stream
        self.window = asyncio.Semaphore(max(batch, max_in_flight))
        self.in_flight = 0
        self.acked = 0
        self.claimed = 0
        self.dead = 0
        self._done: asyncio.Queue[_Done] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading (after creating the group if needed), acknowledging and reclaiming.

        Returns at once: while Redis is unreachable the reader retries in the background.
        """
        self._reader = asyncio.create_task(self._read(), name=f"aios-stream-{self.stream}")
        self._tasks = [
            asyncio.create_task(self._ack(), name="aios-stream-ack"),
            asyncio.create_task(self._reclaim(), name="aios-stream-reclaim"),
        ]

    async def stop(self, timeout_s: float) -> None:
        """Stop reading, wait up to ``timeout_s`` for packets in flight, acknowledge them, stop."""
        # Let a read or claim in progress return rather than cancel it: Redis would count
        # its entries as delivered to us, and nobody would process them until reclaimed.
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s + self.block_ms / 1000
        for task in [self._reader, self._tasks[1] if len(self._tasks) > 1 else None]:
            if task is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
                await self._cancel(task)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
        for task in self._tasks:
            await self._cancel(task)
        # What was answered but not yet acknowledged: one bounded last try.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(self._drain_done()), 2.0)

    @staticmethod
    async def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _ensure_group(self) -> None:
        failures = 0
        while True:
            try:
                # Id 0: entries added before the first instance started are processed too.
                await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
                return
            except ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    return
                raise
            except TRANSIENT as exc:
                failures += 1
                await pause(failures, f"creating group {self.group} on {self.stream}", exc)

    # -- reading ---------------------------------------------------------------------

    async def _read(self) -> None:
        # A Redis error that is not a lost connection (a key of the wrong type, a
        # misconfiguration) is logged and retried: the reader never dies silently.
        failures = 0
        while not self._stopping:
            try:
                await self._read_forever()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.error("reading %s failed: %s: %s", self.stream, type(exc).__name__, exc)
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))

    async def _read_forever(self) -> None:
        await self._ensure_group()
        # First what this consumer id already holds (a restart with the same instance id).
        cursor = b"0"
        failures = 0
        while not self._stopping:
            n = await self._reserve()
            if self._stopping:
                self._release(n)
                return
            try:
                reply = await self.client.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.stream: cursor},
                    count=n,
                    block=None if cursor != b">" else self.block_ms,
                )
                failures = 0
            except ResponseError as exc:
                self._release(n)
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("group %s on %s is gone (Redis lost its data?); creating it", self.group, self.stream)
                await self._ensure_group()
                continue
            except TRANSIENT as exc:
                self._release(n)
                failures += 1
                await pause(failures, f"XREADGROUP {self.stream}", exc)
                continue
            entries = _entries(reply)
            self._release(n - len(entries))
            if cursor != b">" and not entries:
                cursor = b">"
                continue
            for entry_id, fields in entries:
                if cursor != b">":
                    cursor = entry_id
                await self._submit(entry_id, fields)

    async def _reserve(self) -> int:
        await self.window.acquire()
        n = 1
        while n < self.batch and not self.window.locked():
            await self.window.acquire()
            n += 1
        return n

    def _release(self, n: int) -> None:
        for _ in range(n):
            self.window.release()

    async def _submit(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> None:
        self.in_flight += 1
        self._idle.clear()
        payload = (fields or {}).get(FIELD, b"")
        try:
            packet = decode_packet(payload)
        except PacketError as exc:
            self._answered(entry_id, payload, Result(Kind.ERROR, error=exc))
            return
        job = Job(packet, lambda r: self._answered(entry_id, payload, r), source="redis-stream")
        await self.scheduler.submit(job)

    def _answered(self, entry_id: bytes, payload: bytes, result: Result) -> None:
        if result.terminal:
            self._done.put_nowait(_Done(entry_id, payload, result))

    # -- acknowledging ---------------------------------------------------------------

    def _drain_done(self) -> list[_Done]:
        items = []
        while not self._done.empty():
            items.append(self._done.get_nowait())
        return items

    async def _ack(self) -> None:
        failures = 0
        while True:
            items = [await self._done.get()]
            items += self._drain_done()
            while True:
                try:
                    await self._flush(items)
                    failures = 0
                    break
                except TRANSIENT as exc:
                    # XACK and XADD of the same answer again are harmless; keep trying.
                    failures += 1
                    await pause(failures, f"XACK on {self.stream}", exc)
                except Exception as exc:
                    # Not retryable (the group is gone, ...): the entries stay pending, or
                    # are gone with the group; either way this instance moves on.
                    log.error("acknowledging %d entries of %s failed: %s", len(items), self.stream, exc)
                    self._settle(len(items))
                    break

    async def _flush(self, items: list[_Done]) -> None:
        if not items:
            return
        pipe = self.client.pipeline(transaction=False)
        ack: list[bytes] = []
        for item in items:
            result = item.result
            if result.kind is Kind.OK:
                ack.append(item.entry_id)
                if self.results_stream and result.output is not None:
                    pipe.xadd(self.results_stream, {FIELD: packet_to_proto(result.output).SerializeToString()})
                continue
            error = result.error
            retryable = status_of(error)[1] if error is not None else False
            if retryable:
                continue  # left pending: reclaimed and tried again later, or dead-lettered
            pipe.xadd(self.dead_letter, _dead_fields(item.entry_id, item.payload, error))
            ack.append(item.entry_id)
            self.dead += 1
        if ack:
            pipe.xack(self.stream, self.group, *ack)
        await pipe.execute()
        self.acked += len(ack)
        self._settle(len(items))

    def _settle(self, n: int) -> None:
        self.in_flight -= n
        self._release(n)
        if self.in_flight <= 0:
            self._idle.set()

    # -- reclaiming ------------------------------------------------------------------

    async def _reclaim(self) -> None:
        period = max(0.05, min(5.0, self.claim_idle_ms / 2000))
        cursor: Any = "0-0"
        failures = 0
        while not self._stopping:
            await asyncio.sleep(period)
            if self._stopping:
                return
            try:
                cursor = await self._reclaim_once(cursor)
                failures = 0
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.error("XAUTOCLAIM on %s failed: %s", self.stream, exc)
                cursor = "0-0"
            except TRANSIENT as exc:
                failures += 1
                await pause(failures, f"XAUTOCLAIM on {self.stream}", exc)
            except Exception as exc:
                log.error("reclaiming entries of %s failed: %s: %s", self.stream, type(exc).__name__, exc)
                cursor = "0-0"

    async def _reclaim_once(self, cursor: Any) -> Any:
        reply = await self.client.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms, start_id=cursor, count=self.batch
        )
        next_cursor, claimed = reply[0], reply[1]
        live = [(i, f) for i, f in claimed if f]
        deleted = [i for i, f in claimed if not f]
        if deleted:  # trimmed from the stream while pending: nothing left to process
            await self.client.xack(self.stream, self.group, *deleted)
        if not live:
            return next_cursor
        counts = await self.client.xpending_range(
            self.stream,
            self.group,
            live[0][0],
            live[-1][0],
            len(live) + self.in_flight + 100,
            consumername=self.consumer,
        )
        delivered = {p["message_id"]: int(p["times_delivered"]) for p in counts}
        self.claimed += len(live)
        log.info("claimed %d entries of %s left pending by other consumers", len(live), self.stream)
        for entry_id, fields in live:
            if delivered.get(entry_id, 1) > self.max_deliveries:
                self.in_flight += 1
                self._idle.clear()
                await self.window.acquire()
                payload = fields.get(FIELD, b"")
                error = PacketError(
                    f"delivered {delivered[entry_id]} times (AIOS_REDIS_MAX_DELIVERIES={self.max_deliveries})",
                    stage="queue",
                    retryable=False,
                )
                self._done.put_nowait(_Done(entry_id, payload, Result(Kind.ERROR, error=error)))
                continue
            await self.window.acquire()
            await self._submit(entry_id, fields)
        return next_cursor


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an XREADGROUP reply on one stream (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams = list(reply.values())
        return [e for s in streams for e in (s[0] if s and isinstance(s[0], list) else s)]
    return [e for _, entries in reply for e in entries]


def _dead_fields(entry_id: bytes, payload: bytes, error: BaseException | None) -> dict[Any, Any]:
    code, _ = status_of(error) if error is not None else (None, False)
    message = getattr(error, "message", str(error)) if error is not None else ""
    return {
        FIELD: payload,
        b"entry_id": entry_id,
        b"code": code.name if code is not None else "UNKNOWN",
        b"error": message,
    }


__all__ = ["StreamIngress"]
