"""The two servers under test, each a subprocess on loopback with a config of its own.

``XferdServer`` and ``ProsodyServer`` are trimmed copies of ``tests/harness.py``'s
``XferdProcess`` and ``tests/prosody.py``'s ``ProsodyProcess``: those import slixmpp,
pytest and dnspython, which are test dependencies, and the benchmark must run from a
plain ``bootstrap`` (runtime dependencies only). What differs from the test harness:
quieter logs (debug logging would be measured too), no s2s, no DNS responder, and
users are created in bulk rather than one CLI process each.

Both servers get the same SCRAM iteration count (``iterations``); Prosody's
``internal_hashed`` default is read from the installed module when it can be.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DOMAIN = "localhost"
PROSODY_AUTH_MODULE = Path("/usr/lib/prosody/modules/mod_auth_internal_hashed.lua")
#: Prosody 0.12's built-in default when the module cannot be read
PROSODY_FALLBACK_ITERATIONS = 10000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int, timeout: float, describe) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{describe()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"did not start listening on {port}:\n{describe()}")


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* from /proc/PID/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        text = fh.read()
    fields = text[text.rindex(")") + 2:].split()   # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK   # fields 14 and 15 of stat


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class _ServerProcess:
    """Start-up and shut-down shared by the two servers under test."""

    proc: subprocess.Popen | None = None
    c2s_port: int

    def _launch(self, name: str, args: list[str], out_path: Path, env: dict,
                timeout: float) -> None:
        self._log = open(out_path, "ab")
        self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        try:
            wait_listening(self.proc, self.c2s_port, timeout, self.log)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{name} {exc}") from None

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc is not None:
            self._log.close()


class XferdServer(_ServerProcess):
    name = "xferd"

    def __init__(self, workdir: Path, iterations: int):
        self.workdir = workdir
        self.iterations = iterations
        self.domain = DOMAIN
        self.c2s_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "xferd.toml"
        self.log_path = workdir / "xferd.log"
        sections = {
            "server": {"data_dir": str(workdir / "data"), "log_level": "warning"},
            "c2s": {"port": self.c2s_port, "direct_tls_port": free_port()},
            "s2s": {"enabled": False},
            # every benchmark client logs in from 127.0.0.1
            "auth": {"scram_iterations": iterations, "max_failures_per_ip": 100000},
            f'hosts."{DOMAIN}"': {"registration": False},
        }
        lines = []
        for section, values in sections.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
            lines.append("")
        self.config.write_text("\n".join(lines))
        self.proc: subprocess.Popen | None = None

    @property
    def cert(self) -> Path:
        return self.workdir / "data" / "certs" / f"{DOMAIN}.crt"

    def version(self) -> str:
        try:
            from importlib.metadata import version
            return version("xferd")
        except Exception:
            return "unknown"

    def add_users(self, names: list[str], password: str) -> None:
        """Create the accounts straight in xferd's storage (same code as ``xferd adduser``).

        The credentials are derived once and shared: the salt is the same for every
        account, which costs the server nothing extra or less at login (it never runs
        PBKDF2 for SCRAM; the client does, and caches it) — the same as for Prosody.
        """
        from server import config as xconfig
        from server.xmpp.sasl import make_all_credentials
        from storage.sqlite import SQLiteStorage

        conf = xconfig.load(self.config)
        conf.storage_path.parent.mkdir(parents=True, exist_ok=True)
        creds = make_all_credentials(password, self.iterations)

        async def create():
            store = SQLiteStorage(conf.storage_path, synchronous=conf.storage.synchronous)
            await store.open()
            try:
                for name in names:
                    await store.create_user(DOMAIN, name, creds)
            finally:
                await store.close()

        asyncio.run(create())

    def start(self, timeout: float = 30) -> None:
        env = dict(os.environ)
        env.pop("XFERD_CONFIG", None)
        self._launch("xferd", [sys.executable, "-m", "server", "serve", "-c", str(self.config)],
                     self.log_path, env, timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


def prosody_installed() -> bool:
    return bool(shutil.which("prosody") and shutil.which("prosodyctl"))


def prosody_default_iterations() -> tuple[int, str]:
    """Prosody's internal_hashed default iteration count, and where it was read from."""
    try:
        text = PROSODY_AUTH_MODULE.read_text()
    except OSError:
        return PROSODY_FALLBACK_ITERATIONS, "built-in assumption (0.12)"
    found = re.search(r'"default_iteration_count",\s*(\d+)', text)
    if not found:
        return PROSODY_FALLBACK_ITERATIONS, "built-in assumption (0.12)"
    return int(found.group(1)), str(PROSODY_AUTH_MODULE)


def prosody_version() -> str | None:
    """The Debian package version (``prosody --version`` can hang without a config)."""
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "prosody"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _lua(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (str, Path)):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "{ " + "; ".join(_lua(v) for v in value) + " }"
    if isinstance(value, dict):
        return "{ " + "; ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


#: roughly the features xferd serves, so both servers do similar work per login
PROSODY_MODULES = ["roster", "saslauth", "tls", "disco", "ping", "private", "pep",
                   "blocklist", "version", "time", "uptime", "vcard"]


class ProsodyServer(_ServerProcess):
    name = "prosody"

    def __init__(self, workdir: Path, iterations: int):
        from server.tls import generate_self_signed

        self.workdir = workdir
        self.iterations = iterations
        self.domain = DOMAIN
        self.c2s_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(mode=0o750, exist_ok=True)
        self.log_path = workdir / "prosody.log"
        self.config = workdir / "prosody.cfg.lua"
        generate_self_signed(DOMAIN, self.cert, workdir / "certs" / f"{DOMAIN}.key")
        settings = {
            "run_as_root": os.geteuid() == 0,
            "pidfile": workdir / "prosody.pid",
            "data_path": self.data_dir,
            "certificates": workdir / "certs",
            "log": [{"levels": {"min": "warn"}, "to": "file", "filename": self.log_path}],
            "interfaces": ["127.0.0.1"],
            "local_interfaces": ["127.0.0.1"],
            "c2s_ports": [self.c2s_port],
            "s2s_ports": [free_port()],
            "c2s_direct_tls_ports": [],
            "s2s_direct_tls_ports": [],
            "modules_enabled": PROSODY_MODULES,
            "authentication": "internal_hashed",
            "default_iteration_count": iterations,
            "storage": "internal",
            "allow_registration": False,
            "c2s_require_encryption": True,
        }
        lines = ["-- Written by scripts/bench for one run.", ""]
        lines += [f"{k} = {_lua(v)}" for k, v in settings.items()]
        lines += ["", f"VirtualHost {_lua(DOMAIN)}",
                  f"    ssl = {_lua({'certificate': self.cert, 'key': workdir / 'certs' / f'{DOMAIN}.key'})}",
                  ""]
        self.config.write_text("\n".join(lines))
        self.proc: subprocess.Popen | None = None

    @property
    def cert(self) -> Path:
        return self.workdir / "certs" / f"{DOMAIN}.crt"

    def version(self) -> str:
        return prosody_version() or "unknown"

    def _env(self) -> dict:
        env = dict(os.environ)
        env.pop("PROSODY_CONFIG", None)
        env["HOME"] = str(self.data_dir)
        return env

    def add_users(self, names: list[str], password: str) -> None:
        """Register the first with ``prosodyctl register``, then copy its account file.

        One prosodyctl run takes about a second, too slow for hundreds of users; the
        copies have the same salt and keys, exactly like the xferd accounts.
        """
        first, *rest = names
        done = subprocess.run(["prosodyctl", "--config", str(self.config), "register", first,
                               DOMAIN, password], cwd=self.workdir, capture_output=True,
                              text=True, timeout=60, env=self._env())
        if done.returncode != 0:
            raise RuntimeError(f"prosodyctl register: {done.stdout}{done.stderr}")
        found = list(self.data_dir.glob(f"*/accounts/{first}.dat"))
        if len(found) != 1:
            raise RuntimeError(f"cannot find Prosody's account file for {first}")
        text = found[0].read_text()
        for name in rest:
            (found[0].parent / f"{name}.dat").write_text(text)

    def start(self, timeout: float = 30) -> None:
        self._launch("prosody", ["prosody", "-F", "--config", str(self.config)],
                     self.workdir / "prosody.out", self._env(), timeout)

    def log(self) -> str:
        out = ""
        for path in (self.workdir / "prosody.out", self.log_path):
            try:
                out += path.read_text(errors="replace")[-3000:]
            except FileNotFoundError:
                pass
        return out
