"""Counting events per key in a sliding time window.

:class:`SlidingWindow` is the one implementation: at most *limit* events per
key in any *window* seconds. :class:`FailureThrottle` is the failed-login
throttle on top of it (per account, per IP): RFC 6120 §6.4.5 lets a client
retry after a SASL failure; this bounds how often. The XEP-0283 verification
limit (``modules/moved.py``) is the same counter.

Memory is bounded: a key keeps at most *limit* time stamps, and keys whose
stamps have all expired are forgotten — a key when it is next looked at, the
others as new keys arrive (keys are kept in the order of their last event,
so the stale ones are at the front). *max_keys* optionally caps the number
of keys outright by forgetting the least recently active one.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque


class SlidingWindow:
    """At most *limit* events per key in any *window* seconds (*clock* in seconds).

    An event stamped *t* counts until ``clock() - t >= window``. Each call
    costs what expired since the last one, not the window's whole count.
    """

    __slots__ = ("limit", "window", "clock", "max_keys", "_stamps")

    def __init__(self, limit: int, window: float, clock=time.monotonic, *,
                 max_keys: int | None = None):
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        #: key → its live time stamps, oldest first; keys least recently recorded first
        self._stamps: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        """Record an event for *key* and return True, unless *key* already
        has *limit* events in the window (then record nothing, return False)."""
        now = self.clock()
        stamps = self._live(key, now)
        if (len(stamps) if stamps is not None else 0) >= self.limit:
            return False
        self._append(key, stamps, now)
        return True

    def record(self, key: str) -> None:
        """Record an event for *key* whatever the count (beyond *limit*, the
        oldest stamp makes room: the count stays at *limit*)."""
        now = self.clock()
        self._append(key, self._live(key, now), now)

    def count(self, key: str) -> int:
        """Events of *key* in the window (at most *limit*)."""
        stamps = self._live(key, self.clock())
        return len(stamps) if stamps is not None else 0

    def retry_after(self, key: str) -> float:
        """Seconds until :meth:`allow` would accept *key* again (0 if now)."""
        now = self.clock()
        stamps = self._live(key, now)
        if stamps is None or len(stamps) < self.limit:
            return 0.0
        return max(0.0, stamps[-self.limit] + self.window - now)

    def forget(self, key: str) -> None:
        self._stamps.pop(key, None)

    def __len__(self) -> int:
        """Keys currently tracked."""
        return len(self._stamps)

    def __contains__(self, key: str) -> bool:
        return key in self._stamps

    def _live(self, key: str, now: float) -> deque[float] | None:
        stamps = self._stamps.get(key)
        if stamps is None:
            return None
        window = self.window
        while stamps and now - stamps[0] >= window:
            stamps.popleft()
        if not stamps:
            del self._stamps[key]
            return None
        return stamps

    def _append(self, key: str, stamps: deque[float] | None, now: float) -> None:
        if stamps is None:
            self._sweep(now)
            if self.max_keys is not None and len(self._stamps) >= self.max_keys:
                self._stamps.popitem(last=False)          # the least recently active key
            stamps = self._stamps[key] = deque(maxlen=max(self.limit, 0))
        else:
            self._stamps.move_to_end(key)
        stamps.append(now)

    def _sweep(self, now: float) -> None:
        """Forget keys whose newest stamp expired; they are at the front."""
        entries, window = self._stamps, self.window
        while entries:
            key, stamps = next(iter(entries.items()))
            if stamps and now - stamps[-1] < window:
                return
            del entries[key]


class FailureThrottle:
    """Failed logins per key (account or IP): blocked once *max_failures*
    failures fall within *window* seconds; a success clears the key."""

    def __init__(self, max_failures: int, window: float, *, clock=time.monotonic,
                 max_keys: int = 100_000):
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self.failures = SlidingWindow(max_failures, window, clock, max_keys=max_keys)

    def blocked(self, key: str) -> bool:
        """True while *key* has used up its failures in the window."""
        count = self.failures.count(key)
        return count > 0 and count >= self.max_failures

    def retry_after(self, key: str) -> float:
        """Seconds until *key* may try again (0 if not blocked)."""
        return self.failures.retry_after(key)

    def fail(self, key: str) -> None:
        self.failures.record(key)

    def succeed(self, key: str) -> None:
        self.failures.forget(key)
