"""``BlockServicer``: the thin gRPC face of the scheduler and the control plane.

It converts protobuf to the SDK's types, hands packets to the scheduler, and
converts results back. Per stream it bounds the unanswered packets (past the bound
it stops reading, so HTTP/2 flow control slows the sender) and releases each
session's results in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from aios_grpc._pb import pb, pb_grpc
from aios_grpc.converters import (
    dict_to_struct,
    error_to_proto,
    fill_packet,
    packet_from_proto,
    struct_to_dict,
    to_value,
)
from aios_grpc.errors import AiosError, InvalidPacket, Unavailable, status_of
from aios_grpc.job import Job, Kind, Result
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.control import ControlPlane
from aios_grpc.service.ordering import OrderedReplies

log = logging.getLogger("aios_grpc.service")

_END = object()
_MAX_RESULTS_PER_RESPONSE = 256
_PARTIAL = Kind.PARTIAL
# _KIND_NUMBER[kind] is int(kind) as a plain int, which upb sets faster than an IntEnum.
_KIND_NUMBER = tuple(range(max(Kind) + 1))


class BlockServicer(pb_grpc.BlockServiceServicer):
    """Implements ``aios.block.v1.BlockService``; ready once ``attach`` was called."""

    def __init__(self, stream_max_in_flight: int) -> None:
        self.scheduler: Scheduler | None = None
        self.control: ControlPlane | None = None
        self.ready = asyncio.Event()
        self.stream_max_in_flight = stream_max_in_flight
        self.open_streams = 0
        self._streams: set[_Stream] = set()

    def attach(self, scheduler: Scheduler, control: ControlPlane) -> None:
        """Connect the initialised block; RPCs waiting for it go ahead."""
        self.scheduler = scheduler
        self.control = control
        self.ready.set()

    async def _scheduler(self) -> Scheduler:
        await self.ready.wait()
        assert self.scheduler is not None
        return self.scheduler

    async def _control(self, context: grpc.aio.ServicerContext[Any, Any]) -> ControlPlane:
        if not self.ready.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "block is still starting")
        assert self.control is not None
        return self.control

    # -- data plane ------------------------------------------------------------------

    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessRequest],
        context: grpc.aio.ServicerContext[pb.ProcessRequest, pb.ProcessResponse],
    ) -> AsyncIterator[pb.ProcessResponse]:
        scheduler = await self._scheduler()
        if not scheduler.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "block is draining; retry on another instance")
        out = _Outbox()
        stream = _Stream(scheduler, out, self.stream_max_in_flight, context.time_remaining())
        stream.trace = trace_metadata(context.invocation_metadata())
        reader = stream.reader = asyncio.create_task(stream.read(request_iterator))
        self.open_streams += 1
        self._streams.add(stream)
        window = stream.window
        try:
            while True:
                item = await out.get()
                if item is _END:
                    break
                if not stream.coalesce:
                    response = pb.ProcessResponse()
                    _fill_results(lambda: response.result, (item,))  # noqa: B023  (called at once)
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
                    continue
                items = out.take(item, _MAX_RESULTS_PER_RESPONSE)
                response = pb.ProcessResponse()
                partials = _fill_results(response.results.add, items)
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
            await reader
        finally:
            self.open_streams -= 1
            self._streams.discard(stream)
            stream.close()
            if not reader.done():
                reader.cancel()

    def end_streams(self) -> None:
        """Drain: stop reading every open stream; each ends once its packets are answered."""
        for stream in list(self._streams):
            stream.stop_reading()

    # -- control plane ---------------------------------------------------------------

    async def SetParameters(
        self, request: pb.SetParametersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SetParametersResponse:
        control = await self._control(context)
        try:
            applied, current = await control.set_parameters(struct_to_dict(request.parameters))
        except AiosError as exc:
            await context.abort(exc.code, str(exc))
        return pb.SetParametersResponse(applied=dict_to_struct(applied), parameters=dict_to_struct(current))

    async def Management(
        self, request: pb.ManagementRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ManagementResponse:
        control = await self._control(context)
        try:
            result = await control.management(request.action, struct_to_dict(request.data))
        except AiosError as exc:
            await context.abort(exc.code, str(exc))
        except Exception as exc:
            await context.abort(
                grpc.StatusCode.INTERNAL, f"management({request.action!r}) raised {type(exc).__name__}: {exc}"
            )
        return pb.ManagementResponse(result=to_value(result))

    async def GetInfo(
        self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetInfoResponse:
        control = await self._control(context)
        info = control.info()
        mux = info["muxer"]
        bat = info["batcher"]
        return pb.GetInfoResponse(
            block_id=info["block_id"],
            instance_id=info["instance_id"],
            sdk_version=info["sdk_version"],
            block_class=info["block_class"],
            muxer=pb.MuxerInfo(
                n=mux.get("n", 0), timeout_s=mux.get("timeout_s", 0.0), max_open_groups=mux.get("max_open_groups", 0)
            ),
            batcher=pb.BatcherInfo(
                kind=bat.get("kind", "none"),
                n=bat.get("n", 0),
                t=bat.get("t", 0.0),
                max_concurrent_batches=bat.get("max_concurrent_batches", 0),
            ),
            parameters=dict_to_struct(info["parameters"]),
        )


class _Outbox:
    """One stream's answers on their way out: a single-consumer queue, cheaper than asyncio.Queue.

    Not bounded itself: the stream's window bounds the terminal results in it, each
    packet's ``PartialGate`` (``AIOS_MAX_UNSENT_PARTIALS``) the partials. ``end()``
    marks the last answer in: ``get`` gives ``_END`` once the items before it are taken.
    """

    __slots__ = ("_items", "_waiter", "ended")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.ended = False

    def put_nowait(self, item: Any) -> None:
        """Add an item and wake the consumer."""
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self) -> None:
        """Nothing follows: the consumer gets ``_END`` after the items already in."""
        self.ended = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        """Whether no item is waiting."""
        return not self._items

    def get_nowait(self) -> Any:
        """The oldest item (call only when not ``empty()``)."""
        return self._items.popleft()

    def take(self, first: Any, limit: int) -> list[Any]:
        """``first`` and the items waiting after it, ``limit`` at most in all."""
        items = self._items
        if len(items) < limit:
            taken = [first, *items]
            items.clear()
            return taken
        return [first, *[items.popleft() for _ in range(limit - 1)]]

    async def get(self) -> Any:
        """The oldest item, waiting for one; ``_END`` once ended and empty."""
        while not self._items:
            if self.ended:
                return _END
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class _Window:
    """Packets a stream may have read and not yet answered: a counting semaphore with a
    non-blocking fast path (``try_acquire``), since it is taken once per packet."""

    __slots__ = ("_free", "_waiter")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiter: asyncio.Future[None] | None = None

    def try_acquire(self, places: int = 1) -> bool:
        """Take ``places`` places if that many are free (all or none)."""
        if self._free >= places:
            self._free -= places
            return True
        return False

    async def acquire(self) -> None:
        """Take a place, waiting for one (only the stream's reader waits)."""
        while self._free <= 0:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._free -= 1

    def release(self, places: int = 1) -> None:
        """Give places back (one per answer written)."""
        self._free += places
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Stream:
    """One Process stream: reads packets, bounds those unanswered, orders the results."""

    def __init__(
        self,
        scheduler: Scheduler,
        out: _Outbox,
        max_in_flight: int,
        time_remaining: float | None,
    ) -> None:
        self.scheduler = scheduler
        self.out = out
        self.replies = OrderedReplies(self._emit)
        self.window = _Window(max_in_flight)
        self.coalesce = False
        self.closed = False
        self.reading = True
        self.reader: asyncio.Task[None] | None = None
        self.stopping = False
        self.deadline = time.monotonic() + time_remaining if time_remaining else 0.0
        self.trace: dict[str, str] | None = None  # W3C trace context from the stream's metadata

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
        # _Outbox.put_nowait spelled out: this runs once per answer.
        out = self.out
        out._items.append((session_id, seq_no, result))
        waiter = out._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self.reading and result.kind is not _PARTIAL and self.replies.open_slots == 0:
            out.end()

    async def read(self, requests: AsyncIterator[pb.ProcessRequest]) -> None:
        scheduler = self.scheduler
        window = self.window
        replies = self.replies
        try_submit = scheduler.try_submit
        try_submit_many = scheduler.try_submit_many
        trace = self.trace
        messages: Sequence[pb.Packet]
        try:
            async for request in requests:
                if request.packets:
                    self.coalesce = True
                    messages = list(request.packets)
                    if request.HasField("packet"):
                        messages.insert(0, request.packet)
                    if window.try_acquire(len(messages)):
                        # The usual coalesced request: places for all its packets are free,
                        # so its jobs are made in one loop and queued in one step.
                        jobs = self._jobs(messages)
                        taken = try_submit_many(jobs)
                        if taken < len(jobs):
                            await self._submit_each(jobs, taken)
                        continue
                    held = 0  # one by one, waiting for places as needed
                elif request.HasField("packet"):
                    messages = (request.packet,)
                    held = 1 if window.try_acquire() else 0
                else:
                    await window.acquire()
                    replies.slot("", 0)(
                        Result(
                            Kind.ERROR,
                            error=InvalidPacket(
                                "ProcessRequest carries no packet: set `packet` or `packets`", stage="decode"
                            ),
                        )
                    )
                    continue
                taken = 0
                stream_deadline = self.deadline
                for msg in messages:
                    if held:
                        held -= 1
                    elif not window.try_acquire():
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
                    if try_submit(job):
                        continue
                    try:
                        await scheduler.submit(job)
                    except asyncio.CancelledError:
                        # Stopped while the queue was full: the packet was taken, so answer it.
                        scheduler.answer(job, _draining())
                        self._refuse(messages[taken:])
                        raise
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
            jobs.append(Job(packet, slot(packet.session_id, packet.seq_no), now, deadline, None, "grpc", trace))
        return jobs

    async def _submit_each(self, jobs: list[Job], start: int) -> None:
        """Queue ``jobs[start:]`` one by one, waiting while the queue is full (``try_submit_many`` took the rest)."""
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

    def _refuse(self, messages: Sequence[pb.Packet]) -> None:
        """Answer packets read but never handed to the scheduler (the stream stopped)."""
        for msg in messages:
            self.replies.slot(msg.session_id, msg.seq_no)(_draining())

    def stop_reading(self) -> None:
        """Read no more packets (drain); the stream ends once every read packet is answered."""
        if self.reader is not None and not self.reader.done():
            self.stopping = True
            self.reader.cancel()


def _deadline(wall_clock: float, stream_deadline: float, now: float) -> float:
    """A packet's own (wall-clock) deadline as ``time.monotonic()`` time, the stream's if that
    comes first (0: the stream has none). Only called for packets that carry a deadline."""
    own = now + (wall_clock - time.time())
    return min(stream_deadline, own) if stream_deadline else own


def _draining() -> Result:
    """The answer for a packet read and not run: the stream stopped reading (drain)."""
    return Result(Kind.ERROR, error=Unavailable("block is draining; retry on another instance", stage="queue"))


def _fill_results(add: Any, items: Sequence[tuple[str, int, Result]]) -> list[Result] | None:
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


def trace_metadata(metadata: Any) -> dict[str, str] | None:
    """The W3C trace context (``traceparent``, ``tracestate``) a caller sent as gRPC metadata."""
    found = {k: v for k, v in metadata or () if k in ("traceparent", "tracestate") and isinstance(v, str)}
    return found if "traceparent" in found else None


def abort_code(exc: BaseException) -> grpc.StatusCode:
    """The status code an RPC ends with for ``exc``."""
    return status_of(exc)[0]
