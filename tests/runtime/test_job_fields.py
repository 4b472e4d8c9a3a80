"""Job's field order is pinned: the Process stream builds jobs positionally."""

from __future__ import annotations

import dataclasses

from aios_grpc.job import Job
from aios_grpc.packet import AIOSPacket


def test_job_fields_in_order() -> None:
    # service/stream construction passes (packet, reply, received, deadline, members,
    # source, trace) by position: reordering these shifts its arguments silently.
    assert [f.name for f in dataclasses.fields(Job)] == [
        "packet",
        "reply",
        "received",
        "deadline",
        "members",
        "source",
        "trace",
        "gate",
        "answered",
        "span",
    ]


def test_positional_construction_lands_in_the_named_fields() -> None:
    packet = AIOSPacket(session_id="s", seq_no=1)

    def reply(result: object) -> None:
        pass

    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    job = Job(packet, reply, 1.5, 2.5, None, "grpc", trace)
    assert job.packet is packet and job.reply is reply
    assert (job.received, job.deadline, job.members, job.source, job.trace) == (1.5, 2.5, None, "grpc", trace)
    assert job.gate is None and job.answered is False and job.span is None
