"""Resource limits hold, and a well-behaved client on the same server keeps service.

One xferd with every limit set low (see ``limited``). Each test lets an abuser
run into one limit, checks what the abuser sees (a stream or stanza error, a
slowed stream, a closed connection) and, while the abuse goes on, that a
normal client still gets answers. Abusers connect from their own loopback
address (127.0.0.x, any of which reaches a server on 127.0.0.1), so the
per-address limits never touch the well-behaved clients on 127.0.0.1.
"""

import asyncio
import base64

import pytest

from tests.harness import (SASL, STREAMS, TLS, RawClient, RouteTo, XferdProcess, header,
                           listen_for, login, round_trip, unused_port)
from tests.integration.test_federation import FakeAuthority, RawServerClient

pytestmark = pytest.mark.hostile

C2S_RATE, C2S_BURST = 50, 20
S2S_RATE, S2S_BURST = 20, 10
AUTH_TIMEOUT = 3            # c2s.auth_timeout and s2s.negotiation_timeout
MAX_QUEUE = 3
PING = "<iq type='get' id='p{n}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    proc = XferdProcess(tmp_path_factory.mktemp("limits"), overrides={
        "c2s": {"stanza_rate": C2S_RATE, "stanza_burst": C2S_BURST,
                "max_connections_per_ip": 5, "auth_timeout": AUTH_TIMEOUT},
        "s2s": {"stanza_rate": S2S_RATE, "stanza_burst": S2S_BURST,
                "max_connections_per_ip": 2, "negotiation_timeout": AUTH_TIMEOUT,
                "max_queue": MAX_QUEUE, "connect_timeout": 1, "dialback_timeout": 2},
        "auth": {"max_failures": 3, "max_failures_per_ip": 4, "failure_window": 60},
        "im": {"offline_quota": 3},
    })
    for user in ("alice", "bob", "carol", "dave", "erin", "mallory", "target"):
        proc.adduser(f"{user}@localhost", "pw")
    proc.start()
    proc.evil_route = RouteTo(proc, "evil.test")     # FakeAuthority of evil.test answers here
    proc.black_route = RouteTo(proc, "black.test")   # accepts TCP, never says a word
    yield proc
    proc.stop()


@pytest.fixture
async def bystander(limited):
    """bob, logged in from 127.0.0.1; at the end he must still get answers."""
    client = await login(limited, "bob@localhost/bystander", "pw")
    yield client
    assert limited.alive(), limited.log()[-3000:]
    await still_served(client)
    await client.close()


async def still_served(client) -> None:
    """A ping round trip and a message to oneself: the server still serves *client*."""
    assert await client.ping_server(timeout=5) >= 0
    client.send_message(mto=str(client.boundjid), mbody="still here", mtype="chat")
    while (await asyncio.wait_for(client.messages.get(), 5))["body"] != "still here":
        pass


async def raw_from(address: str, port: int, cls=RawClient) -> RawClient:
    """A raw connection from the loopback address *address* (e.g. 127.0.0.9)."""
    raw = cls()
    raw.reader, raw.writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(address, 0), limit=2 ** 20)
    raw._new_stream()
    return raw


def now() -> float:
    return asyncio.get_running_loop().time()


# -- stanza rate (token bucket, backpressure) ---------------------------------------------

async def test_c2s_flood_is_slowed_to_the_rate_and_others_are_served(limited, bystander):
    flood = await raw_from("127.0.0.2", limited.c2s_port)
    await flood.login_plain(limited.cert(), "mallory", "pw", resource="flood")
    total = 150
    answered: list[float] = []
    under_way = asyncio.Event()

    async def count_answers():
        while len(answered) < total:
            await flood.expect("iq", timeout=15)
            answered.append(now() - start)
            if len(answered) >= C2S_BURST:
                under_way.set()

    start = now()
    flood.send("".join(PING.format(n=n) for n in range(total)))     # one write, as fast as TCP
    counting = asyncio.create_task(count_answers())
    await asyncio.wait_for(under_way.wait(), 15)        # the burst is answered: the flood is on
    assert await bystander.ping_server(timeout=5) < 2               # the others' turn comes now …
    assert len(answered) < total                                    # … not after the flood
    await counting                                                  # nothing lost, only slowed
    in_first_second = sum(1 for t in answered if t <= 1.0)
    assert in_first_second <= C2S_BURST + C2S_RATE * 1.0 + 5, answered[:80]
    assert answered[-1] >= (total - C2S_BURST) / C2S_RATE * 0.8      # ~2.6 s, not at once
    assert "slowing down its reading" in limited.log()
    await flood.close()


async def test_s2s_flood_is_slowed_to_the_rate_and_others_are_served(limited, bystander,
                                                                     tmp_path):
    alice = await login(limited, "alice@localhost/r", "pw")
    total = 50
    async with FakeAuthority(limited.evil_route, tmp_path, verdict="valid"):
        peer = await RawServerClient.connect(limited.s2s_port)
        await peer.secure_s2s("evil.test", "localhost")
        peer.send("<db:result from='evil.test' to='localhost'>any-key</db:result>")
        assert (await peer.expect("result", timeout=10)).get("type") == "valid"
        start = now()
        peer.send("".join(f"<message from='m@evil.test/x' to='bob@localhost/bystander' "
                          f"type='chat'><body>flood {n}</body></message>" for n in range(total)))
        got: list[tuple[float, str]] = []
        # the flood is on once its first message is in; alice writes now
        msg = await asyncio.wait_for(bystander.messages.get(), 15)
        got.append((now() - start, msg["body"]))
        alice.send_message(mto="bob@localhost/bystander", mbody="from alice", mtype="chat")
        while len(got) < total + 1:
            msg = await asyncio.wait_for(bystander.messages.get(), 15)
            got.append((now() - start, msg["body"]))
    bodies = [body for _, body in got]
    # alice's message overtook most of the flood: the remote stream waits, the rest does not
    assert bodies.index("from alice") < total - 10, bodies
    assert sorted(bodies) == sorted([f"flood {n}" for n in range(total)] + ["from alice"])
    floods = [t for t, body in got if body.startswith("flood")]
    assert sum(1 for t in floods if t <= 1.0) <= S2S_BURST + S2S_RATE * 1.0 + 3, floods
    await peer.close()
    await alice.close()


# -- connections per address -----------------------------------------------------------------

async def test_c2s_connections_per_ip_beyond_the_limit_get_policy_violation(limited, bystander):
    held = []
    for _ in range(5):
        raw = await raw_from("127.0.0.3", limited.c2s_port)
        await raw.open_stream()                                    # served
        held.append(raw)
    extra = await raw_from("127.0.0.3", limited.c2s_port)
    assert await extra.stream_error(timeout=5) == "policy-violation"   # before it said a word
    assert b"too many connections" in extra.received
    assert await extra.wait_closed(5)
    # another address is not affected: a new client logs in from 127.0.0.1
    carol = await login(limited, "carol@localhost/r", "pw")
    await still_served(carol)
    await carol.close()
    # the count is of live connections: one goes, one more may come
    leaving = held.pop()
    leaving.writer.write_eof()          # the server reads the end, lets the connection go …
    assert await leaving.wait_closed(5)         # … and closes its side once it has
    await leaving.close()
    again = await raw_from("127.0.0.3", limited.c2s_port)
    await again.open_stream()
    for raw in held + [again]:
        await raw.close()


async def test_s2s_connections_per_ip_beyond_the_limit_get_policy_violation(limited, bystander):
    held = []
    for _ in range(2):
        raw = await raw_from("127.0.0.4", limited.s2s_port, RawServerClient)
        await raw.open_s2s("a.test", "localhost")
        held.append(raw)
    extra = await raw_from("127.0.0.4", limited.s2s_port, RawServerClient)
    assert await extra.stream_error(timeout=5) == "policy-violation"
    # a server on another address still gets a stream
    other = await RawServerClient.connect(limited.s2s_port)
    features = await other.open_s2s("b.test", "localhost")
    assert features.find(f"{{{TLS}}}starttls") is not None
    for raw in held + [other]:
        await raw.close()


# -- slowloris: the negotiation deadline counts from the connection -------------------------------

async def trickle(raw: RawClient, data: bytes, every: float = 0.2) -> None:
    """Send *data* one byte at a time: plenty of activity, never a whole header."""
    for byte in data:
        if raw.closed or raw.writer.is_closing():
            return
        raw.send(bytes([byte]))
        await asyncio.sleep(every)      # the wait is the point: a deliberately slow peer


async def cut_off_after(raw: RawClient, started: float) -> tuple[str, float]:
    condition = await raw.stream_error(timeout=AUTH_TIMEOUT + 5)
    return condition, now() - started


async def test_c2s_slowloris_and_silent_peers_time_out(limited, bystander):
    started = now()
    silent = await raw_from("127.0.0.5", limited.c2s_port)
    slow = await raw_from("127.0.0.5", limited.c2s_port)
    dripping = asyncio.create_task(trickle(slow, header()))        # ~30 s for the whole header
    # a third one stalls in the TLS handshake it asked for
    stalled = await raw_from("127.0.0.5", limited.c2s_port)
    await stalled.open_stream()
    stalled.send(f"<starttls xmlns='{TLS}'/>")
    await stalled.expect("proceed")
    before_tls = len(stalled.received)
    stalled.send(b"\x16\x03\x01")                                  # a TLS record that never ends

    # the wait is the point: the bystander asks after the three have stalled
    # for a second (well inside AUTH_TIMEOUT), not before they got going
    await asyncio.sleep(1)
    await still_served(bystander)                                  # meanwhile, business as usual
    for raw in (silent, slow):
        condition, elapsed = await cut_off_after(raw, started)
        assert condition == "connection-timeout"
        assert AUTH_TIMEOUT - 0.5 <= elapsed <= AUTH_TIMEOUT + 3, elapsed
        assert await raw.wait_closed(5)
    assert await stalled.wait_closed(5)                            # not TLS's own 30 s
    assert now() - started <= AUTH_TIMEOUT + 3
    assert len(stalled.received) == before_tls, "no plaintext after <proceed/>"
    dripping.cancel()
    for raw in (silent, slow, stalled):
        await raw.close()


async def test_s2s_slowloris_and_silent_peers_time_out(limited, bystander):
    started = now()
    silent = await raw_from("127.0.0.6", limited.s2s_port, RawServerClient)
    slow = await raw_from("127.0.0.6", limited.s2s_port, RawServerClient)
    s2s_header = (f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                  f"xmlns:stream='{STREAMS}' xmlns:db='jabber:server:dialback' "
                  f"from='a.test' to='localhost' version='1.0'>").encode()
    dripping = asyncio.create_task(trickle(slow, s2s_header))
    # the wait is the point: as above, the bystander asks a second into the stall
    await asyncio.sleep(1)
    await still_served(bystander)
    for raw in (silent, slow):
        condition, elapsed = await cut_off_after(raw, started)
        assert condition == "connection-timeout"
        assert AUTH_TIMEOUT - 0.5 <= elapsed <= AUTH_TIMEOUT + 3, elapsed
    dripping.cancel()
    for raw in (silent, slow):
        await raw.close()


# -- bounded queue per remote domain -----------------------------------------------------------

async def black_hole(route: RouteTo):
    """A 'server' that accepts TCP and reads, but never answers."""
    async def swallow(reader, writer):
        while await reader.read(65536):
            pass
        writer.close()
    return await listen_for(route, swallow)


async def test_s2s_queue_per_remote_domain_is_bounded(limited, bystander):
    hole = await black_hole(limited.black_route)
    alice = await login(limited, "alice@localhost/q", "pw")
    errors: asyncio.Queue = asyncio.Queue()
    alice.add_event_handler("message_error", errors.put_nowait)
    started = now()
    for n in range(MAX_QUEUE + 2):
        alice.send_message(mto="someone@black.test", mbody=f"into the void {n}", mtype="chat")
    # beyond the bound: bounced at once, "try again later"
    for _ in range(2):
        error = await asyncio.wait_for(errors.get(), 5)
        assert error["error"]["condition"] == "resource-constraint"
        assert error["error"]["type"] == "wait"
        assert str(error["from"]) == "someone@black.test"
    assert now() - started < 1.5, "the overflow must not wait for the connection attempt"
    # meanwhile local service goes on, alice's included
    alice.send_message(mto="bob@localhost/bystander", mbody="local", mtype="chat")
    assert (await asyncio.wait_for(bystander.messages.get(), 5))["body"] == "local"
    assert await alice.ping_server() >= 0
    # the queued ones bounce when the silent domain's negotiation deadline passes
    for _ in range(MAX_QUEUE):
        error = await asyncio.wait_for(errors.get(), 10)
        assert error["error"]["condition"] == "remote-server-timeout"
    assert errors.empty()
    hole.close()
    await alice.close()


async def test_routes_to_unreachable_domains_do_not_pile_up():
    """In-process: a user writing to ever new domains that cannot be reached
    leaves no route behind once the stanza bounced (the table would otherwise
    grow with every domain name anyone made up)."""
    from types import SimpleNamespace

    from s2s.manager import S2S
    from server.config import Config, RouteConfig
    from server.xmpp.stanza import E

    nobody_listens = unused_port()
    config = Config()
    domains = [f"gone{n}.test" for n in range(50)]
    config.s2s.routes = {d: RouteConfig(port=nobody_listens) for d in domains}
    bounced: list = []
    all_bounced, table_empty = asyncio.Event(), asyncio.Event()

    async def route(stanza, origin=None):
        bounced.append(stanza)
        if len(bounced) == len(domains):
            all_bounced.set()

    s2s = S2S(SimpleNamespace(config=config, router=SimpleNamespace(route=route)))
    forget = s2s.forget

    def forgetting(route):              # every route dropped from the table comes here
        forget(route)
        if not s2s.routes:
            table_empty.set()
    s2s.forget = forgetting
    for domain in domains:
        s2s.send(E("{jabber:client}message", {"from": "a@localhost/r", "to": f"b@{domain}"}),
                 "localhost", domain)
    assert len(s2s.routes) == len(domains)                  # all trying to connect
    try:
        await asyncio.wait_for(all_bounced.wait(), 10)
    except asyncio.TimeoutError:
        pass
    assert len(bounced) == len(domains)
    assert {el.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}remote-server-not-found")
            is not None for el in bounced} == {True}
    try:
        await asyncio.wait_for(table_empty.wait(), 10)
    except asyncio.TimeoutError:
        pass
    assert s2s.routes == {}


# -- bounded offline storage (XEP-0160 §2 step 3) ------------------------------------------------

async def test_offline_storage_is_bounded_per_user(limited, bystander):
    mallory = await login(limited, "mallory@localhost/o", "pw")
    carol = await login(limited, "carol@localhost/o", "pw")
    errors: asyncio.Queue = asyncio.Queue()
    mallory.add_event_handler("message_error", errors.put_nowait)
    for n in range(8):                                  # dave is offline; quota is 3
        mallory.send_message(mto="dave@localhost", mbody=f"spam {n}", mtype="chat")
    for _ in range(5):
        error = await asyncio.wait_for(errors.get(), 5)
        assert error["error"]["condition"] == "service-unavailable"
    # carol writes to erin (offline too): another user's queue is not affected
    carol_errors: asyncio.Queue = asyncio.Queue()
    carol.add_event_handler("message_error", carol_errors.put_nowait)
    carol.send_message(mto="erin@localhost", mbody="hello erin", mtype="chat")
    await still_served(carol)
    assert carol_errors.empty()
    dave = await login(limited, "dave@localhost/o", "pw")
    dave.send_presence()
    stored = [(await asyncio.wait_for(dave.messages.get(), 5))["body"] for _ in range(3)]
    assert stored == ["spam 0", "spam 1", "spam 2"]
    await round_trip(dave)              # stored messages go out while the presence is handled
    assert dave.messages.empty()
    erin = await login(limited, "erin@localhost/o", "pw")
    erin.send_presence()
    assert (await asyncio.wait_for(erin.messages.get(), 5))["body"] == "hello erin"
    for client in (mallory, carol, dave, erin):
        await client.close()


# -- brute force: failed logins per account and per address ---------------------------------------

async def plain_login(raw: RawClient, user: str, password: str) -> str:
    """One SASL PLAIN attempt on a secured stream: 'success' or the failure condition."""
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    while True:
        el = raw.elements.pop(0) if raw.elements else None
        if el is None:
            await raw._read_some(5)
            continue
        name = el.tag.partition("}")[2]
        if name == "success":
            return "success"
        if name == "failure":
            return el[0].tag.partition("}")[2]


async def test_brute_force_on_one_account_is_throttled(limited, bystander):
    target = await login(limited, "target@localhost/home", "pw")   # already logged in
    attacker = await raw_from("127.0.0.7", limited.c2s_port)
    await attacker.secure(limited.cert())
    for guess in ("123456", "password", "qwerty"):                  # auth.max_failures = 3
        assert await plain_login(attacker, "target", guess) == "not-authorized"
    # now even the right password is refused from the attacker's address …
    assert await plain_login(attacker, "target", "pw") == "temporary-auth-failure"
    # … but not from the target's (test_hostile_auth.py: the per-account pace)
    again = await login(limited, "target@localhost/new", "pw")
    await again.close()
    # the target's open session and other accounts are served as before
    await still_served(target)
    carol = await login(limited, "carol@localhost/bf", "pw")
    await carol.close()
    await target.close()
    await attacker.close()


async def test_brute_force_from_one_address_is_throttled(limited, bystander):
    attacker = await raw_from("127.0.0.8", limited.c2s_port)
    await attacker.secure(limited.cert())
    for user in ("admin", "root", "test", "info"):                  # auth.max_failures_per_ip = 4
        assert await plain_login(attacker, user, "guess") == "not-authorized"
    # from that address even a right password is refused, before any password check …
    assert await plain_login(attacker, "carol", "pw") == "temporary-auth-failure"
    again = await raw_from("127.0.0.8", limited.c2s_port)
    await again.secure(limited.cert())
    assert await plain_login(again, "carol", "pw") == "temporary-auth-failure"
    # … while carol logs in from her own address
    carol = await login(limited, "carol@localhost/ip", "pw")
    await still_served(carol)
    await carol.close()
    await attacker.close()
    await again.close()
