"""GET /health against a real Consul agent (with ACLs: tests/test_consul_acl.py)."""

from tests.support import wait_until


def test_health_is_ok_once_the_replica_is_in_sync_and_registered(replica):
    # Right after start-up the views may not be in sync yet: 503 until they are.
    response = wait_until(lambda: (r := replica.request("GET", "/health")).ok and r,
                          what="a healthy replica")
    body = response.json()
    assert body["status"] == "ok"
    assert body["replica"]
    assert body["leader"] in (True, False)
    assert "troubles" not in body and "error" not in body
