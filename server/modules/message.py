"""RFC 6121 §8.5: delivering messages to this host's users.

Messages to a bare JID (§8.5.2), by type:

- ``normal`` / ``chat`` (and unknown types, which §5.2.2 says to treat as
  ``normal``): of the options §8.5.2.1.1 allows we pick "most available":
  the available resources with the highest non-negative priority get it —
  all of them when several share that priority. With no such resource
  (offline, or only negative priorities) the ``message-offline`` event asks
  offline storage (``offline.py``) to keep it; if nobody does, the sender
  gets ``<service-unavailable/>`` (§8.5.2.2.1).
- ``headline``: every available resource with non-negative priority. With
  none, ``message-offline`` is asked too (a XEP-0334 ``<store/>`` hint may
  ask for a headline to be kept; ``server/xmpp/hints.py`` decides); if
  nobody keeps it, it is silently dropped (§8.5.2.2.1).
- ``groupchat``: users are not rooms — ``<service-unavailable/>``.
- ``error``: dropped; errors are never answered with errors.

Messages to a full JID (§8.5.3): a *connected* resource (bound, even if it
never sent presence: §8.5.3.1, RFC 6120 §10.5.4) gets it whatever its type. When no
such resource is bound, ``groupchat`` gets ``<service-unavailable/>``,
``error`` is dropped and ``chat`` is handled as if sent to the bare JID
(§8.5.3.2.1). Deviation: §8.5.3.2.1 lets a server drop or bounce ``normal``
and ``headline`` here; like Prosody we handle them as if sent to the bare
JID too, so a normal message to a resource that just reconnected under
another name is delivered or stored rather than lost.

No such account (§8.5.1 allows dropping or bouncing): ``<service-unavailable/>``
for every type except ``headline`` and ``error``, which are dropped.

Our handlers run last (priority -1), so a module that wants to look at a
message first (carbons, archiving, …) hooks the same events at a higher
priority. Which resources get a bare-JID message is
``routing.bare_message_receivers`` (carbons needs the same answer).
"""

from __future__ import annotations

from ..core.module import Hook, Module
from ..xmpp.errors import StanzaError
from ..xmpp.hints import message_type as _message_type
from ..xmpp.routing import bare_message_receivers


class Message(Module):
    name = "message"

    def hooks(self):
        return [Hook("message/bare", self.to_bare, priority=-1),
                Hook("message/full", self.to_full, priority=-1)]

    async def to_bare(self, event) -> bool:
        """§8.5.1 and §8.5.2: a message to an account rather than a resource."""
        stanza = event.stanza
        kind = _message_type(stanza)
        if kind == "error":
            return True
        if not await self._account_exists(event.to.local):
            if kind == "headline":
                return True
            raise StanzaError("service-unavailable")
        if kind == "groupchat":
            raise StanzaError("service-unavailable", "this is a user, not a room")
        receivers = self._receivers(event.to.local, kind, event.spared)
        for session in receivers:
            session.send(stanza)
        if receivers:
            return True
        if await self.host.events.fire("message-offline", event):
            return True
        if kind == "headline":
            return True                 # §8.5.2.2.1: silently ignored
        raise StanzaError("service-unavailable", "the recipient is offline")

    async def to_full(self, event) -> bool:
        """§8.5.3: a message to one resource."""
        session = self.host.session(event.to)
        if session is not None:
            session.send(event.stanza)
            return True
        kind = _message_type(event.stanza)
        if kind == "error":
            return True
        if kind == "groupchat":
            raise StanzaError("service-unavailable", "that resource is not connected")
        return await self.to_bare(event)

    async def _account_exists(self, username: str) -> bool:
        """A bound session proves the account; otherwise ask storage."""
        return bool(self.host.user_sessions(username)) or \
            await self.host.storage.user_exists(self.host.domain, username)

    def _receivers(self, username: str, kind: str, spared: frozenset[str] = frozenset()) -> list:
        """The sessions a bare-JID message of *kind* goes to (may be empty),
        leaving out the resources the sender blocked (*spared*: XEP-0191
        §3.3, a block of ``user@domain/resource`` covers that resource only)."""
        return bare_message_receivers(self.host.available_sessions(username), kind, spared)


MODULE = Message
