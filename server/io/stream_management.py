"""XEP-0198 Stream Management state of one client session: counters, the
unacknowledged stanzas, and when we ask the client for an ack.

``server/io/c2s.py`` creates a :class:`SessionSM` when the client enables
SM (§3) and calls it for every stanza it sends (:meth:`SessionSM.sent`) and
handles; ``server/modules/stream_management.py`` keeps the resumable
sessions and re-routes what a session that ended left unacknowledged.

Asking for acks (§4 leaves it to us, "e.g. after it has received a certain
number of stanzas, or after a certain period of time"): once
``[stream_management] ack_request_after`` stanzas are unacknowledged we send
``<r/>`` with them (one write: the request travels in the same loop turn as
the stanza); fewer wait at most ``ack_request_delay`` seconds. One request
is outstanding at a time, and none is repeated for the same count (Prosody
does the same: a client that answers with a stale ``h`` does not make us
loop). ``<a/>`` that leaves enough unacknowledged asks again.

Memory: at most ``max_unacked`` stanzas and ``max_unacked_bytes`` of them
are held, as the text they were written as. A client that enabled SM and
lets more pile up (it never acks, or it is gone and hibernating) loses the
session: a connected one gets the stream error ``<resource-constraint/>``;
a hibernating one is ended as if its resumption time had run out. Either way its unacknowledged messages are
re-routed (another resource, offline storage), so the limit costs nothing
that mattered. Prosody's default queue is 500 stanzas too.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..xmpp import sm
from ..xmpp.stanza import local_name

if TYPE_CHECKING:
    from ..config import StreamManagementConfig


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
