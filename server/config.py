"""Configuration: a TOML file (``tomllib``) checked against the dataclasses below.

The dataclasses are the schema: every key, its type and its default live in
one place, and ``conf/xferd.toml`` documents them. Unknown keys and wrong
types are errors that name the key (with a "did you mean" hint), because a
silently ignored typo in a server config is a security bug waiting to happen.

Relative paths in a config file are taken from the file's own directory (as
Prosody does for its certificates), so that every command run with the same
file finds the same database and certificates, whatever directory it is run
from. Only the built-in defaults (no file at all) are relative to the working
directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """The configuration is unusable; the message names the key and the file."""


@dataclass
class ServerConfig:
    data_dir: str = "data"          # SQLite file, generated certificates
    log_level: str = "info"         # debug, info, warning, error
    trace: bool = False             # log every stanza in and out (see README)
    ca_dir: str = ""                # the local CA (xferd cert); "" = data_dir/ca


@dataclass
class StorageConfig:
    path: str = "xferd.sqlite"      # relative to data_dir
    synchronous: str = "full"       # full | normal (see storage/sqlite/engine.py)
    # a cap on the database file, refused writes as on a full disk (see conf/xferd.toml)
    max_size: int = 0


@dataclass
class C2SConfig:
    interfaces: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = 5222                # STARTTLS; 0 picks a free port
    direct_tls: bool = True         # XEP-0368 TLS on connect
    direct_tls_port: int = 5223
    require_encryption: bool = True  # STARTTLS before anything else
    auth_timeout: float = 60.0      # seconds to finish authentication and bind
    max_stanza_size: int = 256 * 1024
    max_depth: int = 32
    max_output_buffer: int = 4 * 1024 * 1024   # bytes queued for a client that does not read
    stanza_rate: float = 50.0       # stanzas/s one connection may send on average (0 = no limit)
    stanza_burst: int = 200         # … and at once; beyond that we read it more slowly
    max_connections_per_ip: int = 32  # live connections from one address (0 = no limit)
    # attributes on one element, c2s and s2s alike (see conf/xferd.toml)
    max_attributes: int = 64
    # elements in one stanza, c2s and s2s alike (see conf/xferd.toml)
    max_elements: int = 8192


@dataclass
class RouteConfig:
    host: str = "127.0.0.1"
    port: int = 5269
    tls: str = "starttls"           # starttls | direct (XEP-0368) | none


@dataclass
class S2SConfig:
    enabled: bool = True            # federation on (listener and outbound)
    interfaces: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = 5269                # 0 picks a free port
    require_encryption: bool = True  # STARTTLS (or direct TLS) both ways
    nameserver: str = ""            # "host:port" of the DNS server to ask; "" = the system's
    ca_file: str = ""               # check peer certificates against this CA ("" = dialback only)
    dialback_secret: str = ""       # "" = a random secret per start (XEP-0185)
    connect_timeout: float = 10.0
    dialback_timeout: float = 30.0  # waiting for a dialback answer
    negotiation_timeout: float = 60.0  # an inbound stream must authenticate within this
    idle_timeout: float = 300.0     # close an outbound stream unused this long
    max_queue: int = 1000           # stanzas held per remote domain while connecting
    stanza_rate: float = 500.0      # stanzas/s one s2s stream may send (0 = no limit)
    stanza_burst: int = 2000
    max_connections_per_ip: int = 100  # inbound streams from one address (0 = no limit)
    routes: dict[str, RouteConfig] = field(default_factory=dict)   # domain → where


@dataclass
class AuthConfig:
    scram_iterations: int = 4096    # PBKDF2 rounds for new credentials
    allow_plain: bool = True        # PLAIN, only ever offered over TLS
    # failed logins (server/io/throttle.py LoginThrottle; 0 = no limit)
    max_failures: int = 10          # per account from one address …
    max_failures_per_ip: int = 20   # … and per address over all accounts …
    failure_window: float = 300.0   # … within this many seconds
    account_max_failures: int = 150  # per account from all addresses: a bucket of this size …
    account_failure_window: float = 3600.0  # … draining in this many seconds; when full,
    trusted_address_time: float = 30 * 86400.0  # only addresses the account used this recently


@dataclass
class RegistrationConfig:
    """XEP-0077 in-band registrations per client address, over all hosts."""
    max_per_address: int = 1        # accounts one address may create … (0 = no limit)
    window: float = 600.0           # … within this many seconds


@dataclass
class IMConfig:
    offline_quota: int = 1000       # messages kept per user while offline (XEP-0160)
    max_roster_items: int = 10000   # roster sets beyond this get <not-allowed/>
    # -- quotas per account (conf/xferd.toml says why each default) --
    offline_max_bytes: int = 10 * 1024 * 1024   # stored offline messages, bytes per user
    private_max_fragments: int = 100            # XEP-0049 fragments per account
    private_max_bytes: int = 1024 * 1024        # … and their total size in bytes
    pep_max_nodes: int = 256                    # XEP-0163 nodes per account
    pep_max_item_bytes: int = 128 * 1024        # one published payload, bytes
    pep_max_bytes: int = 8 * 1024 * 1024        # all items of the account's nodes, bytes
    roster_max_name: int = 256                  # characters of a roster item's name
    roster_max_group: int = 128                 # characters of one group name
    roster_max_groups: int = 16                 # groups of one roster item
    subscription_max_status: int = 1024         # characters of <status/> kept in a stored request
    subscription_max_request: int = 8192        # bytes of a stored subscription request


@dataclass
class MovedConfig:
    auto_update: bool = True        # XEP-0283 server-side roster update for contacts
    verify_timeout: float = 30.0    # waiting for the old account's moved statement
    failure_cache: float = 600.0    # seconds a failed verification is not retried
    max_per_minute: int = 60        # verifications per old JID per minute (then: manual)
    # a contact's roster once a move is verified (XEP-0283) or confirmed (XEP-0015):
    old_contact: str = "remove"     # "remove": one entry, the new one; "keep": both stay
    notify_contacts: bool = True    # tell the contact's clients in plain words


@dataclass
class AccountXferConfig:
    enabled: bool = True            # XEP-0015 account transfer, all three roles
    publish_moved: bool = True      # old server: publish the XEP-0283 statement too
    confirm: bool = True            # contact's server: ask the new account's server first
    legacy_ask: bool = True         # accept the XEP's own type='ask' as 'set'
    notice_timeout: float = 30.0    # per notice (C), roster hand-over (D) and check (G)


@dataclass
class MamConfig:
    enabled: bool = True            # XEP-0313 archives of one-to-one messages, XEP-0359 ids
    default: str = "always"         # archiving for users who set no preference: always|roster|never
    retention_days: int = 0         # entries older than this many days are deleted (0: kept)
    max_page: int = 100             # results per query page at most (and without <max/>)


@dataclass
class HostConfig:
    cert: str = ""                  # PEM certificate; empty: generated in data_dir/certs
    key: str = ""                   # PEM private key
    registration: bool = True       # XEP-0077 in-band registration


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    c2s: C2SConfig = field(default_factory=C2SConfig)
    s2s: S2SConfig = field(default_factory=S2SConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    im: IMConfig = field(default_factory=IMConfig)
    moved: MovedConfig = field(default_factory=MovedConfig)
    accountxfer: AccountXferConfig = field(default_factory=AccountXferConfig)
    mam: MamConfig = field(default_factory=MamConfig)
    hosts: dict[str, HostConfig] = field(
        default_factory=lambda: {"localhost": HostConfig()})
    source: str = "<built-in defaults>"

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def storage_path(self) -> Path:
        return self.data_dir / self.storage.path

    @property
    def certs_dir(self) -> Path:
        return self.data_dir / "certs"

    @property
    def ca_dir(self) -> Path:
        return Path(self.server.ca_dir) if self.server.ca_dir else self.data_dir / "ca"


_SECTION_TYPES = {"server": ServerConfig, "storage": StorageConfig, "c2s": C2SConfig,
                  "s2s": S2SConfig, "auth": AuthConfig, "registration": RegistrationConfig,
                  "im": IMConfig,
                  "moved": MovedConfig, "accountxfer": AccountXferConfig,
                  "mam": MamConfig}
_CHOICES = {("server", "log_level"): ("debug", "info", "warning", "error"),
            ("storage", "synchronous"): ("full", "normal"),
            ("moved", "old_contact"): ("remove", "keep"),
            ("mam", "default"): ("always", "roster", "never")}
_ROUTE_TLS = ("starttls", "direct", "none")


def caller_path(text: str) -> str:
    """A path typed on the command line, taken from the directory it was typed
    in. ``scripts/serve`` runs xferd in the repository and names the caller's
    directory in ``$XFERD_CALLER_DIR``; without it, the working directory is
    the caller's (``scripts/xferd`` stays where it was called)."""
    base = os.environ.get("XFERD_CALLER_DIR")
    return os.path.join(base, text) if base and not os.path.isabs(text) else text


def checkout_config_path() -> Path | None:
    """``conf/xferd.toml`` of the checkout this code runs from (``pip install -e``,
    ``scripts/xferd``), if there is one; an installed package has none."""
    candidate = Path(__file__).resolve().parent.parent / "conf" / "xferd.toml"
    return candidate if candidate.is_file() else None


def default_config_path() -> Path | None:
    """The config a command uses without ``-c``: ``$XFERD_CONFIG``, else the
    checkout's ``conf/xferd.toml``; None means the built-in defaults.

    Never a file found in the working directory: the same command must act on
    the same server's data wherever it is typed."""
    env = os.environ.get("XFERD_CONFIG")
    if env:
        return Path(caller_path(env)).absolute()
    return checkout_config_path()


def load(path: str | os.PathLike | None) -> Config:
    """Read and check a config file; None gives the built-in defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = parse(raw, str(path))
    _resolve_paths(config, path.absolute().parent)
    return config


def _resolve_paths(config: Config, base: Path) -> None:
    """Make the file's relative paths (and the default ``data_dir``) absolute,
    taken from *base*, the config file's directory (module docstring)."""
    def resolved(text: str) -> str:
        return os.path.normpath(base / text) if text else text
    config.server.data_dir = resolved(config.server.data_dir)
    config.server.ca_dir = resolved(config.server.ca_dir)
    config.s2s.ca_file = resolved(config.s2s.ca_file)
    for host in config.hosts.values():
        host.cert, host.key = resolved(host.cert), resolved(host.key)


def parse(raw: dict, source: str = "<config>") -> Config:
    """Build a :class:`Config` from a TOML document (already decoded)."""
    config = Config(source=source)
    for name, value in raw.items():
        if name == "hosts":
            config.hosts = _parse_hosts(value, source)
            continue
        if name not in _SECTION_TYPES:
            raise ConfigError(_unknown(source, name, "", list(_SECTION_TYPES) + ["hosts"]))
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        setattr(config, name, _parse_section(_SECTION_TYPES[name], value, source, name))
    if not config.hosts:
        raise ConfigError(f"{source}: [hosts] must name at least one domain")
    return config


def _parse_hosts(value, source: str) -> dict[str, HostConfig]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [hosts] must be a table of domains")
    from .xmpp.jid import JIDError, nameprep
    hosts = {}
    for domain, table in value.items():
        try:
            prepared = nameprep(domain)
        except JIDError as exc:
            raise ConfigError(f"{source}: hosts.{domain!r} is not a valid domain: {exc}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [hosts.{domain!r}] must be a table")
        if prepared in hosts:
            raise ConfigError(f"{source}: hosts.{domain!r} names {prepared} a second time")
        hosts[prepared] = _parse_section(HostConfig, table, source, f"hosts.{domain!r}")
    return hosts


def _parse_routes(value, source: str) -> dict[str, RouteConfig]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [s2s.routes] must be a table of domains")
    from .xmpp.jid import JIDError, nameprep
    routes = {}
    for domain, table in value.items():
        where = f"s2s.routes.{domain!r}"
        try:
            prepared = nameprep(domain)
        except JIDError as exc:
            raise ConfigError(f"{source}: {where} is not a valid domain: {exc}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {where} must be a table like "
                              "{{ host = \"127.0.0.1\", port = 5269 }}")
        routes[prepared] = _parse_section(RouteConfig, table, source, where)
    return routes


def _parse_section(cls, table: dict, source: str, section: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(_unknown(source, key, section, list(known)))
        if cls is S2SConfig and key == "routes":
            values[key] = _parse_routes(value, source)
            continue
        values[key] = _check_type(value, hints[key], f"{source}: {section}.{key}")
        choices = _CHOICES.get((section, key))
        if choices and values[key] not in choices:
            raise ConfigError(f"{source}: {section}.{key} must be one of "
                              f"{', '.join(choices)}; got {value!r}")
    if cls is RouteConfig and values.get("tls", "starttls") not in _ROUTE_TLS:
        raise ConfigError(f"{source}: {section}.tls must be one of {', '.join(_ROUTE_TLS)}")
    instance = cls(**values)
    _check_limits(instance, source, section)
    if cls is S2SConfig:
        _check_s2s(instance, source)
    for key in ("port", "direct_tls_port"):
        port = getattr(instance, key, None)
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"{source}: {section}.{key} must be 0–65535; got {port}")
    return instance


#: the smallest value each resource limit takes (0 is "no limit" for the first two)
_LIMITS = {"stanza_rate": 0, "max_connections_per_ip": 0, "stanza_burst": 1}
# failed logins and registrations: 0 is "no limit" (a window of 0 counts nothing)
_LIMITS.update(dict.fromkeys(("max_failures", "max_failures_per_ip", "failure_window",
                              "account_max_failures", "account_failure_window",
                              "trusted_address_time", "max_per_address", "window"), 0))
#: per-account quotas: 0 would refuse everything, so 1 is the least (a stored
#: request keeps at least its own element)
_LIMITS.update({"offline_max_bytes": 1, "private_max_fragments": 1, "private_max_bytes": 1,
                "pep_max_nodes": 1, "pep_max_item_bytes": 1, "pep_max_bytes": 1,
                "roster_max_name": 1, "roster_max_group": 1, "roster_max_groups": 1,
                "subscription_max_status": 0, "subscription_max_request": 256,
                "retention_days": 0, "max_page": 1})


def _check_limits(instance, source: str, section: str) -> None:
    """A negative limit (or a burst below one stanza) is a typo, not a policy."""
    for key, smallest in _LIMITS.items():
        value = getattr(instance, key, None)
        if value is not None and value < smallest:
            raise ConfigError(f"{source}: {section}.{key} must be at least {smallest}; "
                              f"got {value}")


def _check_s2s(s2s: S2SConfig, source: str) -> None:
    if s2s.nameserver:
        host, _, port = s2s.nameserver.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{source}: s2s.nameserver must look like \"127.0.0.1:5353\"")
    for domain, route in s2s.routes.items():
        if route.tls == "none" and s2s.require_encryption:
            raise ConfigError(f"{source}: s2s.routes.{domain!r} has tls = \"none\" but "
                              "s2s.require_encryption is true")


def _check_type(value, expected, where: str):
    origin = typing.get_origin(expected)
    if origin is list:
        (item_type,) = typing.get_args(expected)
        if not isinstance(value, list) or not all(isinstance(v, item_type) for v in value):
            raise ConfigError(f"{where} must be a list of {item_type.__name__}; got {value!r}")
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"{where} must be {_type_name(expected)}; got {value!r}")
    return value


def _type_name(t) -> str:
    return {int: "an integer", float: "a number", bool: "true or false",
            str: "a string"}.get(t, t.__name__)


def _unknown(source: str, key: str, section: str, known: list[str]) -> str:
    where = f"{section}.{key}" if section else f"[{key}]"
    guess = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return f"{source}: unknown key {where}{hint}"
