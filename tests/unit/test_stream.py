"""Tests for server.xmpp.stream: bytes in → events out, elements in → text out.

Everything here is what a peer observes: the events a byte stream produces,
the stream error condition that ends it, and the exact text we write.
"""

from __future__ import annotations

import os

import pytest
from lxml import etree

from server.xmpp.errors import (STANZA_ERRORS_NS, STREAM_ERRORS_NS, STREAMS_NS,
                                StanzaError, StreamError)
from server.xmpp.stanza import E, MESSAGE, error_reply, result, stream_error, sub
from server.xmpp.stream import (CLIENT_NS, DIALBACK_NS, SERVER_NS, STREAM_FOOTER,
                                Element, StreamClosed, StreamOpened, StreamParser,
                                rehome, serialize, stream_header)

KiB = 1024

DECL = b"<?xml version='1.0'?>"
HEADER = (b"<stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' "
          b"to='example.com' from='juliet@example.com' version='1.0' "
          b"id='s-1' xml:lang='en'>")
SERVER_HEADER = (b"<stream:stream xmlns='jabber:server' "
                 b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
FOOTER = b"</stream:stream>"

STANZAS = [
    b"<iq type='get' id='r1' to='example.com'>"
    b"<query xmlns='jabber:iq:roster'/></iq>",
    b"<message to='romeo@example.net' type='chat' id='m1'>"
    b"<body>Wherefore art thou, Romeo?</body>"
    b"<thread>t1</thread></message>",
    b"<presence><show>away</show><status>at the ball</status>"
    b"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/>"
    b"</presence>",
    b"<message to='romeo@example.net'><body>one &amp; two</body></message>",
]
TRANSCRIPT = DECL + HEADER + b"".join(STANZAS) + FOOTER


# -- helpers ------------------------------------------------------------------

def feed(data: bytes, chunk: int | None = None, parser: StreamParser | None = None,
         **kw) -> list:
    """Feed *data* (in *chunk*-sized pieces) and return all events."""
    parser = parser if parser is not None else StreamParser(**kw)
    events: list = []
    if chunk is None:
        events += parser.feed(data)
    else:
        for i in range(0, len(data), chunk):
            events += parser.feed(data[i:i + chunk])
    return events


def condition(data: bytes, chunk: int | None = None, **kw) -> str:
    """The stream error condition the parser raises for *data*."""
    with pytest.raises(StreamError) as info:
        feed(data, chunk, **kw)
    return info.value.condition


def summary(events) -> list:
    """A comparable picture of an event list."""
    out = []
    for ev in events:
        if isinstance(ev, StreamOpened):
            out.append(("open", ev.attrs, ev.default_ns, ev.prefixes))
        elif isinstance(ev, Element):
            out.append(("element", etree.tostring(ev.element)))
        elif isinstance(ev, StreamClosed):
            out.append(("close",))
        else:  # pragma: no cover - would be a bug in the parser
            out.append(("???", ev))
    return out


def same_tree(a, b) -> bool:
    """Structural identity: tag, attributes, text and tails, recursively."""
    if a.tag != b.tag or dict(a.attrib) != dict(b.attrib):
        return False
    if (a.text or "") != (b.text or "") or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if not same_tree(x, y) or (x.tail or "") != (y.tail or ""):
            return False
    return True


def parse_in_stream(text: str, content_ns: str = CLIENT_NS):
    """Parse serialised output the way a peer does: inside a stream header."""
    parser = StreamParser(content_ns)
    head = stream_header(content_ns=content_ns, extra_ns={"db": DIALBACK_NS})
    events = parser.feed((head + text + STREAM_FOOTER).encode())
    assert isinstance(events[0], StreamOpened)
    assert isinstance(events[-1], StreamClosed)
    return [ev.element for ev in events[1:-1]]


def canonical(doc: str) -> str:
    return etree.canonicalize(doc, rewrite_prefixes=True)


def wrap(text: str, default_ns: str = CLIENT_NS) -> str:
    return (f"<wrap xmlns='{default_ns}' xmlns:stream='{STREAMS_NS}' "
            f"xmlns:db='{DIALBACK_NS}'>{text}</wrap>")


def one_stanza(stanza: bytes, content_ns: str = CLIENT_NS):
    header = HEADER if content_ns == CLIENT_NS else SERVER_HEADER
    events = feed(header + stanza, content_ns=content_ns)
    assert [type(e) for e in events] == [StreamOpened, Element]
    return events[1].element


# -- a whole stream -----------------------------------------------------------

def test_transcript_in_one_feed():
    events = feed(TRANSCRIPT)
    assert [type(e) for e in events] == (
        [StreamOpened] + [Element] * len(STANZAS) + [StreamClosed])
    tags = [ev.element.tag for ev in events[1:-1]]
    assert tags == [f"{{{CLIENT_NS}}}iq", f"{{{CLIENT_NS}}}message",
                    f"{{{CLIENT_NS}}}presence", f"{{{CLIENT_NS}}}message"]
    iq = events[1].element
    assert iq.get("id") == "r1" and iq[0].tag == "{jabber:iq:roster}query"
    message = events[2].element
    assert message.findtext(f"{{{CLIENT_NS}}}body") == "Wherefore art thou, Romeo?"
    presence = events[3].element
    assert presence[2].tag == "{http://jabber.org/protocol/caps}c"
    assert presence[2].get("ver") == "v"
    assert events[4].element.findtext(f"{{{CLIENT_NS}}}body") == "one & two"


def test_stanzas_are_detached_from_the_stream_root():
    events = feed(TRANSCRIPT)
    for ev in events[1:-1]:
        assert ev.element.getparent() is None
        assert ev.element.tail is None


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000])
def test_transcript_in_small_chunks_gives_the_same_events(chunk):
    assert summary(feed(TRANSCRIPT, chunk)) == summary(feed(TRANSCRIPT))


def test_transcript_one_byte_at_a_time_events_arrive_when_complete():
    parser = StreamParser()
    seen = []
    for i in range(len(TRANSCRIPT)):
        for ev in parser.feed(TRANSCRIPT[i:i + 1]):
            seen.append((type(ev), i))
    kinds = [k for k, _ in seen]
    assert kinds == [StreamOpened] + [Element] * len(STANZAS) + [StreamClosed]
    # the header event arrives exactly with the '>' that ends the header
    assert seen[0][1] == len(DECL + HEADER) - 1
    # the close event arrives with the last byte
    assert seen[-1][1] == len(TRANSCRIPT) - 1


@pytest.mark.parametrize("prolog", [
    b"",
    DECL,
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    DECL + b"\n",
    b"\n  ",
])
@pytest.mark.parametrize("chunk", [None, 1])
def test_xml_declaration_is_optional(prolog, chunk):
    events = feed(prolog + HEADER + STANZAS[1] + FOOTER, chunk)
    assert [type(e) for e in events] == [StreamOpened, Element, StreamClosed]


def test_stream_header_attributes_are_exposed():
    [opened] = feed(DECL + HEADER)
    assert opened.to == "example.com"
    assert opened.from_ == "juliet@example.com"
    assert opened.version == "1.0"
    assert opened.id == "s-1"
    assert opened.attrs["lang"] == "en"
    assert opened.default_ns == CLIENT_NS
    assert opened.prefixes == {"stream": STREAMS_NS}


def test_stream_header_without_optional_attributes():
    [opened] = feed(b"<stream:stream xmlns='jabber:client' "
                    b"xmlns:stream='http://etherx.jabber.org/streams'>")
    assert (opened.to, opened.from_, opened.version, opened.id) == (None,) * 4
    assert "lang" not in opened.attrs


def test_stream_header_with_dialback_prefix():
    [opened] = feed(b"<stream:stream xmlns='jabber:server' "
                    b"xmlns:stream='http://etherx.jabber.org/streams' "
                    b"xmlns:db='jabber:server:dialback' to='a.example'>",
                    content_ns=SERVER_NS)
    assert opened.default_ns == SERVER_NS
    assert opened.prefixes == {"stream": STREAMS_NS, "db": DIALBACK_NS}
    assert opened.to == "a.example"


def test_stream_can_close_without_stanzas():
    assert [type(e) for e in feed(HEADER + FOOTER)] == [StreamOpened, StreamClosed]


def test_feeds_after_stream_closed_return_nothing():
    parser = StreamParser()
    assert [type(e) for e in parser.feed(HEADER + FOOTER)] == [StreamOpened, StreamClosed]
    assert parser.closed
    assert parser.feed(b"<message><body>late</body></message>") == []
    assert parser.feed(b"garbage <<< &lol; <!DOCTYPE x>") == []
    assert parser.feed(b"") == []


def test_whitespace_after_the_footer_in_the_same_feed_is_ignored():
    events = feed(HEADER + STANZAS[0] + FOOTER + b"\n ")
    assert [type(e) for e in events] == [StreamOpened, Element, StreamClosed]


def test_bytes_after_the_footer_in_the_same_feed_are_ignored():
    data = HEADER + STANZAS[0] + FOOTER + b"<message/>garbage<<"
    byte_by_byte = summary(feed(data, 1))
    assert [e[0] for e in byte_by_byte] == ["open", "element", "close"]
    assert summary(feed(data)) == byte_by_byte


# -- white space keepalives ---------------------------------------------------

@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_whitespace_keepalives_produce_no_events(chunk):
    parser = StreamParser()
    assert len(parser.feed(HEADER)) == 1
    for keepalive in (b" ", b"\n", b"\r\n", b"\t \n "):
        assert feed(keepalive, chunk, parser=parser) == []
    events = feed(b" " + STANZAS[1] + b"\n\n" + STANZAS[2] + b" ", chunk, parser=parser)
    assert [type(e) for e in events] == [Element, Element]


@pytest.mark.parametrize("chunk", [1000, 4096, 100_000])
def test_100k_spaces_then_a_stanza_still_parses(chunk):
    parser = StreamParser()
    parser.feed(HEADER)
    spaces = b" " * 100_000
    for i in range(0, len(spaces), chunk):
        assert parser.feed(spaces[i:i + chunk]) == []
    events = parser.feed(STANZAS[1])
    assert [type(e) for e in events] == [Element]
    assert events[0].element.findtext(f"{{{CLIENT_NS}}}body") == "Wherefore art thou, Romeo?"


def test_100k_single_byte_keepalives_between_stanzas():
    parser = StreamParser()
    parser.feed(HEADER)
    for _ in range(100_000):
        parser.feed(b" ")
    assert [type(e) for e in parser.feed(STANZAS[0])] == [Element]


def test_whitespace_between_stanzas_is_not_counted_as_a_stanza():
    # 300 KiB of keepalives is far above max_stanza_size, and still fine
    parser = StreamParser()
    parser.feed(HEADER)
    for _ in range(300):
        assert parser.feed(b" " * KiB) == []
    assert [type(e) for e in parser.feed(STANZAS[1])] == [Element]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_whitespace_keepalives_do_not_accumulate_in_memory():
    parser = StreamParser()
    parser.feed(HEADER)
    block = b" " * (64 * KiB)
    for _ in range(16):           # warm up allocator
        parser.feed(block)
    before = _rss_bytes()
    for _ in range(1024):         # 64 MiB of keepalives
        assert parser.feed(block) == []
    grown = _rss_bytes() - before
    assert grown < 16 * 1024 * KiB, f"resident memory grew by {grown} bytes"
    assert [type(e) for e in parser.feed(STANZAS[2])] == [Element]


# -- namespaces of the stream header -------------------------------------------

@pytest.mark.parametrize("chunk", [None, 1])
def test_wrong_stream_namespace_is_invalid_namespace(chunk):
    data = (b"<stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streamz'>")
    assert condition(data, chunk) == "invalid-namespace"


def test_stream_element_without_prefix_in_wrong_namespace():
    assert condition(b"<stream xmlns='jabber:client'>") == "invalid-namespace"


def test_server_namespace_on_client_parser_is_invalid_namespace():
    assert condition(SERVER_HEADER) == "invalid-namespace"


def test_client_namespace_on_server_parser_is_invalid_namespace():
    assert condition(HEADER, content_ns=SERVER_NS) == "invalid-namespace"


def test_missing_default_namespace_is_invalid_namespace():
    data = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"
    assert condition(data) == "invalid-namespace"


def test_server_parser_accepts_jabber_server():
    events = feed(SERVER_HEADER + b"<message/>", content_ns=SERVER_NS)
    assert [type(e) for e in events] == [StreamOpened, Element]
    assert events[0].default_ns == SERVER_NS
    assert events[1].element.tag == f"{{{SERVER_NS}}}message"


@pytest.mark.parametrize("header", [HEADER, SERVER_HEADER])
def test_parser_with_several_content_namespaces_accepts_each(header):
    [opened] = feed(header, content_ns=(CLIENT_NS, SERVER_NS))
    assert opened.default_ns in (CLIENT_NS, SERVER_NS)


# -- restricted XML (RFC 6120 §11.1) -------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ELEMENT lolz (#PCDATA)>
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>"""

DOCTYPE_STREAM = (DECL + b"\n<!DOCTYPE stream:stream [<!ENTITY x 'boom'>]>\n" + HEADER
                  + b"<message><body>&x;</body></message>")


@pytest.mark.parametrize("data", [
    BILLION_LAUGHS,
    BILLION_LAUGHS[len(b'<?xml version="1.0"?>\n'):],     # without declaration
    DOCTYPE_STREAM,
    b"<!DOCTYPE stream:stream SYSTEM 'http://attacker.example/x.dtd'>" + HEADER,
], ids=["billion-laughs", "billion-laughs-no-decl", "doctype-stream", "external-dtd"])
@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 5, 16])
def test_doctype_before_root_is_restricted_xml(data, chunk):
    assert condition(data, chunk) == "restricted-xml"


def test_doctype_is_refused_before_anything_is_reported():
    parser = StreamParser()
    with pytest.raises(StreamError) as info:
        for i in range(len(BILLION_LAUGHS)):
            assert parser.feed(BILLION_LAUGHS[i:i + 1]) == []
    assert info.value.condition == "restricted-xml"


@pytest.mark.parametrize("data", [
    b"<!-- hello -->" + HEADER,
    DECL + b"<!-- hello -->" + HEADER,
    b"<?xml-stylesheet href='x.xsl'?>" + HEADER,
    DECL + b"<?foo bar?>" + HEADER,
])
@pytest.mark.parametrize("chunk", [None, 1])
def test_comment_or_pi_before_root_is_restricted_xml(data, chunk):
    assert condition(data, chunk) == "restricted-xml"


@pytest.mark.parametrize("stanza", [
    b"<message><!-- a comment --><body>x</body></message>",
    b"<message><body>x<!-- deep --></body></message>",
    b"<message><?target data?></message>",
    b"<message><body><?php echo 1; ?></body></message>",
], ids=["comment", "nested-comment", "pi", "nested-pi"])
@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_comment_or_pi_inside_a_stanza_is_restricted_xml(stanza, chunk):
    assert condition(HEADER + stanza, chunk) == "restricted-xml"


@pytest.mark.parametrize("between", [b"<!-- keepalive -->", b"<?ping?>"])
def test_comment_or_pi_between_stanzas_is_restricted_xml(between):
    assert condition(HEADER + STANZAS[0] + between + STANZAS[1]) == "restricted-xml"


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_undefined_entity_is_not_well_formed(chunk):
    assert condition(HEADER + b"<message><body>&lol;</body></message>", chunk) \
        == "not-well-formed"


def test_undefined_entity_in_attribute_is_not_well_formed():
    assert condition(HEADER + b"<message to='&lol;'/>") == "not-well-formed"


@pytest.mark.parametrize("chunk", [None, 1])
def test_predefined_entities_and_character_references_decode(chunk):
    stanza = (b"<message to='a&amp;b&lt;c&gt;d&quot;e&apos;f&#65;&#x42;'>"
              b"<body>&amp;&lt;&gt;&quot;&apos; &#65;&#x42;&#x1F600;</body></message>")
    events = feed(HEADER + stanza, chunk)
    el = events[1].element
    assert el.get("to") == "a&b<c>d\"e'fAB"
    assert el.findtext(f"{{{CLIENT_NS}}}body") == "&<>\"' AB\U0001F600"


@pytest.mark.parametrize("stanza", [
    b"<message><</message>",
    b"<message></presence>",
    b"<message><body></message></body>",
    b"<message to='a' to='b'/>",
    b"<message to=unquoted/>",
    b"<1message/>",
    b"<message a='<'/>",
    b"<message><body>\x01</body></message>",
    b"<message><body>\xff\xfe</body></message>",
    b"<message><body>&#0;</body></message>",
    b"<message><body>]]></body></message>",
], ids=["lt-lt", "mismatched", "crossed", "dup-attr", "unquoted", "bad-name", "lt-in-attr",
        "control-char", "bad-utf8", "nul-charref", "cdata-end"])
@pytest.mark.parametrize("chunk", [None, 1])
def test_malformed_xml_is_not_well_formed(stanza, chunk):
    assert condition(HEADER + stanza, chunk) == "not-well-formed"




@pytest.mark.parametrize("stanza", [
    b"<message><body>a & b</body></message>",
    b"<message><body>a &amp b</body></message>",
], ids=["bare-amp", "amp-without-semicolon"])
@pytest.mark.parametrize("chunk", [None, 1])
def test_bare_ampersand_in_text_is_not_well_formed(stanza, chunk):
    assert condition(HEADER + stanza + b"<presence/>" + FOOTER, chunk) == "not-well-formed"


@pytest.mark.parametrize("stanza", [b"<message to='a & b'/>", b"<message to='a &amp b'/>"],
                         ids=["bare-amp-in-attr", "amp-without-semicolon-in-attr"])
@pytest.mark.parametrize("chunk", [None, 1])
def test_bare_ampersand_in_attribute_is_not_well_formed(stanza, chunk):
    assert condition(HEADER + stanza, chunk) == "not-well-formed"


def test_stream_keeps_working_or_fails_after_a_bare_ampersand():
    # whatever the verdict, the peer must not be left hanging: either an
    # error or the following events
    parser = StreamParser()
    parser.feed(HEADER)
    try:
        parser.feed(b"<message><body>a & b</body></message>")
        events = parser.feed(b"<presence/>" + FOOTER)
    except StreamError:
        return
    assert events, "stanzas after the bad one vanish and the stream never closes"


def test_mismatched_stream_footer_is_not_well_formed():
    assert condition(HEADER + STANZAS[0] + b"</stream:streams>") == "not-well-formed"


@pytest.mark.parametrize("stanza", [b"<foo:message/>", b"<message><foo:x/></message>",
                                    b"<message foo:a='1'/>"])
def test_undeclared_prefix_is_not_well_formed(stanza):
    assert condition(HEADER + stanza) == "not-well-formed"


@pytest.mark.parametrize("data", [b"hello" + HEADER, b"\x00" + HEADER])
def test_text_before_the_stream_header_is_not_well_formed(data):
    assert condition(data) == "not-well-formed"


# -- character data between stanzas --------------------------------------------

TEXT_AFTER_STANZA = [
    HEADER + STANZAS[0] + b"junk" + STANZAS[1],
    HEADER + STANZAS[0] + b"  \n x \n" + STANZAS[1],
    HEADER + b"<message/>junk<presence/>",
    # white space to Python, not to XML (§2.3: space, tab, CR, LF only)
    HEADER + STANZAS[0] + "\u00a0".encode() + STANZAS[1],
    HEADER + STANZAS[0] + "\u2003".encode() + STANZAS[1],
]


@pytest.mark.parametrize("chunk", [None, 1, 3])
@pytest.mark.parametrize("data", [
    HEADER + b"hello" + STANZAS[0],
    HEADER + b"&amp;" + STANZAS[0],
    HEADER + b"\n hello \n" + STANZAS[0],
])
def test_text_before_first_stanza_is_bad_format(data, chunk):
    assert condition(data, chunk) == "bad-format"


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("data", TEXT_AFTER_STANZA)
def test_text_after_a_stanza_is_bad_format_when_streamed(data, chunk):
    assert condition(data, chunk) == "bad-format"


@pytest.mark.parametrize("data", TEXT_AFTER_STANZA)
def test_text_after_a_stanza_is_bad_format_in_one_read(data):
    assert condition(data) == "bad-format"


def test_long_text_between_stanzas_is_bad_format_without_a_following_element():
    # libxml2 hands over long runs of text early; they must not pile up silently
    assert condition(HEADER + b"x" * 100_000, 1024) == "bad-format"


# -- stanza size ---------------------------------------------------------------

def _body_stanza(size: int) -> bytes:
    """A <message/> of exactly *size* bytes whose bulk is body text."""
    head, tail = b"<message><body>", b"</body></message>"
    return head + b"a" * (size - len(head) - len(tail)) + tail


def _attribute_stanza(size: int) -> bytes:
    """A <message/> of exactly *size* bytes whose bulk is one attribute value."""
    head, tail = b"<message id='", b"'><body>hi</body></message>"
    return head + b"a" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("chunk", [None, KiB, 300 * KiB])
def test_300k_stanza_is_policy_violation(chunk):
    stanza = _body_stanza(300 * KiB)
    assert len(stanza) == 300 * KiB
    assert condition(HEADER + stanza, chunk) == "policy-violation"


def test_300k_stanza_in_one_feed_after_the_header_was_read():
    parser = StreamParser()
    parser.feed(HEADER)
    with pytest.raises(StreamError) as info:
        parser.feed(_body_stanza(300 * KiB))
    assert info.value.condition == "policy-violation"


@pytest.mark.parametrize("chunk", [None, KiB])
def test_200k_stanza_passes(chunk):
    events = feed(HEADER + _body_stanza(200 * KiB) + FOOTER, chunk)
    assert [type(e) for e in events] == [StreamOpened, Element, StreamClosed]
    body = events[1].element.findtext(f"{{{CLIENT_NS}}}body")
    assert body == "a" * (200 * KiB - len(b"<message><body></body></message>"))


def test_size_limit_is_per_stanza_not_per_feed():
    # ten 100 KiB stanzas in one read: 1 MiB in total, each one is fine
    data = HEADER + _body_stanza(100 * KiB) * 10
    events = feed(data)
    assert [type(e) for e in events] == [StreamOpened] + [Element] * 10


@pytest.mark.parametrize("chunk", [1, 100])
def test_custom_max_stanza_size_is_honoured_when_streamed(chunk):
    assert condition(HEADER + _body_stanza(2000), chunk,
                     max_stanza_size=1000) == "policy-violation"
    events = feed(HEADER + _body_stanza(900), chunk, max_stanza_size=1000)
    assert [type(e) for e in events] == [StreamOpened, Element]


def test_custom_large_max_stanza_size_lets_a_300k_stanza_through():
    events = feed(HEADER + _body_stanza(300 * KiB), KiB, max_stanza_size=1024 * KiB)
    assert [type(e) for e in events] == [StreamOpened, Element]


@pytest.mark.parametrize("chunk", [None, 4 * KiB])
def test_custom_max_stanza_size_is_honoured_in_one_read(chunk):
    assert condition(HEADER + _body_stanza(2000), chunk,
                     max_stanza_size=1000) == "policy-violation"


@pytest.mark.parametrize("chunk", [None, KiB])
def test_300k_stanza_with_huge_attribute_is_policy_violation(chunk):
    stanza = _attribute_stanza(300 * KiB)
    assert len(stanza) == 300 * KiB
    assert condition(HEADER + stanza, chunk) == "policy-violation"


@pytest.mark.parametrize("chunk", [None, KiB])
def test_300k_self_closing_stanza_is_policy_violation(chunk):
    stanza = b"<message id='" + b"a" * (300 * KiB) + b"'/>"
    assert condition(HEADER + stanza, chunk) == "policy-violation"


# -- nesting depth -------------------------------------------------------------

def _nested(levels: int) -> bytes:
    """A stanza that is *levels* elements deep (the stanza itself is level 1)."""
    return b"<message>" + b"<a>" * (levels - 1) + b"</a>" * (levels - 1) + b"</message>"


def test_moderate_nesting_passes():
    events = feed(HEADER + _nested(20))
    assert [type(e) for e in events] == [StreamOpened, Element]
    assert len(list(events[1].element.iter())) == 20


@pytest.mark.parametrize("chunk", [None, 1])
def test_nesting_deeper_than_max_depth_is_policy_violation(chunk):
    assert condition(HEADER + _nested(40), chunk) == "policy-violation"


@pytest.mark.parametrize("chunk", [None, 1])
def test_custom_max_depth_is_honoured(chunk):
    assert [type(e) for e in feed(HEADER + _nested(2), chunk, max_depth=4)] \
        == [StreamOpened, Element]
    assert condition(HEADER + _nested(6), chunk, max_depth=4) == "policy-violation"


@pytest.mark.parametrize("max_depth", [32, 1000])
@pytest.mark.parametrize("chunk", [None, 1, 64])
def test_300_levels_is_policy_violation_not_a_crash(max_depth, chunk):
    assert condition(HEADER + _nested(300), chunk, max_depth=max_depth) \
        == "policy-violation"


def test_unclosed_deep_nesting_is_refused_as_it_arrives():
    parser = StreamParser()
    parser.feed(HEADER)
    with pytest.raises(StreamError) as info:
        for _ in range(300):
            parser.feed(b"<a>")
    assert info.value.condition == "policy-violation"


# -- serialisation ---------------------------------------------------------------

RICH = (b"<message to='romeo@example.net' from='juliet@example.com/balcony' "
        b"type='chat' id='m&amp;1' xml:lang='en'>"
        b"<body>a &amp; b &lt;c&gt; \"q\" 'a'</body>"
        b"<x xmlns='jabber:x:data' type='form'><field var='v'><value>1</value></field></x>"
        b"<html xmlns='http://jabber.org/protocol/xhtml-im'>"
        b"<body xmlns='http://www.w3.org/1999/xhtml'><p>hi <b>there</b> you</p></body></html>"
        b"<foo:bar xmlns:foo='urn:foo' foo:attr='z' plain='p'/>"
        b"<empty/>"
        b"</message>")


def test_reserialised_stanza_is_semantically_identical():
    el = one_stanza(RICH)
    out = serialize(el)
    # canonical form of the original (in the same namespace context) and ours
    assert canonical(wrap(out)) == canonical(wrap(RICH.decode()))
    # and structurally, after a peer parses it inside a stream
    [again] = parse_in_stream(out)
    assert same_tree(again, el)


def test_reserialised_stanza_has_no_generated_prefixes_and_keeps_namespaces():
    out = serialize(one_stanza(RICH))
    assert "ns0:" not in out and "ns1:" not in out
    assert out.startswith("<message ")           # default namespace, no xmlns
    assert ' xmlns="jabber:x:data"' in out
    assert '<html xmlns="http://jabber.org/protocol/xhtml-im">' in out
    assert '<body xmlns="http://www.w3.org/1999/xhtml"><p>hi <b>there</b> you</p></body>' in out
    assert ' xml:lang="en"' in out
    [again] = parse_in_stream(out)
    bar = again.find("{urn:foo}bar")
    assert bar is not None and bar.get("{urn:foo}attr") == "z" and bar.get("plain") == "p"
    assert again.find(f"{{{CLIENT_NS}}}empty") is not None


def test_simple_stanza_serialises_to_exact_bytes():
    el = one_stanza(b"<message to='a@b' type='chat'><body>hi</body><active "
                    b"xmlns='http://jabber.org/protocol/chatstates'/></message>")
    assert serialize(el) == ('<message to="a@b" type="chat"><body>hi</body>'
                             '<active xmlns="http://jabber.org/protocol/chatstates"/>'
                             '</message>')


def test_text_escaping():
    el = E(MESSAGE, None, E(f"{{{CLIENT_NS}}}body", text="a & b < c > d \"e\" 'f' ]]>"))
    out = serialize(el)
    assert out == ("<message><body>a &amp; b &lt; c &gt; d \"e\" 'f' ]]&gt;"
                   "</body></message>")
    [again] = parse_in_stream(out)
    assert again[0].text == "a & b < c > d \"e\" 'f' ]]>"


def test_attribute_escaping_including_quotes_and_newlines():
    value = "x&y<z>\"double\" 'single'\nline2\r\ttab"
    out = serialize(E(MESSAGE, {"id": value}))
    assert out == ('<message id="x&amp;y&lt;z&gt;&quot;double&quot; &apos;single&apos;'
                   '&#10;line2&#13;&#9;tab"/>')
    [again] = parse_in_stream(out)
    assert again.get("id") == value               # newlines survive attribute normalisation


def test_newline_and_tab_in_text_survive():
    value = "line1\nline2\tend"
    [again] = parse_in_stream(serialize(E(MESSAGE, None, E(f"{{{CLIENT_NS}}}body", text=value))))
    assert again[0].text == value


def test_carriage_return_in_text_survives():
    el = one_stanza(b"<message><body>a&#13;b&#xD;&#10;c</body></message>")
    assert el[0].text == "a\rb\r\nc"
    [again] = parse_in_stream(serialize(el))
    assert again[0].text == "a\rb\r\nc"


def test_tails_inside_a_stanza_are_kept():
    el = one_stanza(b"<message><body>x<b/>tail &amp; more<i>y</i>t2</body></message>")
    out = serialize(el)
    assert out == "<message><body>x<b/>tail &amp; more<i>y</i>t2</body></message>"


def test_element_without_namespace_gets_empty_default():
    out = serialize(E(MESSAGE, None, E("legacy")))
    assert out == '<message><legacy xmlns=""/></message>'
    [again] = parse_in_stream(out)
    assert again[0].tag == "legacy"


def test_rehomed_serialisation_for_a_server_stream():
    el = one_stanza(RICH)
    out = serialize(el, stream_ns=SERVER_NS, rehome_from=CLIENT_NS)
    assert out.startswith("<message to=")          # no xmlns: inherits jabber:server
    assert 'xmlns="jabber:client"' not in out
    assert "<body>a &amp; b" in out                # children in the default namespace
    [peer] = parse_in_stream(out, content_ns=SERVER_NS)
    assert peer.tag == f"{{{SERVER_NS}}}message"
    assert peer[0].tag == f"{{{SERVER_NS}}}body"
    assert peer.find("{jabber:x:data}x") is not None
    assert peer.find("{http://jabber.org/protocol/xhtml-im}html")[0].tag \
        == "{http://www.w3.org/1999/xhtml}body"
    # moving it back gives the original stanza
    assert same_tree(rehome(peer, SERVER_NS, CLIENT_NS), el)


def test_rehome_moves_only_the_content_namespace_in_place():
    el = one_stanza(b"<message to='a@b'><body>x</body>"
                    b"<x xmlns='urn:y'><body/></x>"
                    b"<delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z'/></message>",
                    content_ns=SERVER_NS)
    body = el[0]
    back = rehome(el, SERVER_NS, CLIENT_NS)
    assert back is el and el[0] is body
    assert [e.tag for e in el.iter()] == [
        f"{{{CLIENT_NS}}}message", f"{{{CLIENT_NS}}}body",
        "{urn:y}x", "{urn:y}body", "{urn:xmpp:delay}delay"]
    assert el.get("to") == "a@b"
    assert el[2].get("stamp") == "2020-01-01T00:00:00Z"
    assert serialize(el) == ('<message to="a@b"><body>x</body><x xmlns="urn:y"><body/></x>'
                             '<delay xmlns="urn:xmpp:delay" stamp="2020-01-01T00:00:00Z"/>'
                             '</message>')


@pytest.mark.parametrize("content_ns", [CLIENT_NS, SERVER_NS])
def test_stream_header_then_stanza_then_footer_parses(content_ns):
    head = stream_header(content_ns=content_ns, from_="example.com", to="o'brien.example",
                         id="abc&123", extra_ns={"db": DIALBACK_NS})
    stanza = E(f"{{{content_ns}}}message", {"to": "a@b"}, E(f"{{{content_ns}}}body", text="hi"))
    data = (head + serialize(stanza, stream_ns=content_ns) + STREAM_FOOTER).encode()
    for chunk in (None, 1):
        events = feed(data, chunk, content_ns=content_ns)
        assert [type(e) for e in events] == [StreamOpened, Element, StreamClosed]
        opened = events[0]
        assert opened.default_ns == content_ns
        assert opened.from_ == "example.com"
        assert opened.to == "o'brien.example"
        assert opened.id == "abc&123"
        assert opened.version == "1.0"
        assert opened.attrs["lang"] == "en"
        assert opened.prefixes == {"stream": STREAMS_NS, "db": DIALBACK_NS}
        assert same_tree(events[1].element, stanza)


def test_stream_header_without_version_or_lang():
    head = stream_header(version=None, lang=None)
    [opened] = feed(head.encode())
    assert opened.version is None and "lang" not in opened.attrs


def test_stream_features_use_the_stream_prefix():
    features = E(f"{{{STREAMS_NS}}}features")
    sub(features, "{urn:ietf:params:xml:ns:xmpp-bind}bind")
    out = serialize(features)
    assert out == ('<stream:features><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>'
                   '</stream:features>')
    assert serialize(E(f"{{{STREAMS_NS}}}features")) == "<stream:features/>"
    [again] = parse_in_stream(out)
    assert again.tag == f"{{{STREAMS_NS}}}features"


def test_stream_error_exact_bytes_and_parses():
    out = serialize(stream_error("policy-violation", "stanza too big"))
    assert out == ('<stream:error><policy-violation xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>'
                   '<text xmlns="urn:ietf:params:xml:ns:xmpp-streams" xml:lang="en">'
                   'stanza too big</text></stream:error>')
    assert serialize(stream_error("conflict")) == (
        '<stream:error><conflict xmlns="urn:ietf:params:xml:ns:xmpp-streams"/></stream:error>')
    [again] = parse_in_stream(out)
    assert again.tag == f"{{{STREAMS_NS}}}error"
    assert again[0].tag == f"{{{STREAM_ERRORS_NS}}}policy-violation"


def test_stream_error_on_a_server_stream():
    out = serialize(stream_error("host-unknown"), stream_ns=SERVER_NS, rehome_from=CLIENT_NS)
    assert out == ('<stream:error><host-unknown xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>'
                   '</stream:error>')


def test_dialback_elements_use_the_db_prefix():
    el = E(f"{{{DIALBACK_NS}}}result", {"from": "a.example", "to": "b.example"}, text="key")
    assert serialize(el, stream_ns=SERVER_NS) == \
        '<db:result from="a.example" to="b.example">key</db:result>'


def test_serialise_without_stream_prefixes_declares_namespaces():
    out = serialize(E(f"{{{STREAMS_NS}}}features"), stream_ns="", prefixes={})
    assert out == f'<features xmlns="{STREAMS_NS}"/>'
    etree.fromstring(out)


# -- stanza builders, as a peer sees them ------------------------------------------

def test_iq_result_swaps_addresses():
    request = one_stanza(b"<iq type='get' id='v1' from='a@example.com/r' to='example.com'>"
                         b"<query xmlns='jabber:iq:version'/></iq>")
    out = serialize(result(request))
    assert out == '<iq type="result" id="v1" to="a@example.com/r" from="example.com"/>'


def test_iq_result_with_payload_and_missing_from():
    request = one_stanza(b"<iq type='get' id='v2'><query xmlns='jabber:iq:version'/></iq>")
    payload = E("{jabber:iq:version}query", None, E("{jabber:iq:version}name", text="xferd"))
    out = serialize(result(request, payload))
    assert out == ('<iq type="result" id="v2"><query xmlns="jabber:iq:version">'
                   '<name>xferd</name></query></iq>')


def test_error_reply_to_a_message_keeps_body_and_swaps_addresses():
    msg = one_stanza(b"<message from='a@example.com/r' to='nobody@example.com' id='m9' "
                     b"type='chat'><body>hello</body><thread>t</thread>"
                     b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    out = serialize(error_reply(msg, StanzaError("service-unavailable", "no such user")))
    assert out == (
        '<message type="error" id="m9" to="a@example.com/r" from="nobody@example.com">'
        '<body>hello</body><thread>t</thread>'
        '<error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>'
        '<text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas" xml:lang="en">no such user</text>'
        '</error></message>')


def test_error_reply_to_an_iq_does_not_echo_the_payload():
    request = one_stanza(b"<iq type='set' id='x1' from='a@example.com/r'>"
                         b"<query xmlns='jabber:iq:private'><secret>s</secret></query></iq>")
    out = serialize(error_reply(request, StanzaError("feature-not-implemented")))
    assert out == ('<iq type="error" id="x1" to="a@example.com/r"><error type="cancel">'
                   '<feature-not-implemented xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>'
                   '</error></iq>')
    [again] = parse_in_stream(out)
    assert again.find(f"{{{CLIENT_NS}}}error")[0].tag \
        == f"{{{STANZA_ERRORS_NS}}}feature-not-implemented"


def test_error_reply_with_redirect_value_on_a_server_stream():
    request = one_stanza(b"<presence from='a@example.com/r' to='room@muc.example.com/n'/>")
    err = StanzaError("redirect", value="xmpp:room@other.example")
    out = serialize(error_reply(request, err), stream_ns=SERVER_NS, rehome_from=CLIENT_NS)
    assert out == ('<presence type="error" to="a@example.com/r" from="room@muc.example.com/n">'
                   '<error type="modify"><redirect xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">'
                   'xmpp:room@other.example</redirect></error></presence>')
