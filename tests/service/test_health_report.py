"""What health() may return (any JSON value; unhealthy is explicit) and where its value goes."""

from __future__ import annotations

from typing import Any

import pytest
from aios_grpc_client import BlockClient

from aios_grpc.service.health import healthy
from tests.helpers import wait_for
from tests.telemetry.blocks import SwitchableHealth


@pytest.mark.parametrize(
    "report",
    [None, True, {"status": "ok"}, {"status": "OK", "gpu_temp": 71}, "OK", "healthy", {"healthy": True}, 3, {}],
)
def test_anything_not_explicitly_unhealthy_is_serving(report: Any) -> None:
    assert healthy(report) == (True, "")


@pytest.mark.parametrize(
    "report",
    [False, {"status": "unhealthy"}, {"status": "ERROR"}, {"status": "Failed"}, {"status": "down"},
     {"status": "NOT_SERVING"}, {"healthy": False}, {"status": "ok", "healthy": False}, "down"],
)  # fmt: skip
def test_failure_words_and_healthy_false_are_not_serving(report: Any) -> None:
    ok, reason = healthy(report)
    assert not ok and reason.startswith("health()")


class ValueHealth(SwitchableHealth):
    """health() returns exactly what management("health", {"value": ...}) set."""

    def health(self):
        if "raise" in self.mode:
            raise RuntimeError(self.mode["raise"])
        return self.mode.get("value", {"status": "healthy"})


def test_the_last_health_value_is_served_by_aios_health(serve: Any) -> None:
    served = serve(ValueHealth, health_interval_s=0.05)
    with BlockClient(served.address) as client:
        client.management("health", {"value": {"status": "ok", "queue": 3}})
        wait_for(
            lambda: client.management("aios.health", {}) == {"serving": True, "data": {"status": "ok", "queue": 3}},
            what="aios.health to show the new value",
        )
        assert client.health() == "SERVING"
        client.management("health", {"value": "OK"})
        wait_for(lambda: client.management("aios.health", {})["data"] == "OK", what="the string value")
        assert client.health() == "SERVING"
        client.management("health", {"value": {"healthy": False, "why": "model unloaded"}})
        wait_for(lambda: client.health() == "NOT_SERVING", what="NOT_SERVING")
        answer = client.management("aios.health", {})
        assert answer["serving"] is False and answer["data"] == {"healthy": False, "why": "model unloaded"}
        assert "healthy=False" in answer["reason"]
        client.management("health", {"value": False})
        wait_for(lambda: client.management("aios.health", {})["data"] is False, what="False")
        assert client.health() == "NOT_SERVING"
