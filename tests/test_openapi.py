"""The OpenAPI specs: valid OpenAPI 3.1, one path per route, and served by every replica."""

import re
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

from genisys.api import Context, make_app
from genisys.connectors import kit

SPECS = Path(__file__).resolve().parent.parent / "genisys"


def load(name: str) -> dict:
    return yaml.safe_load((SPECS / name).read_text())


def route_paths(app) -> set[str]:
    """The app's routes as OpenAPI paths: /service/([^/]+)/scale -> /service/{}/scale, and
    /service/([^/]+)/(pause|resume) -> one path each."""
    paths = set()
    for rule in app.wildcard_router.rules:
        path = rule.matcher.regex.pattern.removesuffix("$").removesuffix("/?")
        path = re.sub(r"\(\[\^/\]\+\)", "{}", path).replace("\\", "")
        choice = re.search(r"\(([\w|]+)\)", path)
        for word in choice.group(1).split("|") if choice else [None]:
            paths.add(path if word is None else path[:choice.start()] + word + path[choice.end():])
    return paths


def spec_paths(spec: dict) -> set[str]:
    return {re.sub(r"\{[^}]+\}", "{}", path) for path in spec["paths"]}


@pytest.mark.parametrize("name", ["openapi.yaml", "connector-openapi.yaml"])
def test_the_specs_are_valid_openapi_3_1(name):
    spec = load(name)
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_the_api_spec_has_every_route_and_no_other():
    app = make_app(Context(config=None, store=None, replica_id="spec"))
    assert spec_paths(load("openapi.yaml")) == route_paths(app)


def test_the_connector_spec_has_every_route_of_the_kit_and_no_other():
    app = kit.make_app(connector=None)
    assert spec_paths(load("connector-openapi.yaml")) == route_paths(app)


def test_every_operation_describes_bad_input_and_wrong_methods():
    for name in ("openapi.yaml", "connector-openapi.yaml"):
        spec = load(name)
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                if method == "parameters":
                    continue
                codes = operation["responses"]
                assert "405" in codes and "400" in codes, f"{name} {method} {path}"


def test_a_replica_serves_the_spec_it_ships(replica):
    answer = replica.request("GET", "/openapi.yaml")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/yaml"
    assert answer.content == (SPECS / "openapi.yaml").read_bytes()
    validate(yaml.safe_load(answer.content))


def test_the_spec_endpoint_allows_only_get(replica):
    answer = replica.request("POST", "/openapi.yaml", {})
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET"
    assert "error" in answer.json()
