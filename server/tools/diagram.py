"""``xferd diagram``: the stanza traces of the servers involved → one
self-contained HTML page with a sequence diagram.

A trace is the log of a server run with ``--trace`` (``trace = true``; see
``server/io/trace.py``): each record is ``TIME LEVEL xferd.trace: LABEL DIR``
and the pretty-printed element on the lines below, where LABEL names the
connection (``c2s#3 127.0.0.1:5000 alice@a.example/phone`` once bound,
``s2s-out#1 a.example→b.example``, ``s2s-in#1 127.0.0.1:6000``) and DIR is
``recv`` (from the peer) or ``send`` (to it).

Reading is two passes over each file, both streaming:

1. a survey: which domains each trace serves (the ``to`` of the stream
   headers it received, the local side of its outbound s2s streams) and
   which JID each client connection bound, so a client's first stanzas
   (before RFC 6120 §7 binding names it) land on its lifeline;
2. the stanzas of all traces merged in time order (millisecond stamps of one
   clock: the servers run on one machine, or on synchronised ones). A stanza
   that leaves one traced server on s2s and arrives at another is drawn once,
   as it travels (matched by its canonical XML, RFC 6120 §8 stanzas being
   unchanged by s2s transport); a receive never comes before its send.

Only stanzas (``<message/>``, ``<presence/>``, ``<iq/>``, RFC 6120 §8) are
drawn, not stream negotiation; the moved and transfer modules' log lines are
drawn as notes on their server's lifeline. Everything is bounded: at most
``--max-stanzas`` arrows (the rest is counted and said in a note), each
stanza's XML shown up to :data:`MAX_XML` characters.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import re
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator

from lxml import etree

from ..xmpp.namespaces import CLIENT_NS, SERVER_NS
from .diagram_labels import Labeller

RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d{3}) (\w+)\s+([\w.-]+): (.*)$")
# the label may hold spaces (a resource may); the text after DIR is a stream header
TRACE_HEAD = re.compile(r"^(?P<label>.+?) (?P<dir>recv|send)(?: (?P<text><.*))?$")
HEADER_TO = re.compile(r"""\sto=['"]([^'"]+)['"]""")

STANZAS = {f"{{{ns}}}{name}" for ns in (CLIENT_NS, SERVER_NS)
           for name in ("message", "presence", "iq")}
#: loggers whose lines are drawn as notes (what a server decided, in words)
NOTE_LOGGERS = {"xferd.moved", "xferd.accountxfer"}

DEFAULT_MAX_STANZAS = 1000
MAX_XML = 8000              # characters of one stanza's XML kept for the page
MAX_RECORD_LINES = 2000     # lines of one trace record read (a huge stanza is cut)
MAX_CLIENTS = 5000          # connections remembered by the survey
MAX_PENDING = 5000          # s2s stanzas sent, waiting for their receive in another trace


class DiagramError(Exception):
    """Shown as ``xferd: error: …``."""


@dataclass
class Record:
    time: datetime
    level: str
    logger: str
    message: str
    lines: list[str]


def records(path: Path) -> Iterator[Record]:
    """The log records of *path*, continuation lines attached (at most
    :data:`MAX_RECORD_LINES` each); lines before the first record are skipped."""
    current: Record | None = None
    with open(path, encoding="utf-8", errors="replace") as stream:
        for line in stream:
            line = line.rstrip("\n")
            found = RECORD.match(line)
            if found:
                if current is not None:
                    yield current
                stamp, level, logger, message = found.groups()
                current = Record(datetime.strptime(stamp.replace(",", "."),
                                                   "%Y-%m-%d %H:%M:%S.%f"),
                                 level, logger, message, [])
            elif current is not None and len(current.lines) < MAX_RECORD_LINES:
                current.lines.append(line)
    if current is not None:
        yield current


def connection(label: str) -> tuple[str, str]:
    """(kind, key) of a trace label: ``c2s``/``s2s-in``/``s2s-out`` and the
    label without the JID a c2s connection adds once bound."""
    kind = label.partition("#")[0]
    return kind, " ".join(label.split(" ")[:2])


@dataclass
class Survey:
    """What pass 1 learns about one trace."""
    path: Path
    domains: Counter = field(default_factory=Counter)
    clients: dict[str, str] = field(default_factory=dict)      # connection → bound JID

    @property
    def name(self) -> str:
        return ", ".join(d for d, _ in self.domains.most_common(3)) or self.path.name


def survey(path: Path) -> Survey:
    found = Survey(path)
    for record in records(path):
        if record.logger != "xferd.trace":
            continue
        head = TRACE_HEAD.match(record.message)
        if head is None:
            continue
        label, direction, text = head.group("label", "dir", "text")
        kind, key = connection(label)
        if kind == "s2s-out" and "→" in label:
            found.domains[label.split(" ")[1].partition("→")[0]] += 1
        elif kind in ("c2s", "s2s-in") and direction == "recv" and text \
                and text.startswith("<stream:stream"):
            to = HEADER_TO.search(text)
            if to:
                found.domains[to.group(1)] += 1
        if kind == "c2s" and key != label and len(found.clients) < MAX_CLIENTS:
            found.clients.setdefault(key, label[len(key) + 1:])
    return found


@dataclass
class Arrow:
    """One stanza on its way: from one lifeline to another."""
    n: int
    time: datetime
    source: str
    target: str
    label: str
    xml: str
    hop: str                    # "c2s" or "s2s"
    seen_in: list[str]          # the traces that show it
    connection: str


@dataclass
class Note:
    n: int
    time: datetime
    lifeline: str
    text: str


@dataclass
class Lifeline:
    key: str
    name: str
    kind: str                   # "server", "client", "peer" (a server without a trace)
    home: str | None = None     # a client's server


@dataclass
class Diagram:
    traces: list[Path]
    lifelines: list[Lifeline]
    rows: list                  # Arrow | Note, in time order
    not_drawn: int = 0          # stanzas past the cut
    cut_at: datetime | None = None


def _parse(lines: list[str]):
    try:
        return etree.fromstring("\n".join(lines).encode(),
                                etree.XMLParser(remove_blank_text=True, resolve_entities=False,
                                                no_network=True, huge_tree=False))
    except etree.XMLSyntaxError:
        return None


def _canonical(element) -> bytes:
    """The stanza as both ends of an s2s stream see it: RFC 6120 §8 stanzas
    travel unchanged, but attribute order and whitespace may differ. (Not
    C14N: libxml2's refuses relative namespace names such as ``vcard-temp``.)"""
    digest = hashlib.sha256()
    for event, el in etree.iterwalk(element, events=("start", "end")):
        if event == "end":
            digest.update(b"\x00/" + (el.tail or "").strip().encode())
            continue
        digest.update(b"\x00<" + str(el.tag).encode())
        for name, value in sorted(el.attrib.items()):
            digest.update(b"\x01" + name.encode() + b"=" + value.encode())
        digest.update(b"\x02" + (el.text or "").strip().encode())
    return digest.digest()


def _domain(jid: str | None) -> str | None:
    if not jid:
        return None
    return jid.partition("/")[0].rpartition("@")[2] or None


def _shown(lines: list[str]) -> str:
    xml = "\n".join(lines)
    return xml if len(xml) <= MAX_XML else xml[:MAX_XML] + "\n… (cut: longer than the page shows)"


class _Builder:
    def __init__(self, surveys: list[Survey], max_stanzas: int):
        self.surveys = surveys
        self.max_stanzas = max_stanzas
        self.owner: dict[str, str] = {}                 # domain → server lifeline key
        for i, found in enumerate(surveys):
            for domain in found.domains:
                self.owner.setdefault(domain, f"server{i}")
        self.lifelines: dict[str, Lifeline] = {
            f"server{i}": Lifeline(f"server{i}", found.name, "server")
            for i, found in enumerate(surveys)}
        self.rows: list = []
        self.pending: OrderedDict[bytes, deque[Arrow]] = OrderedDict()
        self.labeller = Labeller()
        self.not_drawn = 0
        self.cut_at: datetime | None = None

    def server_of(self, domain: str | None) -> str:
        if domain in self.owner:
            return self.owner[domain]
        key = f"peer:{domain or '?'}"
        self.lifelines.setdefault(key, Lifeline(key, f"{domain or '?'} (no trace)", "peer"))
        return key

    def client(self, index: int, key: str) -> str:
        jid = self.surveys[index].clients.get(key) or f"client {key.split(' ')[1]}"
        name = f"client:{jid}"
        self.lifelines.setdefault(name, Lifeline(name, jid, "client", f"server{index}"))
        return name

    def full(self, record: Record) -> bool:
        if len(self.rows) < self.max_stanzas:
            return False
        self.not_drawn += 1
        if self.cut_at is None:
            self.cut_at = record.time
        return True

    def note(self, index: int, record: Record) -> None:
        if not self.full(record):
            self.rows.append(Note(len(self.rows), record.time, f"server{index}",
                                  record.message))

    def stanza(self, index: int, record: Record, label: str, direction: str) -> None:
        if not record.lines[0].startswith(("<iq", "<message", "<presence")) or self.full(record):
            return          # not a stanza (negotiation), or past the cut: counted
        element = _parse(record.lines)
        if element is None or element.tag not in STANZAS:
            return
        here = f"server{index}"
        kind, key = connection(label)
        if kind == "c2s":
            client = self.client(index, key)
            source, target = (client, here) if direction == "recv" else (here, client)
            self.arrow(record, element, source, target, "c2s", index, label)
            return
        if direction == "send":
            # s2s-out labels name their route (``s2s-out#1 a.example→b.example``)
            route = label.partition(" ")[2].partition("→")[2].split(" ")[0]
            peer = self.server_of(route or _domain(element.get("to")))
            arrow = self.arrow(record, element, here, peer, "s2s", index, label)
            if peer.startswith("server"):
                self._remember(_canonical(element), arrow)
            return
        peer = self.server_of(_domain(element.get("from")))
        key = _canonical(element)
        sent = self.pending.get(key)
        if sent and sent[0].source == peer and sent[0].target == here:
            arrow = sent.popleft()
            if not sent:
                del self.pending[key]
            arrow.seen_in.append(self.surveys[index].name)
            arrow.connection += f" → {label}"
            return
        self.arrow(record, element, peer, here, "s2s", index, label)

    def _remember(self, key: bytes, arrow: Arrow) -> None:
        self.pending.setdefault(key, deque()).append(arrow)
        self.pending.move_to_end(key)
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)

    def arrow(self, record, element, source, target, hop, index, label) -> Arrow:
        made = Arrow(len(self.rows), record.time, source, target,
                     self.labeller.label(element, to_client=target.startswith("client:")),
                     _shown(record.lines), hop, [self.surveys[index].name], label)
        self.rows.append(made)
        return made


def _events(index: int, path: Path) -> Iterator[tuple]:
    """(heap key, record) for the merge: a stanza received on s2s sorts after
    anything else of the same millisecond, so it never comes before its send."""
    for seq, record in enumerate(records(path)):
        late = record.logger == "xferd.trace" and " s2s-in#" in f" {record.message}"
        yield (record.time, 1 if late else 0, index, seq), record


def moment(text: str):
    """``--since``/``--until``: ``HH:MM:SS[.mmm]`` (any day) or with the date
    in front, as the page's time column and the log write them."""
    for form in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%H:%M:%S.%f", "%H:%M:%S"):
        try:
            parsed = datetime.strptime(text.strip().replace(",", "."), form)
        except ValueError:
            continue
        return parsed if form.startswith("%Y") else parsed.time()
    raise argparse.ArgumentTypeError(
        f"{text!r}: not a time (HH:MM:SS.mmm, or YYYY-MM-DD HH:MM:SS.mmm)")


def _within(when: datetime, since, until) -> int:
    """-1 before the window, 0 in it, 1 after it."""
    def key(bound):
        return when if isinstance(bound, datetime) else when.time()
    if since is not None and key(since) < since:
        return -1
    if until is not None and key(until) > until:
        return 1
    return 0


def build(paths: list[Path], max_stanzas: int = DEFAULT_MAX_STANZAS, *,
          since=None, until=None) -> Diagram:
    for path in paths:
        if not path.is_file():
            raise DiagramError(f"{path}: no such file")
    surveys = [survey(path) for path in paths]
    if not any(found.domains for found in surveys):
        raise DiagramError("no stanza trace in " + ", ".join(map(str, paths)) +
                           ": start the servers with --trace (or trace = true)")
    builder = _Builder(surveys, max_stanzas)
    for (_, _, index, _), record in heapq.merge(*(_events(i, p) for i, p in enumerate(paths))):
        where = _within(record.time, since, until)
        if where:
            if where > 0:
                break
            continue
        if record.logger in NOTE_LOGGERS:
            builder.note(index, record)
            continue
        if record.logger != "xferd.trace" or not record.lines:
            continue
        head = TRACE_HEAD.match(record.message)
        if head and not head.group("text"):
            builder.stanza(index, record, head.group("label"), head.group("dir"))
    return Diagram(paths, _order(builder.lifelines, len(surveys)), builder.rows,
                   builder.not_drawn, builder.cut_at)


def _order(lifelines: dict[str, Lifeline], servers: int) -> list[Lifeline]:
    """The first server's clients on its left, the others' on their right,
    servers without a trace last: s2s arrows stay short, c2s ones too."""
    ordered: list[Lifeline] = []
    for i in range(servers):
        key = f"server{i}"
        clients = [line for line in lifelines.values() if line.home == key]
        ordered += clients + [lifelines[key]] if i == 0 else [lifelines[key]] + clients
    return ordered + [line for line in lifelines.values() if line.kind == "peer"]


# -- the command -----------------------------------------------------------------------

def add_arguments(parser) -> None:
    from .. import config as configuration
    parser.add_argument("traces", nargs="+", metavar="TRACE", type=configuration.caller_path,
                        help="a server's log written with --trace (one per server)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE.html",
                        type=configuration.caller_path)
    parser.add_argument("--max-stanzas", type=int, default=DEFAULT_MAX_STANZAS, metavar="N",
                        help=f"draw at most N stanzas and notes (default {DEFAULT_MAX_STANZAS}); "
                             "the rest is counted in a note")
    parser.add_argument("--since", type=moment, metavar="TIME",
                        help="only from TIME on (HH:MM:SS.mmm as the page shows it, or "
                             "YYYY-MM-DD HH:MM:SS.mmm)")
    parser.add_argument("--until", type=moment, metavar="TIME", help="only up to TIME")
    parser.add_argument("--title", help="the page's title (default: the servers' names)")


def run(args) -> int:
    from .diagram_html import render
    if args.max_stanzas < 1:
        raise DiagramError("--max-stanzas must be at least 1")
    diagram = build([Path(p) for p in args.traces], args.max_stanzas,
                    since=args.since, until=args.until)
    out = Path(args.output)
    out.write_text(render(diagram, args.title), encoding="utf-8")
    arrows = sum(isinstance(row, Arrow) for row in diagram.rows)
    print(f"wrote {out}: {arrows} stanza(s), {len(diagram.lifelines)} lifelines"
          + (f"; {diagram.not_drawn} more not drawn (--max-stanzas)" if diagram.not_drawn else ""))
    return 0

