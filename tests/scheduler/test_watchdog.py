"""The event-loop watchdog: blocking calls inside async def are found and measured."""

from __future__ import annotations

import logging

from aios_grpc_client import BlockClient

from aios_grpc.settings import load_settings
from aios_grpc.telemetry import Telemetry
from aios_grpc.testing import ServedBlock
from tests.scheduler.blocks import LoopBlockingBlock


class LagRecorder(Telemetry):
    def __init__(self) -> None:
        self.lags: list[float] = []

    def loop_lag(self, seconds: float) -> None:
        self.lags.append(seconds)


def test_blocking_call_in_async_def_is_logged_once_with_its_frame(caplog):
    telemetry = LagRecorder()
    settings = load_settings(host="127.0.0.1", port=0, workers=2, loop_block_threshold_s=0.1)
    with caplog.at_level(logging.WARNING, logger="aios_grpc.watchdog"):
        with ServedBlock(LoopBlockingBlock, settings, telemetry=telemetry) as served:
            with BlockClient(served.address) as client:
                for _ in range(3):
                    assert client.run({}, timeout=10).ok
            watchdog = served.server.scheduler.watchdog
            assert watchdog.max_lag_s >= 0.2
    warnings = [r for r in caplog.records if r.name == "aios_grpc.watchdog"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "blocks.py" in message and "in on_data()" in message
    assert "time.sleep(0.4)" in message  # the stack shows the offending line
    assert max(telemetry.lags) >= 0.2


def test_watchdog_is_quiet_for_plain_blocking_methods(serve, caplog):
    from tests.blocks.basic import EchoBlock

    served = serve(EchoBlock, loop_block_threshold_s=0.1)
    with caplog.at_level(logging.WARNING, logger="aios_grpc.watchdog"):
        with BlockClient(served.address) as client:
            assert client.run({"sleep": 0.4}, timeout=10).ok
    assert not [r for r in caplog.records if r.name == "aios_grpc.watchdog"]
    assert served.server.scheduler.watchdog.max_lag_s < 0.3
