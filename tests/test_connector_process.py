"""The process connector: real connector processes, real instances, real HTTP."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.connector_helpers import (
    DEMO_COMMAND,
    ROOT,
    ConnectorProcess,
    call,
    parent_of,
    processes_of,
    unique,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

SLEEPER = ["sleep", "600"]
# An instance with children: stopping it must stop them too.
FAMILY = ["sh", "-c", "sleep 600 & sleep 600 & wait"]


def start(tmp_path, *args) -> ConnectorProcess:
    return ConnectorProcess("genisys.connectors.process", "--log-dir", str(tmp_path / "logs"),
                            "--grace", "2", *args, log_path=tmp_path / "connector.log")


@pytest.fixture
def connector(tmp_path):
    with start(tmp_path) as connector:
        yield connector


def define(connector, command, **extra) -> str:
    name = extra.pop("name", None) or unique("svc")
    status, body = connector.call("POST", "/service", {"name": name, "command": command, **extra})
    assert status == 201, body
    return name


def scale(connector, name, number, **kwargs):
    return connector.call("POST", f"/service/{name}/scale", {"number": number}, **kwargs)


def instances_of(name, count) -> dict[int, dict[str, str]]:
    """The service's processes, once there are `count`: a process that has just been
    started may still show an empty environment while the kernel finishes its exec."""
    def settled():
        found = processes_of(name)
        return (found,) if len(found) == count else None
    return wait_until(settled, timeout=5, what=f"{count} processes of {name}")[0]


def running(connector, name) -> int:
    status, body = connector.call("GET", f"/service/{name}/status")
    assert status == 200, body
    return body["running_resources"]


def test_a_demo_service_scales_0_3_1_0_and_each_instance_answers_on_its_port(connector, tmp_path):
    name = define(connector, DEMO_COMMAND)
    assert scale(connector, name, 3) == (200, {"service": name, "running_resources": 3})
    instances = instances_of(name, 3)
    assert sorted(env["GENISYS_INSTANCE"] for env in instances.values()) == ["1", "2", "3"]
    assert len({env["PORT"] for env in instances.values()}) == 3
    for pid, env in instances.items():
        answer = wait_until(lambda: _answer(env["PORT"]), what=f"instance {pid} to answer")
        assert answer == (200, {"service": name, "instance": env["GENISYS_INSTANCE"],
                                "port": int(env["PORT"]), "pid": pid})
        assert parent_of(pid) == connector.process.pid

    assert scale(connector, name, 1)[1]["running_resources"] == 1
    assert [env["GENISYS_INSTANCE"] for env in processes_of(name).values()] == ["1"]  # oldest stays
    assert running(connector, name) == 1
    assert scale(connector, name, 0)[1]["running_resources"] == 0
    assert processes_of(name) == {}
    assert "demo service listening" in (tmp_path / "logs" / f"{name}-2.log").read_text()
    assert f"scale {name} from 3 to 1 (term none): 1 running" in connector.log()


def _answer(port):
    try:
        return call("GET", f"http://127.0.0.1:{port}/", timeout=2)
    except OSError:
        return None


def test_an_instance_killed_with_sigkill_no_longer_counts(connector):
    name = define(connector, SLEEPER)
    scale(connector, name, 3)
    victim = next(iter(instances_of(name, 3)))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: running(connector, name) == 2, what="the status to drop to 2")
    assert "exited with code -9" in connector.log()
    assert scale(connector, name, 3)[1]["running_resources"] == 3  # replaced
    instances_of(name, 3)


def test_racing_scale_orders_end_in_the_number_of_an_order_carried_out(connector):
    name = define(connector, SLEEPER)
    numbers = [5, 0, 3, 1, 4, 2, 5, 1, 0, 3, 2, 4]
    with ThreadPoolExecutor(len(numbers)) as pool:
        answers = list(pool.map(lambda n: scale(connector, name, n), numbers))
    done = [body["running_resources"] for status, body in answers if status == 200]
    assert done and all(status == 409 and "replaced this one" in body["error"]
                        for status, body in answers if status != 200), answers
    final = running(connector, name)
    assert final in done
    instances_of(name, final)  # none left behind by a replaced order


def test_a_scale_to_0_replaces_a_scale_to_1000_in_progress_and_leaves_no_instance(connector):
    name = define(connector, SLEEPER)
    with ThreadPoolExecutor(1) as pool:
        big = pool.submit(scale, connector, name, 1000)
        wait_until(lambda: len(processes_of(name)) >= 20, timeout=30, what="20 instances")
        assert scale(connector, name, 0) == (200, {"service": name, "running_resources": 0})
        status, body = big.result()
    assert (status, body) == (409, {"error": f"a newer order for {name} (number 0) "
                                             "replaced this one before it was done."})
    assert processes_of(name) == {}  # the start in flight was counted and stopped too
    assert running(connector, name) == 0
    assert f"scale {name} from 0 to 1000 (term none): replaced by a newer order" in connector.log()


def test_a_scale_down_replaced_midway_still_stops_every_leaving_instance(tmp_path):
    stubborn = [sys.executable, "-c", "import signal, time; "
                "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                "time.sleep(600)"]
    with start(tmp_path, "--grace", "10") as connector:
        name = define(connector, stubborn)
        assert scale(connector, name, 2)[0] == 200
        logs = [tmp_path / "logs" / f"{name}-{n}.log" for n in (1, 2)]
        wait_until(lambda: all(log.exists() and "ready" in log.read_text() for log in logs),
                   what="SIGTERM to be ignored")
        with ThreadPoolExecutor(1) as pool:
            down = pool.submit(scale, connector, name, 0)  # waits out the 10 s grace
            # the leaving instances stop counting at once
            wait_until(lambda: running(connector, name) == 0, what="the scale down to begin")
            assert scale(connector, name, 1)[1]["running_resources"] == 1  # a new instance
            assert down.result()[0] == 409
        wait_until(lambda: len(processes_of(name)) == 1, timeout=30,
                   what="the two leaving to be killed after the grace")
        assert [env["GENISYS_INSTANCE"] for env in processes_of(name).values()] == ["3"]
        assert connector.log().count("ignored SIGTERM for 10s: killing it") == 2


def test_an_order_beyond_max_instances_is_refused_and_starts_nothing(tmp_path):
    with start(tmp_path, "--max-instances", "3") as connector:
        name = define(connector, SLEEPER)
        assert scale(connector, name, 4) == (400, {
            "error": "number 4 is more than the 3 instances per service this connector "
                     "runs at most."})
        assert processes_of(name) == {} and running(connector, name) == 0
        assert scale(connector, name, 3)[1]["running_resources"] == 3


def test_stopping_the_connector_stops_every_instance_and_their_children(tmp_path):
    with start(tmp_path) as connector:
        demo, family = define(connector, DEMO_COMMAND), define(connector, FAMILY)
        scale(connector, demo, 2)
        scale(connector, family, 2)
        instances_of(family, 6)  # sh and two sleeps each
        instances_of(demo, 2)
        assert connector.stop(signal.SIGTERM) == 0
    wait_until(lambda: not processes_of(demo) and not processes_of(family), timeout=5,
               what="every instance to be gone")
    assert "stopping 4 instance(s)" in connector.log()


def test_a_connector_killed_with_sigkill_leaves_no_instance_behind(tmp_path):
    with start(tmp_path) as connector:
        demo = define(connector, DEMO_COMMAND)
        scale(connector, demo, 3)
        instances_of(demo, 3)
        connector.process.kill()
        connector.process.wait()
    wait_until(lambda: not processes_of(demo), timeout=5,
               what="the instances to end with their connector")


def test_scale_to_50_and_back_to_0_leaves_no_process(connector):
    name = define(connector, SLEEPER)
    assert scale(connector, name, 50)[1]["running_resources"] == 50
    instances_of(name, 50)
    assert scale(connector, name, 0)[1]["running_resources"] == 0
    assert processes_of(name) == {}


def test_scaling_down_stops_the_children_of_an_instance(connector):
    name = define(connector, FAMILY)
    scale(connector, name, 1)
    instances_of(name, 3)  # sh and its two sleeps
    scale(connector, name, 0)
    wait_until(lambda: processes_of(name) == {}, timeout=3, what="the sleeps to be gone")


def test_an_instance_that_ignores_sigterm_is_killed_after_the_grace_period(connector, tmp_path):
    stubborn = [sys.executable, "-c", "import signal, time; "
                "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                "time.sleep(600)"]
    name = define(connector, stubborn)
    scale(connector, name, 1)
    log = tmp_path / "logs" / f"{name}-1.log"
    wait_until(lambda: log.exists() and "ready" in log.read_text(), what="SIGTERM to be ignored")
    started = time.monotonic()
    assert scale(connector, name, 0)[1]["running_resources"] == 0
    assert time.monotonic() - started >= 1.9  # --grace 2
    assert processes_of(name) == {}
    assert "ignored SIGTERM for 2s: killing it" in connector.log()


def test_a_command_string_is_split_and_environment_and_cwd_apply(connector, tmp_path):
    name = define(connector, "sh -c 'echo \"$GREETING from $(pwd) $GENISYS_SERVICE "
                             "$GENISYS_INSTANCE $PORT\"; exec sleep 600'",
                  environment={"GREETING": "hello"}, cwd=str(tmp_path))
    assert connector.call("GET", f"/service/{name}")[1]["command"][:2] == ["sh", "-c"]
    scale(connector, name, 1)
    log = tmp_path / "logs" / f"{name}-1.log"
    line = wait_until(lambda: log.exists() and log.read_text().strip(), what="the greeting")
    greeting, _, where, service, instance, port = line.split()
    assert (greeting, where, service, instance) == ("hello", str(tmp_path), name, "1")
    assert port.isdigit()


def test_a_program_that_cannot_start_is_a_clear_503(connector):
    name = define(connector, ["/nonexistent/program", "--flag"])
    status, body = scale(connector, name, 1)
    assert status == 503
    assert body == {"error": f"cannot start {name}: /nonexistent/program: "
                             "No such file or directory."}
    assert running(connector, name) == 0


def test_an_instance_that_exits_is_reaped(connector):
    name = define(connector, [sys.executable, "-c", "raise SystemExit(3)"])
    scale(connector, name, 2)
    wait_until(lambda: running(connector, name) == 0, what="the exited instances to be reaped")
    assert "exited with code 3" in connector.log()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with start(tmp_path_factory.mktemp("shared")) as connector:
        yield connector


BAD_DEFINITIONS = [
    ({"command": ["x"]}, "missing field 'name'"),
    ({"name": "x"}, "missing field 'command'"),
    ({"name": "x", "command": ["x"], "image": "y"}, "unknown field 'image'"),
    ({"name": "a b", "command": ["x"]}, "invalid"),
    ({"name": "x", "command": []}, "non-empty list"),
    ({"name": "x", "command": ""}, "non-empty list"),
    ({"name": "x", "command": 5}, "non-empty list"),
    ({"name": "x", "command": ["echo", 2]}, "non-empty list"),
    ({"name": "x", "command": ["", "a"]}, "non-empty list"),
    ({"name": "x", "command": "echo 'unclosed"}, "cannot be split"),
    ({"name": "x", "command": ["echo", "a\0b"]}, "NUL"),
    ({"name": "x", "command": ["x"], "environment": "A=1"}, "environment must be an object"),
    ({"name": "x", "command": ["x"], "environment": {"1A": "x"}}, "name '1A' is invalid"),
    ({"name": "x", "command": ["x"], "environment": {"A-B": "x"}}, "invalid"),
    ({"name": "x", "command": ["x"], "environment": {"A": [1]}}, "not a list"),
    ({"name": "x", "command": ["x"], "environment": {"A": {"B": 1}}}, "not an object"),
    ({"name": "x", "command": ["x"], "environment": {"A": None}}, "not null"),
    ({"name": "x", "command": ["x"], "environment": {"A": "a\0b"}}, "NUL"),
    ({"name": "x", "command": ["x"], "environment": {"A": "\ud800"}}, "lone surrogates"),
    ({"name": "x", "command": ["echo", "\ud800"]}, "lone surrogates"),
    ({"name": "x", "command": ["x"], "cwd": "\ud800"}, "cwd must be a directory path"),
    ({"name": "x", "command": ["x"], "cwd": "x" * 5000}, "File name too long"),
    ({"name": "x", "command": ["x"], "cwd": "/nonexistent/dir"}, "not a directory"),
    ({"name": "x", "command": ["x"], "cwd": 5}, "cwd must be a directory path"),
]


@pytest.mark.parametrize("definition,words", BAD_DEFINITIONS,
                         ids=[words for _, words in BAD_DEFINITIONS])
def test_bad_definitions_are_refused_and_change_nothing(shared, definition, words):
    before = shared.call("GET", "/service")
    attempts = [("POST", "/service")] + [("PUT", "/service/x")] * (definition.get("name") == "x")
    for method, path in attempts:
        status, body = shared.call(method, path, definition)
        assert status == 400 and words in body["error"], body
    assert shared.call("GET", "/service") == before


def test_the_example_service_file_defines_the_demo(tmp_path):
    with start(tmp_path, "--service-file", "examples/services.py") as connector:
        status, services = connector.call("GET", "/service")
        assert status == 200 and {"demo", "ticker"} <= set(services)
        assert "2 service(s) defined by examples/services.py" in connector.log()
        scale(connector, "demo", 1)
        [(pid, env)] = wait_until(lambda: [
            (pid, env) for pid, env in processes_of("demo").items()
            if parent_of(pid) == connector.process.pid], what="the demo process")
        answer = wait_until(lambda: _answer(env["PORT"]), what="the demo to answer")
        assert answer[1]["service"] == "demo"
        assert connector.stop() == 0
    wait_until(lambda: pid not in processes_of("demo"), timeout=5, what="the demo to stop")


def test_a_service_file_from_the_docker_connector_with_numbers_and_booleans_works(tmp_path):
    """Environment values as docker-py takes them: scalars, turned into str(value)."""
    name = unique("copied")
    services = tmp_path / "services.py"
    services.write_text(f"web = {{'name': {name!r}, 'command': {SLEEPER!r}, 'environment': "
                        "{'SERVICE_8081_IGNORE': True, 'WORKERS': 4, 'RATIO': 0.5, 'MODE': 'x'}}\n")
    with start(tmp_path, "--service-file", str(services)) as connector:
        assert connector.call("GET", f"/service/{name}")[1]["environment"] == {
            "SERVICE_8081_IGNORE": "True", "WORKERS": "4", "RATIO": "0.5", "MODE": "x"}
        assert scale(connector, name, 1)[0] == 200
        [environment] = instances_of(name, 1).values()
        assert (environment["SERVICE_8081_IGNORE"], environment["WORKERS"],
                environment["RATIO"]) == ("True", "4", "0.5")
        assert scale(connector, name, 0)[0] == 200


def test_a_bad_service_file_stops_the_start_naming_the_line(tmp_path):
    services = tmp_path / "services.py"
    services.write_text('web = {"name": "web", "command": ["x"]}\napi = {"name": "api"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "genisys.connectors.process", "--port", "0",
         "--log-dir", str(tmp_path), "--service-file", str(services)],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{services}:2: missing field 'command'." in result.stderr


def test_a_working_directory_that_disappeared_is_named(connector, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    name = define(connector, SLEEPER, cwd=str(gone))
    gone.rmdir()
    status, body = scale(connector, name, 1)
    assert (status, body) == (503, {"error": f"cannot start {name}: {gone}: "
                                             "No such file or directory."})
