"""XEP-0198 Stream Management of one client session: its counters and
unacknowledged stanzas (:class:`SessionSM`), and the session's life across
connections (:class:`ManagedSession`, a part of ``c2s.py``'s session class).

A session is one object from bind to its end, whatever connections carry
it. When the connection of a resumable session breaks (no
``</stream:stream>`` and no stream error from either side) the session
*hibernates*: it stays bound in the host's registry with its presence,
roster interest, directed presence and whatever modules keep on it, and
what is sent to it waits in its queue — until a new connection
authenticated as the same account resumes it (§5) or ``[stream_management]
resume_timeout`` (or the client's own ``max``, up to
``max_resume_timeout``) runs out. Resuming moves the new connection's
socket, parser and reading into the hibernating session object (``net.py``:
``handed_over``); the object that authenticated the new connection is
dropped. A session resumed while its old connection is still up takes
over: the old connection gets ``<conflict/>`` (§5: "the server SHOULD send
a 'conflict' stream error"). Only when the session ends for good does its
resource unbind (``resource-unbind``: unavailable presence and the rest),
and ``server/modules/stream_management.py`` (which also keeps the resumable
sessions by id) re-routes what it left unacknowledged.

Asking for acks (§4 leaves it to us, "e.g. after it has received a certain
number of stanzas, or after a certain period of time"): once
``[stream_management] ack_request_after`` stanzas are unacknowledged we send
``<r/>`` with them (one write: the request travels in the same loop turn as
the stanza); fewer wait at most ``ack_request_delay`` seconds. One request
is outstanding at a time, and none is repeated for the same count (Prosody
does the same: a client that answers with a stale ``h`` does not make us
loop). ``<a/>`` that leaves enough unacknowledged asks again.

Memory: an account has at most ``max_hibernating`` sessions waiting to be
resumed (a cut connection no longer counts against the per-address limit:
without this, a user could leave any number behind); beyond it, the one
that has waited longest ends. At most ``max_unacked`` stanzas and
``max_unacked_bytes`` of them are held per session, as the text they were
written as. A client that enabled SM and lets more pile up (it never acks,
or it is gone and hibernating) loses the session: a connected one gets the
stream error ``<resource-constraint/>``; a hibernating one is ended as if
its resumption time had run out. Either way its unacknowledged messages
are re-routed (another resource, offline storage), so the limit costs
nothing that mattered. Prosody's default queue is 500 stanzas too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING

from ..core.events import SessionEvent
from ..xmpp import sm
from ..xmpp.errors import StreamError
from ..xmpp.negotiation import Phase
from ..xmpp.stanza import STANZA_TAGS, local_name, stamp_delay
from ..xmpp.stream import serialize

if TYPE_CHECKING:
    from ..config import StreamManagementConfig

log = logging.getLogger("xferd.c2s")      # a part of the c2s session


class SessionSM:
    """Counters and queue of one session that enabled SM."""

    def __init__(self, config: "StreamManagementConfig", *, sm_id: str | None = None,
                 timeout: int = 0):
        self.config = config
        self.unacked = sm.Unacked()
        self.handled = 0                  # stanzas from the client handled, mod 2^32
        self.id = sm_id                   # set: resumable (§5)
        self.timeout = timeout            # seconds it may wait for resumption
        self._requested_at: int | None = None   # our sent count when we last asked
        self._awaiting = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def resumable(self) -> bool:
        return self.id is not None

    def handled_one(self) -> None:
        self.handled = sm.increment(self.handled)

    def sent(self, element, text: str) -> None:
        """Queue a stanza we sent (or would have sent, while hibernating)."""
        self.unacked.push(sm.Sent(text, time.time(), local_name(element)))

    @property
    def over_limit(self) -> bool:
        return len(self.unacked) > self.config.max_unacked or \
            self.unacked.size > self.config.max_unacked_bytes

    # -- asking for acks ---------------------------------------------------------------------
    def after_send(self, session) -> None:
        """A stanza went out on a live connection: ask for an ack now, or soon."""
        if self._awaiting or not self.unacked:
            return
        if len(self.unacked) >= self.config.ack_request_after:
            self.request(session)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.config.ack_request_delay, self._timer_fired, session)

    def _timer_fired(self, session) -> None:
        self._timer = None
        if not self._awaiting and self.unacked and not session.closing:
            self.request(session)

    def request(self, session) -> None:
        """Send ``<r/>`` unless we already asked at this count."""
        if self._requested_at == self.unacked.sent:
            return
        self._requested_at = self.unacked.sent
        self._awaiting = True
        session.send(sm.request())

    def acked(self, h: int, session) -> int:
        """The client's ``<a h='…'/>``: free what it handled; ask again when
        enough is still unacknowledged. Raises HandledCountTooHigh."""
        freed = self.unacked.ack(h)
        self._awaiting = False
        self.stop_timer()
        self.after_send(session)
        return freed

    def connection_changed(self) -> None:
        """The connection died or a new one took over: no request is pending
        on the new one, and a repeat at the same count is allowed."""
        self._awaiting = False
        self._requested_at = None
        self.stop_timer()

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ManagedSession:
    """The XEP-0198 part of ``C2SSession`` (a base class of it, before
    ``StreamConnection``): hibernating, ending, resuming, and the ``on_sm_*``
    actions of the negotiation table."""

    def _init_stream_management(self) -> None:
        self.sm: SessionSM | None = None      # set by <enable/>
        self.hibernating = False              # bound, connection lost, may be resumed
        self._stream_ended = False            # </stream:stream> or a stream error, either side
        self._taken_over = False              # its session went on on another connection
        self._session_over = False
        self._end_scheduled = False
        self._hibernation: asyncio.TimerHandle | None = None
        self._hibernated_at = 0.0
        #: set while no connection is being read for this object
        self.connection_gone = asyncio.Event()

    async def connection_over(self) -> None:
        """The connection of a bound session ended: hibernate, or end the session."""
        if self.sm is not None and self.sm.resumable and not self._stream_ended:
            self._hibernate()
        else:
            await self.end_session()

    def close(self) -> None:
        self._stream_ended = True           # ended on purpose: no hibernation
        super().close()

    def stream_error(self, condition: str, text: str | None = None, detail=None) -> None:
        if self.hibernating:
            # no stream to end: the session itself goes (e.g. its account was deleted)
            self._end_soon(condition)
            return
        super().stream_error(condition, text, detail)

    def _hibernate(self) -> None:
        loop = asyncio.get_running_loop()
        self.hibernating = True
        self._hibernated_at = loop.time()
        self.sm.connection_changed()
        self._hibernation = loop.call_later(self.sm.timeout, self._end_soon,
                                            "not resumed in time")
        log.info("%r: connection lost; waiting %d s for the session to be resumed",
                 self, self.sm.timeout)
        # an account's connections are limited while they last, not once cut:
        # beyond the limit the longest-waiting session of the account goes
        waiting = [s for s in self.host.user_sessions(self.username).values()
                   if s.hibernating and not s._end_scheduled]
        if len(waiting) > self.sm.config.max_hibernating:
            min(waiting, key=lambda s: s._hibernated_at)._end_soon(
                "too many sessions of the account waiting to be resumed")

    def _end_soon(self, why: str) -> None:
        if not self._end_scheduled:
            self._end_scheduled = True
            _spawn(self.end_session(why))

    async def end_session(self, why: str | None = None) -> None:
        """The session is over for good: unbind the resource, re-route what
        was not acknowledged (XEP-0198 §4). Once only."""
        if self._session_over:
            return
        self._session_over = True
        if self._hibernation is not None:
            self._hibernation.cancel()
            self._hibernation = None
        was_hibernating, self.hibernating = self.hibernating, False
        module = self._sm_module()
        if module is not None:
            module.forget(self)
        self.host.remove_session(self)
        await self.host.events.fire("resource-unbind", SessionEvent(self))
        if self.sm is not None:
            self.sm.stop_timer()
            unacked = self.sm.unacked.drain()
            if unacked and module is not None:
                await module.redeliver(self, unacked)
        log.debug("%r: closed%s", self, f" ({why})" if why else
                  " (hibernation ended)" if was_hibernating else "")

    def send(self, element) -> None:
        """Queue *element*; a stanza is also kept until the client acknowledges
        it once SM is enabled — even while the session hibernates (XEP-0198 §4)."""
        sm_state = self.sm
        if sm_state is None or element.tag not in STANZA_TAGS or self._session_over:
            return super().send(element)
        text = serialize(element, stream_ns=self.content_ns)
        sm_state.sent(element, text)
        if not self.closing and not self._transport_gone():
            self.tracer.element("send", element)
            self._queue(text.encode())
            if sm_state.over_limit:
                log.info("%r: %d stanzas unacknowledged: ending the stream", self,
                         len(sm_state.unacked))
                self.stream_error("resource-constraint", "too many unacknowledged stanzas")
            else:
                sm_state.after_send(self)
        elif self.hibernating and sm_state.over_limit:
            log.info("%r: %d stanzas held while hibernating: ending the session", self,
                     len(sm_state.unacked))
            self._end_soon("too many stanzas held")

    # the negotiation table's actions ...................................................
    def _sm_module(self):
        return self.host.modules.get("stream_management") if self.host else None

    async def on_sm_too_early(self, el) -> None:
        """§3: enable only after binding (resume only after authentication)."""
        self.send(sm.failed("unexpected-request"))

    async def on_sm_enable(self, el) -> None:
        module = self._sm_module()
        if module is None or not module.config.enabled:
            return self.send(sm.failed("feature-not-implemented"))
        if self.sm is not None:
            # §3: "it SHOULD respond with a stream error"
            raise StreamError("unsupported-stanza-type", "stream management is already enabled")
        config = module.config
        sm_id = timeout = None
        if sm.is_true(el.get("resume")):
            sm_id = secrets.token_urlsafe(18)
            timeout = sm.resume_timeout(el.get("max"), config.resume_timeout,
                                        config.max_resume_timeout)
        self.send(sm.enabled(sm_id, timeout))
        # the counters start now: <enabled/> itself is not a stanza (§4 note)
        self.sm = SessionSM(config, sm_id=sm_id, timeout=timeout or 0)
        if sm_id is not None:
            module.resumable[sm_id] = self
        log.info("%r: stream management enabled%s", self,
                 f", resumable for {timeout} s" if sm_id else "")

    async def on_sm_request(self, el) -> None:
        if self.sm is None:
            raise StreamError("unsupported-stanza-type", "stream management is not enabled")
        self.send(sm.ack(self.sm.handled))

    async def on_sm_ack(self, el) -> None:
        if self.sm is None:
            raise StreamError("unsupported-stanza-type", "stream management is not enabled")
        try:
            self.sm.acked(sm.parse_count(el.get("h")), self)
        except sm.BadCount as exc:
            raise StreamError("invalid-xml", str(exc)) from None
        except sm.HandledCountTooHigh as exc:
            self._too_high(exc)

    def _too_high(self, exc: "sm.HandledCountTooHigh") -> None:
        """§6: the client acknowledged stanzas we never sent."""
        log.info("%r: %s", self, exc)
        self.stream_error("undefined-condition", str(exc).capitalize() + ".",
                          sm.handled_count_too_high(exc))

    async def on_sm_resume_bound(self, el) -> None:
        self.send(sm.failed("unexpected-request"))      # a bound stream is its own session

    async def on_sm_resume(self, el) -> None:
        """§5: take over the hibernating (or still connected) session *previd*."""
        module = self._sm_module()
        self.phase = Phase.BIND                 # unless it succeeds: the client may bind
        if module is None or not module.config.enabled:
            return self.send(sm.failed("feature-not-implemented"))
        previd = el.get("previd")
        try:
            h = sm.parse_count(el.get("h"))
        except sm.BadCount:
            return self.send(sm.failed("bad-request"))
        old = module.find(previd, self.username)
        if old is None or old._session_over or old._end_scheduled \
                or (old._stream_ended and not old.hibernating):
            # unknown, someone else's, or ending (its stream was closed on purpose)
            log.info("%r: no session %r to resume", self, previd)
            return self.send(sm.failed("item-not-found", module.last_count(previd,
                                                                           self.username)))
        if not old.hibernating and not await old._let_go():
            return self.send(sm.failed("internal-server-error"))
        try:
            old.sm.unacked.ack(h)
        except sm.HandledCountTooHigh as exc:
            self._too_high(exc)
            await old.end_session("resumed with a wrong count")
            return
        old._adopt(self)
        old.send(sm.resumed(previd, old.sm.handled))
        for item in old.sm.unacked:         # §5: what the client did not get, again
            old.send_raw(_stamped(item, old.host.domain, old.content_ns)
                         if item.kind == "message" else item.text)
        if old.sm.unacked:
            old.sm.request(old)
        log.info("%r: session resumed on %r (%d stanzas sent again)", old, self,
                 len(old.sm.unacked))

    async def _let_go(self) -> bool:
        """Our session is being resumed on another connection while this one
        is still up: end the connection, keep the session. False if the
        connection does not go within :data:`TAKEOVER_TIMEOUT` seconds."""
        self._taken_over = True
        self.stream_error("conflict", "the session was resumed on another connection")
        if self.writer.transport is not None:
            self.writer.transport.abort()      # a peer that is not reading must not delay us
        try:
            await asyncio.wait_for(self.connection_gone.wait(), TAKEOVER_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("%r: the connection did not close for a resumption", self)
            self._taken_over = False
            self._end_soon("its connection did not close for a resumption")
            return False
        self._taken_over = False
        self.hibernating = True
        self.sm.connection_changed()
        return True

    def _adopt(self, new: "ManagedSession") -> None:
        """Carry on this session over *new*'s connection (the resumption)."""
        new.flush()
        for name in ("reader", "writer", "parser", "secure", "ip", "_counted", "bucket",
                     "_throttled", "_input_at", "lang", "stream_id", "header_sent"):
            setattr(self, name, getattr(new, name))
        self.tracer.label = f"{new.tracer.label} {self.jid}"    # the trace names the new socket
        new._counted = None
        if new._timeout is not None:
            new._timeout.cancel()
        if self._hibernation is not None:
            self._hibernation.cancel()
            self._hibernation = None
        self.hibernating = False
        self.closing = False
        self._stream_ended = False
        self.handed_over = None
        self.pending = None
        self.connection_gone.clear()
        self.phase = Phase.READY
        self.sm.connection_changed()
        self.server.c2s_sessions.add(self)
        new.handed_over = self
        new.closing = True


#: seconds a resumption waits for the session's old connection to close
TAKEOVER_TIMEOUT = 10.0

_tasks: set[asyncio.Task] = set()


def _stamped(item: "sm.Sent", domain: str, content_ns: str) -> str:
    """A message sent again after a resumption, with a XEP-0203 ``<delay/>``
    of when it was first sent (unless it has one of ours: an offline message
    keeps the time it was stored), as Prosody's mod_smacks does: the client
    shows when the message came, not when the connection came back."""
    try:
        stanza = sm.reread(item, content_ns)
    except Exception:                       # our own serialisation: should not happen
        log.exception("a queued message was not re-read: sent again as it was")
        return item.text
    stamp_delay(stanza, domain, item.at)
    return serialize(stanza, stream_ns=content_ns)


def _spawn(coro) -> None:
    """Run *coro* in the background, holding a reference until it is done."""
    task = asyncio.get_running_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
