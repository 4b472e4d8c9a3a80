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


class GpuTemperature(Policy):
    """Unhealthy when an instance's own health() reports ``gpu_temp`` above ``max_c``."""

    def __init__(self, max_c: float = 80.0) -> None:
        self.max_c = max_c

    def check(self, block_id, instances, now):
        hot = {
            i.instance_id: i.health["gpu_temp"]
            for i in instances
            if isinstance(i.health, dict) and i.health.get("gpu_temp", 0) > self.max_c
        }
        if hot:
            return Verdict(False, f"GPU above {self.max_c:g} C on {sorted(hot)}")
        return Verdict(True, "")
