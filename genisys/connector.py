"""ConnectorClient: the connector protocol over HTTP, async, with timeouts.

    GET  {connector}/status                 -> {"running_resources": {svc: n}}  (optional)
    GET  {connector}/service/{svc}/status   -> {"running_resources": n, "target": t}
                                               (target optional: an order still in progress)
    POST {connector}/service/{svc}/scale {"number": n}   -> any 2xx

Every answer is distrusted: whatever a connector sends (garbage, HTML, a document nested
100,000 levels deep) or whatever the call meets (a URL curl cannot use, a timeout) ends
as one ConnectorError sentence for that call, never as another exception.

Connections are kept alive (genisys.httpclient): one cycle makes thousands of calls
to a handful of connectors. A compute's token goes with every call to its connector as
`Authorization: Bearer <token>`; https connectors are verified with `ca_file` (default:
the system's CAs).
"""

import json
import logging

from tornado.httpclient import HTTPClientError, HTTPRequest

from genisys.httpclient import close_client, curl_client
from genisys.jsonbody import BadJson, excerpt, loads
from genisys.protocol import TERM_FIELD, TERM_HEADER, service_path

log = logging.getLogger(__name__)


class ConnectorError(Exception):
    """The connector failed, timed out, or answered something that breaks the protocol.

    `kind` (timeout, unreachable, refused, invalid, stale_term) labels the error metric."""

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind


class StaleTerm(ConnectorError):
    """The connector refused an order (409) because it has seen the higher term `seen`."""

    def __init__(self, message: str, seen: int):
        super().__init__(message, "stale_term")
        self.seen = seen


class ConnectorClient:
    def __init__(self, timeout: float = 5.0, max_connections: int = 256,
                 ca_file: str | None = None):
        self.timeout = timeout
        self.ca_file = ca_file
        self._http = curl_client(max_connections)

    def close(self) -> None:
        close_client(self._http)

    async def bulk_status(self, connector: str, token: str | None = None
                          ) -> dict[str, int] | None:
        """Every service's count in one call; None when the connector lacks the extension."""
        code, body = await self._call("GET", connector, "/status", token=token)
        if code in (404, 405, 501):
            return None
        counts = _running_resources(_expect(code, body, connector, "GET /status"),
                                    connector, "GET /status")
        if not isinstance(counts, dict) or not all(_is_count(v) for v in counts.values()):
            raise ConnectorError(f"{connector} answered GET /status without a map of "
                                 "service counts.")
        return counts

    async def status(self, connector: str, service: str, token: str | None = None) -> int:
        """Running resources of one service; 0 when the connector does not define it."""
        return (await self.progress(connector, service, token))[0]

    async def progress(self, connector: str, service: str, token: str | None = None
                       ) -> tuple[int, int | None]:
        """Running resources of one service, and the `target` it is still working
        towards (None when the connector names none: no order in progress, or a connector
        without the extension)."""
        path = service_path(service, "status")
        code, body = await self._call("GET", connector, path, token=token)
        if code in (404, 501):
            return 0, None
        answer = _expect(code, body, connector, f"GET {path}")
        count = _running_resources(answer, connector, f"GET {path}")
        if not _is_count(count):
            raise ConnectorError(f"{connector} answered GET {path} with a running_resources "
                                 f"that is not a count: {excerpt(repr(count), 60)}")
        target = answer.get("target")
        if target is not None and not _is_count(target):
            raise ConnectorError(f"{connector} answered GET {path} with a target that is "
                                 f"not a count: {excerpt(repr(target), 60)}")
        return count, target

    async def scale(self, connector: str, service: str, number: int,
                    term: int | None, token: str | None = None) -> int | None:
        """Order `number` instances; the count the answer names, or None when a 2xx answer
        names none (an empty body is a valid answer): the caller observes it then.
        StaleTerm when the connector has seen a higher term."""
        path = service_path(service, "scale")
        headers = {"Content-Type": "application/json"}
        if term is not None:
            headers[TERM_HEADER] = str(term)
        code, body = await self._call("POST", connector, path, json.dumps({"number": number}),
                                      headers, token)
        if code == 404:
            raise ConnectorError(f"service {service} is not defined on {connector}.", "refused")
        if code == 409:
            seen = _stale_term(body)
            if seen is not None:
                raise StaleTerm(f"{connector} has seen term {seen}, newer than {term}: "
                                "a newer leader gives the orders.", seen)
        if not 200 <= code < 300:
            raise ConnectorError(f"{connector} answered {code} to POST {path}: "
                                 f"{_error_detail(body)}", "refused")
        try:
            answer = loads(body)
        except BadJson:
            return None  # accepted; a body that is not the protocol's names no count
        count = answer.get("running_resources") if isinstance(answer, dict) else None
        return count if _is_count(count) else None

    async def order(self, connector: str, service: str, number: int, term,
                    token: str | None = None) -> int:
        """Send the leader's order; the count running afterwards.

        A connector that has seen a higher term (a stray header, a Consul reset, a newer
        leader) names it: the term is raised above it, only while this replica still
        holds the lock (`term.raise_above`), and the order sent once more. An answer
        without a count is followed by a status call.
        """
        try:
            count = await self.scale(connector, service, number, term.number, token)
        except StaleTerm as stale:
            if not await term.raise_above(stale.seen):
                raise
            log.info("%s had seen term %d: raised this leader's term to %d", connector,
                     stale.seen, term.number)
            count = await self.scale(connector, service, number, term.number, token)
        if count is None:
            count = await self.status(connector, service, token)
        return count

    async def _call(self, method, connector, path, body=None, headers=None, token=None
                    ) -> tuple[int, bytes]:
        url = connector.rstrip("/") + path
        if token:
            headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
        try:
            request = HTTPRequest(url, method=method, body=body, headers=headers,
                                  connect_timeout=self.timeout, request_timeout=self.timeout,
                                  ca_certs=self.ca_file)
            response = await self._http.fetch(request, raise_error=False)
        except HTTPClientError as exc:  # timeouts and refused connections are 599s
            raise ConnectorError(*_describe_failure(connector, exc)) from None
        except OSError as exc:
            raise ConnectorError(f"{connector} is unreachable: {exc.strerror or exc}.",
                                 "unreachable") from None
        except (ValueError, TypeError) as exc:  # curl refuses the URL (UnicodeEncodeError...)
            raise ConnectorError(f"{excerpt(connector, 80)} is not a usable connector URL: "
                                 f"{excerpt(str(exc), 80)}") from None
        return response.code, response.body or b""


def _expect(code: int, body: bytes, connector: str, call: str):
    """The decoded body of a 2xx JSON answer; ConnectorError for anything else."""
    if not 200 <= code < 300:
        raise ConnectorError(f"{connector} answered {code} to {call}: {_error_detail(body)}",
                             "refused")
    try:
        return loads(body)
    except BadJson:
        raise ConnectorError(f"{connector} answered invalid JSON to {call}.") from None


def _running_resources(answer, connector: str, call: str):
    if not isinstance(answer, dict) or "running_resources" not in answer:
        raise ConnectorError(f"{connector} answered {call} without running_resources.")
    return answer["running_resources"]


def _error_detail(body: bytes) -> str:
    """The error's own sentence from a JSON error body; else a short plain excerpt
    of whatever came (an HTML error page is reduced to its text)."""
    try:
        detail = loads(body)
    except BadJson:
        detail = None
    if isinstance(detail, dict) and isinstance(detail.get("error"), str):
        detail = detail["error"]
    elif detail is not None:
        detail = None
    return excerpt(detail if detail is not None else body) or "no details."


def _stale_term(body: bytes) -> int | None:
    """The term a 409 answer names as the highest seen (TERM_FIELD), if it names one."""
    try:
        answer = loads(body)
    except BadJson:
        return None
    seen = answer.get(TERM_FIELD) if isinstance(answer, dict) else None
    return seen if _is_count(seen) else None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _describe_failure(connector: str, exc: HTTPClientError) -> tuple[str, str]:
    """The sentence and the kind of a failed call."""
    message = excerpt(str(exc).removeprefix("HTTP 599: ").rstrip("."))
    if "Timeout" in message or "timed out" in message:
        return f"{connector} did not answer in time.", "timeout"
    return f"{connector} is unreachable: {message}.", "unreachable"
