"""Policies judged on hand-made instance reports (no Redis needed)."""

from __future__ import annotations

import pytest

from aios_grpc.blockhealth import (
    DefaultPolicy,
    ErrorRatePolicy,
    InstanceReport,
    LastPacketAgePolicy,
    load_policy,
)
from aios_grpc.errors import ConfigurationError
from tests.blockhealth.policies import NeedsInstances

NOW = 1_000_000.0


def report(instance_id: str, age: float = 1.0, **fields: object) -> InstanceReport:
    fields.setdefault("healthy", True)
    return InstanceReport(instance_id, "b", NOW - age, **fields)  # type: ignore[arg-type]


def test_default_policy() -> None:
    policy = DefaultPolicy(max_age_s=60)
    assert policy.check("b", [report("a"), report("b", 59)], NOW).healthy
    empty = policy.check("b", [], NOW)
    assert not empty.healthy and empty.reason == "no instances"
    verdict = policy.check(
        "b",
        [
            report("fresh"),
            report("stale", 75),
            report("sick", healthy=False, reason="GPU lost"),
            report("gone", 5, present=False),
        ],
        NOW,
    )
    assert not verdict.healthy
    assert verdict.reason == "3 of 4 instances unhealthy"
    assert verdict.instances["stale"] == "stale heartbeat: 75.0s ago (limit 60s)"
    assert verdict.instances["sick"] == "GPU lost"
    assert "no heartbeat report" in verdict.instances["gone"]
    assert "fresh" not in verdict.instances


def test_last_packet_age_policy() -> None:
    policy = LastPacketAgePolicy(max_age_s=300)
    busy = report("busy", started_at=NOW - 9000, last_packet_at=NOW - 10)
    idle = report("idle", started_at=NOW - 9000, last_packet_at=NOW - 400)
    new = report("new", started_at=NOW - 100)
    never = report("never", started_at=NOW - 500)
    verdict = policy.check("b", [busy, idle, new, never], NOW)
    assert not verdict.healthy
    assert set(verdict.instances) == {"idle", "never"}
    assert verdict.instances["idle"] == "last packet processed 400.0s ago (limit 300s)"
    assert verdict.instances["never"] == "no packet processed since start 500.0s ago (limit 300s)"
    assert policy.check("b", [busy, new], NOW).healthy


def test_error_rate_policy_looks_at_the_window_only() -> None:
    policy = ErrorRatePolicy(max_rate=0.2, window_s=60, min_packets=10)
    # Many old failures, few recent ones: healthy over the last minute.
    history = [(NOW - 300, 100.0, 90.0), (NOW - 60, 200.0, 95.0), (NOW, 300.0, 100.0)]
    assert policy.check("b", [report("a", history=history, started_at=NOW - 400)], NOW).healthy
    # 30 of the last 100 failed.
    history = [(NOW - 120, 100.0, 0.0), (NOW - 60, 200.0, 10.0), (NOW, 300.0, 40.0)]
    verdict = policy.check("b", [report("a", history=history, started_at=NOW - 400)], NOW)
    assert not verdict.healthy
    assert verdict.instances["a"] == "error rate 30% (30 of 100 packets) over 60s exceeds 20%"
    # Too few packets to judge.
    history = [(NOW - 60, 0.0, 0.0), (NOW, 5.0, 5.0)]
    assert policy.check("b", [report("a", history=history, started_at=NOW - 100)], NOW).healthy
    # A young instance counts from zero.
    history = [(NOW - 20, 5.0, 5.0), (NOW, 20.0, 10.0)]
    assert not policy.check("b", [report("a", history=history, started_at=NOW - 30)], NOW).healthy


def test_load_policy_by_import_path() -> None:
    policy = load_policy({"class": "tests.blockhealth.policies:NeedsInstances", "count": 3})
    assert isinstance(policy, NeedsInstances) and policy.count == 3
    assert load_policy("aios_grpc.blockhealth.policies:ErrorRatePolicy").max_rate == 0.1
    with pytest.raises(ConfigurationError, match="cannot import 'no_such_module'"):
        load_policy("no_such_module:X")
    with pytest.raises(ConfigurationError, match="has no class 'NotAClass'"):
        load_policy("tests.blockhealth.policies:NotAClass")
    with pytest.raises(ConfigurationError, match=r"use the form 'package\.module:Class'"):
        load_policy("tests.blockhealth.policies")
    with pytest.raises(ConfigurationError, match="bad options"):
        load_policy({"class": "tests.blockhealth.policies:NeedsInstances", "colour": "red"})
    with pytest.raises(ConfigurationError, match="max_rate must be within"):
        load_policy({"class": "aios_grpc.blockhealth.policies:ErrorRatePolicy", "max_rate": 3})
    with pytest.raises(ConfigurationError, match="has no check"):
        load_policy("tests.blockhealth.test_policies:NotAPolicy")


class NotAPolicy:
    pass
