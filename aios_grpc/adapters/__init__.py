"""Seams to external systems, each a small interface with an in-memory default.

- ``StateStore`` (state_store.py): key/value state for ``SessionsManager`` and ``StateDict``.
- ``ListQueue`` (list_queue.py): push to named queues, used by ``BlockEvents`` and
  ``BlockSideCars``.

The Redis implementations live in ``aios_grpc.redis`` and are chosen by settings.
"""
