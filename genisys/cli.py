"""Command line: arguments, logging, signals, start-up and graceful stop."""

import argparse
import asyncio
import gc
import logging
import signal
import socket
import sys
from pathlib import Path

from genisys import allocator, auth, commands, logformat
from genisys import config as config_module
from genisys.api import Context, make_app
from genisys.auth import Authenticator
from genisys.computes_file import DefinitionFileError, read_definitions
from genisys.connector import ConnectorClient
from genisys.devconsul import DevConsul, consul_answers
from genisys.engine.reconciler import Reconciler
from genisys.failover import policy as failover_policy
from genisys.httpserver import LimitedHTTPServer, raise_fd_limit, tls_context
from genisys.leader import LeaderElection
from genisys.model import Compute, ValidationError
from genisys.permissions import PermissionWatch
from genisys.store import Conflict, ConsulStore

log = logging.getLogger("genisys")

EXIT_CONFIG = 2
# Python's defaults are (700, 10, 10). A full collection is 100 times rarer here: it paused
# the leader 100-550 ms dozens of times a minute at 100,000 services (enough to lose the
# lock), for almost no garbage; what is cyclic waits longer to be freed (more memory).
GC_THRESHOLDS = (1000, 10, 1000)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="genisys [serve]", description=(
        "Genisys: decides how many resources each service runs, and on which compute."),
        epilog=commands.SUMMARY)
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="configuration file (default: genisys.yml when it exists)")
    parser.add_argument("--dev", action="store_true", help=(
        "development mode: when no Consul answers at the configured local address, "
        "start a `consul agent -dev` there and stop it on exit"))
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--insecure", action="store_true", help=(
        "serve the API without authentication although genisys.bind is not a loopback "
        "address (anyone who reaches it can stop every service)"))
    logformat.add_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in commands.NAMES:  # a client command: genisys status, ...
        return commands.main(argv)
    args = parse_args(argv[1:] if argv[:1] == ["serve"] else argv)
    logformat.configure(args.log_level, args.log_format)
    config_path = args.config
    if config_path is None and Path("genisys.yml").exists():
        config_path = "genisys.yml"
    try:
        config = config_module.load(config_path)
        computes = load_compute_file(config, config_path)
        bootstrap = auth.read_bootstrap_token(config.genisys.bootstrap_token,
                                              config.genisys.bootstrap_token_file)
    except (config_module.ConfigError, DefinitionFileError, ValueError) as exc:
        print(f"genisys: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    open_to_others = not bootstrap and not auth.is_loopback(config.genisys.bind)
    if open_to_others and not args.insecure:
        print(f"genisys: genisys.bind {config.genisys.bind or '(every address)'} is not a "
              "loopback address, so the API needs authentication: set GENISYS_BOOTSTRAP_TOKEN "
              "(or genisys.bootstrap_token_file) to an admin token of at least 32 characters "
              "(`openssl rand -hex 32`), or pass --insecure to serve it open.", file=sys.stderr)
        return EXIT_CONFIG
    gc.set_threshold(*GC_THRESHOLDS)
    return asyncio.run(serve(config, computes, dev=args.dev, bootstrap=bootstrap,
                             insecure=open_to_others))


def load_compute_file(config, config_path) -> list[Compute]:
    """The computes defined in compute_file (relative to the configuration file)."""
    name = config.genisys.compute_file
    if not name:
        return []
    path = Path(config_path).parent / name if config_path else Path(name)
    if not path.exists():
        log.warning("compute file %s not found: starting with the registry as it is in Consul",
                    path)
        return []
    computes = []
    for line, definition in read_definitions(path):
        try:
            computes.append(Compute.from_dict(definition))
        except ValidationError as exc:
            raise DefinitionFileError(f"{path}:{line}: {exc}") from None
    return computes


async def serve(config, computes: list[Compute], dev: bool = False, bootstrap: str = "",
                insecure: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    consul_dev = None
    if dev:
        consul_dev = start_dev_consul(config)
        if consul_dev is False:
            return 1
    log.info("using Consul at %s://%s:%s (keys under %s and %s)", config.consul.scheme,
             config.consul.host, config.consul.port, config.consul.key_prefix,
             config.consul.resources_key_prefix)

    store = ConsulStore.from_config(config.consul)
    store.start()
    releasing = asyncio.create_task(allocator.release_periodically())
    # Serve once reads can come from memory (a Consul that is down delays this no longer).
    await store.wait_synced(config.consul.timeout)
    permissions = PermissionWatch(store)
    permissions.start()
    context = Context(config=config, store=store, replica_id=config.replica_id,
                      auth=Authenticator(bootstrap, store.token_record) if bootstrap else None,
                      insecure=insecure)
    if insecure:
        log.warning("--insecure: the API on %s is served WITHOUT authentication; anyone who "
                    "reaches it can stop every service", config.genisys.bind or "every address")
    else:
        log.info("API authentication is %s", "on (bearer tokens)" if bootstrap else
                 "off: bound to a loopback address without a bootstrap token")
    raise_fd_limit()
    scheme = "https" if config.genisys.tls_cert_file else "http"
    try:
        ssl_options = tls_context(config.genisys.tls_cert_file, config.genisys.tls_key_file
                                  ) if scheme == "https" else None
        server = LimitedHTTPServer(make_app(context), xheaders=True,
                                   timeout=config.genisys.http_timeout,
                                   max_connections=config.genisys.max_connections or None,
                                   ssl_options=ssl_options)
        server.listen(config.genisys.port, config.genisys.bind)
    except OSError as exc:  # ssl.SSLError too: a certificate or key that does not load
        log.error("cannot serve %s on %s:%s: %s", scheme, config.genisys.bind,
                  config.genisys.port, exc.strerror or exc)
        await permissions.stop()
        await store.close()
        releasing.cancel()
        if consul_dev:
            consul_dev.stop()
        return 1
    log.info("replica %s serving the API on %s://%s:%s", context.replica_id, scheme,
             config.genisys.bind, config.genisys.port)
    seeding = asyncio.create_task(seed_computes(store, computes))
    # connector.concurrency is per compute; the pool is shared by all of them.
    connectors = ConnectorClient(timeout=config.connector.timeout,
                                 max_connections=max(256, 8 * config.connector.concurrency),
                                 ca_file=config.connector.ca_file or None)
    reconciler = Reconciler(store, connectors, poll_interval=config.connector.poll_interval,
                            concurrency=config.connector.concurrency,
                            service_prefix=config.consul.service_prefix,
                            strategy=config.placement.strategy,
                            failover=failover_policy(config.placement),
                            velocity=config.velocity.limits)
    # The reconciliation loop is the leader's work: LeaderElection runs it while this
    # replica leads and cancels it the moment it stops.
    election = LeaderElection(store, context.replica_id, advertised_address(config),
                              lock_delay=config.leader.lock_delay,
                              check_ttl=config.leader.check_ttl, lead=reconciler.lead)
    context.is_leader = lambda: election.is_leader
    context.last_cycle = lambda: reconciler.last_cycle if election.is_leader else None
    context.troubles = lambda: [*permissions.denied, *filter(None, [election.trouble])]
    await election.start()

    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({stopping, election.fatal}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    exit_code = 1 if election.fatal.done() else 0
    # Leave the election first: stop leading, release the lock, then destroy the session
    # and deregister, so that another replica takes over at once.
    await election.stop()
    log.info("stopping: no new requests, closing the Consul connections")
    server.stop()
    seeding.cancel()
    await asyncio.gather(seeding, return_exceptions=True)
    await server.close_all_connections()
    connectors.close()
    await permissions.stop()
    await store.close()
    releasing.cancel()
    if consul_dev:
        consul_dev.stop()
        log.info("stopped the Consul dev agent")
    log.info("stopped")
    return exit_code


def advertised_address(config) -> str:
    """host:port at which other replicas and clients reach this one."""
    host = config.genisys.bind
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()  # in a container: its name on the network
    return f"{host}:{config.genisys.port}"


def start_dev_consul(config):
    """Start a dev agent when nothing answers at the configured local address.

    Returns the agent, None when a Consul already answers, False when it cannot start.
    """
    host, port = config.consul.host, config.consul.port
    if consul_answers(host, port):
        log.info("dev mode: a Consul agent already answers at %s:%s; using it", host, port)
        return None
    if host not in ("127.0.0.1", "localhost"):
        log.error("dev mode: no Consul answers at %s:%s, and a dev agent can only be started "
                  "on this machine (consul.host 127.0.0.1)", host, port)
        return False
    try:
        agent = DevConsul(http_port=port).start()
    except RuntimeError as exc:
        log.error("dev mode: %s", exc)
        return False
    log.info("dev mode: started a Consul dev agent on %s (in memory; stopped on exit)",
             agent.address)
    return agent


async def seed_computes(store: ConsulStore, computes: list[Compute]) -> None:
    """Write the compute file's definitions that Consul lacks; never overwrite one.

    Retries until Consul answers, so a replica may start before Consul does.
    """
    pending = list(computes)
    delay, warned = 0.2, False
    while pending:
        compute = pending[0]
        try:
            await store.create_compute(compute)
            log.info("compute %s -> %s defined from the compute file", compute.name,
                     compute.connector)
        except Conflict as exc:
            # A first attempt may have been applied although its answer was lost.
            existing = await _quietly_get(store, compute.name)
            if existing == compute:
                log.info("compute %s -> %s defined (as in the compute file)", compute.name,
                         compute.connector)
            elif existing is not None:
                log.info("compute %s is already defined in Consul; the compute file does not "
                         "change it", compute.name)
            else:
                log.warning("compute %s of the compute file is not defined: %s", compute.name,
                            exc)
        except Exception as exc:  # Consul down or refusing: try again, never give up
            if not warned:
                log.warning("cannot write the compute file's computes to Consul yet (%s); "
                            "retrying until it answers", exc)
                warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        pending.pop(0)


async def _quietly_get(store: ConsulStore, name: str) -> Compute | None:
    try:
        return await store.get_compute(name, consistent=True)
    except Exception:  # only for the log line
        return None
