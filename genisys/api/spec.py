"""GET /openapi.yaml: the API's OpenAPI document, as shipped in the package."""

from importlib.resources import files

from genisys.api.base import JsonHandler

# Read once: the document is part of the installed code, not configuration.
SPEC = (files("genisys") / "openapi.yaml").read_bytes()


class SpecHandler(JsonHandler):
    roles = None  # open: the spec holds no secret, and clients need it before a token

    def get(self):
        self.set_header("Content-Type", "application/yaml")
        self.finish(SPEC)
