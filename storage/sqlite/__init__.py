"""The shipped :class:`storage.api.Storage`: SQLite, split by feature.

``engine.py`` holds the connections, the group commit and the reads (see its
docstring for the design); ``schema.py`` the migrations; each feature store is
a mixin over the engine in a file of its own (accounts, roster, offline,
private, vcard, last activity, pep, blocking, transfers, portable, archive),
composed here into :class:`SQLiteStorage`, as ejabberd has one backend module per feature.
"""

from __future__ import annotations

from .accounts import AccountsMixin
from .archive import ArchiveMixin, new_archive_id
from .blocking import BlockingMixin
from .engine import Engine
from .last import LastActivityMixin
from .offline import OfflineMixin
from .pep import PepMixin
from .portable import PortableMixin
from .private import PrivateMixin
from .roster import RosterMixin
from .schema import MIGRATIONS, SYNCHRONOUS_MODES
from .transfers import TransfersMixin, item_from_json, item_to_json
from .vcard import VCardMixin

__all__ = ["MIGRATIONS", "SYNCHRONOUS_MODES", "SQLiteStorage", "item_from_json",
           "item_to_json", "new_archive_id"]


class SQLiteStorage(AccountsMixin, RosterMixin, OfflineMixin, PrivateMixin, VCardMixin,
                    LastActivityMixin, PepMixin, BlockingMixin, TransfersMixin, PortableMixin,
                    ArchiveMixin, Engine):
    """The shipped :class:`storage.api.Storage` implementation."""
