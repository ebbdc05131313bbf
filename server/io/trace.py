"""Stanza trace: every stanza in and out, labelled and pretty-printed.

Enabled by ``xferd serve --trace`` or ``server.trace = true``. Secrets never
reach the log: SASL payloads and ``jabber:iq:register`` passwords are
replaced by ``[redacted]`` before printing.
"""

from __future__ import annotations

import copy
import logging

from lxml import etree

from ..xmpp.negotiation import REGISTER_NS, SASL_NS
from ..xmpp.stream import rehome as _rehome
from ..xmpp.stream import serialize

log = logging.getLogger("xferd.trace")

_SECRET_TEXT = {f"{{{SASL_NS}}}{name}" for name in ("auth", "response", "challenge", "success")}
_SECRET_TEXT.add(f"{{{REGISTER_NS}}}password")
_DATA_FIELD = "{jabber:x:data}field"      # XEP-0077 §5 forms carry a password field


class Tracer:
    """Writes the trace for one connection (``c2s#7 alice@localhost/phone``)."""

    enabled = False

    def __init__(self, label: str):
        self.label = label

    def element(self, direction: str, element, rehome: tuple[str, str] | None = None) -> None:
        """Log *element*; *rehome* (from, to) shows it in the namespace it
        has on the wire (``jabber:server`` on s2s streams)."""
        if self.enabled and log.isEnabledFor(logging.INFO):
            log.info("%s %s\n%s", self.label, direction, pretty(element, rehome))

    def text(self, direction: str, text: str) -> None:
        if self.enabled and log.isEnabledFor(logging.INFO):
            log.info("%s %s %s", self.label, direction, text)


def _secret(el) -> bool:
    if el.tag in _SECRET_TEXT:
        return True
    parent = el.getparent()
    return (el.tag == "{jabber:x:data}value" and parent is not None
            and parent.tag == _DATA_FIELD and "password" in (parent.get("var") or ""))


def redact(element):
    """A copy of *element* with secrets removed (the original is untouched)."""
    if not any(_secret(el) for el in element.iter()):
        return element
    clean = copy.deepcopy(element)
    for el in clean.iter():
        if el.text and _secret(el):
            el.text = "[redacted]"
    return clean


def pretty(element, rehome: tuple[str, str] | None = None) -> str:
    clean = redact(element)
    if rehome is not None:
        clean = _rehome(copy.deepcopy(clean), *rehome)
    text = serialize(clean, stream_ns="", prefixes={})
    tree = etree.fromstring(text)
    etree.indent(tree, space="  ")
    return etree.tostring(tree, encoding="unicode")
