"""``BlockClient``: the blocking client."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from aios_grpc_client._resend import Flush, Ledger, Streams, Unanswered
from aios_grpc_client._security import Pem, make_channel, ssl_credentials, with_token
from aios_grpc_client._types import (
    DEFAULT_COALESCE,
    DEFAULT_MAX_PENDING,
    END,
    PACKET_TAG,
    PACKETS_TAG,
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
    request_head,
    results_of,
    send_item,
    status_name,
    to_packets,
    window_requests,
)

_CLOSE = object()
_T = TypeVar("_T")


class _Conn:
    """One endpoint's channel and stubs, made on first use."""

    def __init__(self, endpoint: Endpoint, make: Callable[[str], grpc.Channel], metadata: Metadata) -> None:
        self.endpoint = endpoint
        self._make = make
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self.stub: pb_grpc.BlockServiceStub
        self.health: health_pb2_grpc.HealthStub
        self.process_bytes: Any
        self.metadata = metadata

    def channel(self) -> grpc.Channel:
        with self._lock:
            if self._channel is None:
                self._channel = self._make(self.endpoint.address)
                self.stub = pb_grpc.BlockServiceStub(self._channel)
                self.health = health_pb2_grpc.HealthStub(self._channel)
                # Process with requests the client serialized itself (bytes).
                self.process_bytes = self._channel.stream_stream(
                    "/aios.block.v1.BlockService/Process",
                    request_serializer=None,
                    response_deserializer=pb.ProcessResponse.FromString,
                )
            return self._channel

    def ready(self) -> _Conn:
        self.channel()
        return self

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()


def _ledger_requests(packets: Iterator[pb.Packet | Flush], coalesce: int) -> Iterator[bytes]:
    """Serialized requests of a ledger's packets: one each, or up to ``coalesce`` until the ledger flushes.

    Written as bytes (see ``request_head``): appending a packet to a ``ProcessRequest``
    copies it, which cost about a third of the client's time per packet.
    """
    if coalesce <= 1:
        for packet in packets:
            if not isinstance(packet, Flush):
                body = packet.SerializeToString()
                yield request_head(PACKET_TAG, len(body)) + body
        return
    group: list[bytes] = []
    count = 0
    for packet in packets:
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


class BlockClient:
    """A blocking client for a block at ``target``: one ``host:port``, or several endpoints.

    ``target`` is an address (any gRPC target: ``host:port``, ``dns:///name:port``), an
    ``Endpoint``, a dict ``{"address", "priority", "weight", "token"}``, or a list of
    those. ``policy="failover"`` (the default) calls the endpoint of the lowest
    ``priority`` and moves to the next when it fails; ``policy="round_robin"`` spreads
    calls in proportion to ``weight``; with one ``dns:///`` name it is gRPC's own
    round-robin over the addresses the name resolves to.

    Retries (on by default): a packet whose result is ``retryable`` (UNAVAILABLE,
    RESOURCE_EXHAUSTED or ABORTED, its deadline not passed), or that was unanswered
    when its stream broke, is resent (under failover to the next endpoint)
    after ``min(retry_max_backoff_s, retry_backoff_s * 2**n)`` with jitter, at most
    ``retries`` times and not after ``retry_timeout_s``; results are de-duplicated by
    ``(session_id, seq_no)``, so each packet gets exactly one terminal result. Unary
    calls are tried again on UNAVAILABLE, RESOURCE_EXHAUSTED or ABORTED. ``retries=0``
    turns both off.

    ``metadata`` is sent with every call; ``token="..."`` adds ``authorization: Bearer ...``
    (an endpoint's own ``token`` wins). TLS: ``root_certificates`` (the server's CA;
    ``tls=True`` alone uses the system's), ``certificate_chain`` + ``private_key`` for
    mutual TLS; each PEM bytes or a file path.
    """

    def __init__(
        self,
        target: EndpointLike | Sequence[EndpointLike],
        *,
        channel: grpc.Channel | None = None,
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

        def make(address: str) -> grpc.Channel:
            return channel or make_channel(address, options, credentials, aio=False)

        self._conns = [
            _Conn(e, make, with_token(metadata, e.token if e.token is not None else token)) for e in self.endpoints
        ]
        first = self._conns[0].ready()
        self.channel = first.channel()
        self.metadata: Metadata = first.metadata
        self._stub = first.stub
        self._health = first.health

    def __enter__(self) -> BlockClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channels."""
        for conn in self._conns:
            conn.close()

    def _call(self, method: Callable[[_Conn], _T]) -> _T:
        """A unary call on the policy's endpoint, tried again on the next while retryable."""
        order = self.picker.order()
        start = time.monotonic()
        attempt = 0
        while True:
            index = order[attempt % len(order)]
            try:
                out = method(self._conns[index].ready())
            except grpc.RpcError as exc:
                attempt += 1
                if not retryable_call_error(exc) or not self.retry.allows(attempt, start, time.monotonic()):
                    raise
                self.picker.failed(index)
                if attempt >= len(order):
                    time.sleep(self.retry.delay(attempt - len(order) + 1))
                continue
            self.picker.worked(index)
            return out

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

        With retries on (the default) a packet is resent as the class says, on a new
        stream when one broke; packets out of retries without a terminal result raise the
        last stream's ``grpc.RpcError`` (``Unanswered`` when it ended without one). Each
        packet's ``(session_id, seq_no)`` should be unique within the call; a resent
        packet's partial results may come again.
        With ``retries=0`` nothing is resent, and ``Unanswered`` (its ``count``) is raised
        when the stream ends OK or with a retryable status (a drain's UNAVAILABLE) before
        every packet sent was answered: ``process()`` never returns with answers missing.
        """
        if self.retry.retries == 0 and len(self._conns) == 1:
            yield from self._process_once(packets, session_id, first_seq_no, coalesce, coalesce_window_s, timeout)
            return
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
                stop = threading.Event()
                broken: grpc.RpcError | None = None
                try:
                    requests = self._requests(ledger.packets(stream), coalesce, coalesce_window_s, stop)
                    for response in conn.process_bytes(requests, timeout=timeout, metadata=conn.metadata):
                        for result in results_of(response):
                            seen = ledger.take(result)
                            if seen is not None:
                                yield seen
                except grpc.RpcError as exc:
                    if not retryable_call_error(exc):
                        raise
                    broken = exc
                finally:
                    stop.set()
                if streams.ended(broken):
                    return
                if streams.backoff is not None:
                    time.sleep(streams.backoff)
        finally:
            ledger.stop()

    @staticmethod
    def _requests(
        packets: Iterator[pb.Packet | Flush], coalesce: int, coalesce_window_s: float, stop: threading.Event
    ) -> Iterator[bytes]:
        if coalesce_window_s > 0:
            limit = coalesce if coalesce > 1 else DEFAULT_COALESCE
            source: queue.Queue[Any] = queue.Queue(maxsize=2 * limit)
            # A window closes on its own time: the ledger's flushes are not needed.
            feed_thread((p for p in packets if not isinstance(p, Flush)), source, stop)
            return (r.SerializeToString() for r in window_requests(source, coalesce, coalesce_window_s))
        return _ledger_requests(packets, coalesce)

    def _process_once(
        self,
        packets: Iterable[PacketLike],
        session_id: str,
        first_seq_no: int,
        coalesce: int,
        coalesce_window_s: float,
        timeout: float | None,
    ) -> Iterator[Result]:
        """One stream to the one endpoint, nothing resent (``retries=0``)."""
        stop = threading.Event()
        if coalesce_window_s > 0:
            limit = coalesce if coalesce > 1 else DEFAULT_COALESCE
            source: queue.Queue[Any] = queue.Queue(maxsize=2 * limit)
            feed_thread(to_packets(packets, session_id, first_seq_no), source, stop)
            requests = window_requests(source, coalesce, coalesce_window_s)
        else:
            requests = packet_requests(packets, session_id, first_seq_no, coalesce)
        sent = [0]  # packets handed to grpc; each must get a terminal result
        answered = 0
        try:
            responses = self._stub.Process(_counted(requests, sent), timeout=timeout, metadata=self.metadata)
            for response in responses:
                results = results_of(response)
                for result in results:
                    if result.kind != "partial":
                        answered += 1
                yield from results
        except grpc.RpcError as exc:
            # As with retries on: a status that says "try again" (UNAVAILABLE, a drain) names
            # what went unanswered; any other (UNAUTHENTICATED, ...) is raised as it is.
            if sent[0] > answered and retryable_call_error(exc):
                why = f"{exc.code().name}: {exc.details()}"[:200]
                raise Unanswered([], why, count=sent[0] - answered) from exc
            raise
        finally:
            stop.set()
        if sent[0] > answered:
            raise Unanswered([], "the stream ended OK without their answers", count=sent[0] - answered)

    def run(self, data: Any, *, session_id: str = "session", seq_no: int = 1, timeout: float | None = None) -> Result:
        """Process one input and return its terminal result, with its partial results in ``partials``."""
        partials: list[Result] = []
        for result in self.process([data], session_id=session_id, first_seq_no=seq_no, timeout=timeout):
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
    ) -> ProcessStream:
        """An open Process stream to ``send`` packets on and read ``results`` from.

        With ``coalesce_window_s=W``, packets sent within W seconds of each other go in
        one request message (at most ``coalesce``, 256 by default). ``send`` waits while
        ``max_pending`` packets are queued unsent (the server is behind): read
        ``results()`` in another thread when sending more than that.
        """
        conn = self._conns[self.picker.order()[0]].ready()
        return ProcessStream(conn.stub, conn.metadata, timeout, coalesce, coalesce_window_s, max_pending)

    def set_parameters(self, parameters: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Apply parameters; returns ``{"applied": {...}, "parameters": {...}}``."""
        request = parameters_request(parameters)
        return parameters_of(self._call(lambda c: c.stub.SetParameters(request, timeout=timeout, metadata=c.metadata)))

    def management(self, action: str, data: Mapping[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Run a management action; returns what the block returned."""
        request = management_request(action, data)
        return management_result(self._call(lambda c: c.stub.Management(request, timeout=timeout, metadata=c.metadata)))

    def get_info(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Block id, instance id, SDK version, muxer and batcher settings, parameters."""
        request = pb.GetInfoRequest()
        return info_of(self._call(lambda c: c.stub.GetInfo(request, timeout=timeout, metadata=c.metadata)))

    def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """The health status name (``"SERVING"``, ``"NOT_SERVING"``, ...)."""
        request = health_request(service)
        return status_name(self._call(lambda c: c.health.Check(request, timeout=timeout, metadata=c.metadata)))

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


def _counted(requests: Iterator[pb.ProcessRequest], sent: list[int]) -> Iterator[pb.ProcessRequest]:
    """``requests``, counting their packets into ``sent[0]``."""
    for request in requests:
        sent[0] += len(request.packets) + request.HasField("packet")
        yield request


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
