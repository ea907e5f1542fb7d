"""GET, PUT and DELETE /service/{svc}/velocity: a service's own velocity limits."""

import re

from genisys.api.base import JsonHandler
from genisys.api.services import known_record
from genisys.config import parse_duration
from genisys.model import ValidationError, check_fields, validate_number
from genisys.velocity import MAX_COOLDOWN, effective

FIELDS = ("max_step", "up_cooldown", "down_cooldown")
# Stricter than genisys.yml's durations (no spaces), as the API's spec says.
DURATION = re.compile(r"[0-9]+(\.[0-9]+)?(ms|s|m|h)?")


class VelocityHandler(JsonHandler):
    roles = {"GET": "read", "PUT": "operate", "DELETE": "operate"}

    async def get(self, service):
        await known_record(self.context, service)
        self._send_effective(service)

    async def put(self, service):
        body = self.json_body()
        check_fields(body, (), FIELDS)
        overrides = validate_overrides(body)
        await known_record(self.context, service)
        await self.context.store.set_velocity(service, overrides)
        self._send_effective(service)

    async def delete(self, service):
        await known_record(self.context, service)
        await self.context.store.set_velocity(service, None)
        self._send_effective(service)

    def _send_effective(self, service: str) -> None:
        limits, sources = effective(self.context.config.velocity.limits,
                                    self.context.store.velocity_overrides(service))
        self.send(200, {"service": service, "max_step": limits.max_step,
                        "up_cooldown": limits.up_cooldown,
                        "down_cooldown": limits.down_cooldown, "source": sources})


def validate_overrides(body: dict) -> dict:
    """The limits a PUT sets, checked; one sentence naming the first bad field."""
    overrides = {}
    if "max_step" in body:
        step = body["max_step"]
        if step is not None:
            step = validate_number(step, "max_step")
            if step < 1:
                raise ValidationError("max_step must be at least 1 (null: no limit).")
        overrides["max_step"] = step
    for key in ("up_cooldown", "down_cooldown"):
        if key not in body:
            continue
        value = body[key]
        try:
            if isinstance(value, str) and not DURATION.fullmatch(value):
                raise ValueError
            seconds = parse_duration(value)
        except ValueError:
            raise ValidationError(f"{key} must be a duration like 30s, 500ms or 2m, got "
                                  f"{value!r:.80}.") from None
        if not seconds <= MAX_COOLDOWN:  # NaN too
            raise ValidationError(f"{key} must be at most 24h, got {value!r:.80}.")
        overrides[key] = seconds
    return overrides
