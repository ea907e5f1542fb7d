"""What the store reads and writes: KV entries, transaction operations, and the parsing
of values other tools may have written (totals, placements, computes, names)."""

import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from genisys.model import NAME_PATTERN, Compute, ValidationError, url_identity, validate_number

log = logging.getLogger(__name__)

# A change that keeps losing races to others gives up after this many tries.
MAX_ATTEMPTS = 20

# Consul's limit of operations in one transaction.
TXN_OPS = 64
# Below Consul's 512 KiB limit on a transaction (values travel base64-encoded).
TXN_BYTES = 384 * 1024


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    create_index: int
    modify_index: int



def _entry(item: dict) -> Entry:
    return Entry(item["Key"], item.get("Value") or b"", item["CreateIndex"], item["ModifyIndex"])


def _kv(verb: str, key: str, value: str | None = None, index: int | None = None) -> dict:
    op = {"Verb": verb, "Key": key}
    if value is not None:
        op["Value"] = base64.b64encode(value.encode()).decode()
    if index is not None:
        op["Index"] = index
    return {"KV": op}


def _parse_total(raw) -> int | None:
    """A desired total as other Skynet components write it: a decimal string."""
    if raw is None:
        return None
    try:
        return validate_number(raw.decode() if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValidationError):
        return None


def _parse_placement(raw) -> dict[str, int]:
    value = _from_json(raw)
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items()
            if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0}


def _stored_compute(item: dict) -> Compute | None:
    """The compute stored in a KV item; None when its value is not a definition."""
    try:
        return Compute.from_stored(_from_json(item.get("Value")))
    except ValidationError:
        return None


def _digest(connector: str) -> str:
    """A key-safe name for a connector; equal for equal url_identity."""
    return hashlib.sha256(url_identity(connector).encode()).hexdigest()[:24]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _to_json(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _from_json(raw: bytes | str | None):
    """KV values arrive as bytes: decode them before use, and treat junk as None."""
    if raw is None:
        return None
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError):
        return None


_invalid_keys: set[str] = set()


def _valid_names(keys, prefix: str) -> list[str]:
    """Service names from keys under `prefix` that other tools may have written: those
    that are not valid names (`wéb`, `web/scale?`) are skipped, and reported once each."""
    names = []
    for key in keys:
        name = key[len(prefix):]
        if NAME_PATTERN.fullmatch(name):
            names.append(name)
        elif key not in _invalid_keys:
            _invalid_keys.add(key)
            log.warning("ignoring Consul key %r: %r is not a valid service name (1 to 64 "
                        "letters, digits, '_', '.' or '-')", key[:200], name[:80])
    return names


_warned: dict[str, float] = {}


def _warn_once(message: str, every: float = 300.0) -> None:
    """Log a recurring data problem once every few minutes, not on every read."""
    now = time.monotonic()
    if now - _warned.get(message, -every) >= every:
        _warned[message] = now
        log.warning(message)
