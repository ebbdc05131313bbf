"""Scenario 4: roster load. A user whose roster holds R items (put into the
server's storage before the run, see ``seed.py``) logs in and fetches it.

The session sends no initial presence: what is timed is the roster itself,
not R presence probes. Figures: the roster round trip (get sent → whole result
parsed), login + fetch, the bytes of the answer (after TLS), and the server's
CPU for the fetch. Repeated; the server keeps whatever it caches between
repeats, as it would between a user's logins.
"""

from __future__ import annotations

import time

from .loadgen import BenchClient, client_context
from .procs import cpu_seconds
from .seed import Account, Item

USER = "rosteruser"
ROSTER_NS = "jabber:iq:roster"


def account(domain: str, items: int) -> Account:
    return Account(domain, USER, [Item(f"contact{i}@roster.example", "both", f"Contact {i}",
                                       ("Bench",)) for i in range(items)])


async def fetch_once(server, password: str) -> dict:
    client = BenchClient("127.0.0.1", server.c2s_port, server.domain, USER, password,
                         client_context(server.cert()))
    started = time.perf_counter()
    try:
        await client.login(presence=False)
        logged_in = time.perf_counter()
        before, cpu0 = client.bytes_in, cpu_seconds(server.pid)
        answer = await client.request(f"<iq type='get' id='r'><query xmlns='{ROSTER_NS}'/></iq>",
                                      "r")
        done = time.perf_counter()
        cpu1 = cpu_seconds(server.pid)
        items = len(answer.findall(f"{{{ROSTER_NS}}}query/{{{ROSTER_NS}}}item"))
        return {"items": items, "fetch_ms": round(1000 * (done - logged_in), 3),
                "login_and_fetch_ms": round(1000 * (done - started), 3),
                "bytes": client.bytes_in - before,
                "server_cpu_ms": round(1000 * (cpu1 - cpu0), 1)}
    finally:
        await client.close()


async def measure(server, password: str, expected: int) -> dict:
    figures = await fetch_once(server, password)
    figures["expected"] = expected
    if figures["items"] != expected:
        raise RuntimeError(f"{server.name}: the roster has {figures['items']} items, "
                           f"{expected} were stored")
    return figures
