"""``GrpcLink`` against a raw downstream server: nothing waits forever when the link closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from aios_grpc._pb import pb, pb_grpc
from aios_grpc.routing.grpc_link import GrpcLink, LinkUnavailable
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
