"""Several endpoints, failover, round-robin and resends of ``AsyncBlockClient``, against real servers."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from aios_grpc_client import AsyncBlockClient, Endpoint, Unanswered
from aios_grpc_client._types import Result

from tests.blocks.instances import WhoBlock

WHO = "tests.blocks.instances:WhoBlock"
FAST = {"retry_backoff_s": 0.01, "retry_max_backoff_s": 0.1}


def _terminal_once(results: list[Result], n: int) -> dict[int, Result]:
    terminal = [r for r in results if r.terminal]
    counts = collections.Counter(r.seq_no for r in terminal)
    assert sorted(counts) == list(range(1, n + 1)), sorted(counts)
    assert set(counts.values()) == {1}, [seq for seq, c in counts.items() if c != 1]
    return {r.seq_no: r for r in terminal}


@pytest.mark.parametrize("source", ["iterable", "async_iterable"])
def test_a_server_killed_mid_stream_every_packet_gets_one_terminal_result_through_the_other(spawn, source):
    first = spawn(WHO, env={"AIOS_INSTANCE_ID": "a", "AIOS_WORKERS": "4"})
    second = spawn(WHO, env={"AIOS_INSTANCE_ID": "b", "AIOS_WORKERS": "4"})
    n = 60

    async def produce() -> AsyncIterator[dict]:
        for i in range(n):
            yield {"i": i, "sleep": 0.01}

    async def main() -> list[Result]:
        results: list[Result] = []
        packets = produce() if source == "async_iterable" else ({"i": i, "sleep": 0.01} for i in range(n))
        async with AsyncBlockClient([first.address, second.address], policy="failover", **FAST) as client:
            async for result in client.process(packets, session_id="s"):
                results.append(result)
                if len(results) == 10:
                    first.proc.send_signal(signal.SIGKILL)  # mid-stream: packets are in flight on it
        return results

    by_seq = _terminal_once(asyncio.run(main()), n)
    assert all(r.ok for r in by_seq.values()), [r.error for r in by_seq.values() if not r.ok]
    instances = [by_seq[s].data["instance"] for s in range(1, n + 1)]
    assert instances[:10] == ["a"] * 10
    assert instances[-1] == "b" and set(instances) == {"a", "b"}
    assert [by_seq[s].data["echo"]["i"] for s in range(1, n + 1)] == list(range(n))
    first.proc.wait(10)


def test_failover_starts_at_the_lowest_priority_and_moves_on_when_it_is_down(serve, spawn):
    low = serve(WhoBlock, instance_id="low")
    high = serve(WhoBlock, instance_id="high")
    gone = spawn(WHO, env={"AIOS_INSTANCE_ID": "gone"})
    gone.stop()  # nothing listens there now

    async def main() -> None:
        endpoints = [Endpoint(high.address, priority=20), {"address": low.address, "priority": 10}]
        async with AsyncBlockClient(endpoints, **FAST) as client:
            assert (await client.get_info())["instance_id"] == "low"
            assert (await client.run({"x": 1})).data["instance"] == "low"
        async with AsyncBlockClient([{"address": gone.address, "priority": 1}, high.address], **FAST) as client:
            assert (await client.run({"x": 2})).data["instance"] == "high"
            assert await client.management("who") == {"instance": "high", "action": "who", "data": {}}
            results = [r async for r in client.process([{"i": i} for i in range(5)], session_id="f")]
        by_seq = _terminal_once(results, 5)
        assert {r.data["instance"] for r in by_seq.values()} == {"high"}

    asyncio.run(main())


def test_round_robin_spreads_calls_by_weight(serve):
    a = serve(WhoBlock, instance_id="a")
    b = serve(WhoBlock, instance_id="b")

    async def main() -> tuple[collections.Counter, collections.Counter]:
        async with AsyncBlockClient([Endpoint(a.address, weight=2), Endpoint(b.address)], policy="round_robin") as c:
            calls = collections.Counter([(await c.get_info())["instance_id"] for _ in range(6)])
            streams = collections.Counter([(await c.run({"i": i})).data["instance"] for i in range(6)])
        return calls, streams

    calls, streams = asyncio.run(main())
    assert calls == {"a": 4, "b": 2}
    assert streams == {"a": 4, "b": 2}


@pytest.mark.parametrize("options", [{"coalesce": 4}, {"coalesce": 4, "coalesce_window_s": 0.01}, {"coalesce": 0}])
def test_a_retryable_result_is_resent_to_the_next_endpoint(serve, options):
    a = serve(WhoBlock, instance_id="a")
    b = serve(WhoBlock, instance_id="b")
    packets = [{"i": i} for i in range(10)]
    packets[5] = {"busy_on": "a"}

    async def main() -> list[Result]:
        async with AsyncBlockClient([a.address, b.address], **FAST) as client:
            return [r async for r in client.process(packets, session_id="c", timeout=30, **options)]

    by_seq = _terminal_once(asyncio.run(main()), 10)
    assert all(r.ok for r in by_seq.values())
    assert by_seq[6].data["instance"] == "b" and by_seq[1].data["instance"] == "a"


def test_one_endpoint_resends_a_retryable_result_after_a_backoff(serve):
    a = serve(WhoBlock, instance_id="a")

    async def main() -> tuple[Result, Result]:
        async with AsyncBlockClient(a.address, **FAST) as client:
            return await client.run({"busy": 2}), await client.run({"busy": 10}, seq_no=2)

    resent, out = asyncio.run(main())
    assert resent.data == {"echo": {"busy": 2}, "instance": "a"}
    # Out of retries: the retryable error itself is the packet's one terminal result.
    assert not out.ok and out.error.code == grpc.StatusCode.UNAVAILABLE and out.error.retryable
    assert "a busy" in out.error.message


def test_retries_0_keeps_the_single_stream_behaviour(serve, spawn):
    a = serve(WhoBlock, instance_id="a")
    b = serve(WhoBlock, instance_id="b")
    gone = spawn(WHO)
    gone.stop()

    async def main() -> None:
        async with AsyncBlockClient(a.address, retries=0) as client:
            # Nothing resent: the retryable error is the result, on the one stream.
            out = await client.run({"busy": 1})
            assert out.error is not None and out.error.retryable and "a busy" in out.error.message
            results = [r async for r in client.process([{"i": i} for i in range(3)], session_id="z")]
            assert [r.data["instance"] for r in results] == ["a", "a", "a"]
        async with AsyncBlockClient([a.address, b.address], retries=0) as client:
            out = await client.run({"busy": 1}, seq_no=7)
            assert out.error is not None and out.error.retryable and "a busy" in out.error.message
        async with AsyncBlockClient(gone.address, retries=0) as client:
            # A server that is not there: the stream's own gRPC error, as before.
            with pytest.raises(grpc.RpcError) as failed:
                await client.run({"x": 1}, timeout=10)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE

    asyncio.run(main())


def test_all_endpoints_down_raises_within_the_retry_bounds(spawn):
    gone = spawn(WHO)
    gone.stop()

    async def main() -> None:
        async with AsyncBlockClient([gone.address, gone.address], **FAST) as client:
            with pytest.raises((Unanswered, grpc.RpcError)):
                [r async for r in client.process([{"x": 1}])]
            with pytest.raises(grpc.RpcError) as unary:
                await client.get_info(timeout=5)
            assert unary.value.code() == grpc.StatusCode.UNAVAILABLE

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 60


def test_bad_endpoint_options_are_clear_errors():
    with pytest.raises(ValueError, match="policy must be one of"):
        AsyncBlockClient("127.0.0.1:1", policy="random")
    with pytest.raises(ValueError, match="weight must be an int >= 1"):
        AsyncBlockClient([{"address": "127.0.0.1:1", "weight": 0}])
    with pytest.raises(ValueError, match="retries must be an int >= 0"):
        AsyncBlockClient("127.0.0.1:1", retries=-1)
    with pytest.raises(ValueError, match="no endpoints"):
        AsyncBlockClient([])


def test_each_endpoint_sends_its_own_token(serve):
    a = serve(WhoBlock, instance_id="a", auth_tokens=["tok-a"])
    b = serve(WhoBlock, instance_id="b", auth_tokens=["tok-shared"])
    endpoints = [{"address": a.address, "token": "tok-a"}, {"address": b.address, "weight": 1}]

    async def main() -> collections.Counter:
        async with AsyncBlockClient(endpoints, policy="round_robin", token="tok-shared", retries=0) as client:
            seen = collections.Counter([(await client.run({"i": i})).data["instance"] for i in range(4)])
        async with AsyncBlockClient(a.address, token="tok-shared", retries=0) as client:
            with pytest.raises(grpc.RpcError) as refused:
                await client.run({"i": 9})
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        return seen

    assert asyncio.run(main()) == {"a": 2, "b": 2}
