"""Run the benchmark: ``scripts/bench [--quick] [--scenarios LIST] [--no-prosody] …``.

xferd and Prosody (Debian's package) are started by the script on loopback,
each with a temporary config and data dir, and measured by the same load
generator (one asyncio process, raw sockets + TLS, standard XMPP only) in the
same run. Every figure is reported for both servers with the ratio
xferd/Prosody; the load generator's own CPU is reported beside the phases.

Scenarios (--scenarios, comma-separated; default all but soak):

  login      N clients connect, STARTTLS, SCRAM-SHA-1, bind, initial presence,
             --concurrency at a time: logins/s, p50/p99 login latency.
  messages   the N online clients each send M messages to the next one, closed
             loop, --window in flight per sender: delivered msgs/s, p50/p99
             latency, server CPU s per 1000 messages. Then paced (open loop):
             --pace-rate msgs/s on a fixed schedule for --pace-seconds: p50/p99
             latency counted from when each message was due.
  idle       K idle authenticated connections (--idle K) on a fresh server:
             server RSS per connection ((RSS after − before) / K). RLIMIT_NOFILE
             is raised soft→hard; if K does not fit, the K reached is reported.
             With --idle-cycles N the K sessions log in and close N times over
             and the RSS after each close is reported: memory must come back or
             be reused, not climb from cycle to cycle.
  roster     a user with R roster items (--roster R, put into storage before
             the run) logs in and fetches the roster: time and bytes.
  migration  mover@old.test → mover@new.test with C contacts (--contacts C)
             over two contacts' servers: XEP-0283 (xferd migrate; Prosody row
             only with mod_auto_moved installed) and XEP-0015 (xferd transfer,
             xferd only): wall time until every contact's roster shows the new
             JID.
  archive    xferd only: one user with --archive N archived messages (default
             1,000,000) — disk size, fill rate, and MAM query times (first
             page, a contact's last page, the last page, after an id in the
             middle, with+start/end, a count, the metadata). Only when named.
  soak       --soak-clients sessions (default 2000) on a fresh server carry a
             paced --soak-rate msgs/s (default 1000) for --soak-seconds
             (default 600); the server's RSS is read every 5 s: growth after
             the first minute, delivered/sent, paced latency. Only when named.

Message archiving: xferd archives every one-to-one message for both
parties (XEP-0313, on by default), and so does the benchmark's Prosody: it
loads mod_mam (default_archive_policy = true, archive_expires_after =
"never", in its internal storage like the rest), so that the ratios compare
two archiving servers. The report lists Prosody's modules. --mam-off also
runs xferd with [mam] enabled = false and Prosody without mod_mam in the
login/messages phase, in the same repeats (columns "xferd-mam-off",
"prosody-mam-off", and their ratio), so that what archiving costs each
server reads off the same run.

login/messages (and the roster fetch) are repeated (--repeats, default 3; the
servers alternate) and reported as median with the min–max spread, because a
single run varies by ±30 %. idle and migration run once.

Fairness: both servers get the same SCRAM iteration count and the same
accounts (one salt for all, so the client's PBKDF2 is cached and the generator
stays light). xferd's per-address/per-connection c2s limits are switched off
(every client comes from 127.0.0.1; Prosody 0.12 without mod_limits has none);
its storage keeps the default durability (synchronous=full; Prosody's files are
not fsynced). Prosody runs with network_backend=epoll. In the migration runs the
contacts' xferd servers get moved.max_per_minute >= C (the default 60 per old
JID per minute sends every further contact a manual request instead).

Output: a table on stdout, one JSON document (machine, versions, parameters,
every figure and every repeat) and a PNG chart of the ratios, by default
bench-results/bench-YYYYmmdd-HHMMSS.{json,png} under the current directory
(--json/--chart/--out-dir to change). --quick finishes in under 2 minutes,
the full run in under 15 (2 vCPUs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import ssl
import sys
import tempfile
import time
import traceback
from pathlib import Path

from lxml import etree

from . import (archive, chart, idle, login, messages, migration, prosody_server, report,
               roster, soak)
from .procs import raise_fd_limit
from .prosody_server import ProsodyServer
from .seed import plain
from .xferd_server import XferdServer, limits_off, xferd_version

SCENARIOS = ("login", "messages", "idle", "roster", "migration", "soak", "archive")
#: the soak and the archive run only when asked for: they take minutes
DEFAULT_SCENARIOS = SCENARIOS[:-2]
PASSWORD = login.PASSWORD
QUICK = {"clients": 200, "messages": 50, "pace_seconds": 2.0, "idle": 500, "roster": 1000,
         "contacts": 200, "archive": 100000}
FULL = {"clients": 500, "messages": 100, "pace_seconds": 10.0, "idle": 10000, "roster": 5000,
        "contacts": 2000, "archive": 1000000}
#: the names of the MAM-off xferd and Prosody in the results
NO_MAM = "xferd-mam-off"
PROSODY_NO_MAM = "prosody-mam-off"
INSTALL_HINT = ("Install it (Debian/Ubuntu: apt-get install prosody prosody-modules) or pass "
                "--no-prosody to measure xferd alone.")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes, under 2 minutes: " +
                        ", ".join(f"{k}={v:g}" for k, v in QUICK.items()))
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                   help=f"comma-separated subset of {','.join(SCENARIOS)} "
                        f"(default: {','.join(DEFAULT_SCENARIOS)})")
    p.add_argument("--clients", type=int, help=f"N, login/messages (default {FULL['clients']})")
    p.add_argument("--messages", type=int, help=f"M per client (default {FULL['messages']})")
    p.add_argument("--window", type=int, default=10, help="messages in flight per sender "
                                                          "(closed loop; default 10)")
    p.add_argument("--pace-rate", type=float, default=1000.0,
                   help="paced phase, messages per second over all senders (default 1000; "
                        "0 skips the paced phase)")
    p.add_argument("--pace-seconds", type=float,
                   help=f"paced phase length (default {FULL['pace_seconds']:g})")
    p.add_argument("--concurrency", type=int, default=20,
                   help="logins negotiated at once (default 20; the idle ramp-up uses "
                        "at least 50)")
    p.add_argument("--idle", type=int, metavar="K",
                   help=f"idle connections (default {FULL['idle']})")
    p.add_argument("--idle-cycles", type=int, default=1, metavar="N",
                   help="idle: log the K sessions in and close them N times over, reading "
                        "the server's RSS after each close (default 1)")
    p.add_argument("--soak-clients", type=int, default=2000, metavar="N",
                   help="soak: sessions carrying the paced load (default 2000)")
    p.add_argument("--soak-rate", type=float, default=1000.0,
                   help="soak: messages per second (default 1000)")
    p.add_argument("--soak-seconds", type=float, default=600.0,
                   help="soak: length (default 600)")
    p.add_argument("--roster", type=int, metavar="R",
                   help=f"roster items (default {FULL['roster']})")
    p.add_argument("--contacts", type=int, metavar="C",
                   help=f"contacts of the moving account (default {FULL['contacts']})")
    p.add_argument("--archive", type=int, metavar="N",
                   help=f"archived messages of the archive scenario (default {FULL['archive']:,})")
    p.add_argument("--mam-off", action="store_true",
                   help="also run xferd with MAM off and Prosody without mod_mam in the "
                        "login/messages phase")
    p.add_argument("--repeats", type=int, default=3,
                   help="repeats of login/messages/roster (default 3)")
    p.add_argument("--iterations", type=int,
                   help="SCRAM iteration count for both servers (default: Prosody's "
                        "internal_hashed default)")
    p.add_argument("--no-prosody", action="store_true", help="measure xferd only")
    p.add_argument("--prosody-plugin-path", action="append", default=[], metavar="DIR",
                   help="extra Prosody module directory (e.g. holding mod_auto_moved.lua "
                        "for the migration scenario's Prosody row); repeatable")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep the servers' configs, data and logs here (default: a "
                        "temporary directory, removed at the end)")
    p.add_argument("--out-dir", default="bench-results",
                   help="where the JSON and PNG go by default (default ./bench-results)")
    p.add_argument("--json", metavar="FILE", help="write the JSON document here")
    p.add_argument("--chart", metavar="FILE", help="write the PNG chart here")
    args = p.parse_args(argv)
    size = QUICK if args.quick else FULL
    for key in ("clients", "messages", "pace_seconds", "idle", "roster", "contacts", "archive"):
        if getattr(args, key) is None:
            setattr(args, key, size[key])
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
    if args.clients < 2:
        p.error("--clients must be at least 2")
    if min(args.repeats, args.idle, args.roster, args.contacts, args.messages,
           args.idle_cycles, args.archive) < 1:
        p.error("--repeats, --idle, --idle-cycles, --roster, --contacts and --messages "
                "must be at least 1")
    if args.soak_clients < 2 or args.soak_rate <= 0 or args.soak_seconds <= 0:
        p.error("--soak-clients must be at least 2, --soak-rate and --soak-seconds positive")
    args.prosody_plugin_path = [Path(d) for d in args.prosody_plugin_path]
    return args


class Bench:
    """One run: the servers to compare, what they measured, what went wrong."""

    def __init__(self, args, tmp: Path, iterations: int):
        self.args, self.tmp, self.iterations = args, tmp, iterations
        self.kinds = ["xferd"] + ([] if args.no_prosody else ["prosody"])
        self.results: dict = {"xferd": {"version": xferd_version()}}
        if args.mam_off:                # in the core phase only
            self.results[NO_MAM] = {"version": xferd_version()}
        if "prosody" in self.kinds:
            self.results["prosody"] = {"version": prosody_server.version() or "unknown"}
        #: the kinds of the core phase: the MAM-off pair too with --mam-off
        self.core_kinds = self.kinds + ([NO_MAM] if args.mam_off else [])
        if args.mam_off and "prosody" in self.kinds:
            self.results[PROSODY_NO_MAM] = dict(self.results["prosody"])
            self.core_kinds.append(PROSODY_NO_MAM)
        self.failed = False

    def make(self, kind: str, name: str):
        folder = self.tmp / f"{name}-{kind}"
        if kind == "xferd":
            return XferdServer(folder, self.iterations)
        if kind == NO_MAM:
            return XferdServer(folder, self.iterations, overrides={"mam": {"enabled": False}})
        return ProsodyServer(folder, self.iterations, mam=kind != PROSODY_NO_MAM)

    def failure(self, kind: str, section: str, server, exc: BaseException) -> None:
        self.failed = True
        traceback.print_exc()
        if server is not None:
            print(f"--- {kind} log tail ---\n{server.log()}", file=sys.stderr)
        self.results[kind][section] = {"skipped": f"failed: {type(exc).__name__}: {exc}"}

    # -- login, messages, paced, roster: one server per kind, repeats alternating ----------
    def core(self) -> None:
        args = self.args
        chosen = set(args.scenarios)
        servers = {}
        kinds = self.core_kinds
        try:
            for kind in kinds:
                server = self.make(kind, "core")
                seeded = plain(server.domain, login.users(args.clients)) \
                    if chosen & {"login", "messages"} else []
                if "roster" in chosen:
                    seeded.append(roster.account(server.domain, args.roster))
                server.seed(seeded, PASSWORD)
                server.spawn()
                servers[kind] = server
            for server in servers.values():
                server.wait_ready()
            runs: dict = {kind: {} for kind in kinds}
            phases = []
            if chosen & {"login", "messages"}:
                sections = [x for x in ("login", "messages") if x in chosen]
                if "messages" in chosen and args.pace_rate > 0:
                    sections.append("paced")
                phases.append((self.core_repeat, sections))
            if "roster" in chosen:
                phases.append((self.roster_repeat, ["roster"]))
            for phase, sections in phases:
                for r in range(args.repeats):
                    order = kinds if r % 2 == 0 else kinds[::-1]
                    for kind in order:
                        server = servers[kind]
                        print(f"{kind}: {'/'.join(sections)}, repeat {r + 1}/{args.repeats} "
                              f"(pid {server.pid})", file=sys.stderr)
                        try:
                            figures = asyncio.run(phase(server))
                        except Exception as exc:      # noqa: BLE001 — reported, run goes on
                            for section in sections:
                                self.failure(kind, section, server, exc)
                            continue
                        for section, value in figures.items():
                            runs[kind].setdefault(section, []).append(value)
            for kind in kinds:
                for section, values in runs[kind].items():
                    if "skipped" not in self.results[kind].get(section, {}):
                        self.results[kind][section] = report.summarise(values)
        finally:
            for server in servers.values():
                server.stop()

    async def core_repeat(self, server) -> dict:
        args, chosen = self.args, set(self.args.scenarios)
        out = {}
        if chosen & {"login", "messages"}:
            figures, logins = await login.measure(server, args.clients, args.concurrency)
            if "login" in chosen:
                out["login"] = figures
            try:
                if "messages" in chosen:
                    if len(logins.clients) < 2:
                        raise RuntimeError(f"{server.name}: fewer than two clients logged in")
                    out["messages"] = await messages.measure_closed(
                        server.pid, logins.clients, args.messages, args.window)
                    if args.pace_rate > 0:
                        out["paced"] = await messages.measure_paced(
                            server.pid, logins.clients, args.pace_rate, args.pace_seconds)
            finally:
                await asyncio.gather(*(c.close() for c in logins.clients))
                await asyncio.sleep(0.5)
        return out

    async def roster_repeat(self, server) -> dict:
        return {"roster": await roster.measure(server, PASSWORD, self.args.roster)}

    # -- a large archive: xferd only ------------------------------------------------------------
    def archive(self) -> None:
        server = None
        try:
            print(f"xferd: archive, {self.args.archive:,} messages", file=sys.stderr)
            self.results["xferd"]["archive"] = archive.run(
                lambda: self.make("xferd", "archive"), PASSWORD, self.args.archive)
        except Exception as exc:                      # noqa: BLE001 — reported, run goes on
            self.failure("xferd", "archive", server, exc)
        if "prosody" in self.kinds:
            self.results["prosody"]["archive"] = {"skipped": "xferd only"}

    # -- idle connections: a fresh server each --------------------------------------------------
    def idle(self) -> None:
        for kind in self.kinds:
            server = None
            try:
                server = self.make(kind, "idle")
                server.seed(plain(server.domain, idle.users(self.args.idle)), PASSWORD)
                server.start()
                print(f"{kind}: idle, {self.args.idle} connections (pid {server.pid})",
                      file=sys.stderr)
                figures = asyncio.run(idle.measure(server, self.args.idle, PASSWORD,
                                                   max(self.args.concurrency, 50),
                                                   cycles=self.args.idle_cycles))
                self.results[kind]["idle"] = figures
            except Exception as exc:                  # noqa: BLE001 — reported, run goes on
                self.failure(kind, "idle", server, exc)
            finally:
                if server is not None:
                    server.stop()

    # -- soak: a fresh server each ---------------------------------------------------------------
    def soak(self) -> None:
        args = self.args
        for kind in self.kinds:
            server = None
            try:
                server = self.make(kind, "soak")
                server.seed(plain(server.domain, soak.users(args.soak_clients)), PASSWORD)
                server.start()
                print(f"{kind}: soak, {args.soak_clients} sessions, {args.soak_rate:g} msgs/s "
                      f"for {args.soak_seconds:g} s (pid {server.pid})", file=sys.stderr)
                self.results[kind]["soak"] = asyncio.run(soak.measure(
                    server, args.soak_clients, args.soak_rate, args.soak_seconds, PASSWORD,
                    max(args.concurrency, 50)))
            except Exception as exc:                  # noqa: BLE001 — reported, run goes on
                self.failure(kind, "soak", server, exc)
            finally:
                if server is not None:
                    server.stop()

    # -- migration ---------------------------------------------------------------------------------
    def migration(self) -> None:
        args = self.args
        plans = [("xferd", "moved", "migrate"), ("prosody", "moved", "migrate"),
                 ("xferd", "transfer", "transfer")]
        for kind, section, command in plans:
            if kind not in self.kinds:
                continue
            if kind == "prosody":
                why = migration.prosody_unavailable(args.prosody_plugin_path)
                if why:
                    print(f"prosody: migration skipped: {why}", file=sys.stderr)
                    self.results[kind][section] = {"skipped": why}
                    continue
            try:
                self.results[kind][section] = migration.run(
                    kind, command, self.tmp, args.contacts, self.iterations,
                    args.prosody_plugin_path)
            except Exception as exc:                  # noqa: BLE001 — reported, run goes on
                self.failure(kind, section, None, exc)
        if "prosody" in self.kinds:
            self.results["prosody"]["transfer"] = {
                "skipped": "Prosody has no XEP-0015 account transfer"}


def machine(args) -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mb": _memory_mb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "lxml": ".".join(map(str, etree.LXML_VERSION)),
        "libxml2": ".".join(map(str, etree.LIBXML_VERSION)),
        "openssl": ssl.OPENSSL_VERSION,
        "prosody": None if args.no_prosody else prosody_server.version(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def _cpu_model() -> str | None:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def _memory_mb() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def output_paths(args, started: float) -> tuple[Path, Path]:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    out = Path(args.out_dir)
    json_path = Path(args.json) if args.json else out / f"bench-{stamp}.json"
    chart_path = Path(args.chart) if args.chart else json_path.with_suffix(".png")
    return json_path, chart_path


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.no_prosody and not prosody_server.installed():
        print("scripts/bench: prosody is not installed, so there is nothing to compare "
              f"with.\n  {INSTALL_HINT}", file=sys.stderr)
        return 2
    fds = raise_fd_limit()
    prosody_iterations, iterations_source = prosody_server.default_iterations()
    iterations = args.iterations or prosody_iterations

    started = time.time()
    facts = machine(args)
    with tempfile.TemporaryDirectory(prefix="xferd-bench-") as tmp:
        if args.workdir:
            tmp = Path(args.workdir).resolve()
            tmp.mkdir(parents=True, exist_ok=True)
        bench = Bench(args, Path(tmp), iterations)
        timings = {}
        for group, chosen in (("core", {"login", "messages", "roster"}), ("idle", {"idle"}),
                              ("migration", {"migration"}), ("soak", {"soak"}),
                              ("archive", {"archive"})):
            if chosen & set(args.scenarios):
                t = time.monotonic()
                try:
                    getattr(bench, group)()
                except Exception as exc:              # noqa: BLE001 — reported, run goes on
                    for kind in bench.kinds:
                        for section in chosen & set(args.scenarios):
                            bench.failure(kind, section, None, exc)
                timings[group] = round(time.monotonic() - t, 1)

    ratios, spreads = report.ratios(bench.results)
    mam_off_ratios, mam_off_spreads = report.ratios(bench.results, NO_MAM, PROSODY_NO_MAM)
    document = {
        "benchmark": "xferd scripts/bench",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "phase_durations_s": timings,
        "machine": facts,
        "parameters": {
            "quick": args.quick, "scenarios": args.scenarios, "repeats": args.repeats,
            "clients": args.clients, "messages": args.messages, "window": args.window,
            "pace_rate": args.pace_rate, "pace_seconds": args.pace_seconds,
            "login_concurrency": args.concurrency, "idle_connections": args.idle,
            "idle_cycles": args.idle_cycles, "soak_clients": args.soak_clients,
            "soak_rate": args.soak_rate, "soak_seconds": args.soak_seconds,
            "roster_items": args.roster, "contacts": args.contacts,
            "archive_messages": args.archive, "mam_off_server": args.mam_off,
            "mechanism": "SCRAM-SHA-1", "iterations": iterations,
            "prosody_default_iterations": prosody_iterations,
            "prosody_default_iterations_source": iterations_source,
            "tls": "STARTTLS", "transport": "loopback TCP", "fd_limit": fds,
            "prosody_network_backend": None if args.no_prosody else "epoll",
            "prosody_modules": None if args.no_prosody else prosody_server.modules(mam=True),
            "prosody_mam_settings": None if args.no_prosody else prosody_server.MAM_SETTINGS,
            "prosody_mam_off_modules": (prosody_server.modules(mam=False)
                                        if args.mam_off and not args.no_prosody else None),
            "xferd_limits_off": limits_off(),
        },
        "results": bench.results,
        "ratios": ratios,
        "ratio_spread": spreads,
        # with --mam-off: xferd-mam-off / prosody-mam-off
        "ratios_mam_off": mam_off_ratios,
        "ratio_spread_mam_off": mam_off_spreads,
    }
    print(report.table(document))
    json_path, chart_path = output_paths(args, started)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(report.to_json(document) + "\n")
    print(f"\nJSON:  {json_path}", file=sys.stderr)
    try:
        drawn = chart.write(document, chart_path)
        print(f"chart: {chart_path}" if drawn else
              "chart: none (there are no ratios without Prosody)", file=sys.stderr)
    except ImportError:
        print("chart: none (matplotlib is missing: pip install -e '.[bench]')", file=sys.stderr)
    print(f"took {document['duration_s']:.0f} s", file=sys.stderr)
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
