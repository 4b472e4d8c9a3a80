"""The aggregator over a real Redis: heartbeats from live servers and hand-written ones, policies, HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from aios_grpc_client import BlockClient

from aios_grpc.blockhealth import Aggregator, BlockHealthServer, InstanceReport
from aios_grpc.blockhealth.report import blocks_key, instances_key, report_key
from aios_grpc.blockhealth.settings import load_block_health_settings
from tests.blockhealth.policies import NeedsInstances
from tests.conftest import ROOT
from tests.helpers import wait_for
from tests.telemetry.blocks import SwitchableHealth

PREFIX = "aios:blockhealth"


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def put(
    client: redis.Redis, block_id: str, instance_id: str, age: float = 1.0, *, report: bool = True, **fields: Any
) -> None:
    """Write a heartbeat as an instance would (``report=False``: the index entry only)."""
    at = time.time() - age
    client.sadd(blocks_key(PREFIX), block_id)
    client.zadd(instances_key(PREFIX, block_id), {instance_id: at})
    if report:
        fields.setdefault("healthy", True)
        text = InstanceReport(instance_id, block_id, at, **fields).to_json()
        client.set(report_key(PREFIX, block_id, instance_id), text)


@pytest.fixture
def health_http(redis_server: Any) -> Iterator[Callable[..., BlockHealthServer]]:
    """``health_http(**settings)``: an aggregator HTTP server on a free port over ``redis_server``."""
    started: list[BlockHealthServer] = []

    def start(**overrides: Any) -> BlockHealthServer:
        settings = load_block_health_settings(redis_url=redis_server.url, block_health_port=0, **overrides)
        server = BlockHealthServer(Aggregator.from_settings(settings), "127.0.0.1", 0).serve_in_thread()
        started.append(server)
        return server

    yield start
    for s in started:
        s.close()


def test_live_instances_publish_and_the_block_is_healthy(serve: Any, redis_server: Any, health_http: Any) -> None:
    settings = {
        "redis_url": redis_server.url,
        "block_id": "live",
        "heartbeat_interval_s": 0.1,
        "health_interval_s": 0.1,
    }
    first = serve(SwitchableHealth, instance_id="i-1", **settings)
    serve(SwitchableHealth, instance_id="i-2", **settings)
    http = health_http()
    status, body = get(http.port, "/block/health/live")
    assert status == 200
    assert body["block_id"] == "live" and body["success"] is True and body["healthy"] is True
    assert sorted(i["instanceId"] for i in body["instances"]) == ["i-1", "i-2"]
    for inst in body["instances"]:
        assert inst["healthy"] is True
        assert re.fullmatch(r"\d+(\.\d+)?(e-?\d+)?s ago", inst["lastMetrics"]), inst["lastMetrics"]
        assert "reason" not in inst

    # health() of one instance turns unhealthy: its next heartbeat says so, with the reason.
    with BlockClient(first.address) as client:
        client.management("health", {"status": "unhealthy"})

        def sick() -> bool:
            return not get(http.port, "/block/health/live")[1]["healthy"]

        wait_for(sick, what="the block to turn unhealthy")
        body = get(http.port, "/block/health/live")[1]
        [bad] = [i for i in body["instances"] if not i["healthy"]]
        assert bad["instanceId"] == "i-1"
        assert "health() reported status 'unhealthy'" in bad["reason"]
        assert body["reason"].startswith("DefaultPolicy: 1 of 2 instances unhealthy")
        client.management("health", {"status": "healthy"})
        wait_for(lambda: get(http.port, "/block/health/live")[1]["healthy"], what="recovery")

    # Packets processed show up in the heartbeat's totals.
    with BlockClient(first.address) as client:
        assert all(r.ok for r in client.process([{"x": i} for i in range(3)], timeout=10) if r.terminal)
    raw = redis_server.client().get(report_key(PREFIX, "live", "i-1"))
    wait_for(
        lambda: (
            json.loads(redis_server.client().get(report_key(PREFIX, "live", "i-1")))["packets"].get("answered") == 3
        ),
        what="answered=3 in the heartbeat",
    )
    assert raw is not None

    # A stopped instance removes itself; the other carries on.
    first.close()
    status, body = get(http.port, "/block/health/live")
    assert [i["instanceId"] for i in body["instances"]] == ["i-2"]
    assert body["healthy"] is True


def test_fresh_stale_missing_and_unhealthy_instances(redis_server: Any, health_http: Any) -> None:
    client = redis_server.client()
    put(client, "mixed", "fresh", 2)
    put(client, "mixed", "stale", 90)
    put(client, "mixed", "missing", 5, report=False)
    put(client, "mixed", "sick", 1, healthy=False, reason="health() raised RuntimeError: GPU lost")
    http = health_http()
    status, body = get(http.port, "/block/health/mixed")
    assert status == 200 and body["healthy"] is False and body["success"] is True
    by_id = {i["instanceId"]: i for i in body["instances"]}
    assert by_id["fresh"]["healthy"] is True and "reason" not in by_id["fresh"]
    assert by_id["stale"]["healthy"] is False
    assert re.fullmatch(r"stale heartbeat: 9\d\.\ds ago \(limit 60s\)", by_id["stale"]["reason"])
    assert by_id["missing"]["healthy"] is False and "no heartbeat report" in by_id["missing"]["reason"]
    assert by_id["sick"]["reason"] == "health() raised RuntimeError: GPU lost"
    assert body["reason"] == "DefaultPolicy: 3 of 4 instances unhealthy"

    # Only fresh, healthy instances: healthy. The threshold is a setting.
    put(client, "ok", "a", 2)
    put(client, "ok", "b", 40)
    assert get(http.port, "/block/health/ok")[1]["healthy"] is True
    strict = health_http(block_health_max_age_s=30)
    body = get(strict.port, "/block/health/ok")[1]
    by_id = {i["instanceId"]: i for i in body["instances"]}
    assert body["healthy"] is False and "limit 30s" in by_id["b"]["reason"] and by_id["a"]["healthy"]


def test_unknown_block_is_404_and_a_block_with_no_instances_is_unhealthy(redis_server: Any, health_http: Any) -> None:
    http = health_http()
    status, body = get(http.port, "/block/health/nobody")
    assert status == 404 and body["success"] is False and "unknown block 'nobody'" in body["error"]
    assert get(http.port, "/block/health/")[0] == 404
    assert get(http.port, "/elsewhere")[0] == 404
    redis_server.client().sadd(blocks_key(PREFIX), "empty")
    status, body = get(http.port, "/block/health/empty")
    assert status == 200 and body["healthy"] is False and body["instances"] == []
    assert body["reason"] == "DefaultPolicy: no instances"


def test_instances_gone_past_the_retention_are_dropped(redis_server: Any, health_http: Any) -> None:
    client = redis_server.client()
    put(client, "old", "ancient", 7200)
    put(client, "old", "now", 1)
    body = get(health_http(block_health_retention_s=3600).port, "/block/health/old")[1]
    assert [i["instanceId"] for i in body["instances"]] == ["now"] and body["healthy"] is True


def test_custom_policies_by_import_path(redis_server: Any, health_http: Any) -> None:
    client = redis_server.client()
    put(
        client,
        "custom",
        "a",
        1,
        history=[(time.time() - 30, 0.0, 0.0), (time.time(), 100.0, 50.0)],
        started_at=time.time() - 3600,
    )
    http = health_http(
        block_health_policies=[
            {"class": "tests.blockhealth.policies:NeedsInstances", "count": 2},
            "tests.blockhealth.policies:PairPolicy",
            {"class": "aios_grpc.blockhealth.policies:ErrorRatePolicy", "max_rate": 0.2, "window_s": 60},
            "tests.blockhealth.policies:Broken",
        ]
    )
    assert isinstance(http.aggregator.policies[1], NeedsInstances)
    body = get(http.port, "/block/health/custom")[1]
    assert body["healthy"] is False
    verdicts = {p["name"]: p for p in body["policies"]}
    assert verdicts["DefaultPolicy"]["healthy"] is True
    assert verdicts["NeedsInstances"] == {
        "name": "NeedsInstances",
        "healthy": False,
        "reason": "1 live instances, 2 needed",
    }
    assert verdicts["PairPolicy"]["healthy"] is True
    assert verdicts["ErrorRatePolicy"]["healthy"] is False
    assert verdicts["Broken"] == {
        "name": "Broken",
        "healthy": False,
        "reason": "policy raised RuntimeError: policy bug",
    }
    [inst] = body["instances"]
    assert inst["healthy"] is False and inst["reason"].startswith("error rate 50% (50 of 100 packets)")


def test_redis_down_is_503(redis_server: Any, health_http: Any) -> None:
    http = health_http()
    redis_server.stop()
    status, body = get(http.port, "/block/health/any")
    assert status == 503 and body["success"] is False and "cannot read heartbeats" in body["error"]


def test_cli_block_health_server(redis_server: Any) -> None:
    put(redis_server.client(), "cli", "a", 1)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aios_grpc",
            "block-health-server",
            "--port",
            "0",
            "--redis",
            redis_server.url,
            "--policy",
            '{"class": "tests.blockhealth.policies:NeedsInstances", "count": 1}',
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        pattern = r"http://127\.0\.0\.1:(\d+)/block/health/<block_id> \(policies: DefaultPolicy, NeedsInstances\)"
        match = re.search(pattern, line)
        assert match, line
        status, body = get(int(match.group(1)), "/block/health/cli")
        assert status == 200 and body["healthy"] is True
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_refuses_a_policy_that_does_not_load(redis_server: Any) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aios_grpc",
            "block-health-server",
            "--port",
            "0",
            "--redis",
            redis_server.url,
            "--policy",
            "tests.blockhealth.policies:Missing",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "health policy 'tests.blockhealth.policies:Missing'" in proc.stderr
