"""During a drain the server still answers: health says NOT_SERVING, new streams are refused UNAVAILABLE."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from aios_grpc_client import BlockClient, Unanswered, make_packet

from tests.blocks.basic import EchoBlock


def test_health_and_a_new_stream_during_a_drain(serve):
    served = serve(EchoBlock)
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        stream.send(make_packet({"sleep": 1.5}, session_id="slow", seq_no=1))  # keeps the drain busy
        time.sleep(0.2)
        stopper = threading.Thread(target=served.close, kwargs={"grace_s": 10})
        stopper.start()
        try:
            deadline = time.monotonic() + 5
            while served.server.health.serving and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)
            # A probe sees NOT_SERVING (an answer), not a refused call.
            assert client.health(timeout=5) == "NOT_SERVING"
            with BlockClient(served.address, retries=0) as once, pytest.raises(Unanswered) as unanswered:
                once.run({"late": True}, timeout=5)  # refused: the client names it unanswered
            refused = unanswered.value.__cause__
            assert isinstance(refused, grpc.RpcError) and refused.code() == grpc.StatusCode.UNAVAILABLE
            assert "draining" in (refused.details() or "")
            results = []
            with pytest.raises(grpc.RpcError) as ended:
                for r in stream.results():
                    if r.terminal:
                        results.append(r)
        finally:
            stopper.join(15)
    assert [r.ok for r in results] == [True]  # the packet in flight was still answered
    # The stream was still open for sending: it ends UNAVAILABLE, never OK (packets may be unread).
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE and "resend" in (ended.value.details() or "")
