"""Failures of block code reach the server log: ERROR with the traceback for an exception
or a wrong shape, WARNING for (False, msg), rate-limited per call site."""

from __future__ import annotations

import json
import logging
import signal
from typing import Any

import grpc
from aios_grpc_client import BlockClient, make_packet

from aios_grpc import OnDataResult, PreProcessResult
from aios_grpc.errors import BlockCodeError, DeadlineExceeded, ProcessingFailed
from aios_grpc.runtime.blame import BlockErrorLog


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _capture() -> _Records:
    handler = _Records()
    logging.getLogger("aios_grpc.block").addHandler(handler)
    return handler


def _raised(message: str) -> BlockCodeError:
    try:
        try:
            raise ValueError(message)  # the block's line
        except ValueError as cause:
            raise BlockCodeError(f"on_data raised ValueError: {message}", stage="data") from cause
    except BlockCodeError as exc:
        return exc


class ParsingBlock:
    """Parses the packet's data itself (the server's JSON check is off) and answers as told."""

    def __init__(self, context: Any) -> None:
        pass

    def on_preprocess(self, packet: Any) -> Any:
        data = json.loads(packet.data)
        if "reject" in data:
            return False, data["reject"]
        return True, [PreProcessResult(packet=packet, extra_data=data)]

    def on_data(self, entry: Any) -> Any:
        if "raise" in entry.extra_data:
            raise ValueError(entry.extra_data["raise"])
        if "shape" in entry.extra_data:
            return "a string instead of a pair"
        return True, OnDataResult(output={})


def test_a_served_blocks_failures_are_logged_with_method_traceback_and_level(spawn: Any) -> None:
    server = spawn("tests.runtime.test_blame:ParsingBlock", env={"AIOS_VALIDATE_JSON": "false"})
    with BlockClient(server.address) as client:
        raised = client.run({"raise": "bad input\nFORGED"}, session_id="s\n1")
        assert raised.error is not None and raised.error.code == grpc.StatusCode.INTERNAL
        assert not client.run({"reject": "no threshold"}).ok
        assert not client.run({"shape": True}).ok
        stream = client.stream(timeout=30)
        stream.send(make_packet("{not json", session_id="s", seq_no=3))
        stream.close()
        assert [r.error.code for r in stream.results() if r.error] == [grpc.StatusCode.INTERNAL]
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(30)
    log = server.rest_of_log()
    lines = log.splitlines()
    error = next(line for line in lines if "block code failed in ParsingBlock.on_data" in line)
    assert " ERROR aios_grpc.block: " in error and "tests/runtime/test_blame.py:" in error
    # The caller's session id is escaped onto the line (no forged line from its newline).
    assert "session 's\\n1' seq_no 1" in error
    assert "Traceback (most recent call last)" in log and 'raise ValueError(entry.extra_data["raise"])' in log
    assert not any(line.startswith("FORGED") for line in lines)
    assert any(" WARNING aios_grpc.block: ParsingBlock.on_preprocess refused packet" in line for line in lines), log
    shape = next(line for line in lines if "must return" in line)
    assert " ERROR aios_grpc.block: block code failed in ParsingBlock.on_data on packet" in shape
    decode = next(line for line in lines if "ParsingBlock.on_preprocess at" in line)
    assert "JSONDecodeError" in decode and "seq_no 3" in decode and "json.loads(packet.data)" in log


def test_failures_are_rate_limited_per_call_site_with_a_count(serve: Any) -> None:
    now = [0.0]
    errors = BlockErrorLog("B", burst=3, interval_s=60.0, clock=lambda: now[0])
    handler = _capture()
    try:
        for i in range(10):
            errors.report(_raised(f"boom {i}"), "s", i)
        errors.report(ProcessingFailed("on_data failed: no", stage="data"), "s", 99)
        full = [r for r in handler.records if r.levelno == logging.ERROR]
        assert len(full) == 3 and all("Traceback" in r.getMessage() for r in full)
        assert "further failures here are counted" in full[-1].getMessage()
        assert [r.levelno for r in handler.records].count(logging.WARNING) == 1  # another call site
        now[0] = 61.0
        errors.report(_raised("boom again"), "s", 11)
        summary = handler.records[-2].getMessage()
        assert "B.on_data" in summary and "failed 7 more times" in summary and "boom 9" in summary
        assert "Traceback" in handler.records[-1].getMessage()  # a new window: logged in full again
    finally:
        logging.getLogger("aios_grpc.block").removeHandler(handler)


def test_one_failed_batch_is_logged_once_and_caller_errors_not_at_all() -> None:
    errors = BlockErrorLog("B")
    handler = _capture()
    try:
        shared = _raised("batch broke")
        for seq in range(64):  # on_batch's one error answers each of its packets
            errors.report(shared, "s", seq)
        errors.report(DeadlineExceeded("deadline passed", stage="deadline"), "s", 1)
        errors.flush()
        assert len(handler.records) == 1
    finally:
        logging.getLogger("aios_grpc.block").removeHandler(handler)


def test_json_logs_are_one_object_per_line_with_the_packets_trace_ids(spawn: Any) -> None:
    env = {
        "AIOS_VALIDATE_JSON": "false",
        "AIOS_LOG_FORMAT": "json",
        "AIOS_TRACING": "on",
        "OTEL_TRACES_EXPORTER": "none",
    }
    server = spawn("tests.runtime.test_blame:ParsingBlock", env=env)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with BlockClient(server.address) as client:
        stream = client.stream(timeout=30)
        headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
        stream.send(make_packet({"raise": "bad\nline"}, session_id="s", seq_no=1, headers=headers))
        stream.close()
        assert [r.error.code for r in stream.results() if r.error] == [grpc.StatusCode.INTERNAL]
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(30)
    entries = [json.loads(line) for line in server.rest_of_log().splitlines()]  # every line is JSON
    (failed,) = [e for e in entries if e["logger"] == "aios_grpc.block"]
    assert failed["level"] == "ERROR" and "ParsingBlock.on_data" in failed["message"]
    assert "Traceback" in failed["message"]
    assert failed["trace_id"] == trace_id and len(failed["span_id"]) == 16
    assert {"ts", "level", "logger", "message"} <= set(entries[0])
