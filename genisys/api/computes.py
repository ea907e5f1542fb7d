"""GET/POST /compute and GET/PUT/DELETE /compute/{name}."""

from genisys.api.base import ApiError, JsonHandler
from genisys.model import (
    PLACEMENT_FIELDS,
    Compute,
    ValidationError,
    check_fields,
    validate_name,
)


class ComputesHandler(JsonHandler):
    async def get(self):
        computes = await self.context.store.list_computes(consistent=self.flag("consistent"))
        self.send(200, {c.name: c.public_dict() for c in computes})

    async def post(self):
        compute = Compute.from_dict(self.json_body())
        await self.context.store.create_compute(compute)
        self.set_header("Location", f"/compute/{compute.name}")
        self.send(201, compute.public_dict())


class ComputeHandler(JsonHandler):
    async def get(self, name):
        validate_name(name)
        compute = await self.context.store.get_compute(name, consistent=self.flag("consistent"))
        if compute is None:
            raise ApiError(404, f"compute {name!r} does not exist.")
        self.send(200, compute.public_dict())

    async def put(self, name):
        validate_name(name)
        body = self.json_body()
        check_fields(body, ("connector",), ("name", "token") + PLACEMENT_FIELDS)
        if body.setdefault("name", name) != name:
            raise ValidationError(f"the body names compute {body['name']!r:.80} but the path "
                                  f"names {name!r}.")
        compute = Compute.from_dict(body)
        created = await self.context.store.put_compute(compute)
        self.send(201 if created else 200, compute.public_dict())

    async def delete(self, name):
        validate_name(name)
        await self.context.store.delete_compute(name)
        self.send(204, None)
