"""History and pause across a failover: kill -9 the leader, the next one goes on with the
same history and keeps the service paused. Real Consul, replicas, a connector process."""

import signal


from integration.test_leader import single_leader
from tests.support import wait_until

SETTINGS = {"connector": {"poll_interval": "1s", "timeout": "1s"},
            "leader": {"check_ttl": "2s", "lock_delay": "1s"}}


def events(replica):
    return replica.request("GET", "/service/web/events").json()["events"]


def last_cycle(replica):
    return (replica.request("GET", "/health").json().get("last_cycle") or {}).get("at")


def test_history_and_pause_survive_a_kill_9_of_the_leader(start_replica, counting):
    replicas = [start_replica(SETTINGS) for _ in range(2)]
    first = single_leader(replicas)
    first.request("POST", "/compute", {"name": "one", "connector": counting.url})
    first.request("POST", "/service/web/scale", {"number": 2})
    before = wait_until(lambda: events(first), what="the first leader's order")
    assert first.request("POST", "/service/web/pause").json()["paused"] is True

    first.stop(signal.SIGKILL)
    survivor = next(r for r in replicas if r is not first)
    assert single_leader([survivor]) is survivor
    # The new leader keeps the service paused: a scale sends nothing for two cycles.
    assert survivor.request("POST", "/service/web/scale", {"number": 4}).status_code == 202
    seen = [last_cycle(survivor)]
    wait_until(lambda: seen.append(last_cycle(survivor)) or len(set(seen) - {None}) > 2,
               what="two cycles of the new leader")
    assert counting.running("web") == 2
    assert survivor.request("GET", "/service/web").json()["paused"] is True

    assert survivor.request("POST", "/service/web/resume").status_code == 200
    wait_until(lambda: counting.running("web") == 4, what="web at 4 after resume")
    after = wait_until(lambda: len(events(survivor)) == 2 and events(survivor),
                       what="the new leader's order in the same history")
    assert after[1:] == before
    assert (after[0]["from"], after[0]["to"]) == (2, 4)
    assert after[0]["term"] > before[0]["term"]
