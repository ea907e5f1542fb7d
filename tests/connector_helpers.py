"""Connectors for tests and benchmarks: real connector processes (any module, the
counting connector of bench/ with its order log), real HTTP, /proc scans."""

import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

from tests.support import ROOT, ChildProcess, http_request, wait_until

DEMO_COMMAND = [sys.executable, str(ROOT / "examples" / "demo_service.py")]


def unique(prefix: str) -> str:
    """A service name no other test (or concurrent run) uses, so /proc scans stay exact."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def call(method: str, url: str, body=None, headers=None, raw: bytes | None = None,
         timeout: float = 30) -> tuple[int, dict | None]:
    """One real HTTP request: (status, decoded JSON body or None)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    status, payload = http_request(method, url, data, headers, timeout)
    return status, json.loads(payload) if payload else None


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


class ConnectorProcess(ChildProcess):
    """`python -m <module> --port 0 ...` in the repository, its output in a log file."""

    def __init__(self, module: str, *args: str, log_path: Path, start_timeout: float = 15):
        super().__init__(module, [sys.executable, "-m", module, "--bind", "127.0.0.1",
                                  "--port", "0", *args],
                         log_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.start()
        self.port = wait_until(self._listening_port, start_timeout, f"{module} to listen")
        self.url = f"http://127.0.0.1:{self.port}"

    def _listening_port(self):
        match = re.search(r"listening on https?://[^:]+:(\d+)", self.log())
        if match:
            return int(match.group(1))
        self.check()
        return None

    def call(self, method: str, path: str, body=None, **kwargs):
        return call(method, self.url + path, body, **kwargs)

    def running(self, service: str) -> int:
        """The connector's own count of a service's running instances."""
        return self.call("GET", f"/service/{service}/status")[1]["running_resources"]

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        return super().stop(sig, timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class CountingConnector(ConnectorProcess):
    """bench/counting_connector.py: any service, no backend. Its --order-log, read as it
    grows, tells when each scale order reached it (`arrival`) and when its backend was
    done with it (`completion`)."""

    def __init__(self, *args: str, log_path: Path):
        self._orders_path = log_path.with_suffix(".orders")
        self._orders_path.write_text("")
        super().__init__("bench.counting_connector", "--order-log", str(self._orders_path),
                         *args, log_path=log_path)
        self._orders = open(self._orders_path)
        self._partial = ""
        # The first time.time() of each order (service, number): arrived, carried out.
        self.arrivals: dict[tuple[str, int], float] = {}
        self.completions: dict[tuple[str, int], float] = {}

    def _read_orders(self) -> None:
        text = self._partial + self._orders.read()
        *lines, self._partial = text.split("\n")
        for line in lines:
            stamp, service, number, *done = line.split()
            seen = self.completions if done else self.arrivals
            seen.setdefault((service, int(number)), float(stamp))

    def _wait_for(self, seen: dict, service: str, number: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while True:
            self._read_orders()
            if (service, number) in seen:
                return seen[service, number]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.002)  # the connector stamps the times: polling adds no error

    def arrival(self, service: str, number: int, timeout: float = 10.0) -> float | None:
        """When the order `service` to `number` arrived; None if not within `timeout`."""
        return self._wait_for(self.arrivals, service, number, timeout)

    def completion(self, service: str, number: int, timeout: float = 10.0) -> float | None:
        """When the backend was done with that order; None if not within `timeout`."""
        return self._wait_for(self.completions, service, number, timeout)

    def counts(self) -> dict[str, int]:
        """Every service's count, in one GET /status."""
        return self.call("GET", "/status")[1]["running_resources"]

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        self._orders.close()
        return super().stop(sig, timeout)
