"""Stream ingress reads the unparsed XREADGROUP reply: RESP2 and RESP3, odd entries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from aios_grpc._pb import pb
from aios_grpc.job import Job, Kind, Result
from aios_grpc.redis.stream_ingress import StreamIngress


class Answering:
    """Stands in for the scheduler: answers every job with its own packet, at once."""

    def __init__(self) -> None:
        self.sessions: list[str] = []

    async def submit(self, job: Job) -> None:
        self.sessions.append(job.packet.session_id)
        job.reply(Result(Kind.OK, output=job.packet))


def packet(sid: str) -> bytes:
    return pb.Packet(session_id=sid, seq_no=1, data="{}").SerializeToString()


@pytest.mark.parametrize("protocol", [2, 3])
async def test_entries_are_read_from_either_protocol(redis_server, protocol: int) -> None:
    sync = redis_server.client()
    sync.xgroup_create("jobs", "blk", id="0", mkstream=True)
    sync.xadd("jobs", {"packet": packet("plain")})
    sync.xadd("jobs", {"trace": b"abc", "packet": packet("second-field")})
    # Pending on this consumer from a previous life, then deleted: history has no fields.
    gone = sync.xadd("jobs", {"packet": packet("gone")})
    sync.xadd("jobs", {"packet": packet("kept")})
    sync.xreadgroup("blk", "me", {"jobs": ">"}, count=4)
    sync.xack("jobs", "blk", *[e for e, _ in sync.xrange("jobs")][:2])
    sync.xdel("jobs", gone)
    sync.xadd("jobs", {"packet": packet("new")})

    client = aioredis.Redis(port=redis_server.port, protocol=protocol)
    scheduler = Answering()
    ingress = StreamIngress(client, scheduler, stream="jobs", group="blk", consumer="me")  # type: ignore[arg-type]
    await ingress.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while sync.xpending("jobs", "blk")["pending"] or ingress.acked < 3:
            assert asyncio.get_running_loop().time() < deadline, (scheduler.sessions, ingress.acked)
            await asyncio.sleep(0.02)
    finally:
        await ingress.stop(1.0)
        await client.aclose()
    # The entry deleted while pending is dead-lettered as "no packet bytes", not lost silently.
    assert scheduler.sessions == ["kept", "new"]
    dead: Any = sync.xrange("jobs:dead")
    assert [f[b"entry_id"] for _, f in dead] == [gone]
    assert b"no packet bytes" in dead[0][1][b"error"]


async def test_a_packet_field_that_is_not_first_is_found(redis_server) -> None:
    sync = redis_server.client()
    sync.xadd("jobs", {"trace": b"abc", "packet": packet("second-field"), "other": b"x"})
    client = aioredis.Redis(port=redis_server.port)
    scheduler = Answering()
    ingress = StreamIngress(client, scheduler, stream="jobs", group="blk", consumer="me")  # type: ignore[arg-type]
    await ingress.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while ingress.acked < 1:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
    finally:
        await ingress.stop(1.0)
        await client.aclose()
    assert scheduler.sessions == ["second-field"]
