"""A complete connector in one file: its "instances" are numbers kept in memory.

    python -m examples.memory_connector --port 7060 --capacity 10

Copy it, and replace the bodies of scale and status with calls to your backend.
"""

from genisys.connectors.kit import Backend, BackendError, run
from genisys.model import ValidationError, check_fields, validate_name


class MemoryBackend(Backend):
    """Count instances in memory, at most --capacity for all services together."""

    name = "memory"

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.running: dict[str, int] = {}

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--capacity", type=int, default=10,
                            help="most instances of all services together")

    @classmethod
    def from_args(cls, args):
        return cls(args.capacity)

    def validate(self, definition):
        check_fields(definition, ("name",), ("size",))
        size = definition.get("size", "small")
        if size not in ("small", "large"):
            raise ValidationError(f"size must be 'small' or 'large', got {size!r:.40}.")
        return {"name": validate_name(definition["name"]), "size": size}

    async def scale(self, definition, number):
        others = sum(self.running.values()) - self.running.get(definition["name"], 0)
        if others + number > self.capacity:
            raise BackendError(f"this backend is full: {others} of its {self.capacity} "
                               "instances run other services.")
        self.running[definition["name"]] = number

    async def status(self, definition):
        return self.running.get(definition["name"], 0)


if __name__ == "__main__":
    run(MemoryBackend)
