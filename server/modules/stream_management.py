"""XEP-0198 Stream Management, the host's part: the stream feature, the
sessions that may be resumed, and what happens to the stanzas a session
leaves unacknowledged when it ends for good.

The session's own part (counters, acks, hibernating, resuming) is in
``server/io/c2s.py`` and ``server/io/stream_management.py``.

Resumable sessions (§5) are found by their SM-ID, and only by a stream
authenticated as the same account; any other gets ``<item-not-found/>``
as an unknown id does (nothing tells a stranger an id exists). The ids and
final counts of the last :data:`EXPIRED_KEPT` sessions that ended are kept,
so a late ``<resume/>`` gets ``<failed h='…'/>`` (§5: "MAY also include a
'h' attribute").

Nothing is lost (§4: "A server SHOULD treat unacknowledged stanzas in the
same way that it would treat a stanza sent to an unavailable resource"):
when a session that enabled SM ends without being resumed — the client
closed its stream with stanzas unacknowledged, its connection broke and it
did not come back in time, or it had not asked for resumption — each
unacknowledged message worth keeping is handed to ``message/bare`` of the
user's bare JID once the session has left the host's registry, tagged
``redelivered`` (the archive and carbons have seen it already): another
available resource gets it, or offline storage. Worth keeping is what
offline storage would keep (``server/xmpp/hints.py``: not chat states
alone, not ``<no-store/>``); headlines, errors and groupchat are not
re-routed, nor are carbon copies and archive query results (XEP-0280,
XEP-0313): they are copies of messages the user has elsewhere. A message
with content and ``<no-store/>`` is not re-routed either; its sender gets
``<recipient-unavailable/>`` (RFC 6121 §8.5.2.2.1 answers a message that
is not stored with an error: the sender learns it may not have arrived).

Each re-routed message gets a XEP-0203 ``<delay/>`` saying when we first
sent it (§4: "servers SHOULD add a delay element with the original (failed)
delivery timestamp"), unless it has one of ours already (an offline message
being delivered when the connection broke: offline.py's stamp is the
older, truer one); offline.py in turn does not stamp a message that has
ours, so a message is never stamped twice by us. Unacknowledged IQ
requests are answered for the session with ``<recipient-unavailable/>``,
as Prosody does: the requester learns nobody will answer. Presence is
dropped: the unavailable presence the session's end broadcasts supersedes
it.
"""

from __future__ import annotations

import collections
import logging

from ..core.events import Lifecycle
from ..core.module import Hook, Module
from ..core.router import StanzaEvent
from ..xmpp import sm
from ..xmpp.errors import StanzaError
from ..xmpp.hints import OfflineAction, message_type, offline_decision
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import CARBONS_NS, CLIENT_NS, MAM_NS, SM_NS
from ..xmpp.stanza import error_reply, stamp_delay

log = logging.getLogger("xferd.sm")

#: ended resumable sessions whose id and count we remember (see the docstring)
EXPIRED_KEPT = 1000

#: copies of messages the user has elsewhere (XEP-0280 carbons, XEP-0313 results)
_NOT_MESSAGES = (f"{{{CARBONS_NS}}}sent", f"{{{CARBONS_NS}}}received", f"{{{MAM_NS}}}result")


class StreamManagement(Module):
    name = "stream_management"

    def __init__(self, host):
        super().__init__(host)
        self.config = host.global_config.stream_management
        if self.config.enabled:
            self.stream_features = ((SM_NS, "sm"),)
        #: SM-ID → the session it resumes (connected or hibernating)
        self.resumable: dict[str, object] = {}
        #: SM-ID → (username, h) of resumable sessions that ended
        self.expired: collections.OrderedDict[str, tuple[str, int]] = collections.OrderedDict()

    def hooks(self):
        return [Hook("server-stopping", self.stopping)]

    # -- the registry --------------------------------------------------------------------------
    def find(self, sm_id: str | None, username: str):
        """The resumable session *sm_id* of *username*, or None."""
        session = self.resumable.get(sm_id or "")
        return session if session is not None and session.username == username else None

    def last_count(self, sm_id: str | None, username: str) -> int | None:
        """The final ``h`` of *username*'s ended session *sm_id*, if we remember it."""
        known = self.expired.get(sm_id or "")
        return known[1] if known is not None and known[0] == username else None

    def forget(self, session) -> None:
        """*session* can no longer be resumed (it ended or was resumed)."""
        sm_state = session.sm
        if sm_state is None or sm_state.id is None:
            return
        if self.resumable.get(sm_state.id) is session:
            del self.resumable[sm_state.id]
            self.expired[sm_state.id] = (session.username, sm_state.handled)
            while len(self.expired) > EXPIRED_KEPT:
                self.expired.popitem(last=False)

    async def stopping(self, event: Lifecycle) -> None:
        """The server stops: end the hibernating sessions now, while storage
        is there for their messages (connected ones end with their streams)."""
        for session in [s for s in self.resumable.values() if s.hibernating]:
            await session.end_session("the server is shutting down")

    # -- nothing lost -------------------------------------------------------------------------
    async def redeliver(self, session, unacked: list) -> None:
        """Re-route what *session* (no longer in the registry) left
        unacknowledged (see the module docstring)."""
        rerouted = answered = 0
        for item in unacked:
            if item.kind == "presence":
                continue
            try:
                stanza = sm.reread(item, CLIENT_NS)
            except Exception:               # our own serialisation: should not happen
                log.exception("%r: unacknowledged stanza not re-read", session)
                continue
            try:
                if item.kind == "message":
                    rerouted += await self._reroute_message(session, stanza, item.at)
                elif item.kind == "iq" and stanza.get("type") in ("get", "set"):
                    answered += await self._answer_iq(session, stanza)
            except Exception:                   # one failure must not cost the rest
                log.exception("%r: an unacknowledged %s was not re-routed", session, item.kind)
        if rerouted or answered:
            log.info("%r ended with %d unacknowledged stanzas: %d messages re-routed, "
                     "%d requests answered", session, len(unacked), rerouted, answered)

    async def _reroute_message(self, session, stanza, sent_at: float) -> int:
        if message_type(stanza) in ("error", "groupchat", "headline") \
                or any(child.tag in _NOT_MESSAGES for child in stanza):
            return 0
        decision = offline_decision(stanza)
        if decision is OfflineAction.REFUSE:       # content the sender asked not to keep
            await self._bounce(stanza, "the recipient's connection was lost")
            return 0
        if decision is not OfflineAction.STORE:    # e.g. a chat state alone
            return 0
        host = self.host
        bare = session.jid.bare
        stanza.set("to", str(bare))
        stamp_delay(stanza, host.domain, sent_at)
        try:
            sender = JID.parse(stanza.get("from")) if stanza.get("from") else None
        except JIDError:
            sender = None
        router = host.server.router
        event = StanzaEvent(stanza, None, host, bare, sender, router)
        event.tags = {"redelivered"}
        # not to a resource whose stream is closing (e.g. all of them, at a
        # shutdown): what it does not acknowledge would be lost with it
        event.spared = frozenset(str(s.jid) for s in host.user_sessions(bare.local).values()
                                 if s.closing and not s.hibernating)
        try:
            await host.events.fire("message/bare", event)
        except StanzaError as err:
            # e.g. the offline queue is full: the sender learns it was not delivered
            if stanza.get("from"):
                await router.route(error_reply(stanza, err))
        return 1

    async def _answer_iq(self, session, stanza) -> int:
        if stanza.get("from") == str(session.jid):
            return 0
        return await self._bounce(stanza, "the recipient's connection was lost")

    async def _bounce(self, stanza, text: str) -> int:
        """``<recipient-unavailable/>`` to the sender (Prosody's answer for
        what a lost session did not acknowledge)."""
        if not stanza.get("from"):
            return 0
        err = StanzaError("recipient-unavailable", text)
        await self.host.server.router.route(error_reply(stanza, err))
        return 1


MODULE = StreamManagement
