"""Fixtures shared by tests/ and integration/: one real Consul agent serves the whole run."""

import os

import pytest

from genisys.devconsul import make_certificates
from tests.dockerd import DockerEngine, NoEngine
from tests.connector_helpers import CountingConnector
from tests.faulty_connector import FaultyProcess
from tests.support import ConsulAgent, Replica, unique_prefix


@pytest.fixture(scope="session")
def consul():
    agent = ConsulAgent()
    yield agent
    agent.stop()


@pytest.fixture
def prefix():
    return unique_prefix()


@pytest.fixture
def start_replica(consul, prefix):
    """Start replicas against the shared agent and this test's key prefixes."""
    replicas = []

    def start(settings=None, compute_file=None, wait=True, **kwargs):
        replica = Replica(consul.address, prefix, settings, compute_file, **kwargs)
        replicas.append(replica)
        return replica.start(wait=wait)

    yield start
    for replica in replicas:
        replica.stop()


@pytest.fixture
def replica(start_replica):
    return start_replica()


@pytest.fixture(scope="session")
def docker_engine():
    """A real Docker engine for the whole run (tests/dockerd.py); never skipped in CI."""
    try:
        engine = DockerEngine()
    except NoEngine as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs every Docker test, but {exc}.")
        pytest.skip(str(exc))
    yield engine
    engine.stop()
    DOCKER_TIMINGS.update(engine.timings)


DOCKER_TIMINGS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter):
    """The Docker steps' times, cold or cached (the suite must stay under 10 minutes)."""
    if DOCKER_TIMINGS:
        terminalreporter.write_line("Docker: " + ", ".join(
            f"{step} {seconds:.1f} s" for step, seconds in DOCKER_TIMINGS.items()))


@pytest.fixture
def faulty(tmp_path):
    """Start misbehaving connectors (tests/faulty_connector.py); each call gives its URL."""
    started = []

    def start(fault: str, *args: str) -> str:
        started.append(FaultyProcess(fault, tmp_path / f"{fault}-{len(started)}.log", *args))
        return started[-1].url

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory):
    """A CA with a "server" and a "client" certificate for localhost and 127.0.0.1
    (genisys.devconsul.TLSFiles), made by Consul's own `consul tls`."""
    return make_certificates(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def counting(tmp_path):
    """A counting connector (bench/counting_connector.py): any service, no backend;
    `arrival(service, number)` tells when an order reached it."""
    with CountingConnector(log_path=tmp_path / "counting.log") as connector:
        yield connector
