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
from collections.abc import AsyncIterator
from typing import Any

import grpc

from aios_grpc._pb import pb, pb_grpc
from aios_grpc.control import ControlPlane
from aios_grpc.converters import (
    dict_to_struct,
    error_to_proto,
    packet_from_proto,
    packet_to_proto,
    struct_to_dict,
    to_value,
)
from aios_grpc.errors import AiosError, InvalidPacket, status_of
from aios_grpc.scheduler import Job, Kind, OrderedReplies, Result, Scheduler

log = logging.getLogger("aios_grpc.service")

_END = object()
_MAX_RESULTS_PER_RESPONSE = 256


class BlockServicer(pb_grpc.BlockServiceServicer):
    """Implements ``aios.block.v1.BlockService``; ready once ``attach`` was called."""

    def __init__(self, stream_max_in_flight: int) -> None:
        self.scheduler: Scheduler | None = None
        self.control: ControlPlane | None = None
        self.ready = asyncio.Event()
        self.stream_max_in_flight = stream_max_in_flight
        self.open_streams = 0

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

    async def Process(  # noqa: N802 - the RPC's name
        self,
        request_iterator: AsyncIterator[pb.ProcessRequest],
        context: grpc.aio.ServicerContext[pb.ProcessRequest, pb.ProcessResponse],
    ) -> AsyncIterator[pb.ProcessResponse]:
        scheduler = await self._scheduler()
        out: asyncio.Queue[Any] = asyncio.Queue()
        stream = _Stream(scheduler, out, self.stream_max_in_flight, context.time_remaining())
        reader = asyncio.create_task(stream.read(request_iterator))
        self.open_streams += 1
        try:
            while True:
                item = await out.get()
                if item is _END:
                    break
                if not stream.coalesce:
                    yield pb.ProcessResponse(result=item)
                    continue
                results = [item]
                end = False
                while len(results) < _MAX_RESULTS_PER_RESPONSE and not out.empty():
                    more = out.get_nowait()
                    if more is _END:
                        end = True
                        break
                    results.append(more)
                yield pb.ProcessResponse(results=results)
                if end:
                    break
            await reader
        finally:
            self.open_streams -= 1
            stream.closed = True
            if not reader.done():
                reader.cancel()

    # -- control plane ---------------------------------------------------------------

    async def SetParameters(  # noqa: N802
        self, request: pb.SetParametersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SetParametersResponse:
        control = await self._control(context)
        try:
            applied, current = await control.set_parameters(struct_to_dict(request.parameters))
        except AiosError as exc:
            await context.abort(exc.code, str(exc))
        return pb.SetParametersResponse(applied=dict_to_struct(applied), parameters=dict_to_struct(current))

    async def Management(  # noqa: N802
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

    async def GetInfo(  # noqa: N802
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


class _Stream:
    """One Process stream: reads packets, bounds those unanswered, orders the results."""

    def __init__(
        self,
        scheduler: Scheduler,
        out: asyncio.Queue[Any],
        max_in_flight: int,
        time_remaining: float | None,
    ) -> None:
        self.scheduler = scheduler
        self.out = out
        self.replies = OrderedReplies(self._emit)
        self.window = asyncio.Semaphore(max_in_flight)
        self.coalesce = False
        self.closed = False
        self.reading = True
        self.deadline = time.monotonic() + time_remaining if time_remaining else 0.0

    def _emit(self, session_id: str, seq_no: int, result: Result) -> None:
        msg = pb.PacketResult(session_id=session_id, seq_no=seq_no, kind=result.kind.value)
        if result.output is not None:
            msg.output.CopyFrom(packet_to_proto(result.output))
        if result.error is not None:
            msg.error.CopyFrom(error_to_proto(result.error))
        if result.terminal:
            self.window.release()
        if self.closed:
            return
        self.out.put_nowait(msg)
        if result.terminal and not self.reading and self.replies.open_slots == 0:
            self.out.put_nowait(_END)

    async def read(self, requests: AsyncIterator[pb.ProcessRequest]) -> None:
        scheduler = self.scheduler
        try:
            async for request in requests:
                if request.packets:
                    self.coalesce = True
                    messages = list(request.packets)
                    if request.HasField("packet"):
                        messages.insert(0, request.packet)
                elif request.HasField("packet"):
                    messages = [request.packet]
                else:
                    await self.window.acquire()
                    self.replies.slot("", 0)(Result(Kind.ERROR, error=InvalidPacket(
                        "ProcessRequest carries no packet: set `packet` or `packets`", stage="decode"
                    )))
                    continue
                for msg in messages:
                    await self.window.acquire()
                    packet = packet_from_proto(msg)
                    deadline = self.deadline
                    if packet.deadline:
                        # The packet's own deadline is wall-clock; turn it into monotonic time.
                        own = time.monotonic() + (packet.deadline - time.time())
                        deadline = min(deadline, own) if deadline else own
                    job = Job(packet, self.replies.slot(packet.session_id, packet.seq_no), deadline=deadline, source="grpc")
                    await scheduler.submit(job)
        finally:
            self.reading = False
            if self.replies.open_slots == 0:
                self.out.put_nowait(_END)


def abort_code(exc: BaseException) -> grpc.StatusCode:
    """The status code an RPC ends with for ``exc``."""
    return status_of(exc)[0]
