"""The routing allow-list: a wildcard stays within one label, queues are allowed by name."""

from __future__ import annotations

import json

import grpc
import pytest
from aios_grpc_client import BlockClient, make_packet

from aios_grpc.errors import ConfigurationError, InvalidPacket, PermissionDenied
from aios_grpc.routing import AllowList, parse_output_ptr
from aios_grpc.routing.graph import GraphRouter
from aios_grpc.settings import Settings
from tests.blocks.graph import StageBlock


@pytest.mark.parametrize(
    ("pattern", "address", "allowed"),
    [
        ("10.0.*:50051", "10.0.attacker.example:50051", False),  # the old fnmatch let * cross dots
        ("10.0.*.*:50051", "10.0.attacker.example:50051", False),  # digits pattern: IP literals only
        ("10.0.*.*:50051", "10.0.3.4:50051", True),
        ("10.0.*.*:50051", "10.0.3.4:50052", False),
        ("10.0.*.*:5005*", "10.0.3.4:50052", True),
        ("10.0.1?.*:50051", "10.0.12.4:50051", True),
        ("*.svc:50051", "b.svc:50051", True),
        ("*.svc:50051", "a.b.svc:50051", False),
        ("*.svc:50051", "b.svc.evil.example:50051", False),
        ("*.ns.svc.cluster.local:50051", "B.NS.svc.cluster.local:50051", True),  # names are case-blind
        ("*:50051", "localhost:50051", True),
        ("*:50051", "evil.example:50051", False),
        ("127.0.0.1:*", "127.0.0.1:6379", True),
        ("127.0.0.1:*", "127.0.0.1.evil.example:6379", False),
        ("[::1]:*", "[::1]:50051", True),
        ("[::1]:*", "[0:0::1]:50051", True),
        ("[::1]:*", "[::2]:50051", False),
    ],
)
def test_a_wildcard_matches_within_one_label(pattern: str, address: str, allowed: bool) -> None:
    assert AllowList([pattern]).allows_address(address) is allowed


@pytest.mark.parametrize("pattern", ["10.0.0.1", "*", ":50051", "a..b:1", "[nope]:1"])
def test_a_malformed_address_pattern_fails_at_start_up(pattern: str) -> None:
    with pytest.raises(ConfigurationError, match="AIOS_ROUTE_ALLOW"):
        GraphRouter.from_settings(Settings(route_allow=[pattern]))


@pytest.mark.parametrize(
    "host", ["unix:/tmp/x.sock", "dns:///evil.example", "ipv4:10.0.0.1,10.0.0.2", "a b", "x\n", "-a.b", "[::g]"]
)
def test_a_target_host_must_be_a_name_or_an_ip_literal(host: str) -> None:
    text = json.dumps({"outputs": [{"host": host, "port": 50051, "transport": "grpc"}]})
    with pytest.raises(InvalidPacket, match="is not a host name or an IP address"):
        parse_output_ptr(text, "a")


def queue_target(name: str) -> object:
    text = json.dumps({"outputs": [{"host": "127.0.0.1", "port": 6379, "queue_name": name}]})
    return parse_output_ptr(text, "a").targets[0]


def test_no_queue_is_allowed_by_default() -> None:
    with pytest.raises(PermissionDenied, match=r"routing queue 'results' .* not allowed"):
        AllowList(["127.0.0.1:*"]).check(queue_target("results"))  # type: ignore[arg-type]
    router = GraphRouter.from_settings(Settings(route_allow=["127.0.0.1:*"]))
    assert not router.allow.allows_queue("results")


def test_the_block_s_own_queues_are_targets_only_when_listed_by_name() -> None:
    settings = Settings(
        route_allow=["127.0.0.1:*"],
        route_allow_queues=["*", "PARAMETER_UPDATES"],
        redis_ingress_stream="jobs",
        redis_ingress_list="in",
    )
    allow = GraphRouter.from_settings(settings).allow
    assert allow.allows_queue("results") and allow.allows_queue("PARAMETER_UPDATES")  # listed by name
    for own in ["jobs", "in", "jobs:dead", "in:processing:x", "aios:params:blk", "aios:state:s"]:
        assert not allow.allows_queue(own), own
        with pytest.raises(PermissionDenied, match="a queue of this block, allowed only by name"):
            allow.check(queue_target(own))  # type: ignore[arg-type]
    # Without a wildcard nothing but the named queues.
    named = GraphRouter.from_settings(Settings(route_allow=["127.0.0.1:*"], route_allow_queues=["jobs"])).allow
    assert named.allows_queue("jobs") and not named.allows_queue("PARAMETER_UPDATES")


def test_a_served_block_refuses_a_name_the_pattern_would_have_matched_without_connecting(serve) -> None:
    a = serve(StageBlock, block_id="a", route_allow=["10.0.*:50051"])
    ptr = {"outputs": [{"host": "10.0.attacker.example", "port": 50051, "transport": "grpc"}]}
    with BlockClient(a.address) as client:
        packet = make_packet({"x": 1}, session_id="s", seq_no=1, output_ptr=ptr)
        results = [r for r in client.process([packet], timeout=30) if r.terminal]
    assert [r.error.code for r in results] == [grpc.StatusCode.PERMISSION_DENIED]
    assert "10.0.attacker.example:50051" in results[0].error.message
    assert a.server.router.grpc_links == {}  # no channel made: nothing was resolved
