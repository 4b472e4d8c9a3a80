"""``GrpcLink`` and ``GraphRouter`` against a raw downstream server.

Nothing waits forever when the link closes; a caller that gives up (cancelled, past its
deadline) leaves the link at once, and the downstream's late answer for it is ignored.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from aios_grpc._pb import pb, pb_grpc
from aios_grpc.errors import DeadlineExceeded, LinkUnavailable
from aios_grpc.job import Job
from aios_grpc.packet import AIOSPacket
from aios_grpc.routing import AllowList, GraphRouter
from aios_grpc.routing.grpc_link import GrpcLink
from aios_grpc.routing.policy import Backoff


class _Downstream(pb_grpc.BlockServiceServicer):
    """Answers session "busy" UNAVAILABLE (retryable) and never answers session "silent"."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def Process(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in request_iterator:
            packets = list(request.packets) or [request.packet]
            for packet in packets:
                self.seen.append(packet.session_id)
                if packet.session_id == "busy":
                    error = pb.PacketError(code=grpc.StatusCode.UNAVAILABLE.value[0], message="full", retryable=True)
                    yield pb.ProcessResponse(
                        result=pb.PacketResult(
                            session_id=packet.session_id,
                            seq_no=packet.seq_no,
                            kind=pb.RESULT_KIND_ERROR,
                            error=error,
                        )
                    )


async def test_close_answers_packets_parked_for_a_retry_and_packets_in_flight():
    downstream = _Downstream()
    server = grpc.aio.server()
    pb_grpc.add_BlockServiceServicer_to_server(downstream, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # A long backoff: the "busy" packet is parked (waiting to be resent) when the link closes.
    link = GrpcLink(f"127.0.0.1:{port}", Backoff(5.0, 5.0), retry_timeout_s=30)
    try:
        parked = asyncio.create_task(link.send(pb.Packet(session_id="busy", seq_no=1)))
        in_flight = asyncio.create_task(link.send(pb.Packet(session_id="silent", seq_no=1)))
        for _ in range(200):
            if {"busy", "silent"} <= set(downstream.seen):
                break
            await asyncio.sleep(0.02)
        assert {"busy", "silent"} <= set(downstream.seen)
        await asyncio.sleep(0.1)  # the retryable answer has come back
        await link.close()
        for task in (parked, in_flight):
            with pytest.raises(LinkUnavailable, match="closing"):
                await asyncio.wait_for(task, 5)
    finally:
        await server.stop(0)


async def _serve(servicer: Any) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    pb_grpc.add_BlockServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _until(predicate: Any, what: str) -> None:
    for _ in range(250):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class _Held(pb_grpc.BlockServiceServicer):
    """Answers every packet OK with its own data as output, but only once ``release`` is set."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.deadlines: list[float] = []
        self.release = asyncio.Event()

    async def Process(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in request_iterator:
            for packet in list(request.packets) or [request.packet]:
                self.seen.append(packet.data)
                self.deadlines.append(packet.deadline)
                await self.release.wait()
                yield pb.ProcessResponse(
                    result=pb.PacketResult(
                        session_id=packet.session_id,
                        seq_no=packet.seq_no,
                        kind=pb.RESULT_KIND_OK,
                        output=pb.Packet(session_id=packet.session_id, seq_no=packet.seq_no, data=packet.data),
                    )
                )


async def test_a_caller_that_gives_up_leaves_the_link_and_its_late_answer_is_ignored(caplog):
    downstream = _Held()
    server, address = await _serve(downstream)
    link = GrpcLink(address, Backoff(0.05, 0.5), retry_timeout_s=30)
    try:
        old = pb.Packet(session_id="s", seq_no=1, data="old")
        baseline = sys.getrefcount(old)
        gone = asyncio.create_task(link.send(old))
        await _until(lambda: downstream.seen == ["old"], "the downstream to get the packet")
        assert link.pending == 1
        gone.cancel()
        await asyncio.wait([gone])
        assert gone.cancelled()
        del gone  # its CancelledError's traceback holds send()'s frame, and so the packet
        gc.collect()
        # Dropped at once, not when the downstream answers: the link keeps neither the
        # entry nor the packet (its files may be megabytes).
        assert link.pending == 0
        assert sys.getrefcount(old) == baseline
        # Same key, sent while the downstream still owes the answer to the first one: the
        # first answer must not be taken for this packet's.
        again = asyncio.create_task(link.send(pb.Packet(session_id="s", seq_no=1, data="new")))
        await asyncio.sleep(0.1)
        assert link.pending == 1
        with caplog.at_level(logging.DEBUG, logger="aios_grpc.routing"):
            downstream.release.set()
            result = await asyncio.wait_for(again, 5)
        assert result.kind == pb.RESULT_KIND_OK and result.output.data == "new"
        assert downstream.seen == ["old", "new"]
        assert link.pending == 0 and link.streams_opened == 1
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    finally:
        await link.close()
        await server.stop(0)


async def test_a_caller_that_gives_up_while_its_packet_waits_to_be_resent_or_sent():
    downstream = _Downstream()
    server, address = await _serve(downstream)
    link = GrpcLink(address, Backoff(0.3, 0.3), retry_timeout_s=30)
    try:
        # Answered retryable: parked for a resend 0.3s later; the caller leaves first.
        parked = asyncio.create_task(link.send(pb.Packet(session_id="busy", seq_no=1)))
        await _until(lambda: "busy" in downstream.seen, "the first attempt")
        await _until(lambda: link.pending == 1 and not link._backlog and not link._waiting, "the packet parked")
        parked.cancel()
        await asyncio.gather(parked, return_exceptions=True)
        assert link.pending == 0
        await asyncio.sleep(0.6)
        assert downstream.seen.count("busy") == 1  # never resent
    finally:
        await link.close()
        await server.stop(0)
    # A target that is down: the packet waits in the backlog between attempts.
    down = GrpcLink(address, Backoff(0.2, 0.2), retry_timeout_s=30)
    try:
        waiting = asyncio.create_task(down.send(pb.Packet(session_id="s", seq_no=1)))
        await asyncio.sleep(0.3)
        assert down.pending == 1
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert down.pending == 0
    finally:
        await down.close()


async def test_the_router_stops_waiting_at_the_jobs_deadline_and_forwards_it():
    downstream = _Held()
    server, address = await _serve(downstream)
    host, port = address.rsplit(":", 1)
    router = GraphRouter("a", AllowList(["127.0.0.1:*"]), retry_timeout_s=30, answer_timeout_s=30)
    ptr = json.dumps({"outputs": [{"host": host, "port": int(port), "transport": "grpc"}]})
    try:
        job = Job(AIOSPacket(session_id="s", seq_no=1, output_ptr=ptr), lambda r: None)
        job.deadline = time.monotonic() + 0.3
        wall = time.time() + 0.3
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=f"deadline passed before grpc://{address} answered"):
            await router.route(job, [AIOSPacket(session_id="s", seq_no=1, data="late")])
        took = time.monotonic() - start
        assert took < 30 / 10  # the job's deadline, not the router's answer timeout
        link = router.grpc_links[address]
        assert link.pending == 0
        # The downstream got the deadline too (wall-clock seconds on the wire).
        assert downstream.seen == ["late"]
        assert abs(downstream.deadlines[0] - wall) < 0.2
        # Past its deadline a job is not sent at all.
        job.deadline = time.monotonic() - 1
        with pytest.raises(DeadlineExceeded, match="before it was sent"):
            await router.route(job, [AIOSPacket(session_id="s", seq_no=1, data="never")])
        # A job without a deadline gets its own answer, the late one being ignored.
        downstream.release.set()
        job = Job(AIOSPacket(session_id="s", seq_no=1, output_ptr=ptr), lambda r: None)
        back = await router.route(job, [AIOSPacket(session_id="s", seq_no=1, data="on time")])
        assert [p.data for p in back] == ["on time"] and downstream.deadlines[-1] == 0.0
        assert downstream.seen == ["late", "on time"]
    finally:
        await router.close()
        await server.stop(0)
