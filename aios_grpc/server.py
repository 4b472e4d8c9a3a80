"""``BlockServer``: the asyncio server of one block instance, and the composition root.

It builds the runtime (block adapter, scheduler, control plane), the gRPC transport
(servicer, health, reflection), the Redis wiring, the router and telemetry.
``aios_grpc.block.Block`` is the runner users call.

Start-up order: the gRPC server starts first and reports NOT_SERVING, the block's
``__init__`` runs in a worker thread (a slow model load never blocks probes), then
the scheduler starts and health turns SERVING. A failing ``__init__`` stops the
server with the error. Shutdown (SIGTERM, SIGINT or ``stop()``) drains: health goes
NOT_SERVING, no new streams are taken, in-flight packets are answered within
``grace_period_s``; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import socket
import sys
from typing import Any

import grpc

from aios_grpc._pb import SERVICE_NAME
from aios_grpc.context import Context
from aios_grpc.errors import ConfigurationError
from aios_grpc.redis.wiring import RedisWiring
from aios_grpc.routing import GraphRouter, Router
from aios_grpc.runtime import Scheduler
from aios_grpc.runtime.adapter import BlockAdapter
from aios_grpc.runtime.control import ControlPlane
from aios_grpc.runtime.typed import BlockTypes
from aios_grpc.service.auth import TokenAuth
from aios_grpc.service.decode import add_block_service, core_receive_limit
from aios_grpc.service.health import HealthMonitor
from aios_grpc.service.reflection import enable_reflection
from aios_grpc.service.servicer import BlockServicer
from aios_grpc.service.stream import StreamLimits
from aios_grpc.service.tls import ServerTls
from aios_grpc.settings import Settings, load_settings
from aios_grpc.telemetry import Telemetry, make_telemetry

log = logging.getLogger("aios_grpc.server")


class BlockServer:
    """One block instance served over gRPC on ``settings.address``."""

    def __init__(
        self,
        block_class: type[Any],
        settings: Settings | None = None,
        *,
        context: Context | None = None,
        telemetry: Telemetry | None = None,
        router: Router | None = None,
    ) -> None:
        if not isinstance(block_class, type):
            raise ConfigurationError(f"Block needs a class, got {block_class!r}")
        self.block_class = block_class
        self.settings = settings or load_settings()
        # Tokens and TLS are checked here, so that a misconfiguration fails before anything starts.
        self.auth = TokenAuth.from_settings(self.settings)
        self.tls = ServerTls.from_settings(self.settings)
        self.context = context or Context.from_settings(self.settings)
        self.telemetry = telemetry or make_telemetry(self.settings)
        # Routes by output_ptr; a packet with an empty pointer takes the fast path to the caller.
        self.router: Router = router or GraphRouter.from_settings(self.settings)
        self.redis = RedisWiring(self.settings) if RedisWiring.wanted(self.settings) else None
        self.health = HealthMonitor(
            self.settings.health_interval_s, self.settings.health_timeout_s, stall_s=self.settings.health_stall_s
        )
        self.servicer = BlockServicer(self.settings.stream_max_in_flight, StreamLimits.from_settings(self.settings))
        self.telemetry.bind(
            {
                "queue_depth": lambda: self.scheduler.queue_depth if self.scheduler is not None else 0,
                "in_flight": lambda: self.scheduler.in_flight if self.scheduler is not None else 0,
                "open_streams": lambda: self.servicer.open_streams,
                "serving": lambda: self.health.serving,
                "sidecar_push_failures": lambda: self.context.side_cars.failures,
            },
            self.context.metrics,
        )
        self.heartbeats: Any = None  # a blockhealth HeartbeatPublisher when AIOS_REDIS_URL is set
        self.http: Any = None  # service/http.py BlockHTTP when AIOS_HTTP_PORT is set
        self.scheduler: Scheduler | None = None
        self.control: ControlPlane | None = None
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._froze_gc = False  # gc.freeze() ran at start-up; undone at stop
        self._serving = False  # the gRPC server started: a stop from now on is a drain
        self._stopped = asyncio.Event()
        self._stopping: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """``host:port`` actually bound (the real port when 0 was asked)."""
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        """Bind, start serving (NOT_SERVING), initialise the block, then report SERVING."""
        problem = await asyncio.to_thread(_bind_problem, self.settings.host, self.settings.port)  # DNS may block
        if problem:
            # Checked first so that the error is one line: grpc's own bind failure also
            # logs from its C core, on stderr, where the user reads the error.
            raise ConfigurationError(f"cannot bind {self.settings.address}: {problem}")
        limit = self.settings.max_message_bytes
        server = grpc.aio.server(
            options=[
                # Messages up to twice the limit reach Python, which refuses them (service/decode.py).
                ("grpc.max_receive_message_length", core_receive_limit(limit)),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
                *self._window_options(),
            ],
            interceptors=[self.auth] if self.auth is not None else None,
        )
        self._server = server
        add_block_service(self.servicer, server, limit)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        if self.settings.reflection != "off":
            enable_reflection(server, [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
        try:
            if self.tls is not None:
                self.port = server.add_secure_port(self.settings.address, self.tls.credentials())
            else:
                self.port = server.add_insecure_port(self.settings.address)
        except RuntimeError as exc:
            raise ConfigurationError(f"cannot bind {self.settings.address}: {exc}") from None
        await self.telemetry.start()
        await self.health.start()
        await server.start()
        if self.settings.http_port >= 0:  # the original SDK's HTTP endpoints (service/http.py)
            from aios_grpc.service.http import BlockHTTP

            http = BlockHTTP(self, self.settings.host, self.settings.http_port, asyncio.get_running_loop())
            self.http = http.serve_in_thread()
            log.info("HTTP endpoints on %s:%d", self.settings.host, http.port)
        self._serving = True
        log.info(
            "listening on %s%s (block %s, instance %s)",
            self.address,
            "" if self.tls is None else " with mutual TLS" if self.tls.mutual else " with TLS",
            self.settings.block_id,
            self.settings.instance_id,
        )
        await self._init_block()

    def _window_options(self) -> list[tuple[str, int]]:
        # grpc grows a stream's receive window with its bandwidth probe (to many MB),
        # so a fast sender could park megabytes per stream in the server before the
        # reader pauses; a fixed window keeps that bounded.
        window = self.settings.stream_window_bytes
        if window == 0:
            return []
        return [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", window)]

    async def _init_block(self) -> None:
        declared = BlockTypes.of(self.block_class).parameters  # Parameters = ... (runtime/typed.py)
        if declared is not None:
            try:
                declared.validate(self.context.block_init_parameters, "block_init_parameters")
            except ValueError as exc:  # fail fast, one line, before the block's __init__
                raise ConfigurationError(f"{self.block_class.__qualname__}: {exc}") from None
        scheduler_pool = Scheduler.make_executor(self.settings)
        loop = asyncio.get_running_loop()
        try:
            instance = await loop.run_in_executor(scheduler_pool, self.block_class, self.context)
        except Exception as exc:
            # The traceback goes to the log (it points into the block's own code); the
            # error that stops the server is one line.
            name = self.block_class.__qualname__
            log.error("%s.__init__ failed", name, exc_info=True)
            scheduler_pool.shutdown(wait=False)
            raise ConfigurationError(f"{name}.__init__ raised {type(exc).__name__}: {exc}") from None
        adapter = BlockAdapter(instance, wrap=self.telemetry.wrap)
        scheduler = Scheduler(
            adapter, self.settings, telemetry=self.telemetry, router=self.router, executor=scheduler_pool
        )
        await scheduler.configure()
        await scheduler.start()
        ref = f"{self.block_class.__module__}:{self.block_class.__qualname__}"
        control = ControlPlane(adapter, scheduler, self.context.block_init_parameters, ref)
        control.actions["aios.health"] = self.health.health_action
        self.scheduler = scheduler
        self.control = control
        if self.redis is not None:
            await self.redis.start(scheduler, control)
        self.servicer.attach(scheduler, control)
        await self.health.block_ready(adapter, scheduler)
        if self.settings.redis_url:
            from aios_grpc.blockhealth.heartbeat import HeartbeatPublisher

            self.heartbeats = HeartbeatPublisher(self.settings, self)
            await self.heartbeats.start()
        if self.settings.gc_freeze:
            self._freeze_gc()
        log.info("block %s is ready", ref)

    def _freeze_gc(self) -> None:
        """Take what is alive now (imported modules, the block, its model) out of the collector's scans.

        A full collection walks every tracked object; with torch imported that is some
        200,000 objects and about 170 ms on the reference machine, paid again whenever
        enough serving objects outlive two collections (docs/scheduler.md). Frozen objects
        are skipped by every later pass. The garbage of start-up is collected first, so
        that none of it is kept for good.
        """
        gc.collect()
        gc.freeze()
        self._froze_gc = True
        log.debug("gc: %d objects frozen", gc.get_freeze_count())

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain and stop (idempotent); waits at most ``grace_s`` (default: settings)."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(grace_s))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_s: float | None) -> None:
        if not self._serving:
            # Start-up failed before the server took a call: nothing to drain or announce
            # (the error that stopped it is the one line the user should read).
            if self._server is not None:
                await self._server.stop(0)
            if self.redis is not None:
                await self.redis.close()
            await self.telemetry.stop()
            self._stopped.set()
            return
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        log.info("draining (grace period %.1fs)", grace)
        await self.health.drain()
        if self.heartbeats is not None:
            await self.heartbeats.publish_once()  # the block's health shows this instance draining
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self.redis is not None:
            # Stop taking Redis entries first; those in flight are acknowledged as they finish.
            await self.redis.drain(max(0.0, deadline - loop.time()))
        left = 0
        if self.scheduler is not None:
            left = await self.scheduler.drain(max(0.0, deadline - loop.time()))
            if left:
                log.warning("%d packets still in flight after the grace period", left)
        # Every packet read so far is answered (or the grace period is over): end the open
        # streams with a status instead of letting grpc cancel them at the end of the grace
        # period: UNAVAILABLE, never OK, where packets went unread or unanswered (service/stream.py).
        self.servicer.end_streams(abandon=left > 0)
        # Health Watch streams too: each has had NOT_SERVING; left open, grpc would wait
        # the whole grace period for them.
        self.health.end_watches()
        # The streams write their last answers and status; up to half a second past the grace
        # period when it is over, so that the status reaches the callers before grpc cancels.
        await self.servicer.streams_closed(max(0.5, deadline - loop.time()))
        if self._server is not None:
            # grpc is told last: until now health answered NOT_SERVING and a new Process call
            # was refused UNAVAILABLE by the servicer (the scheduler no longer accepts). A call
            # arriving while grpc itself shuts down may instead be CANCELLED, unpredictably.
            # Streams still open when the grace period ends are cancelled.
            await self._server.stop(max(0.0, deadline - loop.time()))
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.http is not None:
            await asyncio.to_thread(self.http.close)
        if self.redis is not None:
            await self.redis.close()
        if self.heartbeats is not None:
            await self.heartbeats.stop()
        await self.telemetry.stop()
        if self._froze_gc:
            gc.unfreeze()  # a process that goes on (tests, a notebook) gets its usual collector back
            self._froze_gc = False
        self._stopped.set()
        log.info("stopped")

    async def wait(self) -> None:
        """Wait until the server stopped."""
        await self._stopped.wait()


def _bind_problem(host: str, port: int) -> str:
    """Why grpc could not bind ``host:port`` (empty when it should, or when unsure)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"the host does not resolve (AIOS_HOST or --host): {exc.strerror}"
    if port == 0:
        return ""
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # grpc's listeners use SO_REUSEADDR too: a port in TIME_WAIT is not "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                return ""  # let grpc report anything else
            return ""
    return "address already in use (AIOS_PORT or --port; 0 picks a free one)" if infos else ""


def configure_logging(level: str, fmt: str = "text") -> None:
    """One line per record on stderr for the ``aios_grpc`` loggers (``fmt``: ``text`` or ``json``)."""
    logger = logging.getLogger("aios_grpc")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
    for handler in logger.handlers:
        if fmt == "json":
            from aios_grpc.telemetry._logs import JsonFormatter

            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.setLevel(level)
    logger.propagate = False


__all__ = ["BlockServer", "configure_logging"]
