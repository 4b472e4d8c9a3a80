"""The PARAMETER_UPDATES list: an update taken by an instance that dies is not lost."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from aios_grpc_client import BlockClient

from aios_grpc.redis.claims import ListClaims
from aios_grpc.redis.params import ParameterBroadcast
from tests.blocks.graph import StageBlock
from tests.redis.test_parameters import Recorder, wait_async
from tests.redis.test_stream_ingress import wait_for

LIST = "PARAMETER_UPDATES"


class HangingUpdateBlock(StageBlock):
    """A ``StageBlock`` whose ``on_update`` never returns when ``HANG_ON_UPDATE`` is set."""

    def on_update(self, params):
        if os.environ.get("HANG_ON_UPDATE"):
            time.sleep(3600)
        return super().on_update(params)


class Gate(Recorder):
    """Records what it applied; the first call waits until ``open`` is set (for ever if never)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.open = asyncio.Event()

    async def __call__(self, params: dict[str, Any]) -> None:
        self.entered.set()
        await self.open.wait()
        await super().__call__(params)


async def crash(broadcast: ParameterBroadcast) -> None:
    """Stop ``broadcast`` the way a killed process stops: no clean-up, no last writes."""
    broadcast._closing = True
    for task in broadcast._tasks:
        task.cancel()
    await asyncio.wait(broadcast._tasks, timeout=3.0)
    broadcast._tasks = []
    await broadcast.client.aclose()


def stream_entries(client: Any, block_id: str = "blk") -> list[tuple[str, dict[str, Any]]]:
    """(origin, params) of every broadcast written for ``block_id``."""
    return [
        (fields[b"origin"].decode(), json.loads(fields[b"params"]))
        for _, fields in client.xrange(f"aios:params:{block_id}")
    ]


async def test_updates_are_applied_once_per_instance_when_nothing_crashes(redis_server) -> None:
    client = redis_server.client()
    got = {"a": Recorder(), "b": Recorder()}
    instances = [ParameterBroadcast(redis_server.url, "blk", name, heartbeat_s=0.2) for name in got]
    for instance, name in zip(instances, got, strict=True):
        await instance.start(got[name])
    try:
        n = 30
        for i in range(n):
            client.lpush(LIST, json.dumps({"step": i}))
        for name in got:
            await wait_async(lambda name=name: len(got[name].applied) >= n, 10, f"every update on {name}")
        await asyncio.sleep(0.5)  # room for a duplicate to show up
        for name, recorder in got.items():
            assert sorted(p["step"] for p in recorder.applied) == list(range(n)), name
        # Each update was taken by one instance and broadcast once.
        entries = stream_entries(client)
        assert sorted(p["step"] for _, p in entries) == list(range(n))
        assert {origin for origin, _ in entries} <= {"a", "b"}
        assert client.llen(LIST) == 0
        assert all(client.llen(f"{LIST}:processing:{name}") == 0 for name in got)
        assert sum(i.recovered for i in instances) == 0
    finally:
        for instance in instances:
            await instance.close()


async def test_an_update_taken_by_an_instance_that_crashes_before_broadcasting_is_applied_by_another(
    redis_server,
) -> None:
    client = redis_server.client()
    stuck = Gate()  # never opened: the crash comes between the take and the broadcast
    doomed = ParameterBroadcast(redis_server.url, "blk", "doomed", heartbeat_s=0.2)
    await doomed.start(stuck)
    client.lpush(LIST, json.dumps({"mode": "fast"}))
    await asyncio.wait_for(stuck.entered.wait(), 5)
    assert client.lrange(f"{LIST}:processing:doomed", 0, -1) == [json.dumps({"mode": "fast"}).encode()]
    await crash(doomed)
    assert client.llen(f"{LIST}:processing:doomed") == 1 and stream_entries(client) == []

    survivor_got = Recorder()
    survivor = ParameterBroadcast(redis_server.url, "blk", "survivor", heartbeat_s=0.2)
    await survivor.start(survivor_got)
    try:
        await wait_async(lambda: survivor_got.applied == [{"mode": "fast"}], 10, "the recovered update")
        await wait_async(lambda: len(stream_entries(client)) == 1, 5, "its broadcast")
        assert stream_entries(client) == [("survivor", {"mode": "fast"})]
        assert survivor.recovered == 1
        assert not client.exists(f"{LIST}:processing:doomed") and client.llen(LIST) == 0
        assert client.llen(f"{LIST}:processing:survivor") == 0
        await asyncio.sleep(0.6)  # several more heartbeats: nothing is recovered twice
        assert survivor_got.applied == [{"mode": "fast"}] and len(stream_entries(client)) == 1
    finally:
        await survivor.close()


def test_a_killed_instance_s_update_is_applied_by_another_instance(spawn, serve, redis_server) -> None:
    client = redis_server.client()
    env = {
        "AIOS_REDIS_URL": redis_server.url,
        "AIOS_BLOCK_ID": "blk",
        "AIOS_INSTANCE_ID": "doomed",
        "AIOS_REDIS_CLAIM_IDLE_S": "0.3",
        "HANG_ON_UPDATE": "1",
    }
    doomed = spawn("tests.redis.test_parameter_updates:HangingUpdateBlock", env=env)
    client.lpush(LIST, json.dumps({"threshold": 0.25}))
    wait_for(lambda: client.llen(f"{LIST}:processing:doomed") == 1, 15, "the doomed instance to take the update")
    doomed.proc.kill()  # SIGKILL: on_update is still running, nothing was broadcast
    doomed.proc.wait(10)
    assert stream_entries(client) == []
    survivor = serve(StageBlock, block_id="blk", redis_url=redis_server.url, redis_claim_idle_s=0.3)
    with BlockClient(survivor.address) as c:
        wait_for(lambda: c.management("params").get("threshold") == 0.25, 20, "the update on the survivor")
    wait_for(lambda: len(stream_entries(client)) == 1, 5, "the broadcast")
    assert stream_entries(client)[0][1] == {"threshold": 0.25}
    assert not client.exists(f"{LIST}:processing:doomed") and client.llen(LIST) == 0


async def test_close_gives_back_an_update_it_took_but_did_not_broadcast(redis_server) -> None:
    client = redis_server.client()
    stuck = Gate()
    leaving = ParameterBroadcast(redis_server.url, "blk", "leaving", heartbeat_s=30)
    await leaving.start(stuck)
    client.lpush(LIST, json.dumps({"k": 1}))
    await asyncio.wait_for(stuck.entered.wait(), 5)
    await leaving.close()
    # Back at once, not after the 90 s heartbeat, and the heartbeat key is gone.
    assert client.lrange(LIST, 0, -1) == [json.dumps({"k": 1}).encode()]
    assert not client.exists(f"{LIST}:processing:leaving") and not client.exists(f"{LIST}:alive:leaving")


async def test_a_restarted_instance_takes_its_own_leftovers_again_in_order(redis_server) -> None:
    client = redis_server.client()
    # Taken by a previous run of instance "a" (newest on the left), never broadcast.
    client.lpush(f"{LIST}:processing:a", json.dumps({"step": 0}), json.dumps({"step": 1}))
    client.lpush(LIST, json.dumps({"step": 2}))
    client.set(f"{LIST}:alive:a", b"1")  # its old heartbeat has not expired yet
    got = Recorder()
    again = ParameterBroadcast(redis_server.url, "blk", "a", heartbeat_s=0.2)
    await again.start(got)
    try:
        await wait_async(lambda: len(got.applied) == 3, 5, "the leftovers and the new update")
        assert [p["step"] for p in got.applied] == [0, 1, 2]
        assert again.recovered == 2
        await wait_async(lambda: client.llen(f"{LIST}:processing:a") == 0, 5, "the processing list to empty")
    finally:
        await again.close()


async def test_bad_or_rejected_updates_go_to_the_dead_letter_list(redis_server) -> None:
    client = redis_server.client()

    async def apply(params: dict[str, Any]) -> None:
        if "bad" in params:
            raise ValueError("bad is not a parameter")

    instance = ParameterBroadcast(redis_server.url, "blk", "a", heartbeat_s=0.2)
    await instance.start(apply)
    try:
        for item in ("{not json", "[1, 2]", json.dumps({"bad": 1}), json.dumps({"good": 1})):
            client.lpush(LIST, item)
        await wait_async(lambda: len(stream_entries(client)) == 1, 5, "the good update's broadcast")
        assert stream_entries(client) == [("a", {"good": 1})]
        dead = [json.loads(x) for x in reversed(client.lrange(f"{LIST}:dead", 0, -1))]
        assert [d["item"] for d in dead] == ["{not json", "[1, 2]", json.dumps({"bad": 1})]
        assert "not JSON" in dead[0]["error"] and "not a JSON object" in dead[1]["error"]
        assert "bad is not a parameter" in dead[2]["error"]
        assert client.llen(f"{LIST}:processing:a") == 0
    finally:
        await instance.close()


def test_list_claims_rejects_a_bad_configuration(redis_server) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_server.url)
    for kwargs, message in (
        ({"queue": "", "owner": "a"}, "queue name"),
        ({"queue": "q", "owner": ""}, "owner"),
        ({"queue": "q", "owner": "a", "heartbeat_s": 0}, "heartbeat_s"),
    ):
        try:
            ListClaims(client, **kwargs)
        except ValueError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"ListClaims accepted {kwargs}")


async def test_recovery_ignores_lists_of_other_queues_with_glob_characters(redis_server) -> None:
    client = redis_server.client()
    # A queue whose name is a glob pattern must not match (and steal from) other queues.
    client.lpush("jobs:processing:gone", b"x")
    import redis.asyncio as aioredis

    async_client = aioredis.Redis.from_url(redis_server.url)
    try:
        claims = ListClaims(async_client, "j*", "me")
        assert await claims.recover_dead() == 0
        assert client.llen("jobs:processing:gone") == 1
        client.lpush("j*:processing:gone", b"y")
        assert await claims.recover_dead() == 1
        assert client.lrange("j*", 0, -1) == [b"y"]
    finally:
        await async_client.aclose()


async def test_an_update_that_kills_every_instance_taking_it_is_dead_lettered_after_max_deliveries(
    redis_server,
) -> None:
    client = redis_server.client()
    poison = json.dumps({"mode": "poison"})
    client.lpush(LIST, poison)
    # Two instances in turn take it and die inside on_update (two deliveries)...
    for name in ("first", "second"):
        stuck = Gate()
        doomed = ParameterBroadcast(redis_server.url, "blk", name, heartbeat_s=0.2, max_deliveries=2)
        await doomed.start(stuck)
        await asyncio.wait_for(stuck.entered.wait(), 10)
        await crash(doomed)
        assert client.lrange(f"{LIST}:processing:{name}", 0, -1) == [poison.encode()]
    # ...the third takes it a third time and does not apply it: it goes to the dead letters.
    got = Recorder()
    survivor = ParameterBroadcast(redis_server.url, "blk", "survivor", heartbeat_s=0.2, max_deliveries=2)
    await survivor.start(got)
    try:
        await wait_async(lambda: client.llen(f"{LIST}:dead") == 1, 10, "the dead letter")
        dead = json.loads(client.lindex(f"{LIST}:dead", 0))
        assert dead["item"] == poison and dead["queue"] == LIST
        assert "delivered 3 times (AIOS_REDIS_MAX_DELIVERIES=2)" in dead["error"]
        assert got.applied == [] and stream_entries(client) == []
        assert not any(client.exists(f"{LIST}:processing:{n}") for n in ("first", "second", "survivor"))
        assert client.llen(LIST) == 0 and client.hlen(f"{LIST}:deliveries") == 0
        # The list goes on: a later update is applied and broadcast.
        client.lpush(LIST, json.dumps({"mode": "fine"}))
        await wait_async(lambda: got.applied == [{"mode": "fine"}], 10, "the next update")
        await wait_async(lambda: len(stream_entries(client)) == 1, 5, "its broadcast")
        assert client.hlen(f"{LIST}:deliveries") == 0
    finally:
        await survivor.close()


async def test_an_update_applied_on_its_last_allowed_delivery_is_broadcast_and_its_count_removed(
    redis_server,
) -> None:
    client = redis_server.client()
    update = json.dumps({"mode": "late"})
    client.lpush(LIST, update)
    stuck = Gate()
    doomed = ParameterBroadcast(redis_server.url, "blk", "doomed", heartbeat_s=0.2, max_deliveries=2)
    await doomed.start(stuck)
    await asyncio.wait_for(stuck.entered.wait(), 10)
    await crash(doomed)
    got = Recorder()
    survivor = ParameterBroadcast(redis_server.url, "blk", "survivor", heartbeat_s=0.2, max_deliveries=2)
    await survivor.start(got)
    try:
        await wait_async(lambda: len(stream_entries(client)) == 1, 10, "the broadcast on the second delivery")
        assert got.applied == [{"mode": "late"}] and stream_entries(client) == [("survivor", {"mode": "late"})]
        assert client.llen(f"{LIST}:dead") == 0 and client.hlen(f"{LIST}:deliveries") == 0
    finally:
        await survivor.close()


def test_a_killed_instance_s_update_is_dead_lettered_with_max_deliveries_1(spawn, serve, redis_server) -> None:
    client = redis_server.client()
    env = {
        "AIOS_REDIS_URL": redis_server.url,
        "AIOS_BLOCK_ID": "blk",
        "AIOS_INSTANCE_ID": "doomed",
        "AIOS_REDIS_CLAIM_IDLE_S": "0.3",
        "AIOS_REDIS_MAX_DELIVERIES": "1",
        "HANG_ON_UPDATE": "1",
    }
    doomed = spawn("tests.redis.test_parameter_updates:HangingUpdateBlock", env=env)
    client.lpush(LIST, json.dumps({"threshold": 0.25}))
    wait_for(lambda: client.llen(f"{LIST}:processing:doomed") == 1, 15, "the doomed instance to take the update")
    # The take is counted just after the item moved (BLMOVE, then HINCRBY): killed in
    # between, the take would not count and the survivor would apply the update.
    wait_for(lambda: client.hlen(f"{LIST}:deliveries") == 1, 15, "the doomed instance to count its take")
    doomed.proc.kill()
    doomed.proc.wait(10)
    survivor = serve(
        StageBlock, block_id="blk", redis_url=redis_server.url, redis_claim_idle_s=0.3, redis_max_deliveries=1
    )
    wait_for(lambda: client.llen(f"{LIST}:dead") == 1, 20, "the dead letter")
    assert "delivered 2 times (AIOS_REDIS_MAX_DELIVERIES=1)" in json.loads(client.lindex(f"{LIST}:dead", 0))["error"]
    with BlockClient(survivor.address) as c:
        assert "threshold" not in c.management("params")
    assert stream_entries(client) == [] and not client.exists(f"{LIST}:processing:doomed")


def test_list_claims_rejects_an_owner_id_that_looks_like_a_processing_list(redis_server) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_server.url)
    try:
        ListClaims(client, "q", "a:processing:b")
    except ValueError as exc:
        assert ":processing:" in str(exc)
    else:
        raise AssertionError("ListClaims accepted an owner id with ':processing:' in it")


def test_parameter_broadcast_rejects_max_deliveries_below_1(redis_server) -> None:
    try:
        ParameterBroadcast(redis_server.url, "blk", "a", max_deliveries=0)
    except ValueError as exc:
        assert "max_deliveries" in str(exc)
    else:
        raise AssertionError("ParameterBroadcast accepted max_deliveries=0")
