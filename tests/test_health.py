"""GET /health against a real Consul agent."""


def test_health_is_ok_while_consul_answers(replica):
    response = replica.request("GET", "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["replica"]
    assert body["leader"] in (True, False)
