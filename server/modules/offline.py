"""XEP-0160 Best Practices for Handling Offline Messages, with XEP-0203
Delayed Delivery stamps.

Storing (steps 2–4 of XEP-0160's recommended flow): ``message.py`` fires
``message-offline`` (with the router's event of the message) when a
message to a user finds no available resource with non-negative priority.
What is kept is decided by ``server/xmpp/hints.py`` (RFC 6121 §8.5.2.2.1,
XEP-0160 §3, XEP-0334 hints, XEP-0085 §5.8): ``normal`` and ``chat``
messages with content, and whatever carries a ``<store/>`` hint; a message
of chat states only ("typing…"), a headline, or anything with
``<no-store/>`` is not. What is not kept is either dropped silently (we
*handle* the event: no error for every notification sent to an offline
contact) or refused (a message with content and ``<no-store/>``: the sender
gets ``<service-unavailable/>``, as RFC 6121 §8.5.2.2.1 asks for a message
that is not stored). We keep messages as XML text, up to
``[im] offline_quota`` per user; over quota we decline, and the sender gets
``<service-unavailable/>``, as the flow asks for a full queue.

Delivering (step 5): when a resource sends its first available presence
with non-negative priority (``presence-initial``, fired by ``presence.py``
with a ``SessionEvent``), it gets every stored message, oldest first, each with a
``<delay xmlns='urn:xmpp:delay' from='<domain>' stamp='…Z'/>`` (XEP-0203,
XEP-0082 UTC time) saying when we stored it; then the delivered messages
are deleted. A resource whose initial presence has a negative priority
gets nothing: the messages wait for the next non-negative initial presence. Deviation: a
resource that raises its priority later in the same session is not offered
them (that would need a "priority changed" event). A message arriving
while the stored ones are being read may reach the resource before them; one
that was being stored as the user came online is delivered as soon as it is
stored (its write and the delivery take the same per-user lock, so it is
either in the queue read at login or found available afterwards).
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
from ..xmpp.hints import OfflineAction, offline_decision
from ..xmpp.namespaces import DELAY_NS
from ..xmpp.stanza import from_text, sub, to_text

FEATURE = "msgoffline"

log = logging.getLogger("xferd.offline")


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
        decision = offline_decision(event.stanza)
        if decision is OfflineAction.DROP:
            return True                 # dropped on purpose: nothing to bounce
        if decision is OfflineAction.REFUSE:
            return False                # message.py answers <service-unavailable/>
        host = self.host
        username = event.to.local
        quota = host.global_config.im.offline_quota
        async with self.locks.hold(username):
            stored = await host.storage.store_offline(host.domain, username,
                                                      to_text(event.stanza), quota=quota)
        if not stored:
            log.info("offline queue of %s@%s is full (%d)", username, host.domain, quota)
            return False
        # The user may have come online while the message was being written:
        # that resource's initial presence may have read the queue before the
        # message was in it. Deliver it now rather than at the next login.
        willing = [s for s in host.available_sessions(username) if s.priority >= 0]
        if willing:
            await self._deliver_to(max(willing, key=lambda s: s.priority))
        return True

    async def deliver(self, event: SessionEvent) -> None:
        session = event.session
        if session.priority < 0 or session.jid is None:
            return
        await self._deliver_to(session)

    async def _deliver_to(self, session) -> None:
        """Send *session* every stored message, oldest first, then delete them."""
        host, username = self.host, session.jid.local
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
