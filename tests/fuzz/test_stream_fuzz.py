"""Property tests of the stream layer: random and damaged XML, random chunkings.

Every input goes through :func:`tests.fuzz.oracle.check`, which holds the
properties: only documented stream errors escape, the parser is inert after
its verdict and never stalls silently, every stanza it hands out is safe, a
feed never takes long, and an accepted stream is what a one-shot XML parse of
the same bytes finds. On top of that, for undamaged input the stanzas that come
out are exactly the ones that went in, however the bytes were cut.

Budget: CI runs a fixed, derandomised set of examples (tests/fuzz/profiles.py);
the whole tests/fuzz directory takes about 30-50 s on two cores. A long local
run draws fresh inputs, 100 times as many (an hour or so)::

    XFERD_FUZZ_PROFILE=long .venv/bin/python -m pytest tests/fuzz/test_stream_fuzz.py -q

or as many as you like, reported unshrunk for speed::

    XFERD_FUZZ_PROFILE=long XFERD_FUZZ_EXAMPLES=200000 XFERD_FUZZ_NO_SHRINK=1 \\
        .venv/bin/python -m pytest tests/fuzz/test_stream_fuzz.py -q -k mutated -x

Coverage-guided runs with atheris: see tests/fuzz/atheris_stream.py.

A failure prints the (shrunk) input; save it under tests/fuzz/corpus/ with a
sidecar (see test_corpus.py) so it stays a regression test.
"""

from __future__ import annotations

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from server.xmpp.stream import (CLIENT_NS, DEFAULT_MAX_STANZA_SIZE, SERVER_NS, StreamClosed,
                                StreamOpened, StreamParser)

from .oracle import Limits, Outcome, assert_live, canonical, check, chunked, feed_all
from .profiles import TIMEOUT, fuzz
from .strategies import FRAGMENTS, chunkings, mutated, streams

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(TIMEOUT)]


def limits_for(content_ns: str):
    """Parser settings: mostly the stream's own namespace and roomy limits."""
    other = SERVER_NS if content_ns == CLIENT_NS else CLIENT_NS
    return st.builds(
        Limits,
        content_ns=st.sampled_from([content_ns] * 6 + [(CLIENT_NS, SERVER_NS), other]),
        max_stanza_size=st.sampled_from([DEFAULT_MAX_STANZA_SIZE] * 3 + [4096, 600, 100]),
        max_depth=st.sampled_from([32, 32, 8, 3]))


# -- (c) undamaged streams come out as they went in --------------------------------

@fuzz(200)
@given(gen=streams(), sizes=chunkings)
def test_valid_stream_gives_back_exactly_its_stanzas(gen, sizes):
    note(f"data={gen.data!r}")
    out = check(gen.data, sizes, Limits(gen.content_ns))
    assert out.error is None, out.error
    assert out.closed == gen.closed
    assert isinstance(out.events[0], StreamOpened)
    assert out.events[0].attrs == gen.header_attrs
    assert [canonical(el) for el in out.elements] == [s.canonical() for s in gen.stanzas]
    if gen.closed:
        assert isinstance(out.events[-1], StreamClosed)


@fuzz(100)
@given(gen=streams(), sizes=chunkings, junk=st.sampled_from(
    [b"<<", b"&lol;", b"<!DOCTYPE x>", b"<!-- x -->", b"<?pi?>", b"text", b"</nope>",
     b"\xff\xfe", b"<a><b></a>", b"<foo:x/>", b"\x00"]))
def test_stanzas_before_an_error_are_all_reported(gen, sizes, junk):
    """What arrived whole before the bad bytes is still handed out (net.py serves it)."""
    data = gen.data
    if gen.closed:
        data = data[:data.rindex(b"</")]
    out = check(data + junk + b"<presence/>" * 3, sizes, Limits(gen.content_ns))
    assert out.error is not None
    assert [canonical(el) for el in out.elements] == [s.canonical() for s in gen.stanzas]


# -- (a), (b), (d), (e) on damaged input ------------------------------------------

@fuzz(500)
@given(st.data())
def test_mutated_stream(data):
    gen = data.draw(streams(), label="stream")
    damaged = data.draw(mutated(gen.data), label="damaged")
    sizes = data.draw(chunkings, label="sizes")
    limits = data.draw(limits_for(gen.content_ns), label="limits")
    out = check(damaged, sizes, limits)
    # however the bytes are cut, no stanza comes out that another cut refuses
    # before it: one list of stanzas is a prefix of the other
    whole = check(damaged, None, limits)
    a = [canonical(el) for el in out.elements]
    b = [canonical(el) for el in whole.elements]
    shorter = min(len(a), len(b))
    assert a[:shorter] == b[:shorter], "different stanzas for different chunkings"


@fuzz(200)
@given(prefix=st.sampled_from([b"", b"<?xml version='1.0'?>", b"<stream:stream xmlns='jabber:"
                               b"client' xmlns:stream='http://etherx.jabber.org/streams'>"]),
       noise=st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=12), max_size=40),
       sizes=chunkings)
def test_fragment_soup(prefix, noise, sizes):
    """Markup fragments glued together: the parser must decide, and decide safely."""
    check(prefix + b"".join(noise), sizes, Limits(max_stanza_size=2048, max_depth=8))


@fuzz(200)
@given(data=st.binary(max_size=400), sizes=chunkings)
def test_random_bytes(data, sizes):
    check(data, sizes)


# -- chunking cannot smuggle anything through -------------------------------------

@fuzz(150)
@given(gen=streams(), data=st.data())
def test_every_chunking_agrees_on_damaged_input(gen, data):
    """Byte-at-a-time and one piece must agree on the stanzas and the verdict's kind."""
    damaged = data.draw(mutated(gen.data), label="damaged")
    limits = Limits(gen.content_ns)
    one = check(damaged, [1], limits)
    whole = check(damaged, None, limits)
    assert [canonical(el) for el in one.elements] == [canonical(el) for el in whole.elements] \
        or one.error is not None or whole.error is not None
    if one.closed and whole.closed:
        assert [canonical(el) for el in one.elements] == \
            [canonical(el) for el in whole.elements]


class _Swallower(StreamParser):
    """A parser that stalls: it takes every byte and never answers."""
    def feed(self, data):
        return []


def test_liveness_check_catches_a_stall():
    parser = _Swallower(max_stanza_size=1000)
    with pytest.raises(AssertionError, match="stall"):
        assert_live(parser, Outcome())


@pytest.mark.parametrize("data", [
    b"<message><body>a &am",             # a reference still arriving
    b"<message a='x",                     # inside a quoted value: '>' does not count
    b"<message",
    b"<iq><![CDATA[ x",
], ids=["reference", "quoted", "start-tag", "cdata"])
def test_waiting_parsers_get_a_verdict_from_more_bytes(data):
    header = (b"<stream:stream xmlns='jabber:client' "
              b"xmlns:stream='http://etherx.jabber.org/streams'>")
    out = feed_all(Limits().parser(), chunked(header + data, [1]))
    assert out.error is None and not out.closed       # still waiting, legitimately
    check(header + data, [1], Limits(max_stanza_size=2000))
