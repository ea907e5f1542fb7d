"""Shared by the connector tests: real connector processes, real HTTP, /proc scans."""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from tests.support import ROOT, wait_until

DEMO_COMMAND = [sys.executable, str(ROOT / "examples" / "demo_service.py")]


def unique(prefix: str) -> str:
    """A service name no other test (or concurrent run) uses, so /proc scans stay exact."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def call(method: str, url: str, body=None, headers=None, raw: bytes | None = None,
         timeout: float = 30) -> tuple[int, dict | None]:
    """One real HTTP request: (status, decoded JSON body or None)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        connection.request(method, parts.path or "/", body=data, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None
    finally:
        connection.close()


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def processes_of(service: str) -> dict[int, dict[str, str]]:
    """Live processes whose environment says GENISYS_SERVICE=service (children included)."""
    marker = f"GENISYS_SERVICE={service}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if marker in variables:  # a zombie's environ is empty: only live ones match
            found[int(entry.name)] = dict(v.decode(errors="replace").split("=", 1)
                                          for v in variables if b"=" in v)
    return found


class ConnectorProcess:
    """`python -m <module> --port 0 ...` in the repository, its output in a log file."""

    def __init__(self, module: str, *args: str, log_path: Path, start_timeout: float = 15):
        self.log_path = log_path
        self.output = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--bind", "127.0.0.1", "--port", "0", *args],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.output, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.port = wait_until(self._listening_port, start_timeout, f"{module} to listen")
        self.url = f"http://127.0.0.1:{self.port}"

    def _listening_port(self):
        match = re.search(r"listening on https?://[^:]+:(\d+)", self.log())
        if match:
            return int(match.group(1))
        if self.process.poll() is not None:
            raise AssertionError(f"the connector exited with {self.process.returncode}:\n"
                                 f"{self.log()}")
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, method: str, path: str, body=None, **kwargs):
        return call(method, self.url + path, body, **kwargs)

    def running(self, service: str) -> int:
        """The connector's own count of a service's running instances."""
        return self.call("GET", f"/service/{service}/status")[1]["running_resources"]

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.output.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
