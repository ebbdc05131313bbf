"""Failed-login throttle: a sliding window of failures per key (account, IP).

RFC 6120 §6.4.5 lets a client retry after a SASL failure; this bounds how
often. Memory is bounded: keys with no recent failures are forgotten.
"""

from __future__ import annotations

import time
from collections import deque


class FailureThrottle:
    def __init__(self, max_failures: int, window: float, *, clock=time.monotonic,
                 max_keys: int = 100_000):
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float] | None:
        stamps = self._failures.get(key)
        if stamps is None:
            return None
        horizon = self.clock() - self.window
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
            return None
        return stamps

    def blocked(self, key: str) -> bool:
        """True while *key* has used up its failures in the window."""
        stamps = self._recent(key)
        return stamps is not None and len(stamps) >= self.max_failures

    def retry_after(self, key: str) -> float:
        """Seconds until *key* may try again (0 if not blocked)."""
        stamps = self._recent(key)
        if stamps is None or len(stamps) < self.max_failures:
            return 0.0
        return max(0.0, stamps[-self.max_failures] + self.window - self.clock())

    def fail(self, key: str) -> None:
        stamps = self._recent(key)
        if stamps is not None:
            self._failures[key] = self._failures.pop(key)   # now the most recent key
        else:
            if len(self._failures) >= self.max_keys:
                self._failures.pop(next(iter(self._failures)))   # forget the stalest key
            stamps = self._failures[key] = deque(maxlen=self.max_failures)
        stamps.append(self.clock())

    def succeed(self, key: str) -> None:
        self._failures.pop(key, None)
