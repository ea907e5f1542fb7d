"""The service endpoints: scale (with dry run and index precondition), GET, DELETE,
pause and resume."""

from genisys import scaling
from genisys.api.base import ApiError, JsonHandler
from genisys.model import ValidationError, check_fields, validate_name, validate_number
from genisys.placement import placement_total
from genisys.plan import dry_run_orders

DELETE_NEXT = ("the leader scales it to 0 on every compute, then forgets its total, "
               "placement, status and history once every connector reports 0.")


class ScaleHandler(JsonHandler):
    roles = {"POST": "operate"}

    async def post(self, service):
        validate_name(service, "service name")
        body = self.json_body()
        check_fields(body, ("number",), ("compute",))
        number = validate_number(body["number"])
        compute = body.get("compute")
        if compute is not None:
            validate_name(compute, "compute")
        if_index = self._if_index()
        strategy = self.context.config.placement.strategy
        if self.flag("dry_run"):
            await self._dry_run(service, number, compute, strategy)
            return
        try:
            placement = await scaling.scale(self.context.store, service, number, compute,
                                            strategy, if_index)
        except scaling.Stale as exc:
            raise ApiError(412, str(exc)) from None
        self.send(202, {"service": service, "desired": number, "placement": placement,
                        **shortfall(number, placement, strategy)})

    async def _dry_run(self, service: str, number: int, compute: str | None,
                       strategy: str) -> None:
        store = self.context.store
        planned = await scaling.preview(store, service, number, compute, strategy)
        status = (await store.statuses(service)).get(service, {})
        computes = [c.name for c in await store.list_computes()]
        self.send(200, {"service": service, "desired": number, "placement": planned.placement,
                        **shortfall(number, planned.placement, strategy),
                        "orders": dry_run_orders(planned.placement, computes,
                                                 status.get("observed") or {}),
                        "index": planned.seen.index})

    def _if_index(self) -> int | None:
        """The index a scale is conditioned on: If-Match (an ETag, quotes allowed) or
        ?index=; None when neither is given."""
        header = self.request.headers.get("If-Match")
        raw = header.strip().strip('"') if header is not None else \
            self.get_query_argument("index", None)
        if raw is None:
            return None
        if not raw.isascii() or not raw.isdigit():
            raise ValidationError(f"the index must be a number from a dry run, got {raw[:40]!r}.")
        return int(raw)


def shortfall(number: int, placement: dict[str, int], strategy: str) -> dict:
    """When some of `number` do not fit, the scale answer's `shortfall` (how many the
    placement does not hold) and a `note` saying so; else nothing."""
    missing = number - placement_total(placement)
    if missing <= 0:
        return {}
    return {"shortfall": missing,
            "note": f"{missing} of {number} do not fit: every compute the {strategy} strategy "
                    "may use is at its max; the leader places them when room appears (a "
                    "higher max or a new compute)."}


def with_shortfall(record: dict) -> dict:
    """A service record with how many of its total its placement does not hold."""
    record["shortfall"] = max(0, (record["desired"] or 0) - placement_total(record["placement"]))
    return record


class ServicesHandler(JsonHandler):
    roles = {"GET": "read"}

    async def get(self):
        records = await self.context.store.service_records()
        self.send(200, {name: with_shortfall(record) for name, record in records.items()})


async def known_record(context, service: str) -> dict:
    """The service's record; 404 when it is not known, even to Consul (the view may lag
    behind a write made through another replica)."""
    validate_name(service, "service name")
    record = (await context.store.service_records(service)).get(service) or \
        (await context.store.service_records(service, fresh=True)).get(service)
    if record is None:
        raise ApiError(404, f"service {service!r} is not known: it has no desired total, "
                            "placement or observed status.")
    return with_shortfall(record)


class ServiceHandler(JsonHandler):
    roles = {"GET": "read", "DELETE": "operate"}

    async def get(self, service):
        self.send(200, await known_record(self.context, service))

    async def delete(self, service):
        await known_record(self.context, service)
        await self.context.store.delete_service(service)  # already deleting: nothing to do
        self.send(202, {"service": service, "state": "deleting", "desired": 0,
                        "placement": {}, "next": DELETE_NEXT})


class PauseHandler(JsonHandler):
    """POST /service/{svc}/pause and /resume (the route passes which)."""
    roles = {"POST": "operate"}

    async def post(self, service, action):
        await known_record(self.context, service)
        paused = action == "pause"
        await self.context.store.set_paused(service, paused)
        self.send(200, {"service": service, "paused": paused})
