"""What the server needs from storage: one ``typing.Protocol`` per feature store.

The server only talks to these interfaces; ``storage/sqlite/`` is the
implementation we ship. Every method is a coroutine, and every method that
changes data is atomic: it either happens whole or not at all.

Users are addressed by ``(host, username)`` with both parts already prepared
(``server.xmpp.jid``); stores do no JID handling of their own.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable, Mapping, Protocol

from server.xmpp.errors import StanzaError

from server.xmpp.pubsub import DEFAULT_ACCESS, DEFAULT_MAX_ITEMS
from server.xmpp.roster import (SUBSCRIPTIONS, Decide, RosterDecision,  # noqa: F401  (the
                                RosterEntry, RosterFull, RosterItem)     # core's types)
from server.xmpp.sasl import ScramCredentials


class StorageError(Exception):
    """Storage cannot be used (bad file, schema from a newer xferd, …)."""


class StorageFull(StorageError, StanzaError):
    """A write found no room: the disk (or ``storage.max_size``) is full, or
    writing the file failed. Nothing of it was stored; reads still work, and
    writes work again once there is room.

    It is also the answer to the stanza that asked for the write: every
    handler's caller already answers a :class:`StanzaError`, so a full disk
    costs that stanza ``<resource-constraint/>`` of type ``wait`` (RFC 6120
    §8.3.3.18: "the server ... is unable to process the stanza because of a
    lack of resources"; retry later, §8.3.2) and never the session."""

    def __init__(self, text: str):
        StanzaError.__init__(self, "resource-constraint", text, type="wait")


class QuotaExceeded(Exception):
    """A write would take an account past one of its quotas; nothing was
    written. *quota* names the limit (e.g. ``"private_max_bytes"``)."""

    def __init__(self, quota: str, limit: int):
        super().__init__(f"{quota} ({limit}) reached")
        self.quota, self.limit = quota, limit


class AccountStore(Protocol):
    """Accounts and their SCRAM credentials (never the password itself)."""

    async def create_user(self, host: str, username: str,
                          credentials: Mapping[str, ScramCredentials]) -> bool:
        """Create the account; False if it exists or left a tombstone."""

    async def user_exists(self, host: str, username: str) -> bool: ...

    async def get_credentials(self, host: str, username: str,
                              mechanism: str) -> ScramCredentials | None:
        """Credentials for one SCRAM mechanism, None if no such user/mechanism."""

    async def set_credentials(self, host: str, username: str,
                              credentials: Mapping[str, ScramCredentials]) -> bool:
        """Replace all credentials (password change); False if no such user."""

    async def replace_credentials(self, host: str, username: str,
                                  expected: Mapping[str, ScramCredentials],
                                  credentials: Mapping[str, ScramCredentials]) -> bool:
        """Replace all credentials with *credentials* only if they are still
        exactly *expected*, in one transaction (keys renewed at a PLAIN login
        must not undo a password change made meanwhile); False otherwise."""

    async def delete_user(self, host: str, username: str, *,
                          tombstone: str | None = None) -> bool:
        """Delete the account and everything stored for it; False if absent.
        With *tombstone* (the new bare JID of a moved account) the name stays
        taken and answers ``<gone/>`` (XEP-0283)."""

    async def get_tombstone(self, host: str, username: str) -> str | None:
        """Where a deleted account moved to, if it left a tombstone."""

    async def list_users(self, host: str) -> list[str]:
        """Usernames of *host*, sorted."""


class RosterStore(Protocol):
    """Rosters (RFC 6121 §2) and the inbound subscription requests kept with
    them. The server changes a roster only through :meth:`update_roster`
    (via ``server/core/rosters.py``): read, decide and write in one
    transaction, every changed item with a version of its own."""

    async def get_roster(self, host: str, username: str) -> tuple[int, dict[str, RosterItem]]:
        """(roster version, items by JID)."""

    async def get_roster_item(self, host: str, username: str, jid: str) -> RosterItem | None: ...

    async def update_roster(self, host: str, username: str, contacts: Iterable[str],
                            decide: Decide, *, max_items: int | None = None
                            ) -> tuple[Any, list[tuple[str, RosterItem | None, int]]]:
        """One atomic roster change about *contacts*.

        Inside one write transaction: read each contact's
        :class:`RosterEntry` and write the :class:`RosterDecision` that
        ``decide(entries)`` returns for exactly those entries. *decide* is
        synchronous and pure: it may run more than once (an implementation
        may decide ahead on the last committed entries and again if the
        transaction finds them changed) and on another thread.
        Each changed item gets its own version, one above the last; the
        roster's version ends at the last of them. If *max_items* is given and
        the change would leave more items than that while adding some, raise
        :class:`RosterFull` and write nothing. An exception from *decide*
        writes nothing and is raised here.

        Returns ``(decision.result, [(jid, item or None, version), …])`` for
        the changed items, in version order (``(None, [])`` if *decide*
        returned None)."""

    async def save_roster_change(self, host: str, username: str, jid: str,
                                 item: RosterItem | None, *,
                                 pending_in: str | bool | None = None) -> int:
        """Write one change without reading or deciding (tests and tools
        that set a roster up; the server uses :meth:`update_roster`): store
        *item* (None deletes it) and, if *pending_in* is given, store that
        inbound subscribe stanza (str) or drop the stored one (False).
        Returns the new roster version."""

    async def get_pending_in(self, host: str, username: str) -> dict[str, str]:
        """Inbound subscription requests waiting for an answer: JID → stanza XML."""

    async def get_pending_request(self, host: str, username: str, jid: str) -> str | None:
        """The inbound subscription request from *jid* waiting for an answer
        (stanza XML), or None: what each subscription change asks, without
        reading every request the user has."""


@dataclass
class OfflineMessage:
    id: int
    stanza: str                      # XML text of the <message/>
    stored_at: float


class OfflineStore(Protocol):
    async def store_offline(self, host: str, username: str, stanza: str, *, quota: int,
                            max_bytes: int | None = None) -> bool:
        """Keep a message for later; False (nothing written) when the user
        already has *quota* messages or they would take more than *max_bytes*
        bytes (UTF-8) with this one."""

    async def get_offline(self, host: str, username: str) -> list[OfflineMessage]:
        """Stored messages, oldest first (not removed: see delete_offline)."""

    async def get_offline_page(self, host: str, username: str, *, after: int = 0,
                               max_count: int = 256,
                               max_bytes: int = 1024 * 1024) -> list[OfflineMessage]:
        """The oldest stored messages with an id above *after*: at most
        *max_count* of them and, beyond the first, no more than about
        *max_bytes* together — so that delivering a long queue never holds it
        all in memory."""

    async def delete_offline(self, host: str, username: str, ids: list[int]) -> None: ...


class PrivateStore(Protocol):
    """XEP-0049: one XML fragment per (user, ``{namespace}name``) key."""

    async def get_private(self, host: str, username: str, key: str) -> str | None: ...

    async def set_private(self, host: str, username: str, fragments: Mapping[str, str], *,
                          max_fragments: int | None = None,
                          max_bytes: int | None = None) -> None:
        """Store several fragments in one transaction. Raises
        :class:`QuotaExceeded` (and writes nothing) if the account would then
        hold more than *max_fragments* fragments or more than *max_bytes*
        bytes (UTF-8) of them."""


class VCardStore(Protocol):
    async def get_vcard(self, host: str, username: str) -> str | None: ...

    async def set_vcard(self, host: str, username: str, vcard: str | None) -> None: ...


@dataclass
class LastActivity:
    """XEP-0012 §3: when the user's last resource went away (Unix time) and
    the status text of the last unavailable presence it sent, if any."""
    logout_at: float
    status: str | None = None


class LastActivityStore(Protocol):
    async def get_last_activity(self, host: str, username: str) -> LastActivity | None:
        """The user's last logout; None if none was recorded (or no such user)."""

    async def set_last_activity(self, host: str, username: str,
                                activity: LastActivity) -> bool:
        """Record the user's last logout, replacing the one before, in one
        transaction; False (nothing written) if there is no such user."""


@dataclass
class PepNode:
    node: str
    access_model: str = DEFAULT_ACCESS   # one of server.xmpp.pubsub.ACCESS_MODELS
    max_items: int = DEFAULT_MAX_ITEMS
    config: dict = field(default_factory=dict)   # other pubsub#… fields, as given


@dataclass
class PepItem:
    id: str
    payload: str                     # XML text of the item's payload
    published_at: float = 0.0


class PepStore(Protocol):
    async def get_pep_node(self, host: str, username: str, node: str) -> PepNode | None: ...

    async def list_pep_nodes(self, host: str, username: str) -> list[PepNode]: ...

    async def save_pep_node(self, host: str, username: str, node: PepNode, *,
                            max_nodes: int | None = None) -> None:
        """Create or reconfigure a node (trimming items beyond max_items).
        Raises :class:`QuotaExceeded` (nothing written) if it would be a new
        node beyond *max_nodes* of the account."""

    async def delete_pep_node(self, host: str, username: str, node: str) -> bool: ...

    async def publish_pep_item(self, host: str, username: str, node: PepNode,
                               item: PepItem, *, max_nodes: int | None = None,
                               max_bytes: int | None = None) -> None:
        """Create the node if needed, add or replace the item, keep max_items
        newest. Raises :class:`QuotaExceeded` (nothing written) if the node
        would be created beyond *max_nodes* of the account, or if the items
        of all its nodes would then have more than *max_bytes* bytes (UTF-8)
        of payload."""

    async def retract_pep_item(self, host: str, username: str, node: str, item_id: str) -> bool: ...

    async def get_pep_items(self, host: str, username: str, node: str,
                            ids: list[str] | None = None,
                            max_items: int | None = None) -> list[PepItem]:
        """Items newest first, optionally only *ids* or the newest *max_items*."""


class BlockingStore(Protocol):
    async def get_blocklist(self, host: str, username: str) -> list[str]: ...

    async def set_blocked(self, host: str, username: str, jids: list[str], blocked: bool) -> None:
        """Block or unblock *jids*; unblocking an empty list unblocks everyone."""


@dataclass
class TransferContact:
    """One contact of an account transfer and how its notice went."""
    jid: str
    item: RosterItem                  # the old roster item, as snapshotted
    status: str = "pending"           # pending | ok | failed | skipped
    condition: str | None = None      # why it failed or was skipped


@dataclass
class Transfer:
    """A XEP-0015 transfer job on the old account's server (one per account)."""
    host: str
    username: str
    new_jid: str
    state: str
    requester: str | None = None
    request_id: str | None = None
    detail: str | None = None
    updated_at: float = 0.0
    contacts: dict[str, TransferContact] = field(default_factory=dict)


class TransferStore(Protocol):
    async def get_transfer(self, host: str, username: str) -> Transfer | None: ...

    async def list_transfers(self, states: tuple[str, ...]) -> list[tuple[str, str]]:
        """(host, username) of the jobs in *states* (to resume after a restart)."""

    async def save_transfer(self, transfer: Transfer, *, contacts: bool = False) -> None: ...

    async def save_transfer_contact(self, host: str, username: str,
                                    contact: TransferContact) -> None: ...

    async def get_transfer_approval(self, host: str, username: str,
                                    old_jid: str) -> tuple[str, float] | None:
        """(state, expires_at) of the new account's authorisation for *old_jid*."""

    async def list_transfer_approvals(self, host: str, username: str) -> list[tuple[str, str, float]]: ...

    async def set_transfer_approval(self, host: str, username: str, old_jid: str,
                                    state: str | None, expires_at: float = 0.0) -> None: ...


@dataclass
class UserData:
    """Everything an account carries in a XEP-0227 export, in storage terms.

    Used to read a whole account in one consistent snapshot and to create one
    in one transaction (``xferd export`` / ``xferd import``, storage/pie.py).
    Lists are in their natural order: offline messages and PEP items oldest
    first, pending-in requests in the order they arrived. Not carried: the
    last logout (XEP-0012, :class:`LastActivityStore`), which XEP-0227 has no
    place for; an imported account has none until its first logout.
    """
    credentials: dict[str, ScramCredentials] = field(default_factory=dict)
    roster: list[RosterItem] = field(default_factory=list)
    pending_in: dict[str, str] = field(default_factory=dict)           # JID → stanza XML
    offline: list[tuple[str, float]] = field(default_factory=list)     # (stanza XML, stored_at)
    private: dict[str, str] = field(default_factory=dict)              # {ns}name → XML
    vcard: str | None = None
    pep: list[tuple[PepNode, list[PepItem]]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)                   # XEP-0191 blocklist


class PortableStore(Protocol):
    """Whole accounts at once, for XEP-0227 import/export."""

    async def export_user(self, host: str, username: str) -> UserData | None:
        """The account's data from one read snapshot; None if no such user."""

    async def import_user(self, host: str, username: str, data: UserData) -> bool:
        """Create the account with all of *data* in one transaction; False
        (and nothing written) if the account exists or left a tombstone."""


_random = bytearray()
#: base64's URL-safe alphabet, and the same 64 characters in ASCII order
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_IN_ORDER = bytes.maketrans(_BASE64, bytes(sorted(_BASE64)))
#: random bytes in an archive id, after the 5 bytes of the clock
_ID_RANDOM = 10


def new_archive_id() -> str:
    """A fresh archive id: 20 URL-safe characters, the clock in milliseconds
    (its low 40 bits) then 80 random bits — unpredictable and never reused
    (XEP-0313 §3.1, XEP-0359 §4). Written with base64's characters put in
    ASCII order, so that ids compare as their bytes do: a later id sorts
    after, and the index of ids grows at its end (a batch of entries dirties
    a page or two of it, not a page per entry). The order is only that
    locality: nothing relies on it, so the clock may go back, and wrap
    (every 35 years). The random bytes are taken from the system 4 KiB at a
    time (one system call per ~400 ids: it was a tenth of the cost of
    archiving a message)."""
    if len(_random) < _ID_RANDOM:
        _random.extend(secrets.token_bytes(4096))
    clock = int(time.time() * 1000) & 0xFF_FFFF_FFFF         # its low 40 bits
    chunk = clock.to_bytes(5, "big") + _random[:_ID_RANDOM]
    del _random[:_ID_RANDOM]
    return base64.urlsafe_b64encode(chunk).translate(_IN_ORDER).decode()


@dataclass
class ArchivedMessage:
    """One entry of a user's message archive (XEP-0313 §3.1)."""
    id: str                      # archive id = XEP-0359 stanza-id, unique per user, URL-safe
    timestamp: float             # Unix seconds UTC (original time for imported entries)
    with_jid: str                # the other party's bare JID
    stanza: str                  # the <message/> as XML text in jabber:client (no stanza-id by us)
    source: str | None = None    # where an imported entry came from (e.g. "old@example.org")
    source_id: str | None = None  # its id in that archive (re-import of the same is skipped)
    with_resource: str | None = None   # the other party's resource, if the stanza had one


@dataclass
class ArchiveQuery:
    """Which entries a XEP-0313 query asks for; every filter given applies.

    The archive's order is (timestamp, insertion): an imported old entry sorts
    before newer live ones. *after* and *before* hold archive ids (RSM
    ``<after/>``/``<before/>``, the form's ``after-id``/``before-id``): only
    entries strictly after each of *after* and before each of *before* match.
    A page is the first *max* matching entries, or with *from_end* the last
    *max* (RSM ``<before/>``); either way returned oldest first."""
    with_jid: str | None = None          # bare JID of the other party
    with_resource: str | None = None     # and, for a full JID, its resource
    start: float | None = None           # timestamp >= start
    end: float | None = None             # timestamp <= end
    after: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)
    ids: list[str] | None = None         # only these entries
    max: int = 100
    from_end: bool = False
    count: bool = False                  # also count every matching entry (RSM <count/>)


@dataclass
class ArchivePage:
    """A query's answer: entries oldest first; *complete* when the page was not
    cut by *max* (it reaches the end of the matches in the direction asked)."""
    messages: list[ArchivedMessage]
    complete: bool
    count: int | None = None             # all matching entries, if asked


class ArchiveItemNotFound(LookupError):
    """An archive id a query is bounded by (or asks for) is not in the archive."""

    def __init__(self, id: str):
        super().__init__(id)
        self.id = id


@dataclass
class ArchivePrefs:
    """XEP-0441 archiving preferences: *default* is always | never | roster;
    *always* and *never* hold bare JIDs."""
    default: str
    always: list[str] = field(default_factory=list)
    never: list[str] = field(default_factory=list)


class ArchiveStore(Protocol):
    """Per-user message archives (XEP-0313) and archiving preferences."""

    async def archive_message(self, host: str, username: str,
                              entry: ArchivedMessage) -> bool:
        """Add one live entry (``entry.id`` "" = assign a new id, written back
        into *entry*); False (nothing written) if there is no such account."""

    async def archive_messages(self, host: str,
                               entries: list[tuple[str, ArchivedMessage]]) -> int:
        """Add live entries of several users, ``(username, entry)``, in one
        transaction (ids as :meth:`archive_message`); those of accounts that do
        not exist are skipped; returns how many were added."""

    async def import_archive(self, host: str, username: str,
                             entries: list[ArchivedMessage]) -> int:
        """Add entries (original timestamps; entry.id "" = assign a new id);
        skip any whose (source, source_id) or id the account already has; one
        transaction; returns how many were added (0 if no such account)."""

    def iter_archive(self, host: str, username: str, *,
                     batch: int = 500) -> AsyncIterator[ArchivedMessage]:
        """Every entry, oldest first (timestamp, then insertion), read *batch*
        at a time (bounded memory)."""

    async def query_archive(self, host: str, username: str,
                            query: ArchiveQuery) -> ArchivePage:
        """One page of the entries matching *query*, from one read snapshot.
        Raises :class:`ArchiveItemNotFound` for an id of *after*, *before* or
        *ids* the archive does not hold."""

    async def archive_bounds(self, host: str, username: str
                             ) -> tuple[ArchivedMessage, ArchivedMessage] | None:
        """The first and last entries, or None if the archive is empty."""

    async def expire_archive(self, before: float, *, limit: int = 1000) -> int:
        """Delete up to *limit* entries (of any users) older than *before*,
        each archive's oldest first (no holes, XEP-0313 §3.1); returns how
        many were deleted: fewer than *limit* when none is left."""

    async def get_archive_prefs(self, host: str, username: str) -> ArchivePrefs | None:
        """The user's preferences, or None if never set."""

    async def set_archive_prefs(self, host: str, username: str, prefs: ArchivePrefs) -> bool:
        """Replace the user's preferences; False if there is no such account."""


class Storage(AccountStore, RosterStore, OfflineStore, PrivateStore, VCardStore,
              LastActivityStore, PepStore, BlockingStore, TransferStore, ArchiveStore,
              Protocol):
    """Everything the server stores."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...
