"""Real parts for tests: a Consul agent (DESIGN section 10) and Genisys replicas as processes."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
import yaml

from genisys.devconsul import INSTALL_HINT, DevConsul, find_consul_binary, free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.05):
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class ConsulAgent:
    """A real Consul agent: the one CONSUL_HTTP_ADDR names, or a dev agent we start."""

    def __init__(self):
        self._dev = None
        address = os.environ.get("CONSUL_HTTP_ADDR")
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

    def stop(self):
        if self._dev:
            self._dev.stop()

    def kv_get(self, key):
        response = requests.get(f"{self.url}/v1/kv/{key}?raw", timeout=5)
        return None if response.status_code == 404 else response.content

    def kv_put(self, key, value):
        assert requests.put(f"{self.url}/v1/kv/{key}", data=value, timeout=5).json() is True

    def kv_keys(self, prefix):
        response = requests.get(f"{self.url}/v1/kv/{prefix}?keys", timeout=5)
        return [] if response.status_code == 404 else response.json()


def unique_prefix() -> str:
    """Key prefixes of one test, so one agent serves a whole run."""
    return f"test-{uuid.uuid4().hex[:10]}/"


class Replica:
    """A Genisys replica: `python main.py` in its own process, on a free port."""

    def __init__(self, consul_address: str, prefix: str, settings: dict | None = None,
                 compute_file: str | None = None, env: dict | None = None,
                 ca_file: str | None = None, args=()):
        self.port = free_port()
        # With ca_file the replica serves HTTPS (its settings name the certificate):
        # every request verifies it with that CA.
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
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
        self.env.update(env or {})
        self.args = list(args)  # more command-line options, like --insecure
        self.log_path = self.dir / "replica.log"
        self.process = None

    def start(self, wait: bool = True) -> "Replica":
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "--config", str(self.config_path),
             *self.args],
            cwd=self.dir, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            wait_until(self.serving, timeout=15, what=f"replica on port {self.port}")
        return self

    def serving(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"replica exited with {self.process.returncode}:\n{self.log()}")
        try:
            requests.get(f"{self.url}/health", timeout=1, verify=self.verify)
            return True
        except requests.ConnectionError:
            return False

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"replica did not stop within {timeout}s:\n{self.log()}")
        self._log.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body=None, **kwargs) -> requests.Response:
        if body is not None and not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        return requests.request(method, self.url + path, data=body, timeout=10,
                                verify=self.verify, **kwargs)
