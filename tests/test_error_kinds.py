"""Error kinds a block names itself: returned as ``(False, Transient(...))`` or raised."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet

from aios_grpc import (
    AIOSPacket,
    BlockTester,
    InvalidInput,
    InvalidPacket,
    OnDataResult,
    Permanent,
    PreProcessResult,
    Transient,
)
from tests.helpers import add_packets, pending, result_sessions, wait_for


class Kinds:
    """Fails as ``data["kind"]`` says; ``data["how"]`` = "return" or "raise"."""

    def __init__(self, context: Any) -> None:
        self.seen: dict[str, int] = {}

    def on_preprocess(self, packet: Any) -> tuple[bool, Any]:
        data = packet.json()  # validate_json off: our own parse may meet bad JSON here
        if data.get("kind") == "bad-input-early":
            return False, InvalidInput("field 'x' is missing")
        return True, [PreProcessResult(packet=packet, extra_data=data)]

    def on_data(self, entry: PreProcessResult) -> tuple[bool, Any]:
        data = entry.extra_data
        sid = entry.packet.session_id
        self.seen[sid] = self.seen.get(sid, 0) + 1
        kind = data.get("kind")
        if kind == "flaky" and self.seen[sid] > 1:
            return True, OnDataResult(output={"attempts": self.seen[sid]})
        error = {
            "flaky": Transient("upstream timeout"),
            "transient": Transient("upstream timeout"),
            "permanent": Permanent("model cannot read this format"),
            "bad-input": InvalidInput("value must be positive"),
        }.get(kind)
        if error is None:
            return True, OnDataResult(output={"attempts": self.seen[sid]})
        if data.get("how") == "raise":
            raise error
        return False, error


CASES = [
    ("transient", grpc.StatusCode.UNAVAILABLE, True, "upstream timeout"),
    ("permanent", grpc.StatusCode.FAILED_PRECONDITION, False, "model cannot read this format"),
    ("bad-input", grpc.StatusCode.INVALID_ARGUMENT, False, "value must be positive"),
    ("bad-input-early", grpc.StatusCode.INVALID_ARGUMENT, False, "field 'x' is missing"),
]


@pytest.mark.parametrize("how", ["return", "raise"])
def test_each_kind_maps_to_its_code_in_the_server_and_the_tester(serve: Any, how: str) -> None:
    served = serve(Kinds)
    with BlockClient(served.address) as client:
        for kind, code, retryable, message in CASES:
            result = client.run({"kind": kind, "how": how}, timeout=30)
            assert result.error is not None, kind
            assert (result.error.code, result.error.retryable) == (code, retryable), kind
            assert message in result.error.message
            with pytest.raises((Transient, Permanent, InvalidInput)) as raised:
                BlockTester(Kinds).run({"kind": kind, "how": how})
            assert raised.value.code == code and raised.value.retryable == retryable


def test_bad_json_met_by_packet_json_is_invalid_argument_not_internal(serve: Any) -> None:
    served = serve(Kinds, validate_json=False)
    with BlockClient(served.address) as client:
        result = next(client.process([make_packet("{nope", session_id="s", seq_no=1)], timeout=30))
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT and "not valid JSON" in result.error.message
    with pytest.raises(InvalidPacket, match="not valid JSON"):
        BlockTester(Kinds, validate_json=False).run("{nope")
    with pytest.raises(ValueError):  # a block's own `except ValueError` still catches it
        AIOSPacket(data="{nope").json()


def test_redis_ingress_retries_transient_and_dead_letters_permanent(serve: Any, redis_server: Any) -> None:
    client = redis_server.client()
    serve(
        Kinds,
        block_id="blk",
        redis_url=redis_server.url,
        redis_ingress_stream="jobs",
        redis_results_stream="results",
        redis_claim_idle_s=0.2,
        redis_max_deliveries=3,
    )
    add_packets(client, "jobs", 1, prefix="flaky", data={"kind": "flaky"})
    add_packets(client, "jobs", 1, prefix="permanent", data={"kind": "permanent"})
    add_packets(client, "jobs", 1, prefix="bad", data={"kind": "bad-input"})
    wait_for(lambda: client.xlen("results") >= 1 and client.xlen("jobs:dead") >= 2, 30, "a result and two dead letters")
    wait_for(lambda: pending(client, "jobs", "blk") == 0, 10, "acknowledged")
    assert result_sessions(client, "results") == ["flaky0"]  # retried, then succeeded
    dead = {f[b"code"].decode(): f for _, f in client.xrange("jobs:dead")}
    assert sorted(dead) == ["FAILED_PRECONDITION", "INVALID_ARGUMENT"]
    assert b"model cannot read this format" in dead["FAILED_PRECONDITION"][b"error"]
    # Dead-lettered at their first delivery: not retried.
    assert b"delivered" not in dead["FAILED_PRECONDITION"][b"error"]
