"""``Aggregator``: the health of a block from its instances' heartbeats, judged by policies.

``block_health(block_id)`` answers in the seed's JSON shape::

    {"block_id": "b1", "healthy": false, "success": true,
     "reason": "DefaultPolicy: 1 of 2 instances unhealthy",
     "instances": [{"instanceId": "i-1", "healthy": true, "lastMetrics": "3.2s ago"},
                   {"instanceId": "i-2", "healthy": false, "reason": "stale heartbeat: 75.0s ago (limit 60s)",
                    "lastMetrics": "75.0s ago"}],
     "policies": [{"name": "DefaultPolicy", "healthy": false, "reason": "..."}]}

and ``None`` for a block that never published (the HTTP server's 404).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis

from aios_grpc.blockhealth.policies import DefaultPolicy, Verdict, as_verdict, load_policy
from aios_grpc.blockhealth.report import InstanceReport, blocks_key, instances_key, report_key
from aios_grpc.blockhealth.settings import BlockHealthSettings

log = logging.getLogger("aios_grpc.blockhealth")


class Aggregator:
    """Reads heartbeats from Redis and applies the default policy and the configured ones."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "aios:blockhealth",
        policies: Sequence[Any] = (),
        max_age_s: float = 60.0,
        retention_s: float = 3600.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.policies: list[Any] = [DefaultPolicy(max_age_s), *policies]
        self.retention_s = retention_s

    @classmethod
    def from_settings(cls, settings: BlockHealthSettings) -> Aggregator:
        """An aggregator for ``settings``; a policy that does not load fails here, at start-up."""
        policies = [load_policy(spec) for spec in settings.block_health_policies]
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
        return cls(
            client,
            prefix=settings.heartbeat_prefix,
            policies=policies,
            max_age_s=settings.block_health_max_age_s,
            retention_s=settings.block_health_retention_s,
        )

    def instances(self, block_id: str, now: float) -> list[InstanceReport] | None:
        """The reports of a block's instances (None: unknown block)."""
        if not self.client.sismember(blocks_key(self.prefix), block_id):
            return None
        index = instances_key(self.prefix, block_id)
        self.client.zremrangebyscore(index, "-inf", now - self.retention_s)
        entries: list[Any] = list(self.client.zrange(index, 0, -1, withscores=True))
        if not entries:
            return []
        ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw, _ in entries]
        texts = self.client.mget([report_key(self.prefix, block_id, i) for i in ids])
        reports = []
        for instance_id, (_, seen), text in zip(ids, entries, texts, strict=True):
            if text is None:
                reports.append(InstanceReport(instance_id, block_id, float(seen), present=False))
            else:
                reports.append(InstanceReport.from_json(text, block_id, instance_id, float(seen)))
        return reports

    def judge(self, block_id: str, instances: Sequence[InstanceReport], now: float) -> list[tuple[str, Verdict]]:
        """Every policy's verdict; a policy that raises is an unhealthy verdict naming the error."""
        verdicts = []
        for policy in self.policies:
            name = policy.label() if hasattr(policy, "label") else type(policy).__name__
            try:
                verdict = as_verdict(policy.check(block_id, instances, now), name)
            except Exception as exc:
                log.exception("health policy %s failed on block %s", name, block_id)
                verdict = Verdict(False, f"policy raised {type(exc).__name__}: {exc}")
            verdicts.append((name, verdict))
        return verdicts

    def block_health(self, block_id: str, now: float | None = None) -> dict[str, Any] | None:
        """The block's health in the seed's JSON shape, or None for an unknown block."""
        now = time.time() if now is None else now
        instances = self.instances(block_id, now)
        if instances is None:
            return None
        verdicts = self.judge(block_id, instances, now)
        entries = []
        for inst in instances:
            reasons = [v.instances[inst.instance_id] for _, v in verdicts if inst.instance_id in v.instances]
            entry: dict[str, Any] = {"instanceId": inst.instance_id, "healthy": not reasons}
            if reasons:
                entry["reason"] = "; ".join(reasons)
            entry["lastMetrics"] = f"{inst.age(now)}s ago"
            if inst.load:
                entry["load"] = inst.load
            entries.append(entry)
        healthy = all(v.healthy for _, v in verdicts)
        answer: dict[str, Any] = {"block_id": block_id, "healthy": healthy, "instances": entries, "success": True}
        if not healthy:
            answer["reason"] = "; ".join(f"{name}: {v.reason}" for name, v in verdicts if not v.healthy)
        answer["policies"] = [{"name": name, "healthy": v.healthy, "reason": v.reason} for name, v in verdicts]
        return answer

    def close(self) -> None:
        """Close the Redis connection."""
        self.client.close()


__all__ = ["Aggregator"]
