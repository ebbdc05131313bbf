"""What a client does with its own account: the requests ``xferd migrate`` needs.

Roster (RFC 6121 §2), vCard (XEP-0054), private XML (XEP-0049), PEP
(XEP-0163 over XEP-0060: items, publish with publish-options §7.1.5, node
configuration §8.2) and service discovery items (XEP-0030 §4). Payloads
handed in are copied, never moved out of the caller's tree.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from ..xmpp.stanza import E, iq, sub
from .connection import ROSTER_NS, Connection, IQError

VCARD_NS = "vcard-temp"
PRIVATE_NS = "jabber:iq:private"
PUBSUB_NS = "http://jabber.org/protocol/pubsub"
PUBSUB_OWNER_NS = PUBSUB_NS + "#owner"
DISCO_ITEMS_NS = "http://jabber.org/protocol/disco#items"
DATA_NS = "jabber:x:data"


@dataclass(frozen=True)
class RosterItem:
    """One roster item as the server reports it (RFC 6121 §2.1.2)."""
    jid: str
    name: str | None = None
    subscription: str = "none"
    ask: str | None = None
    groups: tuple[str, ...] = ()

    @classmethod
    def from_element(cls, el) -> "RosterItem":
        return cls(el.get("jid", ""), el.get("name") or None, el.get("subscription", "none"),
                   el.get("ask"), tuple(g.text or "" for g in el.iterfind(f"{{{ROSTER_NS}}}group")))


@dataclass(frozen=True)
class DiscoItem:
    jid: str
    node: str | None = None
    name: str | None = None


class Client(Connection):
    """A logged-in account (see :class:`Connection` for connecting and stanzas)."""

    # -- roster (RFC 6121 §2.1.3, §2.3) ---------------------------------------------------------
    async def roster(self, timeout: float = 30.0) -> list[RosterItem]:
        answer = await self.request(iq("get", payload=E(f"{{{ROSTER_NS}}}query")), timeout)
        return [RosterItem.from_element(el)
                for el in answer.iterfind(f"{{{ROSTER_NS}}}query/{{{ROSTER_NS}}}item")]

    async def roster_set(self, item) -> None:
        """Add or update an item: jid, name and groups (the server owns subscriptions)."""
        await self.request(_roster_set(item))

    async def roster_set_all(self, items, *, window: int = 32,
                             done: Callable[[object], None] | None = None) -> None:
        """:meth:`roster_set` for each of *items*, *window* sets in flight at once
        (RFC 6121 §2.3 allows one item per set, so a big roster is many sets);
        ``done(item)`` as each is accepted, in order. The first error raises."""
        await self.request_all(((item, _roster_set(item)) for item in items), window=window,
                               done=(lambda item, _: done(item)) if done else None)

    # -- vCard (XEP-0054 §3.1, §3.2) -----------------------------------------------------------
    async def vcard_get(self):
        """Our vCard, or None when there is none."""
        try:
            answer = await self.request(iq("get", payload=E(f"{{{VCARD_NS}}}vCard")))
        except IQError as exc:
            if exc.condition == "item-not-found":
                return None
            raise
        vcard = answer.find(f"{{{VCARD_NS}}}vCard")
        return vcard if _has_content(vcard) else None

    async def vcard_set(self, vcard) -> None:
        await self.request(iq("set", payload=copy.deepcopy(vcard)))

    # -- private XML (XEP-0049 §2.3) -----------------------------------------------------------
    async def private_get(self, ns_element):
        """The fragment stored under *ns_element*'s name (e.g. ``<storage
        xmlns='storage:bookmarks'/>``), or None when nothing is stored."""
        query = E(f"{{{PRIVATE_NS}}}query", None, copy.deepcopy(ns_element))
        answer = await self.request(iq("get", payload=query))
        fragment = answer.find(f"{{{PRIVATE_NS}}}query/{ns_element.tag}")
        return fragment if _has_content(fragment) else None

    async def private_set(self, element) -> None:
        query = E(f"{{{PRIVATE_NS}}}query", None, copy.deepcopy(element))
        await self.request(iq("set", payload=query))

    # -- PEP (XEP-0163; XEP-0060 §6.5, §7.1, §8.2) -------------------------------------------
    async def pep_items(self, owner: str | None, node: str,
                        item_id: str | None = None) -> list[tuple[str | None, object]]:
        """``[(item id, payload)]`` of *owner*'s *node*; [] when the node does not exist."""
        pubsub = E(f"{{{PUBSUB_NS}}}pubsub")
        items = sub(pubsub, f"{{{PUBSUB_NS}}}items", {"node": node})
        if item_id is not None:
            sub(items, f"{{{PUBSUB_NS}}}item", {"id": item_id})
        try:
            answer = await self.request(iq("get", to=owner, payload=pubsub))
        except IQError as exc:
            if exc.condition == "item-not-found":
                return []
            raise
        found = answer.iterfind(f"{{{PUBSUB_NS}}}pubsub/{{{PUBSUB_NS}}}items/{{{PUBSUB_NS}}}item")
        return [(item.get("id"), item[0] if len(item) else None) for item in found]

    async def pep_publish(self, node: str, item_id: str | None, payload, *,
                          access_model: str | None = None,
                          options: dict[str, str] | None = None) -> str | None:
        """Publish *payload*; publish-options (as preconditions) for *access_model*
        and any other *options*. Returns the item id the service reports."""
        pubsub = E(f"{{{PUBSUB_NS}}}pubsub")
        publish = sub(pubsub, f"{{{PUBSUB_NS}}}publish", {"node": node})
        sub(publish, f"{{{PUBSUB_NS}}}item", {"id": item_id}).append(copy.deepcopy(payload))
        fields = dict(options or {})
        if access_model is not None:
            fields["pubsub#access_model"] = access_model
        if fields:
            wrapper = sub(pubsub, f"{{{PUBSUB_NS}}}publish-options")
            wrapper.append(_form(PUBSUB_NS + "#publish-options", fields))
        answer = await self.request(iq("set", payload=pubsub))
        item = answer.find(f"{{{PUBSUB_NS}}}pubsub/{{{PUBSUB_NS}}}publish/{{{PUBSUB_NS}}}item")
        return item.get("id") if item is not None else item_id

    async def pep_configure(self, node: str, fields: dict[str, str]) -> None:
        """Change our node's configuration (XEP-0060 §8.2.4)."""
        pubsub = E(f"{{{PUBSUB_OWNER_NS}}}pubsub")
        configure = sub(pubsub, f"{{{PUBSUB_OWNER_NS}}}configure", {"node": node})
        configure.append(_form(PUBSUB_NS + "#node_config", fields))
        await self.request(iq("set", payload=pubsub))

    async def pep_access_model(self, node: str) -> str | None:
        """Our node's access model, or None if the service will not say (§8.2.1)."""
        pubsub = E(f"{{{PUBSUB_OWNER_NS}}}pubsub")
        sub(pubsub, f"{{{PUBSUB_OWNER_NS}}}configure", {"node": node})
        try:
            answer = await self.request(iq("get", payload=pubsub))
        except IQError:
            return None
        for field in answer.iterfind(f".//{{{DATA_NS}}}field"):
            if field.get("var") == "pubsub#access_model":
                return field.findtext(f"{{{DATA_NS}}}value")
        return None

    # -- service discovery (XEP-0030 §4) -------------------------------------------------------
    async def disco_items(self, jid: str | None = None, node: str | None = None) -> list[DiscoItem]:
        """Items of *jid* (our bare JID lists PEP nodes on servers that do so)."""
        query = E(f"{{{DISCO_ITEMS_NS}}}query", {"node": node})
        answer = await self.request(iq("get", to=jid, payload=query))
        return [DiscoItem(el.get("jid", ""), el.get("node"), el.get("name"))
                for el in answer.iterfind(f"{{{DISCO_ITEMS_NS}}}query/{{{DISCO_ITEMS_NS}}}item")]


def _roster_set(item):
    """A roster set for *item*'s jid, name and groups (RFC 6121 §2.3.1)."""
    query = E(f"{{{ROSTER_NS}}}query")
    el = sub(query, f"{{{ROSTER_NS}}}item", {"jid": item.jid, "name": item.name or None})
    for group in item.groups:
        sub(el, f"{{{ROSTER_NS}}}group", text=group)
    return iq("set", payload=query)


def _form(form_type: str, fields: dict[str, str]):
    """A submitted data form (XEP-0004 §3.1) with a hidden FORM_TYPE."""
    form = E(f"{{{DATA_NS}}}x", {"type": "submit"})
    hidden = sub(form, f"{{{DATA_NS}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    sub(hidden, f"{{{DATA_NS}}}value", text=form_type)
    for var, value in fields.items():
        sub(sub(form, f"{{{DATA_NS}}}field", {"var": var}), f"{{{DATA_NS}}}value", text=value)
    return form


def _has_content(el) -> bool:
    return el is not None and (len(el) > 0 or bool((el.text or "").strip()))
