"""XEP-0163 Personal Eventing Protocol: every account is a small pubsub
service (XEP-0060) addressed by its bare JID.

What we implement — the subset XEP-0283 (the ``urn:xmpp:moved:1`` statement)
and everyday clients need:

* publish (XEP-0060 §7.1) with auto-create (§7.1.4; XEP-0163 §3): a node
  that does not exist is created on first publish with access model
  ``presence`` (XEP-0163 §5) and ``max_items`` 1. An item without an id gets
  a generated one, returned in the result. Re-publishing an id replaces the
  item; beyond ``max_items`` the oldest items go (§7.1.2).
* publish-options (§7.1.5, as clarified in XEP-0060 1.13.6): the form must be
  of FORM_TYPE ``…pubsub#publish-options``. Every field is a precondition:
  node exists and a field differs → ``<conflict/>`` +
  ``<precondition-not-met/>``; node absent → created with those values.
  Fields we know: ``pubsub#access_model`` (open | presence | whitelist),
  ``pubsub#max_items`` (1…256 = MAX_ITEMS, or ``max``), ``pubsub#persist_items``
  (we always persist, so only true can be met) and
  ``pubsub#send_last_published_item`` (we never send the last item on
  presence, so only ``never`` can be met). The XEP says a service "MUST
  reject publications with unknown fields" without naming the error; we
  answer ``<bad-request/>`` naming the field (also for a bad value).
* retract (§7.2), with ``notify='true'`` sending a retract notification.
* items retrieval (§6.5): all items, the newest ``max_items``, or given
  item ids; returned oldest first as in the XEP's examples. An id that does
  not exist is simply missing from the result (§6.5.9.12).
* node creation (§8.1, optionally with a configure form), configuration
  get/set (§8.2: the four fields above) and deletion (§8.4), owner only.

Access models, their defaults and the node_config fields are the sans-IO
core's (``server/xmpp/pubsub.py``), shared with XEP-0227 import/export.

Who may read (§6.5.1, XEP-0163 §5): the owner always; ``open`` anyone;
``presence`` an entity whose bare JID is in the owner's roster with
subscription ``from`` or ``both``; ``whitelist`` only the owner. Refusals:
``presence`` → ``<not-authorized/>`` + ``<presence-subscription-required/>``
(§6.5.9.6), ``whitelist`` → ``<not-allowed/>`` + ``<closed-node/>``
(§6.5.9.8). A missing node is ``<item-not-found/>`` for everyone (§6.5.9.11),
so a stranger can learn that a node does not exist. A request to a user
that does not exist is ``<service-unavailable/>`` (RFC 6121 §8.5.1). Only the
owner publishes, retracts and configures; anyone else gets ``<forbidden/>``
(§7.1.3.1).

Notifications (XEP-0163 §4, deliberately simple): entity capabilities and
``+notify`` filtering (XEP-0115, "filtered-notifications") are not
implemented. On publish (and on retract with notify, and node deletion) a
``type='headline'`` message from the owner's bare JID goes to

1. each of the owner's available resources (its full JID), and
2. the bare JID of every roster contact with subscription ``from`` or
   ``both`` — if the access model lets that contact read the node
   (``open``/``presence`` yes, ``whitelist`` no) and the owner has not
   blocked it (XEP-0191 §3.3, matched as §6 says by
   ``server/xmpp/blocklist.py``, the blocking module's matcher). When the
   owner blocked only some of a contact's resources (an item
   ``contact@domain/resource`` or ``domain/resource``) and the contact is an
   account of this server, the notification goes to each of the contact's
   available resources (non-negative priority, as a headline to the bare JID
   would) that is not blocked. Deviation: for a remote contact we cannot
   tell its resources apart, so the notification still goes to its bare JID
   and the remote server may hand it to the blocked resource too.

Deviations from XEP-0163/0060, all deliberate for now: no explicit
subscriptions (``subscribe``/``unsubscribe``, ``auto-subscribe`` of
non-contacts to open nodes), no filtered notifications and no sending of the
last published item on presence, no ``roster`` or ``authorize`` access
models, no XEP-0033 ``replyto``, no RSM paging of items, no affiliation or
subscription management. Those requests get ``<feature-not-implemented/>``
+ ``<unsupported feature='…'/>``, XEP-0060's error for an optional
feature a service lacks.
"""

from __future__ import annotations

import logging
import time
import uuid

from lxml import etree

from storage.api import PepItem, PepNode

from ..core.module import Module, iq
from ..xmpp.blocklist import blocks_some_resources, is_blocked
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import DATA_NS
from ..xmpp.namespaces import PUBSUB_ERRORS_NS as ERRORS_NS
from ..xmpp.namespaces import PUBSUB_EVENT_NS as EVENT_NS
from ..xmpp.namespaces import PUBSUB_NS as NS
from ..xmpp.namespaces import PUBSUB_OWNER_NS as OWNER_NS
from ..xmpp.pubsub import (
    ACCESS_MODEL, ACCESS_MODELS, DEFAULT_ACCESS, DEFAULT_MAX_ITEMS, FIXED_OPTIONS, MAX_ITEMS,
    MAX_ITEMS_FIELD, NODE_CONFIG, PERSIST_ITEMS, PUBLISH_OPTIONS, SEND_LAST_PUBLISHED_ITEM,
    parse_access_model, parse_max_items)
from ..xmpp.stanza import MESSAGE, E, from_text, local_name, namespace, new_id, sub, to_text

log = logging.getLogger("xferd.pep")

#: service discovery features of every account (XEP-0060 §10)
FEATURES = tuple(f"{NS}#{name}" for name in (
    "publish", "publish-options", "retrieve-items", "retract-items", "auto-create",
    "access-open", "access-presence", "access-whitelist", "persistent-items",
    "create-nodes", "create-and-configure", "config-node", "delete-nodes",
))

#: requests we do not support → the feature name XEP-0060 uses in <unsupported/>
UNSUPPORTED = {
    (NS, "subscribe"): "subscribe",
    (NS, "unsubscribe"): "subscribe",
    (NS, "options"): "subscription-options",
    (NS, "default"): "retrieve-default-sub",
    (NS, "subscriptions"): "retrieve-subscriptions",
    (NS, "affiliations"): "retrieve-affiliations",
    (OWNER_NS, "default"): "retrieve-default",
    (OWNER_NS, "purge"): "purge-nodes",
    (OWNER_NS, "subscriptions"): "manage-subscriptions",
    (OWNER_NS, "affiliations"): "modify-affiliations",
}

#: children of <pubsub/> that accompany an action rather than being one
COMPANIONS = {(NS, "publish-options"), (NS, "configure")}


# -- errors ------------------------------------------------------------------------------

def _error(condition: str, pubsub_condition: str | None = None, text: str | None = None,
           **attrs) -> StanzaError:
    extra = E(f"{{{ERRORS_NS}}}{pubsub_condition}", attrs) if pubsub_condition else None
    return StanzaError(condition, text, extra=extra)


def _unsupported(feature: str) -> StanzaError:
    return _error("feature-not-implemented", "unsupported", f"{feature} is not supported",
                  feature=feature)


# -- node options: one table for publish-options, create and configure ---------------------

def _parse_bool(value: str) -> bool:
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise ValueError(f"{value!r} is not a boolean")


#: field → (parse the submitted value, read the node's value). persist_items and
#: send_last_published_item are fixed by what we implement: they can be asked
#: for (bookmark clients do) but only our own value can be met.
FIELDS = {
    ACCESS_MODEL: (parse_access_model, lambda node: node.access_model),
    MAX_ITEMS_FIELD: (parse_max_items, lambda node: node.max_items),
    PERSIST_ITEMS: (_parse_bool, lambda node: FIXED_OPTIONS[PERSIST_ITEMS]),
    SEND_LAST_PUBLISHED_ITEM: (str, lambda node: FIXED_OPTIONS[SEND_LAST_PUBLISHED_ITEM]),
}


def _form_fields(form, form_type: str) -> dict[str, object]:
    """The fields of a submitted XEP-0004 form, checked against *form_type*.

    Raises ValueError for a malformed form or an unknown field or value;
    returns field → parsed value.
    """
    if form.get("type", "submit") != "submit":
        raise ValueError("the form must be of type 'submit'")
    values: dict[str, object] = {}
    seen_type = None
    for field in form.iterfind(f"{{{DATA_NS}}}field"):
        var = field.get("var")
        texts = [v.text or "" for v in field.iterfind(f"{{{DATA_NS}}}value")]
        if var == "FORM_TYPE":
            seen_type = texts[0] if texts else ""
            continue
        if var not in FIELDS:
            raise ValueError(f"unknown field {var!r}")
        if len(texts) != 1:
            raise ValueError(f"{var} needs exactly one value")
        values[var] = FIELDS[var][0](texts[0].strip())
    if seen_type != form_type:
        raise ValueError(f"FORM_TYPE must be {form_type}")
    return values


def _apply(node: PepNode, values: dict) -> None:
    """Set a node's options from parsed form values (fixed fields checked)."""
    for var, value in values.items():
        if var == ACCESS_MODEL:
            node.access_model = value
        elif var == MAX_ITEMS_FIELD:
            node.max_items = value
        elif value != FIELDS[var][1](node):
            raise ValueError(f"{var} can only be {FIELDS[var][1](node)!r} here")


def _config_form(node: PepNode):
    """The node configuration form (XEP-0060 §8.2.1)."""
    form = E(f"{{{DATA_NS}}}x", {"type": "form"})

    def field(var, type_, label, value, options=()):
        el = sub(form, f"{{{DATA_NS}}}field", {"var": var, "type": type_, "label": label})
        for option in options:
            sub(sub(el, f"{{{DATA_NS}}}option"), f"{{{DATA_NS}}}value", text=option)
        sub(el, f"{{{DATA_NS}}}value", text=value)

    field("FORM_TYPE", "hidden", None, NODE_CONFIG)
    field(ACCESS_MODEL, "list-single", "Who may retrieve items",
          node.access_model, ACCESS_MODELS)
    field(MAX_ITEMS_FIELD, "text-single", f"Max # of items to persist (1…{MAX_ITEMS})",
          str(node.max_items))
    field(PERSIST_ITEMS, "boolean", "Persist items to storage (always)", "1")
    field(SEND_LAST_PUBLISHED_ITEM, "list-single",
          "When to send the last published item (never: not implemented)", "never",
          ("never",))
    return form


# -- the service -----------------------------------------------------------------------------

class Pep(Module):
    name = "pep"
    account_features = FEATURES
    account_identities = (("pubsub", "pep"),)

    def hooks(self):
        # "self" falls back to "bare", so these see the owner's requests too
        return [iq("get", "bare", NS, "pubsub", self.on_get),
                iq("set", "bare", NS, "pubsub", self.on_set),
                iq("get", "bare", OWNER_NS, "pubsub", self.on_owner_get),
                iq("set", "bare", OWNER_NS, "pubsub", self.on_owner_set)]

    @property
    def storage(self):
        return self.host.storage

    # addressing ------------------------------------------------------------------------------
    async def _owner(self, event) -> tuple[str, bool]:
        """The account addressed, and whether the sender is that account."""
        owner = event.to.local
        is_owner = event.from_ is not None and event.from_.bare == event.to.bare
        if not is_owner and not await self.storage.user_exists(self.host.domain, owner):
            raise StanzaError("service-unavailable")
        return owner, is_owner

    @staticmethod
    def _action(event, ns: str, known: tuple[str, ...]):
        """The one action child of ``<pubsub/>``; ``<publish-options/>`` and
        ``<configure/>`` may ride along with ``<publish/>`` and ``<create/>``."""
        actions = [child for child in event.stanza[0] if isinstance(child.tag, str)
                   and (namespace(child), local_name(child)) not in COMPANIONS]
        if len(actions) != 1:
            raise StanzaError("bad-request", "expected exactly one pubsub action")
        action = actions[0]
        key = (namespace(action), local_name(action))
        if key in UNSUPPORTED:
            raise _unsupported(UNSUPPORTED[key])
        if key[0] != ns or key[1] not in known:
            raise StanzaError("feature-not-implemented", f"<{key[1]}/> is not supported")
        return action

    @staticmethod
    def _node_name(action) -> str:
        node = action.get("node")
        if not node:
            raise _error("bad-request", "nodeid-required", "a node is required")
        return node

    async def _existing(self, owner: str, name: str) -> PepNode:
        node = await self.storage.get_pep_node(self.host.domain, owner, name)
        if node is None:
            raise StanzaError("item-not-found", f"no node {name!r}")
        return node

    # handlers ------------------------------------------------------------------------------
    async def on_get(self, event) -> bool:
        owner, is_owner = await self._owner(event)
        action = self._action(event, NS, ("items",))
        await event.reply(await self.items(event, owner, is_owner, action))
        return True

    async def on_set(self, event) -> bool:
        owner, is_owner = await self._owner(event)
        action = self._action(event, NS, ("publish", "retract", "create"))
        if not is_owner:
            raise StanzaError("forbidden", "only the account owner publishes here")
        handler = {"publish": self.publish, "retract": self.retract,
                   "create": self.create}[local_name(action)]
        await event.reply(await handler(event, owner, action))
        return True

    async def on_owner_get(self, event) -> bool:
        owner, is_owner = await self._owner(event)
        action = self._action(event, OWNER_NS, ("configure",))
        if not is_owner:
            raise StanzaError("forbidden", "only the account owner configures nodes")
        node = await self._existing(owner, self._node_name(action))
        pubsub = E(f"{{{OWNER_NS}}}pubsub")
        sub(pubsub, f"{{{OWNER_NS}}}configure", {"node": node.node}).append(_config_form(node))
        await event.reply(pubsub)
        return True

    async def on_owner_set(self, event) -> bool:
        owner, is_owner = await self._owner(event)
        action = self._action(event, OWNER_NS, ("configure", "delete"))
        if not is_owner:
            raise StanzaError("forbidden", "only the account owner configures nodes")
        if local_name(action) == "delete":
            await self.delete(event, owner, action)
        else:
            await self.configure(owner, action)
        await event.reply()
        return True

    # XEP-0060 §6.5 -------------------------------------------------------------------------
    async def items(self, event, owner: str, is_owner: bool, action):
        node = await self._existing(owner, self._node_name(action))
        if not is_owner:
            await self._check_access(owner, node, event.from_)
        ids = [i.get("id") for i in action.iterfind(f"{{{NS}}}item")]
        if any(not i for i in ids):
            raise _error("bad-request", "item-required", "an <item/> needs an id")
        max_items = action.get("max_items")
        if max_items is not None:
            if not max_items.isdigit() or int(max_items) < 1:
                raise StanzaError("bad-request", "max_items must be a positive integer")
            max_items = int(max_items)
        found = await self.storage.get_pep_items(self.host.domain, owner, node.node,
                                                 ids=ids or None, max_items=max_items)
        pubsub = E(f"{{{NS}}}pubsub")
        items = sub(pubsub, f"{{{NS}}}items", {"node": node.node})
        for item in reversed(found):            # storage gives newest first
            items.append(_item_element(NS, item))
        return pubsub

    async def _check_access(self, owner: str, node: PepNode, requester: JID | None) -> None:
        if node.access_model == "open":
            return
        if node.access_model == "presence":
            if requester is not None and await self._shares_presence(owner, requester):
                return
            raise _error("not-authorized", "presence-subscription-required",
                         "subscribe to this account's presence first")
        raise _error("not-allowed", "closed-node", "only the owner may retrieve items")

    async def _shares_presence(self, owner: str, requester: JID) -> bool:
        item = await self.host.rosters.item(owner, str(requester.bare))
        return item is not None and item.subscription in ("from", "both")

    # XEP-0060 §7.1 -------------------------------------------------------------------------
    async def publish(self, event, owner: str, action):
        name = self._node_name(action)
        item_els = action.findall(f"{{{NS}}}item")
        if not item_els:
            raise _error("bad-request", "item-required", "publish an <item/>")
        if len(item_els) > 1:
            raise _error("bad-request", "invalid-payload", "one <item/> per publish")
        item_el = item_els[0]
        payloads = [c for c in item_el if isinstance(c.tag, str)]
        if not payloads:
            raise _error("bad-request", "payload-required", "the <item/> is empty")
        if len(payloads) > 1:
            raise _error("bad-request", "invalid-payload", "one payload per item")
        item_id = item_el.get("id") or uuid.uuid4().hex

        node = await self.storage.get_pep_node(self.host.domain, owner, name)
        options = self._publish_options(event.stanza[0])
        if node is None:
            node = PepNode(name, DEFAULT_ACCESS, DEFAULT_MAX_ITEMS)
            try:
                _apply(node, options)
            except ValueError:
                raise _error("conflict", "precondition-not-met",
                             "such a node cannot be created here") from None
        else:
            for var, wanted in options.items():
                if FIELDS[var][1](node) != wanted:
                    raise _error("conflict", "precondition-not-met",
                                 f"{var} of node {name!r} is {FIELDS[var][1](node)!r}")

        payload = _detached(payloads[0])
        item = PepItem(item_id, to_text(payload), time.time())
        await self.storage.publish_pep_item(self.host.domain, owner, node, item)
        log.debug("%s@%s published %s/%s", owner, self.host.domain, name, item_id)

        event_items = E(f"{{{EVENT_NS}}}items", {"node": name})
        event_items.append(_item_element(EVENT_NS, item))
        await self.notify(event, owner, node, event_items)

        pubsub = E(f"{{{NS}}}pubsub")
        sub(sub(pubsub, f"{{{NS}}}publish", {"node": name}), f"{{{NS}}}item", {"id": item_id})
        return pubsub

    @staticmethod
    def _publish_options(pubsub) -> dict:
        options = pubsub.find(f"{{{NS}}}publish-options")
        if options is None:
            return {}
        form = options.find(f"{{{DATA_NS}}}x")
        if form is None:
            return {}                       # an empty <publish-options/>: nothing asked
        try:
            return _form_fields(form, PUBLISH_OPTIONS)
        except ValueError as exc:
            raise StanzaError("bad-request", f"publish-options: {exc}") from None

    # XEP-0060 §7.2 -------------------------------------------------------------------------
    async def retract(self, event, owner: str, action):
        name = self._node_name(action)
        ids = [i.get("id") for i in action.iterfind(f"{{{NS}}}item")]
        if len(ids) != 1 or not ids[0]:
            raise _error("bad-request", "item-required", "retract one <item id='…'/>")
        node = await self._existing(owner, name)
        if not await self.storage.retract_pep_item(self.host.domain, owner, name, ids[0]):
            raise StanzaError("item-not-found", f"no item {ids[0]!r}")
        if action.get("notify") in ("1", "true"):
            event_items = E(f"{{{EVENT_NS}}}items", {"node": name})
            sub(event_items, f"{{{EVENT_NS}}}retract", {"id": ids[0]})
            await self.notify(event, owner, node, event_items)
        return None

    # XEP-0060 §8.1, §8.2, §8.4 ---------------------------------------------------------------
    async def create(self, event, owner: str, action):
        name = self._node_name(action)
        node = PepNode(name, DEFAULT_ACCESS, DEFAULT_MAX_ITEMS)
        form = event.stanza[0].find(f"{{{NS}}}configure/{{{DATA_NS}}}x")
        if form is not None:
            try:
                _apply(node, _form_fields(form, NODE_CONFIG))
            except ValueError as exc:
                raise StanzaError("not-acceptable", f"configure: {exc}") from None
        if await self.storage.get_pep_node(self.host.domain, owner, name) is not None:
            raise StanzaError("conflict", f"node {name!r} exists")
        await self.storage.save_pep_node(self.host.domain, owner, node)
        return None

    async def configure(self, owner: str, action) -> None:
        node = await self._existing(owner, self._node_name(action))
        form = action.find(f"{{{DATA_NS}}}x")
        if form is None:
            raise StanzaError("bad-request", "a configuration form is required")
        if form.get("type") == "cancel":
            return                              # §8.2.4: keep the configuration
        try:
            _apply(node, _form_fields(form, NODE_CONFIG))
        except ValueError as exc:
            raise StanzaError("not-acceptable", str(exc)) from None
        await self.storage.save_pep_node(self.host.domain, owner, node)

    async def delete(self, event, owner: str, action) -> None:
        node = await self._existing(owner, self._node_name(action))
        await self.storage.delete_pep_node(self.host.domain, owner, node.node)
        await self.notify(event, owner, node, E(f"{{{EVENT_NS}}}delete", {"node": node.node}))

    # notifications (XEP-0163 §4, simplified: see the module docstring) ------------------------
    async def notify(self, event, owner: str, node: PepNode, content) -> None:
        owner_jid = JID(owner, self.host.domain)

        def message(to: str):
            msg = E(MESSAGE, {"type": "headline", "from": str(owner_jid), "to": to,
                              "id": new_id()})
            sub(msg, f"{{{EVENT_NS}}}event").append(_detached(content))
            return msg

        for session in self.host.available_sessions(owner):
            session.send(message(str(session.jid)))
        if node.access_model == "whitelist":
            return
        _, roster = await self.storage.get_roster(self.host.domain, owner)
        blocked = frozenset(await self.storage.get_blocklist(self.host.domain, owner))
        for contact, item in roster.items():
            if item.subscription not in ("from", "both"):
                continue
            for to in self._recipients(contact, blocked):
                await event.send(message(to))

    def _recipients(self, contact: str, blocked: frozenset[str]) -> list[str]:
        """Where a notification for the roster *contact* goes: its bare JID,
        unless the owner blocked it (XEP-0191 §6 matching, the blocking
        module's); when the owner blocked only some of its resources (a full
        JID or ``domain/resource`` item) and the contact is local, each of its
        available resources that is not blocked, as a headline to the bare
        JID would have reached them."""
        try:
            jid = JID.parse(contact)
        except JIDError:
            return []
        if is_blocked(blocked, jid):
            return []
        if not blocks_some_resources(blocked, jid):
            return [contact]
        contact_host = self.host.server.hosts.get(jid.domain)
        if contact_host is None or jid.local is None:
            return [contact]            # a remote server fans out: see the docstring
        return [str(session.jid) for session in contact_host.available_sessions(jid.local)
                if session.priority >= 0 and not is_blocked(blocked, session.jid)]


# -- elements ----------------------------------------------------------------------------------

def _item_element(ns: str, item: PepItem):
    el = E(f"{{{ns}}}item", {"id": item.id})
    el.append(from_text(item.payload))
    return el


def _detached(el):
    """A standalone copy of *el* (no tail, namespaces kept)."""
    clone = etree.fromstring(etree.tostring(el))
    clone.tail = None
    return clone


MODULE = Pep
