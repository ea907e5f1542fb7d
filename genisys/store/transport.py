"""The Tornado transport under py-consul, and Consul's refusals as the store's own errors.

py-consul's API classes run over Tornado's curl client (genisys.httpclient), so every
Consul call runs on the same event loop as the API. Every refusal is turned here, in one
place, into ConsulUnavailable (no answer, or a server error), PermissionDenied (the ACLs;
the sentence names the rule the token lacks) or ConsulError (any other refusal):
py-consul's exceptions never leave the package.
"""

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator

import consul.base
from consul.exceptions import ConsulException
from tornado.httpclient import HTTPClientError, HTTPRequest

from genisys.httpclient import close_client, curl_client
from genisys.metrics import ReplicaMetrics, consul_op
from genisys.store.values import Entry, _kv

SERVICE_NAME = "genisys"  # the catalog service every replica registers as

_READ_VERBS = ("get", "get-tree", "check-index", "check-session", "check-not-exists")
_WRITE_VERBS = ("set", "cas")
_DELETE_VERBS = ("delete", "delete-cas")


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


async def transact(consul: "_Consul", ops: list[dict]) -> tuple[dict[str, Entry], set[str]] | None:
    """Run a Consul transaction: the entries its set and cas operations wrote and the keys
    it deleted, or None when it was rolled back (a check failed)."""
    written_keys = {op["KV"]["Key"] for op in ops if op["KV"]["Verb"] in _WRITE_VERBS}
    values = {op["KV"]["Key"]: base64.b64decode(op["KV"]["Value"]) for op in ops
              if op["KV"]["Verb"] in _WRITE_VERBS}
    deleted = {op["KV"]["Key"] for op in ops if op["KV"]["Verb"] in _DELETE_VERBS}

    def outcome(response):
        if response.code == 409:
            _raise_if_denied(ops, response.body, consul.http.key_prefixes)
            return None
        if response.code != 200:
            raise ConsulError(f"transaction refused ({response.code}): {response.body[:200]}")
        results = [r["KV"] for r in json.loads(response.body).get("Results") or ()
                   if r.get("KV") and r["KV"]["Key"] in written_keys]
        return {r["Key"]: Entry(r["Key"], values[r["Key"]], r["CreateIndex"], r["ModifyIndex"])
                for r in results}, deleted

    return await consul.http.put(outcome, "/v1/txn", data=json.dumps(ops),
                                 headers=consul.prepare_headers())


async def read_keys(consul: "_Consul", keys: list[str], present: set[str]) -> dict[str, Entry]:
    """Read up to 64 `keys` in one transaction (as of one moment): the entries of those
    that exist. `present` guesses which exist: those are read with `get`, which fails the
    transaction when the key is missing (it is then read again the other way); the others
    with `get-tree` of the key itself, which never fails but also returns the keys that
    extend it (`web` brings `web-2`: skipped). `check-not-exists` would need write
    permission."""
    wanted = set(keys)
    guess = {key for key in keys if key in present}
    for _ in range(len(keys) + 1):  # each refusal turns a failed `get` into a `get-tree`
        ops = [_kv("get" if key in guess else "get-tree", key) for key in keys]
        answer = await consul.http.put(
            lambda response, ops=ops: _read_outcome(ops, response, consul.http.key_prefixes),
            "/v1/txn", data=json.dumps(ops), headers=consul.prepare_headers())
        if isinstance(answer, set):
            if not answer & guess:
                break
            guess -= answer
            continue
        return {key: entry for key, entry in answer.items() if key in wanted}
    raise ConsulError(f"Consul refused a read of {keys[0]} and others")


def _read_outcome(ops: list[dict], response, key_prefixes) -> dict[str, Entry] | set[str]:
    """The entries read, or the keys a `get` found missing."""
    if response.code == 409:
        _raise_if_denied(ops, response.body, key_prefixes)
        missing = set()
        for error in json.loads(response.body).get("Errors") or ():
            what = str(error.get("What"))
            if not what.endswith("doesn't exist"):
                raise ConsulError(f"Consul refused a read of {ops[0]['KV']['Key']}: {what[:200]}")
            missing.add(ops[error["OpIndex"]]["KV"]["Key"])
        return missing
    if response.code != 200:
        raise ConsulError(f"transaction refused ({response.code}): {response.body[:200]}")
    return {r["KV"]["Key"]: Entry(r["KV"]["Key"], base64.b64decode(r["KV"].get("Value") or ""),
                                  r["KV"]["CreateIndex"], r["KV"]["ModifyIndex"])
            for r in json.loads(response.body).get("Results") or () if r.get("KV")}


async def read_prefix(consul: "_Consul", prefix: str) -> tuple[int, AsyncIterator[dict]]:
    """Every key under `prefix` as Consul's JSON gives them (values still base64: decode
    only those you use), parsed a slice at a time, with Consul's index."""
    index, body = await read_prefix_text(consul, prefix)
    return index, aiter(SlicedItems(body))


async def read_prefix_text(consul: "_Consul", prefix: str, index: int = 0,
                           wait: float | None = None) -> tuple[int, str]:
    """read_prefix's answer before it is parsed ("" for no key): for a caller that
    measures what parsing costs."""
    params = [("recurse", "1")]
    if index and wait:
        params += [("index", str(index)), ("wait", f"{wait:g}s")]

    def outcome(response):
        if response.code not in (200, 404):
            raise ConsulError(f"Consul refused a read of {prefix}: {response.body[:200]}")
        return (int(response.headers.get("X-Consul-Index", 0)),
                response.body if response.code == 200 else "")

    return await consul.http.get(outcome, f"/v1/kv/{prefix}", params=params,
                                 headers=consul.prepare_headers())


class SlicedItems:
    """Consul's JSON list of KV items, parsed a slice at a time with the event loop free
    between slices: a 100,000-key answer (18 MB) takes ~0.3 s to parse, and requests must
    not wait that long. `busy`: the seconds spent parsing so far."""

    SLICE = 1000
    _SEPARATORS = re.compile(r"[\s,]*")

    def __init__(self, body: str):
        self._body = body
        self.busy = 0.0

    async def __aiter__(self) -> AsyncIterator[dict]:
        body, decoder = self._body, json.JSONDecoder()
        position = body.find("[") + 1
        if not position:
            return
        while True:
            started = time.monotonic()
            items = []
            while len(items) < self.SLICE:
                position = self._SEPARATORS.match(body, position).end()
                if body[position] == "]":
                    break
                item, position = decoder.raw_decode(body, position)
                items.append(item)
            self.busy += time.monotonic() - started
            for item in items:
                yield item
            if len(items) < self.SLICE:
                return
            await asyncio.sleep(0)
