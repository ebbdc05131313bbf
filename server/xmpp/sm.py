"""XEP-0198 Stream Management without I/O: counters, the queue of
unacknowledged stanzas and the protocol's elements.

Counters (§4): each side counts the stanzas it has *handled* (``h``) and
the stanzas it has *sent*; both start at zero when SM is enabled and wrap
at 2^32 ("the counter SHOULD be reset to zero … when it exceeds 2^32 - 1",
§4 note). An ``<a h='…'/>`` says how many of our stanzas the peer has
handled in all; the difference to the last one received, taken mod 2^32,
is how many to drop from the front of :class:`Unacked`. An ``h`` that
acknowledges more than we sent is the peer's error (§6:
``<handled-count-too-high/>``, raised here as :class:`HandledCountTooHigh`).

What is queued is the stanza as it was written on the stream (text), with
the time it was first sent: resent as it is after a resumption (§5), parsed
back only when it must be re-routed because the session ended unacknowledged
(§4, "treat unacknowledged stanzas in the same way that it would treat a
stanza sent to an unavailable resource").
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from .namespaces import SM_NS, STANZA_ERRORS_NS, STREAMS_NS
from .stanza import E, from_text, sub

MODULUS = 2 ** 32

ENABLE = f"{{{SM_NS}}}enable"
RESUME = f"{{{SM_NS}}}resume"
REQUEST = f"{{{SM_NS}}}r"
ACK = f"{{{SM_NS}}}a"


class BadCount(ValueError):
    """An ``h`` attribute that is not a counter value (0 … 2^32 - 1)."""


class HandledCountTooHigh(Exception):
    """The peer acknowledged *h* while we had sent only *sent* stanzas (§6)."""

    def __init__(self, h: int, sent: int):
        super().__init__(f"you acknowledged {h} stanzas, but we sent you only {sent}")
        self.h = h
        self.sent = sent


def parse_count(text: str | None) -> int:
    """The value of an ``h`` attribute (§4: "an unsigned integer", mod 2^32)."""
    if text is None or not text.isdigit() or len(text) > 10 or int(text) >= MODULUS:
        raise BadCount(f"'h' must be a number from 0 to {MODULUS - 1}; got {text!r}")
    return int(text)


def increment(counter: int, by: int = 1) -> int:
    return (counter + by) % MODULUS


def is_true(value: str | None) -> bool:
    """XML Schema boolean (the XEP's 'resume' attribute)."""
    return value in ("true", "1")


def resume_timeout(requested: str | None, default: float, cap: float) -> int:
    """Seconds a session may wait for resumption: the client's ``max`` if it
    gave one (§3: its "preferred maximum resumption time"), else our default,
    never more than *cap*; at least one second."""
    seconds = default
    if requested is not None and requested.isdigit() and len(requested) < 12:
        seconds = int(requested)
    return max(1, int(min(seconds, cap)))


@dataclass(frozen=True, slots=True)
class Sent:
    """A stanza we sent and the peer has not acknowledged yet."""
    text: str             # as written on the stream
    at: float             # Unix time it was first sent
    kind: str             # "message", "presence" or "iq"


def reread(sent: Sent, content_ns: str):
    """The element of a queued stanza: its text was written inside the
    stream, without the stream's namespace declarations, so it is parsed
    inside them again."""
    wrapper = f"<w xmlns='{content_ns}' xmlns:stream='{STREAMS_NS}'>{sent.text}</w>"
    return from_text(wrapper)[0]


class Unacked:
    """The stanzas sent since the last ``h`` the peer acknowledged, oldest
    first, and the counters (§4)."""

    def __init__(self):
        self._queue: collections.deque[Sent] = collections.deque()
        self.sent = 0           # stanzas sent, mod 2^32
        self.acked = 0          # the last h received, mod 2^32
        self.size = 0           # characters of text queued

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self):
        return iter(self._queue)

    def push(self, stanza: Sent) -> None:
        self._queue.append(stanza)
        self.size += len(stanza.text)
        self.sent = increment(self.sent)

    def ack(self, h: int) -> int:
        """The peer handled *h* of our stanzas in all: forget those; return
        how many were newly acknowledged. Raises HandledCountTooHigh."""
        newly = (h - self.acked) % MODULUS
        if newly > len(self._queue):
            raise HandledCountTooHigh(h, self.sent)
        for _ in range(newly):
            self.size -= len(self._queue.popleft().text)
        self.acked = h
        return newly

    def drain(self) -> list[Sent]:
        """Take every unacknowledged stanza out (the session is over)."""
        taken = list(self._queue)
        self._queue.clear()
        self.size = 0
        return taken


# -- elements ------------------------------------------------------------------------------

def enabled(sm_id: str | None, max_seconds: int | None):
    """§3 ``<enabled/>``; with an id and ``resume='true'`` when resumable (§5)."""
    el = E(f"{{{SM_NS}}}enabled")
    if sm_id is not None:
        el.set("id", sm_id)
        el.set("resume", "true")
        el.set("max", str(max_seconds))
    return el


def failed(condition: str, h: int | None = None):
    """§7 ``<failed/>`` with a stanza error condition (and ``h`` when known, §5)."""
    el = E(f"{{{SM_NS}}}failed", {"h": None if h is None else str(h)})
    sub(el, f"{{{STANZA_ERRORS_NS}}}{condition}")
    return el


def resumed(previd: str, h: int):
    return E(f"{{{SM_NS}}}resumed", {"previd": previd, "h": str(h)})


def ack(h: int):
    return E(ACK, {"h": str(h)})


def request():
    return E(REQUEST)


def handled_count_too_high(err: HandledCountTooHigh):
    """The application condition of §6's ``<undefined-condition/>`` stream error."""
    return E(f"{{{SM_NS}}}handled-count-too-high", {"h": str(err.h), "send-count": str(err.sent)})
