"""``Block``: serve a block class until SIGTERM, ``Block(MyBlock).run()``.

>>> # Block(MyBlock).run()          # serve on AIOS_HOST:AIOS_PORT until SIGTERM
>>> # Block(MyBlock, port=0).run()  # settings can be overridden from code
>>> # Block(MyBlock, settings=Settings(port=0), workers=8).run()  # or given whole

A bad setting or an unknown keyword fails at construction with a ``ConfigurationError``
naming it; ``run()`` reports an error of start-up (a port in use, a failing block
``__init__``) as one line on stderr and exits with status 2, as ``aios-grpc serve`` does.

A second signal exits at once; a block call still running past the grace period
does not hold the exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from typing import Any

from aios_grpc.blockhealth.settings import BlockHealthSettings
from aios_grpc.errors import AiosError
from aios_grpc.server import BlockServer, configure_logging
from aios_grpc.settings import Settings, build_settings, load_settings, unknown_variables

log = logging.getLogger("aios_grpc.server")


class Block:
    """Serve a block class: ``Block(MyBlock).run()``.

    Keyword arguments override settings from the environment, e.g.
    ``Block(MyBlock, port=50052, workers=8)``; ``settings=`` gives a whole ``Settings``
    (the keywords still override it). An unknown keyword is a ``ConfigurationError``
    naming the closest setting.
    """

    def __init__(self, block_class: type[Any], settings: Settings | None = None, **overrides: Any) -> None:
        self.block_class = block_class
        if settings is None:
            self.settings = load_settings(**overrides)
        elif not isinstance(settings, Settings):
            raise TypeError(f"settings must be an aios_grpc.Settings, not {type(settings).__name__}")
        elif overrides:
            self.settings = build_settings(Settings, {**settings.model_dump(), **overrides})
        else:
            self.settings = settings
        self.server: BlockServer | None = None

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return.

        An error of start-up is one line on stderr (``aios-grpc: ...``) and
        ``SystemExit(2)``, without a traceback.
        """
        configure_logging(self.settings.log_level, self.settings.log_format)
        for line in unknown_variables((Settings, BlockHealthSettings)):
            log.warning("%s", line)
        try:
            asyncio.run(self.serve())
        except AiosError as exc:
            print(f"aios-grpc: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        # A block call still running past the grace period must not hold the exit: the
        # interpreter would otherwise wait for its worker thread at shutdown.
        busy = [t for t in threading.enumerate() if t.name.startswith("aios-block") and t.is_alive()]
        for thread in busy:
            thread.join(0.2)
        if any(t.is_alive() for t in busy):
            log.warning("block code still running after the grace period; exiting without waiting for it")
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    async def serve(self) -> None:
        """The coroutine behind ``run()``, for callers that own the event loop."""
        server = self.server = BlockServer(self.block_class, self.settings)
        loop = asyncio.get_running_loop()
        signals = 0
        stopping: list[asyncio.Future[None]] = []  # keeps the drain task referenced

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                log.warning("second %s: exiting now", signal.Signals(signum).name)
                os._exit(1)
            log.info("%s received", signal.Signals(signum).name)
            stopping.append(asyncio.ensure_future(server.stop()))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await server.start()
        except Exception:
            await server.stop(0)
            raise
        await server.wait()


__all__ = ["Block"]
