"""The status page (GET /ui/) in a real browser: headless Chromium from Debian's package
(scripts/install-chromium.sh), run directly, against a replica and a process connector."""

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from tornado.websocket import websocket_connect

from genisys.api.ui import CONTENT_SECURITY_POLICY
from tests.connector_helpers import DEMO_COMMAND, ConnectorProcess, call, unique
from tests.support import wait_until

pytestmark = pytest.mark.timeout(120)

# Without a sandbox: it needs user namespaces, which containers (and root) often lack.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
# Nothing listens there. The API accepts this URL (printable ASCII, no spaces): the page
# must show it as text, never make an element of it.
INJECTED = "<img/src=x/onerror=document.title='pwned'>"
DEAD = f"http://127.0.0.1:9/{INJECTED}"


@pytest.fixture(scope="session")
def chromium():
    path = shutil.which("chromium")
    if path is None:
        missing = "chromium is not installed (scripts/install-chromium.sh installs it, as root)"
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the status page tests, but {missing}.")
        pytest.skip(missing)
    return path


def run_chromium(chromium, tmp_path, url: str, *args: str) -> str:
    """Chromium's output after the page's scripts ran for 3 s of virtual time."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         "--virtual-time-budget=3000", *args, url],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


class PageReader(HTMLParser):
    """The text of each table row (by table id) and of each element with an id."""

    def __init__(self, dom: str):
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.text: dict[str, str] = {}
        self.tags: list[str] = []
        self._table = self._cell = self._id = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "table":
            self._table = attrs.get("id")
            self.rows.setdefault(self._table, [])
        elif tag == "tr" and self._table:
            self.rows[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = ""
        if attrs.get("id"):
            self._id = attrs["id"]
            self.text[self._id] = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[self._table][-1].append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        if self._id and tag not in ("td", "th", "tr", "li", "ul", "code"):
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._id:
            self.text[self._id] += data

    def row(self, table: str, first_cell: str) -> list[str] | None:
        return next((r for r in self.rows.get(table, []) if r and r[0] == first_cell), None)


class DevToolsPage:
    """One page in a headless Chromium, driven through its DevTools protocol (a
    websocket), as a user would: read what it shows, fill a field, submit a form."""

    def __init__(self, chromium, tmp_path: Path, url: str):
        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
        self.log = open(tmp_path / "chromium.log", "ab")
        self.process = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--remote-debugging-port=0", url],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        active = profile / "DevToolsActivePort"  # Chromium writes its port there
        port = wait_until(lambda: active.exists() and active.read_text().split("\n")[0],
                          20, "Chromium's DevTools port")
        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        self.websocket = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        async def run():
            connection = await websocket_connect(self.websocket)
            try:
                connection.write_message(json.dumps({"id": 1, "method": "Runtime.evaluate",
                                                     "params": {"expression": expression,
                                                                "returnByValue": True}}))
                while True:
                    message = json.loads(await connection.read_message())
                    if message.get("id") == 1:
                        return message["result"]["result"].get("value")
            finally:
                connection.close()
        return asyncio.run(run())

    def text(self, element_id: str) -> str:
        return self.evaluate(f"document.getElementById({json.dumps(element_id)})?.innerText"
                             " ?? ''")  # '' until the page has loaded

    def shown(self, element_id: str) -> bool:
        return self.evaluate(f"document.getElementById({json.dumps(element_id)})?.hidden"
                             " === false")

    def submit_token(self, token: str) -> None:
        self.evaluate(f"document.getElementById('token').value = {json.dumps(token)};"
                      "document.getElementById('token-form').requestSubmit()")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def connector(tmp_path):
    with ConnectorProcess("genisys.connectors.process", "--log-dir", str(tmp_path),
                          log_path=tmp_path / "connector.log") as started:
        yield started


def test_the_page_shows_a_scaled_service_and_a_screenshot_is_taken(
        chromium, replica, connector, tmp_path):
    service = unique("ui")
    assert connector.call("POST", "/service", {"name": service, "command": DEMO_COMMAND})[0] == 201
    assert replica.request("POST", "/compute",
                           {"name": "local", "connector": connector.url}).status_code == 201
    assert replica.request("POST", "/compute",
                           {"name": "dead", "connector": DEAD}).status_code == 201
    assert replica.request("POST", f"/service/{service}/scale",
                           {"number": 2, "compute": "local"}).status_code == 202

    def page_shows_the_service():
        page = PageReader(run_chromium(chromium, tmp_path, f"{replica.url}/ui/", "--dump-dom"))
        row = page.row("services", service)
        # service, state, desired, placement, observed, errors, observed at
        return row and row[2:5] == ["2", "local=2", "local=2"] and page

    page = wait_until(page_shows_the_service, 60, "the page to show 2 instances observed",
                      interval=0.5)
    leader = replica.request("GET", "/leader").json()
    assert page.text["leader-id"] == leader["id"]
    assert page.text["leader-address"] == leader["address"]
    assert page.text["leader-term"] == str(leader["term"])
    assert page.text["refreshed"].startswith("refreshed at ")
    # A compute fails when a service's record shows an error for it.
    assert page.row("computes", "local")[1:] == [connector.url, "ok", ""]
    dead = page.row("computes", "dead")
    assert dead[1:3] == [DEAD, "failing"] and dead[3].startswith(f"{service}: ")
    assert page.row("services", service)[1] == "failing"  # the dead compute's errors
    if replica.request("GET", "/events").status_code == 404:
        assert page.text["orders-note"] == "No order history on this server."
    else:
        assert any(row[1] == service for row in page.rows["orders"][1:])

    assert "img" not in page.tags  # the connector URL was shown as text (above)

    screenshot = tmp_path / "status-page.png"
    run_chromium(chromium, tmp_path, f"{replica.url}/ui/", f"--screenshot={screenshot}",
                 "--window-size=1280,900")
    print(f"status page screenshot: {screenshot}")
    assert screenshot.read_bytes().startswith(b"\x89PNG")

    assert replica.request("POST", f"/service/{service}/pause").status_code == 200
    wait_until(lambda: PageReader(run_chromium(chromium, tmp_path, f"{replica.url}/ui/",
                                               "--dump-dom")).row("services", service)[1]
               == "paused", 30, "the page to show the service paused", interval=0.5)


def test_the_page_files_are_open_and_carry_a_strict_content_security_policy(replica):
    for path, content_type in (("/ui/", "text/html"), ("/ui/app.js", "text/javascript"),
                               ("/ui/style.css", "text/css")):
        response = replica.request("GET", path)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith(content_type)
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    moved = replica.request("GET", "/ui", allow_redirects=False)
    assert (moved.status_code, moved.headers["Location"]) == (301, "/ui/")


@pytest.mark.parametrize("path", ["/ui/nothing.js", "/ui/..%2Fhealth", "/ui/index.html",
                                  "/ui/app.js/x"])
def test_only_the_page_files_are_served(replica, path):
    status, body = call("GET", replica.url + path)
    assert status == 404
    assert list(body) == ["error"] and body["error"].endswith(".")


def test_the_page_is_read_only(replica):
    status, body = call("POST", f"{replica.url}/ui/", {})
    assert status == 405 and body == {"error": "method POST is not allowed on /ui/; use GET."}


def test_the_page_says_when_the_api_cannot_be_reached_and_recovers(chromium, replica, tmp_path):
    page = DevToolsPage(chromium, tmp_path, f"{replica.url}/ui/")
    try:
        leader = replica.request("GET", "/leader").json()["id"]
        wait_until(lambda: page.text("leader-id") == leader, 20, "the page to show the leader")
        refreshed = page.text("refreshed")
        assert refreshed.startswith("refreshed at ")
        replica.stop()
        wait_until(lambda: page.text("problem").startswith("The API cannot be reached since "),
                   20, "the page to say the API cannot be reached")
        # The last data stays, marked stale, and says when it was read.
        assert page.text("leader-id") == leader
        assert page.evaluate("document.getElementById('data').classList.contains('stale')")
        assert refreshed.removeprefix("refreshed at ") in page.text("problem")

        replica.start()
        wait_until(lambda: not page.shown("problem"), 20, "the page to recover")
        assert not page.evaluate("document.getElementById('data').classList.contains('stale')")
    finally:
        page.close()


BOOTSTRAP = "b" * 40  # an admin token, only to create the read token the page is given


def test_with_auth_on_the_page_asks_for_a_token_and_shows_data_only_with_one(
        chromium, start_replica, tmp_path):
    replica = start_replica(env={"GENISYS_BOOTSTRAP_TOKEN": BOOTSTRAP})
    admin = {"Authorization": f"Bearer {BOOTSTRAP}"}
    service = unique("ui")
    assert replica.request("POST", "/compute", {"name": "local", "connector": DEAD},
                           headers=admin).status_code == 201
    assert replica.request("POST", f"/service/{service}/scale", {"number": 1},
                           headers=admin).status_code == 202
    created = replica.request("POST", "/token", {"name": "viewer", "role": "read"},
                              headers=admin)
    assert created.status_code == 201, created.text

    page = DevToolsPage(chromium, tmp_path, f"{replica.url}/ui/")
    try:
        wait_until(lambda: page.shown("token-form"), 20, "the page to ask for a token")
        assert not page.shown("data") and service not in page.evaluate("document.body.innerText")

        page.submit_token("tök en")
        wait_until(lambda: page.text("problem") ==
                   "A token is one word of printable ASCII characters.", 20, "the refusal")
        page.submit_token("gen_viewer_wrong")
        wait_until(lambda: page.text("problem").startswith("The token was refused: "), 20,
                   "the page to say the token was refused")
        assert page.shown("token-form") and not page.shown("data")

        page.submit_token(created.json()["secret"])
        wait_until(lambda: service in page.text("services"), 20, "the page to show data")
        assert not page.shown("token-form") and not page.shown("problem")
        leader = replica.request("GET", "/leader", headers=admin).json()
        assert page.text("leader-id") == leader["id"]
        assert page.evaluate("sessionStorage.getItem('genisys-token')") == created.json()["secret"]
    finally:
        page.close()
