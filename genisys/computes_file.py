"""Read definition files (computes.py, a connector's services.py) WITHOUT executing them.

Such a file is a list of top-level assignments of dict literals:

    local = {"name": "local", "connector": "http://localhost:7051"}

It looks like Python so that existing files keep working, but running it would let a
typo in a config file execute arbitrary code, so it is parsed with `ast` and only
literal values are accepted. Anything else is an error that names the line.
"""

import ast
from pathlib import Path


class DefinitionFileError(ValueError):
    """The file is not a list of `name = {dict literal}` assignments."""


def parse_definitions(text: str, filename: str = "<string>") -> list[tuple[int, dict]]:
    """Return (line number, dict) for each top-level assignment, in file order."""
    try:
        tree = ast.parse(text, filename=filename)
    except SyntaxError as exc:
        raise DefinitionFileError(f"{filename}:{exc.lineno}: invalid syntax: {exc.msg}") from None
    definitions = []
    for statement in tree.body:
        where = f"{filename}:{statement.lineno}"
        if _is_docstring(statement):
            continue
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            raise DefinitionFileError(
                f"{where}: only assignments like `name = {{...}}` are allowed here")
        if not isinstance(statement.value, ast.Dict):
            raise DefinitionFileError(
                f"{where}: the value of {statement.targets[0].id} must be a dict literal")
        try:
            value = ast.literal_eval(statement.value)
        except ValueError:
            raise DefinitionFileError(
                f"{where}: the value of {statement.targets[0].id} must contain only literals "
                "(strings, numbers, lists, dicts)") from None
        definitions.append((statement.lineno, value))
    return definitions


def read_definitions(path: str | Path) -> list[tuple[int, dict]]:
    """Parse a definition file; a missing or unreadable file is a DefinitionFileError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionFileError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_definitions(text, str(path))


def _is_docstring(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))
