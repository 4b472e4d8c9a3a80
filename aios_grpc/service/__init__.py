"""The gRPC transport of ``aios.block.v1.BlockService``: thin, converting and handing off.

- ``BlockServicer`` (servicer.py): the RPC methods and one Process stream's read,
  window and write path; it converts protobuf to ``Job``s for the runtime's
  ``Scheduler`` and results back, and never decides anything about a packet itself.
- ``OrderedReplies`` (ordering.py): one stream's results released per session in
  arrival order.
- ``HealthMonitor`` (health.py): ``grpc.health.v1`` following start-up, ``health()``,
  the watchdog and drain; ``enable_reflection`` (reflection.py).
"""
