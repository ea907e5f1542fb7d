"""The Tornado transport under py-consul, and Consul's refusals as the store's own errors.

py-consul's API classes run over Tornado's curl client (genisys.httpclient), so every
Consul call runs on the same event loop as the API. Every refusal is turned here, in one
place, into ConsulUnavailable (no answer, or a server error), PermissionDenied (the ACLs;
the sentence names the rule the token lacks) or ConsulError (any other refusal):
py-consul's exceptions never leave the package.
"""

import json
import time

import consul.base
from consul.exceptions import ConsulException
from tornado.httpclient import HTTPClientError, HTTPRequest

from genisys.httpclient import close_client, curl_client
from genisys.metrics import ReplicaMetrics, consul_op

SERVICE_NAME = "genisys"  # the catalog service every replica registers as

_READ_VERBS = ("get", "get-tree", "check-index", "check-session", "check-not-exists")


class ConsulUnavailable(Exception):
    """Consul did not answer, or answered with a server error."""


class ConsulError(Exception):
    """Consul refused the request (other than for being unavailable)."""


class PermissionDenied(ConsulError):
    """Consul's ACLs refused the request: the message names the rule the token lacks.

    A ConsulError, so that whatever survives Consul's refusals survives this one."""


UNKNOWN_TOKEN = ("Consul does not know the configured ACL token: check consul.token or "
                 "CONSUL_HTTP_TOKEN.")


def denied_key(key: str, access: str, key_prefixes=()) -> str:
    """The sentence for a denied `access` ("read" or "write") of `key`, naming the rule
    the README's minimal policy grants for it: its configured prefix's."""
    prefix = max((p for p in key_prefixes if key.startswith(p)), key=len, default=None)
    rule = f'key_prefix "{prefix}"' if prefix else f'key "{key[:200]}"'
    return f"Consul denied key {access} on {key[:200]}: the token needs {rule} {access}."


class _TornadoHTTPClient(consul.base.HTTPClient):
    """py-consul's transport, on Tornado's curl client (genisys.httpclient)."""

    def __init__(self, *args, timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._client = curl_client(max_connections=100)
        self.metrics: ReplicaMetrics | None = None  # ConsulStore sets it
        self.key_prefixes: tuple[str, ...] = ()  # the rules a denial names (ConsulStore sets them)

    async def _request(self, callback, method, path, params, data=None, headers=None):
        response = await self._fetch(method, path, params, data, headers)
        if response.code == 403:
            raise PermissionDenied(UNKNOWN_TOKEN if b"ACL not found" in response.body
                                   else self._denial(method, path))
        if response.code == 404 and method == "GET" and path.startswith("/v1/kv/") \
                and "recurse" in dict(params or ()):
            # Consul answers a recursive read it filtered out entirely with a 404, as for an
            # empty prefix; a read of the prefix itself tells the two apart (403 if denied).
            single = await self._fetch("GET", path, None, None, headers)
            if single.code == 403:
                raise PermissionDenied(UNKNOWN_TOKEN if b"ACL not found" in single.body
                                       else self._denial(method, path))
        body = response.body.decode("utf-8", errors="replace") if response.body else ""
        try:
            return callback(consul.base.Response(response.code, response.headers, body))
        except ConsulException as exc:  # py-consul's refusals never leave the package
            raise ConsulError(str(exc)) from None

    async def _fetch(self, method, path, params, data, headers):
        request_timeout = self.timeout
        wait = dict(params or ()).get("wait")
        if wait:  # a blocking query: Consul may hold it for wait + wait/16
            request_timeout += float(wait.rstrip("s")) * 17 / 16
        request = HTTPRequest(
            self.uri(path, params), method=method, headers=headers,
            body=None if method == "GET" else (data or ""),
            allow_nonstandard_methods=True, connect_timeout=self.timeout,
            request_timeout=request_timeout, validate_cert=bool(self.verify),
            # py-consul's verify: True, False or a CA file; cert: (cert file, key file)
            ca_certs=self.verify if isinstance(self.verify, str) else None,
            client_cert=self.cert[0] if self.cert else None,
            client_key=self.cert[1] if self.cert else None)
        started = time.monotonic()
        try:
            response = await self._client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:  # refused, reset, or timed out (599)
            reason = str(exc).removeprefix("HTTP 599: ")
            raise ConsulUnavailable(f"Consul at {self.base_uri} is unreachable: {reason}") from None
        finally:
            if self.metrics:
                self.metrics.consul(consul_op(method, path, params), time.monotonic() - started)
        if response.code >= 500:
            raise ConsulUnavailable(f"Consul at {self.base_uri} answered {response.code}: "
                                    f"{response.body.decode(errors='replace').strip()[:200]}")
        return response

    def _denial(self, method: str, path: str) -> str:
        """The sentence for a request Consul's ACLs refused."""
        if path.startswith("/v1/kv/"):
            return denied_key(path[len("/v1/kv/"):], "read" if method == "GET" else "write",
                              self.key_prefixes)
        if path.startswith("/v1/session/"):
            return ("Consul denied session write on this agent's node: the token needs "
                    'session_prefix "" write.')
        if path.startswith(("/v1/agent/service/", "/v1/agent/check/",
                            "/v1/agent/connect/authorize")):
            return (f"Consul denied service write on {SERVICE_NAME}: the token needs "
                    f'service "{SERVICE_NAME}" write.')
        return f"Consul denied {method} {path[:200]}: the token lacks the permission."

    def get(self, callback, path, params=None, headers=None, raw=False):
        return self._request(callback, "GET", path, params, headers=headers)

    def put(self, callback, path, params=None, data="", headers=None):
        return self._request(callback, "PUT", path, params, data, headers)

    def delete(self, callback, path, params=None, data="", headers=None):
        return self._request(callback, "DELETE", path, params, headers=headers)

    def post(self, callback, path, params=None, data="", headers=None):
        return self._request(callback, "POST", path, params, data, headers)

    def close(self):
        close_client(self._client)


class _Consul(consul.base.Consul):
    def __init__(self, *args, timeout: float, **kwargs):
        self._timeout = timeout
        super().__init__(*args, **kwargs)

    def http_connect(self, host, port, scheme, verify=True, cert=None):
        return _TornadoHTTPClient(host, port, scheme, verify, cert, timeout=self._timeout)


def _raise_if_denied(ops: list[dict], body: str, key_prefixes) -> None:
    """A transaction Consul's ACLs refused answers 409 like a failed check-and-set: raise
    PermissionDenied for its first refused operation."""
    denied = _denials(ops, body, key_prefixes)
    if denied:
        raise PermissionDenied(denied[0])


def _denials(ops: list[dict], body: str, key_prefixes) -> list[str]:
    """A transaction's answer says "Permission denied" for each operation the ACLs refuse."""
    try:
        errors = json.loads(body or "{}").get("Errors") or ()
    except (ValueError, AttributeError):
        return []
    denied = []
    for error in errors:
        if not isinstance(error, dict) or "Permission denied" not in str(error.get("What")):
            continue
        at = error.get("OpIndex")
        if isinstance(at, int) and 0 <= at < len(ops):
            op = ops[at]["KV"]
            access = "read" if op["Verb"] in _READ_VERBS else "write"
            denied.append(denied_key(op["Key"], access, key_prefixes))
    return denied
