"""GET /health: is this replica able to serve, and does it lead?"""

from genisys.api.base import JsonHandler
from genisys.store import ConsulUnavailable


class HealthHandler(JsonHandler):
    async def get(self):
        context = self.context
        body = {"status": "ok", "replica": context.replica_id, "leader": context.is_leader()}
        if body["leader"]:
            body["last_cycle"] = context.last_cycle()
        try:
            await context.store.ping()
        except ConsulUnavailable as exc:
            body.update(status="unavailable", error=str(exc))
            self.send(503, body)
            return
        self.send(200, body)
