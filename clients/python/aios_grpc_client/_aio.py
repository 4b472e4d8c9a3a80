"""``AsyncBlockClient``: the asyncio client."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from aios_block_stubs.v1 import block_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2_grpc

from aios_grpc_client._endpoints import (
    Endpoint,
    EndpointLike,
    Picker,
    RetryPolicy,
    endpoints_of,
    lb_options,
    retryable_call_error,
)
from aios_grpc_client._resend import Flush, Ledger, Streams
from aios_grpc_client._security import Pem, make_channel, ssl_credentials, with_token
from aios_grpc_client._types import (
    _HEADS,
    DEFAULT_COALESCE,
    DEFAULT_MAX_PENDING,
    END,
    PACKET_TAG,
    PACKETS_TAG,
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
    request_head,
    results_of,
    status_name,
    to_packets,
)

_Packet = pb.Packet
_T = TypeVar("_T")


class _BytesStub:
    """``Process`` as a call whose requests are already serialized (bytes)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.Process = channel.stream_stream(
            "/aios.block.v1.BlockService/Process",
            request_serializer=None,
            response_deserializer=pb.ProcessResponse.FromString,
        )


class _AsyncConn:
    """One endpoint's channel and stubs, made on first use in the running loop.

    Made again when a later ``asyncio.run()`` calls from another loop: an aio channel
    belongs to the loop it was made in.
    """

    def __init__(self, endpoint: Endpoint, make: Callable[[str], grpc.aio.Channel], metadata: Metadata) -> None:
        self.endpoint = endpoint
        self.metadata = metadata
        self._make = make
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: grpc.aio.Channel | None = None
        # The generated stub's typing describes a blocking channel; on an aio channel its
        # calls return awaitables and async iterators, so it is typed loosely here.
        self._stub: Any = None
        # Process with requests the client serialized itself (bytes).
        self._bytes_stub: Any = None
        self._health: Any = None

    def ready(self) -> _AsyncConn:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._channel = self._make(self.endpoint.address)
            self._stub = pb_grpc.BlockServiceStub(self._channel)
            self._bytes_stub = _BytesStub(self._channel)
            self._health = health_pb2_grpc.HealthStub(self._channel)
        return self

    @property
    def channel(self) -> grpc.aio.Channel:
        self.ready()
        assert self._channel is not None
        return self._channel

    @property
    def stub(self) -> Any:
        return self.ready()._stub

    @property
    def bytes_stub(self) -> Any:
        return self.ready()._bytes_stub

    @property
    def health(self) -> Any:
        return self.ready()._health

    async def close(self) -> None:
        """Close the channel (if one was made in this loop)."""
        channel, self._channel, self._loop = self._channel, None, None
        if channel is not None:
            await channel.close(None)


async def _ledger_requests(packets: AsyncIterator[_Packet | Flush], coalesce: int) -> AsyncIterator[bytes]:
    """Serialized requests of a ledger's packets: one each, or up to ``coalesce`` until the ledger flushes."""
    if coalesce <= 1:
        async for packet in packets:
            if not isinstance(packet, Flush):
                body = packet.SerializeToString()
                yield request_head(PACKET_TAG, len(body)) + body
        return
    group: list[bytes] = []
    count = 0
    async for packet in packets:
        if isinstance(packet, Flush):
            if group:
                yield b"".join(group)
                group, count = [], 0
            continue
        body = packet.SerializeToString()
        group.append(request_head(PACKETS_TAG, len(body)))
        group.append(body)
        count += 1
        if count >= coalesce:
            yield b"".join(group)
            group, count = [], 0
    if group:
        yield b"".join(group)


async def _window_requests(
    packets: AsyncIterator[_Packet | Flush], coalesce: int, coalesce_window_s: float, tasks: list[asyncio.Task[None]]
) -> AsyncIterator[bytes]:
    """A ledger's packets in coalescing windows (a window closes on its own time: no flushes needed)."""
    limit = coalesce if coalesce > 1 else DEFAULT_COALESCE
    source: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * limit)

    async def feed() -> None:
        async for packet in packets:
            if not isinstance(packet, Flush):
                await source.put(packet)
        await source.put(END)

    tasks.append(asyncio.create_task(feed()))
    async for request in async_window_requests(source, coalesce, coalesce_window_s):
        yield request.SerializeToString()


class AsyncBlockClient:
    """An asyncio client for a block at ``target``: one ``host:port``, or several endpoints.

    Takes the same ``target`` (an address, an ``Endpoint``, a dict, or a list of those),
    ``policy``, retry, ``metadata``, ``token`` and TLS keywords as ``BlockClient``, and
    resends in ``process()`` and ``run()`` as it does.
    """

    def __init__(
        self,
        target: EndpointLike | Sequence[EndpointLike],
        *,
        channel: grpc.aio.Channel | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        max_message_bytes: int = 16 * 1024 * 1024,
        token: str | None = None,
        tls: bool = False,
        root_certificates: Pem | None = None,
        certificate_chain: Pem | None = None,
        private_key: Pem | None = None,
        policy: str = "failover",
        retries: int = 3,
        retry_backoff_s: float = 0.05,
        retry_max_backoff_s: float = 2.0,
        retry_timeout_s: float = 30.0,
    ) -> None:
        self.endpoints = endpoints_of(target)
        self.picker = Picker(self.endpoints, policy)
        self.retry = RetryPolicy(retries, retry_backoff_s, retry_max_backoff_s, retry_timeout_s)
        if channel is not None and len(self.endpoints) > 1:
            raise ValueError("channel= is for one endpoint; give several endpoints as addresses")
        self.target = self.endpoints[0].address
        credentials = ssl_credentials(tls, root_certificates, certificate_chain, private_key)
        options = channel_options(max_message_bytes) + lb_options(self.target, policy, len(self.endpoints))

        def make(address: str) -> grpc.aio.Channel:
            return channel or make_channel(address, options, credentials, aio=True)

        self._conns = [
            _AsyncConn(e, make, with_token(metadata, e.token if e.token is not None else token)) for e in self.endpoints
        ]
        self.metadata: Metadata = self._conns[0].metadata

    @property
    def channel(self) -> grpc.aio.Channel:
        """The first endpoint's channel of the running loop (made on first use)."""
        return self._conns[0].channel

    @property
    def _stub(self) -> Any:
        return self._conns[0].stub

    @property
    def _bytes_stub(self) -> Any:
        return self._conns[0].bytes_stub

    @property
    def _health(self) -> Any:
        return self._conns[0].health

    async def __aenter__(self) -> AsyncBlockClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels (those made in this loop)."""
        for conn in self._conns:
            await conn.close()

    async def _call(self, method: Callable[[_AsyncConn], Awaitable[_T]]) -> _T:
        """A unary call on the policy's endpoint, tried again on the next while retryable."""
        order = self.picker.order()
        start = time.monotonic()
        attempt = 0
        while True:
            index = order[attempt % len(order)]
            try:
                out = await method(self._conns[index].ready())
            except grpc.RpcError as exc:
                attempt += 1
                if not retryable_call_error(exc) or not self.retry.allows(attempt, start, time.monotonic()):
                    raise
                self.picker.failed(index)
                if attempt >= len(order):
                    await asyncio.sleep(self.retry.delay(attempt - len(order) + 1))
                continue
            self.picker.worked(index)
            return out

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
        """Send ``packets`` on a Process stream; yield every result as it comes.

        ``coalesce=N`` sends up to N packets per request message; ``coalesce_window_s=W``
        sends the packets produced within W seconds of each other in one request (at
        most ``coalesce``, 256 by default).

        With retries on (the default) packets are resent as ``BlockClient.process``
        resends them, with the same guarantee (one terminal result per packet) and the
        same errors (the last stream's ``grpc.RpcError``, or ``Unanswered``). With
        ``retries=0`` and one endpoint it is one stream, nothing resent.
        """
        if self.retry.retries == 0 and len(self._conns) == 1:
            async for result in self._process_once(
                packets, session_id, first_seq_no, coalesce, coalesce_window_s, timeout
            ):
                yield result
            return
        if isinstance(packets, AsyncIterable):
            ledger = Ledger(
                iter(()),
                self.retry,
                move_on_retryable=self.picker.policy == "failover" and len(self._conns) > 1,
                async_source=async_to_packets(packets, session_id, first_seq_no),
            )
        else:
            ledger = Ledger(
                to_packets(packets, session_id, first_seq_no),
                self.retry,
                move_on_retryable=self.picker.policy == "failover" and len(self._conns) > 1,
            )
        streams = Streams(ledger, self.picker, self.retry)
        try:
            while True:
                conn = self._conns[streams.index].ready()
                stream = streams.begin()
                tasks: list[asyncio.Task[None]] = []
                broken: grpc.RpcError | None = None
                if coalesce_window_s > 0:
                    requests = _window_requests(ledger.async_packets(stream), coalesce, coalesce_window_s, tasks)
                else:
                    requests = _ledger_requests(ledger.async_packets(stream), coalesce)
                call = conn.bytes_stub.Process(requests, timeout=timeout, metadata=conn.metadata)
                try:
                    async for response in call:
                        for result in results_of(response):
                            seen = ledger.take(result)
                            if seen is not None:
                                yield seen
                except grpc.RpcError as exc:
                    if not retryable_call_error(exc):
                        raise
                    broken = exc
                finally:
                    if not call.done():
                        call.cancel()
                    for task in tasks:
                        task.cancel()
                if streams.ended(broken):
                    return
                if streams.backoff is not None:
                    await asyncio.sleep(streams.backoff)
        finally:
            ledger.stop()

    async def _process_once(
        self,
        packets: Iterable[PacketLike] | AsyncIterable[PacketLike],
        session_id: str,
        first_seq_no: int,
        coalesce: int,
        coalesce_window_s: float,
        timeout: float | None,
    ) -> AsyncIterator[Result]:
        """One stream to the one endpoint, nothing resent (``retries=0``)."""
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
        """Process one input and return its terminal result, with its partial results in ``partials``."""
        partials: list[Result] = []
        async for result in self.process([data], session_id=session_id, first_seq_no=seq_no, timeout=timeout):
            if result.terminal:
                return result.with_partials(partials) if partials else result
            partials.append(result)
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
        conn = self._conns[self.picker.order()[0]].ready()
        return AsyncProcessStream(conn.bytes_stub, conn.metadata, timeout, coalesce, coalesce_window_s, max_pending)

    async def set_parameters(self, parameters: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Apply parameters; returns ``{"applied": {...}, "parameters": {...}}``."""
        request = parameters_request(parameters)
        return parameters_of(
            await self._call(lambda c: c.stub.SetParameters(request, timeout=timeout, metadata=c.metadata))
        )

    async def management(
        self, action: str, data: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run a management action; returns what the block returned."""
        request = management_request(action, data)
        return management_result(
            await self._call(lambda c: c.stub.Management(request, timeout=timeout, metadata=c.metadata))
        )

    async def get_info(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Block id, instance id, SDK version, muxer and batcher settings, parameters."""
        request = pb.GetInfoRequest()
        return info_of(await self._call(lambda c: c.stub.GetInfo(request, timeout=timeout, metadata=c.metadata)))

    async def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """The health status name (``"SERVING"``, ``"NOT_SERVING"``, ...)."""
        request = health_request(service)
        return status_name(await self._call(lambda c: c.health.Check(request, timeout=timeout)))


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
        # ``stub.Process`` takes serialized requests (bytes): send() serializes each packet
        # once, and a request is its packets' bytes joined (see request_head).
        self._window_s = coalesce_window_s
        # The open group holds a head and a body per packet; it becomes a request at this length.
        self._limit = (coalesce if coalesce > 1 else DEFAULT_COALESCE) if coalesce_window_s > 0 else 1
        self._group_len = 2 * self._limit
        # Without a window each packet goes alone, in the request's ``packet`` field as ever.
        self._tag = PACKETS_TAG if coalesce_window_s > 0 else PACKET_TAG
        self._heads = _HEADS[self._tag]
        self._group: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        # Requests to write as (bytes, packets, whether a later window may join it), END
        # last; taken by _requests().
        self._ready: deque[Any] = deque()
        self._reader: asyncio.Future[None] | None = None
        # Packets sent but not yet handed to gRPC: send() waits while max_pending are (flow control).
        self._pending = 0
        self._max_pending = max(1, max_pending)
        self._room: list[asyncio.Future[None]] = []
        self._closed = False
        self._call = stub.Process(self._requests(), timeout=timeout, metadata=metadata)

    async def _requests(self) -> AsyncIterator[bytes]:
        ready = self._ready
        while True:
            while not ready:
                self._reader = reader = asyncio.get_running_loop().create_future()
                await reader
            item = ready.popleft()
            if item is END:
                return
            request, count, _ = item
            self._pending -= count
            if self._room:
                self._make_room()
            yield request

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None:
            self._reader = None
            if not reader.done():
                reader.set_result(None)

    def _end_group(self) -> None:
        """The open group becomes a request, ready to write."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group = self._group
        if not group:
            return
        self._group = []
        count = len(group) >> 1
        ready = self._ready
        if ready and ready[-1] is not END and ready[-1][2] and ready[-1][1] + count <= self._limit:
            # gRPC has not taken the window before yet (it is still writing an earlier
            # request): one request of both, as a window that waited for the writer would be.
            before, before_count, _ = ready.pop()
            ready.append((before + b"".join(group), before_count + count, True))
        else:
            ready.append((b"".join(group), count, self._tag == PACKETS_TAG))
            self._wake_reader()

    def _window_over(self) -> None:
        self._timer = None
        self._end_group()

    def _make_room(self) -> None:
        if self._pending < self._max_pending:
            for waiter in self._room:
                if not waiter.done():
                    waiter.set_result(None)
            self._room.clear()

    async def _wait_for_room(self) -> bool:
        """Wait while ``max_pending`` packets are unsent; False when the stream ended meanwhile."""
        while self._pending >= self._max_pending:
            if self._call.done():
                return False
            waiter = asyncio.get_running_loop().create_future()
            self._room.append(waiter)
            try:
                # The call may end without a request taken: look again every 0.1 s.
                async with asyncio.timeout(0.1):
                    await waiter
            except TimeoutError:
                pass
            finally:
                if waiter in self._room:
                    self._room.remove(waiter)
        return True

    async def send(self, packet: pb.Packet | list[pb.Packet]) -> None:
        """Send one packet, or several in one request message; waits while the server is behind."""
        if self._closed:
            raise RuntimeError("stream is closed for sending")
        if self._pending >= self._max_pending and not await self._wait_for_room():
            raise RuntimeError("stream has ended; read results() for why")
        if type(packet) is not _Packet:
            if isinstance(packet, list):
                # Its own request, as given, after the packets sent before it.
                request = pb.ProcessRequest(packets=packet).SerializeToString()
                self._end_group()
                self._ready.append((request, len(packet), False))
                self._pending += len(packet)
                self._wake_reader()
                return
            packet = pb.ProcessRequest(packet=packet).packet  # what a request would take, or its error
        # Serialized now: a packet changed after send() is sent as it was.
        body = packet.SerializeToString()
        size = len(body)
        group = self._group
        group.append(self._heads.get(size) or request_head(self._tag, size))
        group.append(body)
        self._pending += 1
        held = len(group)
        if held >= self._group_len:
            self._end_group()
        elif held == 2:
            # The group's first packet opens the window.
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + self._window_s, self._window_over)

    async def close(self) -> None:
        """Half-close: results keep coming until every packet is answered."""
        if not self._closed:
            self._closed = True
            self._end_group()
            self._ready.append(END)
            self._wake_reader()

    def cancel(self) -> None:
        """Abandon the stream."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._call.cancel()

    async def results(self) -> AsyncIterator[Result]:
        """Results as they arrive, until the server ends the stream."""
        async for response in self._call:
            for result in results_of(response):
                yield result
