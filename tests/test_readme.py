"""The README's examples run as written."""

from __future__ import annotations

import re

from aios_grpc_client import BlockClient

from tests.conftest import ROOT, grpcurl, json_stream

README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def _minimal_block() -> dict:
    namespace: dict = {"__name__": "readme_block"}
    exec(_blocks("python")[0], namespace)
    return namespace


def test_the_minimal_block_and_the_tester_examples():
    namespace = _minimal_block()
    tester_code = next(b for b in _blocks("python") if "BlockTester" in b)
    outputs = []
    for line in tester_code.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith(("BlockTester", "context", "from")):
            if line.startswith(("BlockTester", "BlockTester.init")):
                outputs.append(eval(line, namespace))
            else:
                exec(line, namespace)
    assert outputs == [
        [{"value": 0.9, "passed": True}],
        [{"value": 1.0, "passed": True}],
        [{"value": 0.9, "passed": False}],
    ]


def test_the_grpcurl_process_example_and_the_client_example(serve):
    from tests.test_public_api import SimpleBlock

    served = serve(SimpleBlock)  # what `scripts/dev serve` serves
    shell = next(b for b in _blocks("bash") if "BlockService/Process" in b)
    heredoc = shell.split("<<'EOF'\n", 1)[1].split("EOF", 1)[0]
    results = [r["result"] for r in json_stream(
        grpcurl("-plaintext", "-d", "@", served.address, "aios.block.v1.BlockService/Process", data=heredoc).stdout
    )]  # fmt: skip
    assert [(r["seqNo"], r["output"]["data"]) for r in results] == [
        ("1", '{"value": 0.9, "passed": true}'),
        ("2", '{"value": 0.1, "passed": false}'),
    ]
    client_code = next(b for b in _blocks("python") if "BlockClient(" in b)
    client_code = client_code.replace('"127.0.0.1:50051"', repr(served.address)).replace("print(", "out.append((")
    client_code = re.sub(r"out\.append\(\((.*)\)$", r"out.append((\1))", client_code, flags=re.M)
    out: list = []
    exec(client_code, {"out": out, "BlockClient": BlockClient})
    assert out[:2] == [(1, True, {"value": 0.9, "passed": True}), (2, True, {"value": 0.1, "passed": False})]
    assert out[2] == ({"threshold": 0.7}, "SERVING")
