"""XEP-0313 Message Archive Management (urn:xmpp:mam:2), with XEP-0359
stanza ids, XEP-0441 preferences, a retention period and the history import.

Archiving (§3, §7.1.1; what qualifies: ``server/xmpp/mam.py``). Each user
has one archive of the one-to-one messages they sent and received, ordered
as they passed through the server:

- incoming, on ``message/bare`` and ``message/full`` at priority 20 (before
  carbons at 10 and delivery at -1), for the recipient, if the account
  exists. First every ``<stanza-id/>`` whose ``by`` is the recipient's bare
  JID is removed (XEP-0359 §5 "Security Considerations": only we may speak for
  the user's archive), then, once stored, ours is added: ``<stanza-id
  xmlns='urn:xmpp:sid:0' id='<archive id>' by='user@domain'/>`` (§3.2), so
  what the client gets, the carbons and what offline storage keeps carry it;
- outgoing, on ``pre-message`` at priority 20 (after blocking at 100, so a
  blocked message is not kept), for the sender, whether the recipient is
  local or remote. The sender's archive id is put on the stanza for the
  sent carbons (priority 10) to copy — a client that shows a message it sent
  from another device finds it in the archive by that id, and does not show
  it twice (Prosody does the same) — and taken off again at priority 5,
  before the message leaves (§3.2: "MUST NOT include the <stanza-id/>
  element in messages addressed to JIDs that do not have permissions to
  access the archive"); stanza-ids by the sender's own JID that the client
  put there are removed first. A message to one's own account is stored once
  (§7.1.1), as sent, and carries its id to the receiving resource.
- Events tagged ``redelivered`` (a message of a session that died unacked,
  which stream management routes again) are ignored: they were archived.
- The user's preferences (XEP-0441) decide per contact: a listed full JID
  matches as is, a bare one any resource, ``never`` wins over ``always``;
  with no entry the default applies, ``roster`` meaning "the contact's bare
  JID is in the roster". Users who never set preferences get ``[mam]
  default`` (``always``, as Prosody's ``default_archive_policy``; ejabberd's
  default is ``never``, which leaves every client with an empty history).

Writes. The entry is queued and the message goes on at once, with its id
already given; the queued entries are written together, one storage write
(one ``executemany``, one disk sync) per batch: a batch gathers for
``BATCH_DELAY`` (50 ms) and while the one before is being written, so under
load the batches grow (to ``MAX_QUEUED`` entries at most: beyond, messages
wait for the write in progress). Written one by one, at a paced 1,000
msgs/s, the syncs took more CPU than all the rest the server did. A client
handles one
session's stanzas in order, so awaiting the commit (two of them, sender's and
recipient's) would hold every following stanza of the sender for two disk
syncs — in ``scripts/bench`` that cut message throughput to a sixth. Entries
are committed in the order queued; a query (or metadata request) of the user
first waits for that user's queued writes, so a client always finds what it
just sent or got. The price: after a crash (losing at most the last 50 ms
of entries), or when the disk is full, a message may have been delivered with an id whose entry was never committed
(logged); it is then missing from the history, as it would be on a server
that archived nothing. Prosody's archive writes are not synced at all.
A message between two local users is written out as text once: the
recipient's entry takes the text of the sender's (``_reusable_text``) when
it is still the same stanza with the same children — on its way from
``pre-message`` to ``message/*`` a message only loses children (forged
carbons, stanza-ids in the recipient's name), never gains or edits any.

Queries (§4), on the user's own bare JID only (another user's archive is
``<forbidden/>``, §8): a query set streams ``<message><result><forwarded>``
to the asking resource, oldest first (``<flip-page/>``: newest first), then
the IQ result with ``<fin complete='…'><set><first/><last/></set></fin>``;
``<first/>``/``<last/>`` are the oldest/newest of the page whatever the
order sent (as Prosody). ``<count/>`` is given when a client asks for it
with ``<max>0</max>`` (XEP-0059 §2.6); otherwise it is omitted, as
§4.3.2 allows, because counting a large archive walks an index on every
page. An id the archive does not hold (RSM ``after``/``before``, the form's
``before-id``/``after-id``/``ids``) is ``<item-not-found/>`` (§4.1.1,
§4.3.3). An iq get ``<query/>`` returns the form (§4.1.2), ``<metadata/>``
the first and last entries (§5), ``<prefs/>`` get/set the preferences.

Service discovery on the account's bare JID (§6.1): ``urn:xmpp:mam:2``,
``urn:xmpp:mam:2#extended`` and ``urn:xmpp:sid:0`` (XEP-0359 §7). Clients
look there (Gajim and Conversations ask the account's bare JID, as §6.1
says; neither asks the domain), so the domain does not list them.

Retention: with ``[mam] retention_days`` > 0, entries older than that are
deleted, oldest first (§3.1: no holes), at start-up (before the server
reports itself started) and then every ``EXPIRY_EVERY`` seconds, in
batches of ``EXPIRY_BATCH`` entries, one write each, so that a large
backlog never holds the writer long.

The history import (``urn:xferd:mam-import:0``, xferd's own protocol, used
by ``xferd migrate --history`` and announced on the account's bare JID so
that the tool can tell an xferd server)::

    <iq type='set'><import xmlns='urn:xferd:mam-import:0' source='old@old.example'>
      <result xmlns='urn:xmpp:mam:2' id='ID-IN-OLD-ARCHIVE'><forwarded …>
        <delay stamp='…'/><message …/></forwarded></result> …
    </import></iq>
    → <iq type='result'><imported xmlns='urn:xferd:mam-import:0' count='N'/></iq>

Why it is safe: only a bound resource of the account, addressing its own bare JID (or no
``to``), may add to that account's archive — a user can only write history
into their own archive, which only they can read; every message must have
the account's bare JID as ``from`` or ``to`` (else ``<bad-request/>`` and
nothing of the IQ is stored); timestamps later than now (beyond five minutes
of clock skew) are refused, so an import cannot push entries ahead of live
ones; at most 100 results per IQ (and the usual stanza size limit), stored
in one transaction; stanza-ids of the old archive, or claiming to be of
the new one, are removed and new ids given, so imported entries cannot
take or forge ids. Entries keep ``source``/``source_id``: a resent batch is
skipped (N counts only the new ones), and they stay marked as imported.
What it does allow: an account can put into its own archive a message it
never received ("from bob", dated last year). Only that account ever reads
it, as it could type the same text into a note to itself; nothing reaches
anybody else, and the entry stays marked as imported in storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from storage.api import (ArchivedMessage, ArchiveItemNotFound, ArchivePrefs, ArchiveQuery,
                         StorageError, new_archive_id)

from ..core.events import Lifecycle, SessionEvent
from ..core.module import Hook, Module, iq
from ..xmpp import mam
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID
from ..xmpp.namespaces import MAM_EXTENDED_FEATURE, MAM_IMPORT_NS, MAM_NS, STANZA_ID_NS
from ..xmpp.stanza import E, from_text, to_text

log = logging.getLogger("xferd.mam")

#: JIDs one user's preferences may list
MAX_PREFS_JIDS = 1000
#: archive entries queued for writing at most; beyond, a message waits for the write
MAX_QUEUED = 10000
#: seconds a batch gathers before it is written
BATCH_DELAY = 0.05
#: seconds between two expiry runs, and entries deleted per write
EXPIRY_EVERY = 3600.0
EXPIRY_BATCH = 1000


class Mam(Module):
    name = "mam"
    account_features = (MAM_NS, MAM_EXTENDED_FEATURE, STANZA_ID_NS, MAM_IMPORT_NS)

    def __init__(self, host):
        super().__init__(host)
        self.config = host.server.config.mam
        if not self.config.enabled:
            self.account_features = ()
        self._expiry: asyncio.Task | None = None
        #: entries waiting for the next write, and what resolves once it is done
        self._batch: list[tuple[str, ArchivedMessage]] = []
        self._batch_done: asyncio.Future | None = None
        self._writer: asyncio.Task | None = None
        #: username → preferences, for users with a session (see _prefs)
        self._cached_prefs: dict[str, mam.Prefs] = {}
        #: username → the batch holding the user's last queued entry
        self._last_batch: dict[str, asyncio.Future] = {}
        #: the message last archived as sent, its number of children and its
        #: text, for its recipient's entry (see _reusable_text)
        self._sent: tuple | None = None

    def hooks(self):
        if not self.config.enabled:
            return []
        own = [("set", MAM_NS, "query", self.query), ("get", MAM_NS, "query", self.form),
               ("get", MAM_NS, "metadata", self.metadata),
               ("get", MAM_NS, "prefs", self.get_prefs), ("set", MAM_NS, "prefs", self.set_prefs),
               ("set", MAM_IMPORT_NS, "import", self.import_history)]
        # the same addressed to someone else's account: not theirs to use (§8)
        others = [iq(kind, "bare", ns, name, self.forbidden) for kind, ns, name, _ in own]
        return [Hook("message/bare", self.incoming, priority=20),
                Hook("message/full", self.incoming, priority=20),
                Hook("pre-message", self.outgoing, priority=20),
                Hook("pre-message", self.sent_on, priority=5),
                *(iq(kind, "self", ns, name, handler) for kind, ns, name, handler in own),
                *others,
                Hook("resource-unbind", self.unbound),
                Hook("server-started", self.started),
                Hook("server-stopping", self.stopping)]

    # -- archiving ------------------------------------------------------------------------
    async def incoming(self, event) -> bool:
        """A message to a local user: archive it for them, tag it with the id."""
        if "redelivered" in event.tags or event.to.local is None:
            return False
        stanza, sender, owner = event.stanza, event.from_, event.to.bare
        if sender is not None and sender.bare == owner and \
                getattr(getattr(event.origin, "jid", None), "bare", None) == owner:
            return False                # a note to self: archived (and tagged) as sent
        mam.strip_stanza_ids(stanza, str(owner))
        text = self._reusable_text(stanza)
        if sender is None or (text is None and not mam.should_archive(stanza)):
            return False
        entry = await self._archive(owner.local, sender, stanza, text)
        if entry is not None:
            mam.add_stanza_id(stanza, entry.id, str(owner))
        return False

    async def outgoing(self, event) -> bool:
        """A message a user's client sends: archive it for the sender."""
        if "redelivered" in event.tags or event.origin is None:
            return False
        stanza, owner = event.stanza, event.from_.bare
        mam.strip_stanza_ids(stanza, str(owner))
        if not mam.should_archive(stanza):
            return False
        target = event.to or owner
        entry = await self._archive(owner.local, target, stanza)
        if entry is None:
            return False
        if target.bare != owner:
            self._sent = (stanza, len(stanza), entry.stanza)
        # for the user's own eyes: the sent carbons (priority 10) copy it;
        # ``sent_on`` takes it off again before the message leaves
        mam.add_stanza_id(stanza, entry.id, str(owner))
        return False

    def sent_on(self, event) -> bool:
        """After the sent carbons (priority 5 < 10): the sender's archive id
        goes no further than the sender's own resources (§3.2)."""
        if event.origin is not None and "redelivered" not in event.tags:
            owner = event.from_.bare
            target = event.to or owner
            if target.bare != owner:                 # a note to oneself keeps it
                mam.strip_stanza_ids(event.stanza, str(owner))
        return False

    async def _archive(self, username: str, other: JID, stanza,
                       text: str | None = None) -> ArchivedMessage | None:
        """Queue *stanza* (written out as *text*, if given) for *username*'s
        archive if their preferences want messages with *other*; the entry
        (with its archive id), or None. The write is not awaited (module
        docstring, "Writes"); a query of that user waits for it."""
        if not await self._wants(username, other):
            return None
        if len(self._batch) >= MAX_QUEUED:
            # storage is behind (a stalled disk): wait rather than hold ever more
            await asyncio.shield(self._batch_done)
        entry = ArchivedMessage(new_archive_id(), time.time(), str(other.bare),
                                to_text(stanza) if text is None else text,
                                with_resource=other.resource)
        self._queue(username, entry)
        return entry

    def _reusable_text(self, stanza) -> str | None:
        """The text of the entry last written for *stanza*, if it is still
        the same (module docstring, "Writes"): then it is also a message to
        archive. Each text is used once more at most."""
        sent, self._sent = self._sent, None
        if sent is not None and sent[0] is stanza and sent[1] == len(stanza):
            return sent[2]
        return None

    def _queue(self, username: str, entry: ArchivedMessage) -> None:
        """Add *entry* to the next batch; start the writer if it is idle."""
        if self._batch_done is None:
            self._batch_done = asyncio.get_running_loop().create_future()
        self._batch.append((username, entry))
        self._last_batch[username] = self._batch_done
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_batches())

    async def _write_batches(self) -> None:
        """Write the queued entries, one storage write per batch; what comes
        in meanwhile is the next batch (so under load the batches grow)."""
        while self._batch:
            await asyncio.sleep(BATCH_DELAY)    # let the batch gather: one sync for many
            batch, done = self._batch, self._batch_done
            self._batch, self._batch_done = [], None
            try:
                added = await self.host.storage.archive_messages(self.host.domain, batch)
                if added < len(batch):
                    log.debug("%d archive entries of deleted accounts skipped",
                              len(batch) - added)
            except Exception as exc:        # noqa: BLE001 — logged; the next batch goes on
                log.warning("%d messages not archived: %r", len(batch), exc)
            finally:
                done.set_result(None)
                for username, _ in batch:
                    if self._last_batch.get(username) is done:
                        del self._last_batch[username]

    async def _settled(self, username: str) -> None:
        """Until the archive entries queued for *username* so far are written."""
        done = self._last_batch.get(username)
        if done is not None:
            await asyncio.shield(done)

    async def _wants(self, username: str, other: JID) -> bool:
        rule = mam.prefs_rule(await self._prefs(username), other)
        if rule == "roster":
            return await self.host.rosters.item(username, str(other.bare)) is not None
        return rule == "always"

    async def _prefs(self, username: str) -> mam.Prefs:
        """The user's preferences: kept in memory while the user has a session
        (as Prosody keeps them on the session), so that messages between
        online users need no database read; else read each time."""
        prefs = self._cached_prefs.get(username)
        if prefs is not None:
            return prefs
        stored = await self.host.storage.get_archive_prefs(self.host.domain, username)
        prefs = mam.Prefs(self.config.default) if stored is None else \
            mam.Prefs(stored.default, stored.always, stored.never)
        if self.host.user_sessions(username):
            self._cached_prefs[username] = prefs
        return prefs

    def unbound(self, event: SessionEvent) -> None:
        username = event.session.jid.local
        if not self.host.user_sessions(username):
            self._cached_prefs.pop(username, None)

    # -- queries --------------------------------------------------------------------------
    async def query(self, event) -> bool:
        """§4: stream one page of results, then the IQ result with <fin/>."""
        q = mam.parse_query(event.stanza[0], max_page=self.config.max_page,
                            default_page=self.config.max_page)
        owner = event.from_.bare
        await self._settled(owner.local)        # what the user sent or got is in it
        with_jid = q.with_jid
        wanted = ArchiveQuery(
            with_jid=str(with_jid.bare) if with_jid else None,
            with_resource=with_jid.resource if with_jid else None,
            start=q.start, end=q.end,
            after=[i for i in (q.after_id, q.rsm_after) if i],
            before=[i for i in (q.before_id, q.rsm_before) if i],
            ids=q.ids, max=q.max, from_end=q.from_end, count=q.max == 0)
        try:
            page = await self.host.storage.query_archive(self.host.domain, owner.local, wanted)
        except ArchiveItemNotFound as exc:
            raise StanzaError("item-not-found", f"no archived message {exc.id}") from None
        results = [mam.result_message(to=str(event.from_), from_=str(owner),
                                      queryid=q.queryid, archive_id=m.id,
                                      timestamp=m.timestamp, message=from_text(m.stanza))
                   for m in page.messages]
        for result in reversed(results) if q.flip else results:
            event.origin.send(result)
        first = page.messages[0].id if page.messages else None
        last = page.messages[-1].id if page.messages else None
        await event.reply(mam.fin(complete=page.complete, first=first, last=last,
                                  count=page.count))
        return True

    async def form(self, event) -> bool:
        await event.reply(mam.query_form())
        return True

    async def metadata(self, event) -> bool:
        await self._settled(event.from_.local)
        bounds = await self.host.storage.archive_bounds(self.host.domain,
                                                        event.from_.local)
        if bounds is None:
            await event.reply(mam.metadata())
        else:
            first, last = bounds
            await event.reply(mam.metadata((first.id, first.timestamp),
                                           (last.id, last.timestamp)))
        return True

    async def get_prefs(self, event) -> bool:
        await event.reply(mam.prefs_element(await self._prefs(event.from_.local)))
        return True

    async def set_prefs(self, event) -> bool:
        prefs = mam.parse_prefs(event.stanza[0], max_jids=MAX_PREFS_JIDS)
        await self.host.storage.set_archive_prefs(
            self.host.domain, event.from_.local,
            ArchivePrefs(prefs.default, prefs.always, prefs.never))
        self._cached_prefs[event.from_.local] = prefs
        await event.reply(mam.prefs_element(prefs))
        return True

    async def forbidden(self, event) -> bool:
        raise StanzaError("forbidden", "only the account itself may use its archive")

    # -- the history import -----------------------------------------------------------------
    async def import_history(self, event) -> bool:
        """``urn:xferd:mam-import:0`` (module docstring): only from a bound
        resource of the account itself."""
        session_jid = getattr(event.origin, "jid", None)
        if session_jid is None or session_jid != event.from_:
            raise StanzaError("forbidden", "only the account's own resources may import")
        owner = event.from_.bare
        source, entries = mam.parse_import(event.stanza[0], owner=owner, now=time.time())
        archived = [ArchivedMessage("", e.timestamp, str(e.other.bare), to_text(e.message),
                                    source=source, source_id=e.source_id,
                                    with_resource=e.other.resource) for e in entries]
        added = await self.host.storage.import_archive(self.host.domain, owner.local,
                                                       archived)
        log.info("%s imported %d of %d archived messages from %s", owner, added,
                 len(archived), source)
        await event.reply(E(f"{{{MAM_IMPORT_NS}}}imported", {"count": str(added)}))
        return True

    # -- retention --------------------------------------------------------------------------
    async def started(self, event: Lifecycle) -> None:
        if self.config.retention_days <= 0 or self.host is not next(iter(
                event.server.hosts.values())):
            return                      # one host expires for all: the store is shared
        await self._expire()            # before the server says it is up
        self._expiry = asyncio.create_task(self._expire_every())

    async def stopping(self, event: Lifecycle) -> None:
        if self._writer is not None:
            await self._writer              # the queued entries, before storage closes
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry

    async def _expire_every(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_EVERY)
            try:
                await self._expire()
            except StorageError as exc:
                log.warning("archive expiry failed: %s", exc)

    async def _expire(self) -> None:
        """Delete what is older than the retention period, a batch at a time."""
        cutoff = time.time() - self.config.retention_days * 86400
        total = 0
        while True:
            deleted = await self.host.storage.expire_archive(cutoff, limit=EXPIRY_BATCH)
            total += deleted
            if deleted < EXPIRY_BATCH:
                break
            await asyncio.sleep(0)      # let the messages of the moment through
        if total:
            log.info("archive expiry: %d messages older than %d days deleted", total,
                     self.config.retention_days)


MODULE = Mam
