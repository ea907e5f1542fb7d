"""POST /service/{svc}/scale, GET /service and GET /service/{svc}."""

from genisys import scaling
from genisys.api.base import ApiError, JsonHandler
from genisys.model import check_fields, validate_name, validate_number


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
        placement = await scaling.scale(self.context.store, service, number, compute,
                                        self.context.config.placement.strategy)
        self.send(202, {"service": service, "desired": number, "placement": placement})


class ServicesHandler(JsonHandler):
    async def get(self):
        self.send(200, await self.context.store.service_records())


class ServiceHandler(JsonHandler):
    async def get(self, service):
        validate_name(service, "service name")
        record = (await self.context.store.service_records(service)).get(service)
        if record is None:
            raise ApiError(404, f"service {service!r} is not known: it has no desired total, "
                                "placement or observed status.")
        self.send(200, record)
