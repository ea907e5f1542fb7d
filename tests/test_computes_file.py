"""The definition-file parser: dict literals only, never executed."""

import pytest

from genisys.cli import load_compute_file
from genisys.computes_file import DefinitionFileError, parse_definitions, read_definitions
from genisys.config import build
from genisys.placement import ComputeSpec
from tests.support import ROOT


def test_reads_assignments_in_file_order():
    text = '"""Computes."""\n# a comment\nb = {"name": "b", "connector": "http://h:2"}\n\n' \
           'a = {"name": "a", "connector": "http://h:1", "tags": ["x", 1]}\n'
    assert parse_definitions(text) == [
        (3, {"name": "b", "connector": "http://h:2"}),
        (5, {"name": "a", "connector": "http://h:1", "tags": ["x", 1]}),
    ]


def test_the_shipped_computes_file():
    assert read_definitions(ROOT / "computes.py") == [
        (3, {"name": "local", "connector": "http://localhost:7051"})]


def test_empty_file_defines_nothing():
    assert parse_definitions("# nothing yet\n") == []


@pytest.mark.parametrize("text,message", [
    ("import os\n", "f.py:1: only assignments"),
    ('x = {"a": 1}\nprint(x)\n', "f.py:2: only assignments"),
    ("x = 3\n", "f.py:1: the value of x must be a dict literal"),
    ('x = dict(a=1)\n', "f.py:1: the value of x must be a dict literal"),
    ('x = {"a": open("/etc/passwd").read()}\n', "f.py:1: the value of x must contain only literals"),
    ('x = y = {"a": 1}\n', "f.py:1: only assignments"),
    ('x.y = {"a": 1}\n', "f.py:1: only assignments"),
    ("def f():\n    pass\n", "f.py:1: only assignments"),
    ('x = {"a": 1\n', "f.py:1: invalid syntax"),
])
def test_anything_else_is_an_error_naming_the_line(text, message):
    with pytest.raises(DefinitionFileError) as error:
        parse_definitions(text, "f.py")
    assert message in str(error.value)


def test_the_file_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "computes.py"
    path.write_text(f'x = {{"a": __import__("pathlib").Path("{marker}").touch()}}\n')
    with pytest.raises(DefinitionFileError):
        read_definitions(path)
    assert not marker.exists()


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DefinitionFileError, match="cannot read"):
        read_definitions(tmp_path / "absent.py")


def test_a_compute_file_carries_weight_max_and_priority(tmp_path):
    (tmp_path / "computes.py").write_text(
        'big = {"name": "big", "connector": "http://h:1", "weight": 3, "max": None}\n'
        'small = {"name": "small", "connector": "http://h:2", "max": 4, "priority": -1}\n')
    config = build({"genisys": {"compute_file": "computes.py"}})
    big, small = load_compute_file(config, tmp_path / "genisys.yaml")
    assert big.spec == ComputeSpec(weight=3, max=None, priority=0)
    assert small.spec == ComputeSpec(weight=1, max=4, priority=-1)


def test_a_bad_limit_in_a_compute_file_names_its_line(tmp_path):
    (tmp_path / "computes.py").write_text(
        'ok = {"name": "ok", "connector": "http://h:1"}\n'
        'bad = {"name": "bad", "connector": "http://h:2", "max": -1}\n')
    config = build({"genisys": {"compute_file": "computes.py"}})
    with pytest.raises(DefinitionFileError, match=r"computes.py:2: max must be >= 0, got -1\."):
        load_compute_file(config, tmp_path / "genisys.yaml")
