"""Schemathesis against a live replica and a live process connector, with the specs the
package ships. Bounded (examples per operation) and deterministic, so it cannot flake;
the summary (operations, test cases, failures) is printed with -s."""

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import yaml

from genisys.model import ValidationError, validate_url
from tests import fuzz_hooks
from tests.connector_helpers import ConnectorProcess
from tests.fuzz_hooks import HARMLESS_COMMAND

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "genisys"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
# Every check that fits. Not positive_data_acceptance: rules across fields or beyond JSON
# Schema (a PUT's name must match its path, a connector URL's port must be a port) make
# some schema-valid bodies a rightful 400. Nor object_level_authorization: no per-user
# objects. ignored_auth (no or a bad token is refused) where the server requires a token.
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,"
          "negative_data_rejection,unsupported_method,allow_header_conformance,"
          "use_after_free,ensure_resource_availability")
MAX_EXAMPLES = 25
CONNECTOR_TOKEN = "fuzz-connector-" + "3" * 32
BOOTSTRAP = "fuzz-bootstrap-" + "5" * 32  # the replica's admin token


def run_schemathesis(spec: Path, url: str, workdir: Path, token: str | None = None) -> str:
    """Run it to the end (in `workdir`, where it keeps its cache), with `token` as the
    bearer token; its output. Fails the test, with the output, on any failure, and when
    an operation of the spec was not tested."""
    auth = ["--checks", CHECKS + ",ignored_auth",
            "--header", f"Authorization: Bearer {token}"] if token else ["--checks", CHECKS]
    result = subprocess.run(
        [SCHEMATHESIS, "run", str(spec), "--url", url, *auth,
         "--max-examples", str(MAX_EXAMPLES), "--generation-deterministic", "--workers", "1",
         "--no-color", "--request-timeout", "10", "--suppress-health-check", "all"],
        cwd=workdir, capture_output=True, text=True, timeout=110,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "PYTHONPATH": str(ROOT)})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    operations = sum(method != "parameters" for path in yaml.safe_load(spec.read_text())[
        "paths"].values() for method in path)
    assert f"Tested: {operations}\n" in output, output
    summary = re.search(r"API Operations:.*", output, re.DOTALL)
    print(summary.group(0) if summary else output)
    return output


@pytest.fixture
def process_connector(tmp_path):
    # The service the specs' examples name; at most 3 instances of `sleep`
    # (tests/fuzz_hooks.py) whatever the fuzzer orders.
    services = tmp_path / "services.py"
    services.write_text(f"web = {{'name': 'web', 'command': {HARMLESS_COMMAND!r}}}\n")
    token = tmp_path / "connector.token"
    token.write_text(CONNECTOR_TOKEN)
    with ConnectorProcess("genisys.connectors.process", "--max-instances", "3",
                          "--service-file", str(services), "--token-file", str(token),
                          "--log-dir", str(tmp_path / "instances"),
                          log_path=tmp_path / "connector.log") as connector:
        yield connector


def test_the_api_answers_as_its_spec_says(start_replica, process_connector, tmp_path):
    replica = start_replica(env={"GENISYS_BOOTSTRAP_TOKEN": BOOTSTRAP})
    admin = {"Authorization": f"Bearer {BOOTSTRAP}"}
    created = replica.request("POST", "/compute", {
        "name": "local", "connector": process_connector.url, "token": CONNECTOR_TOKEN},
        headers=admin)
    assert created.status_code == 201, created.text
    run_schemathesis(SPECS / "openapi.yaml", replica.url, tmp_path, BOOTSTRAP)
    computes = replica.request("GET", "/compute", headers=admin).json()
    assert {urlsplit(c["connector"]).hostname for c in computes.values()} <= {"127.0.0.1"}


@pytest.mark.parametrize("url", [
    "http://example.com:80/x", "HTTPS://ü", "http://a@b.example", "http://a:b@c.example",
    "http://x:80@evil.example", "http://[::1]:80", "http://a\\b@evil.example", " http://c.example",
    "http://evil.example?x", "http://evil.example#x"])
def test_the_hook_keeps_every_accepted_connector_on_the_loopback(url):
    case = SimpleNamespace(body={"name": "c", "connector": url})
    fuzz_hooks.before_call(None, case, {})
    try:
        connector = validate_url(case.body["connector"])
    except ValidationError:
        return  # refused: no request goes anywhere
    assert urlsplit(connector).hostname == "127.0.0.1"


def test_the_connector_answers_as_its_spec_says(process_connector, tmp_path):
    # This connector requires its token: the spec's optional token becomes a required one,
    # so that ignored_auth checks every operation but /health without it too.
    spec = yaml.safe_load((SPECS / "connector-openapi.yaml").read_text())
    spec["security"] = [{"bearer": []}]
    required = tmp_path / "connector-openapi.yaml"
    required.write_text(yaml.safe_dump(spec))
    run_schemathesis(required, process_connector.url, tmp_path, CONNECTOR_TOKEN)
