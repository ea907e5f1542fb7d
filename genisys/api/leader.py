"""GET /leader: which replica leads, as the lock key in Consul says (any replica answers)."""

from genisys.api.base import ApiError, JsonHandler


class LeaderHandler(JsonHandler):
    async def get(self):
        _, lock = await self.context.store.read_leader()
        if lock is None or not lock.session:
            raise ApiError(503, "no leader is elected.")
        body = {key: lock.value.get(key) for key in ("id", "address", "since")}
        body["term"] = await self.context.store.read_term()
        self.send(200, body)
