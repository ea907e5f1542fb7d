"""The base handler: JSON in and out, one error shape, request size limit."""

import json
import logging

from consul.exceptions import ConsulException
from tornado.web import HTTPError, RequestHandler, stream_request_body

from genisys import jsonbody
from genisys.model import ValidationError
from genisys.store import Conflict, ConsulUnavailable, NotFound, PermissionDenied

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
_METHODS = ("GET", "POST", "PUT", "DELETE")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# Exceptions that are the caller's or the environment's doing, not a bug.
_EXPECTED = {ValidationError: 400, NotFound: 404, Conflict: 409, ConsulUnavailable: 503,
             PermissionDenied: 503, ConsulException: 503}


_TOO_LARGE = f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB."


# Streamed, so that an oversized body is refused with a 413 before it is read, instead of
# being buffered in memory (or cut off with a bare 400 by Tornado's own limit).
@stream_request_body
class JsonHandler(RequestHandler):
    def initialize(self, context, route: str = "unmatched"):
        self.context = context
        self.route = route
        self._body = bytearray()
        self._too_large = False

    def prepare(self):
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise ApiError(413, _TOO_LARGE)

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
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    def log_exception(self, typ, value, tb):
        if isinstance(value, HTTPError):
            return  # Tornado's own 4xx (405, bad query string): the access log has it
        status, message = self._describe(value, 500)
        if status >= 500 and status != 503:
            log.error("%s %s failed", self.request.method, self.request.uri,
                      exc_info=(typ, value, tb))
        elif status == 503:
            log.warning("%s %s: %s", self.request.method, self.request.uri, message)

    def _describe(self, exc, status_code) -> tuple[int, str]:
        if isinstance(exc, ApiError):
            return exc.status, str(exc)
        for cls, status in _EXPECTED.items():
            if isinstance(exc, cls):
                if cls is ConsulException:  # PermissionDenied, listed first, says it all
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


class NotFoundHandler(JsonHandler):
    """Every path no route matches."""

    def prepare(self):
        raise ApiError(404, f"no such endpoint: {jsonbody.excerpt(self.request.path, 80)}.")
