"""Scenario 1: login rate. N clients connect, STARTTLS, SCRAM-SHA-1, bind, send
initial presence (and wait for a ping answer, so the presence was processed),
at most ``concurrency`` negotiating at a time.

The clients stay online afterwards: the message scenarios use them.
"""

from __future__ import annotations

import sys

from .loadgen import LoginResult, client_context, login_all
from .procs import cpu_seconds
from .report import median, ms, percentile

PASSWORD = "bench-password"


def users(n: int) -> list[str]:
    return [f"bench{i}" for i in range(n)]


async def measure(server, n: int, concurrency: int) -> tuple[dict, LoginResult]:
    names = users(n)
    tls = client_context(server.cert())
    cpu0, self0 = cpu_seconds(server.pid), cpu_seconds()
    logins = await login_all("127.0.0.1", server.c2s_port, server.domain, names, PASSWORD,
                             tls, concurrency=concurrency)
    cpu1, self1 = cpu_seconds(server.pid), cpu_seconds()
    if logins.errors:
        print(f"{server.name}: {len(logins.errors)} login(s) failed, first: {logins.errors[0]}",
              file=sys.stderr)
    ok = len(logins.latencies)
    figures = {
        "attempted": len(names), "succeeded": ok, "failed": len(logins.errors),
        "concurrency": concurrency,
        "wall_s": round(logins.wall, 4),
        "logins_per_s": round(ok / logins.wall, 2) if logins.wall else None,
        "p50_ms": ms(median(logins.latencies)),
        "p99_ms": ms(percentile(logins.latencies, 99)),
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_ms_per_login": round(1000 * (cpu1 - cpu0) / ok, 3) if ok else None,
        "loadgen_cpu_s": round(self1 - self0, 3),
        "loadgen_cpu_pct": round(100 * (self1 - self0) / logins.wall, 1),
        "errors": logins.errors[:5],
    }
    return figures, logins
