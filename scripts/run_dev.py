"""`make run`: Genisys in dev mode next to a process connector with a demo service.

Starts `python -m genisys.connectors.process` on 127.0.0.1:7051 (the address the shipped
computes.py names) with examples/services.py, then `python main.py --dev`, which starts a
Consul dev agent when none answers. Ctrl-C (or SIGTERM) stops all of them.
"""

import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONNECTOR_PORT = 7051


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main() -> int:
    children = []
    if port_in_use(CONNECTOR_PORT):
        print(f"run_dev: something already listens on {CONNECTOR_PORT}; not starting the "
              "process connector", file=sys.stderr)
    else:
        children.append(subprocess.Popen(
            [sys.executable, "-m", "genisys.connectors.process", "--port", str(CONNECTOR_PORT),
             "--service-file", "examples/services.py"], cwd=ROOT))
    genisys = subprocess.Popen([sys.executable, "main.py", "--dev", *sys.argv[1:]], cwd=ROOT)
    children.append(genisys)

    def stop(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)  # the terminal's Ctrl-C reaches the children too
    signal.signal(signal.SIGTERM, stop)
    code = genisys.wait()
    stop(None, None)
    for child in children:
        child.wait()
    return code


if __name__ == "__main__":
    sys.exit(main())
