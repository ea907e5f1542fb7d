"""A misbehaving connector for fault tests: a real HTTP server that fails on purpose.

    python -m tests.faulty_connector --port N --fault error|slow|badjson

error: every call answers 500. slow: every call waits --delay seconds, then behaves.
badjson: every call answers 200 with a body that is not JSON.
"""

import argparse
import asyncio
import json

import tornado.web


class Handler(tornado.web.RequestHandler):
    def initialize(self, fault, delay, counts):
        self.fault, self.delay, self.counts = fault, delay, counts

    async def get(self, service=None):
        await self.misbehave()
        if service is None:
            self.write({"running_resources": self.counts})
        else:
            self.write({"running_resources": self.counts.get(service, 0)})

    async def post(self, service):
        await self.misbehave()
        self.counts[service] = int(json.loads(self.request.body)["number"])
        self.write({"service": service, "running_resources": self.counts[service]})

    async def misbehave(self):
        if self.fault == "error":
            raise tornado.web.HTTPError(500)
        if self.fault == "badjson":
            self.finish("this is not json")
            raise tornado.web.Finish()
        if self.fault == "slow":
            await asyncio.sleep(self.delay)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault", choices=["error", "slow", "badjson"], required=True)
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
