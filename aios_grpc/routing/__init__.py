"""Routing a block's outputs: the ``Router`` seam and the ``output_ptr`` graph router.

- ``Router`` (base.py): the seam the scheduler calls; the default answers the caller.
- ``GraphRouter`` (graph.py): gRPC blocks and Redis queues named by ``output_ptr``.
- ``parse_output_ptr`` (pointer.py): the pointer formats; ``AllowList`` and
  ``Backoff`` (policy.py): which targets are allowed and how a down one is retried.
"""

from __future__ import annotations

from aios_grpc.errors import DownstreamError
from aios_grpc.routing.base import Router
from aios_grpc.routing.graph import GraphRouter
from aios_grpc.routing.pointer import Plan, Target, parse_output_ptr
from aios_grpc.routing.policy import AllowList, Backoff

__all__ = ["AllowList", "Backoff", "DownstreamError", "GraphRouter", "Plan", "Router", "Target", "parse_output_ptr"]
