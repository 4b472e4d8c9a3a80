"""The gRPC transport of ``aios.block.v1.BlockService``: thin, converting and handing off.

- ``BlockServicer`` (servicer.py): the RPC methods only (Process, SetParameters,
  Management, GetInfo); it never decides anything about a packet itself.
- ``Stream`` (stream.py): one Process stream, the loop thread's hot path: its reader
  converts protobuf to ``Job``s for the runtime's ``Scheduler`` within the stream's
  ``runtime.window.Window``, its writer fills the responses from the ``Outbox`` (``outbox.py``).
- ``OrderedReplies`` (ordering.py): one stream's results released per session in
  arrival order.
- ``HealthMonitor`` (health.py): ``grpc.health.v1`` following start-up, ``health()``,
  the watchdog and drain; ``enable_reflection`` (reflection.py).
"""
