"""XEP-0313 Message Archive Management, without I/O: which messages are
archived, what a query asks for, the preferences, and the stanzas of the
answers. ``server/modules/mam.py`` does the storage and the routing.

Archived (XEP-0313 §7.1.1, "Business rules": "all of the messages a user
sends or receives of type 'normal' or 'chat' that contain a <body>"; we
follow Prosody's ``should_store``, which keeps more than the body):
``chat`` and ``normal`` messages with something a user would miss —
anything but chat states, hints, XEP-0359 ids, a thread and the carbons
``<private/>`` marker (``hints.has_content``: a body, a subject, an encrypted
payload, receipts and chat markers, as Prosody) — unless they carry a
XEP-0334 ``<no-store/>`` or ``<no-permanent-store/>`` hint (§4.1: "SHOULD NOT
be archived"); a ``<store/>`` hint archives even a message of chat states
only. ``groupchat`` (users are not rooms: we do not archive MUC traffic),
``headline`` (§7.1.1: "not generally suggested") and ``error`` are not.

Queries (§4): the data form (§4.1.1) with ``with``, ``start``, ``end`` and
the extended ``before-id``, ``after-id``, ``ids``; RSM (XEP-0059)
``<max/>``, ``<after/>``, ``<before/>`` (empty: the last page, §4.3.5) and
``<flip-page/>`` (§4.3.6). A malformed form or value is ``<bad-request/>``;
a field we do not know is ``<feature-not-implemented/>`` (§4.1.1: "If a
client includes a form field that the server does not recognise, the server
MUST respond with a 'feature-not-implemented' error"), as is an RSM
``<index/>`` (XEP-0059 §2.5 allows it when deriving the item from an index
is costly: it is an ``OFFSET`` scan). A page is at most ``max_page`` entries:
a larger ``<max/>`` gets ``max_page`` (§4.3.2: the server "MAY simply return
its limited results") and ``complete`` is then false if more matched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import timestamps
from .errors import StanzaError
from .hints import NO_PERMANENT_STORE, NO_STORE, STORE, hints, message_type
from .jid import JID, JIDError
from .namespaces import (CHATSTATES_NS, CLIENT_NS, DATA_NS, DELAY_NS, FORWARD_NS, HINTS_NS,
                         MAM_IMPORT_NS, MAM_NS, RSM_NS, STANZA_ID_NS)
from .stanza import E, sub

_MAM = f"{{{MAM_NS}}}"
_RSM = f"{{{RSM_NS}}}"
_DATA = f"{{{DATA_NS}}}"
#: what travels with a message without being content: chat states, hints,
#: XEP-0359 ids, a thread and the carbons <private/> marker
_NOT_CONTENT_PREFIXES = (f"{{{CHATSTATES_NS}}}", f"{{{HINTS_NS}}}", f"{{{STANZA_ID_NS}}}")
_NOT_CONTENT_TAGS = (f"{{{CLIENT_NS}}}thread", "{urn:xmpp:carbons:2}private")
STANZA_ID = f"{{{STANZA_ID_NS}}}stanza-id"

#: the fields of our query form (§4.1.1), besides FORM_TYPE
FIELDS = {"with": "jid-single", "start": "text-single", "end": "text-single",
          "before-id": "text-single", "after-id": "text-single", "ids": "list-multi"}
#: longest archive id a client may name (ours have 20 characters)
MAX_ID_LENGTH = 256
DEFAULTS = ("always", "never", "roster")


# -- what is archived ---------------------------------------------------------------------

def should_archive(stanza) -> bool:
    """Is this message one to keep in an archive (module docstring)?"""
    if message_type(stanza) not in ("chat", "normal"):
        return False
    given = hints(stanza)
    if NO_STORE in given or NO_PERMANENT_STORE in given:
        return False
    if STORE in given:
        return True
    return any(isinstance(c.tag, str) and c.tag not in _NOT_CONTENT_TAGS
               and not c.tag.startswith(_NOT_CONTENT_PREFIXES) for c in stanza)


def strip_stanza_ids(stanza, by: str) -> None:
    """Remove every XEP-0359 ``<stanza-id/>`` claiming to be by *by* (a bare
    JID): only we may say where the user's archive keeps a message (XEP-0359
    §5: the server MUST remove those of other entities that use its address)."""
    for child in stanza.findall(STANZA_ID):
        if _same_jid(child.get("by"), by):
            stanza.remove(child)


def add_stanza_id(stanza, archive_id: str, by: str) -> None:
    sub(stanza, STANZA_ID, {"id": archive_id, "by": by})


def _same_jid(text: str | None, bare: str) -> bool:
    if text is None:
        return False
    try:
        return str(JID.parse(text)) == bare
    except JIDError:
        return False


# -- preferences (XEP-0441) -------------------------------------------------------------------

@dataclass
class Prefs:
    default: str
    always: list[str] = field(default_factory=list)
    never: list[str] = field(default_factory=list)


def parse_prefs(el, *, max_jids: int) -> Prefs:
    """A ``<prefs/>`` set (XEP-0441 §3): JIDs prepared (a full JID stays full,
    as §4 matches it as is), one listed in both lists is only in ``never``.
    ``<bad-request/>`` for a bad default or JID, ``<not-acceptable/>`` for more
    than *max_jids* JIDs."""
    default = el.get("default")
    if default not in DEFAULTS:
        raise StanzaError("bad-request", "default must be always, never or roster")
    lists: dict[str, list[str]] = {"always": [], "never": []}
    for name, jids in lists.items():
        for container in el.findall(_MAM + name):
            for item in container.findall(_MAM + "jid"):
                try:
                    jids.append(str(JID.parse((item.text or "").strip())))
                except JIDError:
                    raise StanzaError("bad-request", f"not a JID in <{name}/>") from None
                if len(lists["always"]) + len(lists["never"]) > max_jids:
                    raise StanzaError("not-acceptable", f"at most {max_jids} JIDs")
    never = sorted(set(lists["never"]))
    always = sorted(set(lists["always"]) - set(never))
    return Prefs(default, always, never)


def prefs_element(prefs: Prefs):
    el = E(_MAM + "prefs", {"default": prefs.default})
    for name in ("always", "never"):
        container = sub(el, _MAM + name)
        for jid in getattr(prefs, name):
            sub(container, _MAM + "jid", text=jid)
    return el


def prefs_rule(prefs: Prefs, target: JID) -> str:
    """always | never | roster for a message to or from *target* (XEP-0441
    §4: a listed full JID matches as is, a bare one any resource; ``never``
    wins over ``always``)."""
    if not prefs.never and not prefs.always:
        return prefs.default            # most users list nobody
    full, bare = str(target), str(target.bare)
    for candidate in (full, bare):
        if candidate in prefs.never:
            return "never"
        if candidate in prefs.always:
            return "always"
    return prefs.default


# -- queries -------------------------------------------------------------------------------

@dataclass
class Query:
    """A parsed ``<query/>`` (§4)."""
    queryid: str | None = None
    with_jid: JID | None = None
    start: float | None = None
    end: float | None = None
    before_id: str | None = None         # form fields (extended)
    after_id: str | None = None
    ids: list[str] | None = None
    rsm_after: str | None = None         # RSM
    rsm_before: str | None = None        # "" = the last page
    max: int = 0
    flip: bool = False

    @property
    def from_end(self) -> bool:
        """A page counted back from the end (RSM ``<before/>``)."""
        return self.rsm_before is not None


def parse_query(el, *, max_page: int, default_page: int) -> Query:
    """Read a ``<query/>`` (raises :class:`StanzaError`, module docstring).
    The page size is the RSM ``<max/>``, *default_page* without one, never
    more than *max_page*."""
    query = Query(queryid=el.get("queryid"))
    if query.queryid is not None and len(query.queryid) > MAX_ID_LENGTH:
        raise StanzaError("bad-request", "queryid too long")
    forms = el.findall(_DATA + "x")
    if len(forms) > 1:
        raise StanzaError("bad-request", "more than one form")
    if forms:
        _read_form(forms[0], query, max_ids=max_page)
    sets = el.findall(_RSM + "set")
    if len(sets) > 1:
        raise StanzaError("bad-request", "more than one <set/>")
    query.max = min(default_page, max_page)
    if sets:
        _read_rsm(sets[0], query, max_page)
    query.flip = el.find(_MAM + "flip-page") is not None
    return query


def _values(field_el) -> list[str]:
    return [(v.text or "").strip() for v in field_el.findall(_DATA + "value")]


def _single(name: str, values: list[str]) -> str:
    if len(values) != 1 or not values[0]:
        raise StanzaError("bad-request", f"field {name} needs one value")
    return values[0]


def _archive_id(name: str, text: str) -> str:
    if len(text) > MAX_ID_LENGTH:
        raise StanzaError("bad-request", f"{name}: no such id (too long)")
    return text


def _read_form(form, query: Query, *, max_ids: int) -> None:
    if form.get("type", "submit") != "submit":
        raise StanzaError("bad-request", "the form must be of type submit")
    seen: set[str] = set()
    for field_el in form.findall(_DATA + "field"):
        name = field_el.get("var")
        if name in seen:
            raise StanzaError("bad-request", f"field {name} given twice")
        seen.add(name)
        values = _values(field_el)
        if name == "FORM_TYPE":
            if values != [MAM_NS]:
                raise StanzaError("bad-request", f"FORM_TYPE must be {MAM_NS}")
        elif name == "with":
            try:
                query.with_jid = JID.parse(_single(name, values))
            except JIDError:
                raise StanzaError("jid-malformed", "with is not a JID") from None
        elif name in ("start", "end"):
            try:
                setattr(query, name, timestamps.parse(_single(name, values)))
            except ValueError:
                raise StanzaError("bad-request", f"{name} is not a XEP-0082 DateTime") \
                    from None
        elif name in ("before-id", "after-id"):
            setattr(query, name.replace("-", "_"), _archive_id(name, _single(name, values)))
        elif name == "ids":
            if len(values) > max_ids:
                raise StanzaError("policy-violation", f"at most {max_ids} ids per query")
            query.ids = [_archive_id(name, v) for v in values if v]
        else:
            raise StanzaError("feature-not-implemented", f"unknown field {name}")
    if "FORM_TYPE" not in seen:
        raise StanzaError("bad-request", "the form has no FORM_TYPE")


def _read_rsm(rsm, query: Query, max_page: int) -> None:
    if rsm.find(_RSM + "index") is not None:
        raise StanzaError("feature-not-implemented", "paging by index is not supported")
    max_el = rsm.find(_RSM + "max")
    if max_el is not None:
        text = (max_el.text or "").strip()
        if not text.isdigit() or len(text) > 9:
            raise StanzaError("bad-request", "<max/> must be a non-negative integer")
        query.max = min(int(text), max_page)
    after, before = rsm.find(_RSM + "after"), rsm.find(_RSM + "before")
    if after is not None:
        text = (after.text or "").strip()
        if not text:
            raise StanzaError("bad-request", "<after/> needs an id")
        query.rsm_after = _archive_id("after", text)
    if before is not None:
        query.rsm_before = _archive_id("before", (before.text or "").strip())


def query_form():
    """The form of §4.1.2 (``iq get <query/>``): FORM_TYPE and every field we
    support; ``ids`` open to any value (XEP-0122 ``<validate/>``, §4.1.2)."""
    form = E(_DATA + "x", {"type": "form"})
    sub(sub(form, _DATA + "field", {"var": "FORM_TYPE", "type": "hidden"}),
        _DATA + "value", text=MAM_NS)
    for name, kind in FIELDS.items():
        el = sub(form, _DATA + "field", {"var": name, "type": kind})
        if name in ("start", "end"):
            sub(el, "{http://jabber.org/protocol/xdata-validate}validate",
                {"datatype": "xs:dateTime"})
        elif name == "ids":
            validate = sub(el, "{http://jabber.org/protocol/xdata-validate}validate",
                           {"datatype": "xs:string"})
            sub(validate, "{http://jabber.org/protocol/xdata-validate}open")
    return E(_MAM + "query", None, form)


# -- answers -------------------------------------------------------------------------------

def result_element(archive_id: str, stamp: str, message, queryid: str | None = None):
    """``<result id><forwarded><delay stamp/><message/></forwarded></result>``
    (§4.2), with *message* appended as it is: what a query answers and what
    the history import carries."""
    result = E(_MAM + "result", {"queryid": queryid, "id": archive_id})
    forwarded = sub(result, f"{{{FORWARD_NS}}}forwarded")
    sub(forwarded, f"{{{DELAY_NS}}}delay", {"stamp": stamp})
    forwarded.append(message)
    return result


def result_message(*, to: str, from_: str, queryid: str | None, archive_id: str,
                   timestamp: float, message):
    """One result (§4.2): ``<message><result><forwarded><delay/><message/>``."""
    out = E(f"{{{CLIENT_NS}}}message", {"to": to, "from": from_})
    out.append(result_element(archive_id, timestamps.format(timestamp), message, queryid))
    return out


def fin(*, complete: bool, first: str | None, last: str | None, count: int | None):
    """The ``<fin/>`` of the IQ result (§4.3.2): the RSM set of the page."""
    el = E(_MAM + "fin", {"complete": "true"} if complete else None)
    rsm = sub(el, _RSM + "set")
    if first is not None:
        sub(rsm, _RSM + "first", text=first)
        sub(rsm, _RSM + "last", text=last)
    if count is not None:
        sub(rsm, _RSM + "count", text=str(count))
    return el


def metadata(first=None, last=None):
    """§5 ``<metadata/>``: the first and last entries' ids and times, empty
    for an empty archive. *first*/*last* are ``(id, timestamp)``."""
    el = E(_MAM + "metadata")
    if first is not None:
        for name, (archive_id, when) in (("start", first), ("end", last)):
            sub(el, _MAM + name, {"id": archive_id, "timestamp": timestamps.format(when)})
    return el


# -- the history import (urn:xferd:mam-import:0) ---------------------------------------------

#: results one import IQ may carry
MAX_IMPORT = 100
#: how far in the future an imported timestamp may be (the old server's clock may run ahead)
CLOCK_SKEW = 300.0
_IMPORT = f"{{{MAM_IMPORT_NS}}}"
_MESSAGE = f"{{{CLIENT_NS}}}message"


@dataclass
class ImportEntry:
    """One message handed over for the account's archive."""
    source_id: str           # its id in the old archive
    timestamp: float         # when it was sent or received there
    other: JID               # the other party (the account itself for a note to self)
    message: object          # the <message/> element, stanza-ids of the old archive removed


def parse_import(el, *, owner: JID, now: float) -> tuple[str, list[ImportEntry]]:
    """The ``<import source='old@domain'/>`` of one IQ: (source, entries).
    Every message must be from or to *owner* (the account's bare JID), have a
    ``<delay stamp/>`` not later than *now* (+ ``CLOCK_SKEW``) and an id; else
    ``<bad-request/>`` for the whole IQ. The old archive's stanza-ids (by the
    source) and any claiming to be by *owner* are removed: the ids are ours
    to give."""
    try:
        source = JID.parse(el.get("source") or "")
    except JIDError:
        raise StanzaError("bad-request", "source must be the old account's JID") from None
    if source.local is None or source.resource is not None:
        raise StanzaError("bad-request", "source must be a bare account JID")
    if len(el) > MAX_IMPORT:
        raise StanzaError("policy-violation", f"at most {MAX_IMPORT} results per import")
    entries, seen = [], set()
    for result in el:
        entries.append(_import_entry(result, owner, source, now))
        if entries[-1].source_id in seen:
            raise StanzaError("bad-request", f"id {entries[-1].source_id} given twice")
        seen.add(entries[-1].source_id)
    return str(source), entries


def _import_entry(result, owner: JID, source: JID, now: float) -> ImportEntry:
    if result.tag != _MAM + "result":
        raise StanzaError("bad-request", "an import holds <result/> elements only")
    source_id = result.get("id") or ""
    if not source_id or len(source_id) > MAX_ID_LENGTH:
        raise StanzaError("bad-request", "each <result/> needs its old archive id")
    forwarded = result.find(f"{{{FORWARD_NS}}}forwarded")
    delay = forwarded.find(f"{{{DELAY_NS}}}delay") if forwarded is not None else None
    message = forwarded.find(_MESSAGE) if forwarded is not None else None
    if delay is None or message is None:
        raise StanzaError("bad-request", f"{source_id}: needs <forwarded/> with <delay/> "
                                         "and a jabber:client <message/>")
    try:
        when = timestamps.parse(delay.get("stamp") or "")
    except ValueError:
        raise StanzaError("bad-request", f"{source_id}: bad delay stamp") from None
    if when > now + CLOCK_SKEW:
        raise StanzaError("bad-request", f"{source_id}: its time is in the future")
    try:
        sender = JID.parse(message.get("from")) if message.get("from") else None
        recipient = JID.parse(message.get("to")) if message.get("to") else None
    except JIDError:
        raise StanzaError("bad-request", f"{source_id}: malformed from or to") from None
    if sender is not None and sender.bare == owner:
        other = recipient or owner
    elif recipient is not None and recipient.bare == owner:
        other = sender or JID(None, owner.domain)
    else:
        raise StanzaError("bad-request", f"{source_id}: neither from nor to is {owner}")
    for by in (str(source), str(owner)):
        strip_stanza_ids(message, by)
    return ImportEntry(source_id, when, other, message)
