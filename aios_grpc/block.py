"""``Block``: serve a block class until SIGTERM, ``Block(MyBlock).run()``.

>>> # Block(MyBlock).run()          # serve on AIOS_HOST:AIOS_PORT until SIGTERM
>>> # Block(MyBlock, port=0).run()  # settings can be overridden from code

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

from aios_grpc.server import BlockServer, configure_logging
from aios_grpc.settings import load_settings

log = logging.getLogger("aios_grpc.server")


class Block:
    """Serve a block class: ``Block(MyBlock).run()``.

    Keyword arguments override settings from the environment, e.g.
    ``Block(MyBlock, port=50052, workers=8)``.
    """

    def __init__(self, block_class: type[Any], **settings: Any) -> None:
        self.block_class = block_class
        self.settings = load_settings(**settings)
        self.server: BlockServer | None = None

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return."""
        configure_logging(self.settings.log_level, self.settings.log_format)
        asyncio.run(self.serve())
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
