"""Hypothesis strategies: XMPP-ish streams from a small grammar, mutations, chunkings.

:func:`streams` draws a :class:`GeneratedStream`: a model of the stream (header
attributes and stanza trees) together with bytes that spell it in one of many
equivalent ways — either quote, white space inside tags, prefixes or default
namespace declarations, redundant re-declarations, entity and character
references, CDATA sections, ``<x/>`` or ``<x></x>``. Feeding the bytes must
give back exactly the model, however the bytes are chunked.

:func:`mutated` then damages such bytes the way a hostile or broken peer
would: flipped bytes, inserted markup fragments (``<``, ``&``, ``]]>``,
``<!DOCTYPE``, ``<?xml``…), NUL and invalid UTF-8, truncation, duplicated or
swapped ranges, huge attribute values, deep or unclosed nesting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import strategies as st

from server.xmpp.errors import STREAMS_NS
from server.xmpp.stream import CLIENT_NS, DIALBACK_NS, SERVER_NS, XML_NS

EXTENSION_NS = ["urn:xmpp:ping", "http://jabber.org/protocol/caps", "jabber:x:data",
                "urn:x:fuzz", "urn:x:fuzz:2", "http://www.w3.org/1999/xhtml",
                "", STREAMS_NS, DIALBACK_NS, CLIENT_NS]
STANZA_NAMES = ["message", "presence", "iq"]
CHILD_NAMES = ["body", "query", "x", "item", "c", "show", "status", "error", "features",
               "result", "bind", "a", "b", "_u", "é", "名前", "x-y.z"]
ATTRIBUTE_NAMES = ["to", "from", "id", "type", "node", "ver", "var", "a", "b", "é"]
PREFIXES = ["p", "q", "stream", "db", "x1", "foo", "ns0", "jc"]
STREAM_PREFIXES = ["stream", "s", "str"]
DECLARATIONS = [b"", b"<?xml version='1.0'?>", b'<?xml version="1.0" encoding="UTF-8"?>',
                b"<?xml version='1.0' encoding='utf-8' standalone='yes'?>",
                b"<?xml version='1.0'?>\n"]
SPACE = [b" ", b"  ", b"\n", b"\t", b"\r\n"]
KEEPALIVES = [b"", b"", b"", b" ", b"\n", b"\r\n", b"\t \n"]

#: fragments a broken or hostile peer puts where they do not belong
FRAGMENTS = [
    b"<", b">", b"&", b"&amp", b"&lol;", b"&#0;", b"&#xD800;", b"&#x110000;", b"&#65",
    b"]]>", b"<![CDATA[", b"<![CDATA[&]]>", b"<!DOCTYPE x [<!ENTITY a 'b'>]>",
    b"<!DOCTYPE stream:stream SYSTEM 'http://example.com/x.dtd'>", b"<!ENTITY a 'b'>",
    b"<?xml version='1.0'?>", b"<?xml version='1.0' encoding='ISO-8859-1'?>",
    b"<?xml version='1.0' encoding='UTF-16'?>", b"<?pi x?>", b"<!-- c -->", b"<!--",
    b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xef\xbb\xbf",
    b"\r", b"\r\n", b"'", b'"', b"=", b"/>", b"</a>", b"<a>", b"</message>", b"</stream:stream>",
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    b" xmlns:foo='urn:foo'", b"foo:", b" xmlns=''", b" xmlns:xml='urn:x'", b" a='1' a='2'",
    b"<foo:bar/>", b"<message/>", b"x", b" ", b"\t", b"\x0b", b"\x1f",
]


@dataclass
class Node:
    """A model element: namespace, local name, attributes, mixed content."""
    ns: str
    local: str
    attrs: dict = field(default_factory=dict)      # (ns, local) → value
    content: list = field(default_factory=list)    # str and Node, in order

    def canonical(self):
        """Same picture as oracle.canonical() gives of the parsed element."""
        tag = f"{{{self.ns}}}{self.local}" if self.ns else self.local
        attrs = tuple(sorted(((f"{{{ans}}}{al}" if ans else al), v)
                             for (ans, al), v in self.attrs.items()))
        text, children = "", []
        for item in self.content:
            if isinstance(item, str):
                if children:
                    children[-1] = (children[-1][0], children[-1][1] + item)
                else:
                    text += item
            else:
                children.append((item.canonical(), ""))
        return (tag, attrs, text, tuple(children))


@dataclass
class GeneratedStream:
    data: bytes
    content_ns: str
    header_attrs: dict
    stanzas: list
    closed: bool


# -- characters ------------------------------------------------------------------

def _is_xml_char(c: str) -> bool:
    o = ord(c)
    return (o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD
            or 0x10000 <= o <= 0x10FFFF)


INTERESTING = ["<", "&", ">", '"', "'", "]", "]]", "\r", "\n", "\r\n", "\t", " ", "é",
               "\U0001F600", "\uFFFD", "\u2028", "\x85", ";", "#", "&amp;", "]]>", "--", "?>",
               "hello", "wherefore art thou", "a b", "日本語", "\u0300", "x" * 40]
#: XML 1.0 characters: no surrogates, no C0 controls but white space, no U+FFFE/U+FFFF
_xml_char = st.characters(exclude_categories=("Cs", "Cc"), include_characters="\t\n\r\x85",
                          exclude_characters="\ufffe\uffff")
#: text is random characters around one interesting piece (or none): hypothesis'
#: own text strategy is fast, one draw per character through one_of() was not
xml_text = st.tuples(st.text(_xml_char, max_size=10), st.sampled_from([""] * 4 + INTERESTING),
                     st.text(_xml_char, max_size=10)).map("".join)


def _char_ref(rnd: random.Random, c: str) -> bytes:
    return rnd.choice([b"&#%d;", b"&#x%x;", b"&#x%X;"]) % ord(c)


def _escape(rnd: random.Random, s: str, quote: bytes | None) -> bytes:
    """*s* as character data (quote None) or inside an attribute quoted by *quote*."""
    out = bytearray()
    for c in s:
        raw = c.encode()
        if c == "<":
            out += rnd.choice([b"&lt;", b"&#60;", b"&#x3c;"])
        elif c == "&":
            out += rnd.choice([b"&amp;", b"&#38;", b"&#x26;"])
        elif c == ">":
            # literal '>' is fine except where it would complete ']]>'
            literal = not out.endswith(b"]]") and rnd.random() < 0.5
            out += b">" if literal else b"&gt;"
        elif quote is not None and raw == quote:
            out += b"&quot;" if c == '"' else b"&apos;"
        elif c == "\r" or (quote is not None and c in "\t\n"):
            out += _char_ref(rnd, c)        # would be normalised if written literally
        elif rnd.random() < 0.1:
            out += _char_ref(rnd, c)
        else:
            out += raw
    return bytes(out)


def _text(rnd: random.Random, s: str) -> bytes:
    """Character data, sometimes (partly) as a CDATA section."""
    if s and "]]>" not in s and "\r" not in s and rnd.random() < 0.25:
        cut = rnd.randint(0, len(s))
        return _escape(rnd, s[:cut], None) + b"<![CDATA[" + s[cut:].encode() + b"]]>"
    return _escape(rnd, s, None)


# -- the grammar -------------------------------------------------------------------

@st.composite
def nodes(draw, ns: str, local: str, depth: int) -> Node:
    node = Node(ns, local)
    for _ in range(draw(st.integers(0, 3))):
        ans = draw(st.sampled_from(["", "", "", XML_NS, "urn:x:attr", DIALBACK_NS]))
        alocal = "lang" if ans == XML_NS else draw(st.sampled_from(ATTRIBUTE_NAMES))
        node.attrs[(ans, alocal)] = draw(xml_text)
    if depth > 0:
        for _ in range(draw(st.integers(0, 3 if depth > 2 else 2))):
            if draw(st.booleans()):
                node.content.append(draw(xml_text))
            else:
                child_ns = draw(st.sampled_from([ns] * 3 + EXTENSION_NS))
                node.content.append(draw(nodes(child_ns, draw(st.sampled_from(CHILD_NAMES)),
                                               depth - 1)))
    return node


@st.composite
def stanzas(draw, content_ns: str) -> Node:
    if draw(st.integers(0, 5)):
        ns, local = content_ns, draw(st.sampled_from(STANZA_NAMES))
    else:
        ns = draw(st.sampled_from(EXTENSION_NS))
        local = draw(st.sampled_from(CHILD_NAMES))
    return draw(nodes(ns, local, draw(st.integers(0, 4))))


def _quoted(rnd: random.Random, value: str) -> bytes:
    q = rnd.choice([b"'", b'"'])
    return q + _escape(rnd, value, q) + q


def _space(rnd: random.Random) -> bytes:
    return rnd.choice(SPACE)


def render(rnd: random.Random, node: Node, scope: dict, default: str) -> bytes:
    """Spell *node* inside a context with prefixes *scope* and *default* namespace."""
    decls: dict[str, str] = {}             # prefix ('' = default) → uri, on this element
    used: set[str] = set()                 # prefixes this element's names rely on
    scope = dict(scope)

    def bind(uri: str) -> str:
        """A prefix for *uri*: one in scope, or a new declaration on this element."""
        known = sorted(p for p, u in scope.items() if p and u == uri)
        if known and rnd.random() < 0.5:
            p = rnd.choice(known)
        else:
            p = rnd.choice([p for p in PREFIXES if p not in decls and p not in used])
            decls[p] = scope[p] = uri
        used.add(p)
        return p

    # the element's own name
    if node.ns == default and rnd.random() < 0.75:
        name = node.local
        child_default = default
    elif node.ns == "" or rnd.random() < 0.5:
        decls[""] = child_default = node.ns
        name = node.local
    else:
        name = f"{bind(node.ns)}:{node.local}"
        child_default = default
    if rnd.random() < 0.125 and "" not in decls:
        decls[""] = child_default          # a redundant re-declaration
    attrs = []
    for (ans, alocal), value in node.attrs.items():
        if ans == "":
            aname = alocal
        elif ans == XML_NS:
            aname = "xml:" + alocal
        else:
            aname = f"{bind(ans)}:{alocal}"
        attrs.append((aname, value))
    items = [(b"xmlns" if p == "" else b"xmlns:" + p.encode(), _quoted(rnd, u))
             for p, u in decls.items()]
    items += [(a.encode(), _quoted(rnd, v)) for a, v in attrs]
    rnd.shuffle(items)
    out = bytearray(b"<" + name.encode())
    for key, value in items:
        eq = rnd.choice([b"=", b" = ", b"\n=\t"])
        out += _space(rnd) + key + eq + value
    if rnd.random() < 0.2:
        out += _space(rnd)
    if not node.content and rnd.random() < 0.5:
        return bytes(out + b"/>")
    out += b">"
    for item in node.content:
        if isinstance(item, str):
            out += _text(rnd, item)
        else:
            out += render(rnd, item, scope, child_default)
    out += b"</" + name.encode()
    if rnd.random() < 0.2:
        out += _space(rnd)
    return bytes(out + b">")


@st.composite
def streams(draw, content_ns: str | None = None) -> GeneratedStream:
    content_ns = content_ns or draw(st.sampled_from([CLIENT_NS, SERVER_NS]))
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    sp = draw(st.sampled_from(STREAM_PREFIXES))
    header_attrs = {}
    items = [(b"xmlns", content_ns), (b"xmlns:" + sp.encode(), STREAMS_NS)]
    prefixes = {"": content_ns, sp: STREAMS_NS}
    if draw(st.booleans()):
        items.append((b"xmlns:db", DIALBACK_NS))
        prefixes["db"] = DIALBACK_NS
    for key in ("to", "from", "id", "version", "lang"):
        if draw(st.booleans()):
            value = draw(st.sampled_from(["example.com", "1.0", "en", "o'brien", "a&b", ""])
                         | xml_text)
            header_attrs[key] = value
            items.append((b"xml:lang" if key == "lang" else key.encode(), value))
    rnd.shuffle(items)
    head = bytearray(draw(st.sampled_from(DECLARATIONS)) + b"<" + sp.encode() + b":stream")
    for key, value in items:
        head += _space(rnd) + key + b"=" + _quoted(rnd, value)
    head += b">"
    scope = {p: u for p, u in prefixes.items() if p}
    body = bytearray()
    model = []
    for _ in range(draw(st.integers(0, 6))):
        body += draw(st.sampled_from(KEEPALIVES))
        node = draw(stanzas(content_ns))
        body += render(rnd, node, scope, content_ns)
        model.append(node)
    body += draw(st.sampled_from(KEEPALIVES))
    closed = draw(st.integers(0, 3)) > 0
    if closed:
        body += b"</" + sp.encode() + b":stream" + draw(st.sampled_from([b"", b" ", b"\n"])) + b">"
    return GeneratedStream(bytes(head + body), content_ns, header_attrs, model, closed)


# -- damage ------------------------------------------------------------------------

@st.composite
def mutation(draw, data: bytes) -> bytes:
    n = len(data)
    pos = draw(st.integers(0, n))
    op = draw(st.sampled_from(["flip", "insert", "insert", "insert", "delete", "truncate",
                               "duplicate", "swap", "random", "huge-attr", "deep", "unclose",
                               "huge-text", "encode"]))
    if op == "flip" and n:
        i = min(pos, n - 1)
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    if op == "insert":
        return data[:pos] + draw(st.sampled_from(FRAGMENTS)) + data[pos:]
    if op == "delete":
        end = draw(st.integers(pos, min(n, pos + 40)))
        return data[:pos] + data[end:]
    if op == "truncate":
        return data[:pos]
    if op == "duplicate":
        end = draw(st.integers(pos, min(n, pos + 200)))
        times = draw(st.integers(1, 50))
        return data[:end] + data[pos:end] * times + data[end:]
    if op == "swap" and n:
        a, b = sorted((pos, draw(st.integers(0, n))))
        c = draw(st.integers(b, n))
        return data[:a] + data[b:c] + data[a:b] + data[c:]
    if op == "random":
        return data[:pos] + draw(st.binary(min_size=1, max_size=32)) + data[pos:]
    if op == "huge-attr":
        size = draw(st.sampled_from([100, 1000, 5000, 70_000, 300_000]))
        filler = draw(st.sampled_from([b"a", b" ", b"&amp;", b"\xc3\xa9"]))
        return data[:pos] + b"<message id='" + filler * size + b"'/>" + data[pos:]
    if op == "huge-text":
        size = draw(st.sampled_from([100, 1000, 5000, 70_000, 300_000]))
        filler = draw(st.sampled_from([b"a", b" ", b"\n", b"&amp;", b"<![CDATA[x]]>"]))
        return data[:pos] + filler * size + data[pos:]
    if op == "deep":
        levels = draw(st.sampled_from([5, 31, 33, 100, 300, 2000]))
        closed = draw(st.booleans())
        return data[:pos] + b"<a>" * levels + (b"</a>" * levels if closed else b"") + data[pos:]
    if op == "encode":
        # the same stream in another encoding, declared or not
        codec = draw(st.sampled_from(["utf-16-le", "utf-16-be", "utf-16", "utf-32-le",
                                      "latin-1", "utf-8"]))
        text = data.decode("utf-8", "replace")
        if draw(st.booleans()):
            text = f"<?xml version='1.0' encoding='{codec}'?>" + text.split("?>", 1)[-1]
        return text.encode(codec, "replace")
    if op == "unclose":
        i = data.find(b"</", pos)
        if i >= 0:
            j = data.find(b">", i)
            if j >= 0:
                return data[:i] + data[j + 1:]
    return data[:pos] + b"<" + data[pos:]


@st.composite
def mutated(draw, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 4))):
        data = draw(mutation(data))
    return data


#: how the bytes arrive: in one piece, a byte at a time, or in runs of sizes
chunkings = st.one_of(
    st.none(),
    st.just([1]),
    st.lists(st.integers(1, 16), min_size=1, max_size=6),
    st.lists(st.integers(1, 10_000), min_size=1, max_size=4),
    st.lists(st.sampled_from([8191, 8192, 8193, 65536]), min_size=1, max_size=2),
)
