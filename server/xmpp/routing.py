"""Routing decisions as pure functions (RFC 6120 §8.2.3 and §10, RFC 6121 §8.5).

``server/core/router.py`` owns the I/O — it looks up hosts and sessions,
fires events and sends errors. Everything it decides from the stanza and the
two addresses alone lives here, so it can be read beside the RFC text and
unit-tested by feeding stanzas (``tests/unit/test_routing.py``).

The routing table, one stanza at a time:

1. :func:`iq_problem` — RFC 6120 §8.2.3: an IQ needs an ``id``, a ``type``
   of get/set/result/error, and get/set carry exactly one payload. A problem
   is answered with ``<bad-request/>``. :func:`presence_problem` — RFC 6121
   §4.7.1: a presence ``type``, if there is one, is one of seven values;
   another is ``<bad-request/>`` too (as Prosody answers), rather than being
   passed on for every contact's client to guess at.
2. :func:`recipient` — RFC 6120 §10.3: no ``to`` means the sender's own
   account (its bare JID).
3. :func:`destination` — which of ``host`` (the domain), ``self`` (the
   sender's own bare JID), ``bare`` or ``full`` the address is. A JID of the
   form domain/resource counts as ``full`` (nobody binds such a session, so
   it ends in the defaults of step 5).
4. :func:`event_names` — the events fired, most specific first: the stanza
   kind (``iq-get``/``iq-set`` with the payload's ``namespace:name``, plain
   ``iq`` for result/error, ``message``, ``presence``) and the destination;
   ``self`` falls back to ``bare``.
5. :func:`default_action` — nobody handled it: deliver it to the addressed
   session, answer ``<service-unavailable/>``, or drop it.

And :func:`bare_message_receivers`, which of a user's resources get a message
sent to the bare JID (``modules/message.py`` delivers to them; message
carbons copy to the others).

Allocation-light on purpose: these run for every stanza. Names for message,
presence and IQ results are prebuilt tuples; an IQ get/set builds one or two
strings.

Known differences from the RFC text (documented, not yet changed):

- §8.2.3 rules 6 and 7 (a ``result`` has at most one child, an ``error``
  has an ``<error/>`` child) are not checked: such IQs are routed as they
  are, as Prosody does. Only their recipient can notice; the sender could
  not be told, since a result or error is never answered (rule 4, §8.3.1).
- :func:`default_action` answers a message of type ``groupchat``/``normal``/
  ``chat`` to a domain or domain/resource with ``<service-unavailable/>``
  (RFC 6120 §10.5.1/§10.5.2 allow handling or an error: we pick the error),
  and drops presence and headline messages there.
"""

from __future__ import annotations

from .jid import JID
from .stanza import IQ, MESSAGE, PRESENCE

__all__ = [
    "KINDS", "IQ_TYPES", "DESTINATIONS", "DELIVER", "SERVICE_UNAVAILABLE", "DROP",
    "iq_problem", "presence_problem", "PRESENCE_TYPES", "recipient", "destination", "event_names", "default_action",
    "bare_message_receivers",
]

#: stanza tag → the kind that names its events
KINDS = {IQ: "iq", MESSAGE: "message", PRESENCE: "presence"}
#: RFC 6120 §8.2.3 rule 2: the only IQ types
IQ_TYPES = frozenset({"get", "set", "result", "error"})
DESTINATIONS = ("host", "self", "bare", "full")
#: RFC 6121 §4.7.1: the presence types (none at all means available)
PRESENCE_TYPES = frozenset({"error", "probe", "subscribe", "subscribed", "unavailable",
                            "unsubscribe", "unsubscribed"})

# what default_action() decides
DELIVER = "deliver"                         # to the session the full JID names
SERVICE_UNAVAILABLE = "service-unavailable"  # answer with that stanza error
DROP = "drop"                               # silently ignore


def iq_problem(stanza) -> str | None:
    """Why *stanza* (an ``<iq/>``) breaks RFC 6120 §8.2.3, or None if it does not.

    Checked: ``type`` is one of get/set/result/error (rule 2), ``id`` is
    present and not empty (rule 1), get/set have exactly one child (rule 5).
    """
    iq_type = stanza.get("type")
    if iq_type not in IQ_TYPES:
        return f"invalid IQ type {iq_type!r}"
    if not stanza.get("id"):
        return "IQ without id"
    if iq_type in ("get", "set") and len(stanza) != 1:
        return "IQ get/set must have exactly one payload"
    return None


def presence_problem(stanza) -> str | None:
    """Why *stanza* (a ``<presence/>``) breaks RFC 6121 §4.7.1 ("the 'type'
    attribute MUST have one of the following values"), or None."""
    kind = stanza.get("type")
    if kind is None or kind in PRESENCE_TYPES:
        return None
    return f"invalid presence type {kind!r}"


def recipient(to: JID | None, from_: JID | None) -> JID | None:
    """The address a stanza is for (RFC 6120 §10.3): *to*, or with no ``to``
    the sender's own account (its bare JID); None if there is neither."""
    if to is not None:
        return to
    return from_.bare if from_ is not None else None


def destination(to: JID, from_: JID | None) -> str:
    """``host``, ``self``, ``bare`` or ``full``: the form of *to* (RFC 6121
    §8.5: domain, bare JID, full JID), ``self`` when a bare *to* is the
    sender's own account."""
    if to.local is None:
        return "host" if to.resource is None else "full"
    if to.resource is not None:
        return "full"
    if from_ is not None and from_.local == to.local and from_.domain == to.domain:
        return "self"                       # from_.bare == to, without building it
    return "bare"


def _fallbacks(dest: str) -> tuple[str, ...]:
    return (dest, "bare") if dest == "self" else (dest,)


#: (kind, dest) → names, for every stanza whose names do not depend on a payload
_FIXED_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    kind: {dest: tuple(f"{kind}/{d}" for d in _fallbacks(dest)) for dest in DESTINATIONS}
    for kind in ("iq", "message", "presence")
}


def event_names(stanza, kind: str, dest: str) -> tuple[str, ...]:
    """The events *stanza* fires, most specific first (``self`` falls back to ``bare``).

    ``iq-get/host/urn:xmpp:ping:ping`` for an IQ get/set (the payload's
    namespace, or ``None`` without one, then its local name); ``iq/full``
    for results and errors; ``message/bare``, ``presence/self`` … otherwise.
    The IQ must have passed :func:`iq_problem`.
    """
    if kind == "iq":
        iq_type = stanza.get("type")
        if iq_type == "get" or iq_type == "set":
            tag = stanza[0].tag
            if tag[0] == "{":
                payload = tag[1:].replace("}", ":", 1)
            else:
                payload = "None:" + tag
            if dest == "self":
                return (f"iq-{iq_type}/self/{payload}", f"iq-{iq_type}/bare/{payload}")
            return (f"iq-{iq_type}/{dest}/{payload}",)
    return _FIXED_NAMES[kind][dest]


def default_action(kind: str, stanza_type: str | None, dest: str, has_session: bool) -> str:
    """What to do with a stanza no module handled: :data:`DELIVER`,
    :data:`SERVICE_UNAVAILABLE` or :data:`DROP`.

    *has_session* says whether a session is bound to the full JID the stanza
    is addressed to (only looked at when *dest* is ``full``).

    - Any stanza to a connected full JID is delivered to it (RFC 6121
      §8.5.3.1; RFC 6120 §10.5.4).
    - An IQ get/set that reaches here is ``<service-unavailable/>``
      (RFC 6121 §8.5.2.1.3, §8.5.2.2.3, §8.5.3.2.3; RFC 6120 §8.2.3 rule 3);
      an IQ result/error is dropped (rule 4: never answer those).
    - A message is ``<service-unavailable/>`` unless it is an ``error`` or a
      ``headline`` (RFC 6121 §8.5.2.2.1, §8.5.3.2.1 allow ignoring or
      bouncing; errors are never answered with errors, RFC 6120 §8.3.1).
      Messages to users are normally taken by ``modules/message.py`` first.
    - Presence nobody wanted is dropped (RFC 6121 §8.5.2.2.2, §8.5.3.2.2).
    """
    if has_session and dest == "full":
        return DELIVER
    if kind == "iq":
        return SERVICE_UNAVAILABLE if stanza_type in ("get", "set") else DROP
    if kind == "message" and stanza_type not in ("error", "headline"):
        return SERVICE_UNAVAILABLE
    return DROP


def bare_message_receivers(available, kind: str, spared: frozenset[str] = frozenset()) -> list:
    """The sessions among *available* (a user's available sessions) that a
    message of *kind* sent to the bare JID goes to (RFC 6121 §8.5.2.1.1,
    "most available"): those with the highest non-negative priority, every
    non-negative one for a ``headline``; never a resource the sender blocked
    (*spared*, full JIDs: XEP-0191 §3.3). May be empty."""
    willing = [s for s in available if s.priority >= 0 and str(s.jid) not in spared]
    if kind == "headline" or not willing:
        return willing
    top = max(s.priority for s in willing)
    return [s for s in willing if s.priority == top]
