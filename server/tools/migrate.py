"""``xferd migrate``: move an account to another server with standard XMPP only.

The command-line peer of the Snikket web migrator, speaking plain client
XMPP so it works between any servers (xferd, Prosody, ejabberd). Steps,
each logged with progress:

1. log in to both accounts (``server/client``; TLS verified);
2. read the old account: roster (RFC 6121 §2), vCard (XEP-0054), private
   XML (XEP-0049: ``storage:bookmarks``, ``storage:rosternotes``) and PEP
   nodes (XEP-0163): the known ones in :data:`PEP_NODES`, plus whatever the
   server lists under disco#items on the account (XEP-0030; xferd lists
   nothing there), minus :data:`PEP_NOT_COPIED`;
3. copy the roster items (names, groups; subscriptions come from step 8);
4. copy the vCard, 5. the private XML and 6. the PEP items — each only where
   the new account has none yet, so nothing there is overwritten;
7. publish the moved statement on the old account (XEP-0283 §4.1: node and
   item ``urn:xmpp:moved:1``/``current``, publish-options
   ``access_model=open`` so every contact's server can verify it — which
   also shows the new address to anyone who asks; ``--no-statement`` skips);
8. send the outreach plan (``server/xmpp/outreach.py``) from the new account,
   contact by contact: the pre-approval, then ``subscribe`` with ``<moved/>``
   (a new server without pre-approvals, RFC 6121 §3.4, passes a pre-approved
   contact's request on to the tool instead, which approves it while it waits);
9. watch for answers for ``--wait`` seconds, and report per contact:
   ``auto-updated`` (``subscribed`` came back within the wait — the contact's
   server verified the statement, XEP-0283 §4.4), ``approved`` (the
   subscription exists now, seen on a later run), ``waiting for manual
   approval``, ``failed: why`` (an error presence, a refusal, or the
   contact's domain answering ``remote-server-not-found``/``-timeout`` to a
   disco#info probe — servers drop error presence addressed to a bare JID,
   so the probe is what finds unreachable domains), ``roster only`` (no
   subscription to restore) and ``skipped`` — the watch and the states are
   server/tools/outcomes.py's, shared with ``xferd transfer``.

With ``--history``, the message archive follows between steps 6 and 7
(server/tools/migrate_history.py): paged over XEP-0313 and handed to the
new account's own archive when the new server is xferd, else written to a
XEP-0227 file for the new server's administrator.

Resumable: a JSON state file records finished steps and per-contact
outreach (and how far the history got); a rerun skips what is done.
Contacts that failed are tried again, and contacts added to the old roster
since are copied and asked.
``--dry-run`` logs in, reads, prints the plan and changes nothing.
Exit status: 0 when every contact is auto-updated, approved or waiting;
1 if any failed (or the run broke off); 2 on usage and login errors.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..client import Client, ClientError, IQError
from ..config import caller_path
from .migrate_history import HistoryCopy
from .outcomes import APPROVED, AUTO, Answers, note, outcome, subscribed_to, watch
from .two_accounts import (LoginFailed, TwoAccounts, UsageError, account,
                           add_connection_arguments, login, login_both, login_failed,
                           side_password)
from ..xmpp.jid import JID, JIDError
from ..xmpp.outreach import STATEMENT_ITEM, STATEMENT_NODE, Plan, plan_outreach
from ..xmpp.stanza import E, PRESENCE
from ..xmpp.stream import CLIENT_NS, serialize

log = logging.getLogger("xferd.migrate")

#: private XML fragments copied (XEP-0049), as ``<storage xmlns=NS/>``
PRIVATE_NAMESPACES = ("storage:bookmarks",        # XEP-0048 bookmarks
                      "storage:rosternotes")      # XEP-0145 annotations
#: PEP nodes always looked for → access model if the old node will not tell
#: (None: the new server's default, normally ``presence``)
PEP_NODES: dict[str, str | None] = {
    "urn:xmpp:avatar:data": None,                 # XEP-0084 (data before metadata)
    "urn:xmpp:avatar:metadata": None,
    "http://jabber.org/protocol/nick": None,      # XEP-0172
    "urn:xmpp:vcard4": None,                      # XEP-0292
    "urn:xmpp:bookmarks:1": "whitelist",          # XEP-0402
    "storage:bookmarks": "whitelist",             # XEP-0048 in PEP (XEP-0223)
}
#: never copied: the statement belongs to the old account, device keys to the
#: devices, and moods, tunes, activities and places to the moment
PEP_NOT_COPIED = ("urn:xmpp:moved:", "eu.siacs.conversations.axolotl", "urn:xmpp:omemo:",
                  "http://jabber.org/protocol/mood", "http://jabber.org/protocol/tune",
                  "http://jabber.org/protocol/activity", "http://jabber.org/protocol/geoloc")
STEPS = 9
#: roster sets in flight per session while copying (a server answers them in order)
ROSTER_WINDOW = 32
#: sessions copying the roster side by side: a server handles one session's
#: stanzas one after the other, each roster set waiting for its write to be
#: on disk; several sessions let it write several sets per disk sync
ROSTER_SESSIONS = 4
#: outreach stanzas written between two waits for the socket buffer to drain
OUTREACH_DRAIN = 64
#: the state file is saved at least this often (seconds) within a step: see State
SAVE_INTERVAL = 0.5


@dataclass
class Options(TwoAccounts):
    state_path: Path = Path(".")
    dry_run: bool = False
    statement: bool = True
    wait: float = 10.0
    history: bool = False              # --history: server/tools/migrate_history.py
    history_file: Path | None = None

    @classmethod
    def from_args(cls, args) -> "Options":
        old, new = account(args.old, "--from"), account(args.new, "--to")
        if old == new:
            raise UsageError("--from and --to name the same account")
        if args.wait < 0:
            raise UsageError("--wait must not be negative")
        state = Path(args.state) if args.state else default_state_path(old, new)
        if args.history_file and not args.history:
            raise UsageError("--history-file goes with --history")
        return cls(old, new, **TwoAccounts.connection_fields(args), state_path=state,
                   dry_run=args.dry_run, statement=not args.no_statement, wait=args.wait,
                   history=args.history,
                   history_file=Path(args.history_file) if args.history_file else None)


def add_arguments(parser) -> None:
    """The ``migrate`` subcommand's options (see ``server/cli.py``)."""
    parser.add_argument("--from", dest="old", required=True, metavar="OLD",
                        help="the account to move, user@domain")
    parser.add_argument("--to", dest="new", required=True, metavar="NEW",
                        help="the account to move to (must exist)")
    add_connection_arguments(parser)
    parser.add_argument("--state", metavar="FILE", type=caller_path,
                        help="state file (default $XDG_STATE_HOME/xferd/xferd-migrate-OLD-NEW"
                             ".json, that is ~/.local/state/xferd/…)")
    parser.add_argument("--dry-run", action="store_true",
                        help="log in, read, print the plan; change nothing")
    parser.add_argument("--no-statement", action="store_true",
                        help="do not publish the moved statement on the old account")
    parser.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                        help="how long to watch for answers from contacts (default 10)")
    parser.add_argument("--history", action="store_true",
                        help="copy the message archive (XEP-0313) too: into the new "
                             "account's archive when the new server is xferd, else into a "
                             "XEP-0227 file for its administrator")
    parser.add_argument("--history-file", metavar="FILE", type=caller_path,
                        help="with --history, for a new server that is not xferd: write the "
                             "archive here (default: beside the state file, "
                             "xferd-history-OLD-NEW.xml)")


def run(args) -> int:
    """Entry point of ``xferd migrate``; passwords from the environment or the terminal."""
    try:
        opts = Options.from_args(args)
        state = State.load(opts.state_path, opts.old, opts.new)
        old_password, new_password = side_password(opts, "old"), side_password(opts, "new")
    except UsageError as exc:
        print(f"xferd: error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(migrate(opts, state, old_password, new_password))


async def migrate(opts: Options, state: "State", old_password: str, new_password: str) -> int:
    step(1, f"logging in to {opts.old} and {opts.new}")
    try:
        old, new = await login_both(opts, old_password, new_password, resource="xferd-migrate")
    except LoginFailed as exc:
        return login_failed(exc.side, exc.jid, exc.error)
    try:
        return await Migration(
            opts, state, old, new, new_roster=lambda: roster_of(opts, "new", new_password),
            new_session=lambda resource: login(opts, "new", new_password,
                                               resource=resource)).run()
    except (ClientError, OSError) as exc:
        print(f"xferd: error: the migration broke off: {exc}; rerun to resume", file=sys.stderr)
        return 1
    finally:
        state.save_if_used()
        await old.close()
        await new.close()


async def roster_of(opts: Options, side: str, secret: str) -> list:
    """*side*'s roster, read on a connection of its own that ends at once.

    A session that asked for the roster is sent every later change of it
    and must answer each push (RFC 6121 §2.1.6). The migration changes the
    new account's roster five times per contact (the copy, the pre-approval,
    the request, the contact's answer and the contact's own request), so the
    session that does the work asks only once the outreach is out (step 9)."""
    client = await login(opts, side, secret, resource="xferd-roster")
    try:
        return await client.roster()
    finally:
        await client.close()


class Migration:
    """One run of the steps above; each consults and updates the state file."""

    def __init__(self, opts: Options, state: "State", old: Client, new: Client,
                 new_roster=None, new_session=None):
        self.opts, self.state, self.old, self.new = opts, state, old, new
        #: reads the new account's roster (default: on the session *new*)
        self.new_roster = new_roster or new.roster
        #: opens another session on the new account (resource → Client), if allowed
        self.new_session = new_session
        #: contacts the new account was subscribed to before the outreach
        self.subscribed_before: set[str] | None = None

    async def run(self) -> int:
        step(2, f"reading {self.opts.old}")
        roster = await self.old.roster()
        vcard = await self.read_vcard()
        private = await self.read_private()
        pep = await self.read_pep()
        plan = plan_outreach(self.opts.old, self.opts.new, roster)
        log.info("old account: %d roster items, %s, %d private fragment(s), %d PEP node(s)",
                 len(roster), "a vCard" if vcard is not None else "no vCard",
                 len(private), len(pep))
        history = HistoryCopy(self.opts, self.state, self.old, self.new) \
            if self.opts.history else None
        if self.opts.dry_run:
            print_plan(plan, vcard, private, pep, self.opts)
            if history is not None:
                print(f"  history: {await history.plan()}")
            return 0
        await self.copy_roster(plan)
        await self.copy_vcard(vcard)
        await self.copy_private(private)
        await self.copy_pep(pep)
        if history is not None:
            # between the steps: the old session is still open (closed after step 7)
            log.info("[history] copying the message archive of %s", self.opts.old)
            await history.run()
        await self.publish_statement(plan)
        # done with the old account: its session asked for the roster (step 2)
        # and would be sent a push for every contact that drops the old JID
        await self.old.close()
        answers = await self.outreach(plan)
        return await self.report(plan, answers)

    # -- reading ---------------------------------------------------------------------------
    async def read_vcard(self):
        try:
            return await self.old.vcard_get()
        except IQError as exc:
            log.warning("cannot read the vCard: %s", exc)
            return None

    async def read_private(self) -> list:
        fragments = []
        for ns in PRIVATE_NAMESPACES:
            try:
                fragment = await self.old.private_get(E(f"{{{ns}}}storage"))
            except IQError as exc:
                log.warning("cannot read private XML %s: %s", ns, exc)
                continue
            if fragment is not None:
                fragments.append(fragment)
        return fragments

    async def read_pep(self) -> list[tuple[str, str | None, list]]:
        """(node, access model, items) of every copyable node with items."""
        nodes = list(PEP_NODES)
        try:
            listed = await self.old.disco_items(str(self.opts.old))
        except IQError as exc:
            log.debug("disco#items on %s: %s", self.opts.old, exc)
            listed = []
        own = {"", str(self.opts.old)}
        nodes += [i.node for i in listed if i.node and i.jid in own and i.node not in nodes]
        found = []
        for node in nodes:
            if node.startswith(PEP_NOT_COPIED):
                continue
            try:
                items = await self.old.pep_items(None, node)
            except IQError as exc:
                log.warning("cannot read PEP node %s: %s", node, exc)
                continue
            if items:
                access = await self.old.pep_access_model(node) or \
                    PEP_NODES.get(node, "whitelist")     # unknown node: keep it private
                found.append((node, access, items))
        return found

    # -- copying ---------------------------------------------------------------------------
    async def copy_roster(self, plan: Plan) -> None:
        todo = [item for item in plan.items if not self.state.contact(item.jid).get("copied")]
        step(3, f"copying {len(todo)} roster item(s)")
        if len(todo) < len(plan.items):
            log.info("roster: %d item(s) copied in an earlier run",
                     len(plan.items) - len(todo))
        existing = {item.jid: item for item in await self.new_roster()} if todo else {}
        if todo:
            self.subscribed_before = subscribed_to(existing.values())
        changes = []
        done = 0

        def copied(item) -> None:
            nonlocal done
            done += 1
            self.state.contact(item.jid)["copied"] = True
            self.state.checkpoint()
            log.info("roster %d/%d: %s", done, len(todo), item.jid)
        for item in todo:
            have = existing.get(item.jid)
            name = (have.name if have else None) or item.name
            groups = tuple(dict.fromkeys((have.groups if have else ()) + item.groups))
            if have is None or (have.name, have.groups) != (name, groups):
                changes.append(_Item(item.jid, name, groups))
            else:
                copied(item)                    # already there as it should be
        # pipelined: ROSTER_WINDOW sets in flight per session, not one round trip per item
        sessions = [self.new] + await self._helpers(min(ROSTER_SESSIONS, len(changes) // 100))
        if len(sessions) > 1:
            log.info("roster: %d sessions side by side", len(sessions))
        try:
            await asyncio.gather(*(
                session.roster_set_all(changes[n::len(sessions)], window=ROSTER_WINDOW,
                                       done=copied)
                for n, session in enumerate(sessions)))
        finally:
            for session in sessions[1:]:
                await session.close()
        self.state.finish("roster")

    async def _helpers(self, wanted: int) -> list[Client]:
        """Up to *wanted* - 1 more sessions on the new account for the copy;
        fewer (none) if they cannot be had — the copy goes on without them."""
        helpers: list[Client] = []
        if self.new_session is None:            # the caller can open no other session
            return helpers
        for n in range(2, wanted + 1):
            try:
                helpers.append(await self.new_session(f"xferd-copy-{n}"))
            except (ClientError, OSError) as exc:
                log.info("roster: copying on %d session(s) (another: %s)", len(helpers) + 1, exc)
                break
        return helpers

    async def copy_vcard(self, vcard) -> None:
        step(4, "copying the vCard")
        if self.state.done("vcard"):
            log.info("vCard: done in an earlier run")
            return
        if vcard is None:
            log.info("vCard: the old account has none")
        elif await self.new.vcard_get() is not None:
            log.warning("vCard: %s already has one; kept it", self.opts.new)
        else:
            await self.new.vcard_set(vcard)
            log.info("vCard: copied")
        self.state.finish("vcard")

    async def copy_private(self, fragments) -> None:
        step(5, f"copying {len(fragments)} private XML fragment(s)")
        if self.state.done("private"):
            log.info("private XML: done in an earlier run")
            return
        for fragment in fragments:
            name = fragment.tag.partition("}")[0][1:]
            if await self.new.private_get(E(fragment.tag)) is not None:
                log.warning("private XML %s: %s already has some; kept it", name, self.opts.new)
                continue
            await self.new.private_set(fragment)
            log.info("private XML %s: copied", name)
        self.state.finish("private")

    async def copy_pep(self, nodes) -> None:
        step(6, f"copying {len(nodes)} PEP node(s)")
        if self.state.done("pep"):
            log.info("PEP: done in an earlier run")
            return
        for node, access, items in nodes:
            if await self.new.pep_items(None, node):
                log.warning("PEP %s: %s already has items; kept them", node, self.opts.new)
                continue
            options = {"pubsub#max_items": "max"} if len(items) > 1 else None
            try:
                for item_id, payload in items:
                    await self.new.pep_publish(node, item_id, payload, access_model=access,
                                               options=options)
            except IQError as exc:
                log.warning("PEP %s: not copied: %s", node, exc)
                continue
            log.info("PEP %s: %d item(s) copied (access %s)", node, len(items),
                     access or "default")
        self.state.finish("pep")

    async def publish_statement(self, plan: Plan) -> None:
        if not self.opts.statement:
            step(7, "not publishing the moved statement (--no-statement)")
            return
        step(7, f"publishing the moved statement on {self.opts.old} (readable by anyone)")
        if self.state.done("statement"):
            log.info("statement: done in an earlier run")
            return
        try:
            await self._publish_open(plan)
        except IQError as exc:
            if exc.condition != "conflict":             # precondition-not-met (§7.1.5)
                raise
            log.info("statement node exists with another access model: setting it to open")
            await self.old.pep_configure(STATEMENT_NODE, {"pubsub#access_model": "open"})
            await self._publish_open(plan)
        self.state.finish("statement")

    async def _publish_open(self, plan: Plan) -> None:
        await self.old.pep_publish(STATEMENT_NODE, STATEMENT_ITEM, plan.statement(),
                                   access_model="open")

    # -- outreach ------------------------------------------------------------------------------
    async def outreach(self, plan: Plan, moved: bool = True) -> "Answers":
        stanzas = plan.stanzas(moved)
        for jid in {jid for jid, _, _ in stanzas}:
            contact = self.state.contact(jid)
            if contact.get("status", "").startswith("failed"):
                contact["sent"] = []                    # try again
        todo = per_contact([(jid, kind, el) for jid, kind, el in stanzas
                            if kind not in self.state.contact(jid).get("sent", [])])
        step(8, f"sending {len(todo)} subscription stanza(s) from {self.opts.new}")
        answers = Answers({jid for jid, _, _ in todo})
        if todo and self.subscribed_before is None:
            self.subscribed_before = subscribed_to(await self.new_roster())
        removers = [self.new.on_stanza(answers.see), self.new.on_stanza(self.approver(plan))]
        try:
            if todo:
                # priority -1: no messages are routed to this session (RFC 6121 §4.7.2.3)
                self.new.presence(children=[E(f"{{{CLIENT_NS}}}priority", text="-1")])
            for n, (jid, kind, el) in enumerate(todo, 1):
                self.new.send(el)
                self.state.contact(jid).setdefault("sent", []).append(kind)
                self.state.checkpoint()
                log.info("outreach %d/%d: %s → %s", n, len(todo), kind, jid)
                if n % OUTREACH_DRAIN == 0:
                    await self.new.drain()      # a server that reads slowly slows us down
            self.state.finish("outreach")
            await self.watch(plan, answers)
        finally:
            for remove in removers:
                remove()
        return answers

    def approver(self, plan: Plan):
        """A stanza handler that answers ``subscribed`` to a request from a
        contact the plan pre-approves, once. Pre-approvals are optional (RFC
        6121 §3.4; ejabberd 23.01 has none and drops ours), and then the
        request a contact's server sends back after moving its item (XEP-0283
        §4.4) reaches this session instead of being accepted by the server:
        the answer is the one the pre-approval would have given."""
        preapproved = set(plan.preapprove)

        def approve(el) -> None:
            jid = _bare(el.get("from"))
            if el.tag == PRESENCE and el.get("type") == "subscribe" and jid in preapproved:
                preapproved.discard(jid)
                self.new.presence(to=jid, type="subscribed")
                log.info("approved %s's request (the new server kept no pre-approval)", jid)
        return approve

    async def watch(self, plan: Plan, answers: "Answers") -> None:
        asked = [jid for jid in plan.subscribe if jid in answers.contacts]
        if not answers.contacts or self.opts.wait <= 0:
            step(9, "not waiting for answers")
            return
        step(9, f"waiting up to {self.opts.wait:g} s for answers from {len(asked)} contact(s)")
        await watch(self.new, plan, answers, wait=self.opts.wait,
                    subscribed_before=self.subscribed_before)

    # -- report ------------------------------------------------------------------------------------
    async def report(self, plan: Plan, answers: "Answers") -> int:
        roster = {item.jid: item for item in await self.new.roster()}
        counts: dict[str, int] = {}
        print(f"Moved {self.opts.old} → {self.opts.new}")
        width = max([len(i.jid) for i in plan.items] + [len(s.jid) for s in plan.skipped] + [8])
        for item in plan.items:
            status = self.status(item.jid, plan, answers, roster.get(item.jid))
            self.state.contact(item.jid)["status"] = status
            print(f"  {item.jid:<{width}}  {status}{note(status, item.jid, plan)}")
            key = "failed" if status.startswith("failed") else status.split(" (")[0]
            counts[key] = counts.get(key, 0) + 1
        for skipped in plan.skipped:
            print(f"  {skipped.jid:<{width}}  skipped: {skipped.reason}")
        if plan.skipped:
            counts["skipped"] = len(plan.skipped)
        self.state.save()
        print(", ".join(f"{n} {what}" for what, n in counts.items()) or "no contacts")
        log.info("state saved in %s: run again to resume or to refresh this report",
                 self.state.path)
        return 1 if counts.get("failed") else 0

    def status(self, jid: str, plan: Plan, answers: "Answers", now) -> str:
        """This run's :func:`outcome`, unless an earlier run already saw the
        contact approve (or fail, and it was not asked again in this one)."""
        before = self.state.contact(jid).get("status", "")
        if jid not in answers.failed and jid not in answers.subscribed and (
                before in (AUTO, APPROVED) or (before.startswith("failed")
                                               and jid not in answers.contacts)):
            return before
        return outcome(jid, plan, answers, now)


def default_state_path(old: JID, new: JID) -> Path:
    """Where a move's state file goes without ``--state``: the user's state
    directory (XDG Base Directory: ``$XDG_STATE_HOME``, else ~/.local/state),
    not the working directory, where it was forgotten or, in a checkout, made
    ``git status`` dirty. Created private on first save."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".local", "state")
    return Path(base) / "xferd" / f"xferd-migrate-{old}-{new}.json"


class State:
    """The JSON state file: finished steps and per-contact outreach.

    The file is rewritten whole (a temporary file, then a rename), so it is
    saved when a step ends and, while a step goes through the contacts, by
    :meth:`checkpoint` at most every :data:`SAVE_INTERVAL` seconds — not after
    every contact, which rewrote the file N times for N contacts (quadratic:
    minutes for a few thousand contacts). A crash (``kill -9``, power loss)
    therefore forgets at most the last interval's records, and redoing them
    on the rerun is harmless: a roster item is set again to the same name and
    groups; a pre-approval (``subscribed``) sent again is a pre-approval the
    contact's server already holds or ignores, and a ``subscribe`` sent again
    is answered ``subscribed`` by a server that already approved it, or kept
    as the one request already waiting (RFC 6121 §3.1.3, Appendix A.3.1).
    """

    def __init__(self, path: Path, data: dict):
        self.path, self.data, self.used = path, data, False
        self.saved_at = float("-inf")

    @classmethod
    def load(cls, path: Path, old: JID, new: JID) -> "State":
        data = {"version": 1, "old": str(old), "new": str(new), "done": [], "contacts": {}}
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot read the state file {path}: {exc}") from None
            if (stored.get("old"), stored.get("new")) != (str(old), str(new)):
                raise UsageError(f"the state file {path} is for {stored.get('old')} → "
                                 f"{stored.get('new')}; use --state for another one")
            data.update(stored)
            log.info("resuming from %s (done: %s)", path, ", ".join(data["done"]) or "nothing")
        return cls(path, data)

    def done(self, name: str) -> bool:
        return name in self.data["done"]

    def finish(self, name: str) -> None:
        if name not in self.data["done"]:
            self.data["done"].append(name)
        self.save()

    def contact(self, jid: str) -> dict:
        return self.data["contacts"].setdefault(jid, {})

    def checkpoint(self) -> None:
        """Something changed: save if the last save is SAVE_INTERVAL old."""
        self.used = True
        if time.monotonic() - self.saved_at >= SAVE_INTERVAL:
            self.save()

    def save(self) -> None:
        self.used = True
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
        self.saved_at = time.monotonic()

    def save_if_used(self) -> None:
        if self.used:
            self.save()


# -- helpers -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Item:
    jid: str
    name: str | None
    groups: tuple[str, ...]


def per_contact(stanzas: list) -> list:
    """The plan's stanzas contact by contact, each contact's in the plan's
    order (the pre-approval before the request, which is what the order is
    for: a contact's server that moves the contact automatically subscribes
    back at once). The first contacts' servers can then start on their
    requests while the new server still works through the others' stanzas,
    not only after every pre-approval."""
    grouped: dict[str, list] = {}
    for stanza in stanzas:
        grouped.setdefault(stanza[0], []).append(stanza)
    return [stanza for group in grouped.values() for stanza in group]


#: the steps a caller runs, if not all: {step: (number shown, of how many)}
#: (``xferd import --as --outreach`` runs 8 and 9 only, shown as 1/2 and 2/2)
steps_shown: contextvars.ContextVar[dict[int, tuple[int, int]] | None] = \
    contextvars.ContextVar("steps_shown", default=None)


def step(n: int, text: str) -> None:
    shown, total = (steps_shown.get() or {}).get(n, (n, STEPS))
    log.info("[%d/%d] %s", shown, total, text)


def print_plan(plan: Plan, vcard, private, pep, opts: Options) -> None:
    print(f"Plan for {plan.old} → {plan.new} (dry run: nothing is changed)")
    print(f"  roster items to copy: {len(plan.items)}")
    print(f"  vCard: {'copy' if vcard is not None else 'none on the old account'}")
    for fragment in private:
        print(f"  private XML: {fragment.tag.partition('}')[0][1:]}")
    for node, access, items in pep:
        print(f"  PEP node {node}: {len(items)} item(s), access {access or 'default'}")
    if opts.statement:
        print(f"  statement on {plan.old}: {serialize(plan.statement(), prefixes={})} "
              "(access open)")
    else:
        print("  statement: not published (--no-statement)")
    width = max([len(i.jid) for i in plan.items] + [len(s.jid) for s in plan.skipped] + [8])
    for item in plan.items:
        actions = []
        if item.jid in plan.preapprove:
            actions.append("pre-approve (subscribed)")
        if item.jid in plan.subscribe:
            actions.append("subscribe with <moved/>")
        groups = f" [{', '.join(item.groups)}]" if item.groups else ""
        name = f" \"{item.name}\"" if item.name else ""
        print(f"  {item.jid:<{width}}  {' + '.join(actions) or 'roster only'}{name}{groups}")
    for skipped in plan.skipped:
        print(f"  {skipped.jid:<{width}}  skipped: {skipped.reason}")


def _bare(text: str | None) -> str | None:
    try:
        return str(JID.parse(text).bare) if text else None
    except JIDError:
        return None
