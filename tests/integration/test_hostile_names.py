"""Made-up names do not stay in the server's memory.

A peer may put any element, attribute and prefix names and namespace names
(RFC 6120 §8.4: a stanza may carry any extended content) in what it sends, and
libxml2 interns each name in a string dictionary that never shrinks; shared by
everything lxml parses in a thread, it kept every name any peer ever sent
(16 million names over 800 connections took RSS from 97 to 761 MiB). The
server now gives each parser and each stanza a dictionary of its own
(``server/xmpp/names.py``), so the names go with the connection or stanza
that brought them.

The attacker needs no account, nor TLS: a stanza before STARTTLS ends the
stream with ``<policy-violation/>`` (TLS is required, RFC 6120 §5.3.1), one
before authentication with ``<not-authorized/>`` (§4.9.3.12), but either has
been parsed — names and all — by then. The same holds on an s2s stream before
dialback (XEP-0220 §2). After login the names also go through routing and
serialisation. Meanwhile a logged-in client keeps doing ping round trips
(XEP-0199), each under a second.

Bound: 1.5M names (150 stanzas of 10k) grew RSS by 48 MiB (c2s before login,
s2s before dialback) and 139 MiB (after login) before the fix, and by -2.5 to
+0.3 MiB after. What may stay is what the attack has in flight —
``CONCURRENCY`` connections, each with one stanza of at most 256 KiB, its
tree and its names (~2 MiB) — plus allocator slack: ``CONCURRENCY`` × 2 MiB
+ 8 MiB = 16 MiB.
"""

import asyncio
import time

import pytest

from tests.harness import STREAMS, RawClient, header, login

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(120)]

MiB = 1024 * 1024
CONNECTIONS = 150
NAMES_PER_CONNECTION = 10_000          # 1.5M names in all, ~16 bytes each on the wire
CONCURRENCY = 4
BOUND = CONCURRENCY * 2 * MiB + 8 * MiB


def rss(server) -> int:
    for line in open(f"/proc/{server.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def made_up_stanza(conn: int, series: str) -> bytes:
    """One stanza of NAMES_PER_CONNECTION names no one used before: each
    child has a new name, namespace and three new attribute names (few
    elements: it is names that are measured, not the cost of elements)."""
    parts = [b"<message to='nobody@localhost'>"]
    for i in range(NAMES_PER_CONNECTION // 5):
        n = f"{series}{conn:04d}{i:04d}"
        parts.append(f"<x{n} xmlns='urn:{n}' a{n}='' b{n}='' c{n}=''/>".encode())
    parts.append(b"</message>")
    return b"".join(parts)


async def send_and_wait_close(port: int, opening: bytes, stanza: bytes) -> bytes:
    """Send the stream header and the stanza; read until the server hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(opening + stanza)
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += chunk
    finally:
        writer.close()
    return received


def connections(port: int, opening: bytes):
    """An attack: each stanza on a connection of its own, CONCURRENCY at a time."""
    async def attack(stanzas: list[bytes]) -> list[bytes]:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(stanza):
            async with sem:
                return await send_and_wait_close(port, opening, stanza)
        return await asyncio.gather(*(one(s) for s in stanzas))
    return attack


async def pings_while(client, task: asyncio.Task) -> list[float]:
    """Ping round trips (XEP-0199) for as long as *task* runs; their durations."""
    times = []
    while not task.done():
        start = time.monotonic()
        await client.ping_server(timeout=5)
        times.append(time.monotonic() - start)
    return times


async def run(server, series: str, attack) -> list:
    """``attack(stanzas)`` with names of *series* (each test its own: names
    another test sent would be known already), after a warm-up: the same
    attack with *known* names (one stanza, over and over), so that what
    connections, buffers and the allocator settle at is not counted."""
    client = await login(server, "bob@localhost/bystander", "bob-pass")
    try:
        for _ in range(2):
            await attack([made_up_stanza(0, series)] * CONCURRENCY)
        # made before the clock starts: building them blocks this process's loop
        stanzas = [made_up_stanza(conn, series) for conn in range(1, CONNECTIONS + 1)]
        assert max(map(len, stanzas)) < 256 * 1024    # under max_stanza_size
        before = rss(server)
        task = asyncio.ensure_future(attack(stanzas))
        times = await pings_while(client, task)
        replies = await task
        grown = rss(server) - before
        assert times and max(times) < 1.0, f"round trips took up to {max(times):.2f} s"
        assert await client.ping_server(timeout=5) < 1.0
        assert grown < BOUND, (f"RSS grew by {grown / MiB:.1f} MiB for "
                               f"{CONNECTIONS * NAMES_PER_CONNECTION} made-up names")
        return replies
    finally:
        await client.close()


async def test_made_up_names_before_login_do_not_stay(server):
    """c2s, no TLS, no login: each connection sends 10k new names in one
    stanza and is ended with a stream error (RFC 6120 §4.9)."""
    replies = await run(server, "c", connections(server.c2s_port, header()))
    assert all(b"<stream:error>" in r for r in replies), replies[0][-300:]


async def test_made_up_names_on_s2s_before_dialback_do_not_stay(server):
    """s2s, before any dialback (XEP-0220 §2.1): a stanza from an unverified
    domain is refused, but it was parsed, names and all."""
    opening = (f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
               f"xmlns:stream='{STREAMS}' xmlns:db='jabber:server:dialback' "
               f"to='localhost' from='evil.example' version='1.0'>").encode()
    replies = await run(server, "s", connections(server.s2s_port, opening))
    assert all(b"<stream:error>" in r for r in replies), replies[0][-300:]


async def test_made_up_names_after_login_do_not_stay(server):
    """c2s, logged in: one session sends itself messages full of new names,
    one after the other; each is routed and delivered back (RFC 6121 §8.5.4:
    to a full JID of an available resource), so the names also pass through
    what the server builds and writes, not only through the parser."""
    raw = await RawClient.connect(server.c2s_port)
    await raw.login_plain(server.cert(), "alice", "alice-pass", resource="names")
    me = b"alice@localhost/names"
    reader, writer = raw.reader, raw.writer

    async def attack(stanzas: list[bytes]) -> list[int]:
        sizes = []
        for stanza in stanzas:
            writer.write(stanza.replace(b"nobody@localhost", me, 1))
            tail, size = b"", 0
            while b"</message>" not in tail:          # its echo, whole
                chunk = await asyncio.wait_for(reader.read(65536), 10)
                assert chunk, "the server closed the session"
                tail, size = (tail + chunk)[-16:], size + len(chunk)
            sizes.append(size)
        return sizes

    sizes = await run(server, "a", attack)
    assert min(sizes) > 100_000                        # delivered whole
    await raw.close()
