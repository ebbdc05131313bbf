"""Short labels for the arrows of ``xferd diagram``: what a stanza is for,
in a few words ("subscribe + moved", "PEP get moved statement", "roster
push"), so a reader can follow a migration without opening every stanza.

The words follow the specifications' own names: RFC 6121 §2.1.6 (roster
push), §3 (subscription states), XEP-0060 §6.5 / §7.1 (items, publish),
XEP-0283 (the moved statement and ``<moved/>`` in a subscription request),
and XEP-0015's steps as ``server/xmpp/transfer.py`` names them.
"""

from __future__ import annotations

from collections import OrderedDict

from ..xmpp.namespaces import (ACCOUNTXFER_NS, BIND_NS, BLOCKING_NS, DISCO_INFO_NS,
                               DISCO_ITEMS_NS, LAST_NS, MOVED_NS, PING_NS, PRIVATE_NS,
                               PUBSUB_EVENT_NS, PUBSUB_NS, PUBSUB_OWNER_NS, REGISTER_NS,
                               ROSTER_NS, SESSION_NS, STANZA_ERRORS_NS, VCARD_NS, VERSION_NS)

#: payload namespace → the words for it
TOPICS = {
    ROSTER_NS: "roster", VCARD_NS: "vCard", PRIVATE_NS: "private XML",
    DISCO_INFO_NS: "disco#info", DISCO_ITEMS_NS: "disco#items", PING_NS: "ping",
    VERSION_NS: "version", LAST_NS: "last activity", BIND_NS: "bind", SESSION_NS: "session",
    REGISTER_NS: "register", BLOCKING_NS: "block list", ACCOUNTXFER_NS: "transfer",
}

#: PEP nodes by the name people know them by
NODES = {
    MOVED_NS: "moved statement",
    "urn:xmpp:bookmarks:1": "bookmarks", "storage:bookmarks": "bookmarks",
    "urn:xmpp:avatar:metadata": "avatar metadata", "urn:xmpp:avatar:data": "avatar",
    "http://jabber.org/protocol/nick": "nick", "urn:xmpp:omemo:2:devices": "OMEMO devices",
    "eu.siacs.conversations.axolotl.devicelist": "OMEMO devices",
}

#: iq ids remembered to name their results; a trace may hold millions of iqs
MAX_REMEMBERED = 4096


def local(tag) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def namespace(tag) -> str:
    return tag[1:].partition("}")[0] if isinstance(tag, str) and tag.startswith("{") else ""


def node_name(node: str | None) -> str:
    if not node:
        return "node"
    return NODES.get(node, node.rstrip("/").rpartition("/")[2].rpartition(":")[2] or node)


class Labeller:
    """Labels stanzas in the order they travel. An iq result is named after
    its request (RFC 6120 §8.2.3: a result carries the request's id), so the
    ids of the last :data:`MAX_REMEMBERED` requests are kept."""

    def __init__(self):
        self._requests: OrderedDict[tuple, str] = OrderedDict()

    def label(self, element, *, to_client: bool = False) -> str:
        kind = local(element.tag)
        if kind == "presence":
            return presence_label(element)
        if kind == "message":
            return message_label(element)
        if kind == "iq":
            return self._iq(element, to_client)
        return kind

    def _iq(self, iq, to_client: bool) -> str:
        kind = iq.get("type") or "get"
        if kind in ("get", "set"):
            topic, text = request_label(iq, to_client)
            self._requests[iq.get("id")] = topic
            self._requests.move_to_end(iq.get("id"))
            while len(self._requests) > MAX_REMEMBERED:
                self._requests.popitem(last=False)
            return text
        # the same result may travel several hops (c2s, s2s, c2s): not popped
        topic = self._requests.get(iq.get("id")) or \
            (request_label(iq[0], to_client)[0] if len(iq) else "")
        if kind == "error":
            return " ".join(filter(None, (topic, "error:", error_condition(iq))))
        return " ".join(filter(None, (topic, "result", result_detail(iq))))


def presence_label(presence) -> str:
    kind = presence.get("type")
    if kind is None:
        return "presence"
    if kind == "unavailable":
        return "presence unavailable"
    if kind == "subscribe" and presence.find(f"{{{MOVED_NS}}}moved") is not None:
        return "subscribe + moved"
    if kind == "error":
        return "presence error: " + error_condition(presence)
    return kind


def message_label(message) -> str:
    if message.get("type") == "error":
        return "message error: " + error_condition(message)
    for child in message:
        if child.tag == f"{{{PUBSUB_EVENT_NS}}}event":
            items = child.find(f"{{{PUBSUB_EVENT_NS}}}items")
            return "PEP notification " + node_name(items.get("node") if items is not None
                                                   else None)
    return "message"


def request_label(iq, to_client: bool) -> tuple[str, str]:
    """(topic, label) of an iq get/set (or of a payload, for a result)."""
    kind = iq.get("type") or "get"
    payload = iq[0] if local(iq.tag) == "iq" and len(iq) else iq
    ns = namespace(payload.tag)
    if ns == PUBSUB_NS or ns == PUBSUB_OWNER_NS:
        return _pubsub(payload, kind)
    if ns == ROSTER_NS:
        if kind == "set" and to_client:
            return "roster", "roster push"
        return "roster", f"roster {kind}"
    if ns == ACCOUNTXFER_NS:
        step = transfer_step(payload, kind)
        return step, step
    topic = TOPICS.get(ns, local(payload.tag) or "iq")
    return topic, f"{topic} {kind}" if topic not in ("ping", "bind", "session") else topic


def _pubsub(pubsub, kind: str) -> tuple[str, str]:
    for verb, words in (("items", "get"), ("publish", "publish"), ("retract", "retract"),
                        ("subscribe", "subscribe"), ("delete", "delete"),
                        ("configure", "configure"), ("create", "create")):
        found = next((c for c in pubsub if local(c.tag) == verb), None)
        if found is not None:
            topic = node_name(found.get("node"))
            return topic, f"PEP {words} {topic}"
    return "PEP", f"PEP {kind}"


def transfer_step(query, kind: str) -> str:
    """XEP-0015's steps (``server/xmpp/transfer.py`` names them A–H)."""
    names = {local(c.tag) for c in query}
    if kind == "get":
        return "transfer check" if "oldaccount" in names else "transfer status"
    if "rosteritem" in names:
        return "transfer notice"
    if "item" in names:
        return "transfer roster hand-over"
    if "allowed" in names or "denied" in names:
        return "transfer pre-authorisation"
    if names == {"newaccount"}:
        return "transfer: move me"
    if {"oldaccount", "newaccount"} <= names:
        return "transfer: may I?"
    return "transfer"


def result_detail(iq) -> str:
    """What a result says, when a word says it: XEP-0015's ``<allowed/>``,
    a moved statement's new JID (XEP-0283 §4.1)."""
    payload = iq[0] if len(iq) else None
    if payload is None:
        return ""
    names = {local(c.tag) for c in payload}
    if "allowed" in names:
        return "(allowed)"
    if "denied" in names:
        return "(denied)"
    new_jid = iq.find(f".//{{{MOVED_NS}}}new-jid")
    if new_jid is not None and new_jid.text:
        return f"→ {new_jid.text.strip()}"
    return ""


def error_condition(stanza) -> str:
    error = stanza.find("{*}error")
    if error is None:
        return "?"
    for child in error:
        if namespace(child.tag) == STANZA_ERRORS_NS and local(child.tag) != "text":
            return local(child.tag)
    return error.get("type") or "?"
