"""API tokens' part of the store: {"name", "role", "salt", "hash", "created"} under
tokens/<name>. Read from the watched view: a token created or revoked through another
replica takes effect here within one blocking-query round trip."""

import logging

from genisys.auth import valid_record
from genisys.store.transport import ConsulError, ConsulUnavailable
from genisys.store.values import (
    MAX_ATTEMPTS,
    Conflict,
    NotFound,
    _from_json,
    _kv,
    _to_json,
    _warn_once,
)

log = logging.getLogger(__name__)


class Tokens:
    """ConsulStore's token methods."""

    def token_record(self, name: str) -> dict | None:
        """The stored record of token `name`, or None; ConsulUnavailable while the view
        has never been in sync (a token cannot be checked before Consul answered once)."""
        view = self.tokens_view
        if not view.state.synced and view.index == 0:
            raise ConsulUnavailable(f"cannot check the token: Consul at {self.address} has "
                                    "not answered yet")
        entry = view.entries.get(self.tokens_prefix + name)
        record = _from_json(entry.value) if entry else None
        if record is not None and not valid_record(record, name):
            _warn_once(f"ignoring {entry.key}: its value is not a token record")
            return None
        return record

    async def create_token(self, record: dict) -> None:
        """Store a new token record; Conflict when the name is taken."""
        written = await self._txn([_kv("cas", self.tokens_prefix + record["name"],
                                       _to_json(record), 0)])
        if written is None:
            raise Conflict(f"token {record['name']!r} already exists.")

    async def list_tokens(self) -> list[dict]:
        """Every token's name, role and creation time (never its hash), by name."""
        _, items = await self.consul.kv.get(self.tokens_prefix, recurse=True)
        records = []
        for item in items or ():
            name = item["Key"][len(self.tokens_prefix):]
            record = _from_json(item.get("Value"))
            if valid_record(record, name):
                records.append({key: record.get(key) for key in ("name", "role", "created")})
        return sorted(records, key=lambda r: r["name"])

    async def delete_token(self, name: str) -> None:
        """Revoke a token; NotFound when there is none of that name."""
        key = self.tokens_prefix + name
        for _ in range(MAX_ATTEMPTS):
            item = await self._read(key)
            if item is None:
                raise NotFound(f"token {name!r} does not exist.")
            if await self.consul.kv.delete(key, cas=item["ModifyIndex"]):
                break
        else:
            raise Conflict(f"token {name!r} kept changing; try again.")
        try:  # the revocation holds here at once, not a watch round trip later
            await self.tokens_view.refresh()
        except (ConsulUnavailable, ConsulError) as exc:
            log.warning("could not refresh the token view after a revocation: %s", exc)

