"""Docker connector: runs each instance of a service as a Docker container.

    python -m genisys.connectors.docker --port 7051 [--docker-url unix:///var/run/docker.sock]

A definition is {"name", "image", "command"?, "environment"?, "ports"?}. Containers carry
the label genisys.service=<name>; status counts the running ones. The engine holds the
state: containers outlive the connector, and a restarted connector counts them again.
"""

import asyncio
import functools
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import docker
import docker.errors
import requests.exceptions

from genisys.connectors.kit import (
    Backend,
    BackendError,
    run,
    validate_command,
    validate_environment,
)
from genisys.model import ValidationError, check_fields, validate_name

SERVICE_LABEL = "genisys.service"
INSTANCE_LABEL = "genisys.instance"
IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
PORT = re.compile(r"([0-9]{1,5})(?:/(tcp|udp|sctp))?")
# Left behind by a crash or a failed start: replaced, as the process connector reaps.
DEAD_STATES = ("created", "exited", "dead")

log = logging.getLogger("genisys.connector.docker")


class DockerBackend(Backend):
    """Run each instance of a service as a Docker container."""

    name = "docker"

    def __init__(self, docker_url: str, grace: int = 10):
        self.docker_url = docker_url
        self.grace = grace
        self._client = None
        self._client_lock = threading.Lock()
        # The docker SDK blocks: its calls run here, enough threads to stop many at once.
        self._pool = ThreadPoolExecutor(32, thread_name_prefix="docker")

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--docker-url", default=os.environ.get(
            "DOCKER_HOST", "unix:///var/run/docker.sock"),
            help="the Docker engine (default: $DOCKER_HOST or unix:///var/run/docker.sock)")
        parser.add_argument("--grace", type=int, default=10,
                            help="seconds a container has to stop before it is killed")

    @classmethod
    def from_args(cls, args) -> "DockerBackend":
        log.info("Docker engine at %s", args.docker_url)
        return cls(args.docker_url, args.grace)

    def validate(self, definition: dict) -> dict:
        check_fields(definition, ("name", "image"), ("command", "environment", "ports"))
        image = definition["image"]
        if not isinstance(image, str) or not IMAGE.fullmatch(image):
            raise ValidationError(f"image must be an image reference like 'nginx:1.27', "
                                  f"got {image!r:.80}.")
        result = {"name": validate_name(definition["name"]), "image": image,
                  "environment": validate_environment(definition.get("environment", {})),
                  "ports": _ports(definition.get("ports", []))}
        if "command" in definition:
            result["command"] = validate_command(definition["command"])
        return result

    async def scale(self, definition: dict, number: int) -> None:
        name = definition["name"]
        containers = await self._call(self._list, name, False)
        await asyncio.gather(*(self._call(c.remove, force=True)
                               for c in containers if c.status in DEAD_STATES))
        running = sorted((c for c in containers if c.status not in DEAD_STATES), key=_instance)
        last = max(map(_instance, containers), default=0)
        for instance in range(last + 1, last + 1 + number - len(running)):
            await self._call(self._run, definition, instance)
        # The newest go first.
        await asyncio.gather(*(self._call(self._remove, c) for c in running[number:]))

    async def status(self, definition: dict) -> int:
        return len(await self._call(self._list, definition["name"], True))

    async def close(self) -> None:
        log.info("containers keep running: the engine holds them")
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    async def _call(self, function, *args, **kwargs):
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, functools.partial(function, *args, **kwargs))
        except docker.errors.APIError as exc:
            explanation = str(exc.explanation or exc).rstrip(".")
            raise BackendError(f"the Docker engine refused: {explanation}.") from None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            log.debug("Docker engine at %s: %s", self.docker_url, exc)
            raise BackendError(f"no Docker engine answers at {self.docker_url}.") from None

    def _docker(self) -> docker.DockerClient:
        # Made on first use: the client asks the engine its API version, and the
        # connector must start (and validate definitions) while the engine is down.
        with self._client_lock:
            if self._client is None:
                self._client = docker.DockerClient(base_url=self.docker_url, timeout=60)
            return self._client

    def _list(self, name: str, running_only: bool):
        filters = {"label": f"{SERVICE_LABEL}={name}"}
        if running_only:
            filters["status"] = "running"
        # sparse: one call, no inspection per container; State and Labels are enough.
        return self._docker().containers.list(all=not running_only, filters=filters,
                                              sparse=True)

    def _run(self, definition: dict, instance: int) -> None:
        name = definition["name"]
        self._docker().containers.run(
            definition["image"], definition.get("command"), detach=True,
            labels={SERVICE_LABEL: name, INSTANCE_LABEL: str(instance)},
            environment={**definition["environment"], "GENISYS_SERVICE": name,
                         "GENISYS_INSTANCE": str(instance)},
            # each published on a free host port of the engine's choosing
            ports={port: None for port in definition["ports"]})

    def _remove(self, container) -> None:
        try:
            container.stop(timeout=self.grace)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass  # gone already


def _instance(container) -> int:
    label = (container.attrs.get("Labels") or {}).get(INSTANCE_LABEL, "")
    return int(label) if label.isdigit() else 0


def _ports(value) -> list[str]:
    if not isinstance(value, list):
        raise ValidationError("ports must be a list of container ports, like [80, \"53/udp\"].")
    ports = []
    for port in value:
        match = PORT.fullmatch(str(port)) if isinstance(port, (int, str)) and \
            not isinstance(port, bool) else None
        if not match or not 1 <= int(match.group(1)) <= 65535:
            raise ValidationError(f"port {port!r:.40} must be a number from 1 to 65535, "
                                  "optionally followed by /tcp, /udp or /sctp.")
        ports.append(f"{int(match.group(1))}/{match.group(2) or 'tcp'}")
    return ports


def main() -> None:
    run(DockerBackend)


if __name__ == "__main__":
    main()
