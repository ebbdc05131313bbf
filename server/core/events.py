"""Named events with priorities — how modules hook into the server.

Names follow the stanza router: ``iq-get/host/urn:xmpp:ping:ping``,
``iq-set/self/jabber:iq:register:query``, ``message/bare``, ``presence/full``
(kind, then where it is addressed, then for IQs the payload's namespace and
name). Handlers run from the highest priority down; one that returns True has
handled the event and stops the chain. Handlers may be plain functions or
coroutines.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("xferd.events")


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
        self._added += 1
        handlers = self._handlers.setdefault(name, [])
        handlers.append(_Handler((-priority, self._added), fn))
        handlers.sort()

    def off(self, name: str, fn: Callable) -> None:
        handlers = self._handlers.get(name, [])
        self._handlers[name] = [h for h in handlers if h.fn is not fn]

    def has(self, name: str) -> bool:
        return bool(self._handlers.get(name))

    async def fire(self, name: str, event: Any) -> bool:
        """Run the handlers of *name*; True if one of them handled the event."""
        for handler in tuple(self._handlers.get(name, ())):
            outcome = handler.fn(event)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome is True:
                return True
        return False


# -- payloads of events that cross modules ---------------------------------------------

@dataclass
class RosterChange:
    """``roster-changed``: an item of *username*'s roster changed (``item`` None:
    removed). The roster module pushes it to the user's interested resources."""
    host: Any
    username: str
    jid: str
    item: Any                 # storage.api.RosterItem | None
    version: int


@dataclass
class PresenceShare:
    """``presence-grant`` / ``presence-revoke``: *username* now shares (or no
    longer shares) presence with *contact*; the presence module sends the
    resources' current presence (or unavailable) to the contact."""
    host: Any
    username: str
    contact: str              # bare JID
