"""The README's httpie examples, run with the real httpie client against real processes."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.connector_helpers import ConnectorProcess
from tests.support import ROOT, wait_until

README = (ROOT / "README.md").read_text()
HTTP = shutil.which("http", path=str(Path(sys.executable).parent)) or shutil.which("http")


def shell_block(marker: str) -> list[str]:
    """The httpie lines (comments kept) of the README code block that contains `marker`."""
    at = README.find(marker)
    assert at >= 0, f"no {marker!r} in README.md"
    block = README[README.rindex("```", 0, at):README.index("```", at)]
    lines = block.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.startswith("http ")]


def httpie(line: str, ports: dict[str, int]):
    """Run one README line with the real `http`, on this test's ports; its JSON answer.
    A line whose comment names a 4xx status must answer with that status."""
    line, _, comment = line.partition("  #")
    for documented, actual in ports.items():
        line = line.replace(f":{documented}", f":{actual}")
    words = shlex.split(line)
    result = subprocess.run([HTTP, "--ignore-stdin", "--check-status", "--print=b", *words[1:]],
                            capture_output=True, text=True, timeout=30)
    documented_error = re.search(r"\b(4\d\d)\b", comment)
    expected_exit = 4 if documented_error else 0  # httpie --check-status: 4xx -> exit 4
    assert result.returncode == expected_exit, \
        f"{line}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    return json.loads(result.stdout) if result.stdout.strip() else None


@pytest.fixture
def process_connector(tmp_path):
    with ConnectorProcess("genisys.connectors.process", "--service-file",
                          "examples/services.py", log_path=tmp_path / "connector.log") as c:
        yield c


def test_quick_start(start_replica, process_connector, tmp_path):
    computes = tmp_path / "computes.py"
    computes.write_text(f'local = {{"name": "local", "connector": "{process_connector.url}"}}\n')
    replica = start_replica({"connector": {"poll_interval": "15s"}}, compute_file=str(computes))
    ports = {"7001": replica.port, "7051": process_connector.port}
    wait_until(lambda: replica.request("GET", "/compute/local").status_code == 200, timeout=10,
               what="the compute file in Consul")
    scale, show, status = shell_block("service/demo/scale")
    assert httpie(scale, ports) == {"service": "demo", "desired": 2, "placement": {"local": 2}}
    wait_until(lambda: httpie(show, ports)["observed"] == {"local": 2}, timeout=10,
               what="2 running, as the README shows")
    assert httpie(status, ports) == {"running_resources": 2}


def test_api_examples(start_replica, tmp_path):
    computes = tmp_path / "computes.py"
    computes.write_text('local = {"name": "local", "connector": "http://127.0.0.1:9"}\n')
    replica = start_replica(compute_file=str(computes))
    wait_until(lambda: replica.request("GET", "/compute/local").status_code == 200, timeout=10,
               what="the compute file in Consul")
    ports = {"7001": replica.port}
    lines = shell_block("name=localdc")
    answers = [httpie(line, ports) for line in lines]
    assert answers[0] == {"name": "localdc", "connector": "http://localhost:7052",
                          "weight": 1, "max": None, "priority": 0}
    assert list(answers[1]) == ["local", "localdc"]
    assert answers[3]["connector"] == "http://localhost:7053"
    assert replica.request("GET", "/service/myService").json()["desired"] == 5


def test_process_connector_examples(process_connector):
    lines = shell_block("http :7051/service   ")
    answers = [httpie(line, {"7051": process_connector.port}) for line in lines]
    assert set(answers[0]) == {"demo", "ticker"}
    assert answers[1] == {"service": "demo", "running_resources": 3}
    assert answers[2] == {"running_resources": {"demo": 3, "ticker": 0}}
    assert answers[-2] == {"running_resources": 2}  # the refused order changed nothing
    assert answers[-1] == {"service": "web", "running_resources": 0}


def test_history_and_lifecycle_examples(start_replica, tmp_path):
    with ConnectorProcess("bench.counting_connector", log_path=tmp_path / "c.log") as counting:
        replica = start_replica({"connector": {"poll_interval": "1s"}})
        replica.request("POST", "/compute", {"name": "local", "connector": counting.url})
        ports = {"7001": replica.port}
        for service in ("web", "myService"):
            replica.request("POST", f"/service/{service}/scale", {"number": 3})
        wait_until(lambda: replica.request("GET", "/service/web").json()["observed"]
                   == {"local": 3}, timeout=10, what="web at 3")
        one, every = [httpie(line, ports) for line in shell_block("service/web/events")]
        assert [(e["service"], e["from"], e["to"], e["result"]) for e in one["events"]] == \
            [("web", 0, 3, "ok")]
        assert {e["service"] for e in every["events"]} <= {"web", "myService"}
        [delete] = shell_block("DELETE :7001/service/myService")
        assert httpie(delete, ports)["state"] == "deleting"
        [dry_run] = shell_block("scale?dry_run=1' number=5")
        plan = httpie(dry_run, ports)
        assert plan["orders"] == [{"compute": "local", "from": 3, "to": 5}]
        assert replica.request("GET", "/service/web").json()["desired"] == 3


def placements(lines, ports) -> list:
    """What each README line answered: a scale's placement (and shortfall), a record."""
    return [{k: v for k, v in answer.items() if k in ("placement", "shortfall", "desired")}
            for answer in (httpie(line, ports) for line in lines)]


def test_weighted_placement_example(start_replica):
    weighted = start_replica({"placement": {"strategy": "weighted"}})
    answers = placements(shell_block("name=small"), {"7001": weighted.port})
    assert answers[2:] == [
        {"desired": 4, "placement": {"small": 1, "big": 3}},
        {"desired": 8, "placement": {"small": 2, "big": 6}},
        {"desired": 12, "placement": {"small": 3, "big": 7}, "shortfall": 2},
        {"desired": 12, "placement": {"small": 3, "big": 7}, "shortfall": 2},
        {"desired": 5, "placement": {"small": 1, "big": 4}}]


def test_priority_placement_example(start_replica):
    prioritized = start_replica({"placement": {"strategy": "priority"}})
    answers = placements(shell_block("name=cheap"), {"7001": prioritized.port})
    assert [answer["placement"] for answer in answers[3:]] == [
        {"cheap": 2, "spare": 2}, {"cheap": 2, "spare": 3, "dear": 2}, {"cheap": 2, "spare": 1}]
