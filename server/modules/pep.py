"""XEP-0163 Personal Eventing Protocol: every account is a small pubsub
service (XEP-0060) addressed by its bare JID.

What we implement — the subset XEP-0163 §5 and everyday clients need:

* publish (XEP-0060 §7.1) with auto-create (§7.1.4; XEP-0163 §3): a node
  that does not exist is created on first publish with access model
  ``presence`` (XEP-0163 §5), ``max_items`` 1 and
  ``send_last_published_item`` ``on_sub_and_presence`` (XEP-0163 §4.3.4). An
  item without an id gets a generated one, returned in the result.
  Re-publishing an id replaces the item; beyond ``max_items`` the oldest
  items go (§7.1.2).
* publish-options (§7.1.5, as clarified in XEP-0060 1.13.6): the form must be
  of FORM_TYPE ``…pubsub#publish-options``. Every field is a precondition:
  node exists and a field differs → ``<conflict/>`` +
  ``<precondition-not-met/>``; node absent → created with those values.
  Fields we know: ``pubsub#access_model`` (open | presence | roster |
  whitelist), ``pubsub#roster_groups_allowed``, ``pubsub#max_items`` (1…256
  = MAX_ITEMS, or ``max``), ``pubsub#persist_items`` (we always persist, so
  only true can be met) and ``pubsub#send_last_published_item`` (never |
  on_sub | on_sub_and_presence). One exception: a node stored before that
  field existed (or imported without it) has no value of its own, and takes
  the one asked for instead of refusing — those nodes behaved as ``never``,
  which is what bookmark clients (XEP-0402) ask for. The XEP says a service
  "MUST reject publications with unknown fields" without naming the error;
  we answer ``<bad-request/>`` naming the field (also for a bad value).
* retract (§7.2), with ``notify='true'`` sending a retract notification.
* items retrieval (§6.5): all items, the newest ``max_items``, or given
  item ids; returned oldest first as in the XEP's examples. An id that does
  not exist is simply missing from the result (§6.5.9.12).
* node creation (§8.1, optionally with a configure form), configuration
  get/set (§8.2: the fields above) and deletion (§8.4), owner only.

Quotas per account (``[im]``): a payload above ``pep_max_item_bytes``, or
one that would take the items of all the account's nodes above
``pep_max_bytes``, is ``<not-acceptable/>`` + ``<payload-too-big/>``
(§7.1.3.5); a node beyond ``pep_max_nodes`` (created or auto-created) is
``<policy-violation/>`` + ``<max-nodes-exceeded/>`` (see ``_node_quota``).
Both counts are taken inside the write's transaction. Prosody limits
neither (only ``pep_max_items`` per node); ejabberd's payload limit is
250,000 bytes.

Access models, their defaults and the node_config fields are the sans-IO
core's (``server/xmpp/pubsub.py``), shared with XEP-0227 import/export.

Who may read (§6.5.1, XEP-0163 §5): the owner always; ``open`` anyone;
``presence`` an entity whose bare JID is in the owner's roster with
subscription ``from`` or ``both``; ``roster`` a contact of the owner's roster
in one of the node's ``pubsub#roster_groups_allowed`` (§4.5); ``whitelist``
only the owner. Refusals: ``presence`` → ``<not-authorized/>`` +
``<presence-subscription-required/>`` (§6.5.9.6), ``roster`` →
``<not-authorized/>`` + ``<not-in-roster-group/>`` (§6.5.9.7),
``whitelist`` → ``<not-allowed/>`` + ``<closed-node/>`` (§6.5.9.8). A
missing node is ``<item-not-found/>`` for everyone (§6.5.9.11), so a
stranger can learn that a node does not exist. A request to a user that
does not exist is ``<service-unavailable/>`` (RFC 6121 §8.5.1). Only the
owner publishes, retracts and configures; anyone else gets ``<forbidden/>``
(§7.1.3.1).

Notifications (XEP-0163 §4; XEP-0060 §9.1 auto-subscribe and §9.2
filtered-notifications). The caps module (``server/modules/caps.py``,
XEP-0115) tells us, through ``caps-changed``, the features of every
resource whose presence reaches the owner's bare JID — the owner's own
resources and its contacts', local or remote — and we keep, per owner, each
such full JID and the nodes it advertises ``NODE+notify`` for. A
notification for node N (publish, retract with notify, node deletion) is a
``type='headline'`` message from the owner's bare JID (§4.3.1) to the full
JID (§4.3.1 item 4, §4.3.2 item 3) of each of those resources that advertises
``N+notify`` and

1. is one of the owner's own resources (§4 item 3), or
2. belongs to a contact with subscription ``from`` or ``both`` in the
   owner's roster (the contact "shares presence", §4 item 2; XEP-0060 §9.1.2),
   whom the access model lets read N (``open``, ``presence``; ``roster``:
   in an allowed group; ``whitelist``: nobody) and whom the owner has not
   blocked (§4.3.3 item 3; XEP-0191 §6 matching, ``server/xmpp/blocklist.py``,
   applied to the full JID, so a block of one resource spares the others
   even at a remote contact).

A resource whose caps we do not know — none sent, the disco#info answer not
in yet, or a hash that did not verify — gets nothing: XEP-0060 §9.2 "MUST
NOT send notifications related to any NodeIDs that the contact's client has
not asked for", and XEP-0163 §4.3.2 item 2 lets a service send nothing
where it lacks that presence information. That is also what Prosody 0.12
does (its mod_pep keeps the same per-resource table; tests/interop/
test_prosody_pep.py), except that for a local contact it also notifies the
contact's bare JID once one of its resources advertised caps, which we do
not copy: the interested resource gets everything twice and its siblings
get what they did not ask for.

The last published item (XEP-0163 §4.3.3 item 2 and §4.3.4; XEP-0060 §6.1.7,
stamped with XEP-0203 delay): when a resource's caps become known (it came
online, or announced new caps) it gets the newest item of each node it newly
advertises ``+notify`` for and may receive as above, if the node's
``send_last_published_item`` is ``on_sub_and_presence``; a presence update
with the same caps brings nothing again. When the owner approves a
contact's subscription (``presence-grant``: the contact is newly
auto-subscribed), the contact's interested resources that we know get the
newest items of the nodes whose ``send_last_published_item`` is ``on_sub``
or ``on_sub_and_presence``.

Deviations from XEP-0163/0060, all deliberate for now: no explicit
subscriptions (``subscribe``/``unsubscribe``), so no notifications to
entities without a presence subscription, not even for ``open`` nodes
(XEP-0060 §9.1.3's temporary subscription of a presence sharer is a SHOULD;
Prosody does not either); presence priority is not looked at (XEP-0163
§4.3.2 item 3 speaks of non-negative priority; Prosody does not look either);
no ``authorize`` access model, no XEP-0033 ``replyto``, no RSM paging of
items, no affiliation or subscription management. Those requests get
``<feature-not-implemented/>`` + ``<unsupported feature='…'/>``, XEP-0060's
error for an optional feature a service lacks.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from lxml import etree

from storage.api import PepItem, PepNode, QuotaExceeded

from ..core.events import CapsChange, PresenceShare
from ..core.module import Hook, Module, iq
from ..xmpp import timestamps
from ..xmpp.blocklist import is_blocked
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import DATA_NS, DELAY_NS
from ..xmpp.namespaces import PUBSUB_ERRORS_NS as ERRORS_NS
from ..xmpp.namespaces import PUBSUB_EVENT_NS as EVENT_NS
from ..xmpp.namespaces import PUBSUB_NS as NS
from ..xmpp.namespaces import PUBSUB_OWNER_NS as OWNER_NS
from ..xmpp.pubsub import (
    ACCESS_MODEL, ACCESS_MODELS, DEFAULT_ACCESS, DEFAULT_MAX_ITEMS, DEFAULT_SEND_LAST,
    FIXED_OPTIONS, MAX_ITEMS, MAX_ITEMS_FIELD, NODE_CONFIG, PERSIST_ITEMS, PUBLISH_OPTIONS,
    ROSTER_GROUPS_ALLOWED, SEND_LAST_PUBLISHED_ITEM, SEND_LAST_VALUES, notify_nodes,
    parse_access_model, parse_max_items, parse_send_last, roster_groups_allowed,
    send_last_published_item)
from ..xmpp.roster import SHARES_PRESENCE as SHARES
from ..xmpp.stanza import MESSAGE, E, from_text, local_name, namespace, new_id, sub, to_text

log = logging.getLogger("xferd.pep")

#: service discovery features of every account (XEP-0060 §10)
FEATURES = tuple(f"{NS}#{name}" for name in (
    "publish", "publish-options", "retrieve-items", "retract-items", "auto-create",
    "auto-subscribe", "presence-subscribe", "filtered-notifications", "last-published",
    "presence-notifications", "access-open", "access-presence", "access-roster",
    "access-whitelist", "persistent-items",
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


@contextlib.contextmanager
def _node_quota():
    """A storage quota of the account (``[im] pep_max_nodes``,
    ``pep_max_bytes``) is reached. Too many nodes: XEP-0060 lists
    ``<max-nodes-exceeded/>`` among its errors without a use case; we pair
    it with ``<policy-violation/>``, as §6.1.3.9 pairs
    ``<too-many-subscriptions/>`` for the like limit on subscriptions (type
    modify: deleting a node makes room, waiting does not). Too many bytes:
    §7.1.3.5's ``<not-acceptable/>`` + ``<payload-too-big/>``, the limit
    being what the account has left."""
    try:
        yield
    except QuotaExceeded as exc:
        if exc.quota == "pep_max_bytes":
            raise _error("not-acceptable", "payload-too-big",
                         f"the account's nodes may keep at most {exc.limit} bytes") from None
        raise _error("policy-violation", "max-nodes-exceeded",
                     f"an account may have at most {exc.limit} nodes") from None


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


def _one(parse: Callable[[str], object]) -> Callable[[list[str]], object]:
    def parse_values(values: list[str]):
        if len(values) != 1:
            raise ValueError("needs exactly one value")
        return parse(values[0].strip())
    return parse_values


def _groups(values: list[str]) -> frozenset[str]:
    if any(not v for v in values):
        raise ValueError("an empty roster group")
    return frozenset(values)


@dataclass(frozen=True)
class Option:
    """A node_config / publish-options field: parse the submitted values, read
    a node's value (what a precondition compares), write it (None: the
    field is fixed by what we implement and only its value can be met)."""
    parse: Callable[[list[str]], object]
    read: Callable[[PepNode], object]
    write: Callable[[PepNode, object], None] | None = None


FIELDS = {
    ACCESS_MODEL: Option(_one(parse_access_model), lambda node: node.access_model,
                         lambda node, v: setattr(node, "access_model", v)),
    ROSTER_GROUPS_ALLOWED: Option(_groups, lambda node: roster_groups_allowed(node.config),
                                  lambda node, v: node.config.__setitem__(
                                      ROSTER_GROUPS_ALLOWED, sorted(v))),
    MAX_ITEMS_FIELD: Option(_one(parse_max_items), lambda node: node.max_items,
                            lambda node, v: setattr(node, "max_items", v)),
    PERSIST_ITEMS: Option(_one(_parse_bool), lambda node: FIXED_OPTIONS[PERSIST_ITEMS]),
    SEND_LAST_PUBLISHED_ITEM: Option(_one(parse_send_last),
                                     lambda node: send_last_published_item(node.config),
                                     lambda node, v: node.config.__setitem__(
                                         SEND_LAST_PUBLISHED_ITEM, v)),
}


def _new_node(name: str) -> PepNode:
    """A node with XEP-0163 §5's defaults, send_last_published_item said explicitly
    (a node without it was stored before it existed: see the module docstring)."""
    return PepNode(name, DEFAULT_ACCESS, DEFAULT_MAX_ITEMS,
                   {SEND_LAST_PUBLISHED_ITEM: DEFAULT_SEND_LAST})


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
        try:
            values[var] = FIELDS[var].parse(texts)
        except ValueError as exc:
            raise ValueError(f"{var}: {exc}") from None
    if seen_type != form_type:
        raise ValueError(f"FORM_TYPE must be {form_type}")
    return values


def _apply(node: PepNode, values: dict) -> None:
    """Set a node's options from parsed form values (fixed fields checked)."""
    for var, value in values.items():
        option = FIELDS[var]
        if option.write is not None:
            option.write(node, value)
        elif value != option.read(node):
            raise ValueError(f"{var} can only be {option.read(node)!r} here")


def _config_form(node: PepNode, groups: list[str]):
    """The node configuration form (XEP-0060 §8.2.1); *groups*: the owner's
    roster groups, offered for roster_groups_allowed."""
    form = E(f"{{{DATA_NS}}}x", {"type": "form"})

    def field(var, type_, label, values, options=()):
        el = sub(form, f"{{{DATA_NS}}}field", {"var": var, "type": type_, "label": label})
        for option in options:
            sub(sub(el, f"{{{DATA_NS}}}option"), f"{{{DATA_NS}}}value", text=option)
        for value in values:
            sub(el, f"{{{DATA_NS}}}value", text=value)

    allowed = sorted(roster_groups_allowed(node.config))
    field("FORM_TYPE", "hidden", None, [NODE_CONFIG])
    field(ACCESS_MODEL, "list-single", "Who may retrieve items",
          [node.access_model], ACCESS_MODELS)
    field(ROSTER_GROUPS_ALLOWED, "list-multi", "Roster groups allowed (access model roster)",
          allowed, sorted(set(groups) | set(allowed)))
    field(MAX_ITEMS_FIELD, "text-single", f"Max # of items to persist (1…{MAX_ITEMS})",
          [str(node.max_items)])
    field(PERSIST_ITEMS, "boolean", "Persist items to storage (always)", ["1"])
    field(SEND_LAST_PUBLISHED_ITEM, "list-single", "When to send the last published item",
          [send_last_published_item(node.config)], SEND_LAST_VALUES)
    return form


@dataclass
class Audience:
    """What decides whether a contact receives a node's notifications: the
    owner's roster and blocklist, read once per notification."""
    owner: JID
    roster: dict
    blocked: frozenset[str]

    def may_receive(self, node: PepNode, jid: JID) -> bool:
        """XEP-0163 §4 (see the module docstring): the owner's own resources,
        or a contact that shares presence, may read *node* and is not blocked."""
        if jid.bare == self.owner:
            return True
        item = self.roster.get(str(jid.bare))
        if item is None or item.subscription not in SHARES or is_blocked(self.blocked, jid):
            return False
        if node.access_model in ("open", "presence"):
            return True
        if node.access_model == "roster":
            return not roster_groups_allowed(node.config).isdisjoint(item.groups)
        return False


# -- the service -----------------------------------------------------------------------------

class Pep(Module):
    name = "pep"
    depends = ("caps",)
    account_features = FEATURES
    account_identities = (("pubsub", "pep"),)

    def __init__(self, host):
        super().__init__(host)
        #: owner → full JID of a resource whose presence reaches the owner → the
        #: nodes it advertises NODE+notify for (XEP-0060 §9.2), from caps-changed
        self.interest: dict[str, dict[JID, frozenset[str]]] = {}

    def hooks(self):
        # "self" falls back to "bare", so these see the owner's requests too
        return [iq("get", "bare", NS, "pubsub", self.on_get),
                iq("set", "bare", NS, "pubsub", self.on_set),
                iq("get", "bare", OWNER_NS, "pubsub", self.on_owner_get),
                iq("set", "bare", OWNER_NS, "pubsub", self.on_owner_set),
                Hook("caps-changed", self.on_caps),
                Hook("presence-grant", self.on_grant)]

    @property
    def storage(self):
        return self.host.storage

    @property
    def _max_nodes(self) -> int:
        return self.host.global_config.im.pep_max_nodes

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
        _, roster = await self.host.rosters.get(owner)
        groups = sorted({group for item in roster.values() for group in item.groups})
        pubsub = E(f"{{{OWNER_NS}}}pubsub")
        sub(pubsub, f"{{{OWNER_NS}}}configure", {"node": node.node}).append(
            _config_form(node, groups))
        await event.reply(pubsub)
        return True

    async def on_owner_set(self, event) -> bool:
        owner, is_owner = await self._owner(event)
        action = self._action(event, OWNER_NS, ("configure", "delete"))
        if not is_owner:
            raise StanzaError("forbidden", "only the account owner configures nodes")
        if local_name(action) == "delete":
            await self.delete(owner, action)
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
        item = await self.host.rosters.item(owner, str(requester.bare)) \
            if requester is not None else None
        if node.access_model == "presence":
            if item is not None and item.subscription in SHARES:
                return
            raise _error("not-authorized", "presence-subscription-required",
                         "subscribe to this account's presence first")
        if node.access_model == "roster":
            if item is not None and not roster_groups_allowed(node.config).isdisjoint(
                    item.groups):
                return
            raise _error("not-authorized", "not-in-roster-group",
                         "only contacts in some of the owner's roster groups may read this")
        raise _error("not-allowed", "closed-node", "only the owner may retrieve items")

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
            node = _new_node(name)
            try:
                _apply(node, options)
            except ValueError:
                raise _error("conflict", "precondition-not-met",
                             "such a node cannot be created here") from None
        else:
            adopted = SEND_LAST_PUBLISHED_ITEM in options and \
                SEND_LAST_PUBLISHED_ITEM not in node.config
            if adopted:                 # stored before the field existed: see the docstring
                node.config[SEND_LAST_PUBLISHED_ITEM] = options[SEND_LAST_PUBLISHED_ITEM]
            for var, wanted in options.items():
                if FIELDS[var].read(node) != wanted:
                    raise _error("conflict", "precondition-not-met",
                                 f"{var} of node {name!r} is {FIELDS[var].read(node)!r}")
            if adopted:
                await self.storage.save_pep_node(self.host.domain, owner, node)

        payload = _detached(payloads[0])
        item = PepItem(item_id, to_text(payload), time.time())
        im = self.host.global_config.im
        if len(item.payload.encode()) > im.pep_max_item_bytes:
            raise _error("not-acceptable", "payload-too-big",
                         f"a payload may have at most {im.pep_max_item_bytes} bytes")
        with _node_quota():
            await self.storage.publish_pep_item(self.host.domain, owner, node, item,
                                                max_nodes=im.pep_max_nodes,
                                                max_bytes=im.pep_max_bytes)
        log.debug("%s@%s published %s/%s", owner, self.host.domain, name, item_id)

        event_items = E(f"{{{EVENT_NS}}}items", {"node": name})
        event_items.append(_item_element(EVENT_NS, item))
        await self.notify(owner, node, event_items)

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
            await self.notify(owner, node, event_items)
        return None

    # XEP-0060 §8.1, §8.2, §8.4 ---------------------------------------------------------------
    async def create(self, event, owner: str, action):
        name = self._node_name(action)
        node = _new_node(name)
        form = event.stanza[0].find(f"{{{NS}}}configure/{{{DATA_NS}}}x")
        if form is not None:
            try:
                _apply(node, _form_fields(form, NODE_CONFIG))
            except ValueError as exc:
                raise StanzaError("not-acceptable", f"configure: {exc}") from None
        if await self.storage.get_pep_node(self.host.domain, owner, name) is not None:
            raise StanzaError("conflict", f"node {name!r} exists")
        with _node_quota():
            await self.storage.save_pep_node(self.host.domain, owner, node,
                                             max_nodes=self._max_nodes)
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
        with _node_quota():             # deleted meanwhile, this would create it again
            await self.storage.save_pep_node(self.host.domain, owner, node,
                                             max_nodes=self._max_nodes)

    async def delete(self, owner: str, action) -> None:
        node = await self._existing(owner, self._node_name(action))
        await self.storage.delete_pep_node(self.host.domain, owner, node.node)
        await self.notify(owner, node, E(f"{{{EVENT_NS}}}delete", {"node": node.node}))

    # notifications (XEP-0163 §4: see the module docstring) --------------------------------------
    async def on_caps(self, change: CapsChange) -> None:
        """A resource's caps are known, changed or gone: keep its ``+notify``
        nodes; send it the last item of each node it newly wants (§4.3.4)."""
        owner, jid = change.username, change.jid
        interested = self.interest.setdefault(owner, {})
        before = interested.pop(jid, frozenset())
        nodes = notify_nodes(change.features) if change.features is not None else frozenset()
        if nodes:
            interested[jid] = nodes
        if not interested:
            del self.interest[owner]
        if nodes - before:
            await self.send_last_items(owner, jid, nodes - before, on_presence=True)

    async def on_grant(self, share: PresenceShare) -> None:
        """The owner now shares presence with a contact: it is auto-subscribed
        (XEP-0060 §9.1.2), so its resources we know get the last items (§6.1.7)."""
        try:
            contact = JID.parse(share.contact)
        except JIDError:
            return
        for jid, nodes in list(self.interest.get(share.username, {}).items()):
            if jid.bare == contact:
                await self.send_last_items(share.username, jid, nodes, on_presence=False)

    async def send_last_items(self, owner: str, jid: JID, names: frozenset[str], *,
                              on_presence: bool) -> None:
        wanted = ("on_sub_and_presence",) if on_presence else ("on_sub", "on_sub_and_presence")
        nodes = [node for node in await self.storage.list_pep_nodes(self.host.domain, owner)
                 if node.node in names and send_last_published_item(node.config) in wanted]
        if not nodes:
            return
        audience = await self._audience(owner)
        for node in nodes:
            if not audience.may_receive(node, jid):
                continue
            items = await self.storage.get_pep_items(self.host.domain, owner, node.node,
                                                     max_items=1)
            if items:
                content = E(f"{{{EVENT_NS}}}items", {"node": node.node})
                content.append(_item_element(EVENT_NS, items[0]))
                await self._send(owner, jid, content, delayed=items[0].published_at)

    async def notify(self, owner: str, node: PepNode, content) -> None:
        """*content* (``<items/>`` or ``<delete/>``) to every resource that
        wants node's notifications and may have them."""
        targets = [jid for jid, nodes in self.interest.get(owner, {}).items()
                   if node.node in nodes]
        if not targets:
            return
        audience = await self._audience(owner)
        for jid in targets:
            if audience.may_receive(node, jid):
                await self._send(owner, jid, content)

    async def _audience(self, owner: str) -> Audience:
        _, roster = await self.host.rosters.get(owner)
        blocked = frozenset(await self.storage.get_blocklist(self.host.domain, owner))
        return Audience(JID(owner, self.host.domain), roster, blocked)

    async def _send(self, owner: str, to: JID, content, delayed: float | None = None) -> None:
        """A headline from the owner's bare JID (§4.3.1) to one full JID; the
        last item stamped with when it was published (XEP-0060 §6.1.7)."""
        local = self.host.server.hosts.get(to.domain)
        if local is not None and local.session(to) is None:
            return                  # gone meanwhile: not to the bare JID's other resources
        owner_jid = f"{owner}@{self.host.domain}"
        msg = E(MESSAGE, {"type": "headline", "from": owner_jid, "to": str(to), "id": new_id()})
        sub(msg, f"{{{EVENT_NS}}}event").append(_detached(content))
        if delayed:
            sub(msg, f"{{{DELAY_NS}}}delay", {"from": owner_jid,
                                              "stamp": timestamps.format(delayed)})
        await self.host.server.router.route(msg)


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
