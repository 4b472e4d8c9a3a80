"""Values come back as they went in, run() keeps partial outputs, and async channels are lazy."""

from __future__ import annotations

import subprocess
import sys

from aios_grpc_client import AsyncBlockClient, BlockClient

from tests.blocks.basic import EchoBlock, StreamingBlock
from tests.blocks.instances import WhoBlock
from tests.conftest import ROOT

VALUES = {"n": 4, "neg": -7, "big": 2**40, "f": 0.5, "list": [1, 2.5, {"k": 3}], "none": None, "s": "x"}


def _same(a: object, b: object) -> bool:
    """Equal and of the same types all the way down (4 == 4.0 would pass a plain ==)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)  # type: ignore[attr-defined]
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


def test_numbers_keep_their_type_through_parameters_management_and_info(serve):
    served = serve(WhoBlock, instance_id="w", block_init_parameters={"start": 1})
    with BlockClient(served.address) as client:
        out = client.set_parameters(VALUES)
        assert _same(out["applied"], VALUES), out["applied"]
        assert _same(out["parameters"], {"start": 1, **VALUES})
        assert _same(client.management("act", VALUES)["data"], VALUES)
        assert _same(client.get_info()["parameters"], {"start": 1, **VALUES})


async def test_numbers_keep_their_type_async(serve):
    served = serve(WhoBlock, instance_id="w")
    async with AsyncBlockClient(served.address) as client:
        assert _same((await client.set_parameters({"n": 4}))["applied"], {"n": 4})
        assert _same((await client.management("a", {"n": 4}))["data"], {"n": 4})


def test_run_keeps_the_partial_outputs(serve):
    served = serve(StreamingBlock)
    with BlockClient(served.address) as client:
        out = client.run({"text": "a b c"})
    assert out.terminal and [p.data for p in out.partials] == [{"token": "a"}, {"token": "b"}, {"token": "c"}]
    assert all(p.kind == "partial" for p in out.partials)


async def test_async_run_keeps_the_partial_outputs(serve):
    served = serve(StreamingBlock)
    async with AsyncBlockClient(served.address) as client:
        out = await client.run({"text": "x y"})
    assert [p.data for p in out.partials] == [{"token": "x"}, {"token": "y"}]


def test_an_async_client_made_outside_a_loop_works_in_two_asyncio_runs(serve):
    served = serve(EchoBlock)
    code = (
        "import asyncio, sys\n"
        "from aios_grpc_client import AsyncBlockClient\n"
        "client = AsyncBlockClient(sys.argv[1])\n"
        "async def one(i):\n"
        "    return (await client.run({'i': i})).data\n"
        "print(asyncio.run(one(1)))\n"
        "print(asyncio.run(one(2)))\n"
        "async def last():\n"
        "    await client.close()\n"
        "asyncio.run(last())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, served.address],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["{'echo': {'i': 1}}", "{'echo': {'i': 2}}"]


def test_partials_pass_through_in_order_with_retries_on(serve):
    served = serve(StreamingBlock)
    with BlockClient(served.address) as client:
        results = list(client.process([{"text": "p q"}, {"text": "r"}], session_id="s"))
    kinds = [(r.seq_no, r.kind) for r in results]
    assert kinds == [(1, "partial"), (1, "partial"), (1, "ok"), (2, "partial"), (2, "ok")]
