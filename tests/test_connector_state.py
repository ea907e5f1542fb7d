"""--state-file: the definitions a connector keeps across restarts (genisys/connectors/state.py)."""

import json
import signal

import pytest

from genisys.computes_file import DefinitionFileError
from genisys.connectors.kit import Backend, Connector
from genisys.connectors.state import StateFile
from genisys.model import check_fields, validate_name
from tests.connector_helpers import ConnectorProcess

pytestmark = pytest.mark.timeout(60)


class NamesOnly(Backend):
    def validate(self, definition):
        check_fields(definition, ("name",), ("size",))
        return {"name": validate_name(definition["name"]), "size": definition.get("size", 1)}

    async def scale(self, definition, number):
        pass

    async def status(self, definition):
        return 0


def connector_with_state(path) -> Connector:
    connector = Connector(NamesOnly())
    connector.state = StateFile(path)
    connector.state.restore(connector)
    return connector


def test_every_change_is_saved_and_restored(tmp_path):
    path = tmp_path / "state.json"
    first = connector_with_state(path)
    first.define({"name": "web"})
    first.define({"size": 3}, "web")
    first.define({"name": "db"})
    assert json.loads(path.read_text()) == {"web": {"name": "web", "size": 3},
                                            "db": {"name": "db", "size": 1}}
    assert connector_with_state(path).definitions == first.definitions


def test_a_missing_file_is_an_empty_start(tmp_path):
    assert connector_with_state(tmp_path / "new.json").definitions == {}


@pytest.mark.parametrize("text,words", [
    ("{not json", "not a JSON state file"),
    ("[]", "not a JSON object of definitions"),
    ('{"web": {"name": "web", "colour": "red"}}', "service 'web': unknown field 'colour'"),
])
def test_a_bad_file_is_refused_naming_it(tmp_path, text, words):
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(DefinitionFileError, match=f"^{path}: {words}"):
        connector_with_state(path)


def test_a_file_that_cannot_be_written_keeps_the_definition_and_logs(tmp_path, caplog):
    connector = connector_with_state(tmp_path / "no-such-dir" / "state.json")
    connector.define({"name": "web"})
    assert "web" in connector.definitions
    assert "cannot save the definitions" in caplog.text


def test_a_restarted_connector_answers_for_services_defined_before(tmp_path):
    state = tmp_path / "state.json"
    args = ("--state-file", str(state), "--log-dir", str(tmp_path))
    with ConnectorProcess("genisys.connectors.process", *args,
                          log_path=tmp_path / "first.log") as first:
        assert first.call("POST", "/service", {"name": "tick", "command": "sleep 60"})[0] == 201
        first.stop(signal.SIGKILL)
    with ConnectorProcess("genisys.connectors.process", *args,
                          log_path=tmp_path / "second.log") as second:
        assert second.call("GET", "/service/tick")[1]["command"] == ["sleep", "60"]
        assert second.call("POST", "/service/tick/scale", {"number": 0})[0] == 200


def test_a_bad_state_file_stops_the_connector_with_a_clear_line(tmp_path):
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(AssertionError, match=f"(?s)exited with 2:.*{state}: not a JSON state file"):
        ConnectorProcess("genisys.connectors.process", "--state-file", str(state),
                         "--log-dir", str(tmp_path), log_path=tmp_path / "connector.log")
