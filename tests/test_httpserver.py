"""HTTP server limits (genisys/httpserver.py) on a real connector process and a real
replica with a low open file limit: too many connections, running out of descriptors,
slow clients."""

import os
import re
import resource
import select
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.proc import cpu_seconds
from tests.connector_helpers import call
from tests.support import ROOT, Replica, wait_until

pytestmark = pytest.mark.timeout(90)


def limit_open_files(soft: int, hard: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return preexec


class LimitedConnector:
    """bench.counting_connector with RLIMIT_NOFILE (soft, hard) and the options given."""

    def __init__(self, tmp_path: Path, *options: str, soft: int = 64, hard: int = 64):
        self.log_path = tmp_path / "connector.log"
        with open(self.log_path, "ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.counting_connector", "--port", "0", *options],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=limit_open_files(soft, hard))
        self.port = int(wait_until(lambda: re.search(r"listening on http://[^:]+:(\d+)",
                                                     self.log()), 15, "the connector")[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self):
        try:
            return call("GET", f"http://127.0.0.1:{self.port}/health", timeout=2)[0] == 200
        except OSError:
            return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(20)


def open_idle_connections(port: int, count: int, stack: ExitStack) -> list[socket.socket]:
    return [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            for _ in range(count)]


def closed_by_the_server(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and not sock.recv(1)


def cpu_until_the_timeout_closes_the_first(server, sockets) -> float:
    """CPU seconds the server used while the first connection, accepted, waited for the
    idle timeout to close it."""
    before = cpu_seconds(server.process.pid)
    wait_until(lambda: closed_by_the_server(sockets[0]), timeout=30,
               what="the idle timeout to close the first connection")
    return cpu_seconds(server.process.pid) - before


def test_connections_beyond_the_cap_are_closed_at_once_and_logged_rarely(tmp_path):
    with LimitedConnector(tmp_path, "--max-connections", "20", "--http-timeout", "2") as \
            connector:
        with ExitStack() as idle:
            sockets = open_idle_connections(connector.port, 200, idle)
            wait_until(lambda: "are open already" in connector.log(), what="the cap")
            assert not connector.health()  # 20 idle connections take every place
            assert cpu_until_the_timeout_closes_the_first(connector, sockets) < 1.0
        log = connector.log()
        refusals = re.findall(r"closed \d+ new connection\(s\): 20 are open already", log)
        assert 1 <= len(refusals) <= 3  # one line per 10 s at most
        assert "Too many open files" not in log and len(log) < 5000
        wait_until(connector.health, what="the connector to answer once they closed")


def test_running_out_of_file_descriptors_pauses_accepting_without_spinning(tmp_path):
    with LimitedConnector(tmp_path, "--max-connections", "1000", "--http-timeout", "2") as \
            connector:
        with ExitStack() as idle:
            sockets = open_idle_connections(connector.port, 200, idle)  # over 64 descriptors
            wait_until(lambda: "out of file descriptors" in connector.log(), what="EMFILE")
            assert cpu_until_the_timeout_closes_the_first(connector, sockets) < 1.0
        log = connector.log()
        assert 1 <= log.count("out of file descriptors: accepting paused") <= 3
        assert "Traceback" not in log and len(log) < 5000
        wait_until(connector.health, what="the connector to answer once they closed")


def _closed_by_server(sock: socket.socket, trickle: bytes = b"") -> bool:
    """Send `trickle` a byte at a time until the server closes the connection."""
    try:
        for byte in trickle:
            sock.sendall(bytes([byte]))
            time.sleep(0.2)  # the pace of a slow client, not a wait for a condition
        sock.settimeout(20)
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


@pytest.mark.parametrize("sent,trickle", [
    (b"", b""),  # connects and says nothing
    (b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 200),  # slowloris headers
    (b"POST /service HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
     b'"name": "web"' * 10),  # a slow body
], ids=["silent", "slow headers", "slow body"])
def test_a_slow_or_silent_client_is_disconnected_after_the_timeout(tmp_path, sent, trickle):
    with LimitedConnector(tmp_path, "--http-timeout", "1") as connector:
        with socket.create_connection(("127.0.0.1", connector.port), timeout=5) as sock:
            sock.sendall(sent)
            assert _closed_by_server(sock, trickle)
        assert connector.health()


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(tmp_path):
    with LimitedConnector(tmp_path, soft=64, hard=2048) as connector:
        limits = Path(f"/proc/{connector.process.pid}/limits").read_text()
        assert re.search(r"Max open files\s+2048\s+2048", limits), limits
        assert "raised the open file limit from 64 to 2048" in connector.log()


class LimitedReplica(Replica):
    """A replica whose open file limit is 64 (soft and hard)."""

    def start(self, wait: bool = True) -> "Replica":
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "--config", str(self.config_path)],
            cwd=self.dir, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=limit_open_files(64, 64))
        wait_until(self.serving, timeout=15, what=f"replica on port {self.port}")
        return self


def test_a_replica_with_64_file_descriptors_survives_200_idle_connections(consul, prefix):
    replica = LimitedReplica(consul.address, prefix, {"genisys": {"http_timeout": "2s"}})
    try:
        replica.start()
        with ExitStack() as idle:
            sockets = open_idle_connections(replica.port, 200, idle)
            wait_until(lambda: "32 are open already" in replica.log(), what="the cap (64 / 2)")
            assert cpu_until_the_timeout_closes_the_first(replica, sockets) < 1.0
        log = replica.log()
        assert "Too many open files" not in log and "Traceback" not in log and len(log) < 20000
        wait_until(lambda: replica.request("GET", "/health").status_code == 200,
                   what="the replica to answer once they closed")
    finally:
        replica.stop()
