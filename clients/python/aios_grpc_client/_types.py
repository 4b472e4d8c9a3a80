"""Packets in, results out: the client's value types."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aios.block.v1 import block_pb2 as pb

_KINDS = {1: "ok", 2: "error", 3: "partial"}

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
        data=data if isinstance(data, str) else json.dumps({} if data is None else data),
        output_ptr=output_ptr if isinstance(output_ptr, str) else json.dumps(output_ptr),
        deadline=deadline,
        ts=ts,
    )
    for meta, content in files or ():
        packet.files.add(metadata=meta if isinstance(meta, str) else json.dumps(meta), file_data=content)
    if headers:
        packet.headers.update(headers)
    return packet


def to_packets(items: Iterable[PacketLike], session_id: str, first_seq_no: int) -> Iterator[pb.Packet]:
    """Packets from packets or JSON-able values; values get ``session_id`` and rising seq_no."""
    seq = first_seq_no
    for item in items:
        if isinstance(item, pb.Packet):
            yield item
        else:
            yield make_packet(item, session_id=session_id, seq_no=seq)
        seq += 1


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

    @classmethod
    def from_proto(cls, msg: pb.PacketResult) -> Result:
        """A ``Result`` from a ``PacketResult`` message."""
        error = None
        if msg.HasField("error"):
            error = PacketError(
                code=_code(msg.error.code),
                message=msg.error.message,
                retryable=msg.error.retryable,
                stage=msg.error.stage,
            )
        return cls(
            session_id=msg.session_id,
            seq_no=msg.seq_no,
            kind=_KINDS.get(msg.kind, "unspecified"),
            output=msg.output if msg.HasField("output") else None,
            error=error,
        )


def results_of(response: pb.ProcessResponse) -> list[Result]:
    """Every result carried by one ``ProcessResponse``."""
    out = [Result.from_proto(r) for r in response.results]
    if response.HasField("result"):
        out.insert(0, Result.from_proto(response.result))
    return out


def _code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def requests_of(packets: Iterable[pb.Packet], coalesce: int) -> Iterator[pb.ProcessRequest]:
    """ProcessRequests: one packet each, or up to ``coalesce`` packets each when > 1."""
    if coalesce <= 1:
        for packet in packets:
            yield pb.ProcessRequest(packet=packet)
        return
    group: list[pb.Packet] = []
    for packet in packets:
        group.append(packet)
        if len(group) >= coalesce:
            yield pb.ProcessRequest(packets=group)
            group = []
    if group:
        yield pb.ProcessRequest(packets=group)


#: Most packets one request carries when only a time window is given.
DEFAULT_COALESCE = 256


class EndOfPackets:
    """Put on a coalescing queue after the last packet."""


END = EndOfPackets()


def window_requests(source: queue.Queue[Any], coalesce: int, window_s: float) -> Iterator[pb.ProcessRequest]:
    """Requests from packets taken off ``source`` until ``END``.

    Packets put within ``window_s`` seconds of a group's first packet go in one
    request (at most ``coalesce``); a ``ProcessRequest`` put on the queue is sent as
    is, after the group before it. A group never waits longer than ``window_s``.
    """
    limit = coalesce if coalesce > 1 else DEFAULT_COALESCE
    while True:
        item = source.get()
        if item is END:
            return
        if isinstance(item, pb.ProcessRequest):
            yield item
            continue
        group = [item]
        close_at = time.monotonic() + window_s
        tail: Any = None
        while len(group) < limit:
            remaining = close_at - time.monotonic()
            try:
                nxt = source.get(timeout=remaining) if remaining > 0 else source.get_nowait()
            except queue.Empty:
                break
            if nxt is END or isinstance(nxt, pb.ProcessRequest):
                tail = nxt
                break
            group.append(nxt)
        yield pb.ProcessRequest(packets=group)
        if tail is END:
            return
        if tail is not None:
            yield tail


async def async_window_requests(
    source: asyncio.Queue[Any], coalesce: int, window_s: float
) -> AsyncIterator[pb.ProcessRequest]:
    """``window_requests`` for an ``asyncio.Queue``."""
    limit = coalesce if coalesce > 1 else DEFAULT_COALESCE
    while True:
        item = await source.get()
        if item is END:
            return
        if isinstance(item, pb.ProcessRequest):
            yield item
            continue
        group = [item]
        close_at = time.monotonic() + window_s
        tail: Any = None
        while len(group) < limit:
            try:
                nxt = source.get_nowait()
            except asyncio.QueueEmpty:
                remaining = close_at - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(source.get(), remaining)
                except TimeoutError:
                    break
            if nxt is END or isinstance(nxt, pb.ProcessRequest):
                tail = nxt
                break
            group.append(nxt)
        yield pb.ProcessRequest(packets=group)
        if tail is END:
            return
        if tail is not None:
            yield tail


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
    "END",
    "EndOfPackets",
    "Metadata",
    "PacketError",
    "PacketLike",
    "Result",
    "async_window_requests",
    "feed_thread",
    "make_packet",
    "pb",
    "requests_of",
    "results_of",
    "to_packets",
    "window_requests",
]
