"""Seams to external systems, each a small interface with an in-memory default.

- ``StateStore`` (state.py): key/value state for ``SessionsManager`` and ``StateDict``.
- ``ListQueue`` (queue.py): push to named queues, used by ``BlockEvents`` and
  ``BlockSideCars``.

Redis implementations live in their own modules and are chosen by settings.
"""
