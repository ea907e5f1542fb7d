"""JSON from outside (request bodies, connector answers): parsed safely, quoted briefly.

Shared by the API, the connector kit and the connector client, so that all three refuse
the same garbage in the same words and never let a body's shape raise anything but
ValueError.
"""

import html
import json
import re

# Deep enough for any real document, shallow enough that walking it is cheap.
MAX_DEPTH = 32


class BadJson(ValueError):
    """The text is not acceptable JSON; the message is one sentence saying why."""


def _no_constant(name: str):
    raise BadJson(f"the body is not valid JSON: {name} is not a JSON value.")


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH):
    """Decode JSON text; BadJson for invalid UTF-8 or JSON, NaN/Infinity, or nesting
    deeper than `max_depth` (the decoder itself would raise RecursionError on 100,000)."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise BadJson("the body is not valid JSON: it is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise BadJson(f"the body is not valid JSON: {exc.msg}.") from None
    except BadJson:
        raise
    except ValueError:  # int() refuses numbers of more than 4,300 digits
        raise BadJson("the body is not valid JSON: a number in it is too long.") from None
    except RecursionError:
        raise BadJson(f"the body is nested more than {max_depth} levels deep.") from None
    if _depth(value) > max_depth:
        raise BadJson(f"the body is nested more than {max_depth} levels deep.")
    return value


def _depth(value) -> int:
    """Nesting depth of a decoded document, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def loads_object(raw: bytes | str, max_depth: int = MAX_DEPTH) -> dict:
    """A JSON object (a request body); BadJson for anything else."""
    value = loads(raw, max_depth)
    if not isinstance(value, dict):
        raise BadJson("the body must be a JSON object.")
    return value


_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def excerpt(text: bytes | str, limit: int = 120) -> str:
    """A short, plain, one-line excerpt of a body or a path to put in an error sentence:
    HTML tags dropped, entities decoded, control characters and runs of space folded."""
    if isinstance(text, bytes):
        text = text[:4 * limit * 8].decode("utf-8", errors="replace")
    else:
        text = text[:4 * limit * 8]
    if "<" in text:
        text = html.unescape(_TAGS.sub(" ", text))
    text = "".join(c if c.isprintable() else " " for c in text)
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."
