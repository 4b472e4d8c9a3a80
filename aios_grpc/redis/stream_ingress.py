"""``StreamIngress``: packets from a Redis Stream through a consumer group.

Delivery is at least once:

- ``XREADGROUP`` (group = block id, consumer = instance id) reads entries; each
  entry's ``packet`` field holds the packet as protobuf bytes.
- An entry is ``XACK``-ed only once its packet's terminal result has been routed
  (the router waited for every downstream target), so a crash before that leaves
  it pending.
- Entries pending on any consumer for ``claim_idle_s`` (a dead instance's) are
  taken over with ``XAUTOCLAIM`` and processed again. An instance renews the claim on
  the entries it is running every third of that time (``XCLAIM ... JUSTID``), so a
  packet slower than ``claim_idle_s`` is not taken over while its instance lives.
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
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from aios_grpc.converters import packet_to_proto
from aios_grpc.errors import PacketError, status_of
from aios_grpc.job import Job, Kind, Result
from aios_grpc.redis._ingress import decode_packet, keep_reading
from aios_grpc.redis.retry import TRANSIENT, Retry
from aios_grpc.runtime.scheduler import Scheduler

log = logging.getLogger("aios_grpc.redis")

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
        # Reads share the client's connections but skip redis-py's reply parsing (a dict
        # per entry): the reader takes the one field it needs from the raw reply.
        self._raw = aioredis.Redis(connection_pool=client.connection_pool)
        self._raw.set_response_callback("XREADGROUP", _unparsed)
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
        self.max_in_flight = max(batch, max_in_flight)
        self.acked = 0
        self.claimed = 0
        self.dead = 0
        self.refreshed = 0
        # Entries this consumer took and has not acknowledged yet -> when their claim was
        # last renewed (read, claimed or refreshed).
        self._held: dict[bytes, float] = {}
        self._unanswered = 0
        self._room = asyncio.Event()  # set when a read of a whole batch fits the window
        self._done: list[_Done] = []
        self._done_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: asyncio.Task[None] | None = None
        self._reclaimer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    @property
    def in_flight(self) -> int:
        """Entries taken and not acknowledged yet."""
        return len(self._held)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading (after creating the group if needed), acknowledging and reclaiming.

        Returns at once: while Redis is unreachable the reader retries in the background.
        """
        self._reader = asyncio.create_task(self._read(), name=f"aios-stream-{self.stream}")
        self._reclaimer = asyncio.create_task(self._reclaim(), name="aios-stream-reclaim")
        self._tasks = [
            asyncio.create_task(self._ack(), name="aios-stream-ack"),
            asyncio.create_task(self._refresh(), name="aios-stream-refresh"),
        ]

    async def stop(self, timeout_s: float) -> None:
        """Stop reading, wait up to ``timeout_s`` for packets in flight, acknowledge them, stop."""
        # Let a read or claim in progress return rather than cancel it: Redis would count
        # its entries as delivered to us, and nobody would process them until reclaimed.
        self._stopping = True
        self._room.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s + self.block_ms / 1000
        for task in [self._reader, self._reclaimer]:
            if task is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
                await self._cancel(task)
        # Claims keep being refreshed meanwhile, so no other instance takes these over.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
        for task in self._tasks:
            await self._cancel(task)
        # What was answered but not yet acknowledged: one bounded last try.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(self._take_done()), 2.0)

    @staticmethod
    async def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _ensure_group(self) -> None:
        creating = Retry(f"creating group {self.group} on {self.stream}")
        try:
            # Id 0: entries added before the first instance started are processed too.
            await creating.call(lambda: self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True))
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- reading ---------------------------------------------------------------------

    async def _read(self) -> None:
        await keep_reading(self._read_forever, self.stream, lambda: self._stopping)

    def _free(self) -> int:
        """How many entries a read may take now (the window minus what is unanswered)."""
        return min(
            self.batch,
            self.max_in_flight - self._unanswered,
            # Answered but unacknowledged entries are bounded too (Redis slow to take acks).
            2 * self.max_in_flight - len(self._held),
        )

    async def _read_forever(self) -> None:
        await self._ensure_group()
        # First what this consumer id already holds (a restart with the same instance id).
        cursor = b"0"
        reading = Retry(f"XREADGROUP {self.stream}")
        while not self._stopping:
            # Read whole batches: one round trip per batch, not one per few answers.
            # The window holds two batches, so one is read while the other is processed.
            while self._free() < self.batch and not self._stopping:
                self._room.clear()
                await self._room.wait()
            if self._stopping:
                return
            n = self._free()
            try:
                reply = await self._raw.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.stream: cursor},
                    count=n,
                    block=None if cursor != b">" else self.block_ms,
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("group %s on %s is gone (Redis lost its data?); creating it", self.group, self.stream)
                await self._ensure_group()
                continue
            except TRANSIENT as exc:
                await reading.fail(exc)
                continue
            reading.succeeded()
            entries = _raw_entries(reply)
            if cursor != b">" and not entries:
                cursor = b">"
                continue
            if entries and cursor != b">":
                cursor = entries[-1][0]
            now = time.monotonic()
            for entry_id, payload in entries:
                if entry_id in self._held:
                    continue  # already in flight here (read back from this consumer's history)
                await self._submit(entry_id, payload, now)

    async def _submit(self, entry_id: bytes, payload: bytes, now: float) -> None:
        self._held[entry_id] = now
        self._unanswered += 1
        self._idle.clear()
        try:
            packet = decode_packet(payload)
        except PacketError as exc:
            self._answered(entry_id, payload, Result(Kind.ERROR, error=exc))
            return
        job = Job(packet, functools.partial(self._answered, entry_id, payload), source="redis-stream")
        await self.scheduler.submit(job)

    def _answered(self, entry_id: bytes, payload: bytes, result: Result) -> None:
        if not result.terminal:
            return
        # The window opens on the answer, not on the acknowledgement: an answered entry
        # is no work that another instance could be doing, and acks can then be batched.
        self._unanswered -= 1
        if not self._room.is_set() and self._free() >= self.batch:
            self._room.set()
        self._done.append(_Done(entry_id, payload, result))
        self._done_ready.set()

    # -- acknowledging ---------------------------------------------------------------

    def _take_done(self) -> list[_Done]:
        items, self._done = self._done, []
        return items

    async def _ack(self) -> None:
        acking = Retry(f"XACK on {self.stream}")
        while True:
            await self._done_ready.wait()
            self._done_ready.clear()
            items = self._take_done()
            while items:
                try:
                    async with acking:
                        await self._flush(items)
                except Exception as exc:
                    # Not retryable (the group is gone, ...): the entries stay pending, or
                    # are gone with the group; either way this instance moves on.
                    log.error("acknowledging %d entries of %s failed: %s", len(items), self.stream, exc)
                    self._settle(items)
                    break
                if not acking.failed:
                    break
                # XACK and XADD of the same answer again are harmless; keep trying,
                # with what was answered meanwhile in the same round trip.
                items += self._take_done()

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
        self._settle(items)

    def _settle(self, items: list[_Done]) -> None:
        held = self._held
        for item in items:
            held.pop(item.entry_id, None)
        if not held:
            self._idle.set()
        if not self._room.is_set() and self._free() >= self.batch:
            self._room.set()

    # -- keeping claims --------------------------------------------------------------

    async def _refresh(self) -> None:
        """Renew the claim on entries in flight, so a slow packet is not taken over.

        Without this an entry processed for longer than the claim idle time would be
        claimed by another instance (or this one) and processed twice while its first
        run is still going. ``XCLAIM ... JUSTID`` resets the idle time and leaves the
        delivery count alone; entries idle for less than half a period (claimed by
        someone else just now) are left where they are.
        """
        period = max(0.02, self.claim_idle_ms / 3000)
        renewing = Retry(f"XCLAIM on {self.stream}")
        while True:
            await asyncio.sleep(period)
            try:
                async with renewing:
                    await self._refresh_once(period)
            except Exception as exc:
                # NOGROUP and the like: the reader re-creates the group; nothing to renew.
                log.error("renewing claims on %s failed: %s: %s", self.stream, type(exc).__name__, exc)

    async def _refresh_once(self, period: float) -> None:
        now = time.monotonic()
        due: list[Any] = [entry_id for entry_id, renewed in self._held.items() if now - renewed >= period / 2]
        for start in range(0, len(due), 1000):
            ids = due[start : start + 1000]
            await self.client.xclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=max(1, int(period * 500)),
                message_ids=ids,
                justid=True,
            )
            for entry_id in ids:
                if entry_id in self._held:
                    self._held[entry_id] = now
            self.refreshed += len(ids)

    # -- reclaiming ------------------------------------------------------------------

    async def _reclaim(self) -> None:
        period = max(0.05, min(5.0, self.claim_idle_ms / 2000))
        cursor: Any = "0-0"
        reclaiming = Retry(f"XAUTOCLAIM on {self.stream}")
        while not self._stopping:
            await asyncio.sleep(period)
            if self._stopping:
                return
            try:
                async with reclaiming:
                    cursor = await self._reclaim_once(cursor)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.error("XAUTOCLAIM on %s failed: %s", self.stream, exc)
                cursor = "0-0"
            except Exception as exc:
                log.error("reclaiming entries of %s failed: %s: %s", self.stream, type(exc).__name__, exc)
                cursor = "0-0"

    async def _reclaim_once(self, cursor: Any) -> Any:
        reply = await self.client.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms, start_id=cursor, count=self.batch
        )
        next_cursor, claimed = reply[0], reply[1]
        # An entry still in flight here is not taken twice (its claim lapsed only if the
        # event loop was held up for the whole idle time).
        live = [(i, f) for i, f in claimed if f and i not in self._held]
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
            len(live) + len(self._held) + 100,
            consumername=self.consumer,
        )
        delivered = {p["message_id"]: int(p["times_delivered"]) for p in counts}
        self.claimed += len(live)
        log.info("claimed %d entries of %s left pending by other consumers", len(live), self.stream)
        now = time.monotonic()
        for entry_id, fields in live:
            while self._free() < 1 and not self._stopping:
                self._room.clear()
                await self._room.wait()
            if delivered.get(entry_id, 1) > self.max_deliveries:
                payload = fields.get(FIELD, b"")
                error = PacketError(
                    f"delivered {delivered[entry_id]} times (AIOS_REDIS_MAX_DELIVERIES={self.max_deliveries})",
                    stage="queue",
                    retryable=False,
                )
                self._held[entry_id] = now
                self._unanswered += 1
                self._idle.clear()
                self._answered(entry_id, payload, Result(Kind.ERROR, error=error))
                continue
            await self._submit(entry_id, fields.get(FIELD, b""), now)
        return next_cursor


def _unparsed(response: Any, **options: Any) -> Any:
    """A response callback that leaves the reply as Redis sent it."""
    return response


def _raw_entries(reply: Any) -> list[tuple[bytes, bytes]]:
    """(entry id, packet bytes) of an unparsed XREADGROUP reply on one stream.

    RESP2 sends ``[[stream, [[id, [field, value, ...]], ...]]]``, RESP3 a map from the
    stream to the entry list. An entry deleted while pending has no fields; it and an
    entry without a ``packet`` field get empty bytes (answered as not a packet).
    """
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (s[1] for s in reply)
    out = []
    for entries in streams:
        for entry_id, fields in entries:
            if fields and fields[0] == FIELD:  # the usual single-field entry
                out.append((entry_id, fields[1]))
                continue
            payload = b""
            for i in range(0, len(fields or ()) - 1, 2):
                if fields[i] == FIELD:
                    payload = fields[i + 1]
                    break
            out.append((entry_id, payload))
    return out


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
