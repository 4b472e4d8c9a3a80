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
import json
import logging
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, TypeVar

from redis.exceptions import ResponseError as RedisResponseError

from aios_grpc._text import cut, quote
from aios_grpc.converters import code_from_number, packet_from_proto, packet_to_proto
from aios_grpc.errors import DeadlineExceeded, DownstreamError, InvalidPacket, LinkUnavailable, PacketError, Unavailable
from aios_grpc.packet import AIOSPacket
from aios_grpc.routing.base import Router
from aios_grpc.routing.grpc_link import GrpcLink
from aios_grpc.routing.link_security import LinkSecurityTable
from aios_grpc.routing.pointer import GRPC, Plan, Target, parse_output_ptr
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
"""Default of ``AIOS_ROUTE_MAX_HOPS``: a graph with a cycle would otherwise loop for ever."""
FANOUT_HEADER = "aios-fanout"
"""Packet header with the sends the packet's descendants may still cause (``AIOS_ROUTE_MAX_FANOUT``)."""
PATH_HEADER = "aios-path"
"""Packet header with the block ids a graph packet went through (a JSON list)."""
MAX_FANOUT = 1024
"""Default of ``AIOS_ROUTE_MAX_FANOUT``."""
_SWEEP_S = 0.25
"""How often deliveries are looked at for a caller that went away or a deadline that passed."""
_MAX_CACHED_POINTER = 4096
"""Longest pointer text whose parsed and checked plan is kept (most packets of a graph share one)."""


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
        max_fanout: int = MAX_FANOUT,
        max_hops: int = MAX_HOPS,
        security: LinkSecurityTable | None = None,
    ) -> None:
        self.block_id = block_id
        self.security = security or LinkSecurityTable()  # TLS and tokens per target (AIOS_ROUTE_TLS)
        self.max_fanout = max_fanout
        self.max_hops = max_hops
        # Checked plans by pointer text, shared by the worker threads (check) and the loop
        # (route); a plain dict, emptied when full, so that no lock is needed.
        self._plans: dict[str, Plan] = {}
        # Deliveries in progress and their jobs, swept for callers gone and deadlines passed.
        self._deliveries: dict[asyncio.Future[list[AIOSPacket | BaseException | None]], Job] = {}
        self._stopped: dict[asyncio.Future[list[AIOSPacket | BaseException | None]], PacketError] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._log = _LimitedLog()
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
            AllowList(settings.route_allow, settings.route_allow_queues, reserved=_own_queues(settings)),
            backoff=Backoff(settings.route_backoff_initial_s, settings.route_backoff_max_s),
            retry_timeout_s=settings.route_retry_timeout_s,
            answer_timeout_s=settings.route_answer_timeout_s,
            max_message_bytes=settings.max_message_bytes,
            max_fanout=settings.route_max_fanout,
            max_hops=settings.route_max_hops,
            security=LinkSecurityTable(settings.route_tls),
        )

    def wants(self, job: Job) -> bool:
        """True when the packet names a pointer (an empty one answers the caller directly)."""
        ptr = job.packet.output_ptr
        return bool(ptr) and ptr.strip() not in ("", "{}", "null")

    def check(self, job: Job) -> None:
        """Refuse ``job`` before its block runs: a malformed pointer, a target off the allow-list,
        a packet past its hops or fan-out budget, a graph that led it back here."""
        self._plan(job)

    def _plan(self, job: Job) -> Plan:
        """The checked plan of ``job``'s pointer; raises the ``PacketError`` that refuses it."""
        packet = job.packet
        text = packet.output_ptr
        plan = self._plans.get(text)
        if plan is None:
            plan = parse_output_ptr(text, self.block_id)
            for target in (*plan.targets, *(t for ts in plan.by_status.values() for t in ts)):
                self.allow.check(target)
            if len(text) <= _MAX_CACHED_POINTER:
                if len(self._plans) >= 256:
                    self._plans.clear()
                self._plans[text] = plan
        if not plan.routes:
            return plan
        headers = packet.headers
        if headers:
            if _count(headers.get(HOPS_HEADER, ""), 0) >= self.max_hops:
                raise self._refuse(
                    job, f"output_ptr: the packet went through more than {self.max_hops} hops (a cycle in the graph?)"
                )
            if plan.forward_ptr and PATH_HEADER in headers and self.block_id in _path(headers[PATH_HEADER]):
                shown = " -> ".join(quote(b, 40) for b in [*_path(headers[PATH_HEADER])[-8:], self.block_id])
                raise self._refuse(
                    job, f"output_ptr: the graph led the packet back to block {quote(self.block_id)} ({shown})"
                )
        if self._budget(headers) < len(plan.targets):
            raise self._refuse(job, self._over_budget(len(plan.targets)))
        return plan

    def _budget(self, headers: dict[str, str] | None) -> int:
        """Sends the packet's descendants may still cause: its header's, at most this block's limit."""
        if not headers or FANOUT_HEADER not in headers:
            return self.max_fanout
        return min(self.max_fanout, _count(headers[FANOUT_HEADER], self.max_fanout))

    def _over_budget(self, sends: int) -> str:
        return (
            f"output_ptr: {sends} sends are more than the packet's fan-out budget left "
            f"(AIOS_ROUTE_MAX_FANOUT={self.max_fanout} over all hops; a loop in the graph?)"
        )

    def _refuse(self, job: Job, message: str) -> InvalidPacket:
        self._log.log(
            logging.WARNING, "packet %s/%s refused: %s", quote(job.packet.session_id), job.packet.seq_no, message
        )
        return InvalidPacket(message, stage="route")

    async def route(self, job: Job, outputs: list[AIOSPacket]) -> list[AIOSPacket]:
        """Deliver every output to every target; return what downstream blocks sent back."""
        plan = self._plan(job)
        if not plan.routes:
            return outputs
        if not outputs:
            return []
        headers = job.packet.headers
        hops = _count(headers.get(HOPS_HEADER, ""), 0) + 1 if headers else 1
        # Each output's targets: the entry's, or those its "status" names (on_status).
        chosen = [plan.targets_for(output) for output in outputs]
        sends_n = sum(len(targets) for targets in chosen)
        if sends_n == 0:
            return outputs  # every output's status chose no target: back to the caller
        budget = self._budget(headers)
        if sends_n > budget:
            raise self._refuse(job, self._over_budget(sends_n))
        share = str((budget - sends_n) // sends_n)  # each send's descendants may cause this many more
        path = ""
        if plan.forward_ptr:  # a graph: the next hops must not lead it back here
            seen = _path(headers.get(PATH_HEADER, "")) if headers else []
            path = json.dumps([*seen, self.block_id])
        sends = []
        back: list[AIOSPacket] = []
        for output, targets in zip(outputs, chosen, strict=True):
            if not targets:
                back.append(output)  # its status names no target: it answers the caller
                continue
            msg = packet_to_proto(output)
            msg.output_ptr = plan.forward_ptr
            msg.headers[HOPS_HEADER] = str(hops)
            msg.headers[FANOUT_HEADER] = share
            if path:
                msg.headers[PATH_HEADER] = path
            if job.deadline and not msg.deadline:
                msg.deadline = time.time() + (job.deadline - time.monotonic())  # wall clock on the wire
            for target in targets:
                sends.append(self._deliver(target, msg, job.deadline))
        results = await self._watched(job, asyncio.gather(*sends, return_exceptions=True))
        for res in results:
            if isinstance(res, BaseException):
                raise res
            if res is not None:
                back.append(res)
        return back

    async def _watched(
        self, job: Job, delivery: asyncio.Future[list[AIOSPacket | BaseException | None]]
    ) -> list[AIOSPacket | BaseException | None]:
        """Await ``delivery``, stopped (its sends cancelled, so they leave the links and are not
        retried) once ``job``'s caller is gone or its deadline passed."""
        self._deliveries[delivery] = job
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="aios-route-sweeper")
        try:
            return await delivery
        except asyncio.CancelledError:
            stopped = self._stopped.pop(delivery, None)
            if stopped is None:
                raise
            raise stopped from None
        finally:
            self._deliveries.pop(delivery, None)
            self._stopped.pop(delivery, None)

    async def _sweep(self) -> None:
        """Stop the deliveries whose caller went away or whose deadline passed (one task for all)."""
        while self._deliveries:
            await asyncio.sleep(_SWEEP_S)
            now = time.monotonic()
            for delivery, job in list(self._deliveries.items()):
                if delivery.done():
                    continue
                if job.deadline and now > job.deadline:
                    why: PacketError = DeadlineExceeded("packet deadline passed while it was routed", stage="route")
                elif getattr(job.reply, "gone", False):
                    why = Unavailable("the packet's caller is gone: routing stopped", stage="route")
                else:
                    continue
                self._log.log(
                    logging.INFO, "packet %s/%s: %s", quote(job.packet.session_id), job.packet.seq_no, why.message
                )
                self._stopped[delivery] = why
                delivery.cancel()

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
                f"target {target.describe()} answered {code.name}: {cut(result.error.message)}",
                code,
                result.error.retryable,
            )
        return packet_from_proto(result.output) if result.HasField("output") else None

    def _grpc(self, target: Target) -> GrpcLink:
        link = self.grpc_links.pop(target.address, None)
        if link is None:
            self._evict(self.grpc_links)
            link = GrpcLink(
                target.address,
                self.backoff,
                self.retry_timeout_s,
                max_message_bytes=self.max_message_bytes,
                security=self.security.for_address(target.address),
            )
        self.grpc_links[target.address] = link  # now the most recently used
        return link

    def _redis(self, target: Target) -> RedisLink:
        link = self.redis_links.pop(target.address, None)
        if link is None:
            self._evict(self.redis_links)
            security = self.security.for_address(target.address)
            link = RedisLink(
                target.host,
                target.port,
                self.backoff,
                self.retry_timeout_s,
                **(security.redis_options() if security is not None else {}),
            )
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
        if self._sweeper is not None:
            self._sweeper.cancel()
        links: list[GrpcLink | RedisLink] = [*self.grpc_links.values(), *self.redis_links.values()]
        self.grpc_links.clear()
        self.redis_links.clear()
        for link in links:
            await self._close_link(link)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _own_queues(settings: Settings) -> list[str]:
    """The block's own Redis keys, which a packet may name as a target only when listed by name."""
    own = [settings.redis_ingress_stream, settings.redis_ingress_list, settings.redis_parameter_updates]
    own += [settings.redis_dead_letter_stream, f"{settings.redis_key_prefix}:"]
    return [name for name in own if name and name != ":"]


class _LimitedLog:
    """The routing logger, at most ``per_minute`` lines a minute about packets (refusals, stops),
    then one line counting the rest: a flood of bad packets cannot flood the log."""

    def __init__(self, per_minute: int = 20) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()  # refusals are logged from the worker threads too
        self._since = 0.0
        self._logged = 0
        self._suppressed = 0

    def log(self, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            suppressed = 0
            if now - self._since >= 60.0:
                suppressed, self._suppressed = self._suppressed, 0
                self._since, self._logged = now, 0
            show = self._logged < self.per_minute
            if show:
                self._logged += 1
            else:
                self._suppressed += 1
        if suppressed:
            log.warning("%d more lines about routed packets were left out in the last minute", suppressed)
        if show:
            log.log(level, message, *args)


def _count(text: str, default: int) -> int:
    """A count from a header (``default`` when absent or not a number; never below 0)."""
    if not text or len(text) > 20:
        return default
    try:
        return max(0, int(text))
    except ValueError:
        return default


def _path(text: str) -> list[str]:
    """The block ids of a ``PATH_HEADER`` (empty when absent or malformed)."""
    try:
        path = json.loads(text) if text else []
    except ValueError:
        return []
    return [b for b in path if isinstance(b, str)] if isinstance(path, list) else []


__all__ = ["FANOUT_HEADER", "HOPS_HEADER", "MAX_FANOUT", "MAX_HOPS", "PATH_HEADER", "GraphRouter"]
