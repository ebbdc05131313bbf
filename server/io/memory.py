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

:class:`Trimmer` calls ``malloc_trim(0)`` (5–14 ms for a 130 MiB heap) once
at least ``every`` connections have closed since the last call and then no
other closed for ``settle`` seconds — the end of a burst — or at the latest
``max_delay`` seconds after the first of them, so a server that closes
connections all the time still trims now and then. Where there is no glibc
(musl, macOS) it does nothing.
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
    """Counts closed connections and trims the heap after a burst of them
    (see the module docstring)."""

    def __init__(self, every: int = 256, settle: float = 1.0, max_delay: float = 10.0):
        self.every = every
        self.settle = settle
        self.max_delay = max_delay
        self.closed = 0               # since the last trim
        self.trims = 0
        self._timer: asyncio.TimerHandle | None = None
        self._due_by = 0.0            # the latest a pending trim may wait until

    @property
    def supported(self) -> bool:
        return _TRIM is not None

    def connection_closed(self) -> None:
        self.closed += 1
        if _TRIM is None or self.closed < self.every:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._timer is None:
            self._due_by = now + self.max_delay
        else:
            self._timer.cancel()
        self._timer = loop.call_at(min(now + self.settle, self._due_by), self.trim)

    def trim(self) -> None:
        self._timer = None
        if _TRIM is None:
            return
        started = time.perf_counter()
        _TRIM(0)
        self.trims += 1
        log.debug("gave free heap memory back after %d closed connections (%.1f ms)",
                  self.closed, 1000 * (time.perf_counter() - started))
        self.closed = 0
