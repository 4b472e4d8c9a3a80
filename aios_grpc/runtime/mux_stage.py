"""``MuxStage``: merges the packets of a ``Muxer(N)`` group into one job.

A group is every packet with one ``(session_id, seq_no)``, from any stream. When
its N-th packet arrives the group becomes one job whose packet's ``data`` is
``{"inputs": [<data of each member>, ...]}`` in arrival order and whose files are
the members' files concatenated.

Who gets what (the rule, also in docs/scheduler.md): partial outputs and the
terminal result with the output go to the member that completed the group (the
N-th to arrive), unless the output is routed elsewhere by its ``output_ptr``, which
is the completing member's. Every other member gets a terminal OK without output at
the same moment; on an error every member gets the same error.

A group still incomplete ``timeout_s`` after its first packet is evicted and each
member is answered DEADLINE_EXCEEDED saying how many of N arrived. At most
``max_open_groups`` groups wait at once; a packet that would open one more is
answered RESOURCE_EXHAUSTED (retryable), never dropped.

Custom muxers (the seed's "Designing Custom Muxers"): when the block's ``Muxer``
subclass overrides ``_merge_packets``, the groups are formed here as above and the
complete group's packets are merged by that method. When it overrides
``process_packet``, that method is called for each packet (on the loop's thread, so it
must be quick) and decides: a packet returned is the job to run, for every packet of
the same ``(session_id, seq_no)`` held so far; None with the packet kept in the
muxer's ``store`` holds it (under the same bound and timeout, and an evicted group is
also dropped from ``store``/``counts``); None without keeping it drops the packet, which
is answered OK without output. Anything the muxer raises or a return that is not an
``AIOSPacket`` fails only the packets concerned, INTERNAL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from aios_grpc.errors import BlockCodeError, DeadlineExceeded, InvalidPacket, ResourceExhausted, Unavailable
from aios_grpc.grouping import Muxer
from aios_grpc.job import Job, Kind, Result
from aios_grpc.packet import AIOSPacket

Answer = Callable[[Job, Result], None]


@dataclass(eq=False)
class _Group:
    key: tuple[str, int]
    members: list[Job] = field(default_factory=list)
    inputs: list[object] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class MuxStage:
    """Open muxer groups for one scheduler."""

    def __init__(
        self,
        muxer: Muxer,
        answer: Answer,
        timeout_s: float,
        max_open_groups: int,
        on_groups: Callable[[int], None] | None = None,
    ) -> None:
        self.n = muxer.N
        self.muxer = muxer
        # Looked up once: the seed's methods, when a subclass overrides them, are called.
        self._custom_process = type(muxer).process_packet is not Muxer.process_packet
        self._custom_merge = type(muxer)._merge_packets is not Muxer._merge_packets
        self.timeout_s = timeout_s
        self.max_open_groups = max_open_groups
        self._answer = answer
        self._groups: dict[tuple[str, int], _Group] = {}
        self._on_groups = on_groups  # told the number of open groups when evictions change it
        self.evicted = 0

    @property
    def open_groups(self) -> int:
        """Groups waiting for more packets."""
        return len(self._groups)

    @property
    def held(self) -> int:
        """Packets waiting in open groups."""
        return sum(len(g.members) for g in self._groups.values())

    def add(self, job: Job) -> Job | None:
        """Add one admitted packet; the merged job when this packet completed its group."""
        if self._custom_process:
            return self._add_custom(job)
        packet = job.packet
        try:
            data = packet.json()
        except ValueError as exc:
            # A member that cannot be merged fails alone; the group keeps waiting for a good one.
            self._answer(
                job, Result(Kind.ERROR, error=InvalidPacket(f"packet data is not valid JSON: {exc}", stage="mux"))
            )
            return None
        key = (packet.session_id, packet.seq_no)
        group = self._groups.get(key)
        if group is None:
            if self._refused(job):
                return None
            group = self._open(key)
        group.members.append(job)
        group.inputs.append(data)
        if len(group.members) < self.n:
            return None
        self._close(group)
        return self._merge(group)

    def _refused(self, job: Job) -> bool:
        """Answer ``job`` RESOURCE_EXHAUSTED when no more group may open; whether it was."""
        if len(self._groups) < self.max_open_groups:
            return False
        self._answer(
            job,
            Result(
                Kind.ERROR,
                error=ResourceExhausted(
                    f"muxer has {len(self._groups)} open groups, the most allowed "
                    "(Muxer max_open_groups / AIOS_MUX_MAX_OPEN_GROUPS); retry later",
                    stage="mux",
                ),
            ),
        )
        return True

    def _open(self, key: tuple[str, int]) -> _Group:
        group = self._groups[key] = _Group(key)
        group.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expire, key)
        return group

    def _close(self, group: _Group) -> None:
        del self._groups[group.key]
        if group.timer is not None:
            group.timer.cancel()

    def _add_custom(self, job: Job) -> Job | None:
        """``add`` through the subclass's own ``process_packet`` (see the module's rule)."""
        packet = job.packet
        key = (packet.session_id, packet.seq_no)
        group = self._groups.get(key)
        if group is None and self._refused(job):
            return None
        try:
            out = self.muxer.process_packet(packet)
        except Exception as exc:
            self._answer(job, _muxer_error(f"{type(self.muxer).__name__}.process_packet raised", exc))
            return None
        if out is None:
            store = getattr(self.muxer, "store", None)
            kept = store.get(key, ()) if isinstance(store, dict) else ()
            if not any(p is packet for p in kept):
                self._answer(job, Result(Kind.OK))  # dropped by the muxer: answered, no output
                return None
            if group is None:
                group = self._open(key)
            group.members.append(job)
            return None
        members = [job] if group is None else [*group.members, job]
        if group is not None:
            self._close(group)
        if not isinstance(out, AIOSPacket):
            error = BlockCodeError(
                f"{type(self.muxer).__name__}.process_packet must return an AIOSPacket or None, "
                f"got {type(out).__name__}",
                stage="mux",
            )
            self._fail_members(members, error)
            return None
        return self._job(members, out)

    def _merge(self, group: _Group) -> Job | None:
        members = group.members
        if self._custom_merge:
            try:
                packet = self.muxer._merge_packets([m.packet for m in members])
            except Exception as exc:
                self._fail_members(members, _muxer_error(f"{type(self.muxer).__name__}._merge_packets raised", exc))
                return None
            if not isinstance(packet, AIOSPacket):
                self._fail(
                    group,
                    BlockCodeError(
                        f"{type(self.muxer).__name__}._merge_packets must return an AIOSPacket, "
                        f"got {type(packet).__name__}",
                        stage="mux",
                    ),
                )
                return None
            return self._job(members, packet)
        last = members[-1]
        files = [f for m in members for f in m.packet.files]
        headers: dict[str, str] = {}
        for m in members:
            headers.update(m.packet.headers)
        packet = AIOSPacket(
            session_id=last.packet.session_id,
            seq_no=last.packet.seq_no,
            data={"inputs": group.inputs},
            ts=last.packet.ts,
            output_ptr=last.packet.output_ptr,
            files=files,
            headers=headers,
        )
        return self._job(members, packet)

    def _job(self, members: list[Job], packet: AIOSPacket) -> Job:
        """The merged job of ``members``, running ``packet``."""
        last = members[-1]
        deadlines = [m.deadline for m in members if m.deadline]
        return Job(
            packet,
            _FanOut(members),
            received=min(m.received for m in members),
            deadline=min(deadlines) if deadlines else 0.0,
            members=members,
            source=last.source,
            trace=last.trace,
            span=last.span,
        )

    def _expire(self, key: tuple[str, int]) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        self.evicted += 1
        self._forget(key)
        if self._on_groups is not None:
            self._on_groups(len(self._groups))
        error = DeadlineExceeded(
            f"muxer group (session {key[0]!r}, seq_no {key[1]}) incomplete after {self.timeout_s:g}s: "
            f"{len(group.members)} of {self.n} packets arrived",
            stage="mux",
        )
        self._fail(group, error)

    def flush(self, reason: str) -> None:
        """Answer every member of every open group UNAVAILABLE (used by drain)."""
        groups, self._groups = self._groups, {}
        if self._on_groups is not None:
            self._on_groups(0)
        for group in groups.values():
            if group.timer is not None:
                group.timer.cancel()
            self._forget(group.key)
            error = Unavailable(
                f"{reason}: muxer group (session {group.key[0]!r}, seq_no {group.key[1]}) had "
                f"{len(group.members)} of {self.n} packets",
                stage="mux",
            )
            self._fail(group, error)

    def _fail(self, group: _Group, error: Exception) -> None:
        """Answer every member of ``group`` with the same error."""
        self._fail_members(group.members, error)

    def _fail_members(self, members: list[Job], error: Exception | Result) -> None:
        result = error if isinstance(error, Result) else Result(Kind.ERROR, error=error)
        for member in members:
            self._answer(member, result)

    def _forget(self, key: tuple[str, int]) -> None:
        """Drop an evicted group from a custom muxer's own buffers too."""
        if self._custom_process:
            forget = getattr(self.muxer, "forget", None)
            if forget is not None:
                forget(key)

    def info(self) -> dict[str, object]:
        """Settings as GetInfo reports them."""
        return {"n": self.n, "timeout_s": self.timeout_s, "max_open_groups": self.max_open_groups}


def _muxer_error(what: str, exc: Exception) -> Result:
    """The result of a packet whose custom muxer raised ``exc``."""
    return Result(Kind.ERROR, error=BlockCodeError(f"{what} {type(exc).__name__}: {exc}", stage="mux"))


class _FanOut:
    """The reply of a merged job: answers each member (see the module's rule)."""

    __slots__ = ("members",)

    def __init__(self, members: list[Job]) -> None:
        self.members = members

    def __call__(self, result: Result) -> None:
        completer = self.members[-1]
        if result.terminal:
            others = result if result.kind is Kind.ERROR else Result(Kind.OK)
            for member in self.members[:-1]:
                member.reply(others)
        completer.reply(result)
