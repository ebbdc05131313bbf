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
``[im] offline_quota`` per user and ``[im] offline_max_bytes`` bytes of them;
over either we decline, and the sender gets ``<service-unavailable/>``, as
the flow asks for a full queue (ejabberd's default queue is 100 messages,
its ``max_user_offline_messages``; Prosody's has no limit).

Delivering (step 5): when a resource sends its first available presence
with non-negative priority (``presence-initial``, fired by ``presence.py``
with a ``SessionEvent``), it gets every stored message, oldest first, each with a
``<delay xmlns='urn:xmpp:delay' from='<domain>' stamp='…Z'/>`` (XEP-0203,
XEP-0082 UTC time) saying when we stored it (unless it has one of ours
already: a message re-routed by stream management keeps the time it was
first sent); then the delivered messages
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

The queue is read and delivered a page at a time (up to ``PAGE_MESSAGES``
messages, about ``PAGE_BYTES`` bytes), oldest first; each page is deleted
once sent, and the next is sent only when the client has taken the last
one from our output buffer (at most ``DRAIN_TIMEOUT`` seconds: a client that
stops reading keeps the rest for its next login rather than the lock). So
delivering a long queue holds one page in memory, not the whole queue.

Service discovery: ``msgoffline``, the feature the XSF registry lists for
XEP-0160 (the XEP itself names none).
"""

from __future__ import annotations

import asyncio
import logging

from ..core.events import SessionEvent
from ..core.locks import KeyedLocks
from ..core.module import Hook, Module
from ..xmpp.hints import OfflineAction, offline_decision
from ..xmpp.stanza import from_text, stamp_delay, to_text

FEATURE = "msgoffline"

PAGE_MESSAGES = 256          # messages read from storage at once at login …
PAGE_BYTES = 512 * 1024      # … and about this many bytes of them
DRAIN_TIMEOUT = 30.0         # seconds a page may wait for the client to read the last

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
        im = host.global_config.im
        async with self.locks.hold(username):
            stored = await host.storage.store_offline(host.domain, username,
                                                      to_text(event.stanza),
                                                      quota=im.offline_quota,
                                                      max_bytes=im.offline_max_bytes)
        if not stored:
            log.info("offline queue of %s@%s is full (%d messages or %d bytes)", username,
                     host.domain, im.offline_quota, im.offline_max_bytes)
            return False
        # The user may have come online while the message was being written:
        # that resource's initial presence may have read the queue before the
        # message was in it. Deliver it now rather than at the next login —
        # not to a resource the sender blocked (``event.spared``), which is
        # why the message was kept although such a resource is available.
        willing = [s for s in host.available_sessions(username)
                   if s.priority >= 0 and str(s.jid) not in event.spared]
        if willing:
            await self._deliver_to(max(willing, key=lambda s: s.priority))
        return True

    async def deliver(self, event: SessionEvent) -> None:
        session = event.session
        if session.priority < 0 or session.jid is None:
            return
        await self._deliver_to(session)

    async def _deliver_to(self, session) -> None:
        """Send *session* every stored message, oldest first, a page at a
        time, deleting each page once sent (see the module docstring)."""
        host, username = self.host, session.jid.local
        async with self.locks.hold(username):
            after, first = 0, True
            while not session.closing:
                page = await host.storage.get_offline_page(
                    host.domain, username, after=after, max_count=PAGE_MESSAGES,
                    max_bytes=PAGE_BYTES)
                if not page:
                    return
                if not first and not await _drained(session):
                    log.info("%s did not read its offline messages within %.0f s: the rest "
                             "waits for its next login", session.jid, DRAIN_TIMEOUT)
                    return
                first, sent = False, []
                for message in page:
                    if session.closing:
                        break           # keep the rest for the next login
                    stanza = from_text(message.stanza)
                    stamp_delay(stanza, host.domain, message.stored_at)
                    session.send(stanza)
                    sent.append(message.id)
                del page
                if not sent:
                    return
                await host.storage.delete_offline(host.domain, username, sent)
                after = sent[-1]


async def _drained(session) -> bool:
    """Wait until *session*'s output buffer is down to the transport's low
    mark; False if the session closed or did not read for DRAIN_TIMEOUT."""
    session.flush()
    writer = getattr(session, "writer", None)
    if session.closing or writer is None or writer.transport is None:
        return False
    try:
        await asyncio.wait_for(writer.drain(), DRAIN_TIMEOUT)
    except (asyncio.TimeoutError, ConnectionError):
        return False
    return not session.closing


MODULE = Offline
