"""What one peer may use: stanzas per second, connections per address.

Two small pure classes (no asyncio, a clock you can replace) that the
connection code in ``net.py``, ``c2s.py`` and ``s2s/`` asks before doing work
for a peer. Failed-login throttles live in ``throttle.py``.
"""

from __future__ import annotations

import time


class TokenBucket:
    """*burst* stanzas at once, then *rate* per second on average.

    :meth:`take` always hands out the token and answers how many seconds the
    caller must wait before using it (0.0 while the bucket is not empty). The
    bucket goes into debt instead of refusing: a connection that awaits the
    answer before reading on is slowed to exactly *rate*, and nothing it sent
    is lost — backpressure rather than punishment (see ``net.py``).
    """

    def __init__(self, rate: float, burst: float, *, clock=time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1; got {rate}, {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.tokens = self.burst
        self._stamp = clock()

    def take(self, n: float = 1.0) -> float:
        """Take *n* tokens; return the seconds to wait until they are earned."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self.tokens -= n
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


class ConnectionCounter:
    """Live connections per peer address, with an upper bound (0 = none).

    :meth:`open` is asked before any work is spent on a new connection and
    refuses one beyond the bound; :meth:`close` is called exactly once for
    each connection :meth:`open` let in. Addresses with no connection are
    forgotten, so memory follows the number of live connections.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._live: dict[str, int] = {}

    def open(self, address: str) -> bool:
        count = self._live.get(address, 0)
        if self.limit and count >= self.limit:
            return False
        self._live[address] = count + 1
        return True

    def close(self, address: str) -> None:
        count = self._live.get(address, 0) - 1
        if count > 0:
            self._live[address] = count
        else:
            self._live.pop(address, None)

    def count(self, address: str) -> int:
        return self._live.get(address, 0)

    def __len__(self) -> int:
        """How many addresses have a live connection."""
        return len(self._live)
