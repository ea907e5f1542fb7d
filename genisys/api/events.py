"""The order history: GET /service/{svc}/events and GET /events."""

from datetime import UTC, datetime

from genisys.api.base import JsonHandler
from genisys.api.services import known_record
from genisys.model import ValidationError

# What one answer holds at most; a service keeps its last 50 orders (README "Order history").
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class EventsHandler(JsonHandler):
    roles = {"GET": "read"}

    def limit(self) -> int:
        raw = self.get_query_argument("limit", None)
        if raw is None:
            return DEFAULT_LIMIT
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ValidationError(f"limit must be an integer from 1 to {MAX_LIMIT}, "
                                  f"got {raw[:40]!r}.")
        return int(raw)


class ServiceEventsHandler(EventsHandler):
    async def get(self, service):
        limit = self.limit()
        await known_record(self.context, service)
        events = (await self.context.store.events(service)).get(service, [])
        self.send(200, {"events": events[:limit]})


class AllEventsHandler(EventsHandler):
    async def get(self):
        limit, since = self.limit(), self.since()
        events = [event for history in (await self.context.store.events()).values()
                  for event in history if since is None or _time(event) > since]
        events.sort(key=_time, reverse=True)
        self.send(200, {"events": events[:limit]})

    def since(self) -> datetime | None:
        raw = self.get_query_argument("since", None)
        if raw is None:
            return None
        try:
            since = datetime.fromisoformat(raw)
        except ValueError:
            raise ValidationError(f"since must be an ISO 8601 time like "
                                  f"2026-01-31T12:00:00Z, got {raw[:40]!r}.") from None
        return since if since.tzinfo else since.replace(tzinfo=UTC)


_EPOCH = datetime.fromtimestamp(0, UTC)


def _time(event) -> datetime:
    """An event's time; one another tool mangled sorts as the oldest."""
    try:
        when = datetime.fromisoformat(event["time"])
    except (KeyError, TypeError, ValueError):
        return _EPOCH
    return when if when.tzinfo else when.replace(tzinfo=UTC)
