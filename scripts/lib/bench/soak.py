"""Scenario 6: soak. N sessions (``--soak-clients``) on a fresh server carry a
paced load (``--soak-rate`` msgs/s, the paced schedule of scenario 2) for
``--soak-seconds``, and the server's resident set is read every few seconds.

What it answers: does memory stay where it settled, or does the server hold
on to something per message, per stanza name, per read? The figure that says
so is ``rss_growth_after_first_minute_mb``: the RSS at the end minus the RSS
after the first minute (by then the sessions, caches and allocator pools have
reached their working size). Delivered/sent and the paced latency show that
the load was carried, so a flat RSS is not a server that stopped working.
"""

from __future__ import annotations

import asyncio
import sys
import time

from .loadgen import client_context, login_all
from .messages import paced
from .procs import cpu_seconds, rss_bytes
from .report import median, ms, percentile

SAMPLE_EVERY = 5.0        # seconds between RSS readings
FIRST_MINUTE = 60.0


def users(n: int) -> list[str]:
    return [f"soak{i}" for i in range(n)]


async def measure(server, n: int, rate: float, seconds: float, password: str,
                  concurrency: int) -> dict:
    tls = client_context(server.cert())
    logins = await login_all("127.0.0.1", server.c2s_port, server.domain, users(n), password,
                             tls, concurrency=concurrency)
    if len(logins.clients) < 2:
        raise RuntimeError(f"{server.name}: soak: fewer than two clients logged in "
                           f"({logins.errors[:1]})")
    samples: list[tuple[float, int]] = []
    started = time.monotonic()

    async def sample() -> None:
        while True:
            samples.append((time.monotonic() - started, rss_bytes(server.pid)))
            elapsed = time.monotonic() - started
            if elapsed >= FIRST_MINUTE and not any(t >= FIRST_MINUTE for t, _ in samples[:-1]):
                print(f"{server.name}: soak: RSS after the first minute "
                      f"{samples[-1][1] / 2**20:.1f} MiB", file=sys.stderr)
            await asyncio.sleep(SAMPLE_EVERY)

    sampler = asyncio.get_running_loop().create_task(sample())
    cpu0 = cpu_seconds(server.pid)
    try:
        result = await paced(logins.clients, rate, seconds)
    finally:
        sampler.cancel()
    cpu1 = cpu_seconds(server.pid)
    samples.append((time.monotonic() - started, rss_bytes(server.pid)))
    await asyncio.gather(*(c.close() for c in logins.clients))

    after_minute = next((rss for t, rss in samples if t >= FIRST_MINUTE), None)
    end = samples[-1][1]
    lat = [ns / 1e9 for ns in result.latencies_ns]
    mib = lambda b: round(b / 2**20, 1)                       # noqa: E731
    return {
        "sessions": len(logins.clients), "rate": rate, "seconds": seconds,
        "sent": result.sent, "delivered": result.delivered,
        "p50_ms": ms(median(lat)), "p99_ms": ms(percentile(lat, 99)),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / result.wall, 1),
        "rss_start_mb": mib(samples[0][1]),
        "rss_after_first_minute_mb": mib(after_minute) if after_minute is not None else None,
        "rss_end_mb": mib(end),
        "rss_max_mb": mib(max(rss for _, rss in samples)),
        "rss_growth_after_first_minute_mb":
            mib(end - after_minute) if after_minute is not None else None,
        "rss_series_mb": [[round(t), mib(rss)] for t, rss in samples[::6]],
    }
