"""ConnectorClient: the connector protocol over HTTP, async, with timeouts.

    GET  {connector}/status                 -> {"running_resources": {svc: n}}  (optional)
    GET  {connector}/service/{svc}/status   -> {"running_resources": n}
    POST {connector}/service/{svc}/scale {"number": n}

Connections are kept alive (genisys.httpclient): one cycle makes thousands of calls
to a handful of connectors.
"""

import json

from tornado.httpclient import HTTPClientError, HTTPRequest

from genisys.httpclient import close_client, curl_client

TERM_HEADER = "X-Genisys-Term"


class ConnectorError(Exception):
    """The connector failed, timed out, or answered something that breaks the protocol."""


class ConnectorClient:
    def __init__(self, timeout: float = 5.0, max_connections: int = 256):
        self.timeout = timeout
        self._http = curl_client(max_connections)

    def close(self) -> None:
        close_client(self._http)

    async def bulk_status(self, connector: str) -> dict[str, int] | None:
        """Every service's count in one call; None when the connector lacks the extension."""
        code, body = await self._call("GET", f"{connector}/status")
        if code in (404, 405, 501):
            return None
        counts = self._expect(code, body, connector, "GET /status")
        if not isinstance(counts, dict) or not all(
                isinstance(k, str) and _is_count(v) for k, v in counts.items()):
            raise ConnectorError(f"{connector}/status did not answer a map of service counts.")
        return counts

    async def status(self, connector: str, service: str) -> int:
        """Running resources of one service; 0 when the connector does not define it."""
        code, body = await self._call("GET", f"{connector}/service/{service}/status")
        if code in (404, 501):
            return 0
        count = self._expect(code, body, connector, f"GET /service/{service}/status")
        if not _is_count(count):
            raise ConnectorError(f"{connector} answered a running_resources that is not a "
                                 f"count for {service}: {count!r:.60}.")
        return count

    async def scale(self, connector: str, service: str, number: int, term: int | None) -> int:
        headers = {"Content-Type": "application/json"}
        if term is not None:
            headers[TERM_HEADER] = str(term)
        code, body = await self._call("POST", f"{connector}/service/{service}/scale",
                                      json.dumps({"number": number}), headers)
        if code == 404:
            raise ConnectorError(f"service {service} is not defined on {connector}.")
        count = self._expect(code, body, connector, f"POST /service/{service}/scale")
        return count if _is_count(count) else number

    async def _call(self, method, url, body=None, headers=None) -> tuple[int, bytes]:
        request = HTTPRequest(url, method=method, body=body, headers=headers,
                              connect_timeout=self.timeout, request_timeout=self.timeout)
        try:
            response = await self._http.fetch(request, raise_error=False)
        except HTTPClientError as exc:  # timeouts and refused connections are 599s
            raise ConnectorError(_describe_failure(url, exc)) from None
        except OSError as exc:
            raise ConnectorError(f"{url} is unreachable: {exc.strerror or exc}.") from None
        return response.code, response.body or b""

    @staticmethod
    def _expect(code: int, body: bytes, connector: str, call: str):
        """The running_resources of a 2xx JSON answer; ConnectorError for anything else."""
        if not 200 <= code < 300:
            try:
                detail = json.loads(body).get("error")
            except (ValueError, AttributeError):
                detail = None
            detail = detail or body.decode(errors="replace").strip()[:120] or "no details"
            raise ConnectorError(f"{connector} answered {code} to {call}: {detail}")
        try:
            answer = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise ConnectorError(f"{connector} answered invalid JSON to {call}.") from None
        if not isinstance(answer, dict) or "running_resources" not in answer:
            raise ConnectorError(f"{connector} answered {call} without running_resources.")
        return answer["running_resources"]


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _describe_failure(url: str, exc: HTTPClientError) -> str:
    message = str(exc).removeprefix("HTTP 599: ").rstrip(".")
    if "Timeout" in message or "timed out" in message:
        return f"{url} did not answer in time."
    return f"{url} is unreachable: {message}."
