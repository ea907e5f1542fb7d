"""API tokens: their format, salted hashes, roles, and the check of a request's token.

A token's secret is `gen_<name>_<64 hex digits>`: the name says which record to check, so
a replica finds it without scanning. Records keep a salted PBKDF2 hash, never the secret.
The bootstrap token (an admin token from the environment or a file) is any string of at
least 32 characters; it is hashed in memory at start-up and never written anywhere.

Pure: the token records come from a `lookup` function (the store's watched view).
"""

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

ROLES = ("read", "operate", "admin")  # each role may do what the ones before it may
PREFIX = "gen_"
# Secrets are 256 random bits, so stretching adds little; a thousand rounds (0.3 ms) keep
# a flood of wrong tokens cheap while a stolen hash still costs an attacker something.
ITERATIONS = 1000
MIN_BOOTSTRAP_LENGTH = 32
_SECRET = re.compile(r"gen_(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})_(?P<random>[0-9a-f]{64})")

UNAUTHORIZED = 401
FORBIDDEN = 403
BAD_REQUEST = 400


class AuthError(Exception):
    """The request may not proceed: `status` (400, 401 or 403) and one sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def allows(role: str, needed: str) -> bool:
    """Whether a token of `role` may do what needs `needed` (read < operate < admin)."""
    return ROLES.index(role) >= ROLES.index(needed)


def hash_secret(secret: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), bytes.fromhex(salt),
                               ITERATIONS).hex()


def new_token(name: str, role: str) -> tuple[str, dict]:
    """A fresh secret and the record to store for it (without the secret)."""
    secret = f"{PREFIX}{name}_{secrets.token_hex(32)}"
    salt = secrets.token_hex(16)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return secret, {"name": name, "role": role, "salt": salt,
                    "hash": hash_secret(secret, salt), "created": created}


def valid_record(record, name: str) -> bool:
    """Whether a stored value is a token record of `name` (other tools may write junk)."""
    return (isinstance(record, dict) and record.get("name") == name
            and record.get("role") in ROLES
            and all(isinstance(record.get(key), str)
                    and re.fullmatch(r"(?:[0-9a-f]{2})+", record[key]) for key in ("salt", "hash")))


def is_loopback(host: str) -> bool:
    """Whether an API bound to `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_bootstrap_token(token: str, path: str) -> str:
    """The bootstrap token from its value or its file ("" when neither is set); ValueError
    with one sentence when it is unusable. Never says the token itself."""
    if token and path:
        raise ValueError("set genisys.bootstrap_token or genisys.bootstrap_token_file, not both")
    if path:
        try:
            with open(path, encoding="utf-8") as stream:
                token = stream.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ValueError(f"genisys.bootstrap_token_file {path}: cannot read: {reason}") \
                from None
    token = token.strip()
    if token and (len(token) < MIN_BOOTSTRAP_LENGTH or not token.isascii()
                  or not token.isprintable() or " " in token):
        raise ValueError(f"the bootstrap token must be at least {MIN_BOOTSTRAP_LENGTH} printable "
                         "ASCII characters without spaces (make one with `openssl rand -hex 32`)")
    return token


class Authenticator:
    """Checks an Authorization header against the bootstrap token and the stored tokens.

    `lookup(name)` returns the stored record of a token name, or None. Accepted secrets are
    remembered (by a fast digest, next to the record's hash) so that only the first request
    of a token pays for PBKDF2; a changed or revoked record is checked afresh.
    """

    def __init__(self, bootstrap: str, lookup: Callable[[str], dict | None]):
        self._lookup = lookup
        # Only in memory, so a plain digest will do: compared in constant time, and the
        # clear value need not be kept.
        self._bootstrap = hashlib.sha256(bootstrap.encode()).digest() if bootstrap else None
        self._accepted: dict[str, bytes] = {}  # record hash -> sha256 of its secret

    def identify(self, authorization: str | None) -> tuple[str, str]:
        """The name and role of the request's token ("bootstrap" for the bootstrap token);
        AuthError when it has none that is valid."""
        if authorization is None:
            raise AuthError(UNAUTHORIZED, "this request needs a token: send the header "
                                          "Authorization: Bearer <token>.")
        scheme, _, secret = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError(UNAUTHORIZED, "the Authorization header must be "
                                          "Bearer <token>; no other scheme is accepted.")
        secret = secret.strip()
        if not secret:
            raise AuthError(UNAUTHORIZED, "the bearer token is empty.")
        quick = hashlib.sha256(secret.encode()).digest()
        if self._bootstrap and hmac.compare_digest(quick, self._bootstrap):
            return "bootstrap", "admin"
        match = _SECRET.fullmatch(secret)
        record = match and self._lookup(match["name"])
        if not record or not self._matches(secret, quick, record):
            # One sentence for an unknown name, a revoked token and a wrong secret alike.
            raise AuthError(UNAUTHORIZED, "the token is not valid: unknown, revoked or "
                                          "mistyped.")
        return record["name"], record["role"]

    def _matches(self, secret: str, quick: bytes, record: dict) -> bool:
        known = self._accepted.get(record["hash"])
        if known is not None and hmac.compare_digest(known, quick):
            return True
        if not hmac.compare_digest(hash_secret(secret, record["salt"]), record["hash"]):
            return False
        if len(self._accepted) >= 10_000:  # tokens come and go; keep the memory bounded
            self._accepted.clear()
        self._accepted[record["hash"]] = quick
        return True


# Query parameters that carry a token in other APIs; refused here (URLs land in logs,
# proxies and browser histories).
QUERY_TOKEN_NAMES = {"token", "access_token", "api_key", "apikey", "bearer"}


def check_query(names) -> None:
    """AuthError (400) when the query string carries a token."""
    if any(name.lower() in QUERY_TOKEN_NAMES for name in names):
        raise AuthError(BAD_REQUEST, "a token is not accepted in the query string, where logs "
                                     "keep it: send the header Authorization: Bearer <token>.")


def check_role(role: str, needed: str) -> None:
    if not allows(role, needed):
        raise AuthError(FORBIDDEN, f"this request needs a token with role {needed}; this "
                                   f"token has role {role}.")
