"""A custom health policy, loaded by import path in the tests."""

from __future__ import annotations

from aios_grpc.blockhealth import Policy, Verdict


class NeedsInstances(Policy):
    """Healthy only with at least ``count`` live instances."""

    def __init__(self, count: int = 2) -> None:
        self.count = count

    def check(self, block_id, instances, now):
        live = [i for i in instances if i.present]
        return Verdict(len(live) >= self.count, f"{len(live)} live instances, {self.count} needed")


class PairPolicy:
    """Not a Policy subclass: duck typing, returning a (healthy, reason) pair."""

    def check(self, block_id, instances, now):
        return True, "fine"


class Broken(Policy):
    def check(self, block_id, instances, now):
        raise RuntimeError("policy bug")


NotAClass = 42
