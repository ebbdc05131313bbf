"""Give memory freed by closed connections back to the operating system.

A client session's memory (its TLS state and buffers, parser, stanzas) is
freed when it closes, but glibc's allocator keeps freed memory in its heaps
for reuse and returns it to the system only when the top of a heap is free.
After many sessions close, most of their memory is free yet still counted
in the server's RSS: measured with ``scripts/bench --scenarios idle --idle
2000 --idle-cycles 5``, 2,000 closed TLS sessions left 82 MiB above the
RSS before they logged in; ``malloc_trim(0)`` then gave 60 MiB of it back,
and the rest is reused by the next sessions (the RSS after each of five
cycles stayed within 5 MiB of the first). So it is the allocator holding
free memory, not the server holding sessions.

:class:`Trimmer` calls ``malloc_trim(0)`` once enough connections have closed
since the last call, ``settle`` seconds after the one that made the count
(so a burst of closes is over), never more often than every
``min_interval`` seconds. Where there is no glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time

log = logging.getLogger("xferd.memory")


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


class Trimmer:
    """Counts closed connections; trims the heap after *every* of them, at
    most once per *min_interval* seconds."""

    def __init__(self, every: int = 256, min_interval: float = 10.0, settle: float = 1.0):
        self.every = every
        self.min_interval = min_interval
        self.settle = settle
        self.closed = 0               # since the last trim
        self._last = float("-inf")
        self._scheduled = False
        self.trims = 0

    @property
    def supported(self) -> bool:
        return _TRIM is not None

    def connection_closed(self) -> None:
        self.closed += 1
        if self._scheduled or _TRIM is None or self.closed < self.every:
            return
        wait = max(self.settle, self._last + self.min_interval - time.monotonic())
        self._scheduled = True
        asyncio.get_running_loop().call_later(wait, self.trim)

    def trim(self) -> None:
        self._scheduled = False
        if _TRIM is None:
            return
        started = time.perf_counter()
        _TRIM(0)
        self._last = time.monotonic()
        self.trims += 1
        log.debug("gave free heap memory back after %d closed connections (%.1f ms)",
                  self.closed, 1000 * (time.perf_counter() - started))
        self.closed = 0
