"""The installed commands (pip install -e . in make setup): genisys's client commands against
real replicas and a real Consul, `genisys [serve]` itself, and the connectors' commands."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from genisys import commands
from genisys.devconsul import free_port
from tests.connector_helpers import DEMO_COMMAND, ConnectorProcess, call, unique
from tests.support import ROOT, Replica, wait_until

BIN = Path(sys.executable).parent
DEAD = "http://127.0.0.1:9"  # nothing listens there


def installed(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} is missing: `make setup` installs it (pip install -e .)"
    return str(path)


def genisys(*args: str, addr: str | None = None, **env) -> subprocess.CompletedProcess:
    """Run the installed `genisys` with GENISYS_ADDR=addr."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GENISYS_")}
    environment.update(env)
    if addr:
        environment["GENISYS_ADDR"] = addr
    return subprocess.run([installed("genisys"), *args], env=environment, capture_output=True,
                          text=True, timeout=60)


class Started:
    """An installed command run in the background, its output in a file."""

    def __init__(self, tmp_path: Path, name: str, *args: str):
        self.log_path = tmp_path / f"{name}.log"
        self._output = open(self.log_path, "ab")
        self.process = subprocess.Popen([installed(name), *args], stdin=subprocess.DEVNULL,
                                        stdout=self._output, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"exited with {self.process.returncode}:\n{self.log()}")
        return True

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        finally:
            self._output.close()


@pytest.fixture
def connector(tmp_path):
    """The process connector, started by the installed genisys-connector-process, with the
    README's services."""
    started = Started(tmp_path, "genisys-connector-process", "--port", "0",
                      "--log-dir", str(tmp_path),
                      "--service-file", str(ROOT / "examples" / "services.py"))

    def port():
        started.running()
        match = re.search(r"listening on http://[^:]+:(\d+)", started.log())
        return match and int(match.group(1))

    started.url = f"http://127.0.0.1:{wait_until(port, 15, 'the connector to listen')}"
    yield started
    assert started.stop() == 0


def define_demo(connector) -> str:
    service = unique("cli")
    status, _ = call("POST", f"{connector.url}/service",
                     {"name": service, "command": DEMO_COMMAND})
    assert status == 201
    return service


def test_scale_then_status_shows_leader_computes_and_services(replica, connector):
    service = define_demo(connector)
    added = genisys("computes", "add", "local", connector.url, addr=replica.url)
    assert (added.returncode, added.stdout) == (1, f"compute local -> {connector.url} defined\n")
    assert genisys("computes", "add", "dead", DEAD, addr=replica.url).returncode == 1

    scaled = genisys("scale", service, "2", "--compute", "local", addr=replica.url)
    assert (scaled.returncode, scaled.stdout, scaled.stderr) == \
        (1, f"{service}: desired 2, placement local=2\n", "")
    again = genisys("scale", service, "2", "--compute", "local", addr=replica.url)
    assert (again.returncode, again.stdout) == \
        (0, f"{service}: desired 2, placement local=2 (unchanged)\n")

    def observed():
        answer = json.loads(genisys("status", "--json", addr=replica.url).stdout)
        record = answer["services"][service]
        return record["observed"] == {"local": 2} and "dead" in record["errors"] and answer

    answer = wait_until(observed, 20, "the leader to observe 2 instances")
    assert answer["leader"] == replica.request("GET", "/leader").json()
    assert answer["computes"] == replica.request("GET", "/compute").json()

    text = genisys("status", addr=replica.url)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    leader = answer["leader"]
    assert lines[0] == f"leader: {leader['id']} at {leader['address']} since {leader['since']}"
    width = len(connector.url) + 2  # columns are aligned on their longest cell
    assert lines[2:5] == ["COMPUTE  " + "CONNECTOR".ljust(width) + "DELETING SINCE",
                          "local    " + connector.url.ljust(width) + "-",
                          "dead     " + DEAD.ljust(width) + "-"]
    row = next(line for line in lines if line.startswith(service))
    assert row.split() == [service, "2", "local=2", "local=2", "dead"]
    header = next(line for line in lines if line.startswith("SERVICE"))
    assert header.index("DESIRED") == row.index(" 2 ") + 1
    error = answer["services"][service]["errors"]["dead"]
    assert f"{service} on dead: {error}" in lines


def test_the_readmes_examples(start_replica, connector, tmp_path):
    """Each line of the README's block runs, with the exit code its comment says."""
    readme = (ROOT / "README.md").read_text()
    at = readme.index("genisys computes add local2")
    block = readme[readme.rindex("```", 0, at):readme.index("```", at)]
    lines = [line for line in block.splitlines() if line.startswith("genisys ")]
    port = connector.url.rsplit(":", 1)[1]
    computes = tmp_path / "computes.py"
    computes.write_text(f'local = {{"name": "local", "connector": "http://localhost:{port}"}}\n')
    replica = start_replica(compute_file=str(computes))
    wait_until(lambda: replica.request("GET", "/compute/local").status_code == 200, 10,
               "the compute file in Consul")
    for line in lines:
        command, _, comment = line.partition("  #")
        documented = re.search(r"exit (\d)", comment)
        result = genisys(*command.replace(":7051", f":{port}").split()[1:], addr=replica.url)
        assert result.returncode == (int(documented.group(1)) if documented else 0), \
            f"{line}\n{result.stdout}{result.stderr}"
        if "409" in comment:
            assert "genisys: " in result.stderr
        if command.strip() == "genisys scale demo 3":
            wait_until(lambda: replica.request("GET", "/service/demo").json()["observed"]
                       == {"local": 3}, 20, "3 demo instances")
        if command.strip() == "genisys status":
            assert ["demo", "3", "local=3", "local=3", "-"] in \
                [row.split() for row in result.stdout.splitlines()]


def test_dry_run_pause_resume_events_and_delete(replica, tmp_path):
    with ConnectorProcess("bench.counting_connector", log_path=tmp_path / "c.log") as counting:
        genisys("computes", "add", "one", counting.url, addr=replica.url)
        plan = genisys("scale", "web", "2", "--dry-run", addr=replica.url)
        assert (plan.returncode, plan.stdout.splitlines()) == (1, [
            "web: desired 2, placement one=2, index 0",
            "COMPUTE  FROM  TO", "one      0     2"])
        assert replica.request("GET", "/service/web").status_code == 404  # nothing changed
        stale = genisys("scale", "web", "2", "--check-index", "7", addr=replica.url)
        assert (stale.returncode, stale.stderr) == (
            2, "genisys: service 'web' changed since index 7 (it is now at 0): run the dry "
               "run again.\n")
        assert genisys("scale", "web", "2", "--check-index", "0", addr=replica.url) \
            .returncode == 1
        wait_until(lambda: json.loads(genisys("events", "web", "--json", addr=replica.url)
                                      .stdout)["events"], what="the order in the history")
        assert genisys("scale", "web", "2", "--dry-run", addr=replica.url).returncode == 0

        assert [genisys(action, "web", addr=replica.url).returncode
                for action in ("pause", "pause", "resume", "resume")] == [1, 0, 1, 0]
        history = genisys("events", addr=replica.url)
        assert history.returncode == 0
        header, row = history.stdout.splitlines()
        assert header.split() == ["TIME", "SERVICE", "COMPUTE", "FROM", "TO", "TERM", "RESULT",
                                  "REASON"]
        assert row.split()[1:7] == ["web", "one", "0", "2", row.split()[5], "ok"]
        assert row.endswith("placement 2, observed 0")

        deleted = genisys("delete", "web", addr=replica.url)
        assert deleted.returncode == 1
        assert deleted.stdout.startswith("web: deleting; the leader scales it to 0")
        wait_until(lambda: genisys("events", "web", addr=replica.url).returncode == 2,
                   what="web forgotten")
        assert genisys("events", "--limit", "0", addr=replica.url).returncode == 2


def test_json_prints_the_apis_answers(replica):
    assert genisys("computes", "add", "a", DEAD, addr=replica.url).returncode == 1
    scaled = genisys("scale", "web", "3", "--json", addr=replica.url)
    assert scaled.returncode == 1
    assert json.loads(scaled.stdout) == {"service": "web", "desired": 3, "placement": {"a": 3}}
    listed = genisys("computes", "--json", addr=replica.url)
    assert (listed.returncode, json.loads(listed.stdout)) == \
        (0, {"a": {"name": "a", "connector": DEAD, "weight": 1, "max": None, "priority": 0}})
    leader = genisys("leader", "--json", addr=replica.url)
    assert json.loads(leader.stdout) == replica.request("GET", "/leader").json()


def test_a_scale_that_changes_the_placement_only_is_a_change(replica):
    for name, port in (("a", 9), ("b", 19)):
        assert genisys("computes", "add", name, f"http://127.0.0.1:{port}",
                       addr=replica.url).returncode == 1
    assert genisys("scale", "web", "2", "--compute", "a", addr=replica.url).returncode == 1
    moved = genisys("scale", "web", "2", "--compute", "b", addr=replica.url)
    # Growth goes to b, shrinking takes from b first: the total 2 stays on a.
    assert (moved.returncode, moved.stdout) == (0, "web: desired 2, placement a=2 (unchanged)\n")
    assert genisys("scale", "web", "3", "--compute", "b", addr=replica.url).returncode == 1
    assert genisys("scale", "web", "0", addr=replica.url).returncode == 1


def test_computes_set_and_rm(replica):
    created = genisys("computes", "set", "c", "http://127.0.0.1:9", addr=replica.url)
    assert (created.returncode, created.stdout) == (1, "compute c -> http://127.0.0.1:9\n")
    same = genisys("computes", "set", "c", "http://127.0.0.1:9", addr=replica.url)
    assert (same.returncode, same.stdout) == (0, "compute c -> http://127.0.0.1:9 (unchanged)\n")
    moved = genisys("computes", "set", "c", "http://127.0.0.1:19", addr=replica.url)
    assert (moved.returncode, moved.stdout) == (1, "compute c -> http://127.0.0.1:19\n")
    removed = genisys("computes", "rm", "c", addr=replica.url)
    assert (removed.returncode, removed.stdout) == (1, "compute c deleted\n")
    listed = genisys("computes", addr=replica.url)
    assert (listed.returncode, listed.stdout) == (0, "no compute is defined.\n")


@pytest.mark.parametrize("args,error", [
    (["scale", "web", "-1"], "number must be"),
    (["scale", "web", "2", "--compute", "nowhere"], "compute 'nowhere' does not exist"),
    (["scale", "a/b", "1"], "service name"),
    (["computes", "rm", "ghost"], "compute 'ghost' does not exist"),
    (["computes", "add", "c", "ftp://x"], "connector"),
])
def test_an_api_4xx_prints_its_sentence_and_exits_2(replica, args, error):
    assert genisys("computes", "add", "a", DEAD, addr=replica.url).returncode == 1
    result = genisys(*args, addr=replica.url)
    assert (result.returncode, result.stdout) == (2, "")
    assert error in result.stderr
    assert result.stderr.startswith("genisys: ") and result.stderr.count("\n") == 1
    assert genisys("computes", "--json", addr=replica.url).stdout.count('"name"') == 1


def test_bad_usage_exits_2():
    assert genisys("scale", "web").returncode == 2
    assert genisys("computes", "nuke", "a").returncode == 2
    result = genisys("leader", "--addr", "ftp://h:7001")
    assert (result.returncode, result.stderr) == (
        2, "genisys: the address ftp://h:7001 is not an http(s) URL like "
           "http://127.0.0.1:7001.\n")


def test_no_api_exits_3_and_addr_wins_over_the_environment(replica):
    nothing = f"127.0.0.1:{free_port()}"
    for args in (["status"], ["leader"], ["scale", "web", "1"]):
        result = genisys(*args, addr=nothing)
        assert (result.returncode, result.stdout) == (3, "")
        assert result.stderr == (f"genisys: cannot reach the Genisys API at http://{nothing}: "
                                 "Connection refused.\n")
    assert genisys("leader", "--addr", replica.url, addr=nothing).returncode == 0


def test_an_api_5xx_exits_3(consul, prefix, tmp_path):
    # A replica whose Consul does not answer serves 503s.
    replica = Replica(f"127.0.0.1:{free_port()}", prefix).start()
    try:
        for args in (["status"], ["computes"], ["leader"], ["scale", "web", "1"]):
            result = genisys(*args, addr=replica.url)
            assert (result.returncode, result.stdout) == (3, ""), args
            assert result.stderr.startswith("genisys: ") and result.stderr.count("\n") == 1
    finally:
        replica.stop()


@pytest.mark.parametrize("serve", [[], ["serve"]])
def test_genisys_serves_without_a_command_or_with_serve(consul, prefix, tmp_path, serve):
    config = Replica(consul.address, prefix)
    server = Started(tmp_path, "genisys", *serve, "--config", str(config.config_path),
                     "--log-format", "json")
    try:
        wait_until(lambda: server.running() and _answers(config.url + "/health"), 15,
                   "genisys to serve")
        assert genisys("leader", addr=config.url).returncode == 0
    finally:
        assert server.stop() == 0
    entries = [json.loads(line) for line in server.log().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e["message"].startswith("I am the leader") for e in entries)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def test_the_docker_connector_command():
    result = subprocess.run([installed("genisys-connector-docker"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--docker-url" in result.stdout


def test_the_process_connector_command_logs_json(tmp_path):
    started = Started(tmp_path, "genisys-connector-process", "--port", "0",
                      "--log-format", "json")
    wait_until(lambda: started.running() and "listening on" in started.log(), 15,
               "the connector to listen")
    assert started.stop() == 0
    entries = [json.loads(line) for line in started.log().splitlines()]
    assert entries[0]["logger"].startswith("genisys.connector")
    assert entries[-1]["message"] == "stopped"


# --- pure parts ---------------------------------------------------------------------

def test_a_token_is_sent_as_a_bearer_token():
    assert "Authorization" not in commands.request_headers(None)
    assert "Authorization" not in commands.request_headers(" ")
    assert commands.request_headers("s3cret\n")["Authorization"] == "Bearer s3cret"


@pytest.mark.parametrize("addr,url", [
    ("http://127.0.0.1:7001/", "http://127.0.0.1:7001"),
    ("localhost:7002", "http://localhost:7002"),
    ("https://genisys.example", "https://genisys.example"),
])
def test_addresses(addr, url):
    assert commands.api_url(addr) == url


@pytest.mark.parametrize("addr", ["ftp://h", "http://", "h:port", "http://h:99999"])
def test_bad_addresses_are_usage_errors(addr):
    with pytest.raises(commands.CommandError) as error:
        commands.api_url(addr)
    assert error.value.code == commands.USAGE_ERROR


def test_tables_align_columns():
    assert commands.table(["A", "LONGER"], [["xyz", None], ["w", {}]]).splitlines() == [
        "A    LONGER", "xyz  -", "w    -"]


def test_status_without_leader_computes_or_services():
    assert commands.render_status("no leader is elected.", {}, {}).splitlines() == [
        "leader: none (no leader is elected.)", "", "no compute is defined.", "",
        "no service is known."]


def test_status_names_errors_and_orders_in_progress():
    services = {"web": {"desired": 3, "placement": {"a": 2, "b": 1}, "observed": {"a": 1},
                        "errors": {"b": "connection refused."},
                        "in_progress": {"a": {"to": 2, "since": "2026-12-08T01:00:00Z"}}}}
    assert commands.render_status("no leader is elected.", {}, services).splitlines()[-2:] == [
        "web on b: connection refused.",
        "web on a: order to 2 in progress since 2026-12-08T01:00:00Z"]


def test_options_given_before_a_sub_command_count():
    args = commands.build_parser().parse_args(["computes", "--json", "add", "a", DEAD])
    assert (args.json, args.run, args.name) == (True, commands.add_compute, "a")
    assert commands.build_parser().parse_args(["computes"]).run is commands.computes


def test_json_logs_name_the_service_compute_and_term_of_each_order(start_replica, connector):
    service = define_demo(connector)
    replica = start_replica({"connector": {"poll_interval": "1s"}}, args=("--log-format", "json"))
    assert genisys("computes", "add", "local", connector.url, addr=replica.url).returncode == 1
    assert genisys("scale", service, "1", addr=replica.url).returncode == 1

    def order_line():
        for line in replica.log().splitlines():
            entry = json.loads(line)
            if entry["message"].startswith(f"scaling {service} on local"):
                return entry
        return None

    entry = wait_until(order_line, timeout=15, what="the order's log line")
    assert (entry["service"], entry["compute"]) == (service, "local")
    assert isinstance(entry["term"], int) and entry["term"] > 0
