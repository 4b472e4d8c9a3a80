"""A block-health policy on a block's own reported figure (its health() value in the heartbeat)."""

from __future__ import annotations

import json
from typing import Any

from aios_grpc_client import BlockClient

from aios_grpc.blockhealth.report import report_key
from tests.blockhealth.test_aggregator import PREFIX, get, health_http  # noqa: F401 (health_http: fixture)
from tests.helpers import wait_for
from tests.service.test_health_report import ValueHealth


def test_a_policy_reads_the_gpu_temperature_the_block_reports(serve: Any, redis_server: Any, health_http: Any) -> None:  # noqa: F811
    settings = {"redis_url": redis_server.url, "block_id": "gpu", "heartbeat_interval_s": 0.1, "health_interval_s": 0.1}
    hot = serve(ValueHealth, instance_id="i-hot", **settings)
    serve(ValueHealth, instance_id="i-cool", **settings)
    http = health_http(block_health_policies=[{"class": "tests.blockhealth.policies:GpuTemperature", "max_c": 80}])
    wait_for(lambda: get(http.port, "/block/health/gpu")[1].get("healthy") is True, what="a healthy block")
    with BlockClient(hot.address) as client:
        # Still SERVING by its own verdict ("status": "ok"); only the policy objects.
        client.management("health", {"value": {"status": "ok", "gpu_temp": 91}})
        wait_for(lambda: get(http.port, "/block/health/gpu")[1]["healthy"] is False, what="the policy to object")
        assert client.health() == "SERVING"
    body = get(http.port, "/block/health/gpu")[1]
    verdicts = {p["name"]: p for p in body["policies"]}
    assert verdicts["GpuTemperature"] == {
        "name": "GpuTemperature",
        "healthy": False,
        "reason": "GPU above 80 C on ['i-hot']",
    }
    assert verdicts["DefaultPolicy"]["healthy"] is True
    beat = json.loads(redis_server.client().get(report_key(PREFIX, "gpu", "i-hot")))
    assert beat["health"] == {"status": "ok", "gpu_temp": 91}
