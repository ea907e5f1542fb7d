"""Velocity limits: how fast the leader may move a service towards its placement.

Pure functions. Given a service's limits, its last steps up and down, and the orders the
reconciler decided for it, say which orders go out now (clamped to `max_step`), its last
steps after that (written to Consul BEFORE the orders are sent, so that a new leader
honours them), when the next step is due, and one sentence for its status.

A step is what one service is ordered in one direction at one moment: every compute that
must go that way goes at once, each at most `max_step` from the count it reported. After
a step up (down), no order up (down) for that service until `up_cooldown`
(`down_cooldown`) has passed. Times are wall-clock seconds (time.time()): they travel
between replicas. A step time later than now (another replica's clock ahead of this
one's) counts as now: no wait is ever longer than the cooldown.
"""

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from genisys.plan import ScaleOrder

# What the API and genisys.yml accept: anything longer is surely a typo.
MAX_COOLDOWN = 86400.0
UP, DOWN = "up", "down"


@dataclass(frozen=True)
class Limits:
    max_step: int | None = None  # the most a (service, compute) pair moves per order
    up_cooldown: float = 0.0     # seconds between two steps up
    down_cooldown: float = 0.0   # seconds between two steps down

    @property
    def active(self) -> bool:
        return self.max_step is not None or self.up_cooldown > 0 or self.down_cooldown > 0

    def cooldown(self, direction: str) -> float:
        return self.up_cooldown if direction == UP else self.down_cooldown


@dataclass(frozen=True)
class Steps:
    """The service's last step up and down: when (wall-clock seconds; None: never) and
    the count each compute in it was granted."""
    up: float | None = None
    down: float | None = None
    up_to: dict[str, int] = field(default_factory=dict)
    down_to: dict[str, int] = field(default_factory=dict)

    def last(self, direction: str) -> float | None:
        return self.up if direction == UP else self.down

    def granted(self, direction: str) -> dict[str, int]:
        return self.up_to if direction == UP else self.down_to

    def taken(self, direction: str, at: float, granted: dict[str, int]) -> "Steps":
        if direction == UP:
            return replace(self, up=at, up_to=granted)
        return replace(self, down=at, down_to=granted)

    def to_dict(self) -> dict:
        stored = {}
        for way in (UP, DOWN):
            if self.last(way) is not None:
                stored[way] = _iso(self.last(way))
                stored[f"{way}_to"] = self.granted(way)
        return stored

    @classmethod
    def from_dict(cls, value) -> "Steps":
        """From the stored record; what does not parse counts as never (a junk record must
        not hold a service back forever)."""
        value = value if isinstance(value, dict) else {}
        steps = cls()
        for way in (UP, DOWN):
            at, granted = _seconds(value.get(way)), value.get(f"{way}_to")
            if at is not None:
                steps = steps.taken(way, at, {c: n for c, n in granted.items() if _whole(n)}
                                    if isinstance(granted, dict) else {})
        return steps


@dataclass(frozen=True)
class Pace:
    """What the limits allow for one service now."""
    orders: list[ScaleOrder]   # the orders to send now, clamped
    steps: Steps               # the last steps once these are sent: record it first
    next_step: float | None    # when an order held back or cut short may go; None: none is
    status: str | None         # "stepping: 4 of 10, next step up after <time>", or None


def pace(orders: list[ScaleOrder], limits: Limits, steps: Steps, now: float,
         running: int, desired: int) -> Pace:
    """The orders of one service that `limits` allow at `now`, given its last `steps`.

    Within a direction's cooldown, only the computes of its last step may still go, up
    to what that step granted them (each compute's worker sends its own part when it
    gets to it; a connector that has not reported its count yet gets it again).
    `running` is what the service's computes reported in all, `desired` its total (for
    the status).
    """
    allowed, pending, new_step = [], {}, {UP: {}, DOWN: {}}
    for way in (UP, DOWN):
        if (steps.last(way) or 0) > now:  # recorded by a clock ahead of this one
            steps = steps.taken(way, now, steps.granted(way))
    for order in orders:
        way = UP if order.number > order.observed else DOWN
        last = steps.last(way)
        if last is not None and now < last + limits.cooldown(way):
            number = _within(order, steps.granted(way).get(order.compute))
            if number != order.number:
                pending[way] = last + limits.cooldown(way)
        else:
            number = _clamp(order, limits.max_step)
            new_step[way][order.compute] = number
            if number != order.number:
                pending[way] = now + limits.cooldown(way)
        if number != order.observed:
            allowed.append(replace(order, number=number))
    if limits.active:
        for way, granted in new_step.items():
            if granted:
                steps = steps.taken(way, now, granted)
    if not pending:
        return Pace(allowed, steps, None, None)
    after = running + sum(o.number - o.observed for o in allowed)
    when = ", ".join(f"{way} after {_iso(at)}" for way, at in sorted(pending.items()))
    return Pace(allowed, steps, min(pending.values()),
                f"stepping: {after} of {desired}, next step {when}")


def _within(order: ScaleOrder, granted: int | None) -> int:
    """As far as the step in progress granted the compute (its observed count when it
    has none, or reached it)."""
    if granted is None:
        return order.observed
    if order.number > order.observed:
        return max(order.observed, min(order.number, granted))
    return min(order.observed, max(order.number, granted))


def _clamp(order: ScaleOrder, max_step: int | None) -> int:
    if max_step is None:
        return order.number
    return max(order.observed - max_step, min(order.observed + max_step, order.number))


def stored_overrides(value) -> dict:
    """A service's own limits as stored (by PUT /service/{svc}/velocity); a value that is
    not valid (another tool wrote it) is ignored: the default applies."""
    value = value if isinstance(value, dict) else {}
    overrides = {}
    step = value.get("max_step", 0)
    if step is None or _whole(step) and step >= 1:
        overrides["max_step"] = step
    for key in ("up_cooldown", "down_cooldown"):
        seconds = value.get(key)
        if (_whole(seconds) or isinstance(seconds, float)) and 0 <= seconds <= MAX_COOLDOWN:
            overrides[key] = float(seconds)
    return overrides


def effective(defaults: Limits, overrides: dict) -> tuple[Limits, dict[str, str]]:
    """The limits of a service whose own settings are `overrides` (keys of Limits; a
    missing key follows the defaults), and where each comes from ("service" or
    "default")."""
    values = {key: overrides.get(key, getattr(defaults, key)) for key in _KEYS}
    return Limits(**values), {key: "service" if key in overrides else "default"
                              for key in _KEYS}


_KEYS = ("max_step", "up_cooldown", "down_cooldown")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _seconds(text) -> float | None:
    try:
        at = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
