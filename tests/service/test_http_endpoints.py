"""The original SDK's HTTP endpoints on AIOS_HTTP_PORT: /health, /setParameters, /mgmt."""

from __future__ import annotations

import http.client
import json
from typing import Any

from aios_grpc_client import BlockClient

from aios_grpc import OnDataResult, PreProcessResult
from tests.helpers import wait_for


class Thresholds:
    """The seed's SimpleBlock, with a health() that a management action can turn."""

    def __init__(self, context: Any) -> None:
        self.threshold = context.block_init_parameters.get("threshold", 0.5)
        self.status = "ok"

    def on_preprocess(self, packet: Any) -> Any:
        return True, [PreProcessResult(packet=packet, extra_data={"input": json.loads(packet.data)})]

    def on_data(self, entry: Any) -> Any:
        value = entry.extra_data["input"].get("value", 0)
        return True, OnDataResult(output={"value": value, "passed": value > self.threshold})

    def on_update(self, updated: dict[str, Any]) -> Any:
        if "threshold" in updated:
            if not isinstance(updated["threshold"], int | float):
                return False, "threshold must be a number"
            self.threshold = updated["threshold"]
        return True, updated

    def health(self) -> Any:
        return {"status": self.status, "threshold": self.threshold}

    def management(self, action: str, data: dict[str, Any]) -> Any:
        if action == "get_threshold":
            return {"threshold": self.threshold}
        if action == "set_status":
            self.status = data["status"]
            return {"status": self.status}
        if action == "boom":
            raise RuntimeError("management broke")
        return {"message": f"Unknown action: {action}"}


def call(port: int, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=raw, headers=headers)
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    return response.status, answer


def test_the_original_endpoints_answer_the_original_shapes(serve: Any) -> None:
    served = serve(Thresholds, http_port=0, health_interval_s=0.05)
    port = served.server.http.port
    wait_for(lambda: call(port, "GET", "/health")[1].get("data") == {"status": "ok", "threshold": 0.5}, what="health")
    assert call(port, "GET", "/health") == (200, {"success": True, "data": {"status": "ok", "threshold": 0.5}})
    assert call(port, "POST", "/setParameters", {"threshold": 0.9}) == (
        200,
        {"success": True, "data": {"threshold": 0.9}},
    )
    assert call(port, "POST", "/mgmt", {"mgmt_action": "get_threshold", "mgmt_data": {}}) == (
        200,
        {"success": True, "data": {"threshold": 0.9}},
    )
    with BlockClient(served.address) as client:
        assert client.run({"value": 0.7}, timeout=30).data == {"value": 0.7, "passed": False}
        assert client.get_info()["parameters"]["threshold"] == 0.9
    # An SDK action through /mgmt too.
    status, body = call(port, "POST", "/mgmt", {"mgmt_action": "aios.health"})
    assert status == 200 and body["data"]["serving"] is True
    # NOT_SERVING: 503 with the block's own report and the reason.
    call(port, "POST", "/mgmt", {"mgmt_action": "set_status", "mgmt_data": {"status": "down"}})
    wait_for(lambda: call(port, "GET", "/health")[0] == 503, what="503")
    status, body = call(port, "GET", "/health")
    assert body["success"] is False and body["data"]["status"] == "down" and "'down'" in body["message"]


def test_bad_requests_get_clear_errors_and_the_server_goes_on(serve: Any) -> None:
    served = serve(Thresholds, http_port=0)
    port = served.server.http.port
    status, body = call(port, "POST", "/setParameters", b"{nope")
    assert status == 400 and body["success"] is False and "not JSON" in body["message"]
    status, body = call(port, "POST", "/setParameters", {"threshold": "high"})
    assert status == 400 and "threshold must be a number" in body["message"]
    status, body = call(port, "POST", "/setParameters", [1, 2])
    assert status == 400 and "JSON object" in body["message"]
    status, body = call(port, "POST", "/mgmt", {"action": "x"})
    assert status == 400 and "mgmt_action" in body["message"]
    status, body = call(port, "POST", "/mgmt", {"mgmt_action": "boom"})
    assert status == 500 and "RuntimeError: management broke" in body["message"]
    status, body = call(port, "GET", "/nope%0Aforged")
    assert status == 404 and "'/nope%0Aforged'" in body["message"]
    assert call(port, "GET", "/mgmt")[0] == 405
    assert call(port, "POST", "/health", {})[0] == 405
    with BlockClient(served.address) as client:
        assert client.run({"value": 1}, timeout=30).ok


def test_the_endpoints_take_the_control_plane_tokens(serve: Any) -> None:
    served = serve(Thresholds, http_port=0, auth_tokens=["data-token"], control_tokens=["control-token"])
    port = served.server.http.port
    for path, method, body in (("/health", "GET", None), ("/setParameters", "POST", {}), ("/mgmt", "POST", {})):
        assert call(port, method, path, body)[0] == 401
        assert call(port, method, path, body, token="wrong")[0] == 401
        status, answer = call(port, method, path, body, token="data-token")
        assert status == 403 and answer["success"] is False
    assert call(port, "GET", "/health", token="control-token")[0] == 200
    assert call(port, "POST", "/mgmt", {"mgmt_action": "get_threshold"}, token="control-token")[0] == 200


def test_off_by_default(serve: Any) -> None:
    assert serve(Thresholds).server.http is None
