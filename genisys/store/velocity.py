"""Velocity limits' part of the store (README "Velocity limits"): a service's own limits,
kept with its lifecycle flags, and the times of its last steps, under steps/<svc>."""

from genisys.store.values import TXN_OPS, _from_json, _kv, _to_json
from genisys.velocity import Steps, stored_overrides


class VelocityState:
    """ConsulStore's velocity methods."""

    @property
    def steps_prefix(self) -> str:
        return f"{self.key_prefix}steps/"

    def velocity_overrides(self, service: str) -> dict:
        """The service's own velocity limits (keys of genisys.velocity.Limits), from the
        replica's copy of the desired state."""
        return stored_overrides(self.mirror.services.get(service).flags.get("velocity"))

    async def set_velocity(self, service: str, overrides: dict | None) -> None:
        """Set the service's own velocity limits (None: remove them); Conflict while it
        is being deleted."""
        def change(flags: dict) -> dict:
            kept = {k: v for k, v in flags.items() if k != "velocity"}
            return kept if overrides is None else {**kept, "velocity": overrides}

        await self.change_flags(service, change)

    async def last_steps(self) -> dict[str, Steps]:
        """When each service was last ordered up and down (read when a term starts)."""
        _, items = await self.consul.kv.get(self.steps_prefix, recurse=True,
                                            consistency="consistent")
        return {item["Key"][len(self.steps_prefix):]: Steps.from_dict(_from_json(
                item.get("Value"))) for item in items or ()}

    async def record_steps(self, session: str, steps: dict[str, Steps]) -> bool:
        """Write the services' steps BEFORE their orders go out, guarded by the leader's
        hold on the lock; False when a transaction was refused."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        ops = [_kv("set", self.steps_prefix + service, _to_json(record.to_dict()))
               for service, record in sorted(steps.items())]
        ok = True
        for start in range(0, len(ops), TXN_OPS - 1):
            ok = await self._txn([guard, *ops[start:start + TXN_OPS - 1]]) is not None and ok
        return ok
