"""Tiny helpers over lxml elements: build stanzas, replies and errors.

Inside the server every stanza is in the ``jabber:client`` namespace; the
serialiser in ``stream.py`` re-homes it for s2s streams.
"""

from __future__ import annotations

import itertools
import secrets

from lxml import etree

from .errors import StanzaError
from . import timestamps
from .namespaces import (CLIENT_NS, DELAY_NS, STANZA_ERRORS_NS, STREAM_ERRORS_NS, STREAMS_NS,
                         XML_NS)

_C = f"{{{CLIENT_NS}}}"
IQ = _C + "iq"
MESSAGE = _C + "message"
PRESENCE = _C + "presence"
STANZA_TAGS = frozenset({IQ, MESSAGE, PRESENCE})

_ids = itertools.count(1)
_id_prefix = secrets.token_hex(4)


def new_id() -> str:
    """A stanza id unique within this process."""
    return f"{_id_prefix}-{next(_ids)}"


def E(tag: str, attrs: dict | None = None, *children, text: str | None = None):
    """Build an element: ``E('{ns}name', {'a': '1'}, child, text='x')``."""
    el = etree.Element(tag, {k: v for k, v in (attrs or {}).items() if v is not None})
    if text is not None:
        el.text = text
    for child in children:
        if child is not None:
            el.append(child)
    return el


def sub(parent, tag: str, attrs: dict | None = None, text: str | None = None):
    """Append a child element to *parent* and return it."""
    el = etree.SubElement(parent, tag, {k: v for k, v in (attrs or {}).items() if v is not None})
    if text is not None:
        el.text = text
    return el


def local_name(el) -> str:
    return etree.QName(el).localname


def namespace(el) -> str | None:
    return etree.QName(el).namespace


def iq(type: str, *, to: str | None = None, from_: str | None = None,
       id: str | None = None, payload=None):
    """An ``<iq/>`` of *type* with an optional single payload element."""
    el = E(IQ, {"type": type, "to": to, "from": from_, "id": id or new_id()})
    if payload is not None:
        el.append(payload)
    return el


def result(request, payload=None):
    """The ``type='result'`` answer to an IQ *request* (addresses swapped)."""
    el = E(IQ, {"type": "result", "id": request.get("id"),
                "to": request.get("from"), "from": request.get("to")})
    if payload is not None:
        el.append(payload)
    return el


def error_element(err: StanzaError):
    """The ``<error/>`` child for *err* (RFC 6120 §8.3.2)."""
    el = E(_C + "error", {"type": err.type})
    cond = sub(el, f"{{{STANZA_ERRORS_NS}}}{err.condition}")
    if err.value:
        cond.text = err.value
    if err.text:
        sub(el, f"{{{STANZA_ERRORS_NS}}}text", {f"{{{XML_NS}}}lang": "en"}, err.text)
    if err.extra is not None:
        el.append(err.extra)
    return el


def error_reply(stanza, err: StanzaError):
    """Bounce *stanza* to its sender with *err* (RFC 6120 §8.3.1).

    The reply keeps the stanza kind and id and swaps the addresses. We do not
    echo the original payload, except for messages, where the body helps the
    sender see what failed.
    """
    el = E(stanza.tag, {"type": "error", "id": stanza.get("id"),
                        "to": stanza.get("from"), "from": stanza.get("to")})
    if stanza.tag == MESSAGE:
        for child in stanza:
            if child.tag in (_C + "body", _C + "subject", _C + "thread"):
                el.append(_copy(child))
    el.append(error_element(err))
    return el


def _copy(el):
    clone = etree.fromstring(etree.tostring(el))
    clone.tail = None
    return clone


_STORED = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          huge_tree=False)


def to_text(el) -> str:
    """XML text for storage (self-contained: declares its own namespace)."""
    from .stream import serialize
    return serialize(el, stream_ns="", prefixes={})


def from_text(text: str):
    """Parse XML text written by :func:`to_text` (no DTD, no entities)."""
    return etree.fromstring(text.encode(), _STORED)


def stamp_delay(stanza, domain: str, when: float) -> None:
    """Add a XEP-0203 ``<delay from='domain' stamp='when'/>`` unless *stanza*
    carries one of *domain*'s already: the first stamp a server gave is the
    older, truer time (a message stored offline, or re-sent by stream
    management, keeps the time it was first stored or sent). A client cannot
    put one there: c2s removes a delay that claims to be the server's."""
    tag = f"{{{DELAY_NS}}}delay"
    if not any(d.get("from") == domain for d in stanza.findall(tag)):
        sub(stanza, tag, {"from": domain, "stamp": timestamps.format(when)})


def stream_error(condition: str, text: str | None = None):
    """A ``<stream:error/>`` element (RFC 6120 §4.9.2)."""
    el = E(f"{{{STREAMS_NS}}}error")
    sub(el, f"{{{STREAM_ERRORS_NS}}}{condition}")
    if text:
        sub(el, f"{{{STREAM_ERRORS_NS}}}text", {f"{{{XML_NS}}}lang": "en"}, text)
    return el


def find_error_condition(stanza) -> str | None:
    """The defined condition of an error stanza, or None."""
    err = stanza.find(_C + "error")
    if err is None:
        return None
    for child in err:
        if namespace(child) == STANZA_ERRORS_NS and local_name(child) != "text":
            return local_name(child)
    return None

