"""Links to locked-down blocks (AIOS_ROUTE_TLS), and Redis with a password and over TLS."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from aios_grpc_client import BlockClient, make_packet

from aios_grpc.errors import ConfigurationError
from aios_grpc.redis.local import free_port, valkey_binary
from aios_grpc.routing.link_security import LinkSecurityTable
from aios_grpc.testing import serve_block
from tests.blocks.graph import StageBlock
from tests.certs import Authority
from tests.helpers import add_packets, redis_stream_target, result_sessions, wait_for

TOKEN = "link-token-b"


def graph_to(address: str) -> str:
    host, port = address.rsplit(":", 1)
    return json.dumps({"outputs": [{"host": host, "port": int(port), "block_id": "b", "transport": "grpc"}]})


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority("links-ca")


@pytest.fixture
def locked_b(serve: Any, ca: Authority, tmp_path: Path) -> Any:
    """Block b with mutual TLS and a data-plane token."""
    server = ca.issue("b", tmp_path / "b")
    return serve(
        StageBlock,
        block_id="b",
        tls_cert_file=str(server.cert),
        tls_key_file=str(server.key),
        tls_client_ca_file=str(ca.write(tmp_path)),
        auth_tokens=[TOKEN],
    )


def run_chain(a_address: str, b_address: str, n: int = 5) -> list[Any]:
    packets = [make_packet({"i": i}, session_id=f"s{i}", seq_no=1, output_ptr=graph_to(b_address)) for i in range(n)]
    with BlockClient(a_address) as client:
        return [r for r in client.process(packets, timeout=60) if r.terminal]


def test_a_chain_reaches_a_block_locked_with_mutual_tls_and_a_token(
    serve: Any, locked_b: Any, ca: Authority, tmp_path: Path
) -> None:
    client_cert = ca.issue("a", tmp_path / "a", client=True)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    a = serve(
        StageBlock,
        block_id="a",
        route_allow=["127.0.0.1:*"],
        route_tls=[
            {
                "pattern": "127.0.0.1:*",
                "ca_file": str(ca.write(tmp_path)),
                "cert_file": str(client_cert.cert),
                "key_file": str(client_cert.key),
                "token_file": str(token_file),
            }
        ],
    )
    results = run_chain(a.address, locked_b.address)
    assert [r.error for r in results if not r.ok] == []
    assert sorted(r.session_id for r in results) == [f"s{i}" for i in range(5)]
    assert all(r.data["path"] == ["a", "b"] for r in results)


def test_without_the_token_or_the_client_certificate_the_chain_is_refused(
    serve: Any, locked_b: Any, ca: Authority, tmp_path: Path
) -> None:
    ca_file = str(ca.write(tmp_path))
    client_cert = ca.issue("a", tmp_path / "a", client=True)
    no_token = serve(
        StageBlock,
        block_id="a",
        route_allow=["127.0.0.1:*"],
        route_retry_timeout_s=1,
        route_tls=[
            {
                "pattern": "127.0.0.1:*",
                "ca_file": ca_file,
                "cert_file": str(client_cert.cert),
                "key_file": str(client_cert.key),
            }
        ],
    )
    [result] = run_chain(no_token.address, locked_b.address, n=1)
    assert not result.ok and "UNAUTHENTICATED" in result.error.message
    no_cert = serve(
        StageBlock,
        block_id="a",
        route_allow=["127.0.0.1:*"],
        route_retry_timeout_s=1,
        route_tls=[{"pattern": "127.0.0.1:*", "ca_file": ca_file, "token": TOKEN}],
    )
    [result] = run_chain(no_cert.address, locked_b.address, n=1)
    assert not result.ok and result.error.code == grpc.StatusCode.UNAVAILABLE
    plaintext = serve(StageBlock, block_id="a", route_allow=["127.0.0.1:*"], route_retry_timeout_s=2)
    [result] = run_chain(plaintext.address, locked_b.address, n=1)
    assert not result.ok and result.error.code == grpc.StatusCode.UNAVAILABLE


def test_the_first_matching_entry_decides_and_others_stay_plaintext(tmp_path: Path) -> None:
    table = LinkSecurityTable(
        [
            {"pattern": "b.svc:50051", "token": "t1"},
            {"pattern": "*.svc:*", "token": "t2", "tls": True},
        ]
    )
    first, second = table.for_address("b.svc:50051"), table.for_address("c.svc:7000")
    assert first is not None and first.metadata() == (("authorization", "Bearer t1"),) and not first.tls
    assert second is not None and second.tls and second.channel_credentials() is not None
    assert table.for_address("c.other:50051") is None
    assert table.for_address("x.b.svc:50051") is None  # a * stays within one label
    assert "t1" not in repr(first)


def test_a_link_token_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    [entry] = LinkSecurityTable([{"pattern": "*:*", "token_file": str(token_file)}]).entries
    assert entry.metadata() == (("authorization", "Bearer first"),)
    fresh = tmp_path / "token.new"
    fresh.write_text("# rotated\nsecond\n")
    fresh.replace(token_file)
    assert entry.metadata() == (("authorization", "Bearer second"),)
    token_file.unlink()
    assert entry.metadata() == (("authorization", "Bearer second"),)  # gone: the last one read is kept


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"token": "x"}, 'AIOS_ROUTE_TLS[0]: needs a "pattern"'),
        ({"pattern": "a:1", "cert_file": "/x"}, "cert_file and key_file go together"),
        (
            {"pattern": "a:1", "ca_file": "/nonexistent.pem"},
            "AIOS_ROUTE_TLS[0]: ca_file='/nonexistent.pem': cannot read",
        ),
        ({"pattern": "a:1", "token": " "}, "token is empty"),
        ({"pattern": "a:1", "secret": "x"}, "unknown keys ['secret']"),
        ({"pattern": "nonsense", "token": "hidden-value"}, "AIOS_ROUTE_TLS[0]"),
        ({"pattern": "a:1", "token_file": "/nonexistent/token"}, "token_file='/nonexistent/token': cannot read"),
    ],
)
def test_a_bad_route_tls_entry_fails_at_start_up_with_one_line(entry: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        serve_block(StageBlock, route_tls=[entry])
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert "hidden-value" not in message


# -- Redis with a password, and over TLS ------------------------------------------------

PASSWORD = "redis-pass-123"


@pytest.fixture
def password_redis() -> Any:
    """A real valkey-server that requires a password (``requirepass``); yields its port."""
    port = free_port()
    proc = subprocess.Popen(
        [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--requirepass", PASSWORD],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=0.5)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(up, what="valkey with a password to start")
        yield port
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_redis_with_a_password_through_aios_redis_url(serve: Any, password_redis: int) -> None:
    port = password_redis
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()  # really locked
    client = redis.Redis(port=port, password=PASSWORD)
    served = serve(
        StageBlock,
        block_id="blk",
        redis_url=f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
        redis_ingress_stream="jobs",
        redis_results_stream="results",
    )
    add_packets(client, "jobs", 5)
    wait_for(lambda: sorted(result_sessions(client, "results")) == [f"s{i}" for i in range(5)], what="5 results")
    assert served.server.redis is not None
    client.close()


def test_a_redis_routing_target_with_a_password_from_route_tls(serve: Any, password_redis: int) -> None:
    port = password_redis
    a = serve(
        StageBlock,
        block_id="a",
        route_allow=["127.0.0.1:*"],
        route_allow_queues=["out"],
        route_tls=[{"pattern": f"127.0.0.1:{port}", "password": PASSWORD}],
    )
    ptr = json.dumps({"outputs": [redis_stream_target(port, "out")]})
    with BlockClient(a.address) as block:
        result = block.run(make_packet({"i": 1}, session_id="r1", seq_no=1, output_ptr=ptr), timeout=30)
    assert result.ok, result.error
    client = redis.Redis(port=port, password=PASSWORD)
    assert result_sessions(client, "out") == ["r1"]
    client.close()


class _TlsTerminator:
    """A real TLS endpoint in front of a plaintext Redis (the valkey here has no TLS built in)."""

    def __init__(self, cert: Path, key: Path, upstream_port: int) -> None:
        import asyncio
        import ssl
        import threading

        self.upstream_port = upstream_port
        self.port = free_port()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        async def start() -> None:
            self.server = await asyncio.start_server(handle, "127.0.0.1", self.port, ssl=context)
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop)
        assert ready.wait(10)

    def close(self) -> None:
        import asyncio

        async def stop() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_redis_over_tls_with_rediss(serve: Any, password_redis: int, ca: Authority, tmp_path: Path) -> None:
    server_cert = ca.issue("redis", tmp_path / "redis")
    ca_file = ca.write(tmp_path)
    tls = _TlsTerminator(server_cert.cert, server_cert.key, password_redis)
    try:
        url = f"rediss://:{PASSWORD}@localhost:{tls.port}/0?ssl_ca_certs={ca_file}"
        served = serve(
            StageBlock, block_id="blk", redis_url=url, redis_ingress_stream="jobs", redis_results_stream="results"
        )
        client = redis.Redis(port=password_redis, password=PASSWORD)
        add_packets(client, "jobs", 3)
        wait_for(lambda: sorted(result_sessions(client, "results")) == ["s0", "s1", "s2"], what="3 results over TLS")
        assert served.server.redis is not None
        client.close()
        served.close()  # before its Redis endpoint goes away
    finally:
        tls.close()
