"""Resending for ``BlockClient`` and ``AsyncBlockClient``: what is unanswered, what to send next, what is a duplicate.

One ``process()`` call may use several Process streams in a row (a stream broke, or a
retryable result moved the call on to the next endpoint). The ``Ledger`` is the call's
memory across them: the packets sent on the current stream and not yet answered, the
packets waiting to be resent (each with its own back-off), and the caller's iterator of
packets not yet taken. A stream's request iterator takes from the ledger; each result
goes through ``Ledger.take``, which lets through exactly one terminal result per packet
sent, keyed by ``(session_id, seq_no)``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from aios_grpc_client._endpoints import RETRY_CODES, Picker, RetryPolicy
from aios_grpc_client._types import Result, pb

Key = tuple[str, int]


class Flush:
    """Yielded by ``Ledger.packets`` before it waits: a coalesced request must go now."""


FLUSH = Flush()


class _Wait:
    """``Ledger._step``: nothing to send now; wait for a change, at most ``timeout`` seconds (None: no limit)."""

    __slots__ = ("timeout",)

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout


class _Entry:
    """A packet the call has not seen a terminal result for."""

    __slots__ = ("attempts", "due", "first_sent", "packet")

    def __init__(self, packet: pb.Packet, first_sent: float, attempts: int = 0, due: float = 0.0) -> None:
        self.packet = packet
        self.first_sent = first_sent
        self.attempts = attempts
        self.due = due


def _expired(packet: pb.Packet) -> bool:
    """Whether the packet's own deadline (Unix seconds; 0: none) has passed: a resend could not succeed."""
    return bool(packet.deadline) and packet.deadline <= time.time()


class Unanswered(RuntimeError):
    """Packets of a ``process()`` call ran out of retries without a terminal result."""

    def __init__(self, keys: list[Key], why: str, count: int | None = None) -> None:
        if count is not None:
            # retries=0: nothing was resent, and only how many went unanswered is known.
            super().__init__(f"{count} packet(s) unanswered, none resent (retries=0; {why})")
        else:
            shown = ", ".join(f"({sid[:40]!r}, {seq})" for sid, seq in keys[:5])
            more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
            super().__init__(f"{len(keys)} packet(s) unanswered after retries ({why}): {shown}{more}")
        self.keys = keys
        self.count = len(keys) if count is None else count


class Ledger:
    """The packets of one ``process()`` call that have no terminal result yet."""

    def __init__(
        self,
        source: Iterator[pb.Packet],
        policy: RetryPolicy,
        move_on_retryable: bool,
        async_source: AsyncIterator[pb.Packet] | None = None,
    ) -> None:
        self.source = source
        # An asyncio call's packets, when the caller gave an async iterable (see async_packets).
        self.async_source = async_source
        self._async_source_lock: asyncio.Lock | None = None
        self._async_waiters: list[asyncio.Future[None]] = []
        self.policy = policy
        # Under failover with several endpoints a retryable result ends the stream (once
        # its other packets are answered) so that the resend goes to the next endpoint.
        self.move_on_retryable = move_on_retryable
        self.cond = threading.Condition(threading.Lock())
        self.source_lock = threading.Lock()
        # Sent on the current stream, unanswered: one entry per key; a key given again
        # while its first packet is out waits in ``dups`` (answers come in order per key).
        self.out: dict[Key, _Entry] = {}
        self.dups: dict[Key, deque[_Entry]] = {}
        # Request iterators waiting on ``cond``: results notify only when there are some.
        self.waiters = 0
        self.held: list[_Entry] = []
        self.stream = 0
        self.exhausted = False
        self.move_on = False
        self.answered = 0

    # -- the streams' side -------------------------------------------------------------

    def begin(self, stream: int) -> None:
        """Stream number ``stream`` is the current one; request iterators of older ones end."""
        with self.cond:
            self.stream = stream
            self.move_on = False
            self._notify()

    def stop(self) -> None:
        """The call is over: every request iterator ends."""
        self.begin(-1)

    def packets(self, stream: int) -> Iterator[pb.Packet | Flush]:
        """The packets to send on stream number ``stream``: resends when due, then new ones.

        ``FLUSH`` comes before the iterator waits (for answers or a resend's back-off), so
        that packets held back to fill a coalesced request are sent first.
        """
        cond = self.cond
        flushed = True
        while True:
            if self.held or self.exhausted or self.move_on or stream != self.stream:
                with cond:
                    entry = self._next_held(stream, flushed)
                    if entry is None:
                        return
            else:
                # The usual case, read without the lock (a resend added meanwhile is seen
                # on the next packet): take a new packet; staleness is checked under the
                # lock below, before it counts as sent. One lock per packet instead of two.
                entry = True
            if entry is FLUSH:
                flushed = True
                yield FLUSH
                continue
            flushed = False
            if entry is not True:
                yield entry.packet
                continue
            with self.source_lock:
                try:
                    packet = next(self.source)
                except StopIteration:
                    self._source_ended()
                    continue
            if not self._sent_new(stream, packet):
                return
            yield packet

    async def async_packets(self, stream: int) -> AsyncIterator[pb.Packet | Flush]:
        """``packets`` for an asyncio stream: waits without blocking the loop.

        The call's packets come from ``async_source`` when it is set (an async iterable
        of the caller), else from ``source``. Everything runs on the loop's thread, so the
        lock is never waited for; a waiter is woken through ``_notify``.
        """
        cond = self.cond
        flushed = True
        while True:
            if self.held or self.exhausted or self.move_on or stream != self.stream:
                while True:
                    with cond:
                        step = self._step(stream, flushed)
                        if not isinstance(step, _Wait):
                            break
                        waiter = asyncio.get_running_loop().create_future()
                        self._async_waiters.append(waiter)
                        self.waiters += 1
                    try:
                        async with asyncio.timeout(step.timeout):
                            await waiter
                    except TimeoutError:
                        pass
                    finally:
                        with cond:
                            self.waiters -= 1
                            if waiter in self._async_waiters:
                                self._async_waiters.remove(waiter)
                if step is None:
                    return
                entry = step
            else:
                entry = True
            if entry is FLUSH:
                flushed = True
                yield FLUSH
                continue
            flushed = False
            if entry is not True:
                yield entry.packet
                continue
            if self.async_source is not None:
                if self._async_source_lock is None:
                    self._async_source_lock = asyncio.Lock()
                async with self._async_source_lock:
                    try:
                        packet = await anext(self.async_source)
                    except StopAsyncIteration:
                        self._source_ended()
                        continue
            else:
                try:
                    packet = next(self.source)
                except StopIteration:
                    self._source_ended()
                    continue
            if not self._sent_new(stream, packet):
                return
            yield packet

    def _source_ended(self) -> None:
        with self.cond:
            self.exhausted = True
            self._notify()

    def _sent_new(self, stream: int, packet: pb.Packet) -> bool:
        """A new packet taken for ``stream`` counts as sent; False (held for the next stream) when it ended."""
        fresh = _Entry(packet, time.monotonic())
        with self.cond:
            if stream != self.stream:
                # Taken for a stream that has ended: the next stream sends it first.
                self.held.insert(0, fresh)
                return False
            self._add_out(fresh)
        return True

    def _next_held(self, stream: int, may_wait: bool) -> Any:
        """Under the lock: a due resend (moved out), True to take a new packet, None to end,
        ``FLUSH`` instead of waiting unless ``may_wait``."""
        while True:
            step = self._step(stream, may_wait)
            if not isinstance(step, _Wait):
                return step
            self.waiters += 1
            try:
                self.cond.wait(step.timeout)
            finally:
                self.waiters -= 1

    def _step(self, stream: int, may_wait: bool) -> Any:
        """Under the lock, without waiting: what ``_next_held`` returns, or ``_Wait`` (how long at most)."""
        if stream != self.stream:
            return None
        now = time.monotonic()
        if not self.move_on:
            for i, entry in enumerate(self.held):
                if entry.due <= now:
                    del self.held[i]
                    self._add_out(entry)
                    return entry
            if not self.exhausted:
                return True
        if not self.out and not self.dups and (self.move_on or not self.held):
            return None  # everything sent here is answered: half-close
        if not may_wait:
            return FLUSH
        return _Wait(None if self.move_on or not self.held else max(0.0, min(e.due for e in self.held) - now))

    def _notify(self) -> None:
        """Under the lock: wake every waiting request iterator, threads and asyncio tasks alike."""
        self.cond.notify_all()
        if self._async_waiters:
            for waiter in self._async_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._async_waiters.clear()

    def _add_out(self, entry: _Entry) -> None:
        key = (entry.packet.session_id, entry.packet.seq_no)
        if key not in self.out:
            self.out[key] = entry
        else:
            self.dups.setdefault(key, deque()).append(entry)

    # -- the results' side -------------------------------------------------------------

    def take(self, result: Result) -> Result | None:
        """``result`` when the caller should see it; None for a duplicate or a result to retry."""
        key = (result.session_id, result.seq_no)
        with self.cond:
            out = self.out
            if result.kind == "partial":
                return result if key in out else None
            entry = out.pop(key, None)
            if entry is None:
                return None  # a packet answered already (or never sent by this call)
            if self.dups:
                later = self.dups.get(key)
                if later:
                    out[key] = later.popleft()
                    if not later:
                        del self.dups[key]
            error = result.error
            if error is None or not error.retryable or error.code not in RETRY_CODES or _expired(entry.packet):
                # The usual case: no clock, no policy; a waiting request iterator (all
                # packets sent) is woken only by the last answer.
                self.answered += 1
                if self.waiters and not out and not self.dups:
                    self._notify()
                return result
            now = time.monotonic()
            if self.policy.allows(entry.attempts + 1, entry.first_sent, now):
                entry.attempts += 1
                entry.due = now + self.policy.delay(entry.attempts)
                self.held.append(entry)
                if self.move_on_retryable:
                    self.move_on = True
                self._notify()
                return None
            self.answered += 1
            if self.waiters:
                self._notify()
            return result

    def requeue(self) -> list[Key]:
        """After a broken stream: every packet sent on it waits for a resend; the keys out of retries."""
        now = time.monotonic()
        spent: list[Key] = []
        with self.cond:
            for entry in [*self.out.values(), *(e for queue in self.dups.values() for e in queue)]:
                entry.attempts += 1
                if self.policy.allows(entry.attempts, entry.first_sent, now):
                    entry.due = now + self.policy.delay(entry.attempts)
                    self.held.append(entry)
                else:
                    spent.append((entry.packet.session_id, entry.packet.seq_no))
            self.out.clear()
            self.dups.clear()
            self._notify()
        return spent

    def done(self) -> bool:
        """Every packet taken from the caller got its terminal result."""
        with self.cond:
            return self.exhausted and not self.out and not self.dups and not self.held

    def unanswered(self) -> list[Key]:
        """Keys of the packets still without a terminal result."""
        with self.cond:
            keys = [*self.out, *(key for key, queue in self.dups.items() for _ in queue)]
            return keys + [(e.packet.session_id, e.packet.seq_no) for e in self.held]


class Streams:
    """The Process streams of one ``process()`` call in a row: what comes after each one ends.

    Shared by ``BlockClient`` and ``AsyncBlockClient``, which only open the stream, feed
    it from the ledger, read its results, and sleep for ``backoff``. ``index`` is the
    endpoint of the stream to open next; ``begin`` starts it, ``ended`` decides what
    follows: done, another stream (after ``backoff`` seconds; None: at once), or the
    error to give up with.
    """

    def __init__(self, ledger: Ledger, picker: Picker, policy: RetryPolicy) -> None:
        self.ledger = ledger
        self.picker = picker
        self.policy = policy
        self.order = picker.order()
        self.start = time.monotonic()
        self.stream = 0
        # Streams in a row that ended without a new terminal result.
        self.failures = 0
        self.index = self.order[0]
        self.backoff: float | None = None
        self._answered = 0

    def begin(self) -> int:
        """The stream to endpoint ``index`` is the current one; returns its number."""
        self.ledger.begin(self.stream)
        self._answered = self.ledger.answered
        return self.stream

    def ended(self, broken: grpc.RpcError | None) -> bool:
        """The current stream ended (``broken``: its retryable gRPC error, else None).

        True: every packet got its terminal result. False: open the next stream, to
        ``index``, after ``backoff`` seconds (None: no wait). Raises when packets are out
        of retries: ``broken`` itself, or ``Unanswered`` when the stream ended without one.
        """
        ledger = self.ledger
        if ledger.done():
            self.picker.worked(self.index)
            return True
        # The stream broke, or ended so that the next endpoint takes the resends.
        self.failures = 0 if ledger.answered > self._answered else self.failures + 1
        if broken is not None:
            self.picker.failed(self.index)
        spent = ledger.requeue()
        why = f"{broken.code().name}: {broken.details()}"[:200] if broken is not None else "stream ended"
        out_of_retries = self.failures > self.policy.retries or not self.policy.allows(0, self.start, time.monotonic())
        if spent or out_of_retries:
            # The last stream's gRPC error, as without retries; Unanswered when the
            # stream ended without one.
            if broken is not None:
                raise broken
            raise Unanswered(spent or ledger.unanswered(), why)
        self.backoff = self.policy.delay(self.failures) if self.failures else None
        self.stream += 1
        self.index = self.order[self.stream % len(self.order)]
        return False


__all__ = ["FLUSH", "Flush", "Ledger", "Streams", "Unanswered"]
