"""Parameter broadcast through a Redis Stream: nothing lost while an instance is cut off."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
from aios_grpc_client import BlockClient

from aios_grpc.redis.params import MAX_LEN, ParameterBroadcast
from tests.blocks.graph import StageBlock
from tests.redis.test_stream_ingress import wait_for


def test_update_made_while_redis_is_down_reaches_every_instance_and_later_ones(serve, redis_server) -> None:
    one = serve(StageBlock, block_id="blk", redis_url=redis_server.url)
    two = serve(StageBlock, block_id="blk", redis_url=redis_server.url)
    with BlockClient(one.address) as c1, BlockClient(two.address) as c2:
        c1.set_parameters({"threshold": 0.5})
        wait_for(lambda: c2.management("params").get("threshold") == 0.5, 10, "the first broadcast")
        redis_server.stop()
        try:
            # Applied here at once; the broadcast waits for Redis.
            assert c1.set_parameters({"threshold": 0.9, "mode": "slow"})["applied"]["threshold"] == 0.9
            assert c2.management("params")["threshold"] == 0.5
        finally:
            redis_server.start()
        wait_for(lambda: c2.management("params").get("threshold") == 0.9, 20, "the update after the restart")
        assert c2.management("params")["mode"] == "slow"
        c2.set_parameters({"mode": "fast"})
        wait_for(lambda: c1.management("params").get("mode") == "fast", 10, "the broadcast back")
    # An instance started now begins with the block's current parameters.
    three = serve(StageBlock, block_id="blk", redis_url=redis_server.url)
    with BlockClient(three.address) as c3:
        params = c3.management("params")
        assert params["threshold"] == 0.9 and params["mode"] == "fast"
        assert c3.get_info()["parameters"]["threshold"] == 0.9
    other = serve(StageBlock, block_id="other", redis_url=redis_server.url)
    with BlockClient(other.address) as c4:
        assert "threshold" not in c4.management("params")


class Recorder:
    """What one ``ParameterBroadcast`` applied, in order."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    async def __call__(self, params: dict[str, Any]) -> None:
        self.applied.append(params)

    def merged(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.applied:
            out.update(p)
        return out


async def go_away(broadcast: ParameterBroadcast) -> None:
    """Cut ``broadcast`` off from Redis (its position in the stream is kept)."""
    await broadcast.close()


def come_back(broadcast: ParameterBroadcast, url: str) -> None:
    """Reconnect ``broadcast`` and let it follow the stream again from where it was."""
    broadcast.client = aioredis.Redis.from_url(url)
    broadcast._closing = False
    broadcast._tasks = [asyncio.create_task(broadcast._listen())]


async def wait_async(predicate: Any, timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_paused_listener_catches_up_in_order_from_its_last_id(redis_server) -> None:
    sender, receiver = (
        ParameterBroadcast(redis_server.url, "blk", "a"),
        ParameterBroadcast(redis_server.url, "blk", "b"),
    )
    got = Recorder()
    await sender.start(Recorder())
    await receiver.start(got)
    try:
        await sender.publish({"step": 0})
        await wait_async(lambda: got.applied == [{"step": 0}], 5, "the first update")
        await go_away(receiver)  # a pub/sub message would be lost now
        for i in range(1, 6):
            await sender.publish({"step": i, f"k{i}": i})
        come_back(receiver, redis_server.url)
        await wait_async(lambda: len(got.applied) == 6, 5, "the missed updates")
        assert [p["step"] for p in got.applied] == list(range(6))
        # The snapshot holds the merged parameters; a new instance starts from it.
        late = Recorder()
        newcomer = ParameterBroadcast(redis_server.url, "blk", "c")
        await newcomer.start(late)
        try:
            assert late.applied == [got.merged()]
        finally:
            await newcomer.close()
    finally:
        await sender.close()
        await receiver.close()


async def test_a_listener_away_longer_than_the_stream_keeps_applies_the_current_parameters(redis_server) -> None:
    sender, receiver = (
        ParameterBroadcast(redis_server.url, "blk", "a"),
        ParameterBroadcast(redis_server.url, "blk", "b"),
    )
    got = Recorder()
    await sender.start(Recorder())
    await receiver.start(got)
    try:
        await go_away(receiver)
        n = MAX_LEN * 2
        for i in range(n):
            await sender.publish({"step": i, f"only{i % 3}": i})
        client = redis_server.client()
        assert client.xlen("aios:params:blk") < n  # trimmed: entry by entry is no longer possible
        come_back(receiver, redis_server.url)
        await wait_async(lambda: got.merged().get("step") == n - 1, 10, "the current parameters")
        assert got.merged() == {"step": n - 1, **{f"only{i % 3}": i for i in range(n - 3, n)}}
        # It resynced from the snapshot instead of applying the trimmed history one by one.
        assert len(got.applied) < n
    finally:
        await sender.close()
        await receiver.close()


async def test_bad_entries_are_logged_and_skipped(redis_server, caplog) -> None:
    got = Recorder()
    receiver = ParameterBroadcast(redis_server.url, "blk", "b")
    await receiver.start(got)
    try:
        client = redis_server.client()
        client.xadd("aios:params:blk", {"origin": "x", "params": "{not json"})
        client.xadd("aios:params:blk", {"nothing": "here"})
        client.xadd("aios:params:blk", {"origin": "x", "params": json.dumps({"ok": True})})
        await wait_async(lambda: got.applied == [{"ok": True}], 5, "the good update")
        assert sum("bad parameter update" in r.getMessage() for r in caplog.records) == 2
    finally:
        await receiver.close()
