"""POST/GET /token and DELETE /token/{name}: API token management (role admin).

The secret is in the answer of POST only; Consul keeps its salted hash (genisys/auth.py).
"""

from genisys import auth
from genisys.api.base import JsonHandler
from genisys.model import ValidationError, check_fields, validate_name


class TokensHandler(JsonHandler):
    roles = {}  # every method: admin

    async def get(self):
        self.send(200, {t["name"]: t for t in await self.context.store.list_tokens()})

    async def post(self):
        body = self.json_body()
        check_fields(body, ("name", "role"), ())
        name = validate_name(body["name"], "token name")
        role = body["role"]
        if role not in auth.ROLES:
            raise ValidationError(f"role must be one of {', '.join(auth.ROLES)}.")
        secret, record = auth.new_token(name, role)
        await self.context.store.create_token(record)
        self.set_header("Location", f"/token/{name}")
        self.send(201, {"name": name, "role": role, "secret": secret})


class TokenHandler(JsonHandler):
    roles = {}

    async def delete(self, name):
        validate_name(name, "token name")
        await self.context.store.delete_token(name)
        self.send(204, None)
