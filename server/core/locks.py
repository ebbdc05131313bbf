"""Locks by key (a user, a (user, contact) pair …), made on first use and
forgotten once nobody holds or waits for them, so a server with a million
accounts keeps only the locks in use."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Hashable


class KeyedLocks:
    def __init__(self):
        self._entries: dict[Hashable, list] = {}     # key → [lock, holders + waiters]

    @contextlib.asynccontextmanager
    async def hold(self, *keys: Hashable):
        """Hold the locks of *keys* (duplicates count once). They are taken in
        sorted order, so two holders of several keys never deadlock."""
        entries = []
        for key in sorted(set(keys)):
            entry = self._entries.setdefault(key, [asyncio.Lock(), 0])
            entry[1] += 1
            entries.append((key, entry))
        try:
            async with contextlib.AsyncExitStack() as stack:
                for _, (lock, _) in entries:
                    await stack.enter_async_context(lock)
                yield
        finally:
            for key, entry in entries:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._entries[key]

    def __len__(self) -> int:
        """Keys held or waited for right now (the tests check none leak)."""
        return len(self._entries)
