"""Instance health over grpc.health.v1: start-up, block.health(), and RPCs during start-up."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from aios_grpc_client import BlockClient

from aios_grpc import *


def test_not_serving_until_a_slow_init_finished_then_serving(spawn):
    server = spawn("tests.blocks.basic:SlowInitBlock", env={"AIOS_BLOCK_INIT_PARAMETERS": '{"init_s": 2}'})
    with BlockClient(server.address) as client:
        assert client.health() == "NOT_SERVING"
        assert client.health("aios.block.v1.BlockService") == "NOT_SERVING"
        with pytest.raises(grpc.RpcError) as starting:
            client.get_info()
        assert starting.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "still starting" in starting.value.details()
        # A packet sent while the block starts waits for it and is answered.
        result = client.run({"x": 1}, timeout=30)
        assert result.ok and result.data == {"ok": True}
        assert client.health() == "SERVING"


class FlakyHealthBlock:
    """health() says what the test sets."""

    status: dict = {"status": "healthy"}

    def __init__(self, context):
        pass

    def on_data(self, entry):
        return True, OnDataResult(output={})

    def health(self):
        if FlakyHealthBlock.status.get("raise"):
            raise RuntimeError("gpu lost")
        return dict(FlakyHealthBlock.status)


def _wait_for(client: BlockClient, status: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if client.health() == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"health never became {status}")


def test_health_follows_the_blocks_health_method(serve):
    FlakyHealthBlock.status = {"status": "healthy"}
    served = serve(FlakyHealthBlock, health_interval_s=0.05)
    with BlockClient(served.address) as client:
        assert client.health() == "SERVING"
        FlakyHealthBlock.status = {"status": "unhealthy"}
        _wait_for(client, "NOT_SERVING")
        FlakyHealthBlock.status = {"status": "healthy"}
        _wait_for(client, "SERVING")
        FlakyHealthBlock.status = {"raise": True}
        _wait_for(client, "NOT_SERVING")
        # Unhealthy does not stop the data plane: packets are still answered.
        assert client.run({}).ok
    FlakyHealthBlock.status = {"status": "healthy"}


class BusyBlock:
    """on_data blocks until released; health must still answer."""

    release = threading.Event()

    def __init__(self, context):
        pass

    def on_data(self, entry):
        BusyBlock.release.wait(20)
        return True, OnDataResult(output={"done": True})


def test_a_slow_on_data_does_not_stall_health_or_the_control_plane(serve):
    BusyBlock.release.clear()
    served = serve(BusyBlock, workers=2)
    with BlockClient(served.address) as client:
        stream = client.stream(timeout=30)
        from aios_grpc_client import make_packet

        stream.send(make_packet({}, session_id="s", seq_no=1))
        time.sleep(0.2)
        assert client.health(timeout=2) == "SERVING"
        assert client.get_info(timeout=2)["block_class"].endswith("BusyBlock")
        BusyBlock.release.set()
        stream.close()
        results = list(stream.results())
    assert [r.data for r in results] == [{"done": True}]


def test_liveness_stays_serving_while_health_is_unhealthy_and_fails_when_the_scheduler_stalls(serve):
    FlakyHealthBlock.status = {"status": "unhealthy"}
    served = serve(FlakyHealthBlock, health_interval_s=0.05)
    with BlockClient(served.address) as client:
        _wait_for(client, "NOT_SERVING")
        # Readiness follows health(); liveness (what restarts a pod) does not.
        assert client.health("aios.liveness") == "SERVING"
    FlakyHealthBlock.status = {"status": "healthy"}

    BusyBlock.release.clear()
    stalled = serve(BusyBlock, workers=1, health_interval_s=0.05, health_stall_s=0.3)
    with BlockClient(stalled.address) as client:
        stream = client.stream(timeout=30)
        from aios_grpc_client import make_packet

        stream.send(make_packet({}, session_id="s", seq_no=1))
        end = time.monotonic() + 10
        while client.health("aios.liveness") != "NOT_SERVING":
            assert time.monotonic() < end, "liveness never reported the stalled scheduler"
            time.sleep(0.02)
        assert client.health() == "NOT_SERVING"
        BusyBlock.release.set()
        stream.close()
        assert [r.data for r in stream.results()] == [{"done": True}]
        end = time.monotonic() + 10
        while client.health("aios.liveness") != "SERVING":
            assert time.monotonic() < end, "liveness never came back once packets were answered"
            time.sleep(0.02)
