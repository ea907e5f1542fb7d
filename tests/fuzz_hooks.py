"""Schemathesis hooks for tests/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

The fuzzer may send any input, but what a request makes the servers do must stay on
this machine and harmless: a compute's connector always points at 127.0.0.1 (the leader
calls it), and a service definition always runs `sleep` (the connector starts it).
"""

import re

import schemathesis

# Everything between the scheme and the first ':', '/', '?' or '#': the host, or user
# information with the host, so that no URL the API accepts leaves the loopback.
_HOST = re.compile(r"^(\s*https?://)[^/?#:]*", re.IGNORECASE)
HARMLESS_COMMAND = ["sleep", "60"]


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict):
        return
    if isinstance(body.get("connector"), str):
        body["connector"] = _HOST.sub(r"\g<1>127.0.0.1", body["connector"])
    if body.get("command"):
        body["command"] = HARMLESS_COMMAND
