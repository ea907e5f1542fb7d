"""A misbehaving connector for fault tests: a real HTTP server that fails on purpose.

    python -m tests.faulty_connector --port N --fault FAULT

error: every call answers 500. html: every call answers 500 with an HTML error page.
slow: every call waits --delay seconds, then behaves. badjson: every call answers 200
with a body that is not JSON. deepjson: every call answers 200 with an array nested
100,000 levels deep. empty: behaves, but answers scale orders with 200 and an empty
body. liar: accepts every scale order (200, the number ordered) and never changes what
it reports. huge: reports 1,000,000,000 running for every service, whatever it is told.
"""

import argparse
import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import tornado.web

from genisys.devconsul import free_port
from tests.support import ROOT, wait_until

FAULTS = ["error", "html", "slow", "badjson", "deepjson", "empty", "liar", "huge"]
HUGE = 1_000_000_000
HTML_PAGE = ("<!doctype html>\n<html><head><title>500 Internal Server Error</title>"
             "<style>body { font-family: sans-serif; }</style></head>\n<body>"
             "<h1>Internal Server Error</h1>\n<p>The server encountered an internal error."
             "</p>" + "<!-- padding -->" * 200 + "</body></html>\n")


class Handler(tornado.web.RequestHandler):
    def initialize(self, fault, delay, counts):
        self.fault, self.delay, self.counts = fault, delay, counts

    async def get(self, service=None):
        await self.misbehave()
        if service is None:
            self.write({"running_resources": {s: self.count(s) for s in self.counts}})
        else:
            self.write({"running_resources": self.count(service)})

    async def post(self, service):
        await self.misbehave()
        number = int(json.loads(self.request.body)["number"])
        if self.fault != "liar":
            self.counts[service] = number
        if self.fault == "empty":
            return
        self.counts.setdefault(service, 0)
        self.write({"service": service,
                    "running_resources": number if self.fault == "liar" else self.count(service)})

    def count(self, service):
        return HUGE if self.fault == "huge" else self.counts.get(service, 0)

    async def misbehave(self):
        if self.fault == "error":
            raise tornado.web.HTTPError(500)
        if self.fault == "html":
            self.set_status(500)
            self.set_header("Content-Type", "text/html")
            self.finish(HTML_PAGE)
            raise tornado.web.Finish()
        if self.fault == "badjson":
            self.finish("this is not json")
            raise tornado.web.Finish()
        if self.fault == "deepjson":
            self.finish("[" * 100_000)
            raise tornado.web.Finish()
        if self.fault == "slow":
            await asyncio.sleep(self.delay)


class FaultyProcess:
    """This connector in its own process, for tests: `url`, then `stop()`."""

    def __init__(self, fault: str, log_path: Path, *args: str):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._output = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.faulty_connector", "--port", str(port),
             "--fault", fault, *args], cwd=ROOT, stdout=self._output, stderr=subprocess.STDOUT)
        wait_until(lambda: _listening(port), timeout=10, what=f"the {fault} connector")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self._output.close()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault", choices=FAULTS, required=True)
    parser.add_argument("--delay", type=float, default=30.0)
    args = parser.parse_args()
    options = {"fault": args.fault, "delay": args.delay, "counts": {}}
    app = tornado.web.Application([
        (r"/status", Handler, options),
        (r"/service/([^/]+)/(?:status|scale)", Handler, options),
    ])
    app.listen(args.port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
