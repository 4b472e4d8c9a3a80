"""One ``Process`` stream: its reader, window, outbox and writer.

HOT PATH: every line in this module runs per packet (or per response) on the event
loop's thread. Keep it flat: no per-packet frames beyond those already here, one
``try_acquire`` per packet (one per coalesced request), jobs of a coalesced request
made in one loop and queued in one step (``try_submit_many``), response messages filled
in place (``fill_results``). Anything slower belongs behind a branch that the usual
packet does not take (``_read_each``, ``_submit_each``).

The stream converts and hands off; it decides nothing about a packet and writes no
scheduler counters itself (it calls ``Scheduler.note_pipelined``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from aios_grpc._pb import pb
from aios_grpc.converters import error_to_proto, fill_packet, packet_from_proto
from aios_grpc.errors import InvalidPacket, ResourceExhausted, Unavailable
from aios_grpc.job import Job, Kind, Result
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.window import Window
from aios_grpc.service.decode import Refused
from aios_grpc.service.ordering import OrderedReplies
from aios_grpc.service.outbox import END, Outbox

MAX_RESULTS_PER_RESPONSE = 256
_PARTIAL = Kind.PARTIAL
# _KIND_NUMBER[kind] is int(kind) as a plain int, which upb sets faster than an IntEnum.
_KIND_NUMBER = tuple(range(max(Kind) + 1))


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """What one Process stream may hold and write (``from_settings`` for the server's)."""

    max_message_bytes: int = 16 * 1024 * 1024
    """Largest response written (``AIOS_MAX_MESSAGE_BYTES``, grpc's send limit)."""
    max_unsent_bytes: int = 4 * 1024 * 1024
    """Bytes of results unwritten, with those of the packets in flight (``AIOS_STREAM_MAX_UNSENT_BYTES``)."""
    max_streams: int = 256
    """Process streams open at once (``AIOS_MAX_STREAMS``); the servicer refuses one more."""

    @classmethod
    def from_settings(cls, settings: Any) -> StreamLimits:
        """The limits ``settings`` (a ``Settings``) configure."""
        return cls(
            max_message_bytes=settings.max_message_bytes,
            max_unsent_bytes=settings.stream_max_unsent_bytes,
            max_streams=settings.max_streams,
        )


class ResultSizes:
    """What the streams of one server learnt about its results: the largest so far, in bytes."""

    __slots__ = ("largest",)

    def __init__(self) -> None:
        self.largest = 0


class Stream:
    """One Process stream: reads packets, bounds those unanswered, orders and writes the results.

    ``responses(requests)`` is the whole stream: it starts the reader task (``read``)
    and yields each ``ProcessResponse`` to write.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        max_in_flight: int,
        time_remaining: float | None,
        trace: dict[str, str] | None = None,
        limits: StreamLimits | None = None,
        sizes: ResultSizes | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.limits = limits or StreamLimits()
        self.out = Outbox()
        self.replies = OrderedReplies(self._emit)
        self.window = Window(max_in_flight)
        self.coalesce = False
        self.closed = False
        self.reading = True
        self.reader: asyncio.Task[None] | None = None
        self.stopping = False
        self.deadline = time.monotonic() + time_remaining if time_remaining else 0.0
        # How the stream ends once every packet read is written, when not OK (servicer.Process):
        # a request message refused (service/decode.py), or a drain that stopped the reading.
        self.status: tuple[grpc.StatusCode, str] | None = None
        # The byte bound (AIOS_STREAM_MAX_UNSENT_BYTES): results up to `heavy_above` bytes can
        # never break it (a full window of them fits), so only once a larger one came is the
        # stream `heavy`, and the reader then takes a packet only while the unwritten results
        # and the packets in flight, reckoned at the largest result so far, fit (`_room`).
        # The largest result any stream of this server has seen (its block's outputs are
        # alike): a new stream starts heavy when results are known to be large.
        self.sizes = sizes or ResultSizes()
        self.largest = self.sizes.largest
        self.heavy_above = self.limits.max_unsent_bytes // max_in_flight
        self.heavy = self.largest > self.heavy_above
        self._room_waiter: asyncio.Future[None] | None = None
        self.trace = trace  # W3C trace context from the stream's metadata

    # -- the writer ------------------------------------------------------------------

    async def responses(self, requests: AsyncIterator[pb.ProcessRequest]) -> AsyncGenerator[pb.ProcessResponse, None]:
        """Read ``requests`` (in a task) and yield the responses, until every packet read is answered.

        No response is larger than ``limits.max_message_bytes``: one that would be is
        split (``_split``), and a result that fits in no response is answered with an
        error result instead (RESOURCE_EXHAUSTED, stage ``reply``).
        """
        out = self.out
        window = self.window
        limit = self.limits.max_message_bytes
        # A lone result whose big fields (data, session id, pointer) stay under a quarter
        # of the limit and that has no files, headers or error cannot reach it: only the
        # others are measured (ByteSize serializes the message; ~0.6 us for a small one).
        quarter = limit // 4
        reader = self.reader = asyncio.create_task(self.read(requests))
        try:
            while True:
                item = await out.get()
                if item is END:
                    break
                if not self.coalesce:
                    response = pb.ProcessResponse()
                    fill_results(lambda: response.result, (item,))  # noqa: B023  (called at once)
                    output = item[2].output
                    if (
                        (
                            output.files
                            or output.headers
                            or len(output.data) + len(output.output_ptr) + 2 * len(item[0]) > quarter
                            if output is not None
                            else len(item[0]) > quarter
                        )
                        or item[2].error is not None
                    ) and response.ByteSize() > limit:
                        async for part in self._write_split([item]):
                            yield part
                        continue
                    try:
                        yield response
                    except BaseException:
                        item[2].drop()  # never written: its producer must not wait for it
                        raise
                    # A packet leaves the window once its answer is written, not when it is
                    # computed: a caller that stops reading answers stops the reading too.
                    # The same holds for a partial and its packet's bound of unsent partials.
                    if item[2].kind is not _PARTIAL:
                        window.release()
                    else:
                        item[2].sent()
                    if self._room_waiter is not None:
                        self._wake_reader()
                    continue
                items = out.take(item, MAX_RESULTS_PER_RESPONSE)
                response = pb.ProcessResponse()
                partials = fill_results(response.results.add, items)
                # Exact and cheap per result here (~0.15 us each for 256 small results).
                if response.ByteSize() > limit:
                    async for part in self._write_split(items):
                        yield part
                    continue
                try:
                    yield response
                except BaseException:
                    for one in items:
                        one[2].drop()
                    raise
                if partials:
                    window.release(len(items) - len(partials))
                    for partial in partials:
                        partial.sent()
                else:
                    window.release(len(items))
                if self._room_waiter is not None:
                    self._wake_reader()
            await reader
        finally:
            self.close()
            if not reader.done():
                reader.cancel()

    async def _write_split(self, items: list[tuple[str, int, Result]]) -> AsyncGenerator[pb.ProcessResponse, None]:
        """Yield ``items`` as responses within the message limit (``_split``), freeing places as each is written."""
        try:
            for response, terminal, partials in self._split(items):
                yield response
                if terminal:
                    self.window.release(terminal)
                for partial in partials:
                    partial.sent()
                if self._room_waiter is not None:
                    self._wake_reader()
        except BaseException:
            for one in items:
                one[2].drop()  # the caller is gone: no producer may wait for these
            raise

    def _split(self, items: list[tuple[str, int, Result]]) -> Iterator[tuple[pb.ProcessResponse, int, list[Result]]]:
        """``items`` as responses within the message limit, each with its terminal count and partials.

        The slow path of a response that would be too large. A result too large for any
        response is answered with an error result naming its size and the limit; for a
        partial output that is a partial carrying the error (its packet's terminal result
        still follows).
        """
        limit = self.limits.max_message_bytes
        response = pb.ProcessResponse()
        size = 0
        terminal = 0
        partials: list[Result] = []
        for i, (session_id, seq_no, result) in enumerate(items):
            single = pb.ProcessResponse()
            fill_results(single.results.add, [(session_id, seq_no, result)])
            one = single.ByteSize()
            if one > limit:
                result = _too_large(result, one, limit)
                if len(session_id) > limit // 2:
                    session_id = session_id[:256]  # cannot be answered by name: the id alone breaks the limit
                single = pb.ProcessResponse()
                fill_results(single.results.add, [(session_id, seq_no, result)])
                one = single.ByteSize()
            if size and size + one > limit:
                yield response, terminal, partials
                response, size, terminal, partials = pb.ProcessResponse(), 0, 0, []
            response.MergeFrom(single)
            size += one
            item = items[i][2]
            if item.kind is _PARTIAL:
                partials.append(item)
            else:
                terminal += 1
        if size:
            yield response, terminal, partials

    def close(self) -> None:
        """The caller is gone: drop every partial not written, so that its producer stops."""
        self.closed = True
        self.replies.close()
        out = self.out
        while not out.empty():
            out.get_nowait()[2].drop()

    def _emit(self, session_id: str, seq_no: int, result: Result) -> None:
        if self.closed:
            result.drop()
            return
        # The response message is built by the writer, straight into the message it sends.
        # Outbox.put_nowait spelled out: this runs once per answer.
        out = self.out
        out._items.append((session_id, seq_no, result))
        waiter = out._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        output = result.output
        if output is not None and (output.files or len(output.data) > self.heavy_above):
            self._sized(result)
        if not self.reading and result.kind is not _PARTIAL and self.replies.open_slots == 0:
            out.end()

    # -- the byte bound (AIOS_STREAM_MAX_UNSENT_BYTES) ---------------------------------

    def _sized(self, result: Result) -> None:
        """A result larger than ``heavy_above`` (or with files) came: the stream may be heavy now."""
        size = _result_bytes(result)
        if size > self.largest:
            self.largest = size
            if size > self.sizes.largest:
                self.sizes.largest = size
        if size > self.heavy_above:
            self.heavy = True

    def _room(self) -> bool:
        """Whether one more packet fits the byte bound: unwritten results plus the packets in
        flight (and this one) at the largest result so far. A stream with nothing in flight and
        nothing unwritten always has room, so that a result larger than the bound still runs."""
        in_flight = self.replies.open_slots
        unsent = 0
        for _, _, result in self.out._items:
            if result.output is not None:
                unsent += _result_bytes(result)
        if in_flight == 0 and unsent == 0:
            return True
        return unsent + (in_flight + 1) * self.largest <= self.limits.max_unsent_bytes

    async def _wait_room(self) -> None:
        """Wait until ``_room()`` (the writer wakes the reader after each response it wrote)."""
        while not self._room():
            self._room_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._room_waiter
            finally:
                self._room_waiter = None

    def _wake_reader(self) -> None:
        waiter = self._room_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the reader ------------------------------------------------------------------

    async def read(self, requests: AsyncIterator[pb.ProcessRequest]) -> None:
        """Hand each packet of ``requests`` to the scheduler, a window place taken for each.

        The usual request is served inline: a coalesced one whose places are all free
        (one ``try_acquire``, ``_jobs``, one ``try_submit_many``), or a lone packet whose
        place is free. The rest waits for places one by one (``_read_each``).
        """
        scheduler = self.scheduler
        window = self.window
        replies = self.replies
        try_submit = scheduler.try_submit
        try_submit_many = scheduler.try_submit_many
        trace = self.trace
        index = 0  # request messages read, for the refusal's message
        try:
            async for request in requests:
                index += 1
                if request.packets:
                    self.coalesce = True
                    messages = list(request.packets)
                    if request.HasField("packet"):
                        messages.insert(0, request.packet)
                    if self.heavy or not window.try_acquire(len(messages)):
                        await self._read_each(messages)
                        continue
                    jobs = self._jobs(messages)
                    taken = try_submit_many(jobs)
                    if taken < len(jobs):
                        await self._submit_each(jobs, taken)
                elif not request.HasField("packet"):
                    await self._refuse_empty()
                elif not self.heavy and window.try_acquire():
                    # A lone packet with its place free, inline (no frame of its own).
                    packet = packet_from_proto(request.packet)
                    if replies.open_slots:
                        scheduler.note_pipelined(1)
                    deadline = self.deadline
                    if packet.deadline:
                        deadline = _deadline(packet.deadline, deadline, time.monotonic())
                    job = Job(
                        packet,
                        replies.slot(packet.session_id, packet.seq_no),
                        deadline=deadline,
                        source="grpc",
                        trace=trace,
                    )
                    if not try_submit(job):
                        await self._submit_each([job], 0)
                else:
                    await self._read_each((request.packet,))
        except Refused as exc:
            # Not parsed: the packets read before it are answered, then the stream ends.
            self.status = (
                exc.code,
                f"request message {index + 1} of the stream (counting from 1) was refused: {exc.message};"
                " every packet read before it was answered",
            )
        except asyncio.CancelledError:
            if not self.stopping:
                raise
        finally:
            self.reading = False
            if self.replies.open_slots == 0:
                self.out.end()

    def _jobs(self, messages: list[pb.Packet]) -> list[Job]:
        """The jobs of a request's packets, each with its reply slot (its window place is taken)."""
        replies = self.replies
        # Each packet after the first is read behind an unanswered one (its predecessor).
        self.scheduler.note_pipelined(len(messages) if replies.open_slots else len(messages) - 1)
        slot = replies.slot
        stream_deadline = self.deadline
        trace = self.trace
        now = time.monotonic()
        jobs = []
        for msg in messages:
            packet = packet_from_proto(msg)
            deadline = stream_deadline
            if packet.deadline:
                deadline = _deadline(packet.deadline, stream_deadline, now)
            # Positional, in field order: packet, reply, received, deadline, members, source, trace.
            # Kept positional: keywords cost ~0.5 us more per packet here (this loop over a
            # 256-packet request: ~1.15 us per packet positional, 1.6-2.4 us with keywords;
            # Job() alone ~310 vs ~560-690 ns; CPython 3.11, timeit, both in the same run;
            # bench/stream_throughput.py sends lone packets, so it never reaches this loop).
            # Job's field order is pinned by a test.
            jobs.append(Job(packet, slot(packet.session_id, packet.seq_no), now, deadline, None, "grpc", trace))
        return jobs

    async def _read_each(self, messages: Sequence[pb.Packet]) -> None:
        """Hand ``messages`` over one by one, waiting for a window place for each (none is held)."""
        scheduler = self.scheduler
        window = self.window
        replies = self.replies
        stream_deadline = self.deadline
        trace = self.trace
        taken = 0
        for msg in messages:
            if self.heavy and not self._room():
                try:
                    await self._wait_room()
                except asyncio.CancelledError:
                    self._refuse(messages[taken:])
                    raise
            if not window.try_acquire():
                try:
                    await window.acquire()
                except asyncio.CancelledError:
                    self._refuse(messages[taken:])
                    raise
            taken += 1
            packet = packet_from_proto(msg)
            if replies.open_slots:
                scheduler.note_pipelined(1)
            deadline = stream_deadline
            if packet.deadline:
                deadline = _deadline(packet.deadline, stream_deadline, time.monotonic())
            job = Job(
                packet,
                replies.slot(packet.session_id, packet.seq_no),
                deadline=deadline,
                source="grpc",
                trace=trace,
            )
            if scheduler.try_submit(job):
                continue
            try:
                await scheduler.submit(job)
            except asyncio.CancelledError:
                # Stopped while the queue was full: the packet was taken, so answer it.
                scheduler.answer(job, _draining())
                self._refuse(messages[taken:])
                raise

    async def _submit_each(self, jobs: list[Job], start: int) -> None:
        """Queue ``jobs[start:]`` one by one, waiting while the queue is full (the rest are queued)."""
        scheduler = self.scheduler
        for i in range(start, len(jobs)):
            job = jobs[i]
            if scheduler.try_submit(job):
                continue
            try:
                await scheduler.submit(job)
            except asyncio.CancelledError:
                # Stopped while the queue was full: the packet was taken, so answer it,
                # and the later ones, which the scheduler never saw, through their slots.
                scheduler.answer(job, _draining())
                for rest in jobs[i + 1 :]:
                    rest.reply(_draining())
                raise

    async def _refuse_empty(self) -> None:
        """Answer a request that carries no packet (it takes a window place like a packet)."""
        await self.window.acquire()
        self.replies.slot("", 0)(
            Result(
                Kind.ERROR,
                error=InvalidPacket("ProcessRequest carries no packet: set `packet` or `packets`", stage="decode"),
            )
        )

    def _refuse(self, messages: Sequence[pb.Packet]) -> None:
        """Answer packets read but never handed to the scheduler (the stream stopped)."""
        for msg in messages:
            self.replies.slot(msg.session_id, msg.seq_no)(_draining())

    def stop_reading(self) -> None:
        """Read no more packets (drain); the stream ends once every read packet is answered.

        When the caller had not half-closed, packets it sent may be left unread: the stream
        then ends UNAVAILABLE, never OK, so that the caller resends what got no answer.
        """
        if self.reader is not None and not self.reader.done():
            self.stopping = True
            self.reader.cancel()
            if self.status is None:
                self.status = (
                    grpc.StatusCode.UNAVAILABLE,
                    "block is draining: it stopped reading this stream; packets without an answer"
                    " were not read, resend them to another instance",
                )

    def abandon(self) -> None:
        """The drain's grace period is over: write the answers already made, then end UNAVAILABLE.

        The packets still unanswered (their block code still runs) are named by count in
        the stream's status.
        """
        self.stop_reading()
        unanswered = self.replies.open_slots
        if unanswered:
            self.status = (
                grpc.StatusCode.UNAVAILABLE,
                f"block is draining: the grace period ended with {unanswered} packet(s) of this stream"
                " unanswered; resend them to another instance",
            )
        self.out.end()


def _deadline(wall_clock: float, stream_deadline: float, now: float) -> float:
    """A packet's own (wall-clock) deadline as ``time.monotonic()`` time, the stream's if that
    comes first (0: the stream has none). Only called for packets that carry a deadline."""
    own = now + (wall_clock - time.time())
    return min(stream_deadline, own) if stream_deadline else own


def _draining() -> Result:
    """The answer for a packet read and not run: the stream stopped reading (drain)."""
    return Result(Kind.ERROR, error=Unavailable("block is draining; retry on another instance", stage="queue"))


def _result_bytes(result: Result) -> int:
    """About the bytes a result's output holds (its data and files)."""
    output = result.output
    if output is None:
        return 0
    size = len(output.data)
    for f in output.files:
        size += len(f.file_data) + len(f.metadata)
    return size


def _too_large(result: Result, size: int, limit: int) -> Result:
    """The answer in place of ``result``, which fits in no response of ``limit`` bytes."""
    error = ResourceExhausted(
        f"the result is {size} bytes, over the message limit of {limit} bytes (AIOS_MAX_MESSAGE_BYTES)",
        stage="reply",
        retryable=False,
    )
    return Result(_PARTIAL if result.kind is _PARTIAL else Kind.ERROR, error=error)


def fill_results(add: Any, items: Sequence[tuple[str, int, Result]]) -> list[Result] | None:
    """Fill one ``PacketResult`` from each ``(session_id, seq_no, result)``, each into ``add()``
    (``response.results.add``, or ``lambda: response.result`` for a lone result); the partials
    among them, if any. The one body for both response forms."""
    partials = None
    for session_id, seq_no, result in items:
        msg = add()
        if session_id:
            msg.session_id = session_id
        if seq_no:
            msg.seq_no = seq_no
        kind = result.kind
        msg.kind = _KIND_NUMBER[kind]
        if result.output is not None:
            fill_packet(msg.output, result.output)
        if result.error is not None:
            msg.error.CopyFrom(error_to_proto(result.error))
        if kind is _PARTIAL:
            if partials is None:
                partials = []
            partials.append(result)
    return partials
