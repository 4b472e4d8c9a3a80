"""The same packets through the Python client, the TypeScript client and grpcurl: the same results."""

from __future__ import annotations

import json
import subprocess

import grpc
from aios_grpc_client import BlockClient

from tests.blocks.basic import EchoBlock
from tests.client.test_typescript import TS, node_modules  # noqa: F401  (the fixture)
from tests.conftest import grpcurl, json_stream

PACKETS = [{"x": 1}, {"fail": "not this one"}, {"nested": {"a": [1, 2.5, "s", None, True]}}, "text", [3, 4]]
PARAMETERS = {"n": 4, "f": 0.25, "deep": {"list": [1, {"k": "v"}]}}
CODES = {code.value[0]: code.name for code in grpc.StatusCode}
KINDS = {"RESULT_KIND_OK": "ok", "RESULT_KIND_ERROR": "error", "RESULT_KIND_PARTIAL": "partial"}


def _python(address: str) -> dict:
    with BlockClient(address) as client:
        # A str item is a packet's data text as is: JSON-encode it like the other clients do.
        items = [json.dumps(p) if isinstance(p, str) else p for p in PACKETS]
        results = [
            {
                "session_id": r.session_id,
                "seq_no": r.seq_no,
                "kind": r.kind,
                "data": r.data,
                "code": r.error.code.name if r.error else None,
                "retryable": r.error.retryable if r.error else None,
            }
            for r in client.process(items, session_id="interop")
        ]
        applied = client.set_parameters(PARAMETERS)["applied"]
        return {
            "results": results,
            "applied": applied,
            "block_id": client.get_info()["block_id"],
            "health": client.health(),
        }


def _typescript(address: str) -> dict:
    script = TS / "dist" / "test" / "interop.js"
    sources = [*(TS / "src").rglob("*.ts"), *(TS / "test").rglob("*.ts")]
    if not script.exists() or script.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        # node_modules/.bin/tsc, not npx (which may ask the registry first).
        tsc = str(TS / "node_modules" / ".bin" / "tsc")
        build = subprocess.run([tsc, "-p", "."], cwd=TS, capture_output=True, text=True, timeout=120)
        assert build.returncode == 0, build.stdout + build.stderr
    proc = subprocess.run(
        ["node", "dist/test/interop.js", address, "interop"],
        input=json.dumps({"packets": PACKETS, "parameters": PARAMETERS}),
        cwd=TS, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _field(message: dict, name: str, default: object = None) -> object:
    """A field of grpcurl's JSON by its proto name or its camelCase JSON name."""
    camel = name.split("_")[0] + "".join(w.title() for w in name.split("_")[1:])
    return message.get(name, message.get(camel, default))


def _grpcurl(address: str) -> dict:
    requests = "\n".join(
        json.dumps({"packet": {"session_id": "interop", "seq_no": i, "data": json.dumps(p)}})
        for i, p in enumerate(PACKETS, 1)
    )
    service = "aios.block.v1.BlockService"
    responses = json_stream(grpcurl("-plaintext", "-d", "@", address, f"{service}/Process", data=requests).stdout)
    results = []
    for response in responses:
        for r in [response["result"]] if "result" in response else response.get("results", []):
            error = r.get("error")
            output = r.get("output")
            results.append(
                {
                    "session_id": _field(r, "session_id", ""),
                    "seq_no": int(_field(r, "seq_no", 0)),
                    "kind": KINDS[r["kind"]],
                    "data": json.loads(output["data"]) if output and output.get("data") else None,
                    "code": CODES[error["code"]] if error else None,
                    "retryable": error.get("retryable", False) if error else None,
                }
            )
    applied = json.loads(
        grpcurl("-plaintext", "-d", json.dumps({"parameters": PARAMETERS}), address, f"{service}/SetParameters").stdout
    )["applied"]
    info = json.loads(grpcurl("-plaintext", address, f"{service}/GetInfo").stdout)
    health = json.loads(grpcurl("-plaintext", address, "grpc.health.v1.Health/Check").stdout)["status"]
    return {"results": results, "applied": applied, "block_id": _field(info, "block_id"), "health": health}


def test_python_typescript_and_grpcurl_see_the_same_results(serve, node_modules):  # noqa: F811
    served = serve(EchoBlock, block_id="interop-block")
    python, typescript, curl = _python(served.address), _typescript(served.address), _grpcurl(served.address)
    assert [r["kind"] for r in python["results"]] == ["ok", "error", "ok", "ok", "ok"]
    assert python["results"][1]["code"] and "not this one" not in json.dumps(python["results"][1]["data"])
    assert python["results"][2]["data"] == {"echo": {"nested": {"a": [1, 2.5, "s", None, True]}}}
    assert python == typescript, (python, typescript)
    assert python == curl, (python, curl)
    assert python["applied"] == PARAMETERS and python["block_id"] == "interop-block" and python["health"] == "SERVING"
