"""Several endpoints, failover, round-robin and retries of the Python client, against real servers."""

from __future__ import annotations

import collections
import signal
import threading
import time

import grpc
import pytest
from aios_grpc_client import BlockClient, Endpoint, Unanswered
from aios_grpc_client._endpoints import RetryPolicy
from aios_grpc_client._resend import Flush, Ledger
from aios_grpc_client._types import PacketError, Result, make_packet

from tests.blocks.instances import WhoBlock

WHO = "tests.blocks.instances:WhoBlock"
FAST = {"retry_backoff_s": 0.01, "retry_max_backoff_s": 0.1}


def _terminal_once(results: list[Result], n: int) -> dict[int, Result]:
    terminal = [r for r in results if r.terminal]
    counts = collections.Counter(r.seq_no for r in terminal)
    assert sorted(counts) == list(range(1, n + 1)), sorted(counts)
    assert set(counts.values()) == {1}, [seq for seq, c in counts.items() if c != 1]
    return {r.seq_no: r for r in terminal}


def test_a_server_killed_mid_stream_every_packet_gets_one_terminal_result_through_the_other(spawn):
    first = spawn(WHO, env={"AIOS_INSTANCE_ID": "a", "AIOS_WORKERS": "4"})
    second = spawn(WHO, env={"AIOS_INSTANCE_ID": "b", "AIOS_WORKERS": "4"})
    n = 60
    results: list[Result] = []
    with BlockClient([first.address, second.address], policy="failover", **FAST) as client:
        for result in client.process(({"i": i, "sleep": 0.01} for i in range(n)), session_id="s"):
            results.append(result)
            if len(results) == 10:
                first.proc.send_signal(signal.SIGKILL)  # mid-stream: packets are in flight on it
    by_seq = _terminal_once(results, n)
    assert all(r.ok for r in by_seq.values()), [r.error for r in by_seq.values() if not r.ok]
    instances = [by_seq[s].data["instance"] for s in range(1, n + 1)]
    assert instances[:10] == ["a"] * 10
    assert instances[-1] == "b" and set(instances) == {"a", "b"}
    assert [by_seq[s].data["echo"]["i"] for s in range(1, n + 1)] == list(range(n))
    first.proc.wait(10)


def test_failover_starts_at_the_lowest_priority_and_moves_on_when_it_is_down(serve, spawn):
    low = serve(WhoBlock, instance_id="low")
    high = serve(WhoBlock, instance_id="high")
    endpoints = [Endpoint(high.address, priority=20), {"address": low.address, "priority": 10}]
    with BlockClient(endpoints, **FAST) as client:
        assert client.get_info()["instance_id"] == "low"
        assert client.run({"x": 1}).data["instance"] == "low"
    gone = spawn(WHO, env={"AIOS_INSTANCE_ID": "gone"})
    gone.stop()  # nothing listens there now
    with BlockClient([{"address": gone.address, "priority": 1}, high.address], **FAST) as client:
        assert client.run({"x": 2}).data["instance"] == "high"
        assert client.management("who") == {"instance": "high", "action": "who", "data": {}}


def test_round_robin_spreads_calls_by_weight(serve):
    a = serve(WhoBlock, instance_id="a")
    b = serve(WhoBlock, instance_id="b")
    endpoints = [Endpoint(a.address, weight=2), Endpoint(b.address, weight=1)]
    with BlockClient(endpoints, policy="round_robin") as client:
        calls = collections.Counter(client.get_info()["instance_id"] for _ in range(6))
        streams = collections.Counter(client.run({"i": i}).data["instance"] for i in range(6))
    assert calls == {"a": 4, "b": 2}
    assert streams == {"a": 4, "b": 2}


def test_one_name_with_several_addresses_uses_grpc_round_robin(serve):
    a = serve(WhoBlock, instance_id="a")
    b = serve(WhoBlock, instance_id="b")
    # The ipv4: scheme lists addresses as a dns:/// name of a headless Service resolves to.
    target = f"ipv4:{a.address},{b.address}"
    seen: set[str] = set()
    with BlockClient(target, policy="round_robin") as client:
        end = time.monotonic() + 30
        while seen != {"a", "b"} and time.monotonic() < end:
            seen.add(client.get_info()["instance_id"])
    assert seen == {"a", "b"}


def test_a_retryable_result_is_resent_to_the_next_endpoint(serve):
    a = serve(WhoBlock, instance_id="a")
    b = serve(WhoBlock, instance_id="b")
    with BlockClient([a.address, b.address], **FAST) as client:
        results = list(client.process([{"busy_on": "a"}, {"plain": True}], session_id="r"))
    by_seq = _terminal_once(results, 2)
    assert by_seq[1].ok and by_seq[1].data["instance"] == "b"
    assert by_seq[2].ok and by_seq[2].data["instance"] == "a"


def test_one_endpoint_resends_a_retryable_result_after_a_backoff(serve):
    a = serve(WhoBlock, instance_id="a")
    with BlockClient(a.address, **FAST) as client:
        assert client.run({"busy": 2}).data == {"echo": {"busy": 2}, "instance": "a"}
        # Out of retries: the retryable error itself is the packet's one terminal result.
        out = client.run({"busy": 10}, seq_no=2)
    assert not out.ok and out.error.code == grpc.StatusCode.UNAVAILABLE and out.error.retryable
    assert "a busy" in out.error.message


def test_retries_0_turns_resending_off(serve):
    a = serve(WhoBlock, instance_id="a")
    b = serve(WhoBlock, instance_id="b")
    with BlockClient([a.address, b.address], retries=0) as client:
        out = client.run({"busy": 1})
    assert out.error is not None and out.error.retryable and "a busy" in out.error.message


def test_all_endpoints_down_raises_within_the_retry_bounds(spawn):
    gone = spawn(WHO)
    gone.stop()
    start = time.monotonic()
    with BlockClient([gone.address, gone.address], **FAST) as client:
        with pytest.raises((Unanswered, grpc.RpcError)) as failed:
            list(client.process([{"x": 1}]))
        with pytest.raises(grpc.RpcError) as unary:
            client.get_info(timeout=5)
    assert time.monotonic() - start < 60
    assert unary.value.code() == grpc.StatusCode.UNAVAILABLE
    assert failed.value is not None


def test_bad_endpoint_options_are_clear_errors():
    with pytest.raises(ValueError, match="policy must be one of"):
        BlockClient("127.0.0.1:1", policy="random")
    with pytest.raises(ValueError, match="weight must be an int >= 1"):
        BlockClient([{"address": "127.0.0.1:1", "weight": 0}])
    with pytest.raises(ValueError, match="unknown endpoint keys"):
        BlockClient([{"address": "127.0.0.1:1", "prio": 1}])
    with pytest.raises(ValueError, match="retries must be an int >= 0"):
        BlockClient("127.0.0.1:1", retries=-1)
    with pytest.raises(ValueError, match="no endpoints"):
        BlockClient([])


def test_each_endpoint_sends_its_own_token(serve):
    a = serve(WhoBlock, instance_id="a", auth_tokens=["tok-a"])
    b = serve(WhoBlock, instance_id="b", auth_tokens=["tok-shared"])
    endpoints = [{"address": a.address, "token": "tok-a"}, {"address": b.address, "weight": 1}]
    with BlockClient(endpoints, policy="round_robin", token="tok-shared", retries=0) as client:
        seen = collections.Counter(client.run({"i": i}).data["instance"] for i in range(4))
    assert seen == {"a": 2, "b": 2}
    # The shared token alone is refused by a: its own token was what let the calls in.
    with BlockClient(a.address, token="tok-shared", retries=0) as client:
        with pytest.raises(grpc.RpcError) as refused:
            client.run({"i": 9})
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _result(seq: int, kind: str, retryable: bool = False) -> Result:
    error = PacketError(grpc.StatusCode.UNAVAILABLE, "x", retryable, "block") if kind == "error" else None
    return Result("s", seq, kind, None, error)


def test_the_ledger_lets_through_one_terminal_result_per_packet():
    ledger = Ledger(iter([make_packet({}, session_id="s", seq_no=1)]), RetryPolicy(retries=1), False)
    ledger.begin(0)
    sent: list = []
    taker = threading.Thread(target=lambda: sent.extend(p for p in ledger.packets(0) if not isinstance(p, Flush)))
    taker.start()
    deadline = time.monotonic() + 10
    while not ledger.out and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ledger.take(_result(1, "partial")) is not None
    assert ledger.take(_result(1, "error", retryable=True)) is None  # held for a resend
    while ledger.held and time.monotonic() < deadline:
        time.sleep(0.01)  # the request iterator takes the resend when it is due
    first = ledger.take(_result(1, "ok"))
    assert first is not None and first.ok
    assert ledger.take(_result(1, "ok")) is None  # a duplicate: dropped
    assert ledger.take(_result(1, "partial")) is None
    taker.join(10)
    assert [p.seq_no for p in sent] == [1, 1] and ledger.done()


@pytest.mark.parametrize("options", [{"coalesce": 4}, {"coalesce": 4, "coalesce_window_s": 0.01}, {"coalesce": 0}])
def test_resending_keeps_coalesced_requests_flowing(serve, options):
    a = serve(WhoBlock, instance_id="a")
    b = serve(WhoBlock, instance_id="b")
    # 10 packets in groups of 4: the last group is short and goes once the packets run out;
    # the busy one is resent (to b) while the others are answered.
    packets = [{"i": i} for i in range(10)]
    packets[5] = {"busy_on": "a"}
    with BlockClient([a.address, b.address], **FAST) as client:
        results = list(client.process(packets, session_id="c", timeout=30, **options))
    by_seq = _terminal_once(results, 10)
    assert all(r.ok for r in by_seq.values())
    assert by_seq[6].data["instance"] == "b" and by_seq[1].data["instance"] == "a"
