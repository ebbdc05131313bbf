"""Named events with priorities — how modules hook into the server.

Two kinds of names:

* Stanza events, named by the router after the stanza and where it is
  addressed: ``iq-get/host/urn:xmpp:ping:ping``, ``iq-set/self/jabber:iq:register:query``
  (kind, destination, then for IQs the payload's namespace and name),
  ``message/bare``, ``presence/full``, the outbound hooks ``pre-iq``,
  ``pre-message``, ``pre-presence`` and the filters ``filter/in``,
  ``filter/out``. Their payload is the router's ``StanzaEvent``.
* Server events, listed in :data:`EVENTS` with the type of their payload
  (one small dataclass per kind).

Handlers run from the highest priority down; one that returns True has
handled the event and stops the chain. Handlers may be plain functions or
coroutines. Registering a handler for a name that is neither is an error
(:class:`UnknownEvent`) at start-up.
"""

from __future__ import annotations

import inspect
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable

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


#: server events: name → payload type
EVENTS: dict[str, type | tuple[type, ...] | None] = {
    "roster-changed": RosterChange,
    "presence-grant": PresenceShare,
    "presence-revoke": PresenceShare,
    # payload types below are still informal (a session, a tuple, the server)
    "presence-initial": None,
    "resource-unbind": None,
    "resource-bind": None,
    "login": None,
    "message-offline": None,
    "probe-unauthorized": None,
    "server-started": None,
    "server-stopping": None,
}


def is_known(name: str) -> bool:
    return name in EVENTS or _STANZA_EVENT.fullmatch(name) is not None


@dataclass(order=True)
class _Handler:
    sort_key: tuple
    fn: Callable = field(compare=False)


class EventBus:
    def __init__(self):
        self._handlers: dict[str, list[_Handler]] = {}
        self._added = 0

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
