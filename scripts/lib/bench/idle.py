"""Scenario 3: idle connections. K authenticated sessions (STARTTLS, SCRAM, bind,
initial presence) that then say nothing; the server's memory per session.

On a freshly started server, a few warm-up sessions log in first (so that
what is loaded once — modules, TLS context, caches — is not counted), then the
server's resident set is read (/proc/PID/smaps_rollup), K sessions log in, the
server settles for a moment and its resident set is read again:
bytes per connection = (RSS after − RSS before) / K reached. With ``cycles``
above 1, the same K sessions log in and close again that many times, and the
RSS after each close shows whether closed sessions' memory comes back (or is
reused) or piles up.

Descriptors: one per connection on each side. The benchmark raised its soft
RLIMIT_NOFILE to the hard limit at start (the servers inherit it); if K does
not fit under either process's limit, K is lowered to what fits and the
figures say so (``limited_by``) instead of failing halfway.

The load generator keeps each idle session cheap (``BenchClient.hold_idle``:
no parser, no task) and reports its own memory per connection too. One event
loop negotiating 10,000 TLS sessions is CPU-bound on the generator's side: the
ramp-up rate here is not the login-rate figure (scenario 1 is). Its own memory
per connection (``loadgen_kb_per_connection``) is only indicative: memory freed
by an earlier scenario of the same run is reused without growing the RSS.
"""

from __future__ import annotations

import asyncio
import sys
import time

from .loadgen import client_context, login_all
from .procs import cpu_seconds, fd_limit, fd_limit_of, open_fds, rss_bytes

WARMUP = 20
MARGIN = 200          # descriptors kept free for logs, storage, listeners
SETTLE = 1.5          # seconds between the last login and the RSS reading
CLOSE_SETTLE = 2.0    # from the server's last closed connection to the RSS reading: xferd
                      # gives freed memory back 1 s after a burst of closes ends
                      # (server/io/memory.py)
IDLE_WINDOW = 2.0     # seconds over which the server's CPU with K idle sessions is read


def users(k: int) -> list[str]:
    return [f"idle{i}" for i in range(k + WARMUP)]


async def all_closed(pid: int, descriptors: int, timeout: float = 60) -> None:
    """Wait until the server holds no more descriptors than *descriptors*
    (read before the sessions logged in): every connection it had is torn
    down — which may take it a while after the clients are gone (a session's
    end writes its last activity to storage) — then CLOSE_SETTLE more."""
    deadline = time.monotonic() + timeout
    while open_fds(pid) > descriptors and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(CLOSE_SETTLE)


async def measure(server, k: int, password: str, concurrency: int, *, cycles: int = 1) -> dict:
    names = users(k)
    tls = client_context(server.cert())
    fds0 = open_fds(server.pid)
    warm = await login_all("127.0.0.1", server.c2s_port, server.domain, names[:WARMUP],
                           password, tls, concurrency=concurrency, idle=True)
    await asyncio.sleep(1.0)
    rss0, own0 = rss_bytes(server.pid), rss_bytes()

    server_limit = fd_limit_of(server.pid)
    room = [("load generator RLIMIT_NOFILE", fd_limit() - open_fds() - MARGIN)]
    if server_limit is not None:
        room.append((f"{server.name} RLIMIT_NOFILE", server_limit - open_fds(server.pid) - MARGIN))
    limiter, fits = min(room, key=lambda r: r[1])
    target = min(k, max(0, fits))
    if target < k:
        print(f"{server.name}: idle: {k} connections do not fit ({limiter}); "
              f"trying {target}", file=sys.stderr)

    ramp_started = time.monotonic()

    def progress(done: int) -> None:
        print(f"{server.name}: idle: {done}/{target} logged in "
              f"({time.monotonic() - ramp_started:.0f} s)", file=sys.stderr)

    cpu0, self0 = cpu_seconds(server.pid), cpu_seconds()
    held = await login_all("127.0.0.1", server.c2s_port, server.domain,
                           names[WARMUP:WARMUP + target], password, tls,
                           concurrency=concurrency, idle=True, progress=progress)
    cpu1, self1 = cpu_seconds(server.pid), cpu_seconds()
    reached = len(held.clients)
    await asyncio.sleep(SETTLE)
    rss1, own1 = rss_bytes(server.pid), rss_bytes()
    fds = open_fds(server.pid)
    idle0 = cpu_seconds(server.pid)
    await asyncio.sleep(IDLE_WINDOW)
    idle_cpu = cpu_seconds(server.pid) - idle0
    if held.errors:
        print(f"{server.name}: idle: {len(held.errors)} login(s) failed, first: "
              f"{held.errors[0]}", file=sys.stderr)

    started = time.perf_counter()
    await asyncio.gather(*(c.close() for c in held.clients + warm.clients))
    closing = time.perf_counter() - started
    await all_closed(server.pid, fds0)
    rss2 = rss_bytes(server.pid)

    after_close = [rss2]
    for _ in range(cycles - 1):
        again = await login_all("127.0.0.1", server.c2s_port, server.domain,
                                names[WARMUP:WARMUP + target], password, tls,
                                concurrency=concurrency, idle=True)
        await asyncio.sleep(SETTLE)
        await asyncio.gather(*(c.close() for c in again.clients))
        await all_closed(server.pid, fds0)
        after_close.append(rss_bytes(server.pid))
        print(f"{server.name}: idle: cycle {len(after_close)}/{cycles}: "
              f"{len(again.clients)} sessions, RSS after close "
              f"{after_close[-1] / 2**20:.1f} MiB", file=sys.stderr)

    limited_by = None
    if target < k:
        limited_by = limiter
    elif reached < target:
        limited_by = f"{len(held.errors)} login(s) failed"
    return {
        "k_requested": k, "k_reached": reached,
        "limited_by": limited_by, "failed": len(held.errors), "errors": held.errors[:5],
        "rss_before_mb": round(rss0 / 2**20, 2), "rss_after_mb": round(rss1 / 2**20, 2),
        "rss_after_close_mb": round(rss2 / 2**20, 2),
        "kb_per_connection": round((rss1 - rss0) / reached / 1024, 2) if reached else None,
        "kb_kept_after_close_per_connection":
            round((rss2 - rss0) / reached / 1024, 2) if reached else None,
        "server_open_fds": fds, "server_fd_limit": server_limit,
        "ramp_s": round(held.wall, 2),
        "ramp_logins_per_s": round(reached / held.wall, 1) if held.wall else None,
        "ramp_server_cpu_s": round(cpu1 - cpu0, 2),
        "ramp_loadgen_cpu_s": round(self1 - self0, 2),
        "idle_server_cpu_pct": round(100 * idle_cpu / IDLE_WINDOW, 2),
        "loadgen_kb_per_connection": round((own1 - own0) / reached / 1024, 2) if reached else None,
        "close_s": round(closing, 2),
        "cycles": cycles,
        "rss_after_close_by_cycle_mb": [round(r / 2**20, 2) for r in after_close],
        # memory that comes back (or is reused) shows as ~0 here; a leak as K × its size
        "rss_growth_over_cycles_mb": round((max(after_close[1:]) - after_close[0]) / 2**20, 2)
        if cycles > 1 else None,
    }
