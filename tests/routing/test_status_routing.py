"""Conditional routing: a graph entry names its next targets by each output's ``status``."""

from __future__ import annotations

import json
import os
from typing import Any

import grpc
from aios_grpc_client import BlockClient, make_packet

from aios_grpc.routing.pointer import parse_output_ptr
from tests.blocks.status import Classify
from tests.routing.test_graph import ALLOW, target


def test_each_output_goes_where_its_status_says_across_processes(spawn: Any, serve: Any) -> None:
    env = {"AIOS_ROUTE_ALLOW": ALLOW, "AIOS_WORKERS": "2"}
    alarm = spawn("tests.blocks.graph:StageBlock", env={**env, "AIOS_BLOCK_ID": "alarm"})
    archive = spawn("tests.blocks.graph:StageBlock", env={**env, "AIOS_BLOCK_ID": "archive"})
    a = serve(Classify, block_id="classify", route_allow=["127.0.0.1:*"])
    graph = json.dumps(
        {
            "is_graph": True,
            "graph": {
                "classify": {
                    "outputs": [target(archive.address, "archive")],  # the default
                    "on_status": {"hot": {"outputs": [target(alarm.address, "alarm")]}, "skip": {"outputs": []}},
                },
                "alarm": {"outputs": []},
                "archive": {"outputs": []},
            },
        }
    )
    values = [10, 90, 0, 70, 30]
    packets = [make_packet({"value": v}, session_id=f"s{i}", seq_no=1, output_ptr=graph) for i, v in enumerate(values)]
    with BlockClient(a.address) as client:
        results = [r for r in client.process(packets, timeout=60) if r.terminal]
    assert all(r.ok for r in results)
    paths = {r.session_id: r.data["path"] for r in results}
    assert paths == {
        "s0": ["classify", "archive"],
        "s1": ["classify", "alarm"],
        "s2": ["classify"],  # "skip": no target, answered by the first block
        "s3": ["classify", "alarm"],
        "s4": ["classify", "archive"],
    }
    # The branches ran in the other processes.
    assert all(r.data["pid"] != os.getpid() for r in results if len(r.data["path"]) > 1)


def test_a_bad_on_status_is_refused_before_the_block_runs(serve: Any) -> None:
    a = serve(Classify, block_id="classify", route_allow=["127.0.0.1:*"])
    bad = json.dumps({"is_graph": True, "graph": {"classify": {"on_status": {"hot": {"outputs": "nowhere"}}}}})
    with BlockClient(a.address) as client:
        [result] = [r for r in client.process([make_packet({"value": 1}, output_ptr=bad)], timeout=30) if r.terminal]
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "on_status" in result.error.message and "outputs must be a list" in result.error.message


def test_a_cycle_through_a_status_branch_is_refused() -> None:
    looped = {
        "is_graph": True,
        "graph": {
            "a": {
                "outputs": [],
                "on_status": {"again": {"outputs": [{"host": "h", "port": 1, "block_id": "b", "transport": "grpc"}]}},
            },
            "b": {"outputs": [{"host": "h", "port": 2, "block_id": "a", "transport": "grpc"}]},
        },
    }
    try:
        parse_output_ptr(json.dumps(looped), "a")
    except Exception as exc:
        assert "cycle: a -> b -> a" in str(exc)
    else:
        raise AssertionError("the cycle was not refused")
