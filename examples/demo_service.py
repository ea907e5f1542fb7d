"""A tiny HTTP service for the process connector: answers GET on $PORT with who it is.

    PORT=8000 python3 examples/demo_service.py
    curl localhost:8000   ->  {"service": "demo", "instance": "1", "port": 8000, "pid": 4242}
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"service": os.environ.get("GENISYS_SERVICE"),
                           "instance": os.environ.get("GENISYS_INSTANCE"),
                           "port": self.server.server_address[1],
                           "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        print(f"{self.address_string()} {format % args}", flush=True)


def main():
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), port), Hello)
    print(f"demo service listening on http://{server.server_address[0]}:{port}", flush=True)
    server.serve_forever()  # SIGTERM's default action ends it


if __name__ == "__main__":
    main()
