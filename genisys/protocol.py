"""The connector protocol's constants, shared by Genisys (the client) and the connector kit.

    GET  {connector}/status                 -> {"running_resources": {svc: n}}  (optional)
    GET  {connector}/service/{svc}/status   -> {"running_resources": n}
    POST {connector}/service/{svc}/scale {"number": n}   (any 2xx; the body may be empty)

A scale order carries the leader's term in TERM_HEADER. A connector that has seen a
higher term answers 409 with {"error": ..., "term": <the highest term it has seen>}.
"""

from urllib.parse import quote

TERM_HEADER = "X-Genisys-Term"
# The field of a 409 answer that names the highest term the connector has seen.
TERM_FIELD = "term"
# Terms are 63-bit: JSON and every language's integers carry them exactly.
MAX_TERM = 2**63 - 1


def service_path(service: str, action: str) -> str:
    """/service/{svc}/{action}, the name percent-encoded: a name is one path segment."""
    return f"/service/{quote(service, safe='')}/{action}"
