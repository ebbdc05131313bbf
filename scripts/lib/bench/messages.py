"""Scenario 2: message throughput and latency, closed loop and paced (open loop).

Closed loop: client i sends M messages to client i+1's full JID with at most
``window`` in flight; a sender's next message leaves only when an earlier one
was delivered, so the offered load follows what the server carries. Gives the
throughput (delivered msgs/s) and the latency at saturation.

Paced: one fixed send schedule, ``rate`` messages per second for ``seconds``,
message k due at t0 + k/rate from client k mod N. The latency of each message
is counted from when it was *due*, not when it left, so a load generator or a
server that falls behind shows up in the figures instead of quietly lowering
the load (no coordinated omission). This is the latency a server offers at a
load it can carry.

Latency is measured inside the one load-generator process: the body carries a
``perf_counter_ns`` stamp, and the receiving client, in the same loop,
subtracts it from the clock when the stanza is parsed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .loadgen import BODY_TAG, BenchClient
from .procs import cpu_seconds
from .report import ms, percentile, median


@dataclass
class Delivery:
    sent: int
    delivered: int
    latencies_ns: list[int]
    wall: float                      # first send to last delivery (or timeout)
    timed_out: bool
    max_send_lag_ns: int = 0         # paced only: how late the generator sent


async def closed_loop(clients: list[BenchClient], per_sender: int, *, window: int = 10,
                      timeout: float = 60) -> Delivery:
    n = len(clients)
    total = n * per_sender
    windows = [asyncio.Semaphore(window) for _ in range(n)]
    latencies: list[int] = []
    done = asyncio.get_running_loop().create_future()
    sent = 0

    def received(element, now_ns: int) -> None:
        body = element.findtext(BODY_TAG)
        if not body or not body.startswith("c "):
            return
        _, sender, stamp = body.split(" ")
        latencies.append(now_ns - int(stamp))
        windows[int(sender)].release()
        if len(latencies) == total and not done.done():
            done.set_result(None)

    for client in clients:
        client.on_message = received
        client.start_reading()

    async def sender(i: int):
        nonlocal sent
        to = clients[(i + 1) % n].jid
        writer, gate = clients[i].writer, windows[i]
        for k in range(per_sender):
            await gate.acquire()
            writer.write(f"<message to='{to}' type='chat' id='m{k}'><body>c {i} "
                         f"{time.perf_counter_ns()}</body></message>".encode())
            sent += 1
            if k % window == window - 1:
                await writer.drain()

    started = time.perf_counter()
    senders = [asyncio.create_task(sender(i)) for i in range(n)]
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except asyncio.TimeoutError:
        timed_out = True
    wall = time.perf_counter() - started
    for task in senders:
        task.cancel()
    return Delivery(sent, len(latencies), latencies, wall, timed_out)


async def paced(clients: list[BenchClient], rate: float, seconds: float, *,
                grace: float = 5.0) -> Delivery:
    """Send on a fixed schedule; wait up to *grace* seconds after the last one is due."""
    n = len(clients)
    total = max(1, int(rate * seconds))
    step_ns = 1e9 / rate
    latencies: list[int] = []
    done = asyncio.get_running_loop().create_future()

    def received(element, now_ns: int) -> None:
        body = element.findtext(BODY_TAG)
        if not body or not body.startswith("p "):
            return
        latencies.append(now_ns - int(body[2:]))
        if len(latencies) == total and not done.done():
            done.set_result(None)

    for client in clients:
        client.on_message = received
        client.start_reading()
    targets = [clients[(i + 1) % n].jid for i in range(n)]
    writers = [c.writer for c in clients]

    t0 = time.perf_counter_ns()
    k = max_lag = 0
    while k < total:
        now = time.perf_counter_ns()
        due = min(total, int((now - t0) / step_ns) + 1)
        while k < due:
            stamp = t0 + int(k * step_ns)
            max_lag = max(max_lag, now - stamp)
            i = k % n
            writers[i].write(f"<message to='{targets[i]}' type='chat' id='p{k}'>"
                             f"<body>p {stamp}</body></message>".encode())
            k += 1
        if k < total:
            await asyncio.sleep(max(0.0, (t0 + k * step_ns - time.perf_counter_ns()) / 1e9))
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(done), grace)
    except asyncio.TimeoutError:
        timed_out = True
    wall = (time.perf_counter_ns() - t0) / 1e9
    return Delivery(total, len(latencies), latencies, wall, timed_out, max_lag)


async def measure_closed(pid: int, clients, per_sender: int, window: int) -> dict:
    total = len(clients) * per_sender
    reads0 = sum(c.reads for c in clients)
    cpu0, self0 = cpu_seconds(pid), cpu_seconds()
    result = await closed_loop(clients, per_sender, window=window,
                               timeout=max(30.0, total / 200))
    cpu1, self1 = cpu_seconds(pid), cpu_seconds()
    lat = [ns / 1e9 for ns in result.latencies_ns]
    server_cpu, own_cpu = cpu1 - cpu0, self1 - self0
    return {
        "senders": len(clients), "per_sender": per_sender, "window": window,
        "sent": result.sent, "delivered": result.delivered, "expected": total,
        "timed_out": result.timed_out,
        "wall_s": round(result.wall, 4),
        "msgs_per_s": round(result.delivered / result.wall, 1) if result.wall else None,
        "p50_ms": ms(median(lat)),
        "p99_ms": ms(percentile(lat, 99)),
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_s_per_1000": (round(1000 * server_cpu / result.delivered, 4)
                                  if result.delivered else None),
        "loadgen_cpu_s": round(own_cpu, 3),
        "loadgen_cpu_pct": round(100 * own_cpu / result.wall, 1),
        "loadgen_cpu_us_per_msg": (round(1e6 * own_cpu / result.delivered, 1)
                                   if result.delivered else None),
        # how the server's writes arrive: ~1 means one read (TLS records) per stanza
        "loadgen_reads_per_msg": (round((sum(c.reads for c in clients) - reads0)
                                        / result.delivered, 3) if result.delivered else None),
    }


async def measure_paced(pid: int, clients, rate: float, seconds: float) -> dict:
    cpu0, self0 = cpu_seconds(pid), cpu_seconds()
    result = await paced(clients, rate, seconds)
    cpu1, self1 = cpu_seconds(pid), cpu_seconds()
    lat = [ns / 1e9 for ns in result.latencies_ns]
    return {
        "rate": rate, "seconds": seconds, "senders": len(clients),
        "sent": result.sent, "delivered": result.delivered, "timed_out": result.timed_out,
        "p50_ms": ms(median(lat)),
        "p99_ms": ms(percentile(lat, 99)),
        "p999_ms": ms(percentile(lat, 99.9)),
        "max_ms": ms(max(lat)) if lat else None,
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / result.wall, 1),
        "loadgen_cpu_pct": round(100 * (self1 - self0) / result.wall, 1),
        "loadgen_max_send_lag_ms": round(result.max_send_lag_ns / 1e6, 3),
    }
