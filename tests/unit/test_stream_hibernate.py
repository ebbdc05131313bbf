"""Parser hibernation (server.xmpp.stream.StreamParser.hibernate): an idle
stream drops its lxml parser and the next feed() rebuilds it from the stream's
opening bytes. Whatever the points at which a stream is hibernated, the events,
errors and limits must be those of the same bytes parsed without it.

Each test compares a hibernated parse with the plain one ("reference") rather
than with hand-written expectations: the plain parser is specified by
test_stream.py.
"""

from __future__ import annotations

import copy
import random
import sys

import pytest
from lxml import etree

from server.xmpp.errors import StreamError
from server.xmpp.stream import (Element, StreamClosed, StreamOpened, StreamParser, serialize)

STREAMS = b"http://etherx.jabber.org/streams"

#: prefixes on the root, used inside stanzas; '>' in an attribute value; newlines
HEADER = (b"<?xml version='1.0' encoding='UTF-8'?>\n"
          b"<stream:stream xmlns='jabber:client'\n"
          b"  xmlns:stream='http://etherx.jabber.org/streams'\n"
          b"  xmlns:db='jabber:server:dialback' xmlns:x='urn:example:custom'\n"
          b"  to='example.com' version='1.0' xml:lang='en' x:note='a > b'>")
STANZAS = [
    b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
    b"\n  ",                                                    # a keepalive
    b"<message to='romeo@example.net' id='m1'><body>one &amp; two &#x263A;</body>"
    b"<x:thing x:attr='v'><x:inner/></x:thing></message>",
    b"<presence><show>away</show><db:result to='a' from='b'>key</db:result></presence>",
    b" ",
    b"<stream:features><x:y/></stream:features>",
    b"<message id='m2'><body><![CDATA[<not markup> & such]]></body></message>",
]
FOOTER = b"</stream:stream>"
BODY = b"".join(STANZAS)
TRANSCRIPT = HEADER + BODY + FOOTER


# -- helpers ------------------------------------------------------------------

def picture(events) -> list:
    """A comparable picture of events: elements as bytes and namespace maps."""
    out = []
    for ev in events:
        if isinstance(ev, StreamOpened):
            out.append(("open", ev.attrs, ev.default_ns, ev.prefixes))
        elif isinstance(ev, Element):
            el = ev.element
            out.append(("element", etree.tostring(el), serialize(el),
                        [sorted(e.nsmap.items(), key=str) for e in el.iter()],
                        el.tail, el.getparent()))
        elif isinstance(ev, StreamClosed):
            out.append(("close",))
        else:  # pragma: no cover
            out.append(("???", ev))
    return out


def run(chunks: list[bytes], *, hibernate: bool, **kw):
    """Feed *chunks*; with *hibernate*, try to hibernate after each one.

    Returns (events picture, (condition, text, index of the failing chunk)
    or None, how many hibernations were accepted)."""
    parser = StreamParser(**kw)
    events, error, slept = [], None, 0
    for i, chunk in enumerate(chunks):
        try:
            events += parser.feed(chunk)
        except StreamError as exc:
            events += exc.events
            error = (exc.condition, exc.text, i)
            break
        if hibernate and parser.hibernate():
            slept += 1
    return picture(events), error, slept


def same_as_reference(chunks: list[bytes], **kw) -> int:
    """Assert hibernating after every chunk changes nothing; return how many
    chunks it hibernated after."""
    plain = run(chunks, hibernate=False, **kw)
    hibernated = run(chunks, hibernate=True, **kw)
    assert hibernated[:2] == plain[:2]
    return hibernated[2]


def split_at(data: bytes, *points: int) -> list[bytes]:
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def stanza_spans(header: bytes, stanzas: list[bytes]):
    """(start, end) offsets of each non-white-space stanza in header+stanzas."""
    at = len(header)
    for s in stanzas:
        if s.strip():
            yield at, at + len(s)
        at += len(s)


# -- the same events ------------------------------------------------------------

def test_hibernating_at_every_single_position_changes_nothing():
    for point in range(len(TRANSCRIPT) + 1):
        same_as_reference(split_at(TRANSCRIPT, point))


def test_hibernating_between_every_stanza_changes_nothing():
    points, at = [], len(HEADER)
    for s in STANZAS:
        points.append(at)
        at += len(s)
    chunks = split_at(TRANSCRIPT, *points, at)
    assert same_as_reference(chunks) == len(STANZAS) + 1      # after the header and each one
    events = run(chunks, hibernate=True)[0]
    assert [e[0] for e in events] == ["open"] + ["element"] * 5 + ["close"]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 61])
def test_hibernating_after_every_chunk_changes_nothing(size):
    chunks = [TRANSCRIPT[i:i + size] for i in range(0, len(TRANSCRIPT), size)]
    slept = same_as_reference(chunks)
    assert slept > 0 or size > 7        # large chunks may never end between stanzas


def test_random_splits_with_hibernation_change_nothing():
    rng = random.Random(8)
    for _ in range(200):
        points = sorted(rng.sample(range(1, len(TRANSCRIPT)), rng.randint(1, 12)))
        same_as_reference(split_at(TRANSCRIPT, *points))


@pytest.mark.parametrize("header, prefix", [
    # no declaration
    (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
     b"stream"),
    # another prefix for the stream namespace, double quotes, white space before
    (b" \n<s:stream xmlns:s=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\" "
     b"id=\"x>y\" xmlns:x='urn:example:custom' xmlns:db='jabber:server:dialback'>", b"s"),
    # declaration with double quotes, tab-separated attributes
    (b"<?xml version=\"1.0\"?><stream:stream\txmlns:stream='http://etherx.jabber.org/streams'"
     b"\txmlns='jabber:client'\tversion='1.0'>", b"stream"),
], ids=["no-declaration", "other-prefix", "tabs"])
def test_header_variants(header, prefix):
    body = BODY.replace(b"stream:features", prefix + b":features")
    data = header + body + b"</" + prefix + b":stream>"
    for point in range(len(header) - 5, len(data) + 1):
        same_as_reference(split_at(data, point))
    same_as_reference([data[i:i + 5] for i in range(0, len(data), 5)])


def test_server_stream_with_dialback():
    header = (b"<stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' "
              b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
    body = (b"<db:result from='a.example' to='b.example'>abc</db:result>"
            b"<message from='x@a.example' to='y@b.example'><body>hi</body></message>")
    data = header + body + FOOTER
    for point in range(len(data) + 1):
        same_as_reference(split_at(data, point), content_ns="jabber:server")


def test_no_second_header_event_after_revival():
    parser = StreamParser()
    assert [type(e) for e in parser.feed(HEADER)] == [StreamOpened]
    for stanza in STANZAS:
        assert parser.hibernate() and parser.hibernating
        events = parser.feed(stanza)
        assert all(isinstance(e, Element) for e in events)
    assert parser.hibernate()
    assert [type(e) for e in parser.feed(FOOTER)] == [StreamClosed]


def test_revived_stanzas_see_the_root_prefixes():
    parser = StreamParser()
    parser.feed(HEADER)
    assert parser.hibernate()
    [event] = parser.feed(b"<message><x:thing x:attr='v'/></message>")
    thing = event.element[0]
    assert thing.tag == "{urn:example:custom}thing"
    assert thing.get("{urn:example:custom}attr") == "v"


# -- when it may hibernate --------------------------------------------------------

def test_hibernate_is_refused_inside_a_stanza_and_before_the_header():
    spans = list(stanza_spans(HEADER, STANZAS))
    inside = {i for start, end in spans for i in range(start + 1, end)}
    for point in range(len(HEADER) + len(BODY) + 1):
        parser = StreamParser()
        parser.feed(TRANSCRIPT[:point])
        expected = point >= len(HEADER) and point not in inside
        assert parser.hibernate() is expected, (point, TRANSCRIPT[:point][-20:])


def test_hibernate_is_refused_after_an_error_and_after_the_footer():
    parser = StreamParser()
    with pytest.raises(StreamError):
        parser.feed(HEADER + b"<a></b>")
    assert not parser.hibernate()
    with pytest.raises(StreamError) as again:
        parser.feed(b"<presence/>")
    assert again.value.condition == "not-well-formed"

    parser = StreamParser()
    parser.feed(HEADER + FOOTER)
    assert parser.closed and not parser.hibernate()
    assert parser.feed(b"<presence/>") == []


def test_hibernate_is_refused_while_text_waits_between_stanzas():
    parser = StreamParser()
    parser.feed(HEADER + b"<presence/>oops")
    assert not parser.hibernate()
    with pytest.raises(StreamError) as info:
        parser.feed(b"<presence/>")
    assert info.value.condition == "bad-format"


@pytest.mark.parametrize("junk", [b"\x0c", b"\x0b", b" \x0c "])
def test_bytes_that_only_look_like_white_space_are_not_dropped(junk):
    """libxml2 only refuses \\f and \\v when more input comes: hibernating
    must not throw them away with it."""
    parser = StreamParser()
    parser.feed(HEADER + b"<presence/>" + junk)
    assert not parser.hibernate()
    same_as_reference([HEADER + b"<presence/>", junk, b"<presence/>"])


def test_a_revived_parser_can_hibernate_again():
    parser = StreamParser()
    parser.feed(HEADER)
    for _ in range(3):
        assert parser.hibernate()
        assert len(parser.feed(b"<presence/>")) == 1
        assert not parser.hibernating


# -- keepalives and the footer while hibernating -----------------------------------------

def test_keepalives_while_hibernating_need_no_parser():
    parser = StreamParser(max_stanza_size=1024)
    parser.feed(HEADER)
    assert parser.hibernate()
    for _ in range(100):
        assert parser.feed(b" \n\t\r ") == []
    assert parser.feed(b" " * 5000) == []          # far above max_stanza_size: still free
    assert parser.hibernating
    [event] = parser.feed(b" <presence/> ")
    assert event.element.tag == "{jabber:client}presence"


def test_keepalives_around_hibernation_are_the_same_as_without():
    chunks = [HEADER, b" ", b"\n", b" " * 3000, b"<presence/>", b"\r\n", b" ", FOOTER]
    assert same_as_reference(chunks, max_stanza_size=1024) == len(chunks) - 1


@pytest.mark.parametrize("tail", [
    FOOTER, b"  " + FOOTER, FOOTER + b"<after/>garbage", FOOTER + b"&bogus",
    b"</stream:stream >", b"</stream:str", b"</stream:stream2>", b"</x:stream>",
])
def test_the_footer_while_hibernating(tail):
    chunks = [HEADER + b"<presence/>", tail, b"<presence/>"]
    same_as_reference(chunks)
    for point in range(len(tail) + 1):
        same_as_reference([HEADER + b"<presence/>", *split_at(tail, point)])


def test_the_footer_closes_a_hibernating_stream_without_a_parser():
    parser = StreamParser()
    parser.feed(HEADER + b"<presence/>")
    assert parser.hibernate()
    assert parser.feed(b"\n" + FOOTER) == [StreamClosed()]
    assert parser.closed and parser.hibernating
    assert parser.feed(b"<presence/>") == []


def test_footer_with_another_stream_prefix():
    header = (b"<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'>")
    same_as_reference([header, b"</stream:stream>"])        # undeclared prefix: an error
    same_as_reference([header, b"</s:stream>"])
    assert run([header, b"</s:stream>"], hibernate=True)[0][-1] == ("close",)


# -- errors and limits after revival ------------------------------------------------------

BAD = [
    b"<a></b>",                                   # tag mismatch (libxml2 names a line)
    b"<a>\n<b>\n</a>",
    b"<p:a/>",                                    # undeclared prefix
    b"<a p:b='1'/>",
    b"<a x='1' x='2'/>",
    b"<!-- comment -->",
    b"<?pi data?>",
    b"<!DOCTYPE x>",
    b"text between stanzas",
    b"<a>&bogus;</a>",
    b"<a>&</a>",
    b"& ",
    b"<a>\xff\xfe</a>",
    b"<a>&#0;</a>",
    b"</stream:stream2>",
    b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",   # a header in a stream
    b"<a xmlns:q='{evil}'><q:b/></a>",
    b"]]>",
    b"<![CDATA[x]]>",
]


@pytest.mark.parametrize("bad", BAD)
def test_errors_after_revival_are_the_same(bad):
    same_as_reference([HEADER + b"<presence/>\n", bad, b"<presence/>" + FOOTER])
    for point in range(len(bad) + 1):
        same_as_reference([HEADER + b"<presence/>\n", *split_at(bad, point),
                           b"<presence/>" + FOOTER])


def test_error_texts_carry_no_line_numbers():
    """libxml2's line numbers would count from the last revival."""
    _, error, _ = run([HEADER + b"\n\n<presence/>\n", b"<a>\n</b>"], hibernate=True)
    assert error[0] == "not-well-formed" and " line " not in error[1], error


def test_stanza_size_limit_after_revival():
    big = b"<message><body>" + b"x" * 3000 + b"</body></message>"
    for size in (1, 100, 1000, len(big)):
        chunks = [HEADER, b"<presence/>"] + [big[i:i + size] for i in range(0, len(big), size)]
        plain = run(chunks, hibernate=False, max_stanza_size=1024)
        assert plain[1][0] == "policy-violation"
        same_as_reference(chunks, max_stanza_size=1024)
    # and just under the limit it passes, hibernated before it
    fits = b"<message><body>" + b"x" * 900 + b"</body></message>"
    _, error, slept = run([HEADER, fits, fits], hibernate=True, max_stanza_size=1024)
    assert error is None and slept == 3


def test_depth_limit_after_revival():
    deep = b"<a>" * 10 + b"</a>" * 10
    same_as_reference([HEADER, deep], max_depth=8)
    assert run([HEADER, deep], hibernate=True, max_depth=8)[1][0] == "policy-violation"
    same_as_reference([HEADER, deep], max_depth=16)


# -- restarts and memory -------------------------------------------------------------------

def test_stream_restart_is_unaffected():
    """A restart is a new parser: the hibernated old one does not leak into it."""
    old = StreamParser()
    old.feed(HEADER + b"<presence/>")
    assert old.hibernate()
    new = StreamParser()
    other = (b"<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client' "
             b"id='2'>")
    events = new.feed(other + b"<presence/>")
    assert [type(e) for e in events] == [StreamOpened, Element]
    assert events[0].prefixes == {"s": STREAMS.decode()} and events[0].id == "2"
    with pytest.raises(StreamError):         # the old stream's x: prefix is not declared here
        new.feed(b"<x:thing/>")
    assert len(old.feed(b"<x:thing/>")) == 1


def test_a_kept_copy_of_a_stanza_does_not_pin_the_parser():
    """A session keeps a copy of its last presence; lxml copies point back to
    the parser that built their document, so that copy must come from a
    document of its own or hibernating would free nothing. (White-box: the
    lxml parser's reference count.)"""
    parser = StreamParser()
    [_, event] = parser.feed(HEADER + b"<presence><show>away</show></presence>")
    lxml_parser = parser._parser
    before = sys.getrefcount(lxml_parser)
    kept = [copy.deepcopy(event.element) for _ in range(3)]
    assert sys.getrefcount(lxml_parser) == before
    assert parser.hibernate()
    assert kept[0].findtext("{jabber:client}show") == "away"
    assert event.element.getparent() is None and event.element.tail is None
