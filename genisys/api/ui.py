"""GET /ui/: the status page, three static files shipped in the package (genisys/ui/).

The files are open (no token): the page reads the JSON API with GET only and asks for a
token when the API answers 401. Only the files listed here are served, from memory: no
name from the request ever reaches the file system.
"""

from functools import cache
from importlib import resources

from genisys import jsonbody
from genisys.api.base import ApiError, JsonHandler

# Path under /ui/ -> (file under genisys/ui/, its Content-Type).
PAGE_FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}

# Scripts and styles from the page's own files only: an injected <script>, an inline
# handler or a style attribute would not run; data is fetched from this server only.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")


@cache
def page_file(name: str) -> bytes:
    return resources.files("genisys").joinpath("ui", name).read_bytes()


class StatusPageHandler(JsonHandler):
    roles = None  # open: the data it shows comes from the API, which checks tokens

    def get(self, path=""):
        if self.request.path == "/ui":  # the page's relative links need the trailing slash
            self.redirect("/ui/", permanent=True)
            return
        if path not in PAGE_FILES:
            raise ApiError(404, f"the status page has no file "
                                f"{jsonbody.excerpt(path, 80)!r}.")
        name, content_type = PAGE_FILES[path]
        self.set_header("Content-Type", content_type)
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-cache")  # revalidated (ETag) after an upgrade
        self.finish(page_file(name))
