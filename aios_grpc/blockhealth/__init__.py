"""Block health: instances publish heartbeats to Redis; an aggregator judges each block.

- ``HeartbeatPublisher`` (started by the server when ``AIOS_REDIS_URL`` is set).
- ``Aggregator`` and ``BlockHealthServer``: ``aios-grpc block-health-server`` answers
  ``GET /block/health/<block_id>`` in the seed's JSON shape.
- Policies: ``DefaultPolicy`` (at least one instance, all healthy, fresh heartbeats),
  ``LastPacketAgePolicy``, ``ErrorRatePolicy``, or any class named by import path.
"""

from __future__ import annotations

from aios_grpc.blockhealth.aggregator import Aggregator
from aios_grpc.blockhealth.http import BlockHealthServer
from aios_grpc.blockhealth.policies import (
    DefaultPolicy,
    ErrorRatePolicy,
    LastPacketAgePolicy,
    Policy,
    Verdict,
    load_policy,
)
from aios_grpc.blockhealth.report import InstanceReport
from aios_grpc.blockhealth.settings import BlockHealthSettings, load_block_health_settings

__all__ = [
    "Aggregator",
    "BlockHealthServer",
    "BlockHealthSettings",
    "DefaultPolicy",
    "ErrorRatePolicy",
    "InstanceReport",
    "LastPacketAgePolicy",
    "Policy",
    "Verdict",
    "load_block_health_settings",
    "load_policy",
]
