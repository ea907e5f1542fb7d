"""Log output for Genisys and the connectors: today's text lines, or one JSON object a line.

    log.info("scaling %s on %s from %d to %d (term %d)", svc, compute, old, new, term,
             extra={"service": svc, "compute": compute, "term": term})

The text format shows the message; the JSON format also carries the extra fields, so a
log pipeline can filter on them without parsing sentences.
"""

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
# Fields a log call may pass with extra=; the JSON format copies them when present.
EXTRA_FIELDS = ("service", "compute", "term", "request_id")


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", "service"?, "compute"?, "term"?, "request_id"?,
    "exception"?} on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # default=str: an extra field of another type still gives a line, never an error.
        return json.dumps(entry, default=str)


def add_argument(parser) -> None:
    """--log-format on a command line."""
    parser.add_argument("--log-format", default="text", choices=FORMATS,
                        help="text lines (default) or one JSON object per line")


def configure(level, log_format: str = "text") -> None:
    """Send every logger's records to stderr in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
