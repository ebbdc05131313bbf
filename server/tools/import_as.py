"""``xferd import FILE --as NEW [--outreach]``: an exported account becomes another one.

A XEP-0227 export of ``old@old.example`` imported as ``new@here`` is a move,
not a restore, so the data is re-homed by :func:`rehome`:

* credentials are kept: SCRAM keys depend on the password and salt only,
  never on the username, so the old password logs in to the new account;
* roster items keep their names and groups, but every subscription is reset
  to ``none`` with nothing pending and nothing pre-approved — subscriptions
  are agreements between two JIDs and the contacts agreed with the old one.
  Transports and contacts through them are left out (they cannot move; the
  same rules as ``xferd migrate``, ``server/xmpp/outreach.py``);
* pending inbound requests are dropped: they asked for the old JID;
* offline messages, private XML and the vCard are kept, messages readdressed;
* PEP nodes are kept except the moved statement (``urn:xmpp:moved:1``): it
  belongs to the old account, and the new one has not moved;
* the message archive (storage/pie_mam.py) is kept, entry by entry: the old
  JID, bare or full, in each archived message's ``from``/``to`` becomes the
  new one (the resource kept), contacts' JIDs stay as they are; timestamps
  and ids are kept and each entry is marked as imported from the old account
  (:func:`rehome_entry`; ``xferd migrate --history`` rewrites the same way).

``--outreach`` then tells the contacts, through this server, which must be
running: it logs in to the new account (the old password, from
``$XFERD_PASSWORD`` or the terminal) and sends the Snikket migrator's
outreach plan — pre-approval (``subscribed``) to everyone who saw the old
account's presence, ``subscribe`` to everyone it saw. The requests carry
``<moved><old-jid/></moved>`` (XEP-0283 §4.2) only when the export holds a
statement naming the new account: otherwise there is nothing a contact's
server could verify. Answers are watched and reported as ``xferd migrate``
does, with the same resumable state file (in the data directory); a second
run skips the import (the account exists) and repeats the outreach for
contacts that failed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from storage import pie
from storage.api import ArchivedMessage, RosterItem, UserData

from ..config import caller_path
from ..io.tls import default_cert_paths
from ..wording import counted
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import MOVED_NS
from ..xmpp.outreach import STATEMENT_NODE, Plan, plan_outreach
from ..xmpp.stanza import from_text, to_text

log = logging.getLogger("xferd.import")


class ImportAsError(Exception):
    """Shown as ``xferd: error: …``; nothing was imported."""


@dataclass
class Rehomed:
    """The account's data for the new JID, and what changed on the way."""
    data: UserData
    plan: Plan
    statement: bool                    # the export states the move to the new JID
    dropped_pending: list[str] = field(default_factory=list)
    dropped_statement: bool = False
    archived: int = 0                  # archived messages added to the new account


def rehome(data: UserData, old: JID, new: JID) -> Rehomed:
    """*data* of *old*, as it should be stored for *new* (module docstring)."""
    plan = plan_outreach(old, new, data.roster)
    roster = [RosterItem(item.jid, item.name, "none", False, False, item.groups)
              for item in plan.items]
    statement, pep, dropped_statement = False, [], False
    for node, items in data.pep:
        if node.node == STATEMENT_NODE:
            dropped_statement = True
            statement = any(_states_move_to(item.payload, new) for item in items)
        else:
            pep.append((node, items))
    offline = [(_readdress(stanza, old, new), stored_at) for stanza, stored_at in data.offline]
    moved = replace(data, roster=roster, pending_in={}, offline=offline, pep=pep)
    return Rehomed(moved, plan, statement, list(data.pending_in), dropped_statement)


def rehome_jid(text: str | None, old: JID, new: JID) -> str | None:
    """*text* with the account *old* replaced by *new* (a full JID keeps its
    resource); any other JID, or one that does not parse, as it was."""
    if not text:
        return text
    try:
        jid = JID.parse(text)
    except JIDError:
        return text
    if jid.bare != old:
        return text
    return str(JID(new.local, new.domain, jid.resource))


def rehome_message(message, old: JID, new: JID):
    """The ``<message/>`` element *message* changed in place: *old* in its
    ``from`` and ``to`` becomes *new* (contacts untouched); returned."""
    for attr in ("from", "to"):
        value = message.get(attr)
        if value is not None:
            message.set(attr, rehome_jid(value, old, new))
    return message


def rehome_entry(entry: ArchivedMessage, old: JID, new: JID) -> ArchivedMessage:
    """An archive entry of *old* as one of *new*: the stanza readdressed,
    ``with`` too if it was the account itself (a note to self); the rest kept."""
    stanza = to_text(rehome_message(from_text(entry.stanza), old, new))
    with_jid = rehome_jid(entry.with_jid, old, new)
    return replace(entry, stanza=stanza, with_jid=with_jid)


def _states_move_to(payload: str, new: JID) -> bool:
    moved = from_text(payload)
    return (moved.tag == f"{{{MOVED_NS}}}moved"
            and (moved.findtext(f"{{{MOVED_NS}}}new-jid") or "").strip() == str(new))


def _readdress(stanza: str, old: JID, new: JID) -> str:
    message = from_text(stanza)
    to = message.get("to")
    if to is None or JID.parse(to).bare == old:
        message.set("to", str(new))
    return to_text(message)


def read_single_user(path, warn) -> tuple[JID, UserData]:
    """The one account in the export at *path* (checked whole; PieError if bad)."""
    found = []
    for item in pie.iter_document(path, warn=warn):     # archive entries checked, not kept
        if isinstance(item, pie.ArchiveBatch):
            continue
        host, username, data = item
        found.append((JID(username, host), data))
        if len(found) > 1:
            break
    if len(found) != 1:
        what = "no account" if not found else "more than one account"
        raise ImportAsError(f"{path} holds {what}; --as imports exactly one "
                            "(export it with xferd export --user)")
    return found[0]


async def import_as(store, old: JID, new: JID, data: UserData, path=None,
                    note=None) -> tuple[Rehomed, bool]:
    """Store *data* of *old* as the new account *new* (≠ *old*, checked by the
    caller; plan_outreach refuses it too), and then the archive *old* has in
    the export at *path*, if given; (rehomed, created)."""
    rehomed = rehome(data, old, new)
    created = await store.import_user(new.domain, new.local, rehomed.data)
    if created and path is not None:
        rehomed.archived = await pie.import_archives(
            store, path, {(old.domain, old.local)},
            rehome=lambda entry: rehome_entry(entry, old, new),
            into=(new.domain, new.local), note=note)
    return rehomed, created


def describe(rehomed: Rehomed, old: JID, new: JID, created: bool) -> list[str]:
    """The lines the command prints about the import itself."""
    plan, data = rehomed.plan, rehomed.data
    lines = [f"imported {old} as {new}: {counted(len(plan.items), 'roster item')} "
             f"(subscriptions reset to none), {counted(len(data.offline), 'offline message')}, "
             f"{counted(len(data.private), 'private fragment')}, "
             f"{'a vCard' if data.vcard else 'no vCard'}, {counted(len(data.pep), 'PEP node')}, "
             f"{counted(rehomed.archived, 'archived message')}"
             if created else
             f"{new} already exists: nothing imported (the outreach can still be sent)"]
    if created and rehomed.dropped_pending:
        dropped = counted(len(rehomed.dropped_pending), "pending subscription request")
        lines.append(f"dropped {dropped} addressed to {old}: "
                     + ", ".join(rehomed.dropped_pending))
    if created and rehomed.dropped_statement:
        lines.append(f"left out the moved statement of {old} (it belongs to the old account)")
    for skipped in plan.skipped:
        lines.append(f"left out {skipped.jid}: {skipped.reason}")
    return lines


# -- --outreach: through the running server ----------------------------------------------------

def local_endpoint(conf, domain: str) -> tuple[str, int, str]:
    """Where this server listens for clients, and the certificate to trust there."""
    interface = conf.c2s.interfaces[0] if conf.c2s.interfaces else "127.0.0.1"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(interface, interface)
    cert = conf.hosts[domain].cert or str(default_cert_paths(conf.certs_dir, domain)[0])
    return host, conf.c2s.port, cert


def state_file(conf, old: JID, new: JID) -> Path:
    """The outreach's state file without ``--state``: in the server's data
    directory, beside the account it belongs to (not the working directory)."""
    return conf.data_dir / f"xferd-import-{old}-{new}.json"


def outreach_password(new: JID) -> str:
    """The new account's password for --outreach, asked before anything is imported
    (raises ``UsageError`` when there is neither $XFERD_PASSWORD nor a terminal)."""
    from .two_accounts import password
    return password("XFERD_PASSWORD", new, "imported")


def outreach(conf, args, old: JID, new: JID, rehomed: Rehomed, secret: str) -> int:
    """Log in to *new* on this server and run the plan; migrate's report and exit status."""
    from . import migrate
    from ..client import ClientError
    from .two_accounts import UsageError, login, login_failed

    host, port, cert = local_endpoint(conf, new.domain)
    state_path = Path(args.state) if args.state else state_file(conf, old, new)
    try:
        state = migrate.State.load(state_path, old, new)
    except UsageError as exc:
        raise ImportAsError(str(exc)) from None
    opts = migrate.Options(old, new, new_host=args.host or host, new_port=args.port or port,
                           new_cafile=args.cafile or (None if args.insecure else cert),
                           verify=not args.insecure, state_path=state_path, wait=args.wait)
    moved = rehomed.statement
    if not moved:
        print(f"no moved statement for {new} in the export: the requests go without "
              "<moved/>", file=sys.stderr)

    async def run() -> int:
        # only migrate's steps 8 (send) and 9 (wait) run here: shown as 1/2 and 2/2
        migrate.steps_shown.set({8: (1, 2), 9: (2, 2)})
        try:
            client = await login(opts, "new", secret, resource="xferd-import")
        except ClientError as exc:
            if exc.condition in ("remote-server-not-found", "connection-closed",
                                 "connection-timeout"):
                print(f"xferd: error: --outreach needs this server running ({exc.text}); "
                      "start it and run the same command again", file=sys.stderr)
                return 1
            return login_failed("new", new, exc)
        try:
            job = migrate.Migration(opts, state, None, client)
            answers = await job.outreach(rehomed.plan, moved=moved)
            return await job.report(rehomed.plan, answers)
        except (ClientError, OSError) as exc:
            print(f"xferd: error: the outreach broke off: {exc}; rerun to resume",
                  file=sys.stderr)
            return 1
        finally:
            state.save_if_used()
            await client.close()
    return asyncio.run(run())


def add_arguments(parser) -> None:
    """The options of ``xferd import`` that only matter with ``--as``."""
    parser.add_argument("--as", dest="as_jid", metavar="JID",
                        help="import the file's one account as this new account "
                             "(subscriptions reset; see --outreach)")
    parser.add_argument("--outreach", action="store_true",
                        help="with --as: ask the old contacts to follow, through this "
                             "running server (password: $XFERD_PASSWORD, else asked)")
    parser.add_argument("--host", help="with --outreach: connect here (default: this "
                                       "server's first c2s interface)")
    parser.add_argument("--port", type=int, help="with --outreach: c2s port (default: this "
                                                 "server's)")
    parser.add_argument("--cafile", type=caller_path,
                        help="with --outreach: trust these certificates (default: "
                             "this host's own certificate)")
    parser.add_argument("--insecure", action="store_true",
                        help="with --outreach: do not check the certificate")
    parser.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                        help="with --outreach: how long to watch for answers (default 10)")
    parser.add_argument("--state", metavar="FILE", type=caller_path,
                        help="with --outreach: state file "
                             "(default DATA_DIR/xferd-import-OLD-NEW.json)")


def check_arguments(args) -> str | None:
    """The usage error in *args*, if any."""
    if args.as_jid is None:
        extra = [o for o, v in (("--outreach", args.outreach), ("--host", args.host),
                                ("--port", args.port), ("--cafile", args.cafile),
                                ("--state", args.state), ("--insecure", args.insecure)) if v]
        if extra:
            named = ", ".join(extra[:-1]) + " and " + extra[-1] if len(extra) > 1 else extra[0]
            return f"{named} only {'goes' if len(extra) == 1 else 'go'} with --as"
    elif args.dry_run and args.outreach:
        return "--dry-run does not go with --outreach"
    if args.wait < 0:
        return "--wait must not be negative"
    return None

