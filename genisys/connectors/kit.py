"""The connector side of the Genisys protocol, around a small Backend interface.

A backend says how to validate a service definition, scale a service and count its
instances. The kit does the rest: HTTP and its one error shape, the service definitions,
one scale order at a time per service (services in parallel), the term fence, the
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
import json
import logging
import re
import shlex
import signal
import sys
from pathlib import Path

import tornado.httpserver
import tornado.netutil
import tornado.web

from genisys.computes_file import DefinitionFileError, read_definitions
from genisys.connectors.state import StateFile
from genisys.model import ValidationError, check_fields, validate_name, validate_number

MAX_BODY = 64 * 1024
TERM_HEADER = "X-Genisys-Term"
# Genisys may send one request per service at once: 1,000 services must not overflow
# the accept queue (the kernel caps this at net.core.somaxconn).
BACKLOG = 4096

log = logging.getLogger("genisys.connector")


class NotFound(Exception):
    """404: the service (or path) is not defined here."""


class Conflict(Exception):
    """409: already defined, or a scale order from an older term."""


class BodyTooLarge(Exception):
    """413: the request body is larger than MAX_BODY."""


class BackendError(Exception):
    """503: the backend could not carry out the order; the message says why."""


ERROR_STATUS = {ValidationError: 400, NotFound: 404, Conflict: 409, BodyTooLarge: 413,
                BackendError: 503}


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
        """Return once `number` instances run; raise BackendError when that fails."""

    @abc.abstractmethod
    async def status(self, definition: dict) -> int:
        """Count the instances running now."""

    async def close(self) -> None:
        """Release what the backend holds; awaited once when the connector stops."""


class Connector:
    """The protocol without HTTP: definitions, one lock per service, the term fence."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.definitions: dict[str, dict] = {}
        self.highest_term: int | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self.state: StateFile | None = None  # --state-file: saved on every change

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
        """Carry out one scale order; the number running afterwards."""
        self.get(name)
        self._fence(name, term)
        async with self._locks.setdefault(name, asyncio.Lock()):
            # A newer leader may have spoken while this order waited for the lock.
            self._fence(name, term)
            definition = self.definitions[name]  # the latest, should a PUT have come meanwhile
            before = await self.backend.status(definition)
            await self.backend.scale(definition, number)
            after = await self.backend.status(definition)
        log.info("scale %s from %d to %d (term %s): %d running",
                 name, before, number, "none" if term is None else term, after)
        return after

    def _fence(self, name: str, term: int | None) -> None:
        if term is None:
            return
        if self.highest_term is not None and term < self.highest_term:
            log.warning("refused a scale order for %s from term %d: term %d was already seen",
                        name, term, self.highest_term)
            raise Conflict(f"term {term} is older than term {self.highest_term} already seen: "
                           "a newer leader gives the orders.")
        self.highest_term = term

    async def status(self, name: str) -> int:
        return await self.backend.status(self.get(name))

    async def status_all(self) -> dict[str, int]:
        if not self.backend.bulk_status:
            raise NotFound("this connector does not answer GET /status; "
                           "ask GET /service/{svc}/status for each service.")
        names = list(self.definitions)
        counts = await asyncio.gather(*(self.backend.status(self.definitions[name])
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
    if any("\0" in argument for argument in value):
        raise ValidationError(f"{what} must not contain NUL characters.")
    return value


def validate_environment(value) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValidationError('environment must be an object of strings, like {"DEBUG": "1"}.')
    for key, text in value.items():
        if not ENV_NAME.fullmatch(key):
            raise ValidationError(f"environment variable name {key!r:.80} is invalid.")
        if not isinstance(text, str) or "\0" in text:
            raise ValidationError(f"environment variable {key} must be a string without NUL.")
    return value


# --- HTTP -------------------------------------------------------------------------

# Streamed so that an oversized body is refused (413) without being kept in memory.
@tornado.web.stream_request_body
class Handler(tornado.web.RequestHandler):
    """Base handler: JSON bodies up to MAX_BODY, every error as {"error": sentence}."""

    error_message = None

    def initialize(self, connector: Connector) -> None:
        self.connector = connector
        self._body = bytearray()
        self._too_large = False

    def prepare(self) -> None:
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            raise BodyTooLarge(f"the body is larger than {MAX_BODY // 1024} KiB.")

    def data_received(self, chunk: bytes) -> None:
        # Chunked bodies have no Content-Length: keep reading, stop keeping.
        self._too_large = self._too_large or len(self._body) + len(chunk) > MAX_BODY
        if not self._too_large:
            self._body += chunk

    def json_body(self) -> dict:
        if self._too_large:
            raise BodyTooLarge(f"the body is larger than {MAX_BODY // 1024} KiB.")
        try:
            body = json.loads(self._body)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"the body is not valid JSON: {exc.msg}.") from None
        except ValueError:
            raise ValidationError("the body is not valid JSON: it is not UTF-8 text.") from None
        if not isinstance(body, dict):
            raise ValidationError("the body must be a JSON object.")
        return body

    def term(self) -> int | None:
        value = self.request.headers.get(TERM_HEADER)
        if value is None:
            return None
        if not re.fullmatch(r"[0-9]{1,18}", value.strip()):
            raise ValidationError(f"{TERM_HEADER} must be an integer >= 0, got {value!r:.40}.")
        return int(value)

    def write_error(self, status_code: int, exc_info=None, **kwargs) -> None:
        error = exc_info[1] if exc_info else None
        if _error_status(error):
            self.set_status(_error_status(error))
            message = str(error)
        elif isinstance(error, tornado.web.HTTPError) and error.log_message:
            message = error.get_message()
        elif status_code == 405:
            message = f"{self.request.method} is not allowed on {self.request.path}."
        elif status_code >= 500:
            message = "internal error; the connector's log has the details."
        else:
            message = f"{self._reason}."
        self.error_message = message
        self.finish({"error": message})

    def log_exception(self, typ, value, tb) -> None:
        # Known errors are reported in the request's log line; only surprises get a traceback.
        if not _error_status(value) and not isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)


class NotFoundHandler(Handler):
    def prepare(self) -> None:
        raise NotFound(f"there is no {self.request.path} here; see the connector protocol.")


class HealthHandler(Handler):
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
        self.write({"running_resources": await self.connector.status(name)})


def _log_request(handler: Handler) -> None:
    status = handler.get_status()
    level = (logging.DEBUG if status < 400 or status == 404
             else logging.INFO if status < 500 else logging.WARNING)
    error = getattr(handler, "error_message", None)
    log.log(level, "%s %s %d%s (%.1f ms)", handler.request.method, handler.request.uri, status,
            f": {error}" if error else "", 1000 * handler.request.request_time())


def make_app(connector: Connector) -> tornado.web.Application:
    args = {"connector": connector}
    name = r"([^/]+)"
    return tornado.web.Application([
        (r"/health", HealthHandler, args),
        (r"/status", StatusAllHandler, args),
        (r"/service", ServicesHandler, args),
        (rf"/service/{name}", ServiceHandler, args),
        (rf"/service/{name}/scale", ScaleHandler, args),
        (rf"/service/{name}/status", StatusHandler, args),
    ], default_handler_class=NotFoundHandler, default_handler_args=args,
        log_function=_log_request)


def listen(connector: Connector, address: str = "127.0.0.1",
           port: int = 0) -> tuple[tornado.httpserver.HTTPServer, int]:
    """Serve the connector on the running loop; (server, the port it listens on)."""
    sockets = tornado.netutil.bind_sockets(port, address, backlog=BACKLOG)
    server = tornado.httpserver.HTTPServer(make_app(connector))
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


# --- command line -----------------------------------------------------------------

def run(backend_class: type[Backend], argv: list[str] | None = None) -> None:
    """Parse the command line, serve until SIGTERM or SIGINT, stop the backend, exit."""
    parser = argparse.ArgumentParser(description=(backend_class.__doc__ or "").strip())
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7051, help="port to listen on (0: any free)")
    parser.add_argument("--service-file", help="services to define at start-up, like computes.py")
    parser.add_argument("--state-file", help="keeps the definitions across restarts (JSON)")
    backend_class.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(backend_class, args))
    except DefinitionFileError as exc:
        log.error("%s", exc)
        sys.exit(2)
    except OSError as exc:
        log.error("cannot start: %s", exc)
        sys.exit(1)


async def _serve(backend_class: type[Backend], args: argparse.Namespace) -> None:
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        # A repeated signal during the stop changes nothing: the stop is bounded anyway.
        if not stop.is_set():
            log.info("%s received: stopping", sig.name)
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal, sig)
    backend = backend_class.from_args(args)
    try:
        connector = Connector(backend)
        if args.service_file:
            connector.load(args.service_file)
        if args.state_file:
            connector.state = StateFile(args.state_file)
            connector.state.restore(connector)
        try:
            server, port = listen(connector, args.bind, args.port)
        except OSError as exc:
            raise OSError(f"{args.bind}:{args.port} is not available: "
                          f"{exc.strerror or exc}") from None
        log.info("%s connector listening on http://%s:%d, %d service(s) defined%s",
                 backend.name, args.bind, port, len(connector.definitions),
                 f" by {args.service_file}" if args.service_file else "")
        await stop.wait()
        server.stop()  # no new connections; the backend stop below ends the work in flight
    finally:
        await backend.close()
    log.info("stopped")
