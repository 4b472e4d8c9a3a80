"""``AsyncBlockClient``: the asyncio client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import grpc
from aios.block.v1 import block_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2_grpc

from aios_grpc_client._types import (
    DEFAULT_COALESCE,
    DEFAULT_MAX_PENDING,
    END,
    Metadata,
    PacketLike,
    Result,
    async_requests_of,
    async_to_packets,
    async_window_requests,
    channel_options,
    health_request,
    info_of,
    management_request,
    management_result,
    packet_requests,
    parameters_of,
    parameters_request,
    pb,
    results_of,
    send_item,
    status_name,
)

_CLOSE = object()


class AsyncBlockClient:
    """An asyncio client for one block instance at ``target`` (``host:port``)."""

    def __init__(
        self,
        target: str,
        *,
        channel: grpc.aio.Channel | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.target = target
        self.channel = channel or grpc.aio.insecure_channel(target, options=channel_options(max_message_bytes))
        self.metadata: Metadata = tuple(metadata or ())
        # The generated stub's typing describes a blocking channel; on an aio channel its
        # calls return awaitables and async iterators, so it is typed loosely here.
        self._stub: Any = pb_grpc.BlockServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    async def __aenter__(self) -> AsyncBlockClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close(None)

    async def process(
        self,
        packets: Iterable[PacketLike] | AsyncIterable[PacketLike],
        *,
        session_id: str = "session",
        first_seq_no: int = 1,
        coalesce: int = 0,
        coalesce_window_s: float = 0.0,
        timeout: float | None = None,
    ) -> AsyncIterator[Result]:
        """Send ``packets`` on one Process stream; yield every result as it comes.

        ``coalesce=N`` sends up to N packets per request message; ``coalesce_window_s=W``
        sends the packets produced within W seconds of each other in one request (at
        most ``coalesce``, 256 by default).
        """
        feeder: asyncio.Task[None] | None = None
        if not isinstance(packets, AsyncIterable):
            # Produced on the event loop's own thread, a plain iterable never lets the loop
            # run between two items, so its window is timed between items as they come;
            # no queue and no feeder task per stream.
            requests: Any = packet_requests(packets, session_id, first_seq_no, coalesce, coalesce_window_s)
        elif coalesce_window_s > 0:
            limit = coalesce if coalesce > 1 else DEFAULT_COALESCE
            source: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * limit)
            feeder = asyncio.create_task(self._feed(packets, session_id, first_seq_no, source))
            requests = async_window_requests(source, coalesce, coalesce_window_s)
        else:
            requests = async_requests_of(async_to_packets(packets, session_id, first_seq_no), coalesce)
        try:
            call = self._stub.Process(requests, timeout=timeout, metadata=self.metadata)
            async for response in call:
                for result in results_of(response):
                    yield result
        finally:
            if feeder is not None:
                feeder.cancel()

    @staticmethod
    async def _feed(
        packets: AsyncIterable[PacketLike], session_id: str, first_seq_no: int, target: asyncio.Queue[Any]
    ) -> None:
        async for packet in async_to_packets(packets, session_id, first_seq_no):
            try:
                # The usual case: room in the queue, so no await at all.
                target.put_nowait(packet)
            except asyncio.QueueFull:
                await target.put(packet)
        await target.put(END)

    async def run(
        self, data: Any, *, session_id: str = "session", seq_no: int = 1, timeout: float | None = None
    ) -> Result:
        """Process one input and return its terminal result."""
        async for result in self.process([data], session_id=session_id, first_seq_no=seq_no, timeout=timeout):
            if result.terminal:
                return result
        raise RuntimeError("stream ended without a terminal result")

    def stream(
        self,
        *,
        timeout: float | None = None,
        coalesce: int = 0,
        coalesce_window_s: float = 0.0,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> AsyncProcessStream:
        """An open Process stream to ``send`` packets on and read ``results`` from.

        With ``coalesce_window_s=W``, packets sent within W seconds of each other go in
        one request message (at most ``coalesce``, 256 by default). ``send`` waits while
        ``max_pending`` packets are queued unsent (the server is behind): read
        ``results()`` in another task when sending more than that.
        """
        return AsyncProcessStream(self._stub, self.metadata, timeout, coalesce, coalesce_window_s, max_pending)

    async def set_parameters(self, parameters: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Apply parameters; returns ``{"applied": {...}, "parameters": {...}}``."""
        request = parameters_request(parameters)
        return parameters_of(await self._stub.SetParameters(request, timeout=timeout, metadata=self.metadata))

    async def management(
        self, action: str, data: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run a management action; returns what the block returned."""
        request = management_request(action, data)
        return management_result(await self._stub.Management(request, timeout=timeout, metadata=self.metadata))

    async def get_info(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Block id, instance id, SDK version, muxer and batcher settings, parameters."""
        return info_of(await self._stub.GetInfo(pb.GetInfoRequest(), timeout=timeout, metadata=self.metadata))

    async def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """The health status name (``"SERVING"``, ``"NOT_SERVING"``, ...)."""
        return status_name(await self._health.Check(health_request(service), timeout=timeout))


class AsyncProcessStream:
    """An open Process stream: ``await send(...)``, iterate ``results()``, then ``close``."""

    def __init__(
        self,
        stub: Any,
        metadata: Metadata,
        timeout: float | None,
        coalesce: int = 0,
        coalesce_window_s: float = 0.0,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        # Bounded, so that a sender faster than the server waits in send() (flow control).
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(1, max_pending))
        self._window = coalesce_window_s > 0
        requests = async_window_requests(self._queue, coalesce, coalesce_window_s) if self._window else self._requests()
        self._call = stub.Process(requests, timeout=timeout, metadata=metadata)
        self._closed = False

    async def _requests(self) -> AsyncIterator[pb.ProcessRequest]:
        while True:
            item = await self._queue.get()
            if item is _CLOSE:
                return
            yield item

    async def _put(self, item: Any) -> bool:
        """Queue ``item``, waiting while the queue is full; False when the stream ended."""
        try:
            # The usual case: room in the queue, so no timer and no task per packet.
            self._queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            pass
        while True:
            try:
                async with asyncio.timeout(0.1):
                    await self._queue.put(item)
                return True
            except TimeoutError:
                if self._call.done():
                    return False

    async def send(self, packet: pb.Packet | list[pb.Packet]) -> None:
        """Send one packet, or several in one request message; waits while the server is behind."""
        if self._closed:
            raise RuntimeError("stream is closed for sending")
        if not await self._put(send_item(packet, self._window)):
            raise RuntimeError("stream has ended; read results() for why")

    async def close(self) -> None:
        """Half-close: results keep coming until every packet is answered."""
        if not self._closed:
            self._closed = True
            await self._put(END if self._window else _CLOSE)

    def cancel(self) -> None:
        """Abandon the stream."""
        self._closed = True
        self._call.cancel()

    async def results(self) -> AsyncIterator[Result]:
        """Results as they arrive, until the server ends the stream."""
        async for response in self._call:
            for result in results_of(response):
                yield result
