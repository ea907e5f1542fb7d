"""Service definitions that survive a connector restart: a JSON file, rewritten on change.

    python -m genisys.connectors.docker --state-file /var/lib/genisys/docker.json

The file holds {name: definition} as the connector last had them. It is written to a
temporary file and renamed over the old one, so a crash mid-write leaves the previous
version. At start-up its definitions are defined again, after those of --service-file
(the file's are the latest, so they win).
"""

import json
import logging
import os
from pathlib import Path

from genisys.computes_file import DefinitionFileError
from genisys.model import ValidationError

log = logging.getLogger("genisys.connector")


class StateFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def restore(self, connector) -> None:
        """Define again what the file holds; DefinitionFileError names what is wrong."""
        try:
            definitions = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            definitions = {}
        except OSError as exc:
            raise DefinitionFileError(f"{self.path}: cannot read: {exc.strerror}") from None
        except ValueError:
            raise DefinitionFileError(f"{self.path}: not a JSON state file.") from None
        if not isinstance(definitions, dict):
            raise DefinitionFileError(f"{self.path}: not a JSON object of definitions.")
        for name, definition in definitions.items():
            try:
                connector.define(definition, name)
            except ValidationError as exc:
                raise DefinitionFileError(f"{self.path}: service {name!r}: {exc}") from None
        log.info("%d service(s) defined again from %s", len(definitions), self.path)

    def save(self, definitions: dict[str, dict]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            temporary.write_text(json.dumps(definitions, indent=1), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError as exc:
            # The definition holds until the connector stops; only its restart forgets it.
            log.error("cannot save the definitions to %s: %s", self.path, exc.strerror)
