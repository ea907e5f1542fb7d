"""Docker connector: runs each instance of a service as a Docker container.

    python -m genisys.connectors.docker --port 7051 [--docker-url unix:///var/run/docker.sock]

A definition is {"name", "image", "command"?, "environment"?, "ports"?, "network"?,
"pull"?}. Container genisys-<name>-<n> carries the labels genisys.service=<name> and
genisys.instance=<n>; status counts the running ones. The engine holds the state:
containers outlive the connector, and a restarted connector adopts them by their labels.
Scaling down stops containers in the background, so that an answer never waits for a
stop's grace period; those being stopped no longer count.
"""

import asyncio
import functools
import logging
import os
import re
import threading
import time
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
from genisys.jsonbody import excerpt
from genisys.model import ValidationError, check_fields, validate_name

SERVICE_LABEL = "genisys.service"
INSTANCE_LABEL = "genisys.instance"
IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
PORT = re.compile(r"([0-9]{1,5})(?:/(tcp|udp|sctp))?")
NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Networks where a container has no ports of its own to publish.
UNPUBLISHED_NETWORKS = ("host", "none")
PULL_POLICIES = ("never", "missing", "always")
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
        # container id -> the task stopping it; those no longer count.
        self._stopping: dict[str, asyncio.Task] = {}

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
        check_fields(definition, ("name", "image"),
                     ("command", "environment", "ports", "network", "pull"))
        image = definition["image"]
        if not isinstance(image, str) or not IMAGE.fullmatch(image):
            raise ValidationError(f"image must be an image reference like 'nginx:1.27', "
                                  f"got {image!r:.80}.")
        result = {"name": validate_name(definition["name"]), "image": image,
                  "environment": validate_environment(definition.get("environment", {})),
                  "ports": _ports(definition.get("ports", [])),
                  "pull": _pull(definition.get("pull", "missing"))}
        if "command" in definition:
            result["command"] = validate_command(definition["command"])
        if "network" in definition:
            result["network"] = _network(definition["network"], result["ports"])
        return result

    async def scale(self, definition: dict, number: int) -> None:
        name = definition["name"]
        containers = await self._call(self._list, name, False)
        await asyncio.gather(*(self._call(c.remove, force=True)
                               for c in containers if c.status in DEAD_STATES))
        running = sorted((c for c in containers if c.status not in DEAD_STATES
                          and c.id not in self._stopping), key=_instance)
        if number > len(running):
            await self._call(self._ensure_image, definition)
        last = max(map(_instance, containers), default=0)
        for instance in range(last + 1, last + 1 + number - len(running)):
            await self._call(self._run, definition, instance)
        # The newest go first, in the background: a stop may take the whole grace period.
        for container in running[number:]:
            self._stop_in_background(container)
        if running[number:]:
            log.info("%s: stopping %d container(s) in the background (grace %d s)",
                     name, len(running[number:]), self.grace)

    async def status(self, definition: dict) -> int:
        containers = await self._call(self._list, definition["name"], True)
        return sum(1 for c in containers if c.id not in self._stopping)

    def _stop_in_background(self, container) -> None:
        task = asyncio.create_task(self._call(self._remove, container))
        self._stopping[container.id] = task
        task.add_done_callback(functools.partial(self._stopped, container.id))

    def _stopped(self, container_id: str, task: asyncio.Task) -> None:
        # A failed stop counts again as running: the next scale order stops it again.
        del self._stopping[container_id]
        if not task.cancelled() and task.exception():
            log.warning("could not stop container %.12s: %s", container_id, task.exception())

    async def close(self) -> None:
        if self._stopping:
            log.info("finishing %d stop(s) in flight", len(self._stopping))
            await asyncio.gather(*self._stopping.values(), return_exceptions=True)
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
                self._client = docker.DockerClient(base_url=self.docker_url,
                                                    timeout=60 + self.grace)
            return self._client

    def _list(self, name: str, running_only: bool):
        filters = {"label": f"{SERVICE_LABEL}={name}"}
        if running_only:
            filters["status"] = "running"
        # sparse: one call, no inspection per container; State and Labels are enough.
        return self._docker().containers.list(all=not running_only, filters=filters,
                                              sparse=True)

    def _ensure_image(self, definition: dict) -> None:
        """Pull the image as the definition's pull policy says; BackendError names it."""
        image, pull = definition["image"], definition["pull"]
        if pull != "always" and self._has_image(image):
            return
        if pull == "never":
            raise BackendError(f"image {image!r} is not on the Docker engine and pull is "
                               "'never', so it was not pulled.")
        started = time.monotonic()
        try:
            self._docker().images.pull(image)
        except docker.errors.APIError as exc:
            raise BackendError(f"image {image!r} could not be pulled: "
                               f"{excerpt(str(exc.explanation or exc), 200).rstrip('.')}."
                               ) from None
        log.info("pulled %s in %.1f s", image, time.monotonic() - started)

    def _has_image(self, image: str) -> bool:
        try:
            self._docker().images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def _run(self, definition: dict, instance: int) -> None:
        name = definition["name"]
        if definition["ports"] and "network" not in definition and not self._has_bridge():
            # The engine would start the container without publishing anything.
            raise BackendError("ports cannot be published: the Docker engine has no default "
                               "bridge network, so set \"network\" to one of its networks.")
        # create, not run: run would pull a missing image whatever the pull policy
        container = self._docker().containers.create(
            definition["image"], definition.get("command"), name=f"genisys-{name}-{instance}",
            labels={SERVICE_LABEL: name, INSTANCE_LABEL: str(instance)},
            environment={**definition["environment"], "GENISYS_SERVICE": name,
                         "GENISYS_INSTANCE": str(instance)},
            network_mode=definition.get("network"),
            # each published on a free host port of the engine's choosing
            ports={port: None for port in definition["ports"]})
        container.start()

    def _has_bridge(self) -> bool:
        try:
            self._docker().networks.get("bridge")
            return True
        except docker.errors.NotFound:
            return False

    def _remove(self, container) -> None:
        try:
            container.stop(timeout=self.grace)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass  # gone already


def _instance(container) -> int:
    label = (container.attrs.get("Labels") or {}).get(INSTANCE_LABEL, "")
    return int(label) if label.isdigit() else 0


def _pull(value) -> str:
    if value not in PULL_POLICIES:
        raise ValidationError(f"pull must be one of never, missing, always, got {value!r:.40}.")
    return value


def _network(value, ports: list[str]) -> str:
    if not isinstance(value, str) or not NETWORK.fullmatch(value):
        raise ValidationError(f"network must be host, none, bridge or a network's name, "
                              f"got {value!r:.80}.")
    if value in UNPUBLISHED_NETWORKS and ports:
        raise ValidationError(f"ports cannot be published with network {value!r}: "
                              "the container has no network of its own.")
    return value


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
