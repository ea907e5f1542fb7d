"""Names, numbers and compute definitions (pure)."""

import pytest

from genisys.model import (
    Compute,
    ValidationError,
    url_identity,
    validate_name,
    validate_number,
    validate_url,
)
from genisys.placement import ComputeSpec


@pytest.mark.parametrize("name", ["a", "local", "web-1", "my_service.v2", "A" * 64, "9lives"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "a b", "..", ".hidden", "-x", "A" * 65, "é", "a\n"])
def test_invalid_names(name):
    with pytest.raises(ValidationError, match="is invalid"):
        validate_name(name)


@pytest.mark.parametrize("value,expected", [
    (0, 0), (3, 3), ("3", 3), (" 12 ", 12), (100000, 100000), ("100000", 100000),
    ("007", 7), ("0000000000000", 0), (2.0, 2), (0.0, 0), (1e5, 100000),
])
def test_valid_numbers(value, expected):
    assert validate_number(value) == expected


@pytest.mark.parametrize("value,message", [
    (-1, "must be >= 0"), ("-1", "must be an integer"), ("three", "must be an integer"),
    (2.5, "must be an integer"), ("2.5", "must be an integer"), (True, "not a boolean"),
    (None, "must be an integer"), ([], "must be an integer"), (100001, "at most 100000"),
    ("9" * 30, "at most 100000"), ("1000000000", "at most 100000, got '1000000000'"),
    ("100001", "at most 100000"), (10**30, "at most 100000"), (1e300, "at most 100000"),
    (float("nan"), "must be an integer"), (float("inf"), "must be an integer"),
    ("\u0661", "must be an integer"), ("\uff13", "must be an integer"),
    ("1\u0661", "must be an integer"),
    ("\u00b2", "must be an integer"), ("", "must be an integer"), ("1 2", "must be an integer"),
    ("+1", "must be an integer"), ("2.0", "must be an integer"), (-2.0, "must be >= 0"),
    (False, "not a boolean"), ({}, "must be an integer"),
])
def test_invalid_numbers(value, message):
    with pytest.raises(ValidationError, match=message):
        validate_number(value)


def test_connector_urls_are_normalised_without_a_trailing_slash():
    assert validate_url("http://localhost:7051/") == "http://localhost:7051"
    assert validate_url("https://c.example/base") == "https://c.example/base"


@pytest.mark.parametrize("url", ["localhost:7051", "/x", "ftp://h", "http://", "http://h:0x",
                                 "http://h/?q=1", "http://h/#f"])
def test_invalid_connector_urls(url):
    with pytest.raises(ValidationError, match="absolute http or https URL"):
        validate_url(url)


def test_compute_round_trip():
    compute = Compute.from_dict({"name": "local", "connector": "http://localhost:7051"})
    assert compute.to_dict() == {"name": "local", "connector": "http://localhost:7051"}
    assert compute.public_dict() == {"name": "local", "connector": "http://localhost:7051",
                                     "weight": 1, "max": None, "priority": 0}


def test_international_host_names_are_idna_encoded():
    # http://ü:7051 was accepted as is and then failed every reconcile cycle.
    assert validate_url("http://ü:7051") == "http://xn--tda:7051"
    assert validate_url("https://bücher.example/api") == "https://xn--bcher-kva.example/api"


@pytest.mark.parametrize("url", ["http://h/a b", "http://h\x00:1", "http://h\x7f:1", "http://h:1\n",
                                 "http://h\t:1", "\x1bhttp://h:1"])
def test_urls_with_whitespace_or_control_characters_are_refused(url):
    with pytest.raises(ValidationError, match="spaces or control characters"):
        validate_url(url)


def test_urls_with_user_information_are_refused():
    with pytest.raises(ValidationError, match="user information"):
        validate_url("http://admin:secret@h:7051")


def test_one_connector_written_two_ways_has_one_identity():
    assert url_identity(validate_url("http://LOCALHOST:7051/")) == \
        url_identity(validate_url("http://127.0.0.1:7051"))
    assert url_identity(validate_url("http://h")) == url_identity(validate_url("http://h:80/"))
    assert url_identity(validate_url("http://h:7051")) != url_identity(validate_url("http://h:7052"))


def test_a_stored_compute_keeps_its_deletion_mark_and_the_api_form_refuses_it():
    stored = {"name": "c", "connector": "http://h:1", "deleting": "2026-11-25T10:00:00"}
    assert Compute.from_stored(stored).to_dict() == stored
    with pytest.raises(ValidationError, match="unknown field 'deleting'"):
        Compute.from_dict(stored)


def test_a_compute_carries_weight_max_and_priority_into_its_spec():
    compute = Compute.from_dict({"name": "c", "connector": "http://h:1", "weight": 3,
                                 "max": "10", "priority": -1})
    assert compute.spec == ComputeSpec(weight=3, max=10, priority=-1)
    assert Compute.from_dict({"name": "c", "connector": "http://h:1"}).spec == ComputeSpec()
    assert Compute.from_stored(compute.to_dict()) == compute


@pytest.mark.parametrize("field,value,message", [
    ("weight", -1, "weight must be >= 0, got -1."),
    ("weight", False, "weight must be an integer >= 0, not a boolean."),
    ("max", 2.5, "max must be an integer >= 0, got 2.5."),
    ("max", 100_001, "max must be at most 100000, got 100001."),
    ("priority", "high", "priority must be an integer >= -100000, got 'high'."),
    ("priority", "-100001", "priority must be >= -100000, got '-100001'."),
])
def test_bad_placement_fields_are_refused_in_one_sentence(field, value, message):
    with pytest.raises(ValidationError) as refused:
        Compute.from_dict({"name": "c", "connector": "http://h:1", field: value})
    assert str(refused.value) == message


def test_a_priority_may_be_negative_and_a_number_may_not():
    assert validate_number("-7", "priority", minimum=-100_000) == -7
    assert validate_number(-7.0, "priority", minimum=-100_000) == -7
    with pytest.raises(ValidationError, match="must be an integer >= 0"):
        validate_number("-7")
