"""The schema: a list of migrations, ``PRAGMA user_version`` says how many are applied.

Each migration runs in its own transaction. Every per-user table references
``accounts`` with ``ON DELETE CASCADE`` so deleting an account deletes all its
data in one statement. Never edit a released entry of :data:`MIGRATIONS`;
append a new one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from ..api import StorageError

log = logging.getLogger("xferd.storage")

#: Each entry moves the schema one version up. Never edit a released entry;
#: append a new one.
MIGRATIONS: list[str] = [
    # 1: accounts and their SCRAM credentials
    """
    CREATE TABLE accounts (
        host        TEXT NOT NULL,
        username    TEXT NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (host, username)
    ) WITHOUT ROWID;
    CREATE TABLE scram_credentials (
        host        TEXT NOT NULL,
        username    TEXT NOT NULL,
        mechanism   TEXT NOT NULL,
        salt        BLOB NOT NULL,
        iterations  INTEGER NOT NULL,
        stored_key  BLOB NOT NULL,
        server_key  BLOB NOT NULL,
        PRIMARY KEY (host, username, mechanism),
        FOREIGN KEY (host, username) REFERENCES accounts (host, username)
            ON DELETE CASCADE
    ) WITHOUT ROWID;
    """,
    # 2: the instant messaging core (RFC 6121, XEP-0160/0049/0054/0163/0191)
    """
    CREATE TABLE roster_versions (
        host TEXT NOT NULL, username TEXT NOT NULL, version INTEGER NOT NULL,
        PRIMARY KEY (host, username),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE roster_items (
        host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL,
        name TEXT,
        subscription TEXT NOT NULL DEFAULT 'none'
            CHECK (subscription IN ('none', 'to', 'from', 'both')),
        ask INTEGER NOT NULL DEFAULT 0,
        approved INTEGER NOT NULL DEFAULT 0,
        groups TEXT NOT NULL DEFAULT '[]',          -- JSON list of group names
        PRIMARY KEY (host, username, jid),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE roster_pending_in (
        host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL,
        stanza TEXT NOT NULL,                        -- the whole <presence type='subscribe'/>
        received_at REAL NOT NULL,
        PRIMARY KEY (host, username, jid),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE offline_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        host TEXT NOT NULL, username TEXT NOT NULL,
        stanza TEXT NOT NULL, stored_at REAL NOT NULL,
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    );
    CREATE INDEX offline_by_user ON offline_messages (host, username, id);
    CREATE TABLE private_xml (
        host TEXT NOT NULL, username TEXT NOT NULL,
        key TEXT NOT NULL,                           -- {namespace}name
        payload TEXT NOT NULL,
        PRIMARY KEY (host, username, key),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE vcards (
        host TEXT NOT NULL, username TEXT NOT NULL, vcard TEXT NOT NULL,
        PRIMARY KEY (host, username),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE pep_nodes (
        host TEXT NOT NULL, username TEXT NOT NULL, node TEXT NOT NULL,
        access_model TEXT NOT NULL, max_items INTEGER NOT NULL,
        config TEXT NOT NULL DEFAULT '{}',           -- JSON of other pubsub# fields
        PRIMARY KEY (host, username, node),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE pep_items (
        host TEXT NOT NULL, username TEXT NOT NULL, node TEXT NOT NULL,
        item_id TEXT NOT NULL, payload TEXT NOT NULL,
        published_at REAL NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (host, username, node, item_id),
        FOREIGN KEY (host, username, node) REFERENCES pep_nodes ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE blocklist (
        host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL,
        PRIMARY KEY (host, username, jid),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    """,
    # 3: tombstones of deleted accounts that had moved (XEP-0283 §4.3 <gone/>)
    """
    CREATE TABLE tombstones (
        host TEXT NOT NULL, username TEXT NOT NULL,
        moved_to TEXT NOT NULL,                      -- the new bare JID
        deleted_at REAL NOT NULL,
        PRIMARY KEY (host, username)
    ) WITHOUT ROWID;
    """,
    # 4: XEP-0015 account transfer jobs (old server) and authorisations (new server)
    """
    CREATE TABLE transfers (
        host TEXT NOT NULL, username TEXT NOT NULL,
        new_jid TEXT NOT NULL,
        state TEXT NOT NULL,                         -- see server/xmpp/transfer.py
        requester TEXT,                              -- full JID that asked, for the answer
        request_id TEXT,
        detail TEXT,                                 -- error condition or note
        updated_at REAL NOT NULL,
        PRIMARY KEY (host, username)
    ) WITHOUT ROWID;
    CREATE TABLE transfer_contacts (
        host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL,
        item TEXT NOT NULL,                          -- JSON of the roster item snapshot
        status TEXT NOT NULL,                        -- pending | ok | failed | skipped
        condition TEXT,
        PRIMARY KEY (host, username, jid),
        FOREIGN KEY (host, username) REFERENCES transfers ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE transfer_approvals (
        host TEXT NOT NULL, username TEXT NOT NULL,  -- the new account
        old_jid TEXT NOT NULL,
        state TEXT NOT NULL,                         -- preauthorized | approved | consumed
        expires_at REAL NOT NULL,
        PRIMARY KEY (host, username, old_jid),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    """,
    # 5: XEP-0012 last activity: each user's last logout and its status text
    """
    CREATE TABLE last_activity (
        host TEXT NOT NULL, username TEXT NOT NULL,
        logout_at REAL NOT NULL,                     -- Unix time the last resource went away
        status TEXT,                                 -- of the last unavailable presence
        PRIMARY KEY (host, username),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    """,
    # 6: bytes of offline messages per user, kept by triggers (every writer,
    # the import tool included), so the per-user byte quota is one row to read
    """
    CREATE TABLE offline_usage (
        host TEXT NOT NULL, username TEXT NOT NULL,
        bytes INTEGER NOT NULL,                      -- UTF-8 bytes of the stored stanzas
        PRIMARY KEY (host, username),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    INSERT INTO offline_usage (host, username, bytes)
        SELECT host, username, SUM(LENGTH(CAST(stanza AS BLOB))) FROM offline_messages
        GROUP BY host, username;
    CREATE TRIGGER offline_usage_in AFTER INSERT ON offline_messages BEGIN
        INSERT INTO offline_usage (host, username, bytes)
            VALUES (NEW.host, NEW.username, LENGTH(CAST(NEW.stanza AS BLOB)))
            ON CONFLICT (host, username) DO UPDATE SET bytes = bytes + excluded.bytes;
    END;
    CREATE TRIGGER offline_usage_out AFTER DELETE ON offline_messages BEGIN
        UPDATE offline_usage SET bytes = bytes - LENGTH(CAST(OLD.stanza AS BLOB))
            WHERE host = OLD.host AND username = OLD.username;
    END;
    """,
    # 7: XEP-0313 message archives and XEP-0441 archiving preferences. An
    # entry is ordered by (timestamp, seq), seq being the insertion order:
    # imported old entries sort before newer live ones. Each user's archive
    # has an integer key (archive_users.uid), so the indexes do not repeat
    # host and username. What one entry costs to write is mostly the index
    # pages it dirties, each written to the WAL and checkpointed whole: the
    # table and archive_by_id (ids begin with their creation time, see
    # storage.api.new_archive_id) grow at their ends, where a batch shares a
    # few pages; the indexes of one user's order by time (its queries, and
    # the retention expiry, oldest first per user) and by contact are the
    # two that take a page per user of a batch.
    """
    CREATE TABLE archive_users (
        uid INTEGER PRIMARY KEY,
        host TEXT NOT NULL, username TEXT NOT NULL,
        UNIQUE (host, username),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    );
    CREATE TABLE archive (
        seq INTEGER PRIMARY KEY,                     -- insertion order
        uid INTEGER NOT NULL REFERENCES archive_users ON DELETE CASCADE,
        id TEXT NOT NULL,                            -- archive id = XEP-0359 stanza-id
        timestamp REAL NOT NULL,                     -- Unix time sent/received
        with_jid TEXT NOT NULL,                      -- the other party's bare JID
        with_resource TEXT,                          -- … and its resource, if any
        stanza TEXT NOT NULL,                        -- the <message/>, jabber:client
        source TEXT, source_id TEXT                  -- set on imported entries
    );
    CREATE UNIQUE INDEX archive_by_id ON archive (id, uid);
    CREATE INDEX archive_by_time ON archive (uid, timestamp, seq);
    CREATE INDEX archive_by_with ON archive (uid, with_jid, timestamp, seq);
    CREATE UNIQUE INDEX archive_by_source ON archive (uid, source, source_id)
        WHERE source IS NOT NULL;
    CREATE TABLE archive_prefs (
        host TEXT NOT NULL, username TEXT NOT NULL,
        default_mode TEXT NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
        always TEXT NOT NULL DEFAULT '[]',           -- JSON list of bare JIDs
        never TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (host, username),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    """,
]

SYNCHRONOUS_MODES = ("full", "normal")


def set_up(db: sqlite3.Connection, synchronous: str, busy_timeout_ms: int) -> None:
    """The settings every connection of the engine gets."""
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    db.execute("PRAGMA foreign_keys = ON")


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file at *path* (open as *db*) up to the newest schema version,
    one transaction per migration; refuse a file from a newer xferd."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise StorageError(
            f"{path} has schema version {version}, this xferd knows "
            f"{len(MIGRATIONS)}: it was written by a newer xferd")
    for number in range(version + 1, len(MIGRATIONS) + 1):
        log.info("storage: migrating %s to schema version %d", path, number)
        script = (f"BEGIN IMMEDIATE;\n{MIGRATIONS[number - 1]}\n"
                  f"PRAGMA user_version = {number};\nCOMMIT;")
        try:
            db.executescript(script)
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    if os.name == "posix":
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)     # credentials live here
