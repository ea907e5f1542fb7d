"""A connector whose backend only counts, for benchmarks: every call waits --latency.

    python -m bench.counting_connector --port 7061 --latency 0.05 [--scale-latency 8]
                                       [--no-bulk] [--no-auto-define] [--order-log FILE]

Any valid service name is defined on first use unless --no-auto-define. --no-bulk makes
GET /status answer 404, as a third-party connector without the extension does. A scale
order costs three backend calls (status, scale, status), so about 3 x latency;
--scale-latency makes the scale call alone take longer (a slow image pull).
--order-log appends one line per scale order as it reaches the backend,
`<time.time()> <service> <number>`, and one as the backend is done with it,
`<time.time()> <service> <number> done`, so that a bench can tell when an order arrived
and when it was carried out.
"""

import argparse
import asyncio
import time

from genisys.connectors.kit import Backend, run
from genisys.model import check_fields, validate_name


class CountingBackend(Backend):
    """Keep a count per service in memory; every call waits --latency seconds."""

    name = "counting"

    def __init__(self, latency: float = 0.0, bulk: bool = True, auto_define: bool = True,
                 order_log: str | None = None, scale_latency: float | None = None):
        self.latency = latency
        self.scale_latency = latency if scale_latency is None else scale_latency
        self.bulk_status = bulk
        self.auto_define = auto_define
        self.counts: dict[str, int] = {}
        # Line-buffered: each order is on disk (in the page cache) as soon as it is written.
        self._orders = open(order_log, "a", buffering=1) if order_log else None

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--latency", type=float, default=0.0,
                            help="seconds each scale or status call waits (default 0)")
        parser.add_argument("--scale-latency", type=float, default=None,
                            help="seconds each scale call waits (default: --latency)")
        parser.add_argument("--bulk", action=argparse.BooleanOptionalAction, default=True,
                            help="answer GET /status (default yes)")
        parser.add_argument("--auto-define", action=argparse.BooleanOptionalAction,
                            default=True, help="define services on first use (default yes)")
        parser.add_argument("--order-log", metavar="FILE",
                            help="append '<time.time()> <service> <number>' per scale order")

    @classmethod
    def from_args(cls, args):
        return cls(args.latency, args.bulk, args.auto_define, args.order_log,
                   args.scale_latency)

    def validate(self, definition):
        check_fields(definition, ("name",))
        return {"name": validate_name(definition["name"])}

    async def scale(self, definition, number):
        self._log_order(definition["name"], number)
        await asyncio.sleep(self.scale_latency)
        self.counts[definition["name"]] = number
        self._log_order(definition["name"], number, " done")

    def _log_order(self, service: str, number: int, what: str = "") -> None:
        if self._orders:
            self._orders.write(f"{time.time():.6f} {service} {number}{what}\n")

    async def status(self, definition):
        await asyncio.sleep(self.latency)
        return self.counts.get(definition["name"], 0)

    async def close(self):
        if self._orders:
            self._orders.close()


if __name__ == "__main__":
    run(CountingBackend)
