"""Damaged streams against a running xferd over raw sockets (end to end).

A few cases only — the parser itself is fuzzed in test_stream_fuzz.py. Each
damaged connection must end with a stream error (with the condition the
parser gives, where it is known) and a closed socket, never hang; a
well-behaved slixmpp client logged in on the same server keeps being served.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.harness import RawClient, header, login, round_trip

from .oracle import PROBE
from .strategies import FRAGMENTS

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(180)]

STREAM_CONDITIONS_SEEN = {
    # what the parser raises (oracle.PARSER_CONDITIONS) and what the session adds
    "not-well-formed", "restricted-xml", "policy-violation", "bad-format",
    "invalid-namespace", "unsupported-encoding", "not-authorized", "invalid-from",
    "unsupported-stanza-type", "host-unknown", "improper-addressing",
}


@pytest.fixture
async def bystander(server):
    client = await login(server, "bob@localhost/bystander", "bob-pass")
    yield client
    assert server.alive(), server.log()[-3000:]
    assert "internal error" not in server.log(), server.log()[-3000:]
    assert await client.ping_server() >= 0, "the well-behaved client lost service"
    client.send_message(mto="bob@localhost/bystander", mbody="still here")
    while True:                      # messages from the damaged streams may come first
        msg = await asyncio.wait_for(client.messages.get(), 5)
        if msg["body"] == "still here":
            break
    await client.close()


async def _logged_in(server) -> RawClient:
    raw = await RawClient.connect(server.c2s_port)
    await raw.login_plain(server.cert(), "alice", "alice-pass", resource="fuzz")
    return raw


async def _send(raw: RawClient, data: bytes, rnd: random.Random) -> None:
    """Write *data* in random pieces: each write goes to the socket at once,
    so the server may read it in as many pieces (no wait between them: the
    server is another process, a yield here gives it nothing)."""
    i = 0
    while i < len(data):
        n = rnd.choice([1, 3, 50, 1400, 16384])
        raw.send(data[i:i + n])
        i += n
        if rnd.random() < 0.3:
            await raw.writer.drain()


async def _verdict(raw: RawClient, timeout: float = 10) -> str | None:
    """The stream error condition, 'closed' for a close without one, None if neither came."""
    try:
        return await raw.stream_error(timeout)
    except AssertionError:
        return "closed" if raw.closed else None


async def _until_verdict(raw: RawClient, rnd: random.Random) -> str:
    """Push the liveness probe, then filler, until the server gives a verdict."""
    raw.send(PROBE)
    verdict = await _verdict(raw, 2)
    filler = [b" " * 16384, b"x" * 16384]
    sent = 0
    while verdict is None and sent < 400 * 1024:
        raw.send(filler[rnd.randrange(2)])
        sent += 16384
        verdict = await _verdict(raw, 0.2)
    assert verdict is not None, "the server neither answered nor closed: a stall"
    return verdict


@pytest.mark.parametrize("payload, condition", [
    (b"<message to='bob@localhost'><body>fish & chips</body></message>", "not-well-formed"),
    (b"<message" + b" " * (300 * 1024), "policy-violation"),
    (b"<message id='" + b"\n" * (300 * 1024), "policy-violation"),
    (b"<message><body>\xff\xfe</body></message>", "not-well-formed"),
    (b"<message><!DOCTYPE x [<!ENTITY a 'b'>]></message>", "not-well-formed"),
], ids=["bare-amp", "whitespace-start-tag", "newlines-attribute", "bad-utf8", "doctype"])
async def test_damaged_stanza_after_login(server, bystander, payload, condition):
    raw = await _logged_in(server)
    await _send(raw, payload, random.Random(len(payload)))
    assert await _until_verdict(raw, random.Random(1)) == condition
    assert await raw.wait_closed()


async def test_stanza_before_text_is_delivered_and_after_it_is_not(server, bystander):
    raw = await _logged_in(server)
    raw.send(b"<message to='bob@localhost/bystander' type='chat'><body>before</body></message>"
             b"junk<message to='bob@localhost/bystander' type='chat'><body>after</body></message>")
    assert await _verdict(raw) == "bad-format"
    msg = await asyncio.wait_for(bystander.messages.get(), 5)
    assert msg["body"] == "before"
    raw = await _logged_in(server)
    raw.send(b"text<message to='bob@localhost/bystander' type='chat'><body>after</body></message>")
    assert await _verdict(raw) == "bad-format"
    # refused while handled (the stream error): a round trip to the bystander
    # proves nothing had been queued for it
    await round_trip(bystander)
    assert bystander.messages.empty(), "a stanza after the bad text was delivered"


@pytest.mark.parametrize("seed", range(6))
async def test_randomly_damaged_messages(server, bystander, seed):
    rnd = random.Random(seed)
    data = bytearray(b"<message to='bob@localhost/bystander' type='chat' id='f%d'>"
                     b"<body>one &amp; two &#x1F600; <![CDATA[<x>]]></body>"
                     b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>" % seed)
    for _ in range(rnd.randint(1, 4)):
        pos = rnd.randrange(len(data) + 1)
        data[pos:pos] = rnd.choice(FRAGMENTS)
    raw = await _logged_in(server)
    await _send(raw, bytes(data), rnd)
    verdict = await _until_verdict(raw, rnd)
    assert verdict in STREAM_CONDITIONS_SEEN | {"closed"}, verdict
    assert await raw.wait_closed()


@pytest.mark.parametrize("data, condition", [
    ("<?xml version='1.0' encoding='UTF-16'?>".encode("utf-16-le")
     + header().decode().split("?>", 1)[1].encode("utf-16-le"), "unsupported-encoding"),
    (b"<?xml version='1.0' encoding='ISO-8859-1'?>" + header().split(b"?>", 1)[1],
     "unsupported-encoding"),
    (b"<rtr:stream xmlns='jabber:client' xmlns:str='http://etherx.jabber.org/streams'>",
     "not-well-formed"),
    (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
     b"ymlns:db='x' to='localhost'>", "not-well-formed"),
], ids=["utf-16", "latin-1", "undeclared-root-prefix", "undeclared-attribute-prefix"])
async def test_damaged_stream_header(server, bystander, data, condition):
    raw = await RawClient.connect(server.c2s_port)
    raw.send(data)
    assert await _verdict(raw) == condition
    assert await raw.wait_closed()


async def test_a_brace_in_a_namespace_name_cannot_inject_markup(server, bystander):
    """Corpus 020 end to end: the stanza once reached the bystander re-serialised with
    the namespace name spilled out as raw markup — a forged message from the admin."""
    raw = await _logged_in(server)
    raw.send(b"<message to='bob@localhost/bystander' type='chat'><body>hi</body>"
             b"<x xmlns='a}x/&gt;&lt;/message&gt;&lt;message from=&apos;admin@localhost&apos; "
             b"type=&apos;chat&apos;&gt;&lt;body&gt;forged&lt;/body&gt;&lt;/message&gt;&lt;y '/>"
             b"</message>")
    assert await _verdict(raw) == "not-well-formed"
    await round_trip(bystander)             # as above: the refusal came first
    assert bystander.messages.empty(), "the stanza got through"
