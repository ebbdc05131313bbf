"""Memory and size bounds of the stream parser over long and endless input.

* A long stream of many stanzas, cut at random, keeps the parser's retained
  state flat: no stanza stays attached to the root, no text piles up, the
  reference scanner's carry stays tiny, and resident memory does not grow.
* Made-up names do not stay: lxml interns every element, attribute and prefix
  name and namespace URI in a libxml2 dictionary that never shrinks, one per
  thread unless :mod:`server.xmpp.names` gives each parser and each stanza a
  dictionary of its own; then names go with the stanza or parser that brought
  them, also on one endless stream (its parser is renewed every
  ``renew_after`` bytes) and also when some stanzas are kept.
* A stanza that never ends — in its text, an attribute value, white space
  inside its start tag, a CDATA section, a comment… — is cut off with
  ``<policy-violation/>`` once it passes ``max_stanza_size`` (plus one slice).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from server.xmpp.errors import StreamError
from server.xmpp.stream import Element, StreamClosed, StreamOpened, StreamParser

from .profiles import TIMEOUT

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(max(TIMEOUT, 300) if TIMEOUT else 0)]

KiB, MiB = 1024, 1024 * 1024
HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' "
          b"xmlns:db='jabber:server:dialback' to='example.com' version='1.0'>")
FOOTER = b"</stream:stream>"


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="needs Linux /proc")


def _random_cuts(data: bytes, rnd: random.Random, biggest: int = 64 * KiB):
    i = 0
    while i < len(data):
        n = rnd.choice([1, 7, 100, 1500, 8192, biggest, rnd.randint(1, biggest)])
        yield data[i:i + n]
        i += n


def _assert_flat(parser: StreamParser) -> None:
    """What the parser keeps between feeds is bounded, whatever came before."""
    root = parser._root
    if root is not None and not parser.closed:
        assert len(root) == 0 or parser._depth > 1, "finished stanzas stay on the root"
        assert root.text is None or parser._depth > 1, "keepalive text piles up"
    assert len(parser._carry) <= 16
    assert parser._stanza_bytes <= parser.max_stanza_size


def _stanza(i: int) -> bytes:
    return (b"<message to='romeo@example.net' from='juliet@example.com/balcony' "
            b"type='chat' id='m%d'><body>Wherefore art thou, Romeo? %d</body>"
            b"<active xmlns='http://jabber.org/protocol/chatstates'/>"
            b"<db:result to='x'>k</db:result></message>\n" % (i, i))


@needs_proc
def test_50k_stanzas_in_random_chunks_keep_the_parser_flat():
    rnd = random.Random(9)
    stanzas = b"".join(_stanza(i) for i in range(50_000))
    assert len(stanzas) > 10 * MiB
    parser = StreamParser()
    assert [type(e) for e in parser.feed(HEADER)] == [StreamOpened]
    count, baseline = 0, None
    for n, chunk in enumerate(_random_cuts(stanzas + FOOTER, rnd)):
        for ev in parser.feed(chunk):
            if isinstance(ev, Element):
                assert ev.element.get("id") == f"m{count}"
                count += 1
            else:
                assert isinstance(ev, StreamClosed)
        _assert_flat(parser)
        if baseline is None and count >= 5_000:
            baseline = _rss()                   # after warm-up
    assert count == 50_000 and parser.closed
    grown = _rss() - baseline
    assert grown < 8 * MiB, f"resident memory grew by {grown // KiB} KiB"


def _made_up_names(i: int) -> bytes:
    """A stanza whose every name and namespace is new to the stream."""
    tag = b"e%08d-abcdefghijklmnopqrstuvwxyz0123456789" % i
    return (b"<message xmlns:p%d='urn:made-up:%08d:abcdefghijklmnopqrstuvwxyz' "
            b"p%d:a%08d-abcdefghijklmnopqrstuvwxyz0123456789='1'><%s/></message>"
            % (i, i, i, i, tag))


_MADE_UP_NAMES = """
import gc, sys
from server.xmpp.stream import StreamParser
from tests.fuzz.test_stream_limits import HEADER, _made_up_names, _rss
streams, per_stream = int(sys.argv[1]), int(sys.argv[2])
kept, baseline = [], None
for stream in range(streams):
    parser = StreamParser()
    parser.feed(HEADER)
    for i in range(stream * per_stream, (stream + 1) * per_stream, 500):
        events = parser.feed(b"".join(_made_up_names(j) for j in range(i, i + 500)))
        assert len(events) == 500
        kept.append(events[0].element)      # as a session keeps its last presence
    del parser, events
    if baseline is None:
        gc.collect()
        baseline = _rss()
gc.collect()
print(_rss() - baseline)
"""


@needs_proc
@pytest.mark.parametrize("streams, per_stream", [(4, 20_000), (2, 60_000)],
                         ids=["four-streams", "one-long-stream"])
def test_made_up_names_do_not_grow_memory_without_bound(streams, per_stream):
    """Streams of new names (each stanza: a namespace, a prefix, an attribute
    and an element name nobody used before; 20k stanzas are ~5 MiB of input),
    in a fresh interpreter so that nothing else moves the numbers. One stanza
    in 500 is kept. Were the names to stay in lxml's per-thread dictionary
    (about 110 bytes per name), RSS would grow by ~20 MiB after the first
    stream here, as it did before :mod:`server.xmpp.names`."""
    done = subprocess.run([sys.executable, "-c", _MADE_UP_NAMES, str(streams), str(per_stream)],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    grown = int(done.stdout)
    assert grown < 4 * MiB, f"resident memory grew by {grown // KiB} KiB"


@pytest.mark.parametrize("renew_after", [64 * KiB, 300], ids=["renew-64k", "renew-300"])
@pytest.mark.parametrize("header", [
    HEADER,
    b"<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams' "
    b"xmlns:db='jabber:server:dialback'>",
], ids=["stream-prefix", "other-prefix"])
def test_a_3mib_stream_in_random_cuts_keeps_every_stanza(header, renew_after):
    """Header prefixes, stanza boundaries and the closing tag, cut anywhere;
    and the parser renewed at stanza ends, often or very often."""
    prefix = header[header.index(b"<s") + 1:header.index(b":stream")]
    rnd = random.Random(len(header))
    one = (b"<message id='%d'><body>x</body><db:result to='y'>k</db:result>"
           b"<" + prefix + b":features/></message>")
    total = 3 * MiB // len(one % 99999) + 10
    data = header + b"".join(one % i for i in range(total)) + b"</" + prefix + b":stream>"
    parser = StreamParser(renew_after=renew_after)
    events = []
    for chunk in _random_cuts(data, rnd, biggest=32 * KiB):
        events += parser.feed(chunk)
        _assert_flat(parser)
    assert isinstance(events[0], StreamOpened) and isinstance(events[-1], StreamClosed)
    stanzas = [ev.element for ev in events[1:-1]]
    assert [el.get("id") for el in stanzas] == [str(i) for i in range(total)]
    for el in stanzas:
        assert el[1].tag == "{jabber:server:dialback}result"
        assert el[2].tag == "{http://etherx.jabber.org/streams}features"


# -- stanzas that never end ---------------------------------------------------------

NEVER_ENDING = {
    "body-text": (b"<message><body>", b"a"),
    "attribute-value": (b"<message id='", b"a"),
    "whitespace-in-start-tag": (b"<message", b" "),
    "whitespace-in-attribute": (b"<message id='", b" "),
    "newlines-after-attribute": (b"<message id='x'", b"\n"),
    "whitespace-in-end-tag": (b"<message></message", b" "),
    "whitespace-in-text": (b"<message><body>", b" \n"),
    "cdata": (b"<message><body><![CDATA[", b"x]"),
    "comment": (b"<message><!--", b"- "),
    "pi": (b"<message><?pi ", b"?"),
    "entities": (b"<message><body>", b"&amp;"),
    "attributes": (b"<message", b" a='1'"),      # a duplicate: libxml2 waits for '>'
    "open-elements": (b"<message>", b"<a></a>"),
    "top-level-whitespace-start-tag": (b"", b" "),   # after '<iq' below
}


@pytest.mark.parametrize("chunk", [1 * KiB, 64 * KiB])
@pytest.mark.parametrize("name", sorted(NEVER_ENDING))
def test_a_stanza_that_never_ends_is_cut_off_at_the_limit(name, chunk):
    start, filler = NEVER_ENDING[name]
    if name == "top-level-whitespace-start-tag":
        start = b"<iq/>\n<iq"                  # the count must restart after a stanza
    parser = StreamParser()
    parser.feed(HEADER)
    block = filler * (chunk // len(filler))
    fed = 0
    with pytest.raises(StreamError) as info:
        parser.feed(start)
        while fed < 4 * parser.max_stanza_size:
            parser.feed(block)
            fed += len(block)
            _assert_flat(parser)
    assert info.value.condition in ("policy-violation", "not-well-formed", "restricted-xml")
    if info.value.condition == "policy-violation":
        assert fed <= parser.max_stanza_size + parser._slice + chunk


@pytest.mark.parametrize("name", ["whitespace-in-start-tag", "whitespace-in-attribute",
                                  "body-text", "whitespace-in-end-tag"])
def test_a_never_ending_stanza_is_cut_off_one_byte_at_a_time(name):
    start, filler = NEVER_ENDING[name]
    parser = StreamParser(max_stanza_size=1000)
    parser.feed(HEADER)
    with pytest.raises(StreamError) as info:
        parser.feed(start)
        for fed in range(1, 5000):
            parser.feed(filler[:1])
    assert info.value.condition == "policy-violation"
    assert fed <= 1000 + parser._slice


def test_a_never_ending_stream_header_is_cut_off():
    parser = StreamParser()
    with pytest.raises(StreamError) as info:
        parser.feed(b"<stream:stream")
        for _ in range(1000):
            parser.feed(b" " * KiB)
    assert info.value.condition == "policy-violation"


# -- keepalives stay free ---------------------------------------------------------------

@pytest.mark.parametrize("after", [b"", b"\n", b" \r\n\t"],
                         ids=["nothing", "newline", "mixed"])
def test_keepalives_after_a_stanza_in_the_same_read_stay_free(after):
    """White space is only free between stanzas; make sure it still is there."""
    parser = StreamParser(max_stanza_size=1000)
    assert len(parser.feed(HEADER + b"<presence/>" + after)) == 2
    for _ in range(3000):                      # 3000 × the limit of white space
        assert parser.feed(b" ") == []
    for _ in range(300):
        assert parser.feed(b"\n" * 100) == []
    assert [type(e) for e in parser.feed(b"<iq type='get' id='1'/>")] == [Element]


_MIXED_GENERATIONS = """
import copy, gc
from lxml import etree
from server.xmpp.errors import StreamError
from server.xmpp.stream import StreamParser, serialize
from tests.fuzz.test_stream_limits import HEADER, _made_up_names
parsers = [StreamParser(renew_after=300) for _ in range(3)]
for p in parsers:
    p.feed(HEADER)
stanzas = []
for i in range(300):
    p = parsers[i % 3]
    stanzas += [ev.element for ev in p.feed(_made_up_names(i))]
    if i % 7 == 0:
        p.hibernate()
built = etree.Element("{jabber:client}message")      # as the server builds a wrapper
for i, el in enumerate(stanzas[:100]):
    if i % 3 == 0:
        built.append(el[0])                          # moved between generations
    elif i % 3 == 1:
        built.append(copy.deepcopy(el))
    else:
        el.set("{urn:other:%d}b%d" % (i, i), "x")    # new names into the stanza's own
        el[0].append(stanzas[-1 - i][0])
text = serialize(built) + "".join(serialize(el) for el in stanzas)
for p in parsers[:2]:
    try:
        p.feed(b"<message><unclosed></message>")     # lxml ends the document on an error
    except StreamError as exc:
        assert exc.condition == "not-well-formed"
parsers[2].feed(b"</stream:stream>")
del stanzas, built, parsers
gc.collect()
print(len(text))
"""


def test_stanzas_from_different_dictionaries_mix_freely():
    """Each stanza and parser has its own name dictionary (server.xmpp.names);
    elements moved or copied between them, new names added to them, parsers
    ending in an error or the footer, and all of it freed: libxml2 must never
    free a name its document's dictionary does not own (that aborts the
    process, hence the separate interpreter)."""
    done = subprocess.run([sys.executable, "-c", _MIXED_GENERATIONS], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 10_000
