"""Side-car pushes: retried once, each try bounded, all side-cars at once; failures counted and logged."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from aios_grpc.events import SIDECAR_INPUTS
from aios_grpc.packet import AIOSPacket
from aios_grpc.redis.wiring import context_helpers
from aios_grpc.settings import load_settings
from tests.helpers import wait_for


class SilentServer:
    """Accepts connections and never answers (a side-car that hangs); counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_hanging_side_car_is_tried_twice_and_the_others_still_get_the_packet(redis_server: Any, caplog: Any) -> None:
    silent = SilentServer()
    try:
        settings = load_settings(
            block_id="blk",
            sidecars={
                "hung": {"redis_url": f"redis://127.0.0.1:{silent.port}/0"},
                "good": {"redis_url": redis_server.url},
            },
        )
        side_cars = context_helpers(settings)["side_cars"]
        packet = AIOSPacket(session_id="s", seq_no=1, data='{"x": 1}')
        with caplog.at_level(logging.WARNING, logger="aios_grpc.events"):
            assert side_cars.push_to_all_sidecars(packet) is False
        assert redis_server.client().llen(SIDECAR_INPUTS) == 1  # the good one got it
        wait_for(lambda: len(silent.accepted) == 2, what="two connections to the hung side-car")
        assert len(silent.accepted) == 2  # the first try and one retry, no more
        assert side_cars.failures_by_name == {"hung": 1} and side_cars.failures == 1
        messages = [r.getMessage() for r in caplog.records]
        assert any("push to side-car 'hung' failed, retrying once" in m for m in messages)
        assert any("push to side-car 'hung' failed twice, giving up" in m for m in messages)
    finally:
        silent.close()
