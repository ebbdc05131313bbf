"""Scenario 5: migration at scale. ``mover@old.test`` moves to ``mover@new.test``;
C contacts, split over two contacts' servers (c1.test, c2.test), all share
presence with the old account (``both``). Measured: the wall time from
starting the tool until every contact's roster holds the new JID (with a
subscription), read from the contacts' servers' storage every
``POLL`` seconds, plus the time until half of them did and the tool's own run.

moved     XEP-0283: ``xferd migrate`` (client side: copies the roster, publishes
          the statement, sends each contact a ``subscribe`` carrying
          ``<moved/>``); each contact's server verifies the statement over s2s
          and rewrites the roster (xferd: ``server/modules/moved.py``).
          xferd row: old, new, c1, c2 are four xferd processes. Prosody row:
          old and new stay xferd, c1 and c2 are two Prosody processes with
          mod_auto_moved (prosody-modules) — only when that module is installed.
transfer  XEP-0015: ``xferd transfer``; the old server notifies each contact's
          server, which checks with the new server and rewrites the rosters
          (``server/modules/accountxfer.py``). xferd only: Prosody has no XEP-0015.

Every contact is offline: the servers' work is what is timed, not C client
sessions. Deviation from the defaults, recorded in the figures: the contacts'
xferd servers get ``moved.max_per_minute`` ≥ C, because the default (60
verifications per old JID per minute) turns every contact past the 60th into a
manual request, by design — a limit against abuse, not a speed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from . import prosody_server
from .dns import DNSResponder
from .procs import cpu_seconds
from .prosody_server import ProsodyServer
from .seed import Account, Item
from .xferd_server import XferdServer

OLD, NEW = "old.test", "new.test"
CONTACT_DOMAINS = ("c1.test", "c2.test")
MOVER = "mover"
PASSWORD = "bench-password"
POLL = 0.25
REPO = Path(__file__).resolve().parents[3]


def contacts(c: int) -> dict[str, list[str]]:
    """contacts' domain → usernames, alternating so the two halves differ by at most one."""
    out: dict[str, list[str]] = {d: [] for d in CONTACT_DOMAINS}
    for i in range(c):
        out[CONTACT_DOMAINS[i % 2]].append(f"contact{i}")
    return out


def accounts(c: int) -> dict[str, list[Account]]:
    """domain → accounts to seed: the mover on both sides, the contacts pointing at old."""
    people = contacts(c)
    old_roster = [Item(f"{u}@{d}", "both", u.capitalize(), ("Friends",))
                  for d, users in people.items() for u in users]
    seeded = {OLD: [Account(OLD, MOVER, old_roster)], NEW: [Account(NEW, MOVER)]}
    for domain, users in people.items():
        seeded[domain] = [Account(domain, u, [Item(f"{MOVER}@{OLD}", "both", "Mover",
                                                   ("Friends",))]) for u in users]
    return seeded


def prosody_unavailable(plugin_paths: list[Path]) -> str | None:
    """Why the Prosody row of the XEP-0283 run cannot be had, or None."""
    if not prosody_server.installed():
        return "prosody is not installed"
    if prosody_server.find_module("auto_moved", plugin_paths) is None:
        return ("mod_auto_moved (prosody-modules) is not installed — Debian's "
                "prosody-modules snapshot lacks it; pass --prosody-plugin-path DIR "
                "holding mod_auto_moved.lua to measure Prosody as the contacts' server")
    return None


class Federation:
    """The four servers of one run: old, new (xferd) and the two contacts' servers."""

    def __init__(self, tmp: Path, c: int, iterations: int, contacts_on: str,
                 plugin_paths: list[Path]):
        self.c = c
        self.dns: DNSResponder | None = None
        overrides = {"moved": {"max_per_minute": max(60, 2 * c)}}
        self.servers: dict[str, object] = {
            OLD: XferdServer(tmp / "old", iterations, domains=(OLD,), s2s=True,
                             overrides=overrides),
            NEW: XferdServer(tmp / "new", iterations, domains=(NEW,), s2s=True,
                             overrides=overrides),
        }
        if contacts_on == "prosody":
            self.dns = DNSResponder().start()
            folder = prosody_server.find_module("auto_moved", plugin_paths)
            for domain in CONTACT_DOMAINS:
                self.servers[domain] = ProsodyServer(
                    tmp / domain.split(".")[0], iterations, domains=(domain,), s2s=True,
                    dns_port=self.dns.port, extra_modules=["auto_moved"],
                    plugin_paths=[folder] if folder else [])
        else:
            for domain in CONTACT_DOMAINS:
                self.servers[domain] = XferdServer(tmp / domain.split(".")[0], iterations,
                                                   domains=(domain,), s2s=True,
                                                   overrides=overrides)

    def start(self) -> None:
        """Start every server (xferd on ports of its own choosing), then give
        each xferd a static route to every other server, one acknowledged
        reload each, and Prosody the SRV records: nothing is sent between
        them before that."""
        for domain, seeded in accounts(self.c).items():
            self.servers[domain].seed(seeded, PASSWORD)
        for server in self.servers.values():
            server.spawn()
        for server in self.servers.values():
            server.wait_ready()
        for domain, server in self.servers.items():
            if isinstance(server, XferdServer):
                server.add_routes({other: there.s2s_port
                                   for other, there in self.servers.items()
                                   if there is not server})
            if self.dns is not None:
                self.dns.add_srv(domain, server.s2s_port)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        if self.dns is not None:
            self.dns.stop()

    def cpu(self) -> dict[str, float]:
        return {d: cpu_seconds(s.pid) for d, s in self.servers.items()}


async def _tool(fed: Federation, command: str, workdir: Path, timeout: float):
    """Start ``xferd migrate``/``xferd transfer`` as a user would; its stdout/stderr go to files."""
    old, new = fed.servers[OLD], fed.servers[NEW]
    env = dict(os.environ, XFERD_OLD_PASSWORD=PASSWORD, XFERD_NEW_PASSWORD=PASSWORD)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XFERD_CONFIG", None)
    old_jid, new_jid = f"{MOVER}@{OLD}", f"{MOVER}@{NEW}"
    if command == "migrate":
        args = ["migrate", "--from", old_jid, "--to", new_jid, "--wait", str(int(timeout)),
                "--state", str(workdir / "migrate-state.json")]
    else:
        args = ["transfer", "--old", old_jid, "--new", new_jid, "--timeout", str(int(timeout))]
    args += ["--old-host", "127.0.0.1", "--old-port", str(old.c2s_port),
             "--new-host", "127.0.0.1", "--new-port", str(new.c2s_port),
             "--old-cafile", str(old.cert(OLD)), "--new-cafile", str(new.cert(NEW))]
    out, err = open(workdir / f"{command}.out", "wb"), open(workdir / f"{command}.err", "wb")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "server", *args,
                                                cwd=workdir, env=env, stdout=out, stderr=err)
    out.close()
    err.close()
    return proc


async def _watch(fed: Federation, started: float, timeout: float) -> dict[str, float]:
    """contact JID → seconds after *started* when its roster first held the new JID."""
    new_jid = f"{MOVER}@{NEW}"
    readers = {d: await fed.servers[d].roster_reader() for d in CONTACT_DOMAINS}
    waiting = {d: list(users) for d, users in contacts(fed.c).items()}
    seen: dict[str, float] = {}
    try:
        while any(waiting.values()) and time.monotonic() - started < timeout:
            for domain, users in waiting.items():
                if not users:
                    continue
                found = await readers[domain].subscriptions(domain, users, new_jid)
                now = time.monotonic() - started
                for user, subscription in found.items():
                    if subscription in ("from", "to", "both"):
                        seen[f"{user}@{domain}"] = now
                waiting[domain] = [u for u in users if f"{u}@{domain}" not in seen]
            await asyncio.sleep(POLL)
    finally:
        for reader in readers.values():
            await reader.close()
    return seen


def _summary_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


async def _run(fed: Federation, command: str, workdir: Path, timeout: float) -> dict:
    cpu0 = fed.cpu()
    started = time.monotonic()
    proc = await _tool(fed, command, workdir, timeout)
    watching = asyncio.create_task(_watch(fed, started, timeout))
    try:
        code = await asyncio.wait_for(proc.wait(), timeout + 30)
    except asyncio.TimeoutError:
        proc.kill()
        code = await proc.wait()
    tool_s = time.monotonic() - started
    seen = await watching
    cpu1 = fed.cpu()
    times = sorted(seen.values())
    c = fed.c
    return {
        "contacts": c, "contacts_per_server": {d: len(u) for d, u in contacts(c).items()},
        "updated": len(seen),
        "all_updated_s": round(times[-1], 2) if len(times) == c else None,
        "half_updated_s": round(times[(c - 1) // 2], 2) if len(times) > (c - 1) // 2 else None,
        "updates_per_s": round(len(times) / times[-1], 1) if times and times[-1] else None,
        "tool_s": round(tool_s, 2), "tool_exit": code,
        "tool_summary": _summary_line(workdir / f"{command}.out"),
        "server_cpu_s": {d: round(cpu1[d] - cpu0[d], 2) for d in cpu0},
        "poll_interval_s": POLL, "timeout_s": timeout,
        "moved_max_per_minute": max(60, 2 * c),
    }


def run(kind: str, command: str, tmp: Path, c: int, iterations: int,
        plugin_paths: list[Path]) -> dict:
    """One run of *command* (migrate | transfer) with the contacts on *kind*'s servers."""
    workdir = tmp / f"{command}-{kind}"
    workdir.mkdir(parents=True, exist_ok=True)
    fed = Federation(workdir, c, iterations, kind, plugin_paths)
    timeout = 60 + c / 10
    try:
        fed.start()
        print(f"{kind}: {command} with {c} contacts", file=sys.stderr)
        figures = asyncio.run(_run(fed, command, workdir, timeout))
    except Exception:
        for domain, server in fed.servers.items():
            print(f"--- {domain} ({server.name}) log tail ---\n{server.log()}", file=sys.stderr)
        raise
    finally:
        fed.stop()
    figures["contacts_server"] = kind
    if figures["updated"] < c:
        print(f"{kind}: {command}: only {figures['updated']} of {c} contacts updated within "
              f"{timeout:.0f} s; tool said: {figures['tool_summary']}", file=sys.stderr)
    return figures
