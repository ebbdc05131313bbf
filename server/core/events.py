"""Named events with priorities — how modules hook into the server.

Two kinds of names:

* Stanza events, named by the router after the stanza and where it is
  addressed: ``iq-get/host/urn:xmpp:ping:ping``, ``iq-set/self/jabber:iq:register:query``
  (kind, destination, then for IQs the payload's namespace and name),
  ``message/bare``, ``presence/full``, the outbound hooks ``pre-iq``,
  ``pre-message``, ``pre-presence`` and the filters ``filter/in``,
  ``filter/out``. Their payload is the router's ``StanzaEvent``.
* Server events, listed in :data:`EVENTS` with the type of their payload
  (one small dataclass per kind; two of them hand on the router's
  ``StanzaEvent`` of the stanza being handled).

Handlers run from the highest priority down; one that returns True has
handled the event and stops the chain. Handlers may be plain functions or
coroutines. Registering a handler for a name that is neither is an error
(:class:`UnknownEvent`) at start-up.

Payload types are not checked on the hot path: ``EventBus(check_payloads=True)``
(what the test servers run with, see ``server/core/hosts.py``) checks every
fire against :data:`EVENTS`, or ``StanzaEvent`` for stanza events.
"""

from __future__ import annotations

import inspect
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .router import StanzaEvent

log = logging.getLogger("xferd.events")


class UnknownEvent(ValueError):
    """A handler was registered for an event nobody fires (a typo)."""


_DESTINATIONS = "host|self|bare|full"
_STANZA_EVENT = re.compile(
    rf"(?:pre-(?:iq|message|presence)|filter/(?:in|out)"
    rf"|(?:iq|message|presence)/(?:{_DESTINATIONS})"
    rf"|iq-(?:get|set)/(?:{_DESTINATIONS}|unauthenticated)/\S+:[^\s:/]+)")


# -- payloads of server events ------------------------------------------------------------

@dataclass
class RosterChange:
    """``roster-changed``: an item of *username*'s roster changed (``item`` None:
    removed), as version *version* of the roster."""
    host: Any
    username: str
    jid: str
    item: Any                 # server.xmpp.roster.RosterItem | None
    version: int


@dataclass
class PresenceShare:
    """``presence-grant`` / ``presence-revoke``: *username* now shares (or no
    longer shares) presence with *contact*; the presence module sends the
    resources' current presence (or unavailable) to the contact."""
    host: Any
    username: str
    contact: str              # bare JID


@dataclass
class SessionEvent:
    """``presence-initial``: *session* sent its first available presence
    (fired by the presence module once the broadcast and probes went out).
    ``resource-unbind``: *session*'s bound resource is gone (the stream
    closed; fired by c2s after the session left the host's registry)."""
    session: Any              # server.io.c2s.C2SSession, bound: .jid is a full JID


@dataclass
class CapsChange:
    """``caps-changed``: what the caps module (XEP-0115) knows of *jid*, a full
    JID whose presence reaches *username* (one of the user's own resources or a
    contact's): the disco#info features of its caps, or None once it is
    unavailable (or no longer tracked)."""
    host: Any
    username: str
    jid: Any                  # server.xmpp.jid.JID, full
    features: frozenset | None


@dataclass
class Login:
    """``login``: *session* proved it is *username* (SASL success is not sent
    yet). A handler may refuse the login by raising ``sasl.SaslFailure``."""
    session: Any              # server.io.c2s.C2SSession, not bound yet
    username: str


@dataclass
class Lifecycle:
    """``server-started``: every listener is open (e.g. resume work left
    over). ``server-stopping``: the listeners are closed, sessions and
    storage still there (e.g. flush what is held)."""
    server: Any               # server.core.service.Xferd


#: server events: name → payload type
EVENTS: dict[str, type] = {
    "roster-changed": RosterChange,
    "presence-grant": PresenceShare,
    "presence-revoke": PresenceShare,
    "presence-initial": SessionEvent,
    "resource-unbind": SessionEvent,
    "caps-changed": CapsChange,
    "login": Login,
    # the router's event of the message to store (fired by message.py when no
    # resource takes it; True: stored, or dropped on purpose)
    "message-offline": StanzaEvent,
    # the router's event of a probe from someone without a subscription (fired
    # by presence.py; True: do not answer it with unsubscribed)
    "probe-unauthorized": StanzaEvent,
    "server-started": Lifecycle,
    "server-stopping": Lifecycle,
}


def is_known(name: str) -> bool:
    return name in EVENTS or _STANZA_EVENT.fullmatch(name) is not None


@dataclass(order=True)
class _Handler:
    sort_key: tuple
    fn: Callable = field(compare=False)


class EventBus:
    def __init__(self, *, check_payloads: bool = False):
        self._handlers: dict[str, list[_Handler]] = {}
        self._added = 0
        if check_payloads:                  # the unchecked fire stays as it is
            self.fire = self._checked_fire

    def on(self, name: str, fn: Callable, priority: int = 0) -> None:
        """Call *fn(event)* when *name* fires; higher *priority* runs first."""
        if not is_known(name):
            raise UnknownEvent(f"no event is called {name!r}")
        self._added += 1
        handlers = self._handlers.setdefault(name, [])
        handlers.append(_Handler((-priority, self._added), fn))
        handlers.sort()

    async def fire(self, name: str, event: Any) -> bool:
        """Run the handlers of *name*; True if one of them handled the event."""
        for handler in tuple(self._handlers.get(name, ())):
            outcome = handler.fn(event)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome is True:
                return True
        return False

    async def _checked_fire(self, name: str, event: Any) -> bool:
        expected = payload_type(name)
        if not isinstance(event, expected):
            raise TypeError(f"{name!r} fired with a {type(event).__name__}, "
                            f"not a {expected.__name__}")
        return await EventBus.fire(self, name, event)


def payload_type(name: str) -> type:
    """The type of *name*'s payload (UnknownEvent for an unknown name)."""
    if name in EVENTS:
        return EVENTS[name]
    if _STANZA_EVENT.fullmatch(name) is not None:
        return StanzaEvent
    raise UnknownEvent(f"no event is called {name!r}")
