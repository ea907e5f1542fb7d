"""The JSON log format (pure): one object per line, with the extra fields a call passes.
tests/test_commands.py runs genisys and a connector with --log-format json."""

import json
import logging
import sys

from genisys.logformat import JsonFormatter


def record(message, *args, exc_info=None, **extra) -> logging.LogRecord:
    logger = logging.getLogger("genisys.reconciler")
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args, exc_info,
                             extra=extra)


def test_a_line_has_time_level_logger_and_message():
    entry = json.loads(JsonFormatter().format(record("scaling %s to %d", "web", 3)))
    assert set(entry) == {"time", "level", "logger", "message"}
    assert (entry["level"], entry["logger"], entry["message"]) == \
        ("INFO", "genisys.reconciler", "scaling web to 3")
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]


def test_service_compute_and_term_come_from_extra():
    line = JsonFormatter().format(record("scaling web on local from 1 to 3 (term 4)",
                                         service="web", compute="local", term=4, other="x"))
    entry = json.loads(line)
    assert (entry["service"], entry["compute"], entry["term"]) == ("web", "local", 4)
    assert "other" not in entry


def test_one_line_even_with_a_traceback_and_newlines():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        line = JsonFormatter().format(record("cycle failed:\n%s", "x", exc_info=sys.exc_info()))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "cycle failed:\nx"
    assert entry["exception"].startswith("Traceback") and "ValueError: bad" in entry["exception"]


def test_an_extra_field_json_cannot_encode_is_written_as_text():
    entry = json.loads(JsonFormatter().format(record("m", service=object)))
    assert entry["service"] == str(object)
