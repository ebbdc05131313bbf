"""A lock held on the database by another process must not freeze the server.

Reads run on the event loop's thread only as long as SQLite can answer at
once; when it says BUSY, the read waits for the lock on a thread instead
(storage/sqlite/engine.py). Before that, a read that met a lock waited on the
loop's thread for up to ``busy_timeout`` (10 s): every client of the server
froze with it.

Which lock: in WAL mode a reader only waits while another process runs WAL
recovery (or holds the database in ``locking_mode=EXCLUSIVE`` — but that needs
an exclusive lock on the database file, which a running server's connections
never let anyone have: ``BEGIN`` in such a connection fails at once with
"database is locked"). :class:`RecoveryLock` holds what a process running
recovery holds, taken the way SQLite's unix VFS takes it: POSIX record locks
on all eight WAL-index lock bytes of the ``-shm`` file (write, checkpoint,
recover and the five read marks), with the wal-index header invalid until
recovery is over. A reader arriving then gets SQLITE_BUSY_RECOVERY and waits
as long as its busy timeout allows.
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
from pathlib import Path

import pytest
from slixmpp.xmlstream import ET

from tests.harness import ask, login

pytestmark = pytest.mark.hostile

PRIVATE = "jabber:iq:private"
NOTE = "<note xmlns='urn:x-xferd:stall-test'>kept</note>"

#: the WAL-index layout (sqlite/src/wal.c): two copies of the 48-byte header,
#: then the checkpoint info holding the eight lock bytes at offset 120
WAL_INDEX_HEADER = 96
WAL_LOCKS = (120, 8)


class RecoveryLock:
    """What another process holds on *database* while it runs WAL recovery."""

    def __init__(self, database: Path):
        self.shm = Path(f"{database}-shm")
        self.fd: int | None = None

    def __enter__(self) -> "RecoveryLock":
        self.fd = os.open(self.shm, os.O_RDWR)
        start, length = WAL_LOCKS
        # blocking: the server's connections hold these bytes only for an instant
        fcntl.lockf(self.fd, fcntl.LOCK_EX, length, start, os.SEEK_SET)
        self.index = mmap.mmap(self.fd, WAL_INDEX_HEADER)
        self.saved = self.index[:WAL_INDEX_HEADER]
        self.index[:WAL_INDEX_HEADER] = bytes(WAL_INDEX_HEADER)     # "being rebuilt"
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Recovery is over: the header is back, the locks are let go."""
        if self.fd is None:
            return
        self.index[:WAL_INDEX_HEADER] = self.saved
        self.index.close()
        os.close(self.fd)                   # drops this process's locks on the file
        self.fd = None


async def test_a_lock_held_by_another_process_does_not_freeze_the_server(make_server):
    srv = make_server(start=False)
    for name in ("ann", "bob", "cy"):
        srv.adduser(f"{name}@localhost", "pw")
    srv.start()
    ann = await login(srv, "ann@localhost/a", "pw")
    bob = await login(srv, "bob@localhost/b", "pw")
    cy = await login(srv, "cy@localhost/c", "pw")
    clients = (ann, bob, cy)
    try:
        error, _ = await ask(cy, "set", f"<query xmlns='{PRIVATE}'>{NOTE}</query>")
        assert error is None, error
        # everything ann and bob do below is served from memory once warmed up
        await ann.ping_server()
        ann.send_message(mto=bob.boundjid.full, mbody="before the lock")
        assert (await asyncio.wait_for(bob.messages.get(), 10))["body"] == "before the lock"

        with RecoveryLock(srv.data_dir / "xferd.sqlite") as lock:
            # cy asks for something only the database has: that read meets the lock
            iq = cy.make_iq(itype="get")
            iq.xml.append(ET.fromstring(
                f"<query xmlns='{PRIVATE}'><note xmlns='urn:x-xferd:stall-test'/></query>"))
            waiting = iq.send(timeout=60)        # queued before ann's first ping
            # meanwhile the server keeps serving the others (cy's request went
            # out first: by the second of these round trips the server has read it)
            for i in range(10):
                await ann.ping_server(timeout=5)
                ann.send_message(mto=bob.boundjid.full, mbody=f"during the lock {i}")
                got = await asyncio.wait_for(bob.messages.get(), 5)
                assert got["body"] == f"during the lock {i}"
            assert not waiting.done(), await waiting     # ... and cy's read is still waiting
            lock.release()
            answer = (await waiting).xml                 # done once the lock is gone
        note = answer.find(f"{{{PRIVATE}}}query/{{urn:x-xferd:stall-test}}note")
        assert note is not None and note.text == "kept"
        assert "met a lock" in srv.log()
        # and the store goes on as before: reads on the loop, writes committed
        ann.send_message(mto=bob.boundjid.full, mbody="after the lock")
        assert (await asyncio.wait_for(bob.messages.get(), 10))["body"] == "after the lock"
        error, _ = await ask(cy, "set", f"<query xmlns='{PRIVATE}'>{NOTE}</query>")
        assert error is None, error
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
