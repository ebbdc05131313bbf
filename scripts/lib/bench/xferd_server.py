"""xferd under test: ``python -m server serve`` on loopback with a config of its own.

A trimmed relative of ``tests/harness.py``'s ``XferdProcess`` (which imports
slixmpp and pytest, test dependencies the benchmark must not need). Logging
is at ``warning`` so that logging is not what is measured; s2s is off unless
a scenario federates (then static routes, no DNS). Every listener binds port
0 and the server reports the ports it got (``serve --ports-file``); routes to
servers started alongside are added once their ports are known, by a SIGHUP
reload the server acknowledges in the same file. Accounts and rosters go
straight into storage with ``import_user`` — one transaction per account, the
same call ``xferd import`` makes for a XEP-0227 file.

Every benchmark client comes from 127.0.0.1 and sends as fast as the scenario
asks, so xferd's per-address and per-connection c2s limits (``LIMITS_OFF``) are
switched off — Prosody 0.12 without mod_limits has none either. Only the keys
this xferd knows are written (the limits are newer than the benchmark).
The s2s limits keep their defaults.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from .procs import ServerProcess, read_status, toml_value
from .seed import Account

DOMAIN = "localhost"
#: (section, key) → value: limits that would measure the policy instead of the server
LIMITS_OFF = {("c2s", "stanza_rate"): 0, ("c2s", "max_connections_per_ip"): 0,
              ("auth", "max_failures_per_ip"): 100000}


def xferd_version() -> str:
    try:
        from importlib.metadata import version
        return version("xferd")
    except Exception:                               # noqa: BLE001 — not installed as a package
        return "unknown"


def limits_off() -> dict[str, dict]:
    """The ``LIMITS_OFF`` keys this xferd's config schema has, as config sections."""
    import dataclasses
    from server import config as xconfig
    known = {name: {f.name for f in dataclasses.fields(cls)}
             for name, cls in xconfig._SECTION_TYPES.items()}
    out: dict[str, dict] = {}
    for (section, key), value in LIMITS_OFF.items():
        if key in known.get(section, ()):
            out.setdefault(section, {})[key] = value
    return out


class XferdServer(ServerProcess):
    name = "xferd"

    def __init__(self, workdir: Path, iterations: int, *, domains: tuple[str, ...] = (DOMAIN,),
                 routes: dict[str, int] | None = None, overrides: dict | None = None,
                 s2s: bool = False):
        self.workdir = workdir
        self.iterations = iterations
        self.domains = domains
        self.domain = domains[0]
        # port 0 everywhere: known once the server reports them (wait_ready)
        self.c2s_port = self.s2s_port = self.direct_tls_port = None
        self._reloads = 0
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "xferd.toml"
        self.ports_file = workdir / "ports.json"
        self.log_path = workdir / "xferd.log"
        self.sections = {
            "server": {"data_dir": str(workdir / "data"), "log_level": "warning"},
            "c2s": {"port": 0, "direct_tls_port": 0},
            "s2s": {"enabled": s2s or bool(routes), "port": 0},
            "auth": {"scram_iterations": iterations},
        }
        for section, values in limits_off().items():
            self.sections.setdefault(section, {}).update(values)
        for section, values in (overrides or {}).items():
            self.sections.setdefault(section, {}).update(values)
        for domain in domains:
            self.sections[f'hosts."{domain}"'] = {"registration": False}
        self.add_routes(routes or {})
        self._write_config()

    def add_route(self, domain: str, port: int) -> None:
        """A static s2s route to *domain* on loopback (see ``add_routes``)."""
        self.add_routes({domain: port})

    def add_routes(self, routes: dict[str, int]) -> None:
        """Static s2s routes (domain → loopback port). Before ``spawn`` they
        are in the config it starts with; on a running server they take
        effect at once (config rewritten, SIGHUP, reload acknowledged)."""
        if not routes:
            return
        self.sections["s2s"]["enabled"] = True
        for domain, port in routes.items():
            self.sections[f's2s.routes."{domain}"'] = {"host": "127.0.0.1", "port": port}
        self._write_config()
        if self.alive():
            self.reload()

    def reload(self, timeout: float = 10) -> None:
        """SIGHUP; until the ports file's ``reloads`` count says it was done."""
        self.proc.send_signal(signal.SIGHUP)
        status = read_status(self.proc, self.ports_file,
                             lambda st: st["reloads"] > self._reloads, timeout, self.log)
        self._reloads = status["reloads"]

    def _write_config(self) -> None:
        lines = []
        for section, values in self.sections.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
            lines.append("")
        self.config.write_text("\n".join(lines))

    def listening_ports(self) -> list[int]:
        ports = [self.c2s_port]
        if self.sections["s2s"]["enabled"]:
            ports.append(self.s2s_port)
        return ports

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the server reports its bound ports (it writes the ports file
        once every listener is bound)."""
        try:
            status = read_status(self.proc, self.ports_file, lambda st: True, timeout, self.log)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{self.name} {exc}") from None
        self._reloads = status["reloads"]
        ports = status["ports"]
        self.c2s_port = ports["c2s"]
        self.direct_tls_port = ports.get("c2s_direct_tls")
        self.s2s_port = ports.get("s2s")

    def cert(self, domain: str | None = None) -> Path:
        return self.workdir / "data" / "certs" / f"{domain or self.domain}.crt"

    def version(self) -> str:
        return xferd_version()

    def _storage(self):
        from server import config as xconfig
        from storage.sqlite import SQLiteStorage
        conf = xconfig.load(self.config)
        conf.storage_path.parent.mkdir(parents=True, exist_ok=True)
        return conf, SQLiteStorage

    def seed(self, accounts: list[Account], password: str) -> None:
        """Create *accounts* with their rosters, before ``start``.

        The credentials are derived once and shared (same salt for everyone): the
        server never runs PBKDF2 at login, the client does and caches it — the same
        holds for the Prosody accounts. ``synchronous=normal`` for the seeding only:
        the server itself runs with the configured (default: full) durability.
        """
        from server.xmpp.sasl import make_all_credentials
        from storage.api import RosterItem, UserData

        conf, storage_class = self._storage()
        creds = make_all_credentials(password, self.iterations)

        async def create():
            store = storage_class(conf.storage_path, synchronous="normal")
            await store.open()
            try:
                for account in accounts:
                    roster = [RosterItem(i.jid, i.name, i.subscription, groups=i.groups)
                              for i in account.roster]
                    await store.import_user(account.domain, account.user,
                                            UserData(credentials=creds, roster=roster))
            finally:
                await store.close()

        asyncio.run(create())

    async def roster_reader(self) -> "RosterReader":
        """A reader of the running server's rosters (for the migration scenario)."""
        conf, _ = self._storage()
        return RosterReader(conf.storage_path)

    def spawn(self) -> None:
        env = dict(os.environ)
        env.pop("XFERD_CONFIG", None)
        self.ports_file.unlink(missing_ok=True)
        self.launch([sys.executable, "-m", "server", "serve", "-c", str(self.config),
                     "--ports-file", str(self.ports_file)], self.log_path, env)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


class RosterReader:
    """Who holds a roster item for a JID, asked of the live SQLite file, read-only.

    A measurement probe, so it must cost the machine next to nothing while the
    servers work: one query per poll over the ``roster_items`` table, on a
    ``mode=ro`` connection (WAL: it never blocks the server's writer). The
    storage API has no "which users have JID X" call; asking it user by user
    would cost a round trip per contact per poll, enough CPU to slow the servers
    under test.
    """

    def __init__(self, path: Path):
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)

    async def subscriptions(self, domain: str, users: list[str], jid: str) -> dict[str, str | None]:
        """user → subscription of its roster item for *jid* (None: no such item)."""
        rows = self.db.execute("SELECT username, subscription FROM roster_items "
                               "WHERE host = ? AND jid = ?", (domain, jid)).fetchall()
        held = dict(rows)
        return {user: held.get(user) for user in users}

    async def close(self) -> None:
        self.db.close()
