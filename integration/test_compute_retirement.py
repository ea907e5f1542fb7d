"""Never forget an instance: a deleted or moved compute's connector is drained by the
leader. Real Consul, a replica process, real process connectors."""

import json

from integration.test_scaling import FAST, add_compute, define
from tests.connector_helpers import ConnectorProcess, processes_of, unique
from tests.support import wait_until


def start_connectors(tmp_path, *names):
    return [ConnectorProcess("genisys.connectors.process", "--grace", "2",
                             log_path=tmp_path / f"{name}.log") for name in names]


def retired_keys(consul, prefix):
    return consul.kv_keys(f"{prefix}retired/")


def test_a_compute_deleted_right_after_a_scale_to_zero_is_drained(start_replica, tmp_path,
                                                                  consul, prefix):
    """On main: scale to 0 on p2, DELETE p2 while the leader was inside a cycle: both
    succeeded and the connector kept running the instances forever."""
    replica = start_replica(FAST)
    service = unique("svc")
    p1, p2 = start_connectors(tmp_path, "p1", "p2")
    try:
        for name, connector in (("p1", p1), ("p2", p2)):
            define(connector, service)
            add_compute(replica, name, connector.url)
        assert replica.request("POST", f"/service/{service}/scale",
                               {"number": 2, "compute": "p2"}).status_code == 202
        wait_until(lambda: p2.running(service) == 2, timeout=15, what="2 running on p2")
        assert replica.request("POST", f"/service/{service}/scale", {"number": 0}
                               ).status_code == 202
        assert replica.request("DELETE", "/compute/p2").status_code == 204
        wait_until(lambda: p2.running(service) == 0, timeout=15,
                   what="the leader to stop what runs on the deleted compute")
        wait_until(lambda: retired_keys(consul, prefix) == [], timeout=15,
                   what="the retired connector to be forgotten")
        # Logged just after the key is deleted: the test may look in between.
        wait_until(lambda: "runs none of the managed services any more: forgotten"
                   in replica.log(), timeout=5, what="the line saying it was forgotten")
    finally:
        for connector in (p1, p2):
            connector.__exit__(None, None, None)
    wait_until(lambda: not processes_of(service), timeout=10, what="every instance to exit")


def test_a_compute_moved_to_another_connector_leaves_nothing_behind(start_replica, tmp_path,
                                                                    consul, prefix):
    replica = start_replica(FAST)
    service = unique("svc")
    old, new = start_connectors(tmp_path, "old", "new")
    try:
        for connector in (old, new):
            define(connector, service)
        add_compute(replica, "m", old.url)
        assert replica.request("POST", f"/service/{service}/scale", {"number": 2}
                               ).status_code == 202
        wait_until(lambda: old.running(service) == 2, timeout=15, what="2 on the old one")
        assert replica.request("PUT", "/compute/m", {"connector": new.url}).status_code == 200
        wait_until(lambda: new.running(service) == 2 and old.running(service) == 0,
                   timeout=15, what="the service to move to the new connector")
        wait_until(lambda: retired_keys(consul, prefix) == [], timeout=15,
                   what="the old connector to be forgotten")
        record = replica.request("GET", f"/service/{service}").json()
        assert record["placement"] == {"m": 2}
        assert json.loads(consul.kv_get(f"{prefix}computes/m"))["connector"] == new.url
    finally:
        for connector in (old, new):
            connector.__exit__(None, None, None)
