"""Caller strings in logs and errors: escaped onto one line and cut (``aios_grpc._text``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aios_grpc._pb import pb, pb_grpc
from aios_grpc._text import cut, quote
from aios_grpc.routing.graph import FANOUT_HEADER
from tests.blocks.basic import EchoBlock
from tests.blocks.graph import StageBlock

FORGED = "s1\n2026-12-02 ERROR aios_grpc forged line\r\x1b[2J"
HUGE = "x" * (1 << 20)


def test_quote_escapes_control_characters_and_cuts() -> None:
    assert quote(FORGED) == repr(FORGED) and "\n" not in quote(FORGED) and "\x1b" not in quote(FORGED)
    shown = quote(HUGE)
    assert shown == f"'{'x' * 128}'...({(1 << 20) - 128} more)"
    assert quote("\u2028line separator").startswith("'\\u2028")  # unprintable unicode too
    assert len(quote({"host": HUGE, "n": list(range(10_000))})) < 300  # other values are bounded as well
    assert cut("a" * 2000, 10) == "aaaaaaaaaa...(1990 more)" and cut("short") == "short"


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record of the ``aios_grpc`` loggers during the test."""
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("aios_grpc")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield kept
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_session_id_with_a_newline_or_of_1_mib_is_logged_on_one_bounded_line(serve, records) -> None:
    a = serve(StageBlock, block_id="a", route_allow=["127.0.0.1:*"], max_session_id_bytes=2 << 20)
    ptr = {"outputs": [{"host": "127.0.0.1", "port": 1, "transport": "grpc"}]}
    packets = [
        # No budget left: refused before the block runs, and logged with the session id.
        make_packet({}, session_id=sid, seq_no=1, output_ptr=ptr, headers={FANOUT_HEADER: "0"})
        for sid in (FORGED, HUGE)
    ]
    with BlockClient(a.address, max_message_bytes=64 << 20) as client:
        results = [r for r in client.process(packets, timeout=60) if r.terminal]
    assert [r.error.code for r in results] == [grpc.StatusCode.INVALID_ARGUMENT] * 2
    refused = [r.getMessage() for r in records if "refused" in r.getMessage()]
    assert len(refused) == 2
    for line in refused:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
        assert len(line) < 1000
    assert repr(FORGED) in refused[0] and "more)" in refused[1]


def test_error_messages_quote_a_bounded_prefix_of_the_caller_s_strings(serve, redis_server) -> None:
    a = serve(EchoBlock, block_id="a", route_allow=[f"127.0.0.1:{redis_server.port}"])
    channel = grpc.insecure_channel(a.address)
    try:
        stub = pb_grpc.BlockServiceStub(channel)
        # The block's own UnknownAction echoes the whole action: the answer is cut, so the
        # client gets UNIMPLEMENTED, not a failure to read an oversized status.
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Management(pb.ManagementRequest(action=FORGED + HUGE), timeout=30)
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert len(unknown.value.details()) < 2100
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as missing:
            health.Check(health_pb2.HealthCheckRequest(service=FORGED + HUGE), timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(missing.value.details()) < 300 and "\\n" in missing.value.details()
    finally:
        channel.close()
    queue = {"outputs": [{"host": "127.0.0.1", "port": redis_server.port, "queue_name": FORGED + HUGE}]}
    with BlockClient(a.address) as client:
        packet = make_packet({}, session_id="s", seq_no=1, output_ptr=json.dumps(queue))
        (result,) = [r for r in client.process([packet], timeout=30) if r.terminal]
    assert result.error.code == grpc.StatusCode.PERMISSION_DENIED
    assert len(result.error.message) < 600 and "\n" not in result.error.message
