"""``BlockServicer``: the thin gRPC face of the scheduler and the control plane.

Only the RPC methods: it converts protobuf to the SDK's types and back and hands work
to the runtime. One ``Process`` stream (its reader, window, outbox and writer) is a
``Stream`` in ``service/stream.py``: per stream it bounds the unanswered packets (past
the bound it stops reading, so HTTP/2 flow control slows the sender) and releases each
session's results in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from aios_grpc._pb import pb, pb_grpc
from aios_grpc._text import cut, quote
from aios_grpc.converters import dict_to_struct, struct_to_dict, to_value
from aios_grpc.errors import AiosError, status_of
from aios_grpc.json_depth import depth_of, too_deep_message
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.control import ControlPlane
from aios_grpc.service.decode import Refused
from aios_grpc.service.stream import ResultSizes, Stream, StreamLimits

log = logging.getLogger("aios_grpc.service")


Response = TypeVar("Response")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]]


def _timed(rpc: str) -> Callable[[Handler[Response]], Handler[Response]]:
    """Count and time a control-plane RPC (``Telemetry.control_done``) with the code it ended with."""

    def wrap(method: Handler[Response]) -> Handler[Response]:
        @functools.wraps(method)
        async def timed(self: BlockServicer, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Response:
            start = time.perf_counter()
            code = "OK"
            try:
                return await method(self, request, context)
            except BaseException:
                # context.abort raised: the code it set; anything else ends the call UNKNOWN.
                found = context.code()
                code = found.name if isinstance(found, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                scheduler = self.scheduler
                if scheduler is not None:  # calls refused while the block starts are not counted
                    scheduler.telemetry.control_done(rpc, code, time.perf_counter() - start)

        return timed

    return wrap


class BlockServicer(pb_grpc.BlockServiceServicer):
    """Implements ``aios.block.v1.BlockService``; ready once ``attach`` was called."""

    def __init__(self, stream_max_in_flight: int, limits: StreamLimits | None = None) -> None:
        self.scheduler: Scheduler | None = None
        self.limits = limits or StreamLimits()
        self.result_sizes = ResultSizes()  # shared by its streams (the byte bound)
        self.control: ControlPlane | None = None
        self.ready = asyncio.Event()
        self.stream_max_in_flight = stream_max_in_flight
        self.open_streams = 0
        self._streams: set[Stream] = set()
        self._all_closed = asyncio.Event()  # set when the last open stream ends

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
        """One data stream: packets in, results out (``service/stream.py`` is its body)."""
        scheduler = await self._scheduler()
        if not scheduler.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "block is draining; retry on another instance")
        if self.open_streams >= self.limits.max_streams:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.open_streams} Process streams are open, the most this instance takes"
                " (AIOS_MAX_STREAMS); retry later or on another instance",
            )
        stream = Stream(
            scheduler,
            self.stream_max_in_flight,
            context.time_remaining(),
            trace_metadata(context.invocation_metadata()),
            self.limits,
            self.result_sizes,
        )
        self.open_streams += 1
        self._streams.add(stream)
        responses = stream.responses(request_iterator)
        try:
            async for response in responses:
                yield response
            if stream.status is not None:
                # Every packet read is answered: now end with the refusal or the drain's status.
                await context.abort(*stream.status)
        finally:
            self.open_streams -= 1
            self._streams.discard(stream)
            if not self._streams:
                self._all_closed.set()
            # A response not written (the caller is gone) is dropped there; the reader stops.
            await responses.aclose()

    def end_streams(self, abandon: bool = False) -> None:
        """Drain: stop reading every open stream; each ends once its packets are answered.

        With ``abandon`` (the grace period is over) each ends once the answers already made
        are written, UNAVAILABLE naming how many of its packets are unanswered.
        """
        for stream in list(self._streams):
            if abandon:
                stream.abandon()
            else:
                stream.stop_reading()

    async def streams_closed(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every Process stream to end; whether they all did."""
        if self._streams:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
        return not self._streams

    # -- control plane ---------------------------------------------------------------

    @_timed("SetParameters")
    async def SetParameters(
        self, request: pb.SetParametersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SetParametersResponse:
        control = await self._control(context)
        params = await self._dict_of(request, "parameters", control, context)
        try:
            applied, current = await control.set_parameters(params)
        except AiosError as exc:
            await context.abort(exc.code, str(exc))
        response = pb.SetParametersResponse(applied=dict_to_struct(applied), parameters=dict_to_struct(current))
        if response.ByteSize() > self.limits.max_message_bytes:
            # Parameters stored before the limits (AIOS_BLOCK_INIT_PARAMETERS) may be larger.
            response.parameters.CopyFrom(_omitted(response.parameters.ByteSize(), self.limits.max_message_bytes))
        return response

    @_timed("Management")
    async def Management(
        self, request: pb.ManagementRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ManagementResponse:
        control = await self._control(context)
        data = await self._dict_of(request, "data", control, context)
        try:
            result = await control.management(request.action, data)
        except AiosError as exc:
            await context.abort(exc.code, cut(str(exc)))  # a block's message may echo the caller's action
        except Exception as exc:
            await context.abort(
                grpc.StatusCode.INTERNAL, cut(f"management({quote(request.action)}) raised {type(exc).__name__}: {exc}")
            )
        response = pb.ManagementResponse(result=to_value(result))
        size = response.ByteSize()
        if size > self.limits.max_message_bytes:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the management result is {size} bytes, over the message limit of "
                f"{self.limits.max_message_bytes} bytes (AIOS_MAX_MESSAGE_BYTES)",
            )
        return response

    @_timed("GetInfo")
    async def GetInfo(
        self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetInfoResponse:
        control = await self._control(context)
        if isinstance(request, Refused):
            await context.abort(request.code, request.message)
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
            parameters=self._parameters_within_limit(info["parameters"]),
            # JSON Schemas of declared types (runtime/typed.py); unset when none is declared.
            parameters_schema=dict_to_struct(info["parameters_schema"]) if "parameters_schema" in info else None,
            input_schema=dict_to_struct(info["input_schema"]) if "input_schema" in info else None,
        )

    def _parameters_within_limit(self, parameters: dict[str, Any]) -> Any:
        """The parameters as a Struct, or a note saying they were left out when they would break the limit.

        GetInfo always answers: the other fields are small, the parameters are not bounded
        when they were set before the limits applied (AIOS_BLOCK_INIT_PARAMETERS).
        """
        struct = dict_to_struct(parameters)
        size = struct.ByteSize()
        limit = self.limits.max_message_bytes
        return struct if size <= limit - 4096 else _omitted(size, limit)

    async def _dict_of(
        self, request: Any, field: str, control: ControlPlane, context: grpc.aio.ServicerContext[Any, Any]
    ) -> dict[str, Any]:
        """The ``Struct`` field of a control-plane request as a dict; the call ends when the request
        was not parsed (service/decode.py) or nests deeper than AIOS_MAX_JSON_DEPTH."""
        if isinstance(request, Refused):
            await context.abort(request.code, request.message)
        depth = control.scheduler.settings.max_json_depth
        value: dict[str, Any] = {}
        try:
            value = struct_to_dict(getattr(request, field))
            too_deep = depth_of(value, depth) > depth
        except RecursionError:
            too_deep = True
        if too_deep:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, too_deep_message(f"`{field}`", depth))
        return value


def _omitted(size: int, limit: int) -> Any:
    """The Struct sent instead of parameters too large for a response."""
    return dict_to_struct(
        {"aios.omitted": f"the parameters are {size} bytes, too many for a response of at most {limit} bytes"}
    )


def trace_metadata(metadata: Any) -> dict[str, str] | None:
    """The W3C trace context (``traceparent``, ``tracestate``) a caller sent as gRPC metadata."""
    found = {k: v for k, v in metadata or () if k in ("traceparent", "tracestate") and isinstance(v, str)}
    return found if "traceparent" in found else None


def abort_code(exc: BaseException) -> grpc.StatusCode:
    """The status code an RPC ends with for ``exc``."""
    return status_of(exc)[0]
