"""Prosody under test: Debian's package, ``prosody -F`` with a config, data and certificates
of its own in a temporary directory (nothing of /etc/prosody is read or written).

A trimmed relative of ``tests/prosody.py``'s ``ProsodyProcess`` (which needs pytest).
The Lua config both write comes from here: :func:`settings` (what every Prosody
under test gets, with the deliberate differences between the benchmark and the
interop tests as parameters) and :func:`config_text`, along with :data:`MODULES`
and :func:`environment`.

Seeding writes the files of Prosody's ``internal`` storage directly:
``DATA/<host>/accounts/<user>.dat`` (copies of one account that ``prosodyctl
register`` made, so every account has the same salt and keys, like the xferd
ones) and ``DATA/<host>/roster/<user>.dat`` (a Lua table, written here). Host and
user names are encoded the way ``util/datamanager.lua`` does (every
non-alphanumeric byte as ``%xx``).

Message archiving: like xferd (whose ``[mam]`` is on by default), the
benchmark's Prosody loads ``mod_mam`` (:data:`MAM_SETTINGS`): every one-to-one
chat archived for both parties unless the user says otherwise, and kept, in
the same ``internal`` storage as the rest (Prosody 0.12 appends each entry
to a file per user: open, write, close, no fsync). ``mam=False`` leaves it out, for
the comparison with an xferd whose MAM is off (``scripts/bench --mam-off``).

The network backend is set to ``epoll`` explicitly (the 0.12 default; ``select``
would stop near FD_SETSIZE = 1024 connections), and the process inherits the
benchmark's raised RLIMIT_NOFILE.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .procs import ServerProcess, free_port
from .seed import Account

DOMAIN = "localhost"
MODULE_DIRS = [Path("/usr/lib/prosody/modules"), Path("/usr/share/prosody-modules")]
AUTH_MODULE = Path("/usr/lib/prosody/modules/mod_auth_internal_hashed.lua")
#: Prosody 0.12's built-in default when the module cannot be read
FALLBACK_ITERATIONS = 10000
#: loaded on every host besides what Prosody always loads (posix, presence,
#: message, iq, offline, c2s, s2s, s2s_auth_certs — core/modulemanager.lua):
#: roughly the features xferd serves, so both servers do similar work per login;
#: vcard is vcard-temp (XEP-0054), stored as is: `xferd migrate` copies it both ways.
#: Federation adds "dialback" (Prosody takes the list as a set: the order does not matter)
MODULES = ["roster", "saslauth", "tls", "disco", "ping", "private", "pep",
           "blocklist", "version", "time", "uptime", "vcard"]
#: mod_mam's settings when it is loaded: archive one-to-one chats of users who
#: set no preference (xferd's ``[mam] default = "always"``; Prosody's default
#: too, said here to be plain) and never expire them (xferd's ``retention_days
#: = 0``; Prosody's default deletes after a week)
MAM_SETTINGS = {"default_archive_policy": True, "archive_expires_after": "never"}


def modules(*, mam: bool, s2s: bool = False, extra: list[str] = ()) -> list[str]:
    """The modules a benchmark Prosody loads (see :data:`MODULES`)."""
    return MODULES + (["mam"] if mam else []) + (["dialback"] if s2s else []) + list(extra)


def installed() -> bool:
    return bool(shutil.which("prosody") and shutil.which("prosodyctl"))


def default_iterations() -> tuple[int, str]:
    """Prosody's internal_hashed default iteration count, and where it was read from."""
    try:
        text = AUTH_MODULE.read_text()
    except OSError:
        return FALLBACK_ITERATIONS, "built-in assumption (0.12)"
    found = re.search(r'"default_iteration_count",\s*(\d+)', text)
    if not found:
        return FALLBACK_ITERATIONS, "built-in assumption (0.12)"
    return int(found.group(1)), str(AUTH_MODULE)


def version() -> str | None:
    """The Debian package version (``prosody --version`` can hang without a config)."""
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "prosody"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def find_module(name: str, extra_dirs: list[Path] = ()) -> Path | None:
    """The directory holding ``mod_NAME`` (a .lua file or a folder of that name), if any."""
    for folder in [*extra_dirs, *MODULE_DIRS]:
        if (folder / f"mod_{name}.lua").is_file() or \
                (folder / f"mod_{name}" / f"mod_{name}.lua").is_file():
            return folder
    return None


def encode(part: str) -> str:
    """A host or user name as a path component (datamanager's ``encode``)."""
    return "".join(c if c.isascii() and c.isalnum() else
                   "".join(f"%{b:02x}" for b in c.encode()) for c in part)


def lua(value) -> str:
    """A Python value as a Lua literal."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (str, Path)):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{text}"'
    if isinstance(value, (list, tuple)):
        return "{ " + "; ".join(lua(v) for v in value) + " }"
    if isinstance(value, dict):
        return "{ " + "; ".join(f"[{lua(k)}] = {lua(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def settings(workdir: Path, *, data_dir: Path, log_path: Path, log_level: str,
             c2s_port: int, s2s_port: int, modules: list[str],
             network_backend: str | None = None, iterations: int | None = None,
             s2s_timeout: int | None = None, plugin_paths: list[Path] = (),
             dns_port: int | None = None) -> dict:
    """The global settings of a Prosody under test, living in *workdir* alone.

    Loopback only, STARTTLS required on both streams, no registration, hashed
    passwords in ``internal`` storage. The keyword arguments are what the
    benchmark and the interop tests set differently on purpose; None (or empty)
    leaves a setting out, so Prosody's default applies.
    """
    found = {
        # Prosody refuses to run as root unless told; tests in containers are root
        "run_as_root": os.geteuid() == 0,
        "pidfile": workdir / "prosody.pid",
        "data_path": data_dir,
        "certificates": workdir / "certs",
        "log": [{"levels": {"min": log_level}, "to": "file", "filename": log_path}],
        "network_backend": network_backend,
        "interfaces": ["127.0.0.1"],
        "local_interfaces": ["127.0.0.1"],
        "c2s_ports": [c2s_port],
        "s2s_ports": [s2s_port],
        "c2s_direct_tls_ports": [],
        "s2s_direct_tls_ports": [],
        "modules_enabled": list(modules),
        "authentication": "internal_hashed",
        "default_iteration_count": iterations,
        "storage": "internal",
        "allow_registration": False,
        "c2s_require_encryption": True,
        "s2s_require_encryption": True,
        # the xferd peers have self-signed certificates: dialback, not refusal
        "s2s_secure_auth": False,
        "s2s_timeout": s2s_timeout,
        "plugin_paths": [str(p) for p in plugin_paths] or None,
    }
    if dns_port is not None:
        # libunbound: no /etc/resolv.conf, no /etc/hosts, everything asked of our
        # responder, and ".test" not answered NXDOMAIN locally (RFC 6761 default zone)
        found["unbound"] = {
            "resolvconf": False, "hoststxt": False, "forward": f"127.0.0.1@{dns_port}",
            "options": {"local-zone": "test. transparent"},
        }
    return {key: value for key, value in found.items() if value is not None}


def config_text(settings: dict, hosts: dict[str, dict], comment: str) -> str:
    """A Prosody config: a *comment* line, the global *settings*, then one
    VirtualHost per entry of *hosts* (domain → its ``ssl`` table)."""
    lines = [f"-- {comment}", ""]
    lines += [f"{key} = {lua(value)}" for key, value in settings.items()]
    for domain, ssl in hosts.items():
        lines += ["", f"VirtualHost {lua(domain)}", f"    ssl = {lua(ssl)}"]
    return "\n".join(lines) + "\n"


def environment(data_dir: Path) -> dict:
    """The environment for ``prosody`` and ``prosodyctl``: no PROSODY_CONFIG, HOME in *data_dir*."""
    env = dict(os.environ)
    env.pop("PROSODY_CONFIG", None)
    env["HOME"] = str(data_dir)
    return env


def roster_file(account: Account) -> str:
    """``roster/<user>.dat``: item JID → item, plus the ``[false]`` metadata entry."""
    lines = ["return {", '\t[false] = { ["version"] = 1; ["pending"] = {}; };']
    for item in account.roster:
        fields = {"subscription": item.subscription,
                  "groups": {g: True for g in item.groups}}
        if item.name:
            fields["name"] = item.name
        lines.append(f"\t[{lua(item.jid)}] = {lua(fields)};")
    lines.append("};")
    return "\n".join(lines) + "\n"


class ProsodyServer(ServerProcess):
    name = "prosody"

    def __init__(self, workdir: Path, iterations: int, *, domains: tuple[str, ...] = (DOMAIN,),
                 s2s: bool = False, dns_port: int | None = None,
                 extra_modules: list[str] = (), plugin_paths: list[Path] = (),
                 mam: bool = True):
        from server.io.tls import generate_self_signed

        self.workdir = workdir
        self.iterations = iterations
        self.domains = domains
        self.domain = domains[0]
        self.s2s = s2s
        self.modules = modules(mam=mam, s2s=s2s, extra=extra_modules)
        # Prosody cannot report what a port-0 bind got: free ports, chosen here
        self.c2s_port = free_port()
        self.s2s_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(mode=0o750, exist_ok=True)
        self.log_path = workdir / "prosody.log"
        self.config = workdir / "prosody.cfg.lua"
        for domain in domains:
            generate_self_signed(domain, self.cert(domain), self._key(domain))
        found = settings(workdir, data_dir=self.data_dir, log_path=self.log_path,
                         log_level="warn", c2s_port=self.c2s_port, s2s_port=self.s2s_port,
                         modules=self.modules, network_backend="epoll", iterations=iterations,
                         plugin_paths=plugin_paths, dns_port=dns_port)
        if mam:
            found.update(MAM_SETTINGS)
        hosts = {d: {"certificate": self.cert(d), "key": self._key(d)} for d in domains}
        self.config.write_text(config_text(found, hosts, "Written by scripts/bench for one run."))

    def listening_ports(self) -> list[int]:
        return [self.c2s_port] + ([self.s2s_port] if self.s2s else [])

    def cert(self, domain: str | None = None) -> Path:
        return self.workdir / "certs" / f"{domain or self.domain}.crt"

    def _key(self, domain: str) -> Path:
        return self.workdir / "certs" / f"{domain}.key"

    def version(self) -> str:
        return version() or "unknown"

    def _env(self) -> dict:
        return environment(self.data_dir)

    def _store(self, domain: str, store: str) -> Path:
        return self.data_dir / encode(domain) / store

    def seed(self, accounts: list[Account], password: str) -> None:
        """Register one account with ``prosodyctl``, copy its file for the rest, write rosters.

        One prosodyctl run takes about a second, too slow for thousands of users.
        """
        first = accounts[0]
        done = subprocess.run(["prosodyctl", "--config", str(self.config), "register",
                               first.user, first.domain, password], cwd=self.workdir,
                              capture_output=True, text=True, timeout=60, env=self._env())
        if done.returncode != 0:
            raise RuntimeError(f"prosodyctl register: {done.stdout}{done.stderr}")
        made = self._store(first.domain, "accounts") / f"{encode(first.user)}.dat"
        if not made.is_file():
            raise RuntimeError(f"cannot find Prosody's account file {made}")
        text = made.read_text()
        for account in accounts:
            folder = self._store(account.domain, "accounts")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{encode(account.user)}.dat").write_text(text)
            if account.roster:
                folder = self._store(account.domain, "roster")
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{encode(account.user)}.dat").write_text(roster_file(account))

    async def roster_reader(self) -> "RosterReader":
        return RosterReader(self)

    def spawn(self) -> None:
        self.launch(["prosody", "-F", "--config", str(self.config)],
                    self.workdir / "prosody.out", self._env())

    def log(self) -> str:
        out = ""
        for path in (self.workdir / "prosody.out", self.log_path):
            try:
                out += path.read_text(errors="replace")[-3000:]
            except FileNotFoundError:
                pass
        return out


class RosterReader:
    """Reads roster items from the ``internal`` storage files of a running Prosody."""

    def __init__(self, server: ProsodyServer):
        self.server = server

    async def subscriptions(self, domain: str, users: list[str], jid: str) -> dict[str, str | None]:
        folder = self.server._store(domain, "roster")
        found = {}
        for user in users:
            try:
                text = (folder / f"{encode(user)}.dat").read_text()
            except OSError:
                found[user] = None
                continue
            found[user] = lua_item_subscription(text, jid)
        return found

    async def close(self) -> None:
        pass


def lua_item_subscription(text: str, jid: str) -> str | None:
    """The subscription of *jid*'s item in a serialised Prosody roster, None if absent.

    Only keys of the top-level table are items: the same JID also appears inside
    ``[false].pending`` while a subscription request waits.
    """
    for found in re.finditer(re.escape(f"[{lua(jid)}]") + r"\s*=\s*\{", text):
        if text.count("{", 0, found.start()) - text.count("}", 0, found.start()) != 1:
            continue
        depth = 0
        for end in range(found.end() - 1, len(text)):
            if text[end] == "{":
                depth += 1
            elif text[end] == "}":
                depth -= 1
                if depth == 0:
                    break
        body = text[found.end():end]
        sub = re.search(r'\["subscription"\]\s*=\s*"(\w+)"', body)
        return sub.group(1) if sub else "none"
    return None
