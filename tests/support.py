"""The harness of tests and benchmarks: a Consul agent (DESIGN section 10), Genisys
replicas as processes, "who leads", waiting, one HTTP request, percentiles.

One implementation of each, shared by tests/, integration/ and bench/; the connector
processes are in tests/connector_helpers.py."""

import base64
import http.client
import json
import math
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import requests
import yaml

from genisys.devconsul import INSTALL_HINT, DevConsul, find_consul_binary, free_port

ROOT = Path(__file__).resolve().parent.parent


class TimedOut(AssertionError):
    """wait_until gave up: a test fails with it, a benchmark prints it and goes on."""

    def __init__(self, timeout: float, what: str):
        super().__init__(f"timed out after {timeout}s waiting for {what}")
        self.timeout, self.what = timeout, what


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.05):
    """Poll `predicate` until it returns a truthy value; TimedOut after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimedOut(timeout, what)
        time.sleep(interval)


def percentile(values, share: float) -> float:
    """Nearest-rank percentile: the smallest value that `share` of the values do not
    exceed (p99 of 200 values is the 198th smallest); nan without values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def http_request(method: str, url: str, body: bytes | None = None, headers=None,
                 timeout: float = 30, ca_file: str | None = None) -> tuple[int, bytes]:
    """One real HTTP(S) request on a fresh connection: (status, body); https is verified
    with `ca_file`."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout,
            context=ssl.create_default_context(cafile=ca_file))
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def stop_process(process: subprocess.Popen, sig=signal.SIGTERM, grace: float = 15.0) -> bool:
    """Send `sig`; SIGKILL after `grace` seconds. True when it exited by itself in time."""
    if process.poll() is not None:
        return True
    process.send_signal(sig)
    try:
        process.wait(grace)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False


class ChildProcess:
    """A command in its own process, named `name` in errors, its output in a log file;
    start() launches it."""

    def __init__(self, name: str, command: list[str], log_path: Path, cwd: Path = ROOT,
                 env: dict | None = None, cpus: set[int] | None = None):
        self.name = name
        self.command = command
        self.log_path = log_path
        self.cwd, self.env, self.cpus = cwd, env, cpus
        self.process: subprocess.Popen | None = None

    def start(self) -> "ChildProcess":
        self._log = open(self.log_path, "ab")
        cpus = self.cpus
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check(self) -> None:
        """Raise, with its log, when the process has exited."""
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n"
                                 f"{self.log()[-5000:]}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> int | None:
        """Stop it with `sig`, SIGKILL after `timeout` (and then raise); its exit code."""
        if self.process is None:
            return None
        try:
            if not stop_process(self.process, sig, timeout):
                raise AssertionError(f"{self.name} did not stop within {timeout}s:\n"
                                     f"{self.log()[-5000:]}")
        finally:
            self._log.close()
        return self.process.returncode


class ConsulAgent:
    """A real Consul agent: the one CONSUL_HTTP_ADDR names, or a dev agent we start
    (`own=True`: always a dev agent of our own, as the benchmarks want)."""

    TXN_OPS = 64  # Consul's limit of operations per transaction

    def __init__(self, own: bool = False):
        self._dev = None
        address = None if own else os.environ.get("CONSUL_HTTP_ADDR")
        if address:
            self.address = address.split("//")[-1]
        else:
            if find_consul_binary() is None:
                raise RuntimeError(INSTALL_HINT)
            self._dev = DevConsul().start()
            self.address = self._dev.address
        self.host, port = self.address.rsplit(":", 1)
        self.port = int(port)
        self.url = f"http://{self.address}"
        self._session = requests.Session()

    @property
    def pid(self) -> int | None:
        """The agent's process when we started it (for CPU figures), else None."""
        return self._dev.process.pid if self._dev else None

    def stop(self):
        self._session.close()
        if self._dev:
            self._dev.stop()

    def kv_get(self, key):
        response = requests.get(f"{self.url}/v1/kv/{key}?raw", timeout=5)
        return None if response.status_code == 404 else response.content

    def kv_put(self, key, value):
        assert requests.put(f"{self.url}/v1/kv/{key}", data=value, timeout=5).json() is True

    def kv_keys(self, prefix):
        response = requests.get(f"{self.url}/v1/kv/{prefix}?keys", timeout=10)
        return [] if response.status_code == 404 else response.json()

    def kv_values(self, prefix) -> dict[str, bytes]:
        """Every key under `prefix` with its value, in one read."""
        response = self._session.get(f"{self.url}/v1/kv/{prefix}?recurse", timeout=30)
        if response.status_code == 404:
            return {}
        return {item["Key"]: base64.b64decode(item["Value"] or "") for item in response.json()}

    def kv_put_many(self, values: dict[str, bytes | str]) -> None:
        """Write many keys straight into the KV store, TXN_OPS per transaction."""
        items = list(values.items())
        for start in range(0, len(items), self.TXN_OPS):
            ops = [{"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(
                value.encode() if isinstance(value, str) else value).decode()}}
                   for key, value in items[start:start + self.TXN_OPS]]
            response = self._session.put(f"{self.url}/v1/txn", json=ops, timeout=30)
            if response.status_code != 200:
                raise AssertionError(f"Consul refused a transaction: {response.status_code} "
                                     f"{response.text[:300]}")


def unique_prefix() -> str:
    """Key prefixes of one test, so one agent serves a whole run."""
    return f"test-{uuid.uuid4().hex[:10]}/"


class Replica(ChildProcess):
    """A Genisys replica: `python main.py` in its own process, on a free port; `cpus`
    pins it to those CPUs (benchmarks)."""

    def __init__(self, consul_address: str, prefix: str, settings: dict | None = None,
                 compute_file: str | None = None, env: dict | None = None,
                 ca_file: str | None = None, args=(), cpus: set[int] | None = None):
        self.port = free_port()
        # With ca_file the replica serves HTTPS (its settings name the certificate):
        # every request verifies it with that CA.
        self.ca_file = ca_file
        self.verify = ca_file or True
        self.url = f"{'https' if ca_file else 'http'}://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="genisys-replica-"))
        host, port = consul_address.rsplit(":", 1)
        config = {
            "genisys": {"bind": "127.0.0.1", "port": self.port,
                        "compute_file": compute_file or ""},
            "consul": {"host": host, "port": int(port), "key_prefix": prefix,
                       "resources_key_prefix": f"{prefix}resources/", "timeout": "2s"},
        }
        for section, values in (settings or {}).items():
            config.setdefault(section, {}).update(values)
        self.config_path = self.dir / "genisys.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.args = list(args)  # more command-line options, like --insecure
        replica_env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
        replica_env.update(env or {})
        super().__init__(f"the replica on port {self.port}",
                         [sys.executable, str(ROOT / "main.py"), "--config",
                          str(self.config_path), *self.args],
                         self.dir / "replica.log", cwd=self.dir, env=replica_env, cpus=cpus)

    def start(self, wait: bool = True) -> "Replica":
        super().start()
        if wait:
            wait_until(self.serving, timeout=15, what=f"replica on port {self.port}")
        return self

    def serving(self) -> bool:
        self.check()
        try:
            requests.get(f"{self.url}/health", timeout=1, verify=self.verify)
            return True
        except requests.ConnectionError:
            return False

    def request(self, method: str, path: str, body=None, **kwargs) -> requests.Response:
        if body is not None and not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        return requests.request(method, self.url + path, data=body, timeout=10,
                                verify=self.verify, **kwargs)

    def health(self) -> dict:
        """GET /health, or {} while the replica does not answer it."""
        try:
            return requests.get(f"{self.url}/health", timeout=2, verify=self.verify).json()
        except (requests.RequestException, ValueError):
            return {}

    def leads(self) -> bool:
        return self.health().get("leader") is True


def leader_among(replicas: list[Replica]) -> Replica | None:
    """The one replica that says it leads; None when none or several do."""
    leading = [r for r in replicas if r.process and r.process.poll() is None and r.leads()]
    return leading[0] if len(leading) == 1 else None


def the_leader(replicas: list[Replica], timeout: float = 30.0, interval: float = 0.05) -> Replica:
    """Wait until exactly one of `replicas` leads; that one."""
    return wait_until(lambda: leader_among(replicas), timeout=timeout, interval=interval,
                      what="exactly one leader")
