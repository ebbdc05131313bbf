"""Server Dialback (XEP-0220) without I/O: keys and the four elements.

Roles (§1.3): the *originating* server opens a stream to the *receiving*
server and claims a domain with ``<db:result>KEY``; the receiving server
asks the domain's *authoritative* server — over its own stream to it —
whether KEY is right with ``<db:verify>``; answers carry ``type='valid'`` or
``'invalid'`` (or ``'error'``, §2.5, not fatal to the stream).

Keys follow XEP-0185: HMAC-SHA256, keyed with the hex SHA-256 of a secret
only we know, over "Receiving Originating StreamID"; so the authoritative
server can check a key without remembering it.
"""

from __future__ import annotations

import hashlib
import hmac

from lxml import etree

from server.xmpp.errors import STANZA_ERRORS_NS
from server.xmpp.stanza import E, sub

NS = "jabber:server:dialback"
FEATURE_NS = "urn:xmpp:features:dialback"
RESULT = f"{{{NS}}}result"
VERIFY = f"{{{NS}}}verify"


def key(secret: str, receiving: str, originating: str, stream_id: str) -> str:
    """XEP-0185 §3: the dialback key for one stream."""
    hashed = hashlib.sha256(secret.encode()).hexdigest().encode()
    message = f"{receiving} {originating} {stream_id}".encode()
    return hmac.new(hashed, message, hashlib.sha256).hexdigest()


def check(secret: str, receiving: str, originating: str, stream_id: str, candidate: str) -> bool:
    return hmac.compare_digest(key(secret, receiving, originating, stream_id),
                               (candidate or "").strip())


def feature():
    """``<dialback/>`` stream feature with ``<errors/>`` (§2.4.2)."""
    el = E(f"{{{FEATURE_NS}}}dialback")
    sub(el, f"{{{FEATURE_NS}}}errors")
    return el


def result_request(originating: str, receiving: str, dialback_key: str):
    return E(RESULT, {"from": originating, "to": receiving}, text=dialback_key)


def result_answer(receiving: str, originating: str, kind: str, condition: str | None = None):
    el = E(RESULT, {"from": receiving, "to": originating, "type": kind})
    if condition:
        _error(el, condition)
    return el


def verify_request(receiving: str, originating: str, stream_id: str, dialback_key: str):
    return E(VERIFY, {"from": receiving, "to": originating, "id": stream_id}, text=dialback_key)


def verify_answer(authoritative: str, receiving: str, stream_id: str, kind: str,
                  condition: str | None = None):
    el = E(VERIFY, {"from": authoritative, "to": receiving, "id": stream_id, "type": kind})
    if condition:
        _error(el, condition)
    return el


def _error(parent, condition: str) -> None:
    types = {"item-not-found": "cancel", "remote-server-not-found": "cancel",
             "remote-server-timeout": "wait", "internal-server-error": "cancel"}
    err = sub(parent, "{jabber:server}error", {"type": types.get(condition, "cancel")})
    sub(err, f"{{{STANZA_ERRORS_NS}}}{condition}")


def error_condition(el) -> str | None:
    """The condition of a ``type='error'`` dialback answer."""
    for child in el.iter():
        if isinstance(child.tag, str) and etree.QName(child).namespace == STANZA_ERRORS_NS:
            return etree.QName(child).localname
    return None
