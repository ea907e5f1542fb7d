"""Fixtures shared by tests/ and integration/: one real Consul agent serves the whole run."""

import pytest

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
