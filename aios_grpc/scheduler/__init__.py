"""The scheduler: queues, workers and ordering between ingress and the block."""

from aios_grpc.scheduler.core import Scheduler
from aios_grpc.scheduler.job import Job, Kind, Result
from aios_grpc.scheduler.ordering import OrderedReplies

__all__ = ["Job", "Kind", "OrderedReplies", "Result", "Scheduler"]
