"""Packets in, results out: the client's value types."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring_ascii as _encode_string
from typing import Any

import grpc
from aios_block_stubs.v1 import block_pb2 as pb
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health_pb2

_KINDS = {1: "ok", 2: "error", 3: "partial"}
_OK = pb.RESULT_KIND_OK
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _plain_encoder() -> Any:
    """json.dumps's own C encoder, built once (json.dumps builds one per call); None without ``_json``."""
    if _c_make_encoder is None:  # pragma: no cover - CPython always has _json
        return None
    defaults = json.JSONEncoder()
    # No circular-reference markers (a shared dict would be wrong across threads and
    # left stale by a failed call): a cycle ends in RecursionError, and json_text then
    # asks json.dumps, which raises its usual ValueError.
    return _c_make_encoder(
        None,
        defaults.default,
        _encode_string,
        None,
        defaults.key_separator,
        defaults.item_separator,
        False,
        False,
        True,
    )


_ENCODE = _plain_encoder()


def json_text(value: Any) -> str:
    """``json.dumps(value)``: the same text and the same errors, about 1.5 us sooner per call."""
    if _ENCODE is not None:
        try:
            return "".join(_ENCODE(value, 0))
        except Exception:  # json.dumps below raises the error callers know
            pass
    return json.dumps(value)


PacketLike = pb.Packet | Mapping[str, Any] | str

# gRPC call metadata as the stubs take it: ("authorization", "Bearer ...") pairs.
Metadata = tuple[tuple[str, str], ...]


def make_packet(
    data: Any = None,
    *,
    session_id: str = "",
    seq_no: int = 0,
    files: Sequence[tuple[Mapping[str, Any] | str, bytes]] | None = None,
    output_ptr: str | Mapping[str, Any] = "",
    headers: Mapping[str, str] | None = None,
    deadline: float = 0.0,
    ts: float = 0.0,
) -> pb.Packet:
    """A ``Packet`` whose ``data`` is ``data`` as JSON text (a str is sent as is)."""
    packet = pb.Packet(
        session_id=session_id,
        seq_no=seq_no,
        data=data if isinstance(data, str) else json_text({} if data is None else data),
    )
    # Fields left at their defaults are not set: each keyword costs time on every packet.
    if output_ptr != "":
        packet.output_ptr = output_ptr if isinstance(output_ptr, str) else json_text(output_ptr)
    if deadline:
        packet.deadline = deadline
    if ts:
        packet.ts = ts
    for meta, content in files or ():
        packet.files.add(metadata=meta if isinstance(meta, str) else json_text(meta), file_data=content)
    if headers:
        packet.headers.update(headers)
    return packet


def as_packet(item: PacketLike, session_id: str, seq_no: int) -> pb.Packet:
    """``item`` itself when it is a ``Packet``, else a packet of it with ``session_id`` and ``seq_no``."""
    return item if isinstance(item, pb.Packet) else make_packet(item, session_id=session_id, seq_no=seq_no)


def to_packets(items: Iterable[PacketLike], session_id: str, first_seq_no: int) -> Iterator[pb.Packet]:
    """Packets from packets or JSON-able values; values get ``session_id`` and rising seq_no."""
    for seq, item in enumerate(items, first_seq_no):
        yield as_packet(item, session_id, seq)


async def async_to_packets(
    items: AsyncIterable[PacketLike], session_id: str, first_seq_no: int
) -> AsyncIterator[pb.Packet]:
    """``to_packets`` for an async iterable."""
    seq = first_seq_no
    async for item in items:
        yield as_packet(item, session_id, seq)
        seq += 1


def struct_of(value: Mapping[str, Any], what: str) -> struct_pb2.Struct:
    """A ``Struct`` of a JSON object; a TypeError naming ``what`` for anything else."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict (a JSON object), got {type(value).__name__}")
    msg = struct_pb2.Struct()
    msg.update(json.loads(json.dumps(dict(value))))
    return msg


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel options that let messages up to ``max_message_bytes`` through both ways."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def parameters_request(parameters: Mapping[str, Any]) -> pb.SetParametersRequest:
    """The SetParameters request for ``parameters``."""
    return pb.SetParametersRequest(parameters=struct_of(parameters, "parameters"))


def management_request(action: str, data: Mapping[str, Any] | None) -> pb.ManagementRequest:
    """The Management request for ``action`` with ``data`` (an empty object when None)."""
    return pb.ManagementRequest(action=action, data=struct_of({} if data is None else data, "data"))


# A Struct keeps every number as a double; one with no fraction that a double holds
# exactly went in as an int (JSON has one number type, so 4.0 and 4 are the same value).
_EXACT = 2**53


def json_plain(value: Any) -> Any:
    """``value`` (from a Struct) with its whole-number floats as ints: ``4`` stays ``4``, not ``4.0``."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and -_EXACT <= value <= _EXACT else value
    if isinstance(value, dict):
        return {k: json_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_plain(v) for v in value]
    return value


def parameters_of(response: pb.SetParametersResponse) -> dict[str, Any]:
    """``{"applied": {...}, "parameters": {...}}`` from a SetParameters response."""
    return json_plain(json_format.MessageToDict(response))  # type: ignore[no-any-return]


def management_result(response: pb.ManagementResponse) -> Any:
    """What the block's ``management`` returned, from a Management response."""
    return json_plain(json_format.MessageToDict(response).get("result"))


def info_of(response: pb.GetInfoResponse) -> dict[str, Any]:
    """GetInfo's answer as a dict with the proto's field names."""
    return json_plain(json_format.MessageToDict(response, preserving_proto_field_name=True))  # type: ignore[no-any-return]


def health_request(service: str) -> health_pb2.HealthCheckRequest:
    """The health Check request for ``service`` (``""``: the whole server)."""
    return health_pb2.HealthCheckRequest(service=service)


def status_name(response: health_pb2.HealthCheckResponse) -> str:
    """``"SERVING"``, ``"NOT_SERVING"``, ... from a health Check response."""
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


# A serialized ProcessRequest is, per packet, a tag byte (0x0A for ``packet``, 0x12 for
# ``packets``), the packet's length as a varint and the packet's bytes. Written that way
# a request costs one serialization per packet; building a ProcessRequest first copies
# each packet in (an encode and a decode) before its own encode.
PACKET_TAG = 0x0A
PACKETS_TAG = 0x12
_HEADS: dict[int, dict[int, bytes]] = {PACKET_TAG: {}, PACKETS_TAG: {}}


def request_head(tag: int, size: int) -> bytes:
    """What comes before a ``size``-byte serialized packet in a serialized ``ProcessRequest``.

    ``tag`` is ``PACKET_TAG`` (the request's one ``packet``) or ``PACKETS_TAG`` (one of
    its ``packets``).
    """
    cache = _HEADS[tag]
    head = cache.get(size)
    if head is None:
        out = bytearray((tag,))
        rest = size
        while rest >= 0x80:
            out.append(rest & 0x7F | 0x80)
            rest >>= 7
        out.append(rest)
        head = bytes(out)
        if len(cache) < 4096:  # packet sizes repeat; the cache stays small when they do not
            cache[size] = head
    return head


def send_item(packet: pb.Packet | list[pb.Packet], windowed: bool) -> pb.Packet | pb.ProcessRequest:
    """What a stream's ``send`` queues: a request, or the bare packet for a coalescing window."""
    if isinstance(packet, list):
        return pb.ProcessRequest(packets=packet)
    return packet if windowed else pb.ProcessRequest(packet=packet)


@dataclass(frozen=True, slots=True)
class PacketError:
    """Why a packet failed, as the server said."""

    code: grpc.StatusCode
    message: str
    retryable: bool
    stage: str


@dataclass(frozen=True, slots=True)
class Result:
    """One result from a Process stream: terminal (``ok`` / ``error``) or ``partial``."""

    session_id: str
    seq_no: int
    kind: str
    output: pb.Packet | None
    error: PacketError | None
    #: ``run()``: the packet's partial results before this terminal one (streamed outputs).
    partials: tuple[Result, ...] = ()

    @property
    def ok(self) -> bool:
        """Terminal success."""
        return self.kind == "ok"

    @property
    def terminal(self) -> bool:
        """True for ``ok`` and ``error`` (every packet gets exactly one)."""
        return self.kind != "partial"

    @property
    def data(self) -> Any:
        """The output's JSON ``data`` parsed (None when there is no output)."""
        if self.output is None or not self.output.data:
            return None
        return json.loads(self.output.data)

    def with_partials(self, partials: Iterable[Result]) -> Result:
        """This result carrying ``partials`` (the packet's partial results, in order)."""
        result = _new_result(self.session_id, self.seq_no, self.kind, self.output, self.error)
        _set_partials(result, tuple(partials))
        return result

    @classmethod
    def from_proto(cls, msg: pb.PacketResult) -> Result:
        """A ``Result`` from a ``PacketResult`` message."""
        kind = msg.kind
        return _new_result(
            msg.session_id,
            msg.seq_no,
            _KINDS.get(kind, "unspecified"),
            msg.output if msg.HasField("output") else None,
            # The contract sets ``error`` only on error results: an ok one is not asked.
            None if kind == _OK or not msg.HasField("error") else _error_of(msg.error),
        )


def _error_of(fault: pb.PacketError) -> PacketError:
    return PacketError(
        code=_CODES.get(fault.code, grpc.StatusCode.UNKNOWN),
        message=fault.message,
        retryable=fault.retryable,
        stage=fault.stage,
    )


# A frozen dataclass's __init__ goes through object.__setattr__ once per field; filling
# the slots directly builds the same Result in less than half the time (one per packet).
_set_session_id = Result.__dict__["session_id"].__set__
_set_seq_no = Result.__dict__["seq_no"].__set__
_set_kind = Result.__dict__["kind"].__set__
_set_output = Result.__dict__["output"].__set__
_set_error = Result.__dict__["error"].__set__
_set_partials = Result.__dict__["partials"].__set__
_NONE: tuple[Result, ...] = ()


def _new_result(session_id: str, seq_no: int, kind: str, output: pb.Packet | None, error: PacketError | None) -> Result:
    result = object.__new__(Result)
    _set_session_id(result, session_id)
    _set_seq_no(result, seq_no)
    _set_kind(result, kind)
    _set_output(result, output)
    _set_error(result, error)
    _set_partials(result, _NONE)
    return result


def results_of(response: pb.ProcessResponse) -> list[Result]:
    """Every result carried by one ``ProcessResponse``."""
    from_proto = Result.from_proto
    out = [from_proto(response.result)] if response.HasField("result") else []
    # Result.from_proto written out: this runs once per packet.
    new = object.__new__
    for msg in response.results:
        result = new(Result)
        _set_session_id(result, msg.session_id)
        _set_seq_no(result, msg.seq_no)
        kind = msg.kind
        _set_kind(result, _KINDS.get(kind, "unspecified"))
        _set_output(result, msg.output if msg.HasField("output") else None)
        _set_error(result, None if kind == _OK or not msg.HasField("error") else _error_of(msg.error))
        _set_partials(result, _NONE)
        out.append(result)
    return out


class Coalescer:
    """Packets in, requests out: one packet per request, or up to ``coalesce`` when > 1."""

    def __init__(self, coalesce: int) -> None:
        self.coalesce = coalesce
        self.group: list[pb.Packet] = []

    def add(self, packet: pb.Packet) -> pb.ProcessRequest | None:
        """The request to send now, if ``packet`` completes one."""
        if self.coalesce <= 1:
            return pb.ProcessRequest(packet=packet)
        self.group.append(packet)
        return self.flush() if len(self.group) >= self.coalesce else None

    def flush(self) -> pb.ProcessRequest | None:
        """The request of the packets still held, if any."""
        if not self.group:
            return None
        request = pb.ProcessRequest(packets=self.group)
        self.group = []
        return request


def requests_of(packets: Iterable[pb.Packet], coalesce: int) -> Iterator[pb.ProcessRequest]:
    """ProcessRequests: one packet each, or up to ``coalesce`` packets each when > 1."""
    coalescer = Coalescer(coalesce)
    for packet in packets:
        request = coalescer.add(packet)
        if request is not None:
            yield request
    last = coalescer.flush()
    if last is not None:
        yield last


async def async_requests_of(packets: AsyncIterable[pb.Packet], coalesce: int) -> AsyncIterator[pb.ProcessRequest]:
    """``requests_of`` for an async iterable."""
    coalescer = Coalescer(coalesce)
    async for packet in packets:
        request = coalescer.add(packet)
        if request is not None:
            yield request
    last = coalescer.flush()
    if last is not None:
        yield last


def packet_requests(
    items: Iterable[PacketLike], session_id: str, first_seq_no: int, coalesce: int, window_s: float = 0.0
) -> Iterator[pb.ProcessRequest]:
    """ProcessRequests of ``items``, as ``requests_of(to_packets(...))`` groups them.

    One packet per request, or up to ``coalesce`` when > 1. With ``window_s`` > 0 a
    request also ends once an item comes ``window_s`` seconds or more after its first
    (at most ``coalesce``, ``DEFAULT_COALESCE`` when not > 1): the window of an
    iterable that the caller's thread produces, so nothing else runs while it waits.
    Values are written straight into the request's packets instead of being built as
    packets and copied in.
    """
    if coalesce <= 1 and window_s <= 0:
        for seq, item in enumerate(items, first_seq_no):
            yield pb.ProcessRequest(packet=as_packet(item, session_id, seq))
        return
    limit = coalesce if coalesce > 1 else DEFAULT_COALESCE
    clock = time.monotonic
    request = pb.ProcessRequest()
    packets = request.packets
    close_at = 0.0
    for seq, item in enumerate(items, first_seq_no):
        if window_s > 0:
            now = clock()
            if not packets:
                close_at = now + window_s
            elif now >= close_at:
                yield request
                request = pb.ProcessRequest()
                packets = request.packets
                close_at = now + window_s
        if isinstance(item, pb.Packet):
            packets.append(item)
        elif isinstance(item, str):
            packets.add(session_id=session_id, seq_no=seq, data=item)
        else:
            packets.add(session_id=session_id, seq_no=seq, data=json_text({} if item is None else item))
        if len(packets) >= limit:
            yield request
            request = pb.ProcessRequest()
            packets = request.packets
    if packets:
        yield request


#: Most packets one request carries when only a time window is given.
DEFAULT_COALESCE = 256

#: Packets an open stream queues unsent before ``send`` waits for the server.
DEFAULT_MAX_PENDING = 1024


class EndOfPackets:
    """Put on a coalescing queue after the last packet."""


END = EndOfPackets()


class _Window:
    """One coalescing window, opened by its first packet.

    It takes packets until it holds ``limit``, its time is up, or it meets ``END`` or
    a ready ``ProcessRequest`` (the tail, sent after the window's packets).
    """

    def __init__(self, first: pb.Packet, limit: int, window_s: float) -> None:
        self.packets = [first]
        self.limit = limit
        self.close_at = time.monotonic() + window_s
        self.tail: Any = None

    def open(self) -> bool:
        """Whether the window may take another packet."""
        return self.tail is None and len(self.packets) < self.limit

    def remaining(self) -> float:
        """Seconds until the window closes."""
        return self.close_at - time.monotonic()

    def take(self, item: Any) -> None:
        """Add a packet, or keep a boundary (``END``, a request) as the tail."""
        if item is END or isinstance(item, pb.ProcessRequest):
            self.tail = item
        else:
            self.packets.append(item)

    def requests(self) -> list[pb.ProcessRequest]:
        """The window's request, then the tail request if there is one."""
        out = [pb.ProcessRequest(packets=self.packets)]
        if isinstance(self.tail, pb.ProcessRequest):
            out.append(self.tail)
        return out


def window_requests(source: queue.Queue[Any], coalesce: int, window_s: float) -> Iterator[pb.ProcessRequest]:
    """Requests from packets taken off ``source`` until ``END``.

    Packets put within ``window_s`` seconds of a group's first packet go in one
    request (at most ``coalesce``); a ``ProcessRequest`` put on the queue is sent as
    is, after the group before it. A group never waits longer than ``window_s``.
    """
    limit = coalesce if coalesce > 1 else DEFAULT_COALESCE
    item = source.get()
    while item is not END:
        if isinstance(item, pb.ProcessRequest):
            yield item
            item = source.get()
            continue
        window = _Window(item, limit, window_s)
        while window.open():
            remaining = window.remaining()
            try:
                window.take(source.get(timeout=remaining) if remaining > 0 else source.get_nowait())
            except queue.Empty:
                break
        yield from window.requests()
        item = END if window.tail is END else source.get()


async def async_window_requests(
    source: asyncio.Queue[Any], coalesce: int, window_s: float
) -> AsyncIterator[pb.ProcessRequest]:
    """``window_requests`` for an ``asyncio.Queue``.

    The window's loop is written out here rather than through ``_Window``: it runs
    once per packet, and the method calls were a fair share of the client's CPU.
    """
    limit = coalesce if coalesce > 1 else DEFAULT_COALESCE
    get_nowait = source.get_nowait
    clock = time.monotonic
    item = await source.get()
    while item is not END:
        if isinstance(item, pb.ProcessRequest):
            yield item
            item = await source.get()
            continue
        packets = [item]
        tail: Any = None
        close_at = clock() + window_s
        while len(packets) < limit:
            try:
                item = get_nowait()
            except asyncio.QueueEmpty:
                remaining = close_at - clock()
                if remaining <= 0:
                    break
                try:
                    # asyncio.timeout, unlike wait_for, starts no task per packet.
                    async with asyncio.timeout(remaining):
                        item = await source.get()
                except TimeoutError:
                    break
            if item is END or isinstance(item, pb.ProcessRequest):
                tail = item
                break
            packets.append(item)
        yield pb.ProcessRequest(packets=packets)
        if tail is END:
            return
        if tail is not None:
            yield tail
        item = await source.get()


def feed_thread(packets: Iterable[pb.Packet], target: queue.Queue[Any], stop: threading.Event) -> threading.Thread:
    """A daemon thread that puts ``packets`` then ``END`` on ``target``.

    ``target`` is bounded, so the thread waits while the stream is slow; ``stop``
    ends it when the stream is gone.
    """

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                target.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        for packet in packets:
            if not put(packet):
                return
        put(END)

    thread = threading.Thread(target=run, name="aios-client-feed", daemon=True)
    thread.start()
    return thread


__all__ = [
    "DEFAULT_COALESCE",
    "DEFAULT_MAX_PENDING",
    "END",
    "PACKETS_TAG",
    "PACKET_TAG",
    "Coalescer",
    "EndOfPackets",
    "Metadata",
    "PacketError",
    "PacketLike",
    "Result",
    "as_packet",
    "async_requests_of",
    "async_to_packets",
    "async_window_requests",
    "channel_options",
    "feed_thread",
    "health_request",
    "info_of",
    "json_plain",
    "json_text",
    "make_packet",
    "management_request",
    "management_result",
    "packet_requests",
    "parameters_of",
    "parameters_request",
    "pb",
    "request_head",
    "requests_of",
    "results_of",
    "send_item",
    "status_name",
    "struct_of",
    "to_packets",
    "window_requests",
]
