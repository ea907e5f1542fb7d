"""GET /health: can this replica do its job, and does it lead?

503 with the reason while Consul is unreachable, the ACL token lacks a permission, the
local views are not in sync, or the replica cannot take part in the election. Served
from state kept current in the background, plus one cheap ping of Consul.
"""

from genisys.api.base import JsonHandler
from genisys.store import ConsulUnavailable


class HealthHandler(JsonHandler):
    roles = None  # open: load balancers and orchestrators probe it without a token

    async def get(self):
        context = self.context
        body = {"status": "ok", "replica": context.replica_id, "leader": context.is_leader()}
        if context.insecure:
            body["insecure"] = "the API is served without authentication (--insecure)"
        if body["leader"]:
            body["last_cycle"] = context.last_cycle()
        try:
            await context.store.ping()
        except ConsulUnavailable as exc:
            body.update(status="unavailable", error=str(exc))
            self.send(503, body)
            return
        # A view whose reads are denied says what the permission probe says: say it once.
        troubles = list(dict.fromkeys([*context.troubles(), *context.store.view_troubles()]))
        if troubles:
            body.update(status="unavailable", error=troubles[0], troubles=troubles)
            self.send(503, body)
            return
        self.send(200, body)
