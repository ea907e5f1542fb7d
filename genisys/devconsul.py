"""Find a Consul binary and run a throw-away `consul agent -dev` (for --dev, tests, benches).

Dev agents keep everything in memory and bind only to 127.0.0.1. All their ports are
chosen free, so several can run side by side and none collides with a real agent.
"""

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = ("no consul binary found: run scripts/install-consul.sh (installs .tools/bin/consul), "
                "put consul on PATH, set GENISYS_CONSUL_BIN, or point CONSUL_HTTP_ADDR at an agent")


def find_consul_binary() -> str | None:
    """GENISYS_CONSUL_BIN, then PATH, then the project's .tools/bin/consul."""
    candidates = [os.environ.get("GENISYS_CONSUL_BIN"), shutil.which("consul"),
                  str(ROOT / ".tools" / "bin" / "consul")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int, exclude: set[int]) -> list[int]:
    """`count` distinct free ports, none in `exclude` (held open until all are chosen)."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in exclude:
                ports.append(port)
        return ports
    finally:
        for sock in sockets:
            sock.close()


def consul_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Consul agent with an elected leader answers at host:port."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v1/status/leader", timeout=timeout) as r:
            return r.status == 200 and r.read().strip() not in (b"", b'""')
    except OSError:
        return False


@dataclass(frozen=True)
class TLSFiles:
    """A CA and a certificate it signed, with its key (PEM files)."""
    ca_file: str
    cert_file: str
    key_file: str


def make_certificates(directory: str, binary: str | None = None) -> dict[str, TLSFiles]:
    """A fresh CA in `directory` and, signed by it, a "server" and a "client" certificate
    for localhost and 127.0.0.1, made by `consul tls` (Consul 1.8 and later)."""
    binary = binary or find_consul_binary()
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    for command in (["ca", "create"], ["cert", "create", "-server"],
                    ["cert", "create", "-client"]):
        subprocess.run([binary, "tls", *command], cwd=directory, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ca = str(Path(directory) / "consul-agent-ca.pem")
    return {kind: TLSFiles(ca, str(Path(directory) / f"dc1-{kind}-consul-0.pem"),
                           str(Path(directory) / f"dc1-{kind}-consul-0-key.pem"))
            for kind in ("server", "client")}


class DevConsul:
    """A `consul agent -dev` child process; use start(), then stop().

    With `data_dir`, a single-server agent that keeps its data on disk instead, so a
    test can stop and restart Consul without losing the state. With `acl_master_token`,
    ACLs are enabled with default policy deny; that token may do everything (the agent
    uses it for its own registration too). With `tls` (a TLSFiles), it also serves HTTPS
    on `https_port` and requires a client certificate signed by the CA there
    (verify_incoming); its plain HTTP port stays open on 127.0.0.1 for start() and tests.
    """

    def __init__(self, http_port: int | None = None, binary: str | None = None,
                 data_dir: str | None = None, acl_master_token: str | None = None,
                 tls: "TLSFiles | None" = None):
        self.data_dir = data_dir
        self.acl_master_token = acl_master_token
        self.tls = tls
        self.binary = binary or find_consul_binary()
        if self.binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.http_port = http_port or free_port()
        # Fixed for the agent's life: a restarted server must find its raft peers again.
        lan, wan, server, self.https_port = free_ports(4, exclude={self.http_port})
        self.ports = {"-serf-lan-port": lan, "-serf-wan-port": wan, "-server-port": server}
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> "DevConsul":
        # raft_multiplier 1: production timings, so a single server elects itself in ~1 s.
        mode = (["-server", "-bootstrap-expect", "1", "-data-dir", self.data_dir,
                 "-hcl", "performance { raft_multiplier = 1 }"]
                if self.data_dir else ["-dev"])
        command = [self.binary, "agent", *mode, "-bind", "127.0.0.1", "-client", "127.0.0.1",
                   "-http-port", str(self.http_port), "-dns-port", "-1", "-grpc-port", "-1",
                   "-log-level", "warn"]
        for flag, port in self.ports.items():
            command += [flag, str(port)]
        if self.acl_master_token:
            token = self.acl_master_token
            command += ["-hcl", f'acl {{ enabled = true default_policy = "deny" tokens {{ '
                                f'master = "{token}" agent = "{token}" }} }}']
        if self.tls:
            command += ["-hcl", f'ca_file = "{self.tls.ca_file}" cert_file = "{self.tls.cert_file}" '
                                f'key_file = "{self.tls.key_file}" verify_incoming = true '
                                f'ports {{ https = {self.https_port} }}']
        self._log = tempfile.NamedTemporaryFile(prefix="consul-dev-", suffix=".log", delete=False)
        log.info("starting a local Consul agent on %s (%s), its log in %s",
                 self.address, self.binary, self._log.name)
        # Its own session: a Ctrl-C in the terminal must not stop Consul before Genisys
        # has released its lock; stop() ends it last.
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not consul_answers("127.0.0.1", self.http_port, timeout=0.5):
            if self.process.poll() is not None:
                raise RuntimeError(f"consul agent exited with {self.process.returncode}; "
                                   f"see {self._log.name}")
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"consul agent did not elect a leader within {timeout:.0f}s; "
                                   f"see {self._log.name}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)  # kept only when start() failed
