"""``BlockClient``: the blocking client."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from aios_block_stubs.v1 import block_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2_grpc

from aios_grpc_client._security import Pem, make_channel, ssl_credentials, with_token
from aios_grpc_client._types import (
    DEFAULT_COALESCE,
    DEFAULT_MAX_PENDING,
    END,
    Metadata,
    PacketLike,
    Result,
    channel_options,
    feed_thread,
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
    to_packets,
    window_requests,
)

_CLOSE = object()


class BlockClient:
    """A blocking client for one block instance at ``target`` (``host:port``).

    ``metadata`` is sent with every call; ``token="..."`` adds ``authorization: Bearer ...``.
    TLS: ``root_certificates`` (the server's CA; ``tls=True`` alone uses the system's),
    ``certificate_chain`` + ``private_key`` for mutual TLS; each PEM bytes or a file path.
    """

    def __init__(
        self,
        target: str,
        *,
        channel: grpc.Channel | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        max_message_bytes: int = 16 * 1024 * 1024,
        token: str | None = None,
        tls: bool = False,
        root_certificates: Pem | None = None,
        certificate_chain: Pem | None = None,
        private_key: Pem | None = None,
    ) -> None:
        self.target = target
        credentials = ssl_credentials(tls, root_certificates, certificate_chain, private_key)
        self.channel = channel or make_channel(target, channel_options(max_message_bytes), credentials, aio=False)
        self.metadata: Metadata = with_token(metadata, token)
        self._stub = pb_grpc.BlockServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> BlockClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def process(
        self,
        packets: Iterable[PacketLike],
        *,
        session_id: str = "session",
        first_seq_no: int = 1,
        coalesce: int = 0,
        coalesce_window_s: float = 0.0,
        timeout: float | None = None,
    ) -> Iterator[Result]:
        """Send ``packets`` on one Process stream; yield every result as it comes.

        Items may be ``Packet`` messages or JSON-able values (sent with ``session_id``
        and seq_no counting from ``first_seq_no``). ``coalesce=N`` sends up to N packets
        per request message, which raises throughput for small packets.
        ``coalesce_window_s=W`` sends the packets produced within W seconds of each
        other in one request (at most ``coalesce``, 256 by default), so a slow producer
        is not held back waiting for N packets.
        """
        stop = threading.Event()
        if coalesce_window_s > 0:
            limit = coalesce if coalesce > 1 else DEFAULT_COALESCE
            source: queue.Queue[Any] = queue.Queue(maxsize=2 * limit)
            feed_thread(to_packets(packets, session_id, first_seq_no), source, stop)
            requests = window_requests(source, coalesce, coalesce_window_s)
        else:
            requests = packet_requests(packets, session_id, first_seq_no, coalesce)
        try:
            responses = self._stub.Process(requests, timeout=timeout, metadata=self.metadata)
            for response in responses:
                yield from results_of(response)
        finally:
            stop.set()

    def run(self, data: Any, *, session_id: str = "session", seq_no: int = 1, timeout: float | None = None) -> Result:
        """Process one input and return its terminal result."""
        for result in self.process([data], session_id=session_id, first_seq_no=seq_no, timeout=timeout):
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
    ) -> ProcessStream:
        """An open Process stream to ``send`` packets on and read ``results`` from.

        With ``coalesce_window_s=W``, packets sent within W seconds of each other go in
        one request message (at most ``coalesce``, 256 by default). ``send`` waits while
        ``max_pending`` packets are queued unsent (the server is behind): read
        ``results()`` in another thread when sending more than that.
        """
        return ProcessStream(self._stub, self.metadata, timeout, coalesce, coalesce_window_s, max_pending)

    def set_parameters(self, parameters: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Apply parameters; returns ``{"applied": {...}, "parameters": {...}}``."""
        request = parameters_request(parameters)
        return parameters_of(self._stub.SetParameters(request, timeout=timeout, metadata=self.metadata))

    def management(self, action: str, data: Mapping[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Run a management action; returns what the block returned."""
        request = management_request(action, data)
        return management_result(self._stub.Management(request, timeout=timeout, metadata=self.metadata))

    def get_info(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Block id, instance id, SDK version, muxer and batcher settings, parameters."""
        return info_of(self._stub.GetInfo(pb.GetInfoRequest(), timeout=timeout, metadata=self.metadata))

    def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """The health status name (``"SERVING"``, ``"NOT_SERVING"``, ...)."""
        return status_name(self._health.Check(health_request(service), timeout=timeout))

    def wait_until_serving(self, timeout: float = 30.0, service: str = "") -> None:
        """Block until health is SERVING; TimeoutError after ``timeout`` seconds."""
        import time

        end = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < end:
            try:
                last = self.health(service, timeout=max(0.1, min(2.0, end - time.monotonic())))
                if last == "SERVING":
                    return
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            time.sleep(0.05)
        raise TimeoutError(f"{self.target} not SERVING after {timeout}s (last: {last})")


class ProcessStream:
    """An open Process stream: ``send`` packets, iterate ``results()``, then ``close``."""

    def __init__(
        self,
        stub: pb_grpc.BlockServiceStub,
        metadata: Metadata,
        timeout: float | None,
        coalesce: int = 0,
        coalesce_window_s: float = 0.0,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        # Bounded, so that a sender faster than the server waits in send() (flow control)
        # instead of buffering without limit here.
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, max_pending))
        self._closed = threading.Event()
        self._window = coalesce_window_s > 0
        requests = window_requests(self._queue, coalesce, coalesce_window_s) if self._window else self._requests()
        self._responses: Any = stub.Process(requests, timeout=timeout, metadata=metadata)

    def _requests(self) -> Iterator[pb.ProcessRequest]:
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                return
            yield item

    def _put(self, item: Any) -> bool:
        """Queue ``item``, waiting while the queue is full; False when the stream ended."""
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._responses.done():
                    return False

    def send(self, packet: pb.Packet | list[pb.Packet]) -> None:
        """Send one packet, or several in one request message; waits while the server is behind."""
        if self._closed.is_set():
            raise RuntimeError("stream is closed for sending")
        if not self._put(send_item(packet, self._window)):
            raise RuntimeError("stream has ended; read results() for why")

    def close(self) -> None:
        """Half-close: no more packets; results keep coming until every packet is answered."""
        if not self._closed.is_set():
            self._closed.set()
            self._put(END if self._window else _CLOSE)

    def cancel(self) -> None:
        """Abandon the stream."""
        self._closed.set()
        self._responses.cancel()
        # The request iterator may be waiting for an item: end it, making room if need be.
        while True:
            try:
                self._queue.put_nowait(END if self._window else _CLOSE)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def results(self) -> Iterator[Result]:
        """Results as they arrive, until the server ends the stream."""
        for response in self._responses:
            yield from results_of(response)
