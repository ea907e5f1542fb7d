"""The client commands of `genisys` (status, scale, computes, leader, events, delete,
pause, resume, token): they call the API, with the token in GENISYS_TOKEN when the API
asks for one.

    genisys status [--addr URL] [--json]

Each command is one function registered with @command: it calls the API through `Api`
and returns an exit code in Nomad's plan convention, so scripts can tell what happened:

    0 success, nothing changed     1 success, something changed
    2 bad usage or an API 4xx      3 the API cannot be reached, or answered a 5xx

Errors print the API's one-sentence error to stderr; --json prints the API's JSON
(status: its three answers under "leader", "computes" and "services").
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import quote, urlencode, urlsplit

from genisys import jsonbody

DEFAULT_ADDR = "http://127.0.0.1:7001"
# A scale may retry for up to 5 s inside the API; Consul calls are bounded by their timeout.
TIMEOUT = 30

NO_CHANGE, CHANGED, USAGE_ERROR, UNAVAILABLE = 0, 1, 2, 3


class CommandError(Exception):
    """Ends a command: its message (one sentence) goes to stderr, `code` is the exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Api:
    """Blocking JSON calls to one Genisys replica (any replica serves the whole API)."""

    def __init__(self, addr: str, token: str | None = None):
        self.addr = api_url(addr)
        self.headers = request_headers(token)

    def get(self, path: str, missing_ok: bool = False):
        return self.call("GET", path, missing_ok=missing_ok)

    def call(self, method: str, path: str, body=None, missing_ok: bool = False,
             headers: dict | None = None):
        """The decoded answer (None for an empty body, or a 404 when `missing_ok`)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.addr + path, data=data, method=method,
                                         headers={**self.headers, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:  # a 4xx or 5xx answer: read its error
            status, raw = exc.code, exc.read()
        except OSError as exc:  # refused, unknown host, timed out (URLError is an OSError)
            raise CommandError(UNAVAILABLE, f"cannot reach the Genisys API at {self.addr}: "
                                            f"{_reason(exc)}.") from None
        if status == 404 and missing_ok:
            return None
        code = USAGE_ERROR if 400 <= status < 500 else UNAVAILABLE
        try:
            answer = jsonbody.loads(raw) if raw else None
        except jsonbody.BadJson:
            raise CommandError(code, f"{self.addr} answered {status} with a body that is not "
                                     "JSON: is it a Genisys API?") from None
        if status >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise CommandError(code, error or f"{self.addr} answered {status}.")
        return answer


def api_url(addr: str) -> str:
    """http://host:port from --addr or GENISYS_ADDR; the scheme may be left out."""
    url = addr if "://" in addr else f"http://{addr}"
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(USAGE_ERROR, f"the address {jsonbody.excerpt(addr, 80)} is not an "
                                        "http(s) URL like http://127.0.0.1:7001.")
    return url.rstrip("/")


def request_headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token and token.strip():
        headers["Authorization"] = f"Bearer {token.strip()}"
    return headers


def _reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", exc)  # URLError wraps the socket's error
    return getattr(reason, "strerror", None) or str(reason)


# --- output -------------------------------------------------------------------------

def table(headers: list[str], rows: list[list]) -> str:
    """Aligned columns, two spaces apart, "-" for an empty cell."""
    rows = [[cell if cell not in (None, "", {}) else "-" for cell in row] for row in rows]
    rows = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


def counts(per_compute: dict | None) -> str:
    """{"local": 2, "docker": 1} as local=2,docker=1."""
    return ",".join(f"{name}={n}" for name, n in (per_compute or {}).items())


def emit(args, answer, text: str) -> None:
    """The API's JSON with --json, else the text for people."""
    if getattr(args, "json", False):
        if answer is not None:
            print(json.dumps(answer, indent=2))
    else:
        print(text)


# --- commands -----------------------------------------------------------------------

_COMMANDS: dict[str, tuple[str, tuple, Callable[..., int]]] = {}


def command(name: str, help: str, *arguments):
    """Register a command; a name of two words ("computes add") is a sub-command."""
    def register(function):
        _COMMANDS[name] = (help, arguments, function)
        return function
    return register


def arg(*names, **options):
    return names, options


def api_path(*parts: str) -> str:
    return "".join(f"/{quote(part, safe='')}" for part in parts)


@command("status", "show the leader, the computes and the services")
def status(api: Api, args) -> int:
    try:
        leader, no_leader = api.get("/leader"), None
    except CommandError as exc:  # 503 while none is elected; an unreachable API fails below
        leader, no_leader = None, str(exc)
    computes = api.get("/compute")
    services = api.get("/service")
    emit(args, {"leader": leader, "computes": computes, "services": services},
         render_status(leader or no_leader, computes, services))
    return NO_CHANGE


def render_status(leader: dict | str, computes: dict, services: dict) -> str:
    """`leader` is the answer of GET /leader, or why there is none."""
    lines = ["leader: " + (f"{leader['id']} at {leader['address']} since {leader['since']}"
                           if isinstance(leader, dict) else f"none ({leader})"), "",
             render_computes(computes), ""]
    if services:
        lines.append(table(["SERVICE", "DESIRED", "PLACEMENT", "OBSERVED", "ERRORS"],
                           [[name, r["desired"], counts(r["placement"]), counts(r["observed"]),
                             ",".join(r["errors"])] for name, r in services.items()]))
        lines += [f"{name} on {compute}: {error}" for name, r in services.items()
                  for compute, error in r["errors"].items()]
        lines += [f"{name} on {compute}: order to {order.get('to')} in progress since "
                  f"{order.get('since')}" for name, r in services.items()
                  for compute, order in (r.get("in_progress") or {}).items()]
    else:
        lines.append("no service is known.")
    return "\n".join(lines)


def render_computes(computes: dict) -> str:
    if not computes:
        return "no compute is defined."
    return table(["COMPUTE", "CONNECTOR", "DELETING SINCE"],
                 [[c["name"], c["connector"], c.get("deleting")] for c in computes.values()])


@command("scale", "set a service's total across computes (exit 1 when it changed)",
         arg("service"), arg("number", help="the total, an integer >= 0"),
         arg("--compute", help="grow on this compute, shrink from it first"),
         arg("--dry-run", action="store_true",
             help="show the placement and the orders, change nothing (exit 1: orders)"),
         arg("--check-index", metavar="N",
             help="apply only if the service is still at this index (from --dry-run)"))
def scale(api: Api, args) -> int:
    body = {"number": args.number}
    if args.compute is not None:
        body["compute"] = args.compute
    path = api_path("service", args.service, "scale")
    if args.dry_run:
        return dry_run(api, args, path, body)
    before = api.get(api_path("service", args.service), missing_ok=True)
    answer = api.call("POST", path, body, headers=None if args.check_index is None
                      else {"If-Match": args.check_index})
    changed = before is None or ((before["desired"], before["placement"])
                                 != (answer["desired"], answer["placement"]))
    text = (f"{answer['service']}: desired {answer['desired']}, placement "
            f"{counts(answer['placement']) or '-'}{'' if changed else ' (unchanged)'}")
    if "note" in answer:  # some of the total do not fit
        text += "\n" + answer["note"]
    emit(args, answer, text)
    return CHANGED if changed else NO_CHANGE


def dry_run(api: Api, args, path: str, body: dict) -> int:
    answer = api.call("POST", path + "?dry_run=1", body)
    lines = [f"{answer['service']}: desired {answer['desired']}, placement "
             f"{counts(answer['placement']) or '-'}, index {answer['index']}"]
    if "note" in answer:  # some of the total do not fit
        lines.append(answer["note"])
    if answer["orders"]:
        lines.append(table(["COMPUTE", "FROM", "TO"],
                           [[o["compute"], o["from"], o["to"]] for o in answer["orders"]]))
    else:
        lines.append("no order: every compute already runs its placement.")
    emit(args, answer, "\n".join(lines))
    return CHANGED if answer["orders"] else NO_CHANGE


@command("computes", "list the computes; add, set or rm one")
def computes(api: Api, args) -> int:
    answer = api.get("/compute")
    emit(args, answer, render_computes(answer))
    return NO_CHANGE


@command("computes add", "define a compute (exit 1)", arg("name"),
         arg("connector", help="the connector's URL, like http://127.0.0.1:7051"))
def add_compute(api: Api, args) -> int:
    answer = api.call("POST", "/compute", {"name": args.name, "connector": args.connector})
    emit(args, answer, f"compute {answer['name']} -> {answer['connector']} defined")
    return CHANGED


@command("computes set", "define a compute or change its connector (exit 1 when it changed)",
         arg("name"), arg("connector", help="the connector's URL, like http://127.0.0.1:7051"))
def set_compute(api: Api, args) -> int:
    before = api.get(api_path("compute", args.name), missing_ok=True)
    answer = api.call("PUT", api_path("compute", args.name), {"connector": args.connector})
    changed = answer != before
    emit(args, answer, f"compute {answer['name']} -> {answer['connector']}"
                       f"{'' if changed else ' (unchanged)'}")
    return CHANGED if changed else NO_CHANGE


@command("computes rm", "delete a compute that holds no resources (exit 1)", arg("name"))
def remove_compute(api: Api, args) -> int:
    api.call("DELETE", api_path("compute", args.name))
    emit(args, None, f"compute {args.name} deleted")
    return CHANGED


@command("leader", "show which replica leads")
def leader(api: Api, args) -> int:
    answer = api.get("/leader")
    emit(args, answer, f"{answer['id']} at {answer['address']} since {answer['since']}")
    return NO_CHANGE


@command("token", "list the API tokens; create or revoke one (role admin)")
def tokens(api: Api, args) -> int:
    answer = api.get("/token")
    emit(args, answer, render_tokens(answer))
    return NO_CHANGE


@command("token list", "list the API tokens: names, roles, creation times (never secrets)")
def list_tokens(api: Api, args) -> int:
    return tokens(api, args)


def render_tokens(answer: dict) -> str:
    if not answer:
        return "no token is stored (the bootstrap token is not stored)."
    return table(["TOKEN", "ROLE", "CREATED"],
                 [[t["name"], t["role"], t.get("created")] for t in answer.values()])


@command("token create", "create an API token and print its secret, shown this once (exit 1)",
         arg("name"), arg("role", choices=["read", "operate", "admin"]))
def create_token(api: Api, args) -> int:
    answer = api.call("POST", "/token", {"name": args.name, "role": args.role})
    emit(args, answer, f"token {answer['name']} (role {answer['role']}) created; its secret, "
                       f"shown only this once:\n{answer['secret']}")
    return CHANGED


@command("token revoke", "revoke an API token at once on every replica (exit 1)", arg("name"))
def revoke_token(api: Api, args) -> int:
    api.call("DELETE", api_path("token", args.name))
    emit(args, None, f"token {args.name} revoked")
    return CHANGED


@command("events", "show the orders the leader sent, newest first",
         arg("service", nargs="?", help="only this service's (default: every service's)"),
         arg("--limit", help="at most this many (default 100, at most 1000)"),
         arg("--since", help="only those after this ISO time (without SERVICE)"))
def events(api: Api, args) -> int:
    query = {k: v for k, v in (("limit", args.limit), ("since", args.since)) if v}
    path = api_path("service", args.service, "events") if args.service else "/events"
    if args.service and args.since:
        raise CommandError(USAGE_ERROR, "--since applies to every service's events only.")
    answer = api.get(path + ("?" + urlencode(query) if query else ""))
    emit(args, answer, render_events(answer["events"]))
    return NO_CHANGE


def render_events(events: list[dict]) -> str:
    if not events:
        return "no order was sent."
    return table(["TIME", "SERVICE", "COMPUTE", "FROM", "TO", "TERM", "RESULT", "REASON"],
                 [[e.get("time"), e.get("service"), e.get("compute"), e.get("from"),
                   e.get("to"), e.get("term"), e.get("result"), e.get("reason")]
                  for e in events])


@command("delete", "scale a service to 0 everywhere, then forget it (exit 1)", arg("service"))
def delete(api: Api, args) -> int:
    before = api.get(api_path("service", args.service))
    answer = api.call("DELETE", api_path("service", args.service))
    emit(args, answer, f"{args.service}: deleting; {answer['next']}")
    return NO_CHANGE if before.get("state") == "deleting" else CHANGED


def set_paused(api: Api, args, action: str) -> int:
    before = api.get(api_path("service", args.service))
    answer = api.call("POST", api_path("service", args.service, action))
    emit(args, answer, f"{args.service}: {'paused' if answer['paused'] else 'active'}")
    return NO_CHANGE if before.get("paused") == answer["paused"] else CHANGED


@command("pause", "stop sending orders for a service (exit 1 when it changed)",
         arg("service"))
def pause(api: Api, args) -> int:
    return set_paused(api, args, "pause")


@command("resume", "send a paused service's orders again (exit 1 when it changed)",
         arg("service"))
def resume(api: Api, args) -> int:
    return set_paused(api, args, "resume")


# --- command line -------------------------------------------------------------------

NAMES = tuple(name for name in _COMMANDS if " " not in name)
SUMMARY = (f"client commands: genisys {{{','.join(NAMES)}}} [--addr URL] [--json] ...; "
           "genisys COMMAND --help says more.")
EXIT_CODES = ("exit codes: 0 success with no change, 1 success with changes, 2 bad usage or "
              "an API 4xx, 3 the API unreachable or a 5xx.")


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="genisys", epilog=EXIT_CODES)
    parsers, subcommands = {"": top}, {}
    for name, (help, arguments, function) in _COMMANDS.items():
        parent, _, word = name.rpartition(" ")
        if parent not in subcommands:
            subcommands[parent] = parsers[parent].add_subparsers(
                title="commands", required=not parent)
        parser = subcommands[parent].add_parser(word, help=help, description=help,
                                                epilog=EXIT_CODES)
        # SUPPRESS: "genisys computes --json add ..." keeps the --json given to the parent.
        parser.add_argument("--addr", default=argparse.SUPPRESS, help=(
            f"the API's URL (default: $GENISYS_ADDR, else {DEFAULT_ADDR})"))
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                            help="print the API's JSON answer")
        for names, options in arguments:
            parser.add_argument(*names, **options)
        parser.set_defaults(run=function)
        parsers[name] = parser
    return top


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)  # bad usage: argparse exits with 2
    addr = getattr(args, "addr", None) or os.environ.get("GENISYS_ADDR") or DEFAULT_ADDR
    try:
        return args.run(Api(addr, os.environ.get("GENISYS_TOKEN")), args)
    except CommandError as exc:
        print(f"genisys: {exc}", file=sys.stderr)
        return exc.code
