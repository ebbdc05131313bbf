"""What the stream layer must do with *any* input: the properties the fuzzers check.

One function, :func:`check`, feeds bytes in given chunks to a fresh
:class:`StreamParser` and asserts everything that must hold whatever the bytes
are. The hypothesis tests, the corpus replay and the atheris entry point all
call it, so a property is written once.

The properties:

(a) only :class:`StreamError` escapes ``feed()``, with one of the conditions
    the parser documents (:data:`PARSER_CONDITIONS`); ``exc.events`` is a list
    of events;
(b) events come in order — one ``StreamOpened`` first, then elements, then at
    most one ``StreamClosed`` last — and after an error the parser is dead: a
    later ``feed()`` raises the same condition and yields nothing; after
    ``StreamClosed`` it yields nothing and raises nothing;
(c) every element handed out is safe to use: detached from the stream root,
    no comments or processing instructions, no undeclared prefixes, nested no
    deeper than ``max_depth``, no larger than ``max_stanza_size`` plus one
    slice, and it survives ``serialize()`` → parse unchanged;
(d) no hang: each ``feed()`` returns within :data:`FEED_SECONDS`, and the
    parser never sits silently on bytes: if the input left it waiting, more
    bytes (:func:`assert_live`) must bring a verdict — an error or the close —
    before they exceed the stanza size limit; a libxml2 push-parser stall
    looks like that from outside;
(e) soundness against a reference: when a stream was accepted up to
    ``</stream:stream>``, the same bytes are well-formed UTF-8 XML to a
    one-shot lxml parse, without DTD, comments or PIs, and that parse finds
    exactly the stanzas the stream parser handed out.

Memory bounds live in ``test_stream_limits.py``: they need long streams.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from lxml import etree

from server.xmpp.errors import STREAMS_NS, StreamError
from server.xmpp.stream import (CLIENT_NS, DEFAULT_MAX_DEPTH, DEFAULT_MAX_STANZA_SIZE,
                                DIALBACK_NS, STREAM_FOOTER, Element, StreamClosed,
                                StreamOpened, StreamParser, serialize, stream_header)

#: the stream error conditions StreamParser documents (module docstring of stream.py)
PARSER_CONDITIONS = frozenset({
    "not-well-formed", "restricted-xml", "policy-violation", "bad-format",
    "invalid-namespace", "unsupported-encoding",
})

#: a generous bound on one feed() call: the fuzz inputs are at most a few hundred KiB
FEED_SECONDS = 5.0

#: fed first after an input that left the parser waiting. It can finish no
#: comment, CDATA section, PI or reference into anything well-formed, and ends
#: in an end tag no input opens. Longer than the reference scanner's carry
#: (16 bytes) on purpose.
PROBE = b"'\"?>-->]]></xferd-liveness-probe-element>"


def _reference(recover: bool = False) -> etree.XMLParser:
    """A one-shot parser for check_reference()."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           remove_comments=False, remove_pis=False, huge_tree=False,
                           recover=recover)


@dataclass
class Limits:
    content_ns: str | tuple[str, ...] = CLIENT_NS
    max_stanza_size: int = DEFAULT_MAX_STANZA_SIZE
    max_depth: int = DEFAULT_MAX_DEPTH

    def parser(self) -> StreamParser:
        return StreamParser(self.content_ns, max_stanza_size=self.max_stanza_size,
                            max_depth=self.max_depth)


@dataclass
class Outcome:
    """What one run of the parser over some chunks produced."""
    events: list = field(default_factory=list)
    error: StreamError | None = None
    closed: bool = False

    @property
    def elements(self) -> list:
        return [ev.element for ev in self.events if isinstance(ev, Element)]

    @property
    def condition(self) -> str | None:
        return self.error.condition if self.error is not None else None


#: past this many bytes, tiny pieces stop: 300 KiB a byte at a time takes seconds
TINY_PIECES_UP_TO = 16 * 1024


def chunked(data: bytes, sizes) -> list[bytes]:
    """*data* cut into pieces of *sizes* (cycled); ``None`` means one piece.
    After :data:`TINY_PIECES_UP_TO` bytes, pieces are at least 1 KiB."""
    if not sizes:
        return [data]
    out, i, k = [], 0, 0
    while i < len(data):
        n = max(1 if i < TINY_PIECES_UP_TO else 1024, sizes[k % len(sizes)])
        out.append(data[i:i + n])
        i += n
        k += 1
    return out


def feed_all(parser: StreamParser, chunks) -> Outcome:
    """Feed *chunks* until an error or the close; check (a) and the time bound."""
    out = Outcome()
    for chunk in chunks:
        started = time.monotonic()
        try:
            events = parser.feed(chunk)
        except StreamError as exc:
            _check_error(exc)
            out.error = exc
            out.events += exc.events
            break
        except BaseException as exc:                    # (a)
            raise AssertionError(
                f"feed() raised {type(exc).__name__}: {exc!r} (only StreamError may "
                f"escape)") from exc
        finally:
            took = time.monotonic() - started
            assert took < FEED_SECONDS, f"feed() of {len(chunk)} bytes took {took:.1f}s"
        assert isinstance(events, list), events
        out.events += events
        if any(isinstance(ev, StreamClosed) for ev in events):
            out.closed = True
            break
    return out


def _check_error(exc: StreamError) -> None:
    assert exc.condition in PARSER_CONDITIONS, \
        f"undocumented stream error condition {exc.condition!r} ({exc.text})"
    assert isinstance(exc.events, list), exc.events


def check(data: bytes, sizes=None, limits: Limits | None = None) -> Outcome:
    """Run every input-independent property over *data* fed in *sizes* chunks."""
    limits = limits or Limits()
    parser = limits.parser()
    out = feed_all(parser, chunked(data, sizes))
    check_events(out.events, limits)
    for element in out.elements:
        check_element(element, limits, parser)
    check_after(parser, out)
    if out.closed:
        check_reference(data, out)
    return out


def check_events(events: list, limits: Limits) -> None:
    """(b) the event grammar: open, elements…, close."""
    for i, ev in enumerate(events):
        assert isinstance(ev, (StreamOpened, Element, StreamClosed)), ev
        if i == 0:
            assert isinstance(ev, StreamOpened), f"first event is {ev!r}"
        else:
            assert not isinstance(ev, StreamOpened), "a second StreamOpened"
        if isinstance(ev, StreamClosed):
            assert i == len(events) - 1, "events after StreamClosed"
    if events:
        opened = events[0]
        content = ((limits.content_ns,) if isinstance(limits.content_ns, str)
                   else tuple(limits.content_ns))
        assert opened.default_ns in content
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in opened.attrs.items())


def check_after(parser: StreamParser, out: Outcome) -> None:
    """(b) after the verdict the parser is inert; (d) without one, it is not stalled."""
    if out.error is not None:
        for more in (b"<presence/>", b"", b"</stream:stream>"):
            try:
                events = parser.feed(more)
            except StreamError as exc:
                assert exc.condition == out.error.condition, \
                    f"after {out.error.condition!r}, feed() raised {exc.condition!r}"
                assert exc.events == [], "events after an error"
            else:
                raise AssertionError(f"after {out.error.condition!r}, feed({more!r}) "
                                     f"returned {events!r} instead of raising")
    elif out.closed:
        assert parser.closed
        assert parser.feed(b"<message><body>late</body></message>") == []
        assert parser.feed(b"\xff<!DOCTYPE x>&") == []
    else:
        assert_live(parser, out)


def assert_live(parser: StreamParser, out: Outcome) -> None:
    """(d) a parser left waiting reaches a verdict within a bounded number of
    further bytes: :data:`PROBE`, then alternating blocks of white space and
    letters. A parser inside an unfinished start tag may legitimately wait
    (libxml2 honours quotes when looking for its '>'), but only until the
    stanza size limit; a stall that waits on more than that is a bug."""
    budget = parser.max_stanza_size + 2 * parser._slice + len(PROBE) + 16
    fed, blocks = 0, [PROBE] + [b" " * 4096, b"x" * 4096] * (budget // 8192 + 2)
    for block in blocks:
        more = feed_all(parser, [block])
        fed += len(block)
        check_events(out.events + more.events, Limits(parser.content_ns))
        if more.error is not None or more.closed:
            return
        assert fed <= budget, (
            f"the parser swallowed {fed} bytes after the input without a verdict "
            f"(a stall: the peer would wait forever)")
    raise AssertionError("no verdict")


def check_element(el, limits: Limits, parser: StreamParser) -> None:
    """(c) a stanza as the rest of the server receives it."""
    assert el.getparent() is None, "stanza still attached to the stream root"
    assert el.tail is None, "stanza carries text that followed it"
    size = 0
    for node in el.iter():
        tag = node.tag
        assert isinstance(tag, str), f"comment or PI in a stanza: {node!r}"
        assert tag[0] == "{" or ":" not in tag, f"undeclared prefix in <{tag}>"
        size += len(tag.encode()) + len((node.text or "").encode())
        size += len((node.tail or "").encode()) if node is not el else 0
        for key, value in node.attrib.items():
            assert key[0] == "{" or ":" not in key, f"undeclared prefix in {key}"
            size += len(key.encode()) + len(value.encode())
    depth = _depth(el)
    assert depth + 1 <= limits.max_depth, f"stanza nested {depth} deep"
    # every byte of content took at least one byte of input; the limit is
    # enforced per slice, so it may be exceeded by at most one slice
    assert size <= limits.max_stanza_size + parser._slice, \
        f"stanza of at least {size} bytes got past max_stanza_size={limits.max_stanza_size}"
    assert canonical(reparse(el)) == canonical(el), "serialize() does not round-trip"


def _depth(el) -> int:
    deepest, stack = 1, [(el, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in node)
    return deepest


def reparse(el):
    """*el* written by serialize() and read back the way a peer reads it."""
    content_ns = el.tag[1:].partition("}")[0] if el.tag[0] == "{" else CLIENT_NS
    stream_ns = content_ns if content_ns in ("jabber:client", "jabber:server") else CLIENT_NS
    text = serialize(el, stream_ns=stream_ns)
    parser = StreamParser(stream_ns, max_stanza_size=1 << 30, max_depth=10_000)
    head = stream_header(content_ns=stream_ns, extra_ns={"db": DIALBACK_NS})
    events = parser.feed((head + text + STREAM_FOOTER).encode())
    assert [type(e) for e in events] == [StreamOpened, Element, StreamClosed], events
    return events[1].element


def canonical(el):
    """A comparable picture of an element: names, attributes, text, recursively."""
    return (el.tag, tuple(sorted(el.attrib.items())), el.text or "",
            tuple((canonical(child), child.tail or "") for child in el))


_FOOTER = re.compile(rb"</([^\s<>/:]+:)?stream\s*>")
_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*['"]([^'"]*)['"]""")


def check_reference(data: bytes, out: Outcome) -> None:
    """(e) an accepted stream is well-formed XML with the same stanzas."""
    ends = [m.end() for m in _FOOTER.finditer(data)]
    if [type(ev) for ev in out.events] == [StreamOpened, StreamClosed]:
        # perhaps an empty root, <stream:stream .../>: it ends at some '>'
        ends = [m.end() for m in re.finditer(rb">", data[:8192])] + ends
    for end in ends:
        document = data[:end]
        reference = _reference()
        try:
            root = etree.fromstring(document, reference)
        except etree.XMLSyntaxError:
            # a namespace name that is no URI ("urn:a b") is only a warning to the
            # push parser and not our business (RFC 6120 asks nothing of it);
            # undeclared prefixes, also namespace errors, are checked below.
            # (exc.error_log mixes in earlier runs; the parser's own log does not)
            if not all(e.domain_name == "NAMESPACE" for e in reference.error_log):
                continue
            root = etree.fromstring(document, _reference(recover=True))
        break
    else:
        raise AssertionError("the stream parser accepted a stream that is not well-formed "
                             "XML up to any </stream:stream>")
    document.decode("utf-8")            # RFC 6120 §11.6: UTF-8 only
    declared = _ENCODING.match(document)
    assert declared is None or declared.group(1).lower() == b"utf-8", \
        f"accepted a stream declared as {declared.group(1)!r}"
    tree = root.getroottree()
    assert tree.docinfo.encoding.lower() == "utf-8", f"accepted {tree.docinfo.encoding}"
    assert tree.docinfo.internalDTD is None and not tree.docinfo.doctype
    assert root.tag == f"{{{STREAMS_NS}}}stream"
    for node in root.iter():
        assert isinstance(node.tag, str), "accepted a comment or PI"
        assert ":" not in node.tag.rpartition("}")[2], f"accepted <{node.tag}>"
        assert all(":" not in k.rpartition("}")[2] for k in node.attrib), "accepted a prefix"
    assert not (root.text or "").strip(), "accepted text between stanzas"
    assert not any((child.tail or "").strip() for child in root), \
        "accepted text between stanzas"
    expected = [canonical(child) for child in root]
    assert [canonical(el) for el in out.elements] == expected, \
        "stanzas differ from a one-shot parse of the same bytes"
