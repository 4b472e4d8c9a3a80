"""The transport-free runtime: a ``Job`` in, its ``Result``s out.

It owns the scheduler (``scheduler.py``: lifecycle, admission, answer bookkeeping;
``workers.py``: chunk sizing, gathering, one thread hop per chunk; ``partials.py``:
streamed outputs), the job queue, the muxer and batch stages, the block adapter
(calling the user's methods and checking what they return; the worker thread's
per-packet path), the control plane and the loop watchdog. It imports neither grpc nor redis:
transports (``aios_grpc.service``, ``aios_grpc.redis``) hand it jobs, routers
(``aios_grpc.routing``) take its outputs.
"""

from aios_grpc.runtime.scheduler import Scheduler

__all__ = ["Scheduler"]
