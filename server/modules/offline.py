"""XEP-0160 Best Practices for Handling Offline Messages, with XEP-0203
Delayed Delivery stamps.

Storing (steps 2–4 of XEP-0160's recommended flow): ``message.py`` fires
``message-offline`` (with the router's event of the message) when a
``normal`` or ``chat`` message finds no available resource with
non-negative priority. We keep it, as XML text, up
to ``[im] offline_quota`` messages per user; over quota we decline, and the
sender gets ``<service-unavailable/>``, as the flow asks for a full queue.

What is worth keeping (XEP-0160 "Handling of Message Types"): ``normal``
and ``chat`` messages with at least one child outside the chat state
namespace (XEP-0085) — a body, a receipt, a subject, an extension. A
message of chat states only ("typing…") SHOULD NOT be stored: we drop it
silently (we *handle* the event) rather than bounce an error for every
notification sent to an offline contact.

Delivering (step 5): when a resource sends its first available presence
with non-negative priority (``presence-initial``, fired by ``presence.py``
with a ``SessionEvent``), it gets every stored message, oldest first, each with a
``<delay xmlns='urn:xmpp:delay' from='<domain>' stamp='…Z'/>`` (XEP-0203,
XEP-0082 UTC time) saying when we stored it; then the delivered messages
are deleted. A resource whose initial presence has a negative priority
gets nothing: the messages wait for the next non-negative initial presence. Deviation: a
resource that raises its priority later in the same session is not offered
them (that would need a "priority changed" event). A message arriving
while the stored ones are being read may reach the resource before them.
A per-user lock (``server/core/locks.py``) keeps two resources logging in
together from both receiving the same messages.

Service discovery: ``msgoffline``, the feature the XSF registry lists for
XEP-0160 (the XEP itself names none).
"""

from __future__ import annotations

import logging

from ..core.events import SessionEvent
from ..core.locks import KeyedLocks
from ..core.module import Hook, Module
from ..xmpp import timestamps
from ..xmpp.namespaces import CHATSTATES_NS, DELAY_NS
from ..xmpp.stanza import from_text, sub, to_text

FEATURE = "msgoffline"

log = logging.getLogger("xferd.offline")


def worth_storing(stanza) -> bool:
    """True if the message says more than a chat state (see the docstring)."""
    return any(isinstance(child.tag, str) and not child.tag.startswith(f"{{{CHATSTATES_NS}}}")
               for child in stanza)


class Offline(Module):
    name = "offline"
    # message fires message-offline, presence fires presence-initial: without
    # them nothing would be stored or nothing delivered
    depends = ("message", "presence")
    features = (FEATURE,)

    def __init__(self, host):
        super().__init__(host)
        self.locks = KeyedLocks()           # username → delivering to one resource

    def hooks(self):
        return [Hook("message-offline", self.store),
                Hook("presence-initial", self.deliver)]

    async def store(self, event) -> bool:
        if not worth_storing(event.stanza):
            return True                 # dropped on purpose: nothing to bounce
        host = self.host
        username = event.to.local
        quota = host.global_config.im.offline_quota
        stored = await host.storage.store_offline(host.domain, username,
                                                  to_text(event.stanza), quota=quota)
        if not stored:
            log.info("offline queue of %s@%s is full (%d)", username, host.domain, quota)
        return stored

    async def deliver(self, event: SessionEvent) -> None:
        session, host = event.session, self.host
        if session.priority < 0 or session.jid is None:
            return
        username = session.jid.local
        async with self.locks.hold(username):
            messages = await host.storage.get_offline(host.domain, username)
            sent = []
            for message in messages:
                if session.closing:
                    break               # keep the rest for the next login
                stanza = from_text(message.stanza)
                sub(stanza, f"{{{DELAY_NS}}}delay",
                    {"from": host.domain, "stamp": timestamps.format(message.stored_at)})
                session.send(stanza)
                sent.append(message.id)
            if sent:
                await host.storage.delete_offline(host.domain, username, sent)


MODULE = Offline
