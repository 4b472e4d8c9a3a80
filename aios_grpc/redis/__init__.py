"""Everything Redis: ingress, at-least-once claims, parameters, state, queues, retries.

Only this package (and ``aios_grpc.routing.redis_link`` for egress) talks to Redis;
the runtime never imports it. Importing the package imports nothing: take what you
need from its modules.

- ``StreamIngress`` (stream_ingress.py): a Redis Stream read through a consumer group.
- ``ListIngress`` (list_ingress.py): the original executor's list queues, made reliable;
  ``_ingress.py`` holds what both ingresses share (decoding, restarting a failed reader).
- ``ListClaims`` (claims.py): taking list items so that a crash loses none of them.
- ``ParameterBroadcast`` (params.py): SetParameters on one instance reaches every instance.
- ``RedisStateStore`` (state.py) and ``RedisListQueue`` (queue.py): the Redis
  implementations of the ``StateStore`` and ``ListQueue`` seams (``aios_grpc.adapters``).
- ``Retry`` and ``TRANSIENT`` (retry.py): every Redis loop's retry after transient errors,
  paced by the package's one back-off formula (``aios_grpc.backoff.Backoff``).
- ``RedisWiring`` (wiring.py): builds the Redis-backed pieces of a server from settings.
- ``LocalRedis`` (local.py): a throw-away valkey-server for tests, examples and benchmarks.
"""
