"""XML streams without I/O (RFC 6120 §4 and §11): bytes in, events out; elements in, text out.

:class:`StreamParser` turns the bytes of one stream into events — the opening
header, one complete lxml element per top-level child (a stanza, or a
negotiation element such as ``<starttls/>``), and the closing tag. A stream
restart (after STARTTLS or SASL) is simply a new parser.

Hardening (RFC 6120 §11.1 "restricted XML"):

* Everything before the root element is checked *before* lxml sees it: only an
  XML declaration and white space may precede ``<stream:stream>``. A DOCTYPE,
  and with it every entity declaration ("billion laughs"), is refused with
  ``<restricted-xml/>`` without ever being parsed.
* Streams are UTF-8 (§11.6): an XML declaration naming another encoding, or
  bytes that would make libxml2 switch to UTF-16/UCS-4 by autodetection, end
  the stream with ``<unsupported-encoding/>``.
* Because no DTD can exist, lxml is free to resolve the five predefined
  entities; any other reference is an undefined entity and libxml2 reports it
  (``<not-well-formed/>``). We deliberately keep ``resolve_entities`` on: with
  it off, libxml2 silently stops producing events at an undefined reference.
  ``no_network`` and ``load_dtd=False`` keep external references out.
* Comments and processing instructions → ``<restricted-xml/>``.
* A stanza larger than ``max_stanza_size`` bytes, nested deeper than
  ``max_depth``, or with an element of more than ``max_attributes``
  attributes (checked as each element starts) → ``<policy-violation/>``. Input is fed to lxml in slices so a
  single huge read cannot slip past the size check.
* Character data between stanzas may only be white space (keepalives).

Names a peer makes up do not stay (RFC 6120 §8.4 lets a stanza carry any
extended content, so any names): libxml2 interns every element, attribute
and prefix name and namespace URI in a dictionary that never shrinks, and
lxml shares one per thread. :mod:`.names` gives each lxml parser and each
stanza handed out a dictionary of its own, freed with it. A parser is renewed
at the first stanza end after ``renew_after`` bytes (default: the stanza size
limit), so an endless stream's parser holds no more names than that, and a
dropped parser first ends its document, which frees it at once rather than at
Python's next full garbage collection (lxml's parser and its unfinished
document refer to each other). Why this and not:

* a budget of new names per stream and in total, beyond which a stream gets
  ``<policy-violation/>``: cheap, but the dictionary still grows up to the
  global budget, and once an attacker has spent it every client using a name
  the server has not seen yet is refused: new extensions are locked out;
* parsing in a worker thread that is recycled: a dead thread's dictionary is
  freed too (reference-counted, as used here), but a round trip to a worker
  costs ~45 µs per read (measured with ``run_in_executor``) where a whole
  message costs the server ~54 µs of CPU, and each long-lived stanza (a
  stored presence) would keep its thread's whole generation of names alive;
* the stdlib's expat as tokenizer (its names die with the parser): every
  stanza still becomes an lxml tree, and lxml's trees intern their names in
  the same per-thread dictionary (``initDocDict`` in ``lxml/parser.pxi``).

Measured with ``tests/integration/test_hostile_names.py``'s attack: 1.5M
names grew RSS by 48 MiB (before login) and 139 MiB (after) before, by less
than 1 MiB after; 16M names over 800 connections (20k each, no login) kept
RSS within 2 MiB (c2s) and 9 MiB (s2s before dialback) of where it started.
Cost: ~1 µs more per small message parsed (7.2 → 8.3 µs, best of 5 × 20,000
in one process; ~0.7 µs of it the stanza's own dictionary), ~3% of the ~40 µs
of CPU the server spends per message delivered.

Hibernation: an idle connection need not keep its lxml parser (~11 KiB with
libxml2's buffers and the document that holds the root). Between stanzas the
parser's whole state is the stream's opening, so :meth:`StreamParser.hibernate`
drops it and the next :meth:`~StreamParser.feed` builds a fresh one and
replays the opening bytes exactly as received (same declaration, same prefixes
and namespaces in scope) before the new data. Nothing the caller sees changes:
the same events, errors, limits and byte counts. (libxml2's line numbers would
change, so error texts leave them out.)

:meth:`StreamParser.feed` raises nothing but :class:`StreamError`, with one of
the conditions above (``not-well-formed``, ``restricted-xml``,
``unsupported-encoding``, ``policy-violation``, ``bad-format``,
``invalid-namespace``). After that the parser is spent: every later ``feed()``
raises the same condition again and completes no events. After
``</stream:stream>`` every ``feed()`` returns nothing.

Serialisation is our own small writer rather than ``lxml.etree.tostring``:
stanzas detached from the stream would otherwise come out with ``ns0:``
prefixes, and the writer re-homes the content namespace in the same pass
(``jabber:client`` inside the server, ``jabber:server`` on s2s streams).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

from . import names
from .errors import STREAMS_NS, StreamError

from .namespaces import CLIENT_NS, DIALBACK_NS, SERVER_NS, XML_NS  # noqa: F401

DEFAULT_MAX_STANZA_SIZE = 256 * 1024
DEFAULT_MAX_DEPTH = 32
#: attributes one element may carry. The most any XMPP element defined so far
#: uses is about a dozen (a Jingle ICE candidate, XEP-0176 §5); every later
#: reader of an element pays per attribute (lxml's ``items()`` quadratically)
DEFAULT_MAX_ATTRIBUTES = 64
#: elements in one stanza. Taking a stanza out of the stream root costs time
#: quadratic in its elements (lxml makes each one's namespace absolute): 4,096
#: take ~8 ms, 16,384 ~55 ms, and a 256 KiB stanza of empty elements holds
#: 64k (0.6 s of blocked loop); 8,192 keep any stanza near 20 ms
DEFAULT_MAX_ELEMENTS = 8192
#: input bytes after which an lxml parser is replaced at the next stanza end
#: (see StreamParser._feed_renewing): its names then weigh no more than a
#: stanza in progress may anyway
DEFAULT_RENEW_AFTER = DEFAULT_MAX_STANZA_SIZE
_SLICE = 8 * 1024           # bytes fed to lxml at once, for the size check
_MAX_PROLOG = 4 * 1024      # bytes allowed before the root element starts
_XML_DECL = re.compile(rb"\s*(<\?xml\s[^>]*\?>)?\s*")
#: a valid reference is matched whole; a bare '&' alone
_REFERENCE_OR_CDATA = re.compile(
    rb"&(?:(?:amp|lt|gt|quot|apos|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});)?|<!\[CDATA\[|\]\]>")
_CARRY = 16                 # longest token above is 11 bytes ("&#x10FFFF;" + 1)
_XML_SPACE = b" \t\r\n"     # XML's white space (bytes.strip() would also take \v and \f)
_XML_SPACE_TEXT = _XML_SPACE.decode()   # as text (str.strip() would also take U+00A0 …)
#: a start tag; '>' may appear unescaped inside quoted attribute values
_START_TAG = re.compile(rb"""<(?:[^'">]|'[^']*'|"[^"]*")*>""")
_NAME = re.compile(rb"[^ \t\r\n/>]+")
_ENCODING = re.compile(rb"""\sencoding\s*=\s*(?:'([^']*)'|"([^"]*)")""")


@dataclass
class StreamOpened:
    """The peer's ``<stream:stream>`` header."""
    attrs: dict[str, str]
    default_ns: str | None
    prefixes: dict[str, str] = field(default_factory=dict)

    @property
    def to(self) -> str | None:
        return self.attrs.get("to")

    @property
    def from_(self) -> str | None:
        return self.attrs.get("from")

    @property
    def version(self) -> str | None:
        return self.attrs.get("version")

    @property
    def id(self) -> str | None:
        return self.attrs.get("id")


@dataclass
class Element:
    """One complete child of the stream root (stanza or negotiation element)."""
    element: etree._Element


@dataclass
class StreamClosed:
    """The peer sent ``</stream:stream>``."""


class StreamParser:
    """Incremental parser for one stream (one per restart)."""

    def __init__(self, content_ns: str | tuple[str, ...] = CLIENT_NS, *,
                 max_stanza_size: int = DEFAULT_MAX_STANZA_SIZE,
                 max_depth: int = DEFAULT_MAX_DEPTH,
                 max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
                 max_elements: int = DEFAULT_MAX_ELEMENTS,
                 renew_after: int = DEFAULT_RENEW_AFTER):
        self.content_ns = (content_ns,) if isinstance(content_ns, str) else tuple(content_ns)
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.max_attributes = max_attributes
        self.max_elements = max_elements
        self._elements = 0         # in the stanza being read
        self.renew_after = renew_after
        self._parser_bytes = 0     # fed to the current lxml parser (see _feed_renewing)
        self._parser: etree.XMLPullParser | None = _lxml_parser()   # None: hibernating
        self._names = names.private()   # the parser's name dictionary (see names.py)
        self._tsd = names.thread_state_dict()
        self._prolog: bytes | None = b""   # None once the root element is seen
        self._head = b""           # bytes received until the root start tag is parsed
        self._opening: bytes | None = None  # then: declaration + root start tag, as received
        self._footer = b""         # and the end tag that closes that root
        self._root: etree._Element | None = None
        self._depth = 0
        self._pending_ns: dict[str, str] = {}
        self._stanza_bytes = 0
        self._slice = max(64, min(_SLICE, max_stanza_size // 8))
        self._carry = b""          # undecided tail for _scan_references
        self._in_cdata = False
        self._failed: tuple[str, str | None] | None = None   # the error that ended us
        self.closed = False

    # -- input ---------------------------------------------------------------
    def feed(self, data: bytes) -> list[StreamOpened | Element | StreamClosed]:
        """Parse *data*; return the events it completes.

        Raises StreamError; its ``events`` attribute holds what *data*
        completed before the error, so a caller can still act on those. The
        parser is spent after an error: later calls raise it again.
        """
        if self.closed:
            return []
        if self._failed is not None:
            raise StreamError(*self._failed)
        events: list = []
        try:
            if self._prolog is not None:
                data = self._check_prolog(data)
                if not data:
                    return events
            if self._opening is None:
                self._head += data      # bounded: the header counts as stanza bytes
            bad = self._bad_reference(data)
            good = data if bad is None else data[:bad]
            if self._parser is None and good:
                # a keepalive or the footer need no parser (see hibernate)
                rest = good.lstrip(_XML_SPACE)
                if bad is None and not rest:
                    return events
                if rest.startswith(self._footer):
                    self.closed = True          # what follows it does not matter
                    events.append(StreamClosed())
                    return events
                self._revive()
            for start in range(0, len(good), self._slice):
                if self._parser is None:
                    self._revive()              # renewed at a stanza end (_feed_renewing)
                piece = good[start:start + self._slice]
                if self._parser_bytes >= self.renew_after and self._opening is not None:
                    self._feed_renewing(piece, events)
                else:
                    self._parser_bytes += len(piece)
                    self._feed_piece(piece, events)
                if self.closed:
                    return events
            if bad is not None:
                raise StreamError("not-well-formed", "'&' must start an entity reference")
            if self._opening is None and self._root is not None:
                self._opening, self._footer = _opening(self._head)
                self._head = b""
        except StreamError as exc:
            exc.events = events
            self._failed = (exc.condition, exc.text)
            raise
        return events

    def hibernate(self) -> bool:
        """Drop the lxml parser if the stream sits between stanzas; the next
        :meth:`feed` revives it (see the module docstring). True if the
        parser is hibernating now.

        Safe only where everything lxml holds is the stream's opening: inside
        the root (depth 1), and no byte but XML white space since the last
        event (the stanza byte count is 0 only then; white space between
        stanzas is dropped anyway). Not after an error or the footer: those
        must keep answering as they do. Stanzas already handed out do not
        keep the old parser alive (see :func:`_detach`).
        """
        if self._failed is not None or self.closed:
            return False
        if self._parser is None:
            return True
        if self._opening is None or self._depth != 1 or self._stanza_bytes:
            return False
        self._let_go()
        return True

    def release(self) -> None:
        """The stream is over: let go of the lxml parser now (see :meth:`_let_go`)."""
        if self._parser is not None:
            self._let_go()
        self.closed = True

    def _let_go(self) -> None:
        """Drop the lxml parser, its document and its name dictionary.

        An lxml push parser and its unfinished document refer to each other,
        so dropping them leaves a reference cycle: its memory (libxml2's
        buffers, the document, the names) would wait for Python's cyclic
        garbage collector, which may not run for a long while. Between
        stanzas we end the document instead (the footer, then ``close()``),
        which breaks the cycle: it is freed at once. Mid-stanza it is left to
        the collector."""
        parser = self._parser
        self._parser = None
        self._root = None
        between = self._depth == 1 and not self._stanza_bytes
        if self._failed is None and self._opening is not None and (between or self.closed):
            previous = names.use(self._names)
            try:
                if between:
                    parser.feed(self._footer)
                for _ in parser.read_events():
                    pass
                parser.close()
            except etree.XMLSyntaxError:
                pass
            finally:
                names.use(previous)
        self._names = None

    @property
    def hibernating(self) -> bool:
        """True while the lxml parser is dropped (see :meth:`hibernate`)."""
        return self._parser is None

    def _revive(self) -> None:
        """A fresh lxml parser in the state the old one was in at depth 1:
        fed the opening exactly as received, so that the same prefixes,
        namespaces and xml:lang are in scope. The opening's events were
        reported when it first arrived; here they only give us the root."""
        self._parser = _lxml_parser()
        self._names = names.private()
        self._parser_bytes = len(self._opening)
        self._lxml_feed(self._opening)
        for kind, obj in self._parser.read_events():
            if kind == "start":
                self._root = obj
        assert self._root is not None, "the replayed stream header did not parse"

    def _lxml_feed(self, data: bytes) -> None:
        """``feed()`` with the parser's own name dictionary installed (see
        :func:`names.private`; :func:`names.use`, inlined: this runs for
        every slice). A parser is fed in the thread that made it."""
        tsd = self._tsd
        if tsd is None:
            self._parser.feed(data)
            return
        previous = tsd.get(names.KEY)
        tsd[names.KEY] = self._names
        try:
            self._parser.feed(data)
        finally:
            if previous is None:
                del tsd[names.KEY]
            else:
                tsd[names.KEY] = previous

    def _feed_renewing(self, piece: bytes, events: list) -> None:
        """Feed *piece* '>' by '>' until a stanza ends, then drop the lxml
        parser so that the next byte goes to a new one (see :meth:`_revive`).

        An lxml parser keeps every name it has read in its own dictionary
        (see :mod:`.names`) until it is dropped, so a stream that never idles
        must not keep one parser for good. Only a stanza end is a point where
        a new parser can take over, and lxml reports no byte offsets: fed one
        '>' at a time, the slice that completes a stanza ends exactly there.
        This costs an lxml call per '>' for at most one stanza every
        ``renew_after`` bytes.
        """
        start = 0
        while start < len(piece):
            gt = piece.find(b">", start)
            end = len(piece) if gt < 0 else gt + 1
            self._parser_bytes += end - start
            self._feed_piece(piece[start:end], events)
            start = end
            if self.closed:
                return
            if self._depth == 1 and self._stanza_bytes == 0 and self.hibernate():
                if start < len(piece):
                    self._revive()
                    self._parser_bytes += len(piece) - start
                    self._feed_piece(piece[start:], events)
                return

    def _feed_piece(self, piece: bytes, events: list) -> None:
        """Feed one slice, in up to three parts: up to its last '>', that '>'
        alone, and the rest. If the lone '>' completes an event (a stanza, the
        header, the close), libxml2 has consumed every byte before it, so the
        slice's rest is exactly what follows it: the stanza byte count can
        rely on that point.
        """
        before = len(events)
        gt = piece.rfind(b">")
        try:
            if gt < 0:
                self._lxml_feed(piece)
                self._collect(events)
                boundary = False
            else:
                if gt:
                    self._lxml_feed(piece[:gt])
                    self._collect(events)
                    if self.closed:
                        return                  # bytes after </stream:stream> don't matter
                at_gt = len(events)
                self._lxml_feed(b">")
                self._collect(events)
                boundary = len(events) > at_gt
                if gt + 1 < len(piece) and not self.closed:
                    self._lxml_feed(piece[gt + 1:])
                    self._collect(events)
        except etree.XMLSyntaxError as exc:
            self._collect(events)               # what parsed before the error
            if self.closed:
                return                          # bytes after </stream:stream> don't matter
            raise _syntax_error(exc) from None
        self._count_stanza_bytes(piece, gt, boundary=boundary,
                                 stanza_ended=len(events) > before)
        self._check_root_text()

    def _count_stanza_bytes(self, piece: bytes, gt: int, *, boundary: bool,
                            stanza_ended: bool) -> None:
        """Bound the bytes of the stanza being received (RFC 6120 §13.12).

        lxml reports no byte offsets, so this counts slices: everything since
        the last completed stanza, minus white space between stanzas. Slices
        are at most an eighth of the limit, so the count is never more than
        that far off, and a huge start tag is counted before lxml has even
        reported it.

        White space is free only while the parser is known to be between
        stanzas (the count is 0): right after a slice's last '>' ended a
        stanza, and until anything else arrives. White space inside an
        unfinished start tag or attribute value counts like any other byte,
        and so do bytes that only look like white space (\\v, \\f: libxml2
        refuses them, but only once more input arrives). :meth:`hibernate`
        relies on the count being 0 only when lxml holds nothing else.
        """
        if boundary:
            rest = piece[gt + 1:]
            self._stanza_bytes = len(rest) if rest.strip(_XML_SPACE) else 0
        elif stanza_ended:
            self._stanza_bytes = len(piece)     # the next stanza began in this slice
        elif self._stanza_bytes == 0 and self._depth <= 1 and not piece.strip(_XML_SPACE):
            pass                                # whitespace keepalives
        else:
            self._stanza_bytes += len(piece)
        if self._stanza_bytes > self.max_stanza_size:
            raise StreamError("policy-violation",
                              f"stanza exceeds {self.max_stanza_size} bytes")

    def _bad_reference(self, data: bytes) -> int | None:
        """Offset in *data* of an ``&`` that starts no predefined entity or
        character reference, else None. libxml2's push parser silently stops
        producing events at such an ``&`` in text instead of reporting it,
        which would hang the stream, so we look for it ourselves.
        """
        buf = self._carry + data
        cut = max(0, len(buf) - _CARRY)          # tokens starting later: next time
        for m in _REFERENCE_OR_CDATA.finditer(buf):
            if m.start() >= cut:
                break
            token = m.group()
            if self._in_cdata:
                self._in_cdata = token != b"]]>"
            elif token == b"<![CDATA[":
                self._in_cdata = True
            elif token == b"&":
                return max(0, m.start() - len(self._carry))
        self._carry = buf[cut:]
        return None

    def _check_prolog(self, data: bytes) -> bytes:
        """Hold bytes until the root start tag is in sight; refuse DTDs and PIs."""
        buf = self._prolog + data
        m = _XML_DECL.match(buf)
        if m.group(1):
            enc = _ENCODING.search(m.group(1))
            if enc and (enc.group(1) or enc.group(2) or b"").lower() != b"utf-8":
                raise StreamError("unsupported-encoding", "streams are UTF-8 (RFC 6120 §11.6)")
        rest = buf[m.end():]
        if not rest:
            if len(buf) > _MAX_PROLOG:
                raise StreamError("policy-violation", "stream header too long")
            self._prolog = buf
            return b""
        if b"<?xml".startswith(rest[:5]) and b">" not in rest:
            self._prolog = buf                  # declaration still arriving
            if len(buf) > _MAX_PROLOG:
                raise StreamError("policy-violation", "stream header too long")
            return b""
        if rest[:1] != b"<":
            raise StreamError("not-well-formed", "text before the stream header")
        if len(rest) < 2:
            self._prolog = buf
            return b""
        if rest[1:2] == b"\x00":
            # '<' NUL is how libxml2 recognises UTF-16LE and UCS-4 input
            raise StreamError("unsupported-encoding", "streams are UTF-8 (RFC 6120 §11.6)")
        if rest[1:2] in (b"!", b"?"):
            raise StreamError("restricted-xml",
                              "DTDs, comments and processing instructions are not allowed")
        self._prolog = None
        return buf

    def _collect(self, out: list) -> None:
        for kind, obj in self._parser.read_events():
            if kind == "start-ns":
                if self._root is None:          # only the header's are kept
                    prefix, uri = obj
                    self._pending_ns[prefix or ""] = uri
            elif kind == "start":
                if self._depth == 1:
                    # text before this stanza must not wait for the end of the
                    # slice: the stanzas after it would be handed out first
                    self._check_root_text()
                self._depth += 1
                if self._depth > self.max_depth:
                    raise StreamError("policy-violation",
                                      f"elements nested deeper than {self.max_depth}")
                keys = obj.keys()
                if len(keys) > self.max_attributes:       # the header's too
                    raise StreamError("policy-violation",
                                      f"more than {self.max_attributes} attributes on an element")
                if self._depth == 1:
                    out.append(self._open(obj))
                    continue
                _check_names(obj.tag, keys)
                if self._depth == 2:
                    self._elements = 1
                else:
                    self._elements += 1
                    if self._elements > self.max_elements:
                        raise StreamError("policy-violation",
                                          f"more than {self.max_elements} elements in a stanza")
            elif kind == "end":
                self._depth -= 1
                if self._depth == 1:
                    tail = obj.tail
                    _detach(obj)
                    obj.tail = None
                    # the stanza arrived whole before the text that follows it
                    out.append(Element(obj))
                    if tail is not None and tail.strip(_XML_SPACE_TEXT):
                        raise StreamError("bad-format", "character data between stanzas")
                elif self._depth == 0:
                    self._check_root_text()     # text just before the footer
                    self.closed = True
                    out.append(StreamClosed())
                    return
            else:  # comment or processing instruction
                raise StreamError("restricted-xml",
                                  "comments and processing instructions are not allowed")

    def _open(self, root) -> StreamOpened:
        self._root = root
        if root.tag != f"{{{STREAMS_NS}}}stream":
            if ":" in root.tag.rpartition("}")[2]:
                # not etree.QName(): it raises ValueError on such a name
                raise StreamError("not-well-formed", f"undeclared prefix in <{root.tag}>")
            if root.tag.rpartition("}")[2] == "stream":
                raise StreamError("invalid-namespace", "stream element in the wrong namespace")
            raise StreamError("not-well-formed", "first element is not <stream:stream>")
        default_ns = self._pending_ns.get("")
        if default_ns not in self.content_ns:
            raise StreamError("invalid-namespace",
                              f"default namespace must be {' or '.join(self.content_ns)}")
        for key in root.attrib:
            if ":" in key.rpartition("}")[2]:
                raise StreamError("not-well-formed",
                                  f"undeclared prefix or no QName in attribute {key}")
        attrs = {}
        for key, value in root.attrib.items():
            if key == f"{{{XML_NS}}}lang":
                attrs["lang"] = value
            elif not key.startswith("{"):
                attrs[key] = value
        prefixes = {p: u for p, u in self._pending_ns.items() if p}
        return StreamOpened(attrs, default_ns, prefixes)

    def _check_root_text(self) -> None:
        """Only white space may sit between stanzas; drop it so it cannot pile up."""
        root = self._root
        if root is None:
            return
        text = root.text
        if text is not None and self._depth <= 1:
            if text.strip(_XML_SPACE_TEXT):
                raise StreamError("bad-format", "character data between stanzas")
            root.text = None


def _detach(stanza) -> None:
    """Take a finished stanza out of the stream root into a document of its
    own. An lxml document keeps the parser that built it alive, libxml2's
    buffers included, and so does every copy of one of its elements: a
    session keeps a copy of its last presence, which would keep the whole
    parser (~11 KiB) even while hibernating. Moving the stanza through an
    empty element of its own costs ~1 µs more than ``root.remove()`` did.
    (lxml names the default namespace of a detached stanza ``ns0``, ``ns1``,
    … by its document's count, so now every stanza gets ``ns0`` whatever came
    before it in the stream or whether the parser was revived.)"""
    names.new_generation()        # the stanza's names go with it (see names.py)
    holder = etree.Element("detached")
    holder.append(stanza)
    holder.remove(stanza)


def _check_names(tag: str, attribute_names: list[str]) -> None:
    """libxml2 only warns about undeclared prefixes and names that are no
    QName (``a:``, ``:a``, ``p:b:c``), and keeps them as plain local names
    with the colon; XML namespaces make that a well-formedness error
    (§4.9.3.13), and relayed as such it would get our s2s stream torn down.

    A namespace name with a brace in it is no URI either, and it would make
    the Clark notation ``{uri}local`` ambiguous for every reader of the tag
    (the serialiser once wrote the part after the first '}' as the name).
    Checked as each element starts, with the names the parser has just
    given: no second walk over the finished stanza."""
    if _bad_name(tag):
        if ":" in tag.rpartition("}")[2]:
            raise StreamError("not-well-formed", f"undeclared prefix or no QName in <{tag}>")
        raise StreamError("not-well-formed", f"namespace name is no URI in <{tag}>")
    for key in attribute_names:
        if _bad_name(key):
            if ":" in key.rpartition("}")[2]:
                raise StreamError("not-well-formed",
                                  f"undeclared prefix or no QName in attribute {key}")
            raise StreamError("not-well-formed", f"namespace name is no URI in {key}")


def _bad_name(name: str) -> bool:
    """A colon in the local part of ``{uri}local`` or ``local``, or a brace
    in the URI (XML names themselves have none)."""
    close = name.rfind("}")
    if close < 0:
        return ":" in name or "{" in name
    return ":" in name[close + 1:] or name.count("}") > 1 or name.count("{") > 1


def _lxml_parser() -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("start", "end", "start-ns", "comment", "pi"),
        no_network=True, load_dtd=False, resolve_entities=True,
        huge_tree=False, remove_comments=False, remove_pis=False)


def _opening(head: bytes) -> tuple[bytes, bytes]:
    """The XML declaration, white space and root start tag that begin *head*
    (which lxml has parsed: the start tag is well-formed and complete), and
    the end tag for that root, with the same qualified name."""
    start = _XML_DECL.match(head).end()
    tag = _START_TAG.match(head, start)
    name = _NAME.match(head, start + 1).group()
    return head[:tag.end()], b"</" + name + b">"


_LINE = re.compile(r" line \d+")


def _syntax_error(exc: etree.XMLSyntaxError) -> StreamError:
    message = str(exc)
    if "Excessive depth" in message:
        return StreamError("policy-violation", "elements nested too deeply")
    if "DOCTYPE" in message or "EntityDecl" in message or "ENTITY" in message:
        return StreamError("restricted-xml", "DTDs and entity declarations are not allowed")
    # no line numbers ("tag mismatch: a line 4 and b"): they count from the
    # last revival of a hibernated parser, not from the stream's start
    return StreamError("not-well-formed", _LINE.sub("", message.split(", line")[0]))


# -- output -------------------------------------------------------------------

#: the one XMPP version we speak (RFC 6120 §4.7.5)
OUR_VERSION = (1, 0)
_VERSION = re.compile(r"([0-9]+)\.([0-9]+)")


def response_version(theirs: str | None) -> str | None:
    """The ``version`` for our response header (RFC 6120 §4.7.5): the lower
    of the peer's and ours. A peer that sent none (or no "major.minor")
    stands for 0.0, which we do not speak: None, no version attribute — the
    caller then ends the stream with ``<unsupported-version/>``. Numbers
    compare as integers, leading zeros ignored: "1.10" is above "1.9"."""
    m = _VERSION.fullmatch(theirs or "")
    if m is None:
        return None
    version = min((int(m.group(1)), int(m.group(2))), OUR_VERSION)
    return f"{version[0]}.{version[1]}" if version[0] >= 1 else None



def stream_header(*, content_ns: str = CLIENT_NS, from_: str | None = None,
                  to: str | None = None, id: str | None = None,
                  version: str | None = "1.0", lang: str | None = "en",
                  extra_ns: dict[str, str] | None = None) -> str:
    """The opening ``<stream:stream>`` tag we send (with XML declaration)."""
    parts = [f"<?xml version='1.0'?><stream:stream xmlns='{content_ns}' "
             f"xmlns:stream='{STREAMS_NS}'"]
    for prefix, uri in (extra_ns or {}).items():
        parts.append(f" xmlns:{prefix}='{_escape_attr(uri)}'")
    for name, value in (("from", from_), ("to", to), ("id", id), ("version", version)):
        if value is not None:
            parts.append(f" {name}='{_escape_attr(value)}'")
    if lang:
        parts.append(f" xml:lang='{_escape_attr(lang)}'")
    parts.append(">")
    return "".join(parts)


STREAM_FOOTER = "</stream:stream>"

#: prefixes every stream header we send declares, so elements can use them
STREAM_PREFIXES = {STREAMS_NS: "stream", DIALBACK_NS: "db"}
_BOUND_BY_DEFAULT = {XML_NS: "xml", **STREAM_PREFIXES}    # read only


#: up to this many attributes an element's values come from ``items()``; lxml
#: looks each value up by its name from the element's first attribute, so that
#: is O(n²) per element (5,000 attributes: 50 ms, 36,000: 2.2 s). Beyond it they
#: come from XPath's attribute axis, one walk (about 1 µs per attribute); below
#: ~60 attributes ``items()`` is the faster of the two.
_ITEMS_AT_MOST = 48
_ATTRIBUTE_AXIS = etree.XPath("@*")
#: characters of namespace declarations one stanza may repeat in the writer's
#: usual style (a default namespace declared where it changes, attribute
#: prefixes declared on their element) before it is written with all its
#: namespaces declared once on the top element instead; without this, a long
#: namespace declared once in the input and used by 40,000 sibling elements
#: or attributes came out 40,000 times (244 KB in, 160 MB out)
_MAX_REPEATED_DECLARATIONS = 64 * 1024


class _Repetitive(Exception):
    """The usual style would repeat more than _MAX_REPEATED_DECLARATIONS."""


def serialize(element, *, stream_ns: str = CLIENT_NS,
              rehome_from: str | None = None,
              prefixes: dict[str, str] | None = None) -> str:
    """Write *element* as it should appear inside a stream whose default
    namespace is *stream_ns*.

    Elements in *rehome_from* are written as if they were in *stream_ns*:
    that is how a ``jabber:client`` stanza leaves on a ``jabber:server``
    stream. *prefixes* maps namespaces already bound by the stream header
    (``stream:``, ``db:``) to their prefix.

    Namespaces the stream binds are written with their prefix. Any other
    namespace is declared where it is needed: as the default namespace where
    an element's differs from its parent's, and for an attribute as a prefix
    ``a1``, ``a2``… on its element. Should those declarations repeat more
    than _MAX_REPEATED_DECLARATIONS characters, the element is written again
    with each such namespace given a prefix (``h1``, ``h2``…) declared once on
    *element* (XML Namespaces §6.1: in scope for all it contains); only the
    empty namespace and *stream_ns* stay defaults.

    The cost is linear in the size of the element: each element and
    attribute is visited once, whatever their number (see _ITEMS_AT_MOST),
    and the output is at most a few times the input (escaping makes ``>``
    four bytes).
    """
    bound = _BOUND_BY_DEFAULT if prefixes is None else {XML_NS: "xml", **prefixes}
    out: list[str] = []
    try:
        _write(element, stream_ns, stream_ns, rehome_from, bound, None, out, [0])
    except _Repetitive:
        hoisted: dict[str, str] = {}
        out = []
        _write(element, stream_ns, stream_ns, rehome_from, dict(bound), hoisted, out, [0])
        out.insert(1, "".join(f' xmlns:{prefix}="{_escape_attr(ns)}"'
                              for ns, prefix in hoisted.items()))
    if element.tail:
        del out[-1]                 # text after the element is not part of it
    return "".join(out)


def _hoisted_prefix(ns: str, hoisted: dict[str, str], bound: dict[str, str]) -> str:
    prefix = hoisted.get(ns)
    if prefix is None:
        taken = set(bound.values())
        prefix = f"h{len(hoisted) + 1}"
        while prefix in taken:
            prefix += "_"
        hoisted[ns] = prefix
    return prefix


def _write(el, default_ns, stream_ns, rehome_from, bound, hoisted, out, spent) -> None:
    """The writer proper (see :func:`serialize`): *hoisted* is None in the
    usual style, else the namespaces given a prefix on the top element so
    far; *spent* counts the characters of declarations written so far. A
    plain recursive function: per call of serialize() it builds nothing but
    its output, which is most of what a small stanza costs."""
    tag = el.tag
    if tag.__class__ is not str:          # comments/PIs never leave the server
        if el.tail:
            out.append(_escape_text(el.tail))
        return
    if tag[0] == "{":
        ns, _, local = tag[1:].rpartition("}")     # a local name has no '}'; a URI might
    else:
        ns, local = "", tag
    if ns == rehome_from:
        ns = stream_ns
    if hoisted is not None and ns and ns != stream_ns and ns not in bound:
        bound[ns] = _hoisted_prefix(ns, hoisted, bound)
    if ns in bound:
        name = f"{bound[ns]}:{local}"
        out.append("<" + name)
        child_default = default_ns
    else:
        name = local
        child_default = ns
        if ns != default_ns:
            declaration = f' xmlns="{_escape_attr(ns)}"'
            spent[0] += len(declaration)
            if spent[0] > _MAX_REPEATED_DECLARATIONS:
                raise _Repetitive
            out.append("<" + name + declaration)
        else:
            out.append("<" + name)
    keys = el.keys()                      # linear, unlike items()
    if keys:
        items = el.items() if len(keys) <= _ITEMS_AT_MOST else \
            [(a.attrname, str(a)) for a in _ATTRIBUTE_AXIS(el)]
        extra = 0
        for key, value in items:
            if key[0] == "{":
                ans, _, alocal = key[1:].rpartition("}")
                if ans == XML_NS:
                    key = "xml:" + alocal
                elif hoisted is not None:
                    key = f"{_hoisted_prefix(ans, hoisted, bound)}:{alocal}"
                else:
                    extra += 1
                    declaration = f' xmlns:a{extra}="{_escape_attr(ans)}"'
                    spent[0] += len(declaration)
                    if spent[0] > _MAX_REPEATED_DECLARATIONS:
                        raise _Repetitive
                    out.append(declaration)
                    key = f"a{extra}:{alocal}"
            out.append(f' {key}="{_escape_attr(value)}"')
    text = el.text
    if text is None and not len(el):
        out.append("/>")
    else:
        out.append(">")
        if text:
            out.append(_escape_text(text))
        for child in el:
            _write(child, child_default, stream_ns, rehome_from, bound, hoisted, out, spent)
        out.append(f"</{name}>")
    tail = el.tail
    if tail:
        out.append(_escape_text(tail))


def _escape_text(s: str) -> str:
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if "\r" in s:
        s = s.replace("\r", "&#13;")      # a literal CR would arrive as LF
    return s


def _escape_attr(s: str) -> str:
    s = _escape_text(s)
    if '"' in s:
        s = s.replace('"', "&quot;")
    if "'" in s:
        s = s.replace("'", "&apos;")
    if "\n" in s or "\t" in s:
        s = s.replace("\n", "&#10;").replace("\t", "&#9;")
    return s


def rehome(element, from_ns: str, to_ns: str):
    """Move *element* and its descendants from *from_ns* to *to_ns* in place.

    Used when a ``jabber:server`` stanza arrives over s2s: inside the server
    every stanza lives in ``jabber:client``.
    """
    prefix = f"{{{from_ns}}}"
    for el in element.iter():
        tag = el.tag
        if isinstance(tag, str) and tag.startswith(prefix):
            el.tag = f"{{{to_ns}}}{tag[len(prefix):]}"
    return element
