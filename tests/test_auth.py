"""genisys/auth.py: token format, hashes, roles, the check of an Authorization header."""

import pytest

from genisys import auth
from genisys import config as config_module
from genisys.auth import AuthError, Authenticator

BOOTSTRAP = "b" * 40


def authenticator(*records, bootstrap=BOOTSTRAP):
    stored = {r["name"]: r for r in records}
    return Authenticator(bootstrap, stored.get), stored


def test_roles_are_ordered_read_operate_admin():
    assert auth.allows("admin", "operate") and auth.allows("admin", "read")
    assert auth.allows("operate", "read") and auth.allows("operate", "operate")
    assert not auth.allows("read", "operate") and not auth.allows("operate", "admin")


def test_a_new_token_names_its_record_and_the_record_holds_no_secret():
    secret, record = auth.new_token("ci.deploy", "operate")
    assert secret.startswith("gen_ci.deploy_") and len(secret) == len("gen_ci.deploy_") + 64
    assert set(record) == {"name", "role", "salt", "hash", "created"}
    assert secret not in str(record) and secret.split("_")[-1] not in str(record)
    assert auth.hash_secret(secret, record["salt"]) == record["hash"]
    assert auth.valid_record(record, "ci.deploy") and not auth.valid_record(record, "other")


def test_two_tokens_of_one_name_differ_in_secret_and_salt():
    (one, a), (two, b) = auth.new_token("x", "read"), auth.new_token("x", "read")
    assert one != two and a["salt"] != b["salt"] and a["hash"] != b["hash"]


def test_a_stored_token_gives_its_name_and_role():
    secret, record = auth.new_token("reader", "read")
    check, _ = authenticator(record)
    assert check.identify(f"Bearer {secret}") == ("reader", "read")
    assert check.identify(f"bearer  {secret} ") == ("reader", "read")  # the scheme is case-insensitive
    assert check.identify(f"Bearer {secret}") == ("reader", "read")  # remembered: the same answer


def test_the_bootstrap_token_is_admin_named_bootstrap():
    check, _ = authenticator()
    assert check.identify(f"Bearer {BOOTSTRAP}") == ("bootstrap", "admin")


@pytest.mark.parametrize("header, sentence", [
    (None, "needs a token"),
    ("Basic dXNlcjpwYXNz", "must be Bearer"),
    (BOOTSTRAP, "must be Bearer"),
    ("Bearer", "empty"),
    ("Bearer    ", "empty"),
    ("Bearer nonsense", "not valid"),
    ("Bearer " + "b" * 39, "not valid"),
    ("Bearer gen_nobody_" + "0" * 64, "not valid"),
])
def test_a_missing_or_bad_token_is_refused_with_401(header, sentence):
    check, _ = authenticator()
    with pytest.raises(AuthError) as refused:
        check.identify(header)
    assert refused.value.status == 401 and sentence in str(refused.value)
    assert BOOTSTRAP not in str(refused.value)


def test_a_wrong_secret_of_a_known_name_is_refused_even_after_the_right_one():
    secret, record = auth.new_token("ops", "admin")
    check, _ = authenticator(record)
    assert check.identify(f"Bearer {secret}") == ("ops", "admin")
    forged = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    with pytest.raises(AuthError, match="not valid"):
        check.identify(f"Bearer {forged}")


def test_a_revoked_token_is_refused_although_it_was_accepted_before():
    secret, record = auth.new_token("gone", "operate")
    check, stored = authenticator(record)
    assert check.identify(f"Bearer {secret}") == ("gone", "operate")
    del stored["gone"]
    with pytest.raises(AuthError, match="unknown, revoked or mistyped"):
        check.identify(f"Bearer {secret}")


def test_a_record_replaced_under_the_same_name_is_checked_afresh():
    old_secret, old = auth.new_token("svc", "admin")
    check, stored = authenticator(old)
    assert check.identify(f"Bearer {old_secret}") == ("svc", "admin")
    new_secret, stored["svc"] = auth.new_token("svc", "read")
    assert check.identify(f"Bearer {new_secret}") == ("svc", "read")
    with pytest.raises(AuthError):
        check.identify(f"Bearer {old_secret}")


def test_without_a_bootstrap_token_only_stored_tokens_count():
    check, _ = authenticator(bootstrap="")
    with pytest.raises(AuthError):
        check.identify("Bearer " + BOOTSTRAP)


def test_an_insufficient_role_is_refused_with_403_naming_the_role_needed():
    with pytest.raises(AuthError) as refused:
        auth.check_role("read", "operate")
    assert refused.value.status == 403
    assert str(refused.value) == ("this request needs a token with role operate; this token "
                                  "has role read.")
    auth.check_role("admin", "admin")


@pytest.mark.parametrize("names", [["token"], ["access_token"], ["consistent", "Api_Key"]])
def test_a_token_in_the_query_string_is_refused_with_400(names):
    with pytest.raises(AuthError) as refused:
        auth.check_query(names)
    assert refused.value.status == 400 and "query string" in str(refused.value)


def test_an_ordinary_query_string_passes():
    auth.check_query(["consistent"])
    auth.check_query([])


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.5", False), ("genisys-1", False)])
def test_loopback_addresses(host, loopback):
    assert auth.is_loopback(host) is loopback


def test_the_bootstrap_token_comes_from_its_value_or_its_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(BOOTSTRAP + "\n")
    assert auth.read_bootstrap_token("", str(path)) == BOOTSTRAP
    assert auth.read_bootstrap_token(f" {BOOTSTRAP} ", "") == BOOTSTRAP
    assert auth.read_bootstrap_token("", "") == ""


@pytest.mark.parametrize("value, sentence", [
    ("short", "at least 32"),
    ("é" * 40, "at least 32 printable ASCII"),
    ("a b" * 20, "without spaces"),
])
def test_an_unusable_bootstrap_token_is_refused_without_being_said(value, sentence):
    with pytest.raises(ValueError) as refused:
        auth.read_bootstrap_token(value, "")
    assert sentence in str(refused.value) and value not in str(refused.value)


def test_a_bootstrap_token_file_that_cannot_be_read_is_named(tmp_path):
    with pytest.raises(ValueError, match="bootstrap_token_file .*missing: cannot read"):
        auth.read_bootstrap_token("", str(tmp_path / "missing"))
    path = tmp_path / "token"
    path.write_text(BOOTSTRAP)
    with pytest.raises(ValueError, match="not both"):
        auth.read_bootstrap_token(BOOTSTRAP, str(path))


def test_the_configuration_reads_the_bootstrap_token_but_never_shows_it():
    config = config_module.build({}, environ={"GENISYS_BOOTSTRAP_TOKEN": BOOTSTRAP,
                                              "GENISYS_BOOTSTRAP_TOKEN_FILE": ""})
    assert config.genisys.bootstrap_token == BOOTSTRAP
    assert BOOTSTRAP not in repr(config) and BOOTSTRAP not in str(config.genisys)
