"""The base handler: JSON in and out, one error shape, request size limit, the token and
role check of every request, security headers and request ids."""

import json
import logging
import re
import secrets
from functools import cached_property

from tornado.web import HTTPError, RequestHandler, stream_request_body

from genisys import auth, jsonbody
from genisys.model import ValidationError
from genisys.store import Conflict, ConsulError, ConsulUnavailable, NotFound, PermissionDenied

log = logging.getLogger(__name__)
access_log = logging.getLogger("tornado.access")

MAX_BODY_BYTES = 64 * 1024
_METHODS = ("GET", "POST", "PUT", "DELETE")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# Exceptions that are the caller's or the environment's doing, not a bug.
_EXPECTED = {ValidationError: 400, NotFound: 404, Conflict: 409, ConsulUnavailable: 503,
             PermissionDenied: 503, ConsulError: 503}


_TOO_LARGE = f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB."
# A client's own request id is kept when it looks like one (a UUID, a trace id); anything
# else is replaced, so that log lines never carry what a client made up.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


# Streamed, so that an oversized body is refused with a 413 before it is read, instead of
# being buffered in memory (or cut off with a bare 400 by Tornado's own limit).
@stream_request_body
class JsonHandler(RequestHandler):
    # The role each method needs (read < operate < admin); a method not listed needs
    # admin; None: open to all, without a token. Checked in `prepare`, before any work.
    roles: dict[str, str] | None = {"GET": "read"}

    def initialize(self, context, route: str = "unmatched"):
        self.context = context
        self.route = route  # the route pattern, for the HTTP metrics
        self.token_name = None  # whose token the request carried, for the access log
        self._body = bytearray()
        self._too_large = False

    @cached_property
    def request_id(self) -> str:
        given = self.request.headers.get("X-Request-Id", "")
        return given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)

    def set_default_headers(self):
        self.set_header("X-Request-Id", self.request_id)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")  # answers may be private or change

    def prepare(self):
        self.authorize()
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise ApiError(413, _TOO_LARGE)

    def authorize(self) -> None:
        """Refuse the request unless its token has the role its method needs."""
        try:
            auth.check_query(self.request.query_arguments)
            authenticator = self.context.auth
            needed = None if self.roles is None else self.roles.get(self.request.method, "admin")
            if needed is not None and authenticator is not None:
                self.token_name, role = authenticator.identify(
                    self.request.headers.get("Authorization"))
                auth.check_role(role, needed)
        except auth.AuthError as exc:
            raise ApiError(exc.status, str(exc)) from None

    def data_received(self, chunk: bytes):
        if len(self._body) + len(chunk) > MAX_BODY_BYTES:
            self._too_large = True  # chunked upload without Content-Length; refused below
        else:
            self._body += chunk

    def on_finish(self):
        method = self.request.method  # any word a client sends must not make a new series
        self.context.metrics.http(self.route, method if method in _METHODS else "other",
                                  self.get_status(), self.request.request_time())

    def json_body(self) -> dict:
        """The request body as a JSON object; ValidationError otherwise."""
        if self._too_large:
            raise ApiError(413, _TOO_LARGE)
        try:
            return jsonbody.loads_object(self._body or b"")
        except jsonbody.BadJson as exc:
            raise ValidationError(str(exc)) from None

    def flag(self, name: str) -> bool:
        """A query flag like ?consistent (present, with any value but 0/false)."""
        value = self.get_query_argument(name, None)
        return value is not None and value.lower() not in ("0", "false", "no")

    def send(self, status: int, body) -> None:
        self.set_status(status)
        if body is None:
            self.finish()
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        status, message = self._describe(exc, status_code)
        self.set_status(status)
        if status == 405:
            self.set_header("Allow", ", ".join(self._allowed_methods()))
        if status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="genisys"')
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    def log_exception(self, typ, value, tb):
        if isinstance(value, HTTPError):
            return  # Tornado's own 4xx (405, bad query string): the access log has it
        status, message = self._describe(value, 500)
        # The path, not the URI: a query string may carry what does not belong in a log.
        extra = {"request_id": self.request_id}
        if status >= 500 and status != 503:
            log.error("%s %s failed (request %s)", self.request.method, self.request.path,
                      self.request_id, exc_info=(typ, value, tb), extra=extra)
        elif status == 503:
            log.warning("%s %s: %s (request %s)", self.request.method, self.request.path,
                        message, self.request_id, extra=extra)

    def _describe(self, exc, status_code) -> tuple[int, str]:
        if isinstance(exc, ApiError):
            return exc.status, str(exc)
        for cls, status in _EXPECTED.items():
            if isinstance(exc, cls):
                if cls is ConsulError:  # PermissionDenied, listed first, says it all
                    return 503, f"Consul refused the request: {str(exc)[:200]}"
                return status, str(exc)
        if isinstance(exc, HTTPError) or exc is None:
            if status_code == 405 and not self._allowed_methods():  # an unknown method
                return 404, f"no such endpoint: {jsonbody.excerpt(self.request.path, 80)}."
            if status_code == 405:
                return 405, (f"method {jsonbody.excerpt(self.request.method, 20)} is not "
                             f"allowed on {jsonbody.excerpt(self.request.path, 80)}; use "
                             f"{', '.join(self._allowed_methods())}.")
            if status_code == 400:  # Tornado's own parse errors, e.g. a bad query string
                return 400, "the request is malformed."
            return status_code, (exc.log_message if isinstance(exc, HTTPError) and exc.log_message
                                 else self._reason)
        return 500, "internal error; the replica's log has the details."

    def _allowed_methods(self) -> list[str]:
        return [m for m in _METHODS
                if getattr(type(self), m.lower()) is not getattr(RequestHandler, m.lower())]


def log_request(handler: RequestHandler) -> None:
    """The access log line of a request, with its id and its token's name (when it has
    one); the path without the query string."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return
    request_id = getattr(handler, "request_id", "-")
    token = getattr(handler, "token_name", None)  # an audit trail: who did it, never how
    access_log.log(level, "%d %s %s (%s) %.2fms request %s%s", status, handler.request.method,
                   handler.request.path, handler.request.remote_ip,
                   1000.0 * handler.request.request_time(), request_id,
                   f" token {token}" if token else "", extra={"request_id": request_id})


class NotFoundHandler(JsonHandler):
    """Every path no route matches."""

    def prepare(self):
        raise ApiError(404, f"no such endpoint: {jsonbody.excerpt(self.request.path, 80)}.")
