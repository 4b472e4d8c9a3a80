"""``Context``: what a block's ``__init__`` receives.

>>> ctx = Context(block_id="b1", block_init_parameters={"threshold": 0.7})
>>> ctx.block_init_parameters["threshold"]
0.7
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aios_grpc.events import BlockEvents, BlockSideCars
from aios_grpc.metrics import AIOSMetrics
from aios_grpc.settings import Settings
from aios_grpc.state import SessionsManager


@dataclass
class Context:
    """Everything a block gets at start-up (the seed's context fields)."""

    block_id: str = "block"
    instance_id: str = "instance"
    block_data: dict[str, Any] = field(default_factory=dict)
    block_init_data: dict[str, Any] = field(default_factory=dict)
    block_init_settings: dict[str, Any] = field(default_factory=dict)
    block_init_parameters: dict[str, Any] = field(default_factory=dict)
    allocation_info: dict[str, Any] = field(default_factory=lambda: {"gpus": [], "node_id": "", "cluster_id": ""})
    metrics: AIOSMetrics = field(default_factory=AIOSMetrics)
    sessions: SessionsManager = field(default_factory=SessionsManager)
    events: BlockEvents = field(default_factory=BlockEvents)
    side_cars: BlockSideCars = field(default_factory=BlockSideCars)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("aios_grpc.runtime.adapter"))

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        """A context filled from ``settings``: Redis-backed helpers when ``AIOS_REDIS_URL`` is set."""
        from aios_grpc.redis.wiring import context_helpers

        helpers = {"events": BlockEvents(block_id=settings.block_id), **context_helpers(settings)}
        return cls(
            block_id=settings.block_id,
            instance_id=settings.instance_id,
            block_data=dict(settings.block_data),
            block_init_data=dict(settings.block_init_data),
            block_init_settings=dict(settings.block_init_settings),
            block_init_parameters=dict(settings.block_init_parameters),
            allocation_info={
                "gpus": list(settings.gpus),
                "node_id": settings.node_id,
                "cluster_id": settings.cluster_id,
            },
            **helpers,
            logger=logging.getLogger(f"aios_grpc.runtime.adapter.{settings.block_id}"),
        )


__all__ = ["Context"]
