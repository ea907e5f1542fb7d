"""Pure values and validation: names, numbers, computes. No I/O, no Tornado."""

import re
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from urllib.parse import urlsplit

from genisys.placement import ComputeSpec

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Large enough for any real fleet, small enough that a typo (1e9) is refused.
MAX_NUMBER = 100_000


class ValidationError(ValueError):
    """Bad input: the message is one sentence naming the problem, shown to the user."""


def validate_name(value, what: str = "name") -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string.")
    if not NAME_PATTERN.fullmatch(value):
        raise ValidationError(
            f"{what} {value[:80]!r} is invalid: use 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit.")
    return value


def validate_number(value, what: str = "number", minimum: int = 0) -> int:
    """An integer from `minimum` to MAX_NUMBER, an integral float (2.0), or a string of
    ASCII digits (httpie's `number=3` sends "3"), with a minus sign when `minimum` < 0."""
    if isinstance(value, bool):
        raise ValidationError(f"{what} must be an integer >= {minimum}, not a boolean.")
    number = value
    sign = "-?" if minimum < 0 else ""
    if isinstance(value, float) and value.is_integer():
        number = int(value)
    # Not \d, isdigit() or a bare int(): they take any Unicode digit ("\u0661" is 1).
    elif isinstance(value, str) and re.fullmatch(rf"\s*{sign}[0-9]+\s*", value):
        text = value.strip()
        digits = text.lstrip("-").lstrip("0") or "0"
        number = int(digits) if len(digits) <= len(str(MAX_NUMBER)) else MAX_NUMBER + 1
        number = -number if text.startswith("-") else number
    if not isinstance(number, int):
        raise ValidationError(f"{what} must be an integer >= {minimum}, got {value!r:.80}.")
    if number < minimum:
        raise ValidationError(f"{what} must be >= {minimum}, got {value!r:.80}.")
    if number > MAX_NUMBER:
        raise ValidationError(f"{what} must be at most {MAX_NUMBER}, got {value!r:.80}.")
    return number


def validate_url(value, what: str = "connector") -> str:
    """An absolute http(s) URL of printable ASCII; an international host name is
    IDNA-encoded (http://ü:7051 -> http://xn--tda:7051). No query, fragment or user info."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string URL.")
    if any(not c.isprintable() or c.isspace() for c in value):
        raise ValidationError(f"{what} must not contain spaces or control characters, "
                              f"got {value!r:.80}.")
    try:
        parts = urlsplit(value)
        parts.port  # raises ValueError on a bad port
        host = parts.hostname or ""
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except (ValueError, UnicodeError):
        parts, ascii_host = None, ""
    if (parts is None or parts.scheme not in ("http", "https") or not ascii_host
            or parts.query or parts.fragment or len(value) > 2048):
        raise ValidationError(
            f"{what} must be an absolute http or https URL like http://localhost:7051, "
            f"got {value!r:.80}.")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(f"{what} must not carry user information (user:password@).")
    netloc = ascii_host if ":" not in ascii_host else f"[{ascii_host}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    if not parts.path.isascii():
        raise ValidationError(f"{what} path must be ASCII (percent-encode it), got "
                              f"{parts.path!r:.80}.")
    return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")


def url_identity(url: str) -> str:
    """The form of a validated connector URL that two computes may not share: the same
    connector written two ways (case, default port) is one connector."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}[parts.scheme]
    port = parts.port or default
    host = (parts.hostname or "").lower()
    if host in ("localhost", "127.0.0.1", "::1"):
        host = "localhost"  # one machine's loopback, however it is written
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"


def check_fields(body: dict, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Refuse missing and unknown fields, naming the first one."""
    for field in required:
        if field not in body:
            raise ValidationError(f"missing field {field!r}.")
    for field in body:
        if field not in required and field not in optional:
            raise ValidationError(f"unknown field {field!r:.80}.")


# A bearer token goes in an HTTP header as it is: printable ASCII, no spaces.
TOKEN_PATTERN = re.compile(r"[!-~]{1,4096}")


def validate_token(value, what: str = "token") -> str:
    if not isinstance(value, str) or not TOKEN_PATTERN.fullmatch(value):
        raise ValidationError(f"{what} must be a string of 1 to 4096 printable ASCII "
                              "characters without spaces.")
    return value


# The placement fields of a compute definition and their defaults (genisys/placement.py
# says what they do).
PLACEMENT_DEFAULTS = {"weight": 1, "max": None, "priority": 0}
PLACEMENT_FIELDS = tuple(PLACEMENT_DEFAULTS)


@dataclass(frozen=True)
class Compute:
    name: str
    connector: str
    # Set (to the time) while a DELETE is in progress: no new placement may use it.
    deleting: str | None = None
    # Sent to the connector as `Authorization: Bearer <token>`; write-only in the API.
    token: str | None = dataclass_field(default=None, repr=False)
    weight: int = 1          # share under the `weighted` strategy
    max: int | None = None   # most instances of any one service; None: no limit
    priority: int = 0        # order under the `priority` strategy, higher first

    @classmethod
    def from_dict(cls, body) -> "Compute":
        """A definition as the API takes it: name, connector, an optional token, weight,
        max and priority."""
        if not isinstance(body, dict):
            raise ValidationError("a compute definition must be a JSON object.")
        check_fields(body, ("name", "connector"), ("token",) + PLACEMENT_FIELDS)
        token = validate_token(body["token"]) if "token" in body else None
        limit = body.get("max")
        return cls(validate_name(body["name"]), validate_url(body["connector"]), token=token,
                   weight=validate_number(body.get("weight", 1), "weight"),
                   max=None if limit is None else validate_number(limit, "max"),
                   priority=validate_number(body.get("priority", 0), "priority",
                                            minimum=-MAX_NUMBER))

    @classmethod
    def from_stored(cls, body) -> "Compute":
        """A definition as stored in Consul, with its deletion mark if any."""
        if not isinstance(body, dict):
            raise ValidationError("a compute definition must be a JSON object.")
        deleting = body.get("deleting")
        compute = cls.from_dict({k: v for k, v in body.items() if k != "deleting"})
        if deleting is None:
            return compute
        return replace(compute, deleting=str(deleting)[:40])

    @property
    def spec(self) -> ComputeSpec:
        """What the placement strategies need to know of this compute."""
        return ComputeSpec(self.weight, self.max, self.priority)

    def to_dict(self) -> dict:
        """The stored form, the token included; placement fields only when not the
        default (a replica of an older version still reads the other computes)."""
        body = self._fields(defaults=False)
        if self.token:
            body["token"] = self.token
        return body

    def public_dict(self) -> dict:
        """What the API shows: every placement field, the token only as "set" (absent
        when there is none)."""
        body = self._fields(defaults=True)
        if self.token:
            body["token"] = "set"
        return body

    def _fields(self, defaults: bool) -> dict:
        placement = {"weight": self.weight, "max": self.max, "priority": self.priority}
        body = {"name": self.name, "connector": self.connector,
                **{field: value for field, value in placement.items()
                   if defaults or value != PLACEMENT_DEFAULTS[field]}}
        if self.deleting:
            body["deleting"] = self.deleting
        return body
