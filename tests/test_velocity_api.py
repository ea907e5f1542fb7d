"""GET, PUT and DELETE /service/{svc}/velocity against a real Consul agent, and the
`velocity` section of genisys.yml."""

import json

import pytest
import requests

from genisys import config
from tests.support import wait_until

# Nothing listens here: these tests are about the API and what it stores.
A = {"name": "a", "connector": "http://127.0.0.1:9"}
DEFAULTS = {"max_step": 4, "up_cooldown": "30s", "down_cooldown": "2m"}


@pytest.fixture
def web(start_replica):
    replica = start_replica({"velocity": DEFAULTS, "connector": {"poll_interval": "1s"}})
    assert replica.request("POST", "/compute", A).status_code == 201
    assert replica.request("POST", "/service/web/scale", {"number": 3}).status_code == 202
    return replica


def test_the_defaults_come_from_genisys_yml(web):
    response = web.request("GET", "/service/web/velocity")
    assert response.status_code == 200
    assert response.json() == {
        "service": "web", "max_step": 4, "up_cooldown": 30.0, "down_cooldown": 120.0,
        "source": {"max_step": "default", "up_cooldown": "default",
                   "down_cooldown": "default"}}


def test_a_service_overrides_what_it_names_and_delete_returns_to_the_defaults(web, consul,
                                                                               prefix):
    response = web.request("PUT", "/service/web/velocity",
                           {"max_step": 2, "down_cooldown": "500ms"})
    assert response.status_code == 200
    assert response.json() == {
        "service": "web", "max_step": 2, "up_cooldown": 30.0, "down_cooldown": 0.5,
        "source": {"max_step": "service", "up_cooldown": "default",
                   "down_cooldown": "service"}}
    assert web.request("GET", "/service/web/velocity").json() == response.json()
    stored = json.loads(consul.kv_get(f"{prefix}lifecycle/web"))
    assert stored["velocity"] == {"max_step": 2, "down_cooldown": 0.5}

    # null: no step limit for this service, whatever the default
    assert web.request("PUT", "/service/web/velocity", {"max_step": None}).json()[
        "max_step"] is None
    response = web.request("DELETE", "/service/web/velocity")
    assert response.status_code == 200
    assert response.json()["max_step"] == 4
    assert set(response.json()["source"].values()) == {"default"}
    assert "velocity" not in json.loads(consul.kv_get(f"{prefix}lifecycle/web"))


def test_pause_and_velocity_keep_each_other(web):
    web.request("PUT", "/service/web/velocity", {"up_cooldown": 5})
    assert web.request("POST", "/service/web/pause").status_code == 200
    assert web.request("GET", "/service/web/velocity").json()["up_cooldown"] == 5.0
    web.request("PUT", "/service/web/velocity", {"up_cooldown": 6})
    assert web.request("GET", "/service/web").json()["paused"] is True


@pytest.mark.parametrize("body,message", [
    ({"max_step": 0}, "max_step must be at least 1 (null: no limit)."),
    ({"max_step": -2}, "max_step must be >= 0"),
    ({"max_step": "two"}, "max_step must be an integer >= 0"),
    ({"max_step": True}, "max_step must be an integer >= 0, not a boolean."),
    ({"up_cooldown": "soon"}, "up_cooldown must be a duration like 30s, 500ms or 2m, got 'soon'."),
    ({"down_cooldown": -1}, "down_cooldown must be a duration like 30s"),
    ({"down_cooldown": None}, "down_cooldown must be a duration like 30s"),
    ({"up_cooldown": "25h"}, "up_cooldown must be at most 24h, got '25h'."),
    ({"max_steps": 2}, "unknown field 'max_steps'."),
])
def test_bad_limits_are_refused_with_one_sentence_and_change_nothing(web, body, message):
    web.request("PUT", "/service/web/velocity", {"max_step": 3})
    response = web.request("PUT", "/service/web/velocity", body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert web.request("GET", "/service/web/velocity").json()["max_step"] == 3


def test_an_unknown_service_is_not_found(web):
    for method in ("GET", "PUT", "DELETE"):
        response = web.request(method, "/service/ghost/velocity", {} if method == "PUT" else None)
        assert response.status_code == 404, method
        assert "'ghost' is not known" in response.json()["error"]


def test_a_deleting_service_refuses_new_limits(web):
    assert web.request("DELETE", "/service/web").status_code == 202
    response = web.request("PUT", "/service/web/velocity", {"max_step": 1})
    # the connector at 127.0.0.1:9 cannot be observed: the delete cannot finish
    assert response.status_code == 409
    assert response.json()["error"] == "service 'web' is being deleted."


def test_limits_and_step_times_go_with_the_service(web, consul, prefix):
    web.request("PUT", "/service/web/velocity", {"max_step": 1})
    consul.kv_put(f"{prefix}steps/web", json.dumps({"up": "2026-11-25T16:00:00+00:00"}))
    assert consul.kv_get(f"{prefix}lifecycle/web") is not None
    # Another tool removes the total: the leader's next full cycle forgets the rest.
    assert requests.delete(
        f"{consul.url}/v1/kv/{prefix}resources/web", timeout=5).json() is True
    wait_until(lambda: consul.kv_get(f"{prefix}steps/web") is None
               and consul.kv_get(f"{prefix}lifecycle/web") is None, timeout=15,
               what="the service's velocity keys to be forgotten")


# -- genisys.yml ------------------------------------------------------------------------

def test_the_velocity_section_defaults_to_no_limit():
    limits = config.build({}, environ={}).velocity.limits
    assert not limits.active


def test_the_velocity_section_takes_durations_and_the_environment():
    loaded = config.build({"velocity": DEFAULTS}, environ={"GENISYS_VELOCITY_MAX_STEP": "3"})
    assert (loaded.velocity.limits.max_step, loaded.velocity.up_cooldown,
            loaded.velocity.down_cooldown) == (3, 30.0, 120.0)


@pytest.mark.parametrize("values,message", [
    ({"max_step": -1}, "velocity.max_step: -1 is not a whole number"),
    ({"up_cooldown": "fast"}, "velocity.up_cooldown: 'fast' is not a duration"),
    ({"down_cooldown": "2d"}, "velocity.down_cooldown: '2d' is not a duration"),
    ({"down_cooldown": "25h"}, "velocity.down_cooldown must be at most 24h"),
])
def test_a_bad_velocity_section_is_refused(values, message):
    with pytest.raises(config.ConfigError, match=message):
        config.build({"velocity": values}, environ={})
