"""XEP-0227 Portable Import/Export: ``xferd export`` and ``xferd import``.

The format (XEP-0227 §4): ``<server-data xmlns='urn:xmpp:pie:0'>`` →
``<host jid>`` → ``<user name>``, each user carrying its SCRAM credentials
(never a password), roster, pending inbound subscriptions, offline messages,
private XML, vCard and PEP nodes with their configuration and items.

Streaming, both ways, so a host with many users never sits in memory whole:

* Export reads one account at a time (one storage snapshot each, see
  :meth:`storage.api.PortableStore.export_user`) and writes it with
  ``lxml.etree.xmlfile``. A host export uses the XInclude layout of
  XEP-0227 §5: ``main.xml`` → ``<host>.xml`` → ``<host>/<user>.xml``, with
  relative hrefs. Every file is created 0600 and directories 0700 (§6: the
  files hold credentials).
* Import walks the file with ``lxml.etree.iterparse`` and hands over one
  ``<user>`` at a time, then forgets it. XIncludes are followed by us, not by
  libxml2: only relative hrefs, no ``parse``/``xpointer``, only directly under
  ``<server-data>`` or ``<host>``, never inside ``<user>`` (§5), and never
  leaving the directory of the including file. DTDs (and so entity
  declarations) are refused; nothing is fetched from the network.

Import is two passes over the document: the first parses and checks
everything and writes nothing (that is all ``--dry-run`` does), the second
creates each account in one storage transaction. A malformed file therefore
fails in the first pass, with file and line, before anything is written.
Existing accounts are left alone and reported.

Other servers' files are taken as they really are (tests/unit/test_pie_peers.py,
tests/interop/test_prosody_pie.py, tests/interop/test_ejabberd_pie.py): ejabberd's
SCRAM values base64-encoded twice, its legacy namespace and ``password='scram:…'``
(storage/pie_ejabberd.py, which also tells what ``--dialect ejabberd``
writes); Prosody's pending request written without a namespace, its extra
account fields as attributes and its ``<query version>`` (both ignored), and
PEP forms listing unset options with no value.
Message archives (``urn:xmpp:pie:0#mam``, as Prosody writes them) travel
too, streamed entry by entry (storage/pie_mam.py): import is then three
passes, the third adding the archives of the accounts the second created.
What xferd cannot keep (privacy rules other than blocking, SCRAM-SHA-512
keys) is skipped with a warning; so is an account left without usable
credentials. The blocklist travels as XEP-0191 §7 has it: a
default privacy list of JIDs denied everything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote, unquote, urlsplit

from lxml import etree

from server.wording import counted
from server.xmpp import timestamps
from server.xmpp.jid import JID, JIDError, nameprep
from server.xmpp.namespaces import (
    CLIENT_NS, DATA_NS, DELAY_NS, PIE_NS, PRIVACY_NS, PRIVATE_NS, PUBSUB_NS,
    ROSTER_NS, VCARD_NS, XI_NS)
from server.xmpp.namespaces import PIE_LEGACY_NS as LEGACY_NS      # ejabberd, older Prosody
from server.xmpp.namespaces import PIE_SCRAM_NS as SCRAM_NS
from server.xmpp.namespaces import PUBSUB_OWNER_NS as OWNER_NS
from server.xmpp.pubsub import (
    ACCESS_MODEL, ACCESS_MODELS, FIXED_OPTIONS, MAX_ITEMS, MAX_ITEMS_FIELD, NODE_CONFIG)
from server.xmpp.sasl import MECHANISMS_SCRAM, ScramCredentials, make_all_credentials
from server.xmpp.sasl import portable_salt
from server.xmpp.stanza import from_text, to_text

from . import pie_ejabberd, pie_mam
from .api import SUBSCRIPTIONS, ArchivedMessage, PepItem, PepNode, RosterItem, UserData

_HASH_SIZES = {"SCRAM-SHA-1": hashlib.sha1().digest_size,
               "SCRAM-SHA-256": hashlib.sha256().digest_size}

#: ejabberd's hash names in ``password='scram:HASH,…'``
_LEGACY_HASHES = {"sha": "SCRAM-SHA-1", "sha256": "SCRAM-SHA-256", "sha512": "SCRAM-SHA-512"}
#: said of an account without usable credentials (not a concern of --history-only)
NO_CREDENTIALS = "has no credentials xferd can use"
#: the privacy list our blocklist is exported as (ejabberd's mod_blocking name)
BLOCKLIST_NAME = "Blocked contacts"

Warn = Callable[[str], None]


class PieError(Exception):
    """The document cannot be imported; the message names file and line."""

    def __init__(self, path, line: int | None, message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line or '?'}: {message}")


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


# -- export: storage → elements ---------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def user_element(host: str, username: str, data: UserData, *,
                 dialect: str = pie_ejabberd.STANDARD, first: str = "SCRAM-SHA-1"):
    """The ``<user/>`` element of one account (XEP-0227 §4); *dialect*
    ``ejabberd`` writes SCRAM values as ejabberd reads them, and *first* is the
    mechanism whose credentials come first, the only ones ejabberd reads
    (storage/pie_ejabberd.py)."""
    scram_text = pie_ejabberd.encode if dialect == pie_ejabberd.DIALECT else _b64
    user = etree.Element(_q(PIE_NS, "user"), {"name": username}, nsmap={None: PIE_NS})

    def add(parent, tag, attrs=None, text=None):
        # each namespace as the default one of its subtree: <query xmlns='…'>, no ns0: prefixes
        ns = etree.QName(tag).namespace
        el = etree.SubElement(parent, tag, {k: v for k, v in (attrs or {}).items()
                                            if v is not None},
                              nsmap=None if ns == etree.QName(parent).namespace else {None: ns})
        el.text = text
        return el

    for mechanism, creds in sorted(data.credentials.items(),
                                   key=lambda pair: (pair[0] != first, pair[0])):
        scram = add(user, _q(SCRAM_NS, "scram-credentials"), {"mechanism": mechanism})
        add(scram, _q(SCRAM_NS, "iter-count"), text=str(creds.iterations))
        add(scram, _q(SCRAM_NS, "salt"), text=scram_text(creds.salt))
        add(scram, _q(SCRAM_NS, "server-key"), text=scram_text(creds.server_key))
        add(scram, _q(SCRAM_NS, "stored-key"), text=scram_text(creds.stored_key))

    if data.roster:
        query = add(user, _q(ROSTER_NS, "query"))
        for item in data.roster:
            el = add(query, _q(ROSTER_NS, "item"), {
                "jid": item.jid, "name": item.name, "subscription": item.subscription,
                "ask": "subscribe" if item.ask else None,
                "approved": "true" if item.approved else None})
            for group in item.groups:
                add(el, _q(ROSTER_NS, "group"), text=group)

    for stanza in data.pending_in.values():
        user.append(from_text(stanza))

    if data.offline:
        offline = add(user, _q(PIE_NS, "offline-messages"))
        for stanza, stored_at in data.offline:
            message = from_text(stanza)
            add(message, _q(DELAY_NS, "delay"),
                {"from": host, "stamp": timestamps.format(stored_at)})
            offline.append(message)

    if data.private:
        query = add(user, _q(PRIVATE_NS, "query"))
        for payload in data.private.values():
            query.append(from_text(payload))

    if data.vcard is not None:
        user.append(from_text(data.vcard))

    if data.blocked:
        # XEP-0191 §7 (interaction with privacy lists): blocking a JID is a
        # default privacy list item denying it everything; named as ejabberd does
        privacy = add(user, _q(PRIVACY_NS, "query"))
        add(privacy, _q(PRIVACY_NS, "default"), {"name": BLOCKLIST_NAME})
        blocks = add(privacy, _q(PRIVACY_NS, "list"), {"name": BLOCKLIST_NAME})
        for order, jid in enumerate(data.blocked, 1):
            add(blocks, _q(PRIVACY_NS, "item"), {"type": "jid", "value": jid,
                                                  "action": "deny", "order": str(order)})

    if data.pep:
        owner = add(user, _q(OWNER_NS, "pubsub"))
        for node, _ in data.pep:
            form = add(add(owner, _q(OWNER_NS, "configure"), {"node": node.node}),
                       _q(DATA_NS, "x"), {"type": "submit"})
            fields = [("FORM_TYPE", NODE_CONFIG), (ACCESS_MODEL, node.access_model),
                      (MAX_ITEMS_FIELD, str(node.max_items)),
                      *sorted(node.config.items())]
            for var, value in fields:
                el = add(form, _q(DATA_NS, "field"), {"var": var})
                for v in value if isinstance(value, list) else [value]:
                    add(el, _q(DATA_NS, "value"), text=str(v))
        pubsub = add(user, _q(PUBSUB_NS, "pubsub"))
        for node, items in data.pep:
            el = add(pubsub, _q(PUBSUB_NS, "items"), {"node": node.node})
            for item in items:
                add(el, _q(PUBSUB_NS, "item"), {"id": item.id}).append(from_text(item.payload))
    return user


def create_file(path: Path):
    """Open *path* for writing, readable by its owner only (XEP-0227 §6)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)                 # an existing file keeps its mode otherwise
    return os.fdopen(fd, "wb")


@dataclass
class Summary:
    users: int = 0
    skipped: int = 0
    roster_items: int = 0
    pending: int = 0
    offline: int = 0
    private: int = 0
    vcards: int = 0
    pep_nodes: int = 0
    pep_items: int = 0
    warnings: int = 0
    blocked: int = 0
    archived: int = 0           # archived messages (XEP-0313), storage/pie_mam.py
    #: exported accounts with a salt Prosody's SQL storage cuts: (JID, mechanisms)
    zero_byte_salts: list[tuple[str, list[str]]] = field(default_factory=list)
    sha1_only: int = 0          # accounts with SCRAM-SHA-1 keys only (Prosody keeps no others)
    lacking_first: int = 0      # exported accounts without keys for the mechanism asked first
    skipped_users: list[str] = field(default_factory=list)

    def count(self, data: UserData) -> None:
        self.users += 1
        self.sha1_only += set(data.credentials) == {"SCRAM-SHA-1"}
        self.roster_items += len(data.roster)
        self.pending += len(data.pending_in)
        self.offline += len(data.offline)
        self.private += len(data.private)
        self.vcards += data.vcard is not None
        self.pep_nodes += len(data.pep)
        self.pep_items += sum(len(items) for _, items in data.pep)
        self.blocked += len(data.blocked)

    def text(self) -> str:
        return (f"{counted(self.users, 'user')} ({counted(self.roster_items, 'roster item')}, "
                f"{counted(self.pending, 'pending subscription')}, "
                f"{counted(self.offline, 'offline message')}, "
                f"{counted(self.private, 'private fragment')}, {counted(self.vcards, 'vCard')}, "
                f"{counted(self.pep_nodes, 'PEP node')} with {counted(self.pep_items, 'item')}, "
                f"{counted(self.blocked, 'blocked JID')}, "
                f"{counted(self.archived, 'archived message')})")


async def write_user(xf, store, host: str, username: str, user, dialect: str,
                     archive_progress: Callable[[int], None] | None = None) -> int:
    """Write the ``<user/>`` element *user* into *xf*, followed inside it by
    the account's message archive read from *store* entry by entry
    (storage/pie_mam.py); returns how many archived messages were written.
    The ejabberd dialect carries no archive (ejabberd's import has no such part)."""
    with xf.element(user.tag, dict(user.attrib), nsmap={None: PIE_NS}):
        for child in user:
            xf.write("\n", child)
        written = 0
        if dialect != pie_ejabberd.DIALECT and hasattr(store, "iter_archive"):
            written = await pie_mam.write_archive(
                xf, store.iter_archive(host, username, batch=pie_mam.BATCH),
                progress=archive_progress)
        xf.write("\n")
    return written


def _archive_progress(progress, jid: str):
    """An archive progress callback naming the account, if there is *progress*."""
    return (lambda n: progress(f"{jid}: {counted(n, 'archived message')}")) if progress else None


async def export_user(store, host: str, username: str, path: Path, *,
                      dialect: str = pie_ejabberd.STANDARD,
                      first: str = "SCRAM-SHA-1",
                      note: Callable[[str], None] | None = None) -> Summary:
    """One account as a self-contained document: server-data → host → user.
    ``note(text)`` is told of the archive's progress (long archives)."""
    data = await store.export_user(host, username)
    if data is None:
        raise LookupError(f"{username}@{host} does not exist")
    summary = Summary()
    with create_file(Path(path)) as out, etree.xmlfile(out, encoding="utf-8") as xf:
        xf.write_declaration()
        with xf.element(_q(PIE_NS, "server-data"), nsmap={None: PIE_NS}):
            with xf.element(_q(PIE_NS, "host"), {"jid": host}):
                xf.write("\n")
                summary.archived += await write_user(
                    xf, store, host, username,
                    user_element(host, username, data, dialect=dialect, first=first), dialect,
                    _archive_progress(note, f"{username}@{host}"))
                xf.write("\n")
            xf.write("\n")
    note_zero_byte_salts(summary, host, username, data)
    summary.count(data)
    summary.lacking_first += first not in data.credentials
    return summary


def _include(href: str):
    """``<xi:include href/>`` with the literal ``xi:`` prefix (ejabberd matches the tag)."""
    return etree.Element(_q(XI_NS, "include"), {"href": href}, nsmap={"xi": XI_NS})


def user_filename(username: str) -> str:
    """A safe file name for *username* (anything but letters/digits/._- %-escaped)."""
    name = quote(username, safe="")
    return ("%2E" + name[1:] if name.startswith(".") else name) + ".xml"


async def export_host(store, host: str, directory: Path, *,
                      dialect: str = pie_ejabberd.STANDARD, first: str = "SCRAM-SHA-1",
                      progress: Callable[[int, int], None] | None = None,
                      every: int = 1000, note: Callable[[str], None] | None = None) -> Summary:
    """A whole host in the XInclude layout under *directory*.

    XEP-0227 §5: ``main.xml`` → ``<host>.xml`` → one file per user. Dialect
    ``ejabberd``: ``main.xml`` → one host file holding its users inline, the
    layout ejabberd writes and the only one it reads (storage/pie_ejabberd.py).
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if dialect == pie_ejabberd.DIALECT:
        host_file, users_dir = pie_ejabberd.host_filename(host), None
    else:
        users_dir = directory / user_filename(host)[:-4]
        users_dir.mkdir(mode=0o700, exist_ok=True)
        host_file = users_dir.name + ".xml"
    with create_file(directory / "main.xml") as out, etree.xmlfile(out, encoding="utf-8") as xf:
        xf.write_declaration()
        with xf.element(_q(PIE_NS, "server-data"), nsmap={None: PIE_NS, "xi": XI_NS}):
            xf.write("\n", _include(quote(host_file)), "\n")
    usernames = await store.list_users(host)
    summary = Summary()
    with create_file(directory / host_file) as out, etree.xmlfile(out, encoding="utf-8") as xf:
        xf.write_declaration()
        with xf.element(_q(PIE_NS, "host"), {"jid": host}, nsmap={None: PIE_NS, "xi": XI_NS}):
            for username in usernames:
                data = await store.export_user(host, username)
                if data is None:
                    continue                     # deleted while we were exporting
                element = user_element(host, username, data, dialect=dialect, first=first)
                archive_progress = _archive_progress(note, f"{username}@{host}")
                if users_dir is None:
                    xf.write("\n")
                    summary.archived += await write_user(xf, store, host, username, element,
                                                         dialect, archive_progress)
                else:
                    name = user_filename(username)
                    with create_file(users_dir / name) as user_out, \
                            etree.xmlfile(user_out, encoding="utf-8") as user_xf:
                        user_xf.write_declaration()
                        summary.archived += await write_user(user_xf, store, host, username,
                                                             element, dialect, archive_progress)
                    xf.write("\n", _include(quote(f"{users_dir.name}/{name}")))
                summary.count(data)
                summary.lacking_first += first not in data.credentials
                if progress and summary.users % every == 0:
                    progress(summary.users, len(usernames))
                note_zero_byte_salts(summary, host, username, data)
            xf.write("\n")
    return summary


def note_zero_byte_salts(summary: Summary, host: str, username: str, data: UserData) -> None:
    """Record the account if a salt of its keys holds a zero byte. Prosody's
    SQL storage reads such a salt back cut at that byte (server/xmpp/sasl.py
    ``new_salt``), so the account cannot log in there after an import of this
    file; xferd made such salts before, and a PLAIN login to xferd renews them."""
    cut = [mech for mech, creds in sorted(data.credentials.items())
           if not portable_salt(creds.salt)]
    if cut:
        summary.zero_byte_salts.append((f"{username}@{host}", cut))


# -- import: elements → storage ----------------------------------------------------------------

_PIE_TAGS = {name: (f"{{{PIE_NS}}}{name}", f"{{{LEGACY_NS}}}{name}")
             for name in ("server-data", "host", "user", "offline-messages", "presence")}


def _pie(el, name: str) -> bool:
    """Is *el* the XEP-0227 element *name* (current or legacy namespace)?"""
    return el.tag in _PIE_TAGS[name]


def _where(path, el) -> str:
    return f"{path}:{el.sourceline}"


def _legacy_scram(value: str) -> ScramCredentials:
    """ejabberd's ``password='scram:[HASH,]StoredKey,ServerKey,Salt,IterationCount'``.

    HASH (``sha256``, ``sha512``) is absent for SHA-1 in what ejabberd writes;
    without it we go by the key length, raw or (as ejabberd writes it) base64
    text (storage/pie_ejabberd.py).
    """
    parts = value[len("scram:"):].split(",")
    hash_name = parts.pop(0).strip().lower() if len(parts) == 5 else None
    if len(parts) != 4:
        raise ValueError("unreadable password='scram:…'")
    stored, server, salt, count = parts
    if hash_name is None:
        size = len(_unbase64(stored, "password='scram:…'"))
        mechanism = pie_ejabberd.KEY_SIZES.get(size)
    else:
        mechanism = _LEGACY_HASHES.get(hash_name)
    if mechanism is None:
        raise ValueError("unreadable password='scram:…'")
    return _credentials(mechanism, count, salt, server, stored, "password='scram:…'")


def _scram(el) -> ScramCredentials:
    """``<scram-credentials/>`` (§4.3). The mechanism name is taken loosely
    (case, a ``-PLUS`` suffix: the stored keys are the same)."""
    mechanism = el.get("mechanism", "").strip().upper().removesuffix("-PLUS")
    texts = {}
    for name in ("iter-count", "salt", "server-key", "stored-key"):
        child = el.find(_q(SCRAM_NS, name))
        if child is None or not (child.text or "").strip():
            raise ValueError(f"scram-credentials without <{name}/>")
        texts[name] = child.text.strip()
    return _credentials(mechanism, texts["iter-count"], texts["salt"], texts["server-key"],
                        texts["stored-key"], "scram-credentials")


def _unbase64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise ValueError(f"{what} with bad base64") from None


def _credentials(mechanism: str, count: str, salt: str, server_key: str, stored_key: str,
                 what: str) -> ScramCredentials:
    """Checked SCRAM credentials; KeyError names a mechanism xferd cannot use."""
    if mechanism not in MECHANISMS_SCRAM:
        raise KeyError(mechanism)
    salt_b, server_b, stored_b = (_unbase64(t, what) for t in (salt, server_key, stored_key))
    count = count.strip()
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{what} with a bad iter-count")
    size = _HASH_SIZES[mechanism]
    if len(server_b) != size or len(stored_b) != size:
        # ejabberd's form: each value base64-encoded twice
        unwrapped = pie_ejabberd.unwrap(size, salt_b, server_b, stored_b)
        if unwrapped is None:
            raise ValueError(f"{what} with keys of the wrong size for {mechanism}")
        salt_b, server_b, stored_b = unwrapped
    if not salt_b:
        raise ValueError(f"{what} with an empty salt")
    return ScramCredentials(mechanism, salt_b, int(count), stored_b, server_b)


def _take_credentials(read: Callable[[], ScramCredentials], el, data: UserData, where,
                      warn: Warn) -> None:
    try:
        creds = read()
    except KeyError as exc:
        warn(f"{where(el)}: skipped SCRAM credentials for unsupported mechanism "
             f"{exc.args[0]!r}")
        return
    data.credentials[creds.mechanism] = creds


def _bare(text: str | None) -> str:
    jid = JID.parse(text or "")
    return str(jid.bare)


def _roster(query, data: UserData, where, warn: Warn) -> None:
    for item in query:
        if item.tag != _q(ROSTER_NS, "item"):
            warn(f"{where(item)}: skipped unknown roster element <{etree.QName(item).localname}/>")
            continue
        subscription = item.get("subscription", "none")
        if subscription not in SUBSCRIPTIONS:
            raise ValueError(f"roster item with subscription={subscription!r}")
        try:
            jid = _bare(item.get("jid"))
        except JIDError as exc:
            raise ValueError(f"roster item with a bad jid {item.get('jid')!r}: {exc}") from None
        groups = tuple(dict.fromkeys(g.text or "" for g in item.iter(_q(ROSTER_NS, "group"))
                                     if g.text))
        data.roster.append(RosterItem(jid, item.get("name"), subscription,
                                      item.get("ask") == "subscribe",
                                      item.get("approved") in ("true", "1"), groups))


def _describe(el) -> str:
    name = etree.QName(el)
    return f"<{name.localname} xmlns='{name.namespace}'/>"


def _pending(presence, user_jid: str, data: UserData, where, warn: Warn) -> None:
    """A pending inbound subscription request (§4.9), kept as the stanza to deliver.

    Prosody writes it without a namespace, so it arrives in the PIE one; it is
    moved to jabber:client, and given the ``to`` a client expects.
    """
    if presence.get("type") != "subscribe":
        warn(f"{where(presence)}: skipped presence of type {presence.get('type')!r}")
        return
    try:
        contact = _bare(presence.get("from"))
    except JIDError as exc:
        raise ValueError(f"pending subscription with a bad from: {exc}") from None
    stanza = deepcopy(presence)
    for el in stanza.iter():
        if isinstance(el.tag, str) and etree.QName(el).namespace in (PIE_NS, LEGACY_NS):
            el.tag = _q(CLIENT_NS, etree.QName(el).localname)
    if stanza.get("to") is None:
        stanza.set("to", user_jid)
    data.pending_in[contact] = to_text(stanza)


def _offline(offline, host: str, data: UserData, where, warn: Warn) -> None:
    for message in offline:
        if message.tag != _q(CLIENT_NS, "message"):
            warn(f"{where(message)}: skipped <{etree.QName(message).localname}/> in "
                 "offline-messages")
            continue
        stored_at = None
        delays = message.findall(_q(DELAY_NS, "delay"))
        # the delay the exporting server added when it stored the message
        ours = [d for d in delays if d.get("from") == host] or delays[-1:]
        if ours:
            try:
                stored_at = timestamps.parse(ours[-1].get("stamp", ""))
            except ValueError:
                raise ValueError(f"bad delay stamp {ours[-1].get('stamp')!r}") from None
            message.remove(ours[-1])
        data.offline.append((to_text(message), stored_at if stored_at is not None
                             else time.time()))


def _privacy(query, data: UserData, where, warn: Warn) -> None:
    """The blocklist out of XEP-0016 privacy lists (XEP-0191 §7).

    Kept: ``jid``/``deny`` items without children (deny everything) of the
    default list or of ejabberd's blocking list. Every other list and item
    has no equivalent here and is skipped with a warning.
    """
    default = query.find(_q(PRIVACY_NS, "default"))
    wanted = {BLOCKLIST_NAME, default.get("name") if default is not None else None}
    for plist in query.iterfind(_q(PRIVACY_NS, "list")):
        name = plist.get("name")
        items = plist.findall(_q(PRIVACY_NS, "item"))
        if name not in wanted:
            warn(f"{where(plist)}: skipped privacy list {name!r} ({len(items)} items): "
                 "xferd keeps only blocking (XEP-0191)")
            continue
        for item in items:
            if item.get("type") == "jid" and item.get("action") == "deny" and len(item) == 0:
                try:
                    jid = str(JID.parse(item.get("value") or ""))
                except JIDError as exc:
                    raise ValueError(f"blocked JID {item.get('value')!r}: {exc}") from None
                if jid not in data.blocked:
                    data.blocked.append(jid)
            else:
                rule = " ".join(f"{k}={item.get(k)!r}" for k in ("type", "value", "action")
                                if item.get(k) is not None)
                warn(f"{where(item)}: skipped privacy rule ({rule or 'no attributes'}"
                     f"{', for some stanzas only' if len(item) else ''}) of list {name!r}: "
                     "xferd keeps only blocking (XEP-0191)")


def _form(form) -> dict[str, list[str]]:
    return {f.get("var"): [v.text or "" for v in f.findall(_q(DATA_NS, "value"))]
            for f in form.findall(_q(DATA_NS, "field")) if f.get("var")}


def _pep_config(configure, where, warn: Warn) -> PepNode:
    node = PepNode(configure.get("node") or "")
    if not node.node:
        raise ValueError("<configure/> without a node")
    form = configure.find(_q(DATA_NS, "x"))
    for var, values in (_form(form) if form is not None else {}).items():
        value = values[0] if len(values) == 1 else values
        # Prosody lists every option, those left at their default without a value
        if var == "FORM_TYPE" or var in FIXED_OPTIONS or not values:
            continue
        if var == ACCESS_MODEL:
            if value in ACCESS_MODELS:
                node.access_model = value
            else:
                warn(f"{where(configure)}: node {node.node}: access model {value!r} is not "
                     f"supported, using {node.access_model!r}")
        elif var == MAX_ITEMS_FIELD:
            node.max_items = MAX_ITEMS if value == "max" else \
                max(1, min(MAX_ITEMS, int(value))) if str(value).isdigit() else 1
        else:
            node.config[var] = value
    return node


def parse_user(user, host: str, path, warn: Warn, *, iterations: int = 4096
               ) -> tuple[str, UserData]:
    """One ``<user/>`` element → (prepared username, data). Raises PieError."""
    where = lambda el: _where(path, el)          # noqa: E731
    try:
        username = JID.parse(f"{user.get('name') or ''}@{host}").local
    except JIDError as exc:
        raise PieError(path, user.sourceline, f"bad user name {user.get('name')!r}: {exc}")
    data = UserData()
    nodes: dict[str, PepNode] = {}
    items: dict[str, list[PepItem]] = {}
    try:
        password = user.get("password")
        if password and password.startswith("scram:"):
            _take_credentials(lambda: _legacy_scram(password), user, data, where, warn)
        elif password:
            warn(f"{where(user)}: {username}@{host} has a plaintext password: stored as "
                 "SCRAM credentials only")
            data.credentials.update(make_all_credentials(password, iterations))
        for child in user:
            if not isinstance(child.tag, str):
                continue
            tag = child.tag
            if tag == _q(SCRAM_NS, "scram-credentials"):
                _take_credentials(lambda: _scram(child), child, data, where, warn)
            elif tag == _q(ROSTER_NS, "query"):
                _roster(child, data, where, warn)
            elif tag == _q(CLIENT_NS, "presence") or _pie(child, "presence"):
                _pending(child, f"{username}@{host}", data, where, warn)
            elif _pie(child, "offline-messages"):
                _offline(child, host, data, where, warn)
            elif tag == _q(PRIVATE_NS, "query"):
                for fragment in child:
                    if isinstance(fragment.tag, str):
                        data.private[fragment.tag] = to_text(fragment)
            elif tag == _q(VCARD_NS, "vCard"):
                data.vcard = to_text(child)
            elif tag == _q(PRIVACY_NS, "query"):
                _privacy(child, data, where, warn)
            elif tag == _q(OWNER_NS, "pubsub"):
                for configure in child.iter(_q(OWNER_NS, "configure")):
                    node = _pep_config(configure, where, warn)
                    nodes[node.node] = node
            elif tag == _q(PUBSUB_NS, "pubsub"):
                for node_items in child.iter(_q(PUBSUB_NS, "items")):
                    name = node_items.get("node") or ""
                    for item in node_items.iter(_q(PUBSUB_NS, "item")):
                        payload = [p for p in item if isinstance(p.tag, str)]
                        if not payload:
                            warn(f"{where(item)}: skipped PEP item without payload")
                            continue
                        items.setdefault(name, []).append(
                            PepItem(item.get("id") or str(len(items.get(name, ()))),
                                    to_text(payload[0])))
            elif tag == pie_mam.ARCHIVE:
                pass                     # read entry by entry as it was parsed (_walk)
            else:
                warn(f"{where(child)}: skipped unknown element {_describe(child)} "
                     f"of {username}@{host}")
    except ValueError as exc:
        raise PieError(path, getattr(exc, "line", None) or user.sourceline,
                       f"user {user.get('name')!r}: {exc}") from None
    if not data.credentials:
        warn(f"{where(user)}: {username}@{host} {NO_CREDENTIALS}: nobody can "
             f"log in until `xferd passwd {username}@{host}`")
    for name in items:
        if name not in nodes:
            nodes[name] = PepNode(name)
    data.pep = [(nodes[name], items.get(name, [])) for name in sorted(nodes)]
    return username, data


def _include_path(path: Path, el) -> Path:
    """The file an ``<xi:include/>`` names, if XEP-0227 §5 allows it."""
    href = el.get("href") or ""
    if el.get("parse", "xml") != "xml" or el.get("xpointer") is not None:
        raise PieError(path, el.sourceline, "xi:include with parse/xpointer is not allowed")
    parts = urlsplit(href)
    relative = unquote(parts.path)
    if (not href or parts.scheme or parts.netloc or parts.query or parts.fragment
            or relative.startswith("/") or ".." in Path(relative).parts):
        raise PieError(path, el.sourceline,
                       f"xi:include href {href!r} must be a relative path below this file")
    return path.parent / relative


@dataclass
class ArchiveBatch:
    """Up to ``pie_mam.BATCH`` archived messages of one account, in file order."""
    host: str
    username: str
    entries: list[ArchivedMessage]


def iter_users(path, *, warn: Warn, iterations: int = 4096,
               ) -> Iterator[tuple[str, str, UserData]]:
    """(host, username, data) for every user of the document at *path*,
    streaming; message archives are passed over unread."""
    for item in _walk(Path(path), ("server-data",), None, warn, iterations, set(), False):
        if not isinstance(item, ArchiveBatch):
            yield item


def iter_document(path, *, warn: Warn, iterations: int = 4096,
                  ) -> Iterator[tuple[str, str, UserData] | ArchiveBatch]:
    """As :func:`iter_users`, and each account's archive too: its
    :class:`ArchiveBatch` items come before the account's own tuple."""
    yield from _walk(Path(path), ("server-data",), None, warn, iterations, set(), True)


def _account(name: str | None, host: str | None) -> JID | None:
    try:
        return JID.parse(f"{name or ''}@{host}") if host else None
    except JIDError:
        return None                       # parse_user reports it when the user ends


def _archive_child(el, archive, user, account: JID | None, path: Path, warn: Warn,
                   pending: list[ArchivedMessage]) -> None:
    """A child of a user's ``<archive/>``, just ended: with *account* (the
    archives are wanted), an entry is parsed into *pending* and anything else
    skipped with a warning; either way it leaves the tree, so memory stays flat."""
    if account is None or el.tag != pie_mam.RESULT:
        if account is not None:
            warn(f"{_where(path, el)}: skipped <{etree.QName(el).localname}/> in the archive")
        el.clear()
        archive.remove(el)
        return
    try:
        pie_mam.read_entry(el, account, lambda e: _where(path, e), warn, pending.append)
    except ValueError as exc:
        raise PieError(path, getattr(exc, "line", None) or el.sourceline,
                       f"user {user.get('name')!r}: {exc}") from None


def _walk(path: Path, roots: tuple[str, ...], host: str | None, warn: Warn,
          iterations: int, open_files: set, archives: bool):
    real = path.resolve()
    if real in open_files:
        raise PieError(path, None, "xi:include loop")
    if not path.is_file():
        raise PieError(path, None, "no such file")
    open_files = open_files | {real}
    context = etree.iterparse(str(path), events=("start", "end"), resolve_entities=False,
                              no_network=True, load_dtd=False, huge_tree=False,
                              remove_comments=True, remove_pis=True)
    stack: list = []
    users_open = 0                      # <user/> elements on the stack (a user's insides
    account: JID | None = None          # are read by parse_user, not here; the archive
    pending: list[ArchivedMessage] = []  # by pie_mam as each entry ends)
    try:
        for event, el in context:
            if event == "start":
                is_user = _pie(el, "user")
                users_open += is_user
                if is_user and users_open == 1:
                    account = _account(el.get("name"), host)
                if users_open > is_user:
                    stack.append(el)
                    continue
                if not stack:
                    if el.getroottree().docinfo.doctype:
                        raise PieError(path, el.sourceline, "a DOCTYPE (DTD, entities) is "
                                                            "not allowed")
                    if not any(_pie(el, root) for root in roots):
                        raise PieError(path, el.sourceline,
                                       f"expected <{'/> or <'.join(roots)}/> in {PIE_NS}, "
                                       f"found {el.tag}")
                if _pie(el, "host") and (not stack or _pie(stack[-1], "server-data")):
                    try:
                        host = nameprep(el.get("jid") or "")
                    except JIDError as exc:
                        raise PieError(path, el.sourceline, f"bad host jid: {exc}") from None
                stack.append(el)
                continue
            stack.pop()
            is_user = _pie(el, "user")
            users_open -= is_user
            if users_open:
                if (users_open == 1 and len(stack) >= 2 and stack[-1].tag == pie_mam.ARCHIVE
                        and _pie(stack[-2], "user")):
                    _archive_child(el, stack[-1], stack[-2], account if archives else None,
                                   path, warn, pending)
                    if len(pending) >= pie_mam.BATCH:
                        yield ArchiveBatch(host, account.local, pending)
                        pending = []
                continue                                  # parsed with its user
            parent = stack[-1] if stack else None
            if is_user:
                if host is None:
                    raise PieError(path, el.sourceline, "<user/> outside of <host/>")
                username, data = parse_user(el, host, path, warn, iterations=iterations)
                if pending:
                    yield ArchiveBatch(host, username, pending)
                    pending = []
                yield host, username, data
            elif el.tag == _q(XI_NS, "include") and parent is not None:
                target = _include_path(path, el)
                if _pie(parent, "server-data"):
                    yield from _walk(target, ("host",), None, warn, iterations, open_files,
                                     archives)
                elif _pie(parent, "host"):
                    yield from _walk(target, ("user",), host, warn, iterations, open_files,
                                     archives)
            elif parent is not None and not _pie(el, "host"):
                warn(f"{_where(path, el)}: skipped unknown element "
                     f"<{etree.QName(el).localname}/> in <{etree.QName(parent).localname}/>")
            elif parent is not None:                      # a <host/> inside <server-data/>
                host = None
            if parent is not None:
                el.clear()
                while el.getprevious() is not None:      # keep memory flat
                    del parent[0]
    except etree.XMLSyntaxError as exc:
        raise PieError(path, exc.lineno, f"not well-formed: {exc.msg}") from None


async def import_file(store, path, *, hosts, dry_run: bool = False, iterations: int = 4096,
                      warn: Warn, progress: Callable[[int], None] | None = None,
                      every: int = 1000, note: Callable[[str], None] | None = None,
                      ) -> Summary:
    """Import every user of the document at *path* into *store*.

    Pass 1 checks the whole document (raising :class:`PieError`) and writes
    nothing; unless *dry_run*, pass 2 creates each new account with all its
    data in one transaction, and pass 3 adds the message archives of the
    accounts pass 2 created, ``pie_mam.BATCH`` entries per transaction
    (``note(text)`` tells how far it got). Existing accounts are skipped with
    a warning, their archive too.
    """
    checked = Summary()
    warnings = []

    def noted(message: str) -> None:
        warnings.append(message)
        warn(message)

    archived: dict[tuple[str, str], int] = {}
    for item in iter_document(path, warn=noted, iterations=iterations):
        if isinstance(item, ArchiveBatch):
            key = (item.host, item.username)
            archived[key] = archived.get(key, 0) + len(item.entries)
            continue
        host, username, data = item
        if host not in hosts:
            raise PieError(path, None, f"host {host} is not served by this server "
                                       f"(hosts: {', '.join(hosts)})")
        checked.count(data)
    summary = Summary(warnings=len(warnings))
    created_users: set[tuple[str, str]] = set()
    for host, username, data in iter_users(path, warn=lambda _: None, iterations=iterations):
        jid = f"{username}@{host}"
        if dry_run:
            created = not await store.user_exists(host, username) \
                and not await store.get_tombstone(host, username)
        else:
            created = await store.import_user(host, username, data)
        if created:
            summary.count(data)
            summary.archived += archived.get((host, username), 0)
            created_users.add((host, username))
        else:
            summary.skipped += 1
            summary.skipped_users.append(jid)
            summary.warnings += 1
            history = archived.get((host, username), 0)
            warn(f"{jid} already exists (or was deleted after moving): skipped"
                 + (f" (`xferd import --history-only` adds its {history} archived "
                    "messages)" if history else ""))
        if progress and (summary.users + summary.skipped) % every == 0:
            progress(summary.users + summary.skipped)
    if not dry_run and any(archived.get(key) for key in created_users):
        summary.archived = await import_archives(store, path, created_users, iterations,
                                                 note=note)
    return summary


async def import_archives(store, path, accounts: set[tuple[str, str]], iterations: int = 4096,
                          *, rehome: Callable[[ArchivedMessage], ArchivedMessage] | None = None,
                          into: tuple[str, str] | None = None,
                          note: Callable[[str], None] | None = None,
                          every: int = 10000) -> int:
    """Store the archives of *accounts* ((host, username) pairs) from the
    document at *path* (checked before), batch by batch; *rehome* changes each
    entry on the way and *into* names the account they go to instead (``import
    --as``). Returns how many entries were added (re-imported ones are not)."""
    added = seen = 0
    for item in iter_document(path, warn=lambda _: None, iterations=iterations):
        if not isinstance(item, ArchiveBatch) or (item.host, item.username) not in accounts:
            continue
        entries = [rehome(e) for e in item.entries] if rehome else item.entries
        host, username = into or (item.host, item.username)
        added += await store.import_archive(host, username, entries)
        before, seen = seen, seen + len(entries)
        if note and seen // every > before // every:
            note(f"import: {counted(seen, 'archived message')} of {username}@{host}")
    return added


async def import_history(store, path, *, hosts, dry_run: bool = False, warn: Warn,
                         note: Callable[[str], None] | None = None) -> tuple[int, list[str]]:
    """Only the message archives of the document at *path*, into the accounts
    of this server that exist (``xferd import --history-only``); the others
    are reported and left out. Checked whole first, as :func:`import_file`.
    Returns (entries added, or with *dry_run* entries found, and the accounts)."""
    found: dict[tuple[str, str], int] = {}
    # the accounts are there already: a file holding only archives is what is expected
    for item in iter_document(path, warn=lambda m: NO_CREDENTIALS in m or warn(m)):
        if isinstance(item, ArchiveBatch):
            key = (item.host, item.username)
            found[key] = found.get(key, 0) + len(item.entries)
        elif item[0] not in hosts:
            raise PieError(path, None, f"host {item[0]} is not served by this server "
                                       f"(hosts: {', '.join(hosts)})")
    accounts = set()
    for host, username in found:
        if await store.user_exists(host, username):
            accounts.add((host, username))
        else:
            warn(f"{username}@{host} does not exist here: its archive is left out")
    names = sorted(f"{username}@{host}" for host, username in accounts)
    if dry_run:
        return sum(found[key] for key in accounts), names
    return await import_archives(store, path, accounts, note=note), names
