"""Block health policies: given the instances' reports, say whether the block is healthy and why.

A policy is any class with ``check(block_id, instances, now) -> Verdict`` (a
``(healthy, reason)`` pair is accepted too). The aggregator always applies
``DefaultPolicy`` and then the policies named in ``AIOS_BLOCK_HEALTH_POLICIES``; the
block is healthy only when every policy says so. Policies are named by import path
(``package.module:Class``) and constructed with the options given next to the name;
they are never code fetched at run time.

>>> class NeedsTwo(Policy):
...     def check(self, block_id, instances, now):
...         live = [i for i in instances if i.present]
...         return Verdict(len(live) >= 2, f"{len(live)} live instances, 2 needed")
>>> # AIOS_BLOCK_HEALTH_POLICIES='["mypkg.health:NeedsTwo",
>>> #     {"class": "aios_grpc.blockhealth.policies:ErrorRatePolicy", "max_rate": 0.05}]'
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aios_grpc.blockhealth.report import InstanceReport
from aios_grpc.errors import ConfigurationError


@dataclass
class Verdict:
    """A policy's answer: the block's health, why, and the instances it found unhealthy."""

    healthy: bool
    reason: str = ""
    instances: dict[str, str] = field(default_factory=dict)
    """Instance id -> why that instance is unhealthy (instances not named are fine)."""


class Policy:
    """Base of health policies; subclasses override ``check``."""

    name: str = ""

    def check(self, block_id: str, instances: Sequence[InstanceReport], now: float) -> Verdict:
        """Judge the block from its instances' reports at unix time ``now``."""
        raise NotImplementedError

    def label(self) -> str:
        """The name shown in answers (the class name unless ``name`` is set)."""
        return self.name or type(self).__name__


def _combine(instances: Sequence[InstanceReport], bad: dict[str, str], what: str) -> Verdict:
    if not bad:
        return Verdict(True, "")
    return Verdict(False, f"{len(bad)} of {len(instances)} instances {what}", bad)


class DefaultPolicy(Policy):
    """At least one instance, each one healthy, each heartbeat younger than ``max_age_s``."""

    def __init__(self, max_age_s: float = 60.0) -> None:
        if max_age_s <= 0:
            raise ConfigurationError(f"DefaultPolicy: max_age_s must be > 0, got {max_age_s}")
        self.max_age_s = float(max_age_s)

    def check(self, block_id: str, instances: Sequence[InstanceReport], now: float) -> Verdict:
        """See the class docstring."""
        if not instances:
            return Verdict(False, "no instances")
        bad: dict[str, str] = {}
        for inst in instances:
            age = inst.age(now)
            if not inst.present:
                bad[inst.instance_id] = f"no heartbeat report (last seen {age:.1f}s ago; instance gone?)"
            elif age > self.max_age_s:
                bad[inst.instance_id] = f"stale heartbeat: {age:.1f}s ago (limit {self.max_age_s:g}s)"
            elif not inst.healthy:
                bad[inst.instance_id] = inst.reason or "instance reports unhealthy"
        return _combine(instances, bad, "unhealthy")


class LastPacketAgePolicy(Policy):
    """Unhealthy when an instance has processed no packet for ``max_age_s`` seconds.

    For pipelines that should always be flowing: an instance that answered nothing for
    that long (counted from its start when it never answered) is reported.
    """

    def __init__(self, max_age_s: float = 300.0) -> None:
        if max_age_s <= 0:
            raise ConfigurationError(f"LastPacketAgePolicy: max_age_s must be > 0, got {max_age_s}")
        self.max_age_s = float(max_age_s)

    def check(self, block_id: str, instances: Sequence[InstanceReport], now: float) -> Verdict:
        """See the class docstring."""
        bad: dict[str, str] = {}
        for inst in instances:
            if not inst.present:
                continue  # DefaultPolicy reports missing instances
            since = inst.last_packet_at or inst.started_at
            if not since:
                continue
            age = now - since
            if age > self.max_age_s:
                what = "last packet processed" if inst.last_packet_at else "no packet processed since start"
                bad[inst.instance_id] = f"{what} {age:.1f}s ago (limit {self.max_age_s:g}s)"
        return _combine(instances, bad, "idle too long")


class ErrorRatePolicy(Policy):
    """Unhealthy when an instance answered more than ``max_rate`` of its packets with errors
    over the last ``window_s`` seconds (judged only past ``min_packets`` packets)."""

    def __init__(self, max_rate: float = 0.1, window_s: float = 60.0, min_packets: int = 10) -> None:
        if not 0 <= max_rate <= 1:
            raise ConfigurationError(f"ErrorRatePolicy: max_rate must be within [0, 1], got {max_rate}")
        if window_s <= 0 or min_packets < 1:
            raise ConfigurationError("ErrorRatePolicy: window_s must be > 0 and min_packets >= 1")
        self.max_rate = float(max_rate)
        self.window_s = float(window_s)
        self.min_packets = int(min_packets)

    def window(self, inst: InstanceReport, now: float) -> tuple[float, float]:
        """Packets answered and failed by ``inst`` within the window (from its heartbeat history)."""
        if not inst.history:
            return 0.0, 0.0
        start = now - self.window_s
        latest = inst.history[-1]
        base: tuple[float, float, float] | None = None
        for sample in inst.history:
            if sample[0] <= start:
                base = sample  # the newest sample at or before the window's start
        if base is None:
            # The history does not reach back that far: an instance younger than the
            # window counts from zero, an older one from its oldest sample.
            base = (0.0, 0.0, 0.0) if inst.started_at >= start else inst.history[0]
        return latest[1] - base[1], latest[2] - base[2]

    def check(self, block_id: str, instances: Sequence[InstanceReport], now: float) -> Verdict:
        """See the class docstring."""
        bad: dict[str, str] = {}
        for inst in instances:
            if not inst.present:
                continue
            answered, failed = self.window(inst, now)
            if answered >= self.min_packets and failed / answered > self.max_rate:
                bad[inst.instance_id] = (
                    f"error rate {failed / answered:.0%} ({failed:g} of {answered:g} packets) "
                    f"over {self.window_s:g}s exceeds {self.max_rate:.0%}"
                )
        return _combine(instances, bad, "failing too often")


def load_policy(spec: str | Mapping[str, Any]) -> Any:
    """A policy from ``"module:Class"`` or ``{"class": "module:Class", <options>}``."""
    if isinstance(spec, str):
        ref, options = spec, {}
    elif isinstance(spec, Mapping) and isinstance(spec.get("class"), str):
        ref = spec["class"]
        options = {k: v for k, v in spec.items() if k != "class"}
    else:
        raise ConfigurationError(f"a health policy is 'module:Class' or {{'class': 'module:Class', ...}}, got {spec!r}")
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"health policy {ref!r}: use the form 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"health policy {ref!r}: cannot import {module_name!r}: {exc}") from None
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ConfigurationError(f"health policy {ref!r}: {module_name} has no class {attr!r}")
    try:
        policy = cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"health policy {ref!r}: bad options {options}: {exc}") from None
    if not callable(getattr(policy, "check", None)):
        raise ConfigurationError(f"health policy {ref!r}: {attr} has no check(block_id, instances, now) method")
    return policy


def as_verdict(value: Any, policy: str) -> Verdict:
    """A policy's return value as a ``Verdict`` (a ``(healthy, reason)`` pair is accepted)."""
    if isinstance(value, Verdict):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
        return Verdict(value[0], str(value[1]))
    return Verdict(False, f"policy {policy} returned {value!r}, not a Verdict or (healthy, reason)")


__all__ = [
    "DefaultPolicy",
    "ErrorRatePolicy",
    "LastPacketAgePolicy",
    "Policy",
    "Verdict",
    "as_verdict",
    "load_policy",
]
