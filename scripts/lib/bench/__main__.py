"""Run the benchmark: ``scripts/bench [--quick] [--scenarios login,messages] …``.

One server at a time (xferd, then Prosody), each started fresh on loopback with
its own temporary config and data, N accounts, then:

login     N clients log in (STARTTLS, SCRAM-SHA-1, bind, initial presence),
          at most --concurrency at a time: logins/s, p50/p99 latency.
messages  the N online clients each send M messages to the next one, closed
          loop with --window in flight per sender: delivered msgs/s, p50/p99
          latency, server CPU seconds per 1000 messages (/proc/PID/stat).

The load generator's own CPU (getrusage) is reported beside each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from lxml import etree

from . import report
from .loadgen import client_context, exchange, login_all
from .servers import (DOMAIN, ProsodyServer, XferdServer, cpu_seconds, prosody_default_iterations,
                      prosody_installed, prosody_version)

SCENARIOS = ("login", "messages")
PASSWORD = "bench-password"
QUICK = {"clients": 200, "messages": 50}
FULL = {"clients": 500, "messages": 100}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"small run, under 2 minutes ({QUICK['clients']} clients × "
                        f"{QUICK['messages']} messages unless given)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="comma-separated: login,messages (default: all)")
    p.add_argument("--clients", type=int, help=f"N (default {FULL['clients']})")
    p.add_argument("--messages", type=int, help=f"M per client (default {FULL['messages']})")
    p.add_argument("--window", type=int, default=10, help="messages in flight per sender")
    p.add_argument("--concurrency", type=int, default=20, help="logins negotiated at once")
    p.add_argument("--iterations", type=int,
                   help="SCRAM iteration count for both servers (default: Prosody's "
                        "internal_hashed default)")
    p.add_argument("--no-prosody", action="store_true", help="measure xferd only")
    p.add_argument("--json", metavar="FILE", help="write the JSON document here")
    args = p.parse_args(argv)
    size = QUICK if args.quick else FULL
    args.clients = args.clients or size["clients"]
    args.messages = args.messages or size["messages"]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
    if args.clients < 2:
        p.error("--clients must be at least 2")
    return args


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


async def measure(server, args) -> dict:
    users = [f"bench{i}" for i in range(args.clients)]
    tls = client_context(server.cert)
    pid = server.proc.pid
    figures: dict = {}

    cpu0, self0 = cpu_seconds(pid), _self_cpu()
    logins = await login_all("127.0.0.1", server.c2s_port, DOMAIN, users, PASSWORD, tls,
                             concurrency=args.concurrency)
    cpu1, self1 = cpu_seconds(pid), _self_cpu()
    if logins.errors:
        print(f"{server.name}: {len(logins.errors)} login(s) failed, first: {logins.errors[0]}",
              file=sys.stderr)
    if "login" in args.scenarios:
        ok = len(logins.latencies)
        figures["login"] = {
            "attempted": len(users), "succeeded": ok, "failed": len(logins.errors),
            "wall_s": round(logins.wall, 4),
            "logins_per_s": round(ok / logins.wall, 2) if logins.wall else None,
            "p50_ms": _ms(report.median(logins.latencies)),
            "p99_ms": _ms(report.percentile(logins.latencies, 99)),
            "server_cpu_s": round(cpu1 - cpu0, 3),
            "loadgen_cpu_s": round(self1 - self0, 3),
            "loadgen_cpu_pct": round(100 * (self1 - self0) / logins.wall, 1),
            "errors": logins.errors[:5],
        }

    if "messages" in args.scenarios:
        clients = logins.clients
        if len(clients) < 2:
            raise RuntimeError(f"{server.name}: fewer than two clients logged in")
        total = len(clients) * args.messages
        cpu0, self0 = cpu_seconds(pid), _self_cpu()
        result = await exchange(clients, args.messages, window=args.window,
                                timeout=max(30.0, total / 200))
        cpu1, self1 = cpu_seconds(pid), _self_cpu()
        lat = [ns / 1e9 for ns in result.latencies_ns]
        figures["messages"] = {
            "senders": len(clients), "per_sender": args.messages, "window": args.window,
            "sent": result.sent, "delivered": result.delivered, "expected": total,
            "timed_out": result.timed_out,
            "wall_s": round(result.wall, 4),
            "msgs_per_s": round(result.delivered / result.wall, 1) if result.wall else None,
            "p50_ms": _ms(report.median(lat)),
            "p99_ms": _ms(report.percentile(lat, 99)),
            "server_cpu_s": round(cpu1 - cpu0, 3),
            "server_cpu_s_per_1000": (round(1000 * (cpu1 - cpu0) / result.delivered, 4)
                                      if result.delivered else None),
            "loadgen_cpu_s": round(self1 - self0, 3),
            "loadgen_cpu_pct": round(100 * (self1 - self0) / result.wall, 1),
            "loadgen_cpu_us_per_msg": (round(1e6 * (self1 - self0) / result.delivered, 1)
                                       if result.delivered else None),
        }
        if result.timed_out:
            print(f"{server.name}: only {result.delivered} of {total} messages delivered "
                  "before the timeout", file=sys.stderr)

    await asyncio.gather(*(c.close() for c in logins.clients))
    return figures


def run_server(server, args) -> dict:
    server.add_users([f"bench{i}" for i in range(args.clients)], PASSWORD)
    server.start()
    print(f"{server.name}: measuring (pid {server.proc.pid}, port {server.c2s_port})",
          file=sys.stderr)
    try:
        figures = asyncio.run(measure(server, args))
    except Exception:
        print(f"--- {server.name} log tail ---\n{server.log()}", file=sys.stderr)
        raise
    finally:
        server.stop()
    figures["version"] = server.version()
    return figures


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.no_prosody and not prosody_installed():
        print("scripts/bench: prosody is not installed, so there is nothing to compare "
              "with.\n  Install it (Debian/Ubuntu: apt-get install prosody) or pass "
              "--no-prosody to measure xferd alone.", file=sys.stderr)
        return 2
    prosody_iterations, iterations_source = prosody_default_iterations()
    iterations = args.iterations or prosody_iterations

    started = time.time()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="xferd-bench-") as tmp:
        results["xferd"] = run_server(XferdServer(Path(tmp) / "xferd", iterations), args)
        if not args.no_prosody:
            results["prosody"] = run_server(ProsodyServer(Path(tmp) / "prosody", iterations),
                                            args)

    document = {
        "benchmark": "xferd scripts/bench",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "lxml": ".".join(map(str, etree.LXML_VERSION)),
            "libxml2": ".".join(map(str, etree.LIBXML_VERSION)),
            "openssl": __import__("ssl").OPENSSL_VERSION,
            "prosody": None if args.no_prosody else prosody_version(),
        },
        "parameters": {
            "quick": args.quick, "scenarios": args.scenarios, "clients": args.clients,
            "messages": args.messages, "window": args.window,
            "login_concurrency": args.concurrency, "mechanism": "SCRAM-SHA-1",
            "iterations": iterations,
            "prosody_default_iterations": prosody_iterations,
            "prosody_default_iterations_source": iterations_source,
            "tls": "STARTTLS", "transport": "loopback TCP",
        },
        "results": results,
        "ratios": report.ratios(results),
    }
    print(report.table(document))
    if args.json:
        Path(args.json).write_text(report.to_json(document) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
