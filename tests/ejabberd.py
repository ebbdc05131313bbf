"""Interop harness: a real ejabberd (Debian's 23.01 package) on loopback, private in every way.

``EjabberdProcess`` writes its own ``ejabberd.yml``, Mnesia spool, log
directory, HOME (holding the node's Erlang cookie), ``inetrc`` and
self-signed certificate into a temporary directory, and runs the Erlang VM
directly::

    erl -sname NODE@localhost -noinput -erl_epmd_port DIST -start_epmd false
        -kernel inet_dist_use_interface '{127,0,0,1}' -mnesia dir '"SPOOL"' -s ejabberd

Why not ``ejabberdctl start``: the packaged script reads /etc/ejabberd,
switches to the ``ejabberd`` user with ``su`` when run as root (which cannot
read a root-owned temporary directory) and refuses every other user. Running
``erl`` ourselves works the same as root and as a normal user, and is exactly
what the script would run (``ejabberdctl foreground``) with our paths.

Erlang distribution without epmd: ``-erl_epmd_port DIST`` makes the node
listen on DIST (a free port, bound to 127.0.0.1 by
``inet_dist_use_interface``) and look every other node up on that same port,
and ``-start_epmd false`` keeps it from starting (or asking) an epmd. So no
epmd daemon is left behind, none is shared with the system's or with
parallel test runs, and nothing listens on 4369. The node names are short
names on ``localhost``, which the ``inetrc`` maps to 127.0.0.1.

Commands (``ctl()``): the same way as ejabberdctl does it, a second, hidden
Erlang node started with ``-s ejabberd_ctl -extra NODE COMMAND ARGS``, with
``-dist_listen false`` (it listens nowhere) and the same HOME, hence the same
cookie. Each call starts a VM (under a second), so tests call it sparingly;
``adduser`` needs the node running (unlike prosodyctl, it writes nothing
itself). File arguments (``export_piefxis DIR``, ``export_piefxis_host DIR
HOST``, ``import_piefxis FILE``) are opened by the ejabberd node, whose
working directory is the spool: give absolute paths, and an existing
directory to export into.

DNS: Erlang's resolver reads ``ERL_INETRC``: it asks only the tests'
``DNSResponder`` (``resolv_conf`` and ``hosts_file`` disabled, lookup order
``file, dns``), so ejabberd finds ``_xmpp-server._tcp`` SRV records there,
like Prosody and xferd do. But it resolves an SRV record's *target* with
``net:getaddrinfo`` (p1_xmpp's xmpp_stream_out.erl, on OTP ≥ 24.3), that is
libc, which never asks our responder: a peer's SRV target must be an IP
literal (``127.0.0.1.``) for ejabberd to reach it.

Federation: STARTTLS required both ways, with the harness' self-signed
certificate; the peers' self-signed certificates do not verify, so the
streams authenticate with XEP-0220 dialback (``mod_s2s_dialback``: with it
loaded ejabberd does not insist on a valid certificate for its outgoing
streams, and offers dialback on incoming ones). ``s2s_max_retry_delay`` is
one second: ejabberd remembers a destination it failed to reach for that long.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from server.io.tls import generate_self_signed
from tests.prosody import PeerFiles, free_port

ERL = "erl"
EJABBERDCTL = "ejabberdctl"         # only to tell whether the package is installed

#: the interop tests' ejabberd domain (``.test``, RFC 6761, like the others)
EJABBERD_DOMAIN = "ejabberd.test"


def ejabberd_libs() -> Path | None:
    """The directory holding ``ejabberd-VERSION/`` (Debian: /usr/lib/<triplet>),
    the ERL_LIBS ejabberdctl sets, or None."""
    for app in sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.app")):
        return Path(app).parents[2]
    return None


def require_ejabberd() -> None:
    """Skip (or, under CI, fail) when Debian's ejabberd is not installed."""
    if shutil.which(ERL) and shutil.which(EJABBERDCTL) and ejabberd_libs():
        return
    message = "ejabberd is not installed (apt-get install ejabberd, its service kept stopped)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class EjabberdProcess(PeerFiles):
    """An ejabberd serving *domain* on free loopback ports, with its own config and data."""

    OUTPUT = "ejabberd.out"

    def __init__(self, workdir: Path, domain: str = EJABBERD_DOMAIN, *,
                 dns_port: int | None = None, settings: dict | None = None,
                 modules: dict | None = None, loglevel: str = "info"):
        self.workdir = workdir
        self.domain = domain
        self.dns_port = dns_port
        self.c2s_port = free_port()
        self.s2s_port = free_port()
        self.dist_port = free_port()
        self.node = f"ejabberd{self.dist_port}@localhost"
        self.config = workdir / "ejabberd.yml"
        self.spool = workdir / "spool"
        self.log_dir = workdir / "log"
        self.log_path = self.log_dir / "ejabberd.log"
        self.home = workdir / "home"
        self.inetrc = workdir / "inetrc"
        self.settings = settings or {}
        self.modules = modules or {}
        self.loglevel = loglevel
        self.proc: subprocess.Popen | None = None
        for directory in (self.spool, self.log_dir, self.home):
            directory.mkdir(parents=True, mode=0o700, exist_ok=True)
        cookie = self.home / ".erlang.cookie"       # Erlang insists on mode 0400
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        generate_self_signed(domain, self.cert(), self.key())
        self.inetrc.write_text(self.inetrc_text())
        self.config.write_text(self.config_text())

    def cert(self, domain: str | None = None) -> Path:
        """ejabberd's certificate: a client trusts it as its CA (``login()`` asks this)."""
        return self.workdir / "certs" / f"{domain or self.domain}.crt"

    def key(self) -> Path:
        return self.workdir / "certs" / f"{self.domain}.key"

    # configuration

    def inetrc_text(self) -> str:
        """Erlang's resolver configuration (kernel's inet_config): the tests' DNS only."""
        lines = ['{resolv_conf, ""}.', '{hosts_file, ""}.',
                 '{host, {127,0,0,1}, ["localhost"]}.', "{lookup, [file, dns]}.",
                 "{timeout, 2000}.", "{retry, 2}."]
        if self.dns_port is not None:
            lines.append(f"{{nameserver, {{127,0,0,1}}, {self.dns_port}}}.")
        return "\n".join(lines) + "\n"

    #: loaded on the host: roughly what xferd serves, and what the tests ask of
    #: ejabberd (XEP-0227 import/export covers roster, vCard, private, offline, privacy)
    MODULES = {
        "mod_roster": {}, "mod_offline": {}, "mod_vcard": {}, "mod_private": {},
        "mod_blocking": {}, "mod_privacy": {}, "mod_pubsub": {"plugins": ["flat", "pep"]},
        "mod_caps": {}, "mod_disco": {}, "mod_ping": {}, "mod_last": {},
        "mod_s2s_dialback": {}, "mod_admin_extra": {}, "mod_version": {"show_os": False},
    }

    def config_dict(self) -> dict:
        listen_common = {"ip": "127.0.0.1"}
        config = {
            "hosts": [self.domain],
            "loglevel": self.loglevel,
            "log_rotate_count": 0,
            "certfiles": [str(self.cert()), str(self.key())],
            "listen": [
                {**listen_common, "port": self.c2s_port, "module": "ejabberd_c2s",
                 "starttls_required": True, "max_stanza_size": 262144},
                {**listen_common, "port": self.s2s_port, "module": "ejabberd_s2s_in",
                 "max_stanza_size": 524288},
            ],
            "s2s_use_starttls": "required",
            "s2s_access": "all",
            "s2s_max_retry_delay": 1,
            "s2s_dns_timeout": 5,
            "s2s_dns_retries": 1,
            "auth_method": "internal",
            "auth_password_format": "scram",
            "default_db": "mnesia",
            "acl": {"local": {"user_regexp": ""}},
            "access_rules": {"local": {"allow": "local"}, "c2s": {"allow": "all"},
                             "pubsub_createnode": {"allow": "local"}},
            # ejabberdctl's commands are refused unless allowed here (ejabberd_access_permissions)
            "api_permissions": {"console commands": {"from": ["ejabberd_ctl"],
                                                     "who": "all", "what": "*"}},
            "shaper_rules": {"max_user_sessions": 10,
                             "max_user_offline_messages": 100},
            "modules": {**self.MODULES, **self.modules},
        }
        config.update(self.settings)
        return config

    def config_text(self) -> str:
        # JSON is YAML (1.2; ejabberd's libyaml reads this flow style): no YAML writer needed
        return ("# Written by tests/ejabberd.py for one test run; not a deployment example.\n"
                + json.dumps(self.config_dict(), indent=2) + "\n")

    # running

    def _env(self) -> dict:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("ERL_", "EJABBERD_"))}
        env.update({
            "HOME": str(self.home),                     # its cookie, nobody else's
            "EJABBERD_CONFIG_PATH": str(self.config),
            "EJABBERD_LOG_PATH": str(self.log_path),
            "ERL_INETRC": str(self.inetrc),
            "ERL_LIBS": str(ejabberd_libs()),
            "ERL_EPMD_ADDRESS": "127.0.0.1",            # should anything still ask an epmd
            "ERL_CRASH_DUMP": str(self.log_dir / "erl_crash.dump"),
            "ERL_CRASH_DUMP_BYTES": "0",
            "CONTRIB_MODULES_PATH": str(self.workdir / "contrib"),
        })
        return env

    def _erl(self, name: str, *args: str) -> list[str]:
        return [ERL, "-sname", name, "-noinput",
                "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
                "-erl_epmd_port", str(self.dist_port), "-start_epmd", "false", *args]

    def start(self, timeout: float = 60) -> "EjabberdProcess":
        self._out = open(self.workdir / self.OUTPUT, "ab")
        self.proc = subprocess.Popen(
            self._erl(self.node, "-mnesia", "dir", f'"{self.spool}"', "-s", "ejabberd"),
            cwd=self.spool, stdout=self._out, stderr=subprocess.STDOUT, env=self._env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ejabberd exited with {self.proc.returncode}:\n"
                                   f"{self.output()}\n{self.log()}")
            if self.started() and self._listening():
                return self
            # a poll with a deadline: ejabberd says so only in its log
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ejabberd did not start:\n{self.output()}\n{self.log()}")

    def started(self) -> bool:
        """ejabberd_app logs "ejabberd VERSION is started in the node …" when all is up."""
        return re.search(r"ejabberd \S+ is started in the node", self.log()) is not None

    def _listening(self) -> bool:
        try:
            for port in (self.c2s_port, self.s2s_port):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM: the Erlang VM (OTP ≥ 23) takes it as init:stop(), a clean shutdown."""
        if self.proc is None:
            return None
        from tests.harness import stop_process
        stop_process(self.proc, timeout=timeout)
        self._out.close()
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``ejabberdctl ARGS`` against this node (see the module docstring)."""
        name = f"ctl{secrets.token_hex(3)}-{self.dist_port}@localhost"
        return subprocess.run(
            self._erl(name, "-hidden", "-dist_listen", "false", "-s", "ejabberd_ctl",
                      "-extra", self.node, *args),
            cwd=self.spool, capture_output=True, text=True, timeout=timeout, env=self._env())

    def adduser(self, jid: str, password: str) -> None:
        """Register *jid* (the node must be running)."""
        user, _, host = jid.partition("@")
        done = self.ctl("register", user, host, password)
        assert done.returncode == 0, f"ejabberdctl register {jid}: {done.stdout}{done.stderr}"

    def errors(self) -> list[str]:
        """Log lines at level error or critical (``TIME [LEVEL] <PID>@MOD:FUN:LINE MESSAGE``)."""
        return [line for line in self.log().splitlines()
                if re.match(r"\S+ \S+ \[(error|critical)\]", line)]
