"""``xferd migrate --history``: the old account's message archive moves with it.

The old archive is read as any client reads its own (XEP-0313 §4, paged
with RSM ``<after/>``, oldest first: server/client/archive.py), when the old
account's bare JID offers ``urn:xmpp:mam:2``. Each message is readdressed as
``xferd import --as`` does it (server/tools/import_as.py :func:`rehome_message`:
the old account's JID, bare or full, in ``from``/``to`` becomes the new one;
contacts' JIDs stay), and any XEP-0359 stanza-id the old archive put on it is
dropped. Then:

* **the new server is xferd** (the new account's bare JID offers
  ``urn:xferd:mam-import:0``): the pages go to the new account's own archive
  with xferd's history import IQ, at most 100 messages each, keeping the old
  ids and ``<delay/>`` stamps. Why this is safe to offer: the request comes
  from a session the new account authenticated itself (its password, as for
  every other step); the server takes it only from a resource of the account
  and only into that account's archive, and only messages the account sent or
  received (from or to its bare JID); timestamps in the future are refused;
  every entry keeps its original time and is stored marked as imported (its
  source account and id there), which also makes a resent entry a no-op.
  Nobody can add to anyone else's history; an account could put into its own
  archive a message it never received, which only it ever reads and which
  stays marked as imported.
* **any other server**: a XEP-0227 file of the archive (storage/pie_mam.py,
  Prosody's form) for the new account, created readable by its owner only, to
  give to the new server's administrator (Prosody: ``prosody-migrator`` with
  the ``xep0227`` driver and the store ``archive-archive``; xferd:
  ``xferd import FILE --history-only``).

Resumable: the state file keeps the id of the last old message handed over;
a rerun asks the old archive for what comes after it, and the new server
skips anything it already has. The file is written whole by one run (a
rerun after a break writes it again from the start). Progress is logged as
``history: N messages copied``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from lxml import etree

from storage import pie_mam
from storage.api import ArchivedMessage
from storage.pie import create_file
from storage.pie_mam import parse_result

from ..client import Client, IQError
from ..client.archive import (IMPORT_MAX, IMPORT_NS, MAM_NS, ArchivedResult, count, features,
                              import_page, pages)
from ..xmpp import mam
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import PIE_NS
from .import_as import rehome_message

log = logging.getLogger("xferd.migrate")

#: a progress line every this many messages
PROGRESS_EVERY = 1000


def default_file(state_path: Path, old: JID, new: JID) -> Path:
    """Where the archive file goes without ``--history-file``: beside the state file."""
    return state_path.parent / f"xferd-history-{old}-{new}.xml"


def rehome(item: ArchivedResult, old: JID, new: JID) -> ArchivedResult | None:
    """*item* for the new account (module docstring); None if it is neither
    from nor to the old account (no archive of the new one could hold it)."""
    message = rehome_message(item.message, old, new)
    for by in (old, new):
        mam.strip_stanza_ids(message, str(by))
    ends = set()
    for attr in ("from", "to"):
        try:
            ends.add(JID.parse(message.get(attr)).bare if message.get(attr) else new)
        except JIDError:
            pass
    return item if new in ends else None


class HistoryCopy:
    """One run of the history part of a migration (state in ``state.data['history']``)."""

    def __init__(self, opts, state, old: Client, new: Client):
        self.opts, self.state, self.old, self.new = opts, state, old, new
        self.progress = state.data.setdefault("history", {})
        self.copied = self.progress.get("copied", 0)     # handed over, this run and before
        self.copied_before = self.copied
        self.added = 0
        self.skipped = 0                                 # neither from nor to the account
        self.refused = 0                                 # refused by the new server
        self.reported = self.copied // PROGRESS_EVERY

    async def offered(self) -> bool:
        try:
            offered = MAM_NS in await features(self.old)
        except IQError as exc:
            log.info("history: disco#info on %s: %s", self.opts.old, exc)
            offered = False
        if not offered:
            log.warning("history: %s offers no message archive (urn:xmpp:mam:2): "
                        "nothing to copy", self.opts.old)
        return offered

    async def target_imports(self) -> bool:
        try:
            return IMPORT_NS in await features(self.new)
        except IQError as exc:
            log.info("history: disco#info on %s: %s", self.opts.new, exc)
            return False

    async def plan(self) -> str:
        """For ``--dry-run``: what would happen, in one line."""
        if not await self.offered():
            return "no archive on the old account"
        size = await count(self.old)
        what = f"{size} archived messages" if size is not None else "the archive"
        if await self.target_imports():
            return f"{what}, handed to {self.opts.new}'s archive (xferd's history import)"
        return f"{what}, written to {self.file()} for the new server's administrator"

    def file(self) -> Path:
        return Path(self.opts.history_file) if self.opts.history_file else \
            default_file(self.opts.state_path, self.opts.old, self.opts.new)

    async def run(self) -> None:
        if self.state.done("history"):
            log.info("history: done in an earlier run")
            return
        if not await self.offered():
            self.state.finish("history")
            return
        started = time.monotonic()
        if await self.target_imports():
            await self.hand_over()
            log.info("history: %d messages copied (%d new here, %d already there, %d not "
                     "the account's, %d refused) in %.1f s", self.copied, self.added,
                     self.copied - self.copied_before - self.added - self.skipped
                     - self.refused, self.skipped, self.refused, time.monotonic() - started)
        else:
            path = self.file()
            log.info("history: %s does not take history over XMPP (no %s): writing the "
                     "archive to %s", self.opts.new, IMPORT_NS, path)
            await self.write_file(path)
            log.info("history: %d messages written to %s in %.1f s", self.copied, path,
                     time.monotonic() - started)
            print(f"history: {self.copied} archived messages of {self.opts.old} are in {path}"
                  f" (XEP-0227): give this file to the administrator of "
                  f"{self.opts.new.domain} to import into {self.opts.new}")
        self.state.finish("history")

    def _rehomed(self, results: list[ArchivedResult]) -> list[ArchivedResult]:
        kept = [r for r in (rehome(item, self.opts.old, self.opts.new) for item in results) if r]
        self.skipped += len(results) - len(kept)
        return kept

    def _count(self, n: int) -> None:
        self.copied += n
        if self.copied // PROGRESS_EVERY > self.reported:
            self.reported = self.copied // PROGRESS_EVERY
            log.info("history: %d messages copied", self.copied)

    async def hand_over(self) -> None:
        """Page the old archive into the new one: the next page is read
        while the last one is being stored."""
        after = self.progress.get("last")
        if after:
            log.info("history: resuming after %s (%d messages copied before)", after,
                     self.copied)
        storing: asyncio.Task | None = None
        try:
            async for page in pages(self.old, after):
                if storing is not None:
                    await storing
                storing = asyncio.ensure_future(self._store(page.results))
            if storing is not None:
                await storing
        finally:
            if storing is not None and not storing.done():
                storing.cancel()

    async def _store(self, results: list[ArchivedResult]) -> None:
        items = self._rehomed(results)
        for start in range(0, len(items), IMPORT_MAX):
            chunk = items[start:start + IMPORT_MAX]
            try:
                self.added += await import_page(self.new, str(self.opts.old), chunk)
            except IQError as exc:
                if exc.condition != "bad-request":
                    raise
                await self._one_by_one(chunk)
        # the whole page is in: a rerun continues after its last message
        self.progress["last"] = results[-1].id
        self._count(len(results))
        self.progress["copied"] = self.copied
        self.state.checkpoint()

    async def _one_by_one(self, chunk: list[ArchivedResult]) -> None:
        """The new server refused a request: the whole request is refused for
        one bad message (a timestamp ahead of its clock, say), so each goes
        alone, and the ones it refuses are left out and named in the log."""
        for item in chunk:
            try:
                self.added += await import_page(self.new, str(self.opts.old), [item])
            except IQError as exc:
                if exc.condition != "bad-request":
                    raise
                self.refused += 1
                log.warning("history: %s refused message %s (%s): left out", self.opts.new,
                            item.id, exc.text or exc.condition)

    async def write_file(self, path: Path) -> None:
        """The archive as a XEP-0227 document for the new account, entry by entry."""
        new = self.opts.new
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.copied = 0
        with create_file(path) as out, etree.xmlfile(out, encoding="utf-8") as xf:
            xf.write_declaration()
            with xf.element(f"{{{PIE_NS}}}server-data", nsmap={None: PIE_NS}):
                with xf.element(f"{{{PIE_NS}}}host", {"jid": new.domain}):
                    with xf.element(f"{{{PIE_NS}}}user", {"name": new.local}):
                        await pie_mam.write_archive(xf, self._entries())
                    xf.write("\n")
        self.progress.pop("last", None)

    async def _entries(self):
        async for page in pages(self.old):
            for item in self._rehomed(page.results):
                entry = _entry(item, self.opts.new)
                if entry is not None:
                    yield entry
            self._count(len(page.results))


def _entry(item: ArchivedResult, new: JID) -> ArchivedMessage | None:
    """An archive entry of *new* for the file, through the file's own reader
    (so what is written is what an import will read); None for one it would skip."""
    try:
        entry = parse_result(mam.result_element(item.id, item.stamp, item.message), new)
    except LookupError as exc:
        log.warning("history: left out %s: %s", item.id, exc.args[0])
        return None
    entry.id = item.id                     # the file keeps the old archive's ids
    return entry
