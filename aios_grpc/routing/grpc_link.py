"""``GrpcLink``: one long-lived Process stream to a downstream block, shared by all packets.

Every packet sent on the link waits for the downstream block's terminal result for
it (matched by ``(session_id, seq_no)``; the downstream answers one session in
arrival order, so several packets with the same key are matched first in, first
out). When the stream breaks (the downstream restarted, the network failed), the
packets still unanswered are sent again on a new stream: delivery is at least once.
Reconnects back off exponentially with jitter; a packet that could not be delivered
within ``retry_timeout_s`` is answered UNAVAILABLE, never dropped silently.

A caller that gives up (its ``send`` is cancelled: the job's deadline passed, the
router's answer timeout, a shutdown) takes its packet out of the link at once: it is
not sent or resent, and one already sent leaves an empty place in the waiting list,
so the downstream's late answer for it is matched to that place and ignored while
every other packet with the same key still gets its own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

import grpc

from aios_grpc._pb import pb, pb_grpc
from aios_grpc._text import quote
from aios_grpc.errors import LinkUnavailable
from aios_grpc.routing.link_security import LinkSecurity
from aios_grpc.routing.policy import Backoff

log = logging.getLogger("aios_grpc.routing")

# Codes after which sending the same packet again may succeed.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}


_MAX_PER_MESSAGE = 64


@dataclass(eq=False)
class _Send:
    packet: pb.Packet
    future: asyncio.Future[pb.PacketResult]
    deadline: float
    order: int = 0  # position in the order packets were handed to the link
    attempts: int = 0
    parked: bool = False  # answered retryable, waiting to be sent again
    timer: asyncio.TimerHandle | None = None  # the resend of a parked packet
    key: tuple[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.packet.session_id, self.packet.seq_no)


_NO_PACKET = pb.Packet()
"""What a packet whose caller gave up is replaced with: the link holds no payload for it."""

# Packets sent on a stream and not answered yet, per (session_id, seq_no), oldest first.
# None is the place of a packet whose caller gave up: the downstream still answers it.
_Waiting = dict[tuple[str, int], deque["_Send | None"]]


class GrpcLink:
    """A pooled Process stream to ``address``; ``await send(packet)`` -> terminal ``PacketResult``."""

    def __init__(
        self,
        address: str,
        backoff: Backoff,
        retry_timeout_s: float,
        *,
        max_message_bytes: int = 16 * 1024 * 1024,
        security: LinkSecurity | None = None,
    ) -> None:
        self.address = address
        self.backoff = backoff
        self.retry_timeout_s = retry_timeout_s
        self.security = security  # TLS and a token for this target (AIOS_ROUTE_TLS), or None: plaintext
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Reconnect quickly after a downstream restart; our own backoff paces retries.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        credentials = None
        if security is not None:
            credentials = security.channel_credentials()
            options += security.channel_options()
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        self._stub = pb_grpc.BlockServiceStub(self._channel)
        self._backlog: deque[_Send] = deque()
        # Sent on the current stream and not answered yet, and answered retryable and
        # waiting to be resent: close() must answer these too, or their callers wait forever.
        self._waiting: _Waiting = {}
        self._parked: set[_Send] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.streams_opened = 0
        self.resent = 0
        self._sent_total = 0

    async def send(self, packet: pb.Packet) -> pb.PacketResult:
        """Deliver ``packet``; return the downstream's terminal result (OK or a final error).

        Raises ``LinkUnavailable`` when the target stayed unreachable for
        ``retry_timeout_s``.
        """
        if self._closed:
            raise LinkUnavailable(f"link to {self.address} is closed")
        loop = asyncio.get_running_loop()
        self._sent_total += 1
        item = _Send(packet, loop.create_future(), loop.time() + self.retry_timeout_s, self._sent_total)
        self._backlog.append(item)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"aios-link-{self.address}")
        try:
            return await item.future
        except asyncio.CancelledError:
            self._drop(item)
            raise

    @property
    def pending(self) -> int:
        """Packets the link holds for callers still waiting: to send, sent and unanswered, parked."""
        sent = sum(1 for queue in self._waiting.values() for s in queue if s is not None and not s.future.done())
        return sent + sum(1 for s in self._backlog if not s.future.done()) + len(self._parked)

    def _drop(self, item: _Send) -> None:
        """The caller of ``send(item)`` gave up: release its packet, send it no more."""
        item.packet = _NO_PACKET
        if item.parked:
            item.parked = False
            self._parked.discard(item)
            if item.timer is not None:
                item.timer.cancel()
            return
        queue = self._waiting.get(item.key)
        if queue is not None:
            for i, sent in enumerate(queue):
                if sent is item:
                    queue[i] = None  # keeps its place: the next answer for this key is its own
                    return
        # Still in the backlog: its future is done, so it is skipped and pruned there.

    async def close(self) -> None:
        """Close the stream; packets still waiting get ``LinkUnavailable``."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._fail_all(self._backlog, "the router is closing")
        self._fail_all([s for queue in self._waiting.values() for s in queue if s is not None], "the router is closing")
        self._fail_all(list(self._parked), "the router is closing")
        self._waiting = {}
        self._parked.clear()
        await self._channel.close(None)

    # -- the link's task -------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        last_error = "no attempt yet"
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._expire(loop.time(), last_error, failures)
            if not self._backlog:
                self._wake.clear()
                await self._wake.wait()
                continue
            waiting: _Waiting = {}
            self._waiting = waiting
            answered = await self._stream(waiting)
            if answered:
                failures = 0
            # Whatever the broken stream left unanswered goes first on the next one, in the
            # order it was first sent (so each session keeps its order).
            unanswered = sorted(
                (
                    s
                    for queue in waiting.values()
                    for s in queue
                    if s is not None and not s.future.done() and not s.parked
                ),
                key=lambda s: s.order,
            )
            self.resent += len(unanswered)
            self._backlog.extendleft(reversed(unanswered))
            self._waiting = {}  # that stream is gone: nothing is owed on it any more
            last_error = self._last_error
            failures += 1
            if self._backlog:
                earliest = min(s.deadline for s in self._backlog)
                delay = min(self.backoff.delay(failures), max(0.0, earliest - loop.time()))
                log.info(
                    "link %s: stream ended (%s); %d packets wait, retry in %.2fs",
                    self.address,
                    last_error,
                    len(self._backlog),
                    delay,
                )
                await asyncio.sleep(delay)

    _last_error = ""

    async def _stream(self, waiting: _Waiting) -> bool:
        """Run one Process stream until it breaks; True when it got at least one answer.

        ``waiting`` holds the packets sent on it and not yet answered (per key, in order).
        """
        self._last_error = ""
        metadata = self.security.metadata() if self.security is not None else ()
        call = self._stub.Process(metadata=metadata)  # type: ignore[call-arg]  # write()/read() API, no iterator
        self.streams_opened += 1
        state = {"answered": False}
        reader = asyncio.create_task(self._read(call, waiting, state))
        waker: asyncio.Task[bool] | None = None
        try:
            while True:
                while self._backlog:
                    # Several waiting packets travel in one message: one write, one HTTP/2 frame.
                    group: list[pb.Packet] = []
                    while self._backlog and len(group) < _MAX_PER_MESSAGE:
                        item = self._backlog.popleft()
                        if item.future.done():
                            continue
                        item.attempts += 1
                        waiting.setdefault(item.key, deque()).append(item)
                        group.append(item.packet)
                    if len(group) == 1:
                        await call.write(pb.ProcessRequest(packet=group[0]))
                    elif group:
                        await call.write(pb.ProcessRequest(packets=group))
                    group.clear()  # written (copied): the link holds a packet only through its _Send
                    if reader.done():
                        break
                if reader.done():
                    break
                self._wake.clear()
                if self._backlog:
                    continue
                waker = asyncio.create_task(self._wake.wait())
                await asyncio.wait({waker, reader}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                waker = None
                if reader.done():
                    break
        except asyncio.CancelledError:
            call.cancel()
            reader.cancel()
            raise
        except Exception as exc:
            self._last_error = _describe(exc)
        finally:
            if waker is not None:
                waker.cancel()
            if not reader.done():
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            self._last_error = _describe(reader.exception())  # type: ignore[arg-type]
        elif not self._last_error:
            self._last_error = "stream ended"
        return state["answered"]

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[pb.ProcessRequest, pb.ProcessResponse],
        waiting: _Waiting,
        state: dict[str, bool],
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                self._last_error = "the target closed the stream"
                return
            assert isinstance(response, pb.ProcessResponse)
            results = list(response.results)
            if response.HasField("result"):
                results.insert(0, response.result)
            for result in results:
                if result.kind == 3:  # PARTIAL: only terminal results acknowledge a packet
                    continue
                key = (result.session_id, result.seq_no)
                queue = waiting.get(key)
                if not queue:
                    log.warning(
                        "link %s: answer for unknown packet %s/%s",
                        self.address,
                        quote(result.session_id),
                        result.seq_no,
                    )
                    continue
                item = queue.popleft()
                if not queue:
                    del waiting[key]
                state["answered"] = True
                if item is None or item.future.done():
                    continue  # its caller gave up: nobody to answer
                if (
                    result.kind == pb.RESULT_KIND_ERROR
                    and result.error.code in RETRYABLE
                    and loop.time() < item.deadline
                ):
                    # The downstream is draining or full: send again after a pause.
                    delay = self.backoff.delay(item.attempts)
                    item.parked = True
                    self._parked.add(item)
                    item.timer = loop.call_later(delay, self._requeue, item)
                    continue
                item.future.set_result(result)

    def _requeue(self, item: _Send) -> None:
        item.parked = False
        item.timer = None
        self._parked.discard(item)
        if item.future.done() or self._closed:
            return
        self.resent += 1
        self._backlog.append(item)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"aios-link-{self.address}")

    def _expire(self, now: float, last_error: str, failures: int) -> None:
        keep: deque[_Send] = deque()
        for item in self._backlog:
            if item.future.done():
                continue
            if now >= item.deadline:
                item.future.set_exception(
                    LinkUnavailable(
                        f"target {self.address} unreachable for {self.retry_timeout_s:g}s "
                        f"({failures} attempts): {last_error}"
                    )
                )
            else:
                keep.append(item)
        self._backlog = keep

    def _fail_all(self, items: deque[_Send] | list[_Send], why: str) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(LinkUnavailable(f"target {self.address}: {why}"))
        items.clear()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


__all__ = ["GrpcLink"]
