"""Process connector: runs each instance of a service as a local OS process.

    python -m genisys.connectors.process --bind 127.0.0.1 --port 7051 [--service-file F]

A definition is {"name", "command", "environment"?, "cwd"?}. Each instance gets PORT
(a free port), GENISYS_SERVICE and GENISYS_INSTANCE in its environment and writes its
output to <log-dir>/<service>-<instance>.log.
"""

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from genisys.connectors.kit import (
    Backend,
    BackendError,
    is_os_text,
    run,
    validate_command,
    validate_environment,
)
from genisys.model import ValidationError, check_fields, validate_name

log = logging.getLogger("genisys.connector.process")


@dataclass(eq=False)
class Instance:
    number: int
    port: int
    process: asyncio.subprocess.Process
    log_path: Path


class ProcessBackend(Backend):
    """Run each instance of a service as a local OS process."""

    name = "process"

    def __init__(self, log_dir: str | Path | None = None, grace: float = 5.0):
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="genisys-process-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.grace = grace
        self._instances: dict[str, list[Instance]] = {}  # by service, oldest first
        # Stops go on when the order that began them is replaced: close() awaits them.
        self._stopping: dict[Instance, asyncio.Task] = {}
        self._numbers: dict[str, int] = {}
        self._closed = False
        log.info("instance output goes to %s/<service>-<instance>.log", self.log_dir)

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--log-dir", help="where instances write their output "
                            "(default: a new temporary directory)")
        parser.add_argument("--grace", type=float, default=5.0,
                            help="seconds between SIGTERM and SIGKILL when stopping (default 5)")

    @classmethod
    def from_args(cls, args) -> "ProcessBackend":
        return cls(args.log_dir, args.grace)

    def validate(self, definition: dict) -> dict:
        check_fields(definition, ("name", "command"), ("environment", "cwd"))
        result = {"name": validate_name(definition["name"]),
                  "command": validate_command(definition["command"]),
                  "environment": validate_environment(definition.get("environment", {}))}
        if "cwd" in definition:
            result["cwd"] = _directory(definition["cwd"])
        return result

    async def scale(self, definition: dict, number: int) -> None:
        # A newer order cancels this one at an await: each start is finished and counted
        # first, and the stops go on in the background, so no instance is left untracked.
        group = self._reap(definition["name"])
        while len(group) < number:
            await _to_the_end(self._start_into(group, definition))
        if len(group) > number:
            # The newest go first; they no longer count while they stop.
            leaving = group[number:]
            del group[number:]
            await asyncio.shield(asyncio.gather(*map(self._stop_later, leaving)))

    async def status(self, definition: dict) -> int:
        return len(self._reap(definition["name"]))

    async def close(self) -> None:
        self._closed = True
        everyone = [i for group in self._instances.values() for i in group]
        if everyone or self._stopping:
            log.info("stopping %d instance(s)", len(everyone) + len(self._stopping))
        await asyncio.gather(*map(self._stop_later, everyone), *self._stopping.values())

    def _reap(self, name: str) -> list[Instance]:
        """The service's live instances; the exited ones are dropped and logged."""
        group = self._instances.setdefault(name, [])
        for instance in [i for i in group if i.process.returncode is not None]:
            log.warning("%s instance %d exited with code %d; its output is in %s",
                        name, instance.number, instance.process.returncode, instance.log_path)
            _signal_group(instance, signal.SIGKILL)  # whatever it left behind
            group.remove(instance)
        return group

    async def _start_into(self, group: list[Instance], definition: dict) -> None:
        group.append(await self._start(definition))

    async def _start(self, definition: dict) -> Instance:
        if self._closed:
            raise BackendError("the connector is stopping.")
        name = definition["name"]
        number = self._numbers[name] = self._numbers.get(name, 0) + 1
        port = self._free_port()
        environment = {**os.environ, **definition["environment"], "PORT": str(port),
                       "GENISYS_SERVICE": name, "GENISYS_INSTANCE": str(number)}
        log_path = self.log_dir / f"{name}-{number}.log"
        try:
            with open(log_path, "ab") as output:
                # Its own session (process group): stopping it stops its children too.
                process = await asyncio.create_subprocess_exec(
                    *definition["command"], cwd=definition.get("cwd"), env=environment,
                    stdin=asyncio.subprocess.DEVNULL, stdout=output,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_die_with_the_connector)
        except OSError as exc:
            # filename: the program, or the cwd when that is what is missing
            raise BackendError(f"cannot start {name}: {exc.filename or definition['command'][0]}: "
                               f"{exc.strerror or exc}.") from None
        instance = Instance(number, port, process, log_path)
        if self._closed:  # close() ran while this one was starting
            await self._stop_later(instance)
            raise BackendError("the connector is stopping.")
        return instance

    def _stop_later(self, instance: Instance) -> asyncio.Task:
        """Stop the instance in a task of its own, tracked in _stopping until it is gone."""
        if instance not in self._stopping:
            task = self._stopping[instance] = asyncio.create_task(self._stop(instance))
            task.add_done_callback(lambda _: self._stopping.pop(instance, None))
        return self._stopping[instance]

    async def _stop(self, instance: Instance) -> None:
        _signal_group(instance, signal.SIGTERM)
        try:
            await asyncio.wait_for(instance.process.wait(), self.grace)
        except TimeoutError:
            log.warning("instance %s ignored SIGTERM for %gs: killing it",
                        instance.log_path.stem, self.grace)
        # Also its children that outlived it, or the whole group after the grace.
        _signal_group(instance, signal.SIGKILL)
        await instance.process.wait()

    def _free_port(self) -> int:
        taken = {i.port for group in self._instances.values() for i in group}
        for _ in range(100):
            with socket.socket() as probe:
                probe.bind(("", 0))
                port = probe.getsockname()[1]
            if port not in taken:  # released, but maybe not yet bound by its instance
                return port
        raise BackendError("no free port for a new instance.")


async def _to_the_end(coroutine) -> None:
    """Await the coroutine to its end even when cancelled meanwhile, then re-raise."""
    task = asyncio.ensure_future(coroutine)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # the order was replaced: its failure no longer matters
        raise


def _die_with_the_connector() -> None:
    """In the instance, before it runs: ask Linux for a SIGTERM when the connector dies,
    even by kill -9, so that no instance outlives the connector that counts it."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(instance: Instance, sig: int) -> None:
    try:
        os.killpg(instance.process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def _directory(value) -> str:
    if not isinstance(value, str) or not value or not is_os_text(value):
        raise ValidationError("cwd must be a directory path.")
    try:
        path = Path(value).resolve()  # relative to the connector's working directory
        if not path.is_dir():
            raise ValidationError(f"cwd {value!r:.80} is not a directory.")
    except OSError as exc:  # a name too long, a loop of links
        raise ValidationError(f"cwd {value!r:.80} is not a directory: {exc.strerror}.") from None
    return str(path)


def main() -> None:
    run(ProcessBackend)


if __name__ == "__main__":
    main()
