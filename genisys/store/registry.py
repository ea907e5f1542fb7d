"""The compute registry's part of the store: computes, the claims that keep two computes
off one connector, and retired connectors (the leader scales what runs there to 0)."""

import logging
from dataclasses import dataclass, field, replace

from genisys.model import NAME_PATTERN, Compute, ValidationError, url_identity, validate_url
from genisys.store.journal import COMPUTES
from genisys.store.tables import StoredCompute
from genisys.store.transport import ConsulUnavailable
from genisys.store.values import (
    MAX_ATTEMPTS,
    Conflict,
    NotFound,
    _digest,
    _entry,
    _from_json,
    _kv,
    _now,
    _stored_compute,
    _to_json,
    _warn_once,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetiredConnector:
    """A connector that left the registry (its compute deleted or moved): the leader
    scales every service there to 0, then forgets it."""
    key: str
    connector: str
    compute: str
    modify_index: int
    token: str | None = field(default=None, repr=False)  # its compute's, to keep calling it



class Registry:
    """ConsulStore's compute registry methods."""

    async def list_computes(self, consistent: bool = False) -> list[Compute]:
        """Every compute, in definition order (Consul CreateIndex: oldest first)."""
        return [compute for compute, _ in await self.compute_entries(consistent)]

    async def compute_entries(self, consistent: bool = False) -> list[tuple[Compute, int]]:
        """Every compute with its ModifyIndex, in definition order (for check-and-set)."""
        if consistent or not self.mirror.synced:
            _, items = await self.consul.kv.get(
                self.computes_prefix, recurse=True,
                consistency="consistent" if consistent else None)
            return self._decode_computes(_entry(i) for i in items or ())
        return self.mirror.computes.ordered()

    async def get_compute(self, name: str, consistent: bool = False) -> Compute | None:
        if consistent or not self.mirror.synced:
            _, item = await self.consul.kv.get(self.computes_prefix + name,
                                               consistency="consistent" if consistent else None)
            decoded = item and self._decode_computes([_entry(item)])
            return decoded[0][0] if decoded else None
        stored = self.mirror.computes.get(name)
        return stored.compute if stored else None

    async def create_compute(self, compute: Compute) -> None:
        """Create, never overwrite; Conflict when the name exists or another compute
        has the same connector."""
        if not await self._create_compute(compute):
            raise Conflict(f"compute {compute.name!r} already exists.")

    async def _create_compute(self, compute: Compute) -> bool:
        """Create with the claim of its connector; False when the name exists."""
        for _ in range(MAX_ATTEMPTS):
            self._check_connector_free(compute)
            written = await self._txn([
                _kv("cas", self.computes_prefix + compute.name, _to_json(compute.to_dict()), 0),
                _kv("cas", self._claim_key(compute.connector), compute.name, 0),
                # A connector taken back by a compute is watched through it again.
                _kv("delete", self._retired_key(compute.connector)),
                self._journal_op(COMPUTES, compute.name)])
            if written is not None:
                return True
            if await self._read(self.computes_prefix + compute.name) is not None:
                return False
            await self._explain_claim(compute)
        raise ConsulUnavailable(f"could not create compute {compute.name!r}: too many "
                                "concurrent changes")

    async def put_compute(self, compute: Compute) -> bool:
        """Create or replace a compute; True when it was created.

        Unchanged: nothing is written (a scale checking the compute is not disturbed).
        A new connector: its old one is retired in the same transaction, and the leader
        scales whatever still runs there to 0 (never forgets an instance).
        """
        key = self.computes_prefix + compute.name
        for _ in range(MAX_ATTEMPTS):
            item = await self._read(key)
            if item is None:
                if await self._create_compute(compute):
                    return True
                continue
            current = _stored_compute(item)
            if current is not None and current.deleting:
                raise Conflict(f"compute {compute.name!r} is being deleted: DELETE it again "
                               "to finish, then create it anew.")
            if current == compute:
                return False
            ops = [_kv("cas", key, _to_json(compute.to_dict()), item["ModifyIndex"]),
                   self._journal_op(COMPUTES, compute.name)]
            moved = current is None or (url_identity(current.connector)
                                        != url_identity(compute.connector))
            if moved:
                self._check_connector_free(compute)
                ops += [_kv("cas", self._claim_key(compute.connector), compute.name, 0),
                        _kv("delete", self._retired_key(compute.connector))]
                if current is not None:
                    ops += await self._retire_ops(current)
            if await self._txn(ops) is not None:
                if moved and current is not None:
                    log.info("compute %s moved from %s to %s: the leader scales what runs at "
                             "the old connector to 0", compute.name, current.connector,
                             compute.connector)
                return False
            if moved:
                await self._explain_claim(compute)
        raise ConsulUnavailable(f"could not update compute {compute.name!r}: too many "
                                "concurrent changes")

    async def delete_compute(self, name: str) -> None:
        """Delete a compute that holds no resources; NotFound, or Conflict while it does.

        Two steps, so that a delete and a scale exclude each other inside Consul: the
        compute is first marked "deleting" (a scale placing on it checks its index, so
        it fails and re-reads, and then refuses it); the placements are read after the
        mark; then the compute is deleted at the marked index, or unmarked. Its connector
        is retired in the same transaction: the leader scales what runs there to 0.
        """
        key = self.computes_prefix + name
        for _ in range(MAX_ATTEMPTS):
            item = await self._read(key)
            if item is None:
                raise NotFound(f"compute {name!r} does not exist.")
            current, index = _stored_compute(item), item["ModifyIndex"]
            if current is not None and not current.deleting:
                marked = replace(current, deleting=_now())
                written = await self._txn([_kv("cas", key, _to_json(marked.to_dict()), index),
                                           self._journal_op(COMPUTES, name)])
                if written is None:
                    continue
                current, index = marked, written[key].modify_index
            holders = await self._services_placed_on(name)
            if holders:
                if current is not None:  # give it back as it was
                    await self._txn([_kv("cas", key, _to_json(
                        replace(current, deleting=None).to_dict()), index),
                        self._journal_op(COMPUTES, name)])
                service, count = holders[0]
                raise Conflict(f"compute {name!r} still holds {count} resources of service "
                               f"{service!r}: scale them elsewhere or to 0 first.")
            ops = [_kv("delete-cas", key, index=index), self._journal_op(COMPUTES, name)]
            if current is not None:
                ops += await self._retire_ops(current)
            if await self._txn(ops) is not None:
                return
        raise ConsulUnavailable(f"could not delete compute {name!r}: too many concurrent "
                                "changes")

    def _check_connector_free(self, compute: Compute) -> None:
        """Conflict when another compute (in this replica's view) has the same connector;
        the claim keys guard it in Consul, this also covers computes older than them."""
        others = sorted(self.mirror.computes.owners(compute.connector) - {compute.name})
        if others:
            raise Conflict(_shared_connector(compute, others[0]))

    async def _explain_claim(self, compute: Compute) -> None:
        """After a refused transaction: Conflict when another compute claims the
        connector; a stale claim (its compute is gone or moved) is released."""
        claim_key = self._claim_key(compute.connector)
        claim = await self._read(claim_key)
        if claim is None:
            return
        owner = (claim.get("Value") or b"").decode("utf-8", errors="replace")
        if owner == compute.name:
            return
        owner_item = await self._read(self.computes_prefix + owner) if NAME_PATTERN.fullmatch(
            owner) else None
        holder = owner_item and _stored_compute(owner_item)
        if holder and url_identity(holder.connector) == url_identity(compute.connector):
            raise Conflict(_shared_connector(compute, owner))
        await self.consul.kv.delete(claim_key, cas=claim["ModifyIndex"])

    async def _retire_ops(self, compute: Compute) -> list[dict]:
        """Release `compute`'s claim on its connector and retire the connector."""
        retired = {"connector": compute.connector, "compute": compute.name, "since": _now()}
        if compute.token:
            retired["token"] = compute.token
        ops = [_kv("set", self._retired_key(compute.connector), _to_json(retired))]
        claim = await self._read(self._claim_key(compute.connector))
        if claim is not None and claim.get("Value") == compute.name.encode():
            ops.append(_kv("delete-cas", self._claim_key(compute.connector),
                           index=claim["ModifyIndex"]))
        return ops

    def _claim_key(self, connector: str) -> str:
        return f"{self.key_prefix}connectors/{_digest(connector)}"

    def _retired_key(self, connector: str) -> str:
        return f"{self.retired_prefix}{_digest(connector)}"

    async def retired_connectors(self) -> list[RetiredConnector]:
        """Connectors that left the registry and may still run instances."""
        _, items = await self.consul.kv.get(self.retired_prefix, recurse=True)
        retired = []
        for item in items or ():
            value = _from_json(item.get("Value"))
            try:
                connector = validate_url(value.get("connector") if isinstance(value, dict)
                                         else None)
            except ValidationError:
                _warn_once(f"ignoring {item['Key']}: its value is not a retired connector")
                continue
            token = value.get("token")
            retired.append(RetiredConnector(item["Key"], connector, str(value.get("compute")),
                                            item["ModifyIndex"],
                                            token if isinstance(token, str) else None))
        return retired

    async def forget_retired(self, session: str, retired: RetiredConnector) -> bool:
        """Forget a retired connector (the leader saw nothing run there any more)."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        return await self._txn([guard, _kv("delete-cas", retired.key,
                                           index=retired.modify_index)]) is not None

    async def _services_placed_on(self, compute: str) -> list[tuple[str, int]]:
        _, items = await self.consul.kv.get(self.placements_prefix, recurse=True,
                                            consistency="consistent")
        holders = []
        for item in items or ():
            placement = _from_json(item.get("Value"))
            count = placement.get(compute) if isinstance(placement, dict) else None
            if isinstance(count, int) and count > 0:
                holders.append((item["Key"][len(self.placements_prefix):], count))
        return holders

    def _decode_computes(self, entries) -> list[tuple[Compute, int]]:
        """Computes with their ModifyIndex in definition order; junk values are skipped
        with a warning."""
        decoded = (StoredCompute.decode(entry.key[len(self.computes_prefix):], entry)
                   for entry in sorted(entries, key=lambda e: (e.create_index, e.key)))
        return [(stored.compute, stored.modify_index) for stored in decoded if stored]


def _shared_connector(compute: Compute, owner: str) -> str:
    return (f"connector {compute.connector} is already the connector of compute {owner!r}: "
            "two computes on one connector would undo each other's orders.")
