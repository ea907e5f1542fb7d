"""Load and validate genisys.yml, apply environment overrides, parse durations ("15s").

Every key has a default, so an empty file (or none) gives a working development setup.
A bad file is refused as a whole with one sentence naming the key: a controller that
starts with half of its configuration silently ignored is worse than one that stops.
"""

import os
import re
import secrets
from dataclasses import dataclass, field, fields
from functools import cached_property
from urllib.parse import urlsplit

import yaml

from genisys.placement import STRATEGIES
from genisys.velocity import MAX_COOLDOWN, Limits


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class GenisysSection:
    bind: str = "127.0.0.1"
    port: int = 7001
    compute_file: str = "computes.py"
    http_timeout: float = 30.0  # for a request's headers (or the next request) and its body
    max_connections: int = 0  # beyond it new connections are closed; 0: half the fd limit
    # An admin token (GENISYS_BOOTSTRAP_TOKEN), or a file holding it; either turns API
    # authentication on. Never printed: repr=False.
    bootstrap_token: str = field(default="", repr=False)
    bootstrap_token_file: str = ""
    tls_cert_file: str = ""  # with tls_key_file: the API serves HTTPS
    tls_key_file: str = ""


@dataclass(frozen=True)
class ConsulSection:
    host: str = "127.0.0.1"
    port: int = 8500
    scheme: str = "http"
    token: str = ""
    service_prefix: str = ""
    key_prefix: str = "genisys/"
    resources_key_prefix: str = "skynet/resources/"
    timeout: float = 5.0
    ca_file: str = ""  # verifies an https Consul (default: the system's CAs)
    cert_file: str = ""  # with key_file: the client certificate (verify_incoming)
    key_file: str = ""
    verify: bool = True  # false only for a test agent: anyone could pose as Consul


@dataclass(frozen=True)
class ConnectorSection:
    poll_interval: float = 15.0
    timeout: float = 5.0
    concurrency: int = 64
    ca_file: str = ""  # verifies https connectors (default: the system's CAs)


@dataclass(frozen=True)
class PlacementSection:
    strategy: str = "first"
    # Failover of a dead compute's share (genisys/failover.py); 0: off.
    failover_after: float = 0.0
    failback_after: float | None = None  # None: as failover_after
    failback_step: int = 1  # instances per service moved back at a time


@dataclass(frozen=True)
class VelocitySection:
    """Every service's velocity limits unless it has its own (README "Velocity limits")."""
    max_step: int = 0  # 0: no limit
    up_cooldown: float = 0.0
    down_cooldown: float = 0.0

    @property
    def limits(self) -> Limits:
        return Limits(self.max_step or None, self.up_cooldown, self.down_cooldown)


@dataclass(frozen=True)
class LeaderSection:
    id: str = ""
    lock_delay: float = 1.0
    check_ttl: float = 3.0


@dataclass(frozen=True)
class Config:
    genisys: GenisysSection = GenisysSection()
    consul: ConsulSection = ConsulSection()
    connector: ConnectorSection = ConnectorSection()
    placement: PlacementSection = PlacementSection()
    leader: LeaderSection = LeaderSection()
    velocity: VelocitySection = VelocitySection()

    @cached_property  # the default is random: one value per configuration
    def replica_id(self) -> str:
        return self.leader.id or default_replica_id(self.genisys.port)


def default_replica_id(port: int) -> str:
    """<hostname>-<port>-<random>: unique even on hosts cloned with one hostname."""
    return f"{os.uname().nodename}-{port}-{secrets.token_hex(3)}"


# Keys whose value is a duration in seconds; "15s", "500ms", "2m" or a plain number.
DURATION_KEYS = {"consul.timeout", "connector.poll_interval", "connector.timeout",
                 "leader.lock_delay", "leader.check_ttl", "genisys.http_timeout",
                 "placement.failover_after", "placement.failback_after",
                 "velocity.up_cooldown", "velocity.down_cooldown"}
PORT_KEYS = {"genisys.port", "consul.port"}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value) -> float:
    """Seconds from "15s", "500ms", "2m", "1h" or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
        if not match:
            raise ValueError
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError
    return seconds


def load(path: str | None = None, environ=os.environ) -> Config:
    """Read the YAML file at `path` (None: defaults only) and apply the environment."""
    raw = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as stream:
                raw = yaml.safe_load(stream)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return build(raw, environ, source=path or "configuration")


def build(raw: dict, environ=os.environ, source: str = "configuration") -> Config:
    sections = {}
    for section in fields(Config):
        values = raw.get(section.name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {section.name} must be a mapping of keys")
        values = dict(values)
        _apply_environment(section.name, section.type, values, environ)
        sections[section.name] = _build_section(section.name, section.type, values, source)
    unknown = set(raw) - set(sections)
    if unknown:
        raise ConfigError(f"{source}: unknown section {sorted(unknown)[0]!r} "
                          f"(known: {', '.join(sections)})")
    config = Config(**sections)
    _check(config, source)
    return config


def environment_variable(section: str, key: str) -> str:
    """GENISYS_PORT for genisys.port, GENISYS_CONSUL_HOST for consul.host, and so on."""
    if section == "genisys":
        return f"GENISYS_{key.upper()}"
    return f"GENISYS_{section.upper()}_{key.upper()}"


def _apply_environment(section: str, cls, values: dict, environ) -> None:
    for item in fields(cls):
        name = environment_variable(section, item.name)
        if name in environ:
            values[item.name] = environ[name]
    if section == "consul":
        # Consul's own tools read these; so does Genisys, with the same precedence.
        if environ.get("CONSUL_HTTP_ADDR"):
            address = environ["CONSUL_HTTP_ADDR"]
            parts = urlsplit(address if "//" in address else "//" + address)
            try:
                values["host"], values["port"] = parts.hostname, parts.port or 8500
            except ValueError:
                raise ConfigError(f"CONSUL_HTTP_ADDR {address!r} is not host:port or "
                                  "scheme://host:port") from None
            if parts.scheme:
                values["scheme"] = parts.scheme
        if environ.get("CONSUL_HTTP_TOKEN"):
            values["token"] = environ["CONSUL_HTTP_TOKEN"]
        for variable, key in (("CONSUL_CACERT", "ca_file"), ("CONSUL_CLIENT_CERT", "cert_file"),
                              ("CONSUL_CLIENT_KEY", "key_file"),
                              ("CONSUL_HTTP_SSL_VERIFY", "verify")):
            if environ.get(variable):
                values[key] = environ[variable]
        if environ.get("CONSUL_HTTP_SSL", "").strip().lower() in ("1", "true"):
            values["scheme"] = "https"


def _build_section(section: str, cls, values: dict, source: str):
    known = {item.name: item for item in fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{source}: unknown key {section}.{key} "
                              f"(known: {', '.join(known)})")
    converted = {}
    for key, value in values.items():
        full = f"{section}.{key}"
        expected = known[key].type
        try:
            converted[key] = _convert(full, expected, value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {full}: {value!r} is not {_describe(full, expected)}") from None
    return cls(**converted)


def _convert(full: str, expected, value):
    if full in DURATION_KEYS:
        return parse_duration(value)
    if expected is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "1", "false", "0"):
            raise ValueError
        return text in ("true", "1")
    if expected is int:
        if isinstance(value, bool) or not re.fullmatch(r"\s*\d+\s*", str(value)):
            raise ValueError
        number = int(value)
        if full in PORT_KEYS and not 1 <= number <= 65535:
            raise ValueError
        return number
    if value is None or isinstance(value, (dict, list, bool)):
        raise TypeError
    return str(value)


def _describe(full: str, expected) -> str:
    if full in DURATION_KEYS:
        return "a duration (like 15s, 500ms or 2m)"
    if full in PORT_KEYS:
        return "a port number (1-65535)"
    if expected is bool:
        return "true or false"
    if expected is int:
        return "a whole number"
    return "a string"


def _check(config: Config, source: str) -> None:
    if config.placement.strategy not in STRATEGIES:
        raise ConfigError(f"{source}: placement.strategy: {config.placement.strategy!r} is not "
                          f"one of {', '.join(STRATEGIES)}")
    if config.placement.failback_step < 1:
        raise ConfigError(f"{source}: placement.failback_step must be at least 1")
    if config.consul.scheme not in ("http", "https"):
        raise ConfigError(f"{source}: consul.scheme must be http or https")
    for key in ("key_prefix", "resources_key_prefix"):
        prefix = getattr(config.consul, key)
        if not prefix.endswith("/") or prefix.startswith("/"):
            raise ConfigError(f"{source}: consul.{key}: {prefix!r} must end with '/' and not "
                              "start with one")
    if config.connector.concurrency < 1:
        raise ConfigError(f"{source}: connector.concurrency must be at least 1")
    if config.connector.poll_interval <= 0 or config.connector.timeout <= 0:
        raise ConfigError(f"{source}: connector.poll_interval and connector.timeout must be > 0")
    for section, cert, key in (("genisys", "tls_cert_file", "tls_key_file"),
                               ("consul", "cert_file", "key_file")):
        values = getattr(config, section)
        if bool(getattr(values, cert)) != bool(getattr(values, key)):
            raise ConfigError(f"{source}: {section}.{cert} and {section}.{key} go together: "
                              "set both or neither")
    if config.genisys.http_timeout <= 0:
        raise ConfigError(f"{source}: genisys.http_timeout must be > 0")
    if config.leader.check_ttl < 1:
        raise ConfigError(f"{source}: leader.check_ttl must be at least 1s")
    for key in ("up_cooldown", "down_cooldown"):
        if getattr(config.velocity, key) > MAX_COOLDOWN:
            raise ConfigError(f"{source}: velocity.{key} must be at most 24h")
