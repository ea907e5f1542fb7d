"""The connector side of the Genisys protocol, around a small Backend interface.

A backend says how to validate a service definition, scale a service and count its
instances. The kit does the rest: HTTP and its one error shape (with the server limits
of genisys.httpserver), the service definitions, one scale order at a time per service
(services in parallel; a newer order replaces the one in progress, whose number the
status answer names as `target` meanwhile), a maximum number of
instances, the term fence, a required token (--token-file), HTTPS (--tls-cert), the
command line, logging and a graceful stop. A connector is then one short file:

    class MyBackend(Backend):
        def validate(self, definition): ...
        async def scale(self, definition, number): ...
        async def status(self, definition): ...

    if __name__ == "__main__":
        run(MyBackend)
"""

import abc
import argparse
import asyncio
import hmac
import logging
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import tornado.netutil
import tornado.web

from genisys import logformat
from genisys.computes_file import DefinitionFileError, read_definitions
from genisys.connectors.state import StateFile
from genisys.httpserver import DEFAULT_TIMEOUT, LimitedHTTPServer, raise_fd_limit, tls_context
from genisys.jsonbody import BadJson, excerpt, loads_object
from genisys.metrics import KitMetrics, MetricsPage
from genisys.model import ValidationError, check_fields, validate_name, validate_number
from genisys.protocol import MAX_TERM, TERM_FIELD, TERM_HEADER

MAX_BODY = 64 * 1024
# Per service and order, unless --max-instances says otherwise: 100,000 processes would
# take half an hour to start, and no real host runs them.
DEFAULT_MAX_INSTANCES = 1000
# Genisys may send one request per service at once: 1,000 services must not overflow
# the accept queue (the kernel caps this at net.core.somaxconn).
BACKLOG = 4096
# The token a connector requires when --token-file is not given.
TOKEN_VARIABLE = "GENISYS_CONNECTOR_TOKEN"

log = logging.getLogger("genisys.connector")


class Unauthorized(Exception):
    """401: the connector requires a token and the request lacks it or has another."""


class NotFound(Exception):
    """404: the service (or path) is not defined here."""


class Conflict(Exception):
    """409: already defined, a scale order from an older term, or one a newer order replaced."""


class Replaced(Conflict):
    """409: a newer order for the service replaced this one."""


class BodyTooLarge(Exception):
    """413: the request body is larger than MAX_BODY."""


class BackendError(Exception):
    """503: the backend could not carry out the order; the message says why."""


ERROR_STATUS = {ValidationError: 400, BadJson: 400, Unauthorized: 401, NotFound: 404,
                Conflict: 409, BodyTooLarge: 413, BackendError: 503}


def _error_status(error) -> int | None:
    return next((code for kind, code in ERROR_STATUS.items() if isinstance(error, kind)), None)


class Backend(abc.ABC):
    """What a connector implements. Every method gets a definition returned by validate()."""

    name = "connector"
    # False: GET /status answers 404, as a connector without the bulk extension does.
    bulk_status = True
    # True: any valid service name counts as defined, as {"name": name}.
    auto_define = False

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this backend's command-line options."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Backend":
        """Build the backend from the parsed command line."""
        return cls()

    @abc.abstractmethod
    def validate(self, definition: dict) -> dict:
        """Return the normalized definition, "name" included, or raise ValidationError.

        `genisys.model.check_fields` and `validate_name` do the common part.
        """

    @abc.abstractmethod
    async def scale(self, definition: dict, number: int) -> None:
        """Return once `number` instances run; raise BackendError when that fails.

        A newer order for the service cancels this one where it stands (CancelledError at
        an await): whatever was started by then must still be counted by status().
        """

    @abc.abstractmethod
    async def status(self, definition: dict) -> int:
        """Count the instances running now."""

    async def close(self) -> None:
        """Release what the backend holds; awaited once when the connector stops."""


class Connector:
    """The protocol without HTTP: definitions, one order at a time per service (the newest
    supersedes the one in progress), the term fence."""

    def __init__(self, backend: Backend, max_instances: int = DEFAULT_MAX_INSTANCES,
                 token: str | None = None):
        self.backend = backend
        self.max_instances = max_instances
        self.token = token  # when set, every call but /health must bear it
        self.definitions: dict[str, dict] = {}
        self.highest_term: int | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._newest: dict[str, asyncio.Task] = {}  # the order in progress, per service
        self._replaced: dict[asyncio.Task, int] = {}  # cancelled orders: the newer number
        self._targets: dict[str, int] = {}  # the number of the order in progress, per service
        self.state: StateFile | None = None  # --state-file: saved on every change
        self.metrics = KitMetrics(backend.name)
        self.metrics.watch_definitions(lambda: len(self.definitions))

    def define(self, body, name: str | None = None) -> tuple[dict, bool]:
        """Validate and store a definition; (definition, created).

        Without `name` (POST) an existing service is a Conflict; with it (PUT, the name
        in the path) the definition is replaced.
        """
        if not isinstance(body, dict):
            raise ValidationError("a service definition must be a JSON object.")
        if name is not None:
            validate_name(name, "service name")
            body = {"name": name, **body}
            if body["name"] != name:
                raise ValidationError(
                    f"name {body['name']!r:.80} in the body differs from {name!r} in the path.")
        definition = self.backend.validate(body)
        created = definition["name"] not in self.definitions
        if name is None and not created:
            raise Conflict(f"service {definition['name']!r} is already defined; "
                           f"PUT /service/{definition['name']} replaces its definition.")
        self.definitions[definition["name"]] = definition
        if self.state:
            self.state.save(self.definitions)
        return definition, created

    def get(self, name: str) -> dict:
        validate_name(name, "service name")
        if name not in self.definitions and self.backend.auto_define:
            self.definitions[name] = self.backend.validate({"name": name})
        try:
            return self.definitions[name]
        except KeyError:
            raise NotFound(f"service {name!r} is not defined here; "
                           "POST /service defines it.") from None

    async def scale(self, name: str, number: int, term: int | None = None) -> int:
        """Carry out one scale order; the number running afterwards.

        A newer order for the service cancels this one, which then answers 409: the
        service goes to the newest number at once instead of through every older one.
        """
        started, result = time.monotonic(), "failed"
        try:
            running = await self._scale(name, number, term)
            result = "done"
            return running
        except Replaced:
            result = "replaced"
            raise
        except (ValidationError, NotFound, Conflict):
            result = "refused"
            raise
        finally:
            self.metrics.order(result, time.monotonic() - started)

    async def _scale(self, name: str, number: int, term: int | None) -> int:
        self.get(name)
        if number > self.max_instances:
            raise ValidationError(f"number {number} is more than the {self.max_instances} "
                                  "instances per service this connector runs at most.")
        self._fence(name, term)
        order = asyncio.create_task(self._carry_out(name, number, term))
        previous = self._newest.get(name)
        self._newest[name] = order
        self._targets[name] = number
        if previous is not None and not previous.done():
            self._replaced[previous] = number
            previous.cancel()
        try:
            return await order
        except asyncio.CancelledError:
            newer = self._replaced.get(order)
            if newer is None or asyncio.current_task().cancelling():
                raise  # cancelled from outside, or by the backend itself (a 500)
            raise Replaced(f"a newer order for {name} (number {newer}) replaced this one "
                           "before it was done.") from None
        finally:
            self._replaced.pop(order, None)
            if self._newest.get(name) is order:
                del self._newest[name]
                del self._targets[name]

    async def _carry_out(self, name: str, number: int, term: int | None) -> int:
        async with self._locks.setdefault(name, asyncio.Lock()):
            # A newer leader may have spoken while this order waited for the lock.
            self._fence(name, term)
            definition = self.definitions[name]  # the latest, should a PUT have come meanwhile
            before = await self._count(definition)
            try:
                await self.backend.scale(definition, number)
            except asyncio.CancelledError:
                log.info("scale %s from %d to %d (term %s): replaced by a newer order",
                         name, before, number, "none" if term is None else term,
                         extra={"service": name, "term": term})
                raise
            after = await self._count(definition)
        log.info("scale %s from %d to %d (term %s): %d running",
                 name, before, number, "none" if term is None else term, after,
                 extra={"service": name, "term": term})
        return after

    async def _count(self, definition: dict) -> int:
        """backend.status(), checked: a backend's bug must not reach Genisys as a count."""
        count = await self.backend.status(definition)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise TypeError(f"{type(self.backend).__name__}.status() returned {count!r:.40}, "
                            "not a count")
        return count

    def _fence(self, name: str, term: int | None) -> None:
        """Refuse an order from a term older than the highest seen. The 409 names that
        term, so that the legitimate leader can raise its own past it (a stray header or
        a reset Consul must not lock it out); a deposed leader cannot raise its term."""
        if term is None:
            return
        if term > MAX_TERM:
            raise ValidationError(f"{TERM_HEADER} must be at most {MAX_TERM}, got {term}.")
        if self.highest_term is not None and term < self.highest_term:
            log.warning("refused a scale order for %s from term %d: term %d was already seen",
                        name, term, self.highest_term)
            conflict = Conflict(f"term {term} is older than term {self.highest_term} already "
                                "seen: a newer leader gives the orders.")
            conflict.term = self.highest_term
            raise conflict
        self.highest_term = term

    async def status(self, name: str) -> int:
        return await self._count(self.get(name))

    def target(self, name: str) -> int | None:
        """The number the order in progress for `name` works towards; None when none is."""
        return self._targets.get(name)

    async def status_all(self) -> dict[str, int]:
        if not self.backend.bulk_status:
            raise NotFound("this connector does not answer GET /status; "
                           "ask GET /service/{svc}/status for each service.")
        names = list(self.definitions)
        counts = await asyncio.gather(*(self._count(self.definitions[name])
                                        for name in names), return_exceptions=True)
        for count in counts:
            if isinstance(count, BaseException):
                raise count
        return dict(zip(names, counts))

    def load(self, path: str | Path) -> None:
        """Define the services of a service file; DefinitionFileError names the line."""
        for lineno, body in read_definitions(path):
            try:
                self.define(body)
            except Conflict:
                raise DefinitionFileError(
                    f"{path}:{lineno}: service {body['name']!r} is defined twice.") from None
            except ValidationError as exc:
                raise DefinitionFileError(f"{path}:{lineno}: {exc}") from None


# --- validation helpers for definitions ----------------------------------------------

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validate_command(value, what: str = "command") -> list[str]:
    """A non-empty list of strings, or a string split like a shell would (no shell runs)."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise ValidationError(f"{what} cannot be split into words: {exc}.") from None
    if not (isinstance(value, list) and value and all(isinstance(a, str) for a in value)
            and value[0]):
        raise ValidationError(f"{what} must be a non-empty list of strings or a string "
                              "like 'python3 -m http.server'.")
    if not all(map(is_os_text, value)):
        raise ValidationError(f"{what} must not contain NUL characters or lone surrogates.")
    return value


def is_os_text(text: str) -> bool:
    """Whether the text can be a program argument, an environment value or a path: no NUL,
    and encodable as the OS encodes it (JSON's "\\ud800" is not)."""
    try:
        return b"\0" not in os.fsencode(text)
    except UnicodeEncodeError:
        return False


def validate_environment(value) -> dict[str, str]:
    """An object of scalars; numbers and booleans become strings as docker-py makes them
    (str(value): True is "True"), so a service file written for Docker works here too."""
    if not isinstance(value, dict):
        raise ValidationError('environment must be an object of strings, like {"DEBUG": "1"}.')
    environment = {}
    for key, text in value.items():
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            raise ValidationError(f"environment variable name {key!r:.80} is invalid.")
        if not isinstance(text, (str, int, float)):  # bool is an int
            raise ValidationError(f"environment variable {key} must be a string, a number or "
                                  f"a boolean, not {_json_type(text)}.")
        text = str(text)
        if not is_os_text(text):
            raise ValidationError(f"environment variable {key} must not contain NUL characters "
                                  "or lone surrogates.")
        environment[key] = text
    return environment


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}")


# --- HTTP -------------------------------------------------------------------------

# Streamed so that an oversized body is refused (413) without being kept in memory.
@tornado.web.stream_request_body
class Handler(tornado.web.RequestHandler):
    """Base handler: JSON bodies up to MAX_BODY, every error as {"error": sentence}."""

    error_message = None
    needs_token = True

    def initialize(self, connector: Connector) -> None:
        self.connector = connector
        self._body = bytearray()
        self._too_large = False

    def prepare(self) -> None:
        self.authenticate()
        length = self.request.headers.get("Content-Length", "")
        if re.fullmatch(r"[0-9]+", length) and int(length) > MAX_BODY:
            raise BodyTooLarge(f"the body is larger than {MAX_BODY // 1024} KiB.")

    def data_received(self, chunk: bytes) -> None:
        # Chunked bodies have no Content-Length: keep reading, stop keeping.
        self._too_large = self._too_large or len(self._body) + len(chunk) > MAX_BODY
        if not self._too_large:
            self._body += chunk

    def authenticate(self) -> None:
        """Unauthorized unless the request bears the connector's token (if it has one)."""
        if not self.connector.token or not self.needs_token:
            return
        scheme, _, given = self.request.headers.get("Authorization", "").partition(" ")
        # Constant time: the answer's timing must not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.connector.token.encode()):
            raise Unauthorized("this connector requires a token: send "
                               "Authorization: Bearer <token>, the compute's token.")

    def json_body(self) -> dict:
        if self._too_large:
            raise BodyTooLarge(f"the body is larger than {MAX_BODY // 1024} KiB.")
        return loads_object(self._body)

    def term(self) -> int | None:
        value = self.request.headers.get(TERM_HEADER)
        if value is None:
            return None
        if not re.fullmatch(r"[0-9]{1,19}", value.strip()):
            raise ValidationError(f"{TERM_HEADER} must be an integer >= 0, got {value!r:.40}.")
        return int(value)

    def write_error(self, status_code: int, exc_info=None, **kwargs) -> None:
        error = exc_info[1] if exc_info else None
        if _error_status(error):
            self.set_status(_error_status(error))
            message = str(error)
            if isinstance(error, Unauthorized):
                self.set_header("WWW-Authenticate", 'Bearer realm="genisys-connector"')
        elif isinstance(error, tornado.web.HTTPError) and error.log_message:
            # Tornado's own, e.g. a path that is not UTF-8 once percent-decoded
            message = excerpt(error.get_message()).rstrip(".") + "."
        elif status_code == 405:
            allowed = self.allowed_methods()
            self.set_header("Allow", ", ".join(allowed))
            message = (f"{excerpt(self.request.method, 20)} is not allowed on "
                       f"{excerpt(self.request.path, 80)}; use {' or '.join(allowed)}.")
        elif status_code >= 500:
            message = "internal error; the connector's log has the details."
        else:
            message = f"{self._reason}."
        self.error_message = message
        answer = {"error": message}
        if getattr(error, "term", None) is not None:  # a stale term: name the highest seen
            answer[TERM_FIELD] = error.term
        self.finish(answer)

    def allowed_methods(self) -> list[str]:
        """The methods this handler implements, for the Allow header of a 405."""
        return [method for method in ("GET", "POST", "PUT")
                if getattr(type(self), method.lower()) is not getattr(Handler, method.lower())]

    def log_exception(self, typ, value, tb) -> None:
        # Known errors are reported in the request's log line; only surprises get a traceback.
        if not _error_status(value) and not isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)


class _AnyMethod:
    def __contains__(self, method: str) -> bool:
        return True


class NotFoundHandler(Handler):
    # An unknown path is a 404 whatever the method, never a 405 with nothing allowed.
    SUPPORTED_METHODS = _AnyMethod()

    def prepare(self) -> None:
        self.authenticate()  # a stray client learns nothing, not even which paths exist
        raise NotFound(f"there is no {excerpt(self.request.path, 80)} here; "
                       "see the connector protocol.")


class MetricsHandler(MetricsPage, Handler):
    @property
    def metrics_registry(self):
        return self.connector.metrics.registry


class HealthHandler(Handler):
    needs_token = False  # for load balancers and probes; it tells nothing worth guarding

    def get(self) -> None:
        self.write({"status": "ok", "backend": self.connector.backend.name})


class StatusAllHandler(Handler):
    async def get(self) -> None:
        self.write({"running_resources": await self.connector.status_all()})


class ServicesHandler(Handler):
    def get(self) -> None:
        self.write(self.connector.definitions)

    def post(self) -> None:
        definition, _ = self.connector.define(self.json_body())
        self.set_status(201)
        self.write(definition)


class ServiceHandler(Handler):
    def get(self, name: str) -> None:
        self.write(self.connector.get(name))

    def put(self, name: str) -> None:
        definition, created = self.connector.define(self.json_body(), name)
        self.set_status(201 if created else 200)
        self.write(definition)


class ScaleHandler(Handler):
    async def post(self, name: str) -> None:
        body = self.json_body()
        check_fields(body, ("number",))
        number = validate_number(body["number"])
        running = await self.connector.scale(name, number, self.term())
        self.write({"service": name, "running_resources": running})


class StatusHandler(Handler):
    async def get(self, name: str) -> None:
        answer = {"running_resources": await self.connector.status(name)}
        target = self.connector.target(name)
        if target is not None:  # the protocol's extension: an order still in progress
            answer["target"] = target
        self.write(answer)


def _log_request(handler: Handler) -> None:
    status = handler.get_status()
    level = (logging.DEBUG if status < 400 or status == 404
             else logging.INFO if status < 500 else logging.WARNING)
    error = getattr(handler, "error_message", None)
    log.log(level, "%s %s %d%s (%.1f ms)", excerpt(handler.request.method, 20),
            excerpt(handler.request.uri, 200), status,
            f": {error}" if error else "", 1000 * handler.request.request_time())


def make_app(connector: Connector) -> tornado.web.Application:
    args = {"connector": connector}
    name = r"([^/]+)"
    return tornado.web.Application([
        (r"/health", HealthHandler, args),
        (r"/metrics", MetricsHandler, args),
        (r"/status", StatusAllHandler, args),
        (r"/service", ServicesHandler, args),
        (rf"/service/{name}", ServiceHandler, args),
        (rf"/service/{name}/scale", ScaleHandler, args),
        (rf"/service/{name}/status", StatusHandler, args),
    ], default_handler_class=NotFoundHandler, default_handler_args=args,
        log_function=_log_request)


def listen(connector: Connector, address: str = "127.0.0.1", port: int = 0,
           timeout: float = DEFAULT_TIMEOUT, max_connections: int | None = None,
           ssl_options=None) -> tuple[LimitedHTTPServer, int]:
    """Serve the connector on the running loop; (server, the port it listens on).
    genisys.httpserver says what `timeout` and `max_connections` limit; `ssl_options`
    (an ssl.SSLContext) makes it HTTPS."""
    sockets = tornado.netutil.bind_sockets(port, address, backlog=BACKLOG)
    server = LimitedHTTPServer(make_app(connector), timeout=timeout,
                               max_connections=max_connections, ssl_options=ssl_options)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


# --- command line -----------------------------------------------------------------

def run(backend_class: type[Backend], argv: list[str] | None = None) -> None:
    """Parse the command line, serve until SIGTERM or SIGINT, stop the backend, exit."""
    parser = argparse.ArgumentParser(description=(backend_class.__doc__ or "").strip())
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7051, help="port to listen on (0: any free)")
    parser.add_argument("--max-instances", type=_positive(int), default=DEFAULT_MAX_INSTANCES,
                        help=("most instances per service; larger orders are a 400 "
                              f"(default {DEFAULT_MAX_INSTANCES})"))
    parser.add_argument("--http-timeout", type=_positive(float), default=DEFAULT_TIMEOUT, help=(
        "seconds a client has to send a request's headers (or the next request) and its "
        f"body (default {DEFAULT_TIMEOUT:g})"))
    parser.add_argument("--max-connections", type=_positive(int), default=None, help=(
        "open client connections beyond which new ones are closed at once "
        "(default: half the open file limit)"))
    parser.add_argument("--service-file", help="services to define at start-up, like computes.py")
    parser.add_argument("--state-file", help="keeps the definitions across restarts (JSON)")
    parser.add_argument("--token-file", help=(
        f"require the token this file holds on every call but /health (default: "
        f"${TOKEN_VARIABLE} when set; else no token is required)"))
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
    backend_class.add_arguments(parser)
    logformat.add_argument(parser)
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    logformat.configure(logging.INFO, args.log_format)
    raise_fd_limit()
    try:
        asyncio.run(_serve(backend_class, args))
    except DefinitionFileError as exc:
        log.error("%s", exc)
        sys.exit(2)
    except OSError as exc:
        log.error("cannot start: %s", exc)
        sys.exit(1)


def _positive(kind: type):
    """An argparse type: a number of `kind` > 0."""
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
        return value
    parse.__name__ = kind.__name__  # argparse names it in "invalid int value"
    return parse


async def _serve(backend_class: type[Backend], args: argparse.Namespace) -> None:
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        # A repeated signal during the stop changes nothing: the stop is bounded anyway.
        if not stop.is_set():
            log.info("%s received: stopping", sig.name)
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal, sig)
    token = _read_token(args.token_file)
    ssl_options = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    backend = backend_class.from_args(args)
    try:
        connector = Connector(backend, args.max_instances, token)
        if args.service_file:
            connector.load(args.service_file)
        if args.state_file:
            connector.state = StateFile(args.state_file)
            connector.state.restore(connector)
        try:
            server, port = listen(connector, args.bind, args.port, args.http_timeout,
                                  args.max_connections, ssl_options)
        except OSError as exc:
            raise OSError(f"{args.bind}:{args.port} is not available: "
                          f"{exc.strerror or exc}") from None
        log.info("%s connector listening on %s://%s:%d, %d service(s) defined%s%s",
                 backend.name, "https" if ssl_options else "http", args.bind, port,
                 len(connector.definitions),
                 f" by {args.service_file}" if args.service_file else "",
                 "; a token is required" if token else "")
        await stop.wait()
        server.stop()  # no new connections; the backend stop below ends the work in flight
    finally:
        await backend.close()
    log.info("stopped")


def _read_token(path: str | None) -> str | None:
    """The token of --token-file, else of $GENISYS_CONNECTOR_TOKEN; None when neither.
    OSError (the process stops with it) when the file cannot be read or is empty."""
    if path is None:
        # Taken out: the instances a backend starts inherit the environment, not the secret.
        return os.environ.pop(TOKEN_VARIABLE, None) or None
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise OSError(f"the token file {path} is empty")
    return token
