"""``GraphRouter``: sends a block's outputs where the packet's ``output_ptr`` says.

A job is answered only after every output reached every target: a gRPC target
answered it (terminal result), a Redis target accepted the push. So the sender of
an input learns that the whole fan-out was delivered, and resends what was never
answered. Outputs that downstream blocks send back (their own callers' answers)
are returned to this job's caller. A job with a deadline waits for gRPC targets
only until then: it is answered DEADLINE_EXCEEDED and its packets leave the links.
The deadline travels with the outputs, so downstream blocks skip them too.

>>> from aios_grpc.settings import Settings
>>> router = GraphRouter.from_settings(Settings(route_allow=["127.0.0.1:*"]))
>>> router.allow.allows_address("127.0.0.1:50052")
True
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, TypeVar

from redis.exceptions import ResponseError as RedisResponseError

from aios_grpc.converters import code_from_number, packet_from_proto, packet_to_proto
from aios_grpc.errors import DeadlineExceeded, DownstreamError, InvalidPacket, LinkUnavailable, Unavailable
from aios_grpc.packet import AIOSPacket
from aios_grpc.routing.base import Router
from aios_grpc.routing.grpc_link import GrpcLink
from aios_grpc.routing.pointer import GRPC, Target, parse_output_ptr
from aios_grpc.routing.policy import AllowList, Backoff
from aios_grpc.routing.redis_link import RedisLink

if TYPE_CHECKING:
    from aios_grpc.job import Job
    from aios_grpc.settings import Settings

log = logging.getLogger("aios_grpc.routing")

_Link = TypeVar("_Link", GrpcLink, RedisLink)

HOPS_HEADER = "aios-hops"
"""Packet header counting the blocks a routed packet went through."""
MAX_HOPS = 64
"""Most hops a routed packet may take: a graph with a cycle would otherwise loop for ever."""


class GraphRouter(Router):
    """Routes by ``output_ptr`` to gRPC blocks and Redis queues on the allow-list."""

    def __init__(
        self,
        block_id: str,
        allow: AllowList,
        *,
        backoff: Backoff | None = None,
        retry_timeout_s: float = 10.0,
        answer_timeout_s: float = 60.0,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.block_id = block_id
        self.allow = allow
        self.backoff = backoff or Backoff(0.05, 2.0)
        self.retry_timeout_s = retry_timeout_s
        self.answer_timeout_s = answer_timeout_s
        self.max_message_bytes = max_message_bytes
        # Pooled links by address, least recently used first. A pointer may name any
        # address the allow-list matches (``10.0.*:50051``), so past ``max_links`` of a
        # kind the oldest idle link is closed instead of keeping one per address forever.
        self.grpc_links: dict[str, GrpcLink] = {}
        self.redis_links: dict[str, RedisLink] = {}
        self.max_links = 256
        self._in_use: Counter[int] = Counter()  # id(link) -> sends in progress
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> GraphRouter:
        """A router configured by ``AIOS_ROUTE_*`` settings."""
        return cls(
            settings.block_id,
            AllowList(settings.route_allow, settings.route_allow_queues),
            backoff=Backoff(settings.route_backoff_initial_s, settings.route_backoff_max_s),
            retry_timeout_s=settings.route_retry_timeout_s,
            answer_timeout_s=settings.route_answer_timeout_s,
            max_message_bytes=settings.max_message_bytes,
        )

    def wants(self, job: Job) -> bool:
        """True when the packet names a pointer (an empty one answers the caller directly)."""
        ptr = job.packet.output_ptr
        return bool(ptr) and ptr.strip() not in ("", "{}", "null")

    async def route(self, job: Job, outputs: list[AIOSPacket]) -> list[AIOSPacket]:
        """Deliver every output to every target; return what downstream blocks sent back."""
        plan = parse_output_ptr(job.packet.output_ptr, self.block_id)
        if not plan.targets:
            return outputs
        for target in plan.targets:
            self.allow.check(target)
        hops = _hops(job.packet.headers.get(HOPS_HEADER, "")) + 1
        if hops > MAX_HOPS:
            raise InvalidPacket(
                f"output_ptr: the packet went through more than {MAX_HOPS} hops (a cycle in the graph?)",
                stage="route",
            )
        if not outputs:
            return []
        sends = []
        for output in outputs:
            msg = packet_to_proto(output)
            msg.output_ptr = plan.forward_ptr
            msg.headers[HOPS_HEADER] = str(hops)
            if job.deadline and not msg.deadline:
                msg.deadline = time.time() + (job.deadline - time.monotonic())  # wall clock on the wire
            for target in plan.targets:
                sends.append(self._deliver(target, msg, job.deadline))
        results = await asyncio.gather(*sends, return_exceptions=True)
        back: list[AIOSPacket] = []
        for res in results:
            if isinstance(res, BaseException):
                raise res
            if res is not None:
                back.append(res)
        return back

    async def _deliver(self, target: Target, msg: object, deadline: float = 0.0) -> AIOSPacket | None:
        """Send ``msg`` to ``target``; ``deadline`` (``time.monotonic()``, 0: none) bounds a gRPC wait."""
        from aios_grpc._pb import pb

        assert isinstance(msg, pb.Packet)
        try:
            if target.transport != GRPC:
                redis_link = self._redis(target)
                self._in_use[id(redis_link)] += 1
                try:
                    await redis_link.push(target.transport, target.queue_name, msg.SerializeToString())
                except RedisResponseError as exc:  # e.g. WRONGTYPE: the queue is another kind of key
                    raise InvalidPacket(f"target {target.describe()} refused the push: {exc}", stage="route") from None
                finally:
                    self._release(redis_link)
                return None
            limit = self.retry_timeout_s + self.answer_timeout_s
            left = deadline - time.monotonic() if deadline else limit
            if left <= 0:
                raise DeadlineExceeded(
                    f"packet deadline passed before it was sent to {target.describe()}", stage="route"
                )
            link = self._grpc(target)
            self._in_use[id(link)] += 1
            try:
                # A timeout cancels the send, which takes the packet out of the link.
                result = await asyncio.wait_for(link.send(msg), min(limit, left))
            except TimeoutError:
                if left < limit:
                    raise DeadlineExceeded(
                        f"packet deadline passed before {target.describe()} answered", stage="route"
                    ) from None
                raise
            finally:
                self._release(link)
        except LinkUnavailable as exc:
            raise Unavailable(str(exc), stage="route") from None
        except TimeoutError:
            raise Unavailable(
                f"target {target.describe()} did not answer within {self.retry_timeout_s + self.answer_timeout_s:g}s",
                stage="route",
            ) from None
        if result.kind == pb.RESULT_KIND_ERROR:
            code = code_from_number(result.error.code)
            raise DownstreamError(
                f"target {target.describe()} answered {code.name}: {result.error.message}",
                code,
                result.error.retryable,
            )
        return packet_from_proto(result.output) if result.HasField("output") else None

    def _grpc(self, target: Target) -> GrpcLink:
        link = self.grpc_links.pop(target.address, None)
        if link is None:
            self._evict(self.grpc_links)
            link = GrpcLink(
                target.address, self.backoff, self.retry_timeout_s, max_message_bytes=self.max_message_bytes
            )
        self.grpc_links[target.address] = link  # now the most recently used
        return link

    def _redis(self, target: Target) -> RedisLink:
        link = self.redis_links.pop(target.address, None)
        if link is None:
            self._evict(self.redis_links)
            link = RedisLink(target.host, target.port, self.backoff, self.retry_timeout_s)
        self.redis_links[target.address] = link
        return link

    def _release(self, link: GrpcLink | RedisLink) -> None:
        self._in_use[id(link)] -= 1
        if self._in_use[id(link)] <= 0:
            del self._in_use[id(link)]

    def _evict(self, links: dict[str, _Link]) -> None:
        """Close the least recently used idle links until there is room for one more."""
        for address in list(links):
            if len(links) < self.max_links:
                return
            link = links[address]
            if self._in_use[id(link)] > 0:
                continue  # busy: a send is waiting on it
            del links[address]
            self._in_use.pop(id(link), None)
            task = asyncio.create_task(self._close_link(link))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_link(link: GrpcLink | RedisLink) -> None:
        try:
            await link.close()
        except Exception as exc:
            log.warning("closing link %s failed: %s", link.address, exc)

    async def close(self) -> None:
        """Close every link (packets still waiting are answered UNAVAILABLE)."""
        links: list[GrpcLink | RedisLink] = [*self.grpc_links.values(), *self.redis_links.values()]
        self.grpc_links.clear()
        self.redis_links.clear()
        for link in links:
            await self._close_link(link)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _hops(text: str) -> int:
    """The hop count a packet arrived with (0 when absent or not a number)."""
    try:
        return max(0, int(text))
    except ValueError:
        return 0


__all__ = ["HOPS_HEADER", "MAX_HOPS", "GraphRouter"]
