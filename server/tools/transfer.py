"""``xferd transfer``: move an account with XEP-0015 Account Transfer, driven
from the client side (the servers' part is
``server/modules/accountxfer.py``, the stanzas ``server/xmpp/transfer.py``).

Unlike ``xferd migrate`` (plain client XMPP, contacts are *asked* to follow),
this needs both servers to speak ``jabber:iq:accountxfer`` — xferd does — and
then moves every contact without anyone having to approve anything:

1. log in to the old and the new account (``server/client``; TLS verified);
2. read the old roster (to describe the outcome per contact later);
3. on the new account, pre-authorise the move (H, ours:
   ``<query><oldaccount>OLD</oldaccount><allowed/></query>``), so the new
   server answers the old server's question (B) by itself. Belt and braces:
   the new account's connection also answers a forwarded B for exactly
   OLD → NEW with ``<allowed/>``; if H is refused (a server without it), the
   connection goes available with priority 0 so that B can reach it — a
   client of the new account online with a higher priority would be asked
   instead;
4. on the old account, send the request A (``<newaccount>NEW</newaccount>``)
   to the old domain and wait for its answer E (``--timeout``, default 300 s),
   polling the job state (``get`` on the old domain) every 1.5 s to log each
   contact as it is notified or fails (stderr);
5. contacts whose server has no XEP-0015 (their notice failed with
   ``service-unavailable``/``feature-not-implemented``) were asked by the new
   server the XEP-0283 way, a ``subscribe`` carrying ``<moved/>`` (and a
   pre-approval for those who saw the old account's presence): watch the
   new account for their answers for up to ``--wait`` seconds (default 10),
   as ``xferd migrate`` does (server/tools/outcomes.py);
6. print a report on stdout, one line per contact:

   - ``updated`` — the contact's server rewrote its roster (notice C ok);
   - for a contact asked the XEP-0283 way, its final state as ``xferd
     migrate`` reports it: ``auto-updated`` (its server verified the moved
     statement and said yes within the wait, XEP-0283 §4.4), ``approved``,
     ``waiting for manual approval`` (also for a contact only pre-approved:
     accepted once they add NEW), ``failed: why`` (refused, an error);
   - ``failed: CONDITION`` — any other notice error (unreachable domain …);
   - ``roster only (not subscribed)`` — no subscription, no notice needed;
   - ``left behind (transport, XEP-0015 §3.1)`` — gateway items stay.

A refused transfer names the server that refused: the old account's server
when it has no XEP-0015 (it refuses A itself, and has no job to show), else
the new account's server (it answered the old server's question B).

``xferd transfer status --old OLD`` logs in to the old account only and prints
the job state the old server keeps (the same per-contact lines); once the
account has moved its server refuses logins, which the command reports as
the answer.

Passwords come from ``$XFERD_OLD_PASSWORD`` / ``$XFERD_NEW_PASSWORD``, else
are asked on the terminal. Exit status: 0 when no contact failed (waiting
for approval is no failure); 1 if any failed, the transfer was refused, timed
out or the old account has already moved; 2 on usage and login errors.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field

from ..client import Client, ClientError, IQError, IQTimeout
from .migrate import roster_of
from .outcomes import Answers, note, outcome, subscribed_to, watch
from .two_accounts import (LoginFailed, TwoAccounts, UsageError, account,
                           add_connection_arguments, login, login_both, login_failed,
                           side_password)
from ..xmpp import transfer as x
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID
from ..xmpp.outreach import plan_outreach
from ..xmpp.stanza import E, error_reply, iq
from ..xmpp.stream import CLIENT_NS

log = logging.getLogger("xferd.transfer")

POLL_INTERVAL = 1.5
STATUS_TIMEOUT = 10.0
STEPS = 5

UPDATED = "updated"
#: a contact without XEP-0015 while the job has not handed the roster over yet
#: (the new server asks such contacts the XEP-0283 way when it gets the roster)
BRIDGE_PENDING = "no XEP-0015 at their server: asked with XEP-0283 at the roster hand-over"
ROSTER_ONLY = "roster only (not subscribed)"
LEFT_BEHIND = "left behind (transport, XEP-0015 §3.1)"
NOT_YET = "not notified yet"

#: what an error answer to A means, beyond the server's own text; the missing
#: XEP-0015 (service-unavailable, feature-not-implemented) is told by Transfer.refusal
REFUSALS = {
    "forbidden": "{new} did not allow the transfer",
    "recipient-unavailable": "{new_domain} could not get an answer from {new}",
    "remote-server-not-found": "{old_domain} cannot reach {new_domain}",
    "remote-server-timeout": "{new_domain} did not answer {old_domain} in time",
    "conflict": "{old_domain} has a transfer of this account under way or done",
    "interrupted": "{old_domain} restarted while asking {new}",
}


@dataclass
class Options(TwoAccounts):
    action: str = "start"
    timeout: float = 300.0
    wait: float = 10.0

    @classmethod
    def from_args(cls, args) -> "Options":
        old = account(args.old, "--old")
        new = account(args.new, "--new") if args.new else None
        if args.action == "start" and new is None:
            raise UsageError("--new is required (the account to move to)")
        if old == new:
            raise UsageError("--old and --new name the same account")
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        if args.wait < 0:
            raise UsageError("--wait must not be negative")
        return cls(old, new, **TwoAccounts.connection_fields(args), action=args.action,
                   timeout=args.timeout, wait=args.wait)


def add_arguments(parser) -> None:
    """The ``transfer`` subcommand's options (see ``server/cli.py``)."""
    parser.add_argument("action", nargs="?", choices=("start", "status"), default="start",
                        help="start a transfer (default), or show how the last one stands")
    parser.add_argument("--old", required=True, metavar="OLD",
                        help="the account to move, user@domain")
    parser.add_argument("--new", metavar="NEW",
                        help="the account to move to (must exist; not needed for status)")
    add_connection_arguments(parser)
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long to wait for the old server's answer (default 300)")
    parser.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                        help="then how long to watch for answers from contacts asked the "
                             "XEP-0283 way (default 10)")


def run(args) -> int:
    """Entry point of ``xferd transfer``; passwords from the environment or the terminal."""
    try:
        opts = Options.from_args(args)
        old_password = side_password(opts, "old")
        new_password = None if opts.action == "status" else side_password(opts, "new")
    except UsageError as exc:
        print(f"xferd: error: {exc}", file=sys.stderr)
        return 2
    if opts.action == "status":
        return asyncio.run(show_status(opts, old_password))
    return asyncio.run(transfer(opts, old_password, new_password))


# -- the job state the old server reports ------------------------------------------------------

@dataclass
class Contact:
    jid: str
    status: str                     # pending | ok | failed | skipped
    condition: str | None = None


@dataclass
class JobState:
    """The answer to a ``get`` on the old domain (the job states of ``server/xmpp/transfer.py``)."""
    state: str
    new: str | None
    contacts: dict[str, Contact] = field(default_factory=dict)

    @classmethod
    def from_answer(cls, answer) -> "JobState":
        query = answer.find(f"{{{x.NS}}}query")
        if query is None:
            raise ClientError("bad-format", "the job state answer has no <query/>")
        job = cls(query.get("state", "unknown"), query.findtext(f"{{{x.NS}}}newaccount"))
        for el in query.iterfind(f"{{{x.NS}}}rosteritem"):
            jid = el.get("jid") or ""
            job.contacts[jid] = Contact(jid, el.get("status", "pending"), el.get("condition"))
        return job


async def job_state(client: Client) -> JobState | None:
    """The old server's record of our transfer; None when it has none."""
    request = iq("get", to=client.domain, payload=E(f"{{{x.NS}}}query"))
    try:
        return JobState.from_answer(await client.request(request, STATUS_TIMEOUT))
    except IQError as exc:
        if exc.condition == "item-not-found":
            return None
        raise


class Progress:
    """Logs what changed between two polls of the job state."""

    def __init__(self):
        self.state: str | None = None
        self.seen: dict[str, str] = {}

    def update(self, job: JobState) -> None:
        notices = [c for c in job.contacts.values() if c.status != "skipped"]
        for contact in notices:
            if contact.status == self.seen.get(contact.jid) or contact.status == "pending":
                continue
            self.seen[contact.jid] = contact.status
            count = f"({len(self.seen)}/{len(notices)})"
            if contact.status == "ok":
                log.info("  notified %s %s", contact.jid, count)
            elif contact.condition in x.NOT_IMPLEMENTED:
                log.info("  no XEP-0015 at %s's server (%s): XEP-0283 fallback %s",
                         contact.jid, contact.condition, count)
            else:
                log.info("  failed %s: %s %s", contact.jid, contact.condition, count)
        if job.state != self.state:
            log.info("old server: %s", job.state)
            self.state = job.state


# -- the new account: answering B ---------------------------------------------------------------

def authorisation_reply(request, old: JID, new: JID):
    """Our answer to a forwarded B: ``<allowed/>`` for OLD → NEW
    only, ``<forbidden/>`` for any other; None if *request* is no B at all."""
    query = request[0] if len(request) else None
    if request.get("type") != "set" or query is None or query.tag != f"{{{x.NS}}}query":
        return None
    try:
        asked = x.parse(query)
    except StanzaError as exc:
        return error_reply(request, exc)
    if asked.oldaccount != old or asked.newaccount not in (None, new):
        log.warning("refusing a transfer request for %s → %s: not the one we run",
                    asked.oldaccount, asked.newaccount)
        return error_reply(request, StanzaError("forbidden", "not the transfer this tool runs"))
    log.info("the new server forwarded the authorisation request: allowing %s", old)
    return iq("result", to=request.get("from"), id=request.get("id"),
              payload=x.query(allowed=True))


class NewAccount(Client):
    """The new account's connection; answers B for the one transfer we run."""

    expected: tuple[JID, JID] | None = None

    def _incoming_request(self, el) -> None:      # see Connection._incoming_request
        reply = authorisation_reply(el, *self.expected) if self.expected else None
        if reply is None:
            super()._incoming_request(el)
        else:
            self.send(reply)


# -- the transfer -----------------------------------------------------------------------------

async def transfer(opts: Options, old_password: str, new_password: str) -> int:
    step(1, f"logging in to {opts.old} and {opts.new}")
    try:
        old, new = await login_both(opts, old_password, new_password, resource="xferd-transfer",
                                    new_cls=NewAccount)
    except LoginFailed as exc:
        return _login_failed(exc.side, exc.jid, exc.error)
    new.expected = (opts.old, opts.new)
    try:
        return await Transfer(opts, old, new,
                              old_roster=lambda: roster_of(opts, "old", old_password),
                              new_roster=lambda: roster_of(opts, "new", new_password)).run()
    except (ClientError, OSError) as exc:
        print(f"xferd: error: lost the connection: {exc}; the old server carries on — "
              f"`xferd transfer status --old {opts.old}` shows how it ends", file=sys.stderr)
        return 1
    finally:
        await old.close()
        await new.close()


class Transfer:
    """One run of steps 2–6 with both accounts logged in."""

    def __init__(self, opts: Options, old: Client, new: NewAccount, old_roster=None,
                 new_roster=None):
        self.opts, self.old, self.new = opts, old, new
        #: reads the old roster; on a session of its own (see migrate.roster_of), so
        #: that this one is not sent a push for each contact the old server drops
        #: at the end — a push each client must answer, which with a rate limit
        #: on the connection delayed the job state polls past their timeout
        self.old_roster = old_roster or old.roster
        #: reads the new roster before the move, on a session of its own too (the
        #: roster hand-over would push every contact to this one)
        self.new_roster = new_roster or new.roster
        self.progress = Progress()

    async def run(self) -> int:
        step(2, f"reading the roster of {self.opts.old}")
        snapshot = {item.jid: item for item in await self.old_roster()}
        log.info("%d roster item(s)", len(snapshot))
        # what the new server does for contacts without XEP-0015 (its bridge)
        plan = plan_outreach(self.opts.old, self.opts.new, snapshot.values())
        subscribed_before = subscribed_to(await self.new_roster())
        step(3, f"pre-authorising the move on {self.opts.new}")
        await self.preauthorize()
        step(4, f"asking {self.opts.old.domain} to move {self.opts.old} to {self.opts.new} "
                f"(waiting up to {self.opts.timeout:g} s)")
        # answers to the new server's XEP-0283 requests may come before E does
        answers = Answers(set(plan.subscribe) | set(plan.preapprove))
        remove = self.new.on_stanza(answers.see)
        try:
            try:
                answer = await self.request_and_watch()
            except IQTimeout:
                job = await self.poll()
                print(f"xferd: error: no answer from {self.opts.old.domain} within "
                      f"{self.opts.timeout:g} s (state: {job.state if job else 'unknown'}); the "
                      f"old server carries on — `xferd transfer status --old {self.opts.old}` "
                      "shows how it ends", file=sys.stderr)
                return 1
            except IQError as exc:
                return await self.refused(exc, snapshot)
            job = await self.poll()
            contacts = job.contacts if job else _from_answer(answer, snapshot, self.opts)
            answers.contacts = {jid for jid, c in contacts.items() if bridged(c)}
            await self.watch(plan, answers, subscribed_before)
        finally:
            remove()
        roster = {item.jid: item for item in await self.new.roster()}

        def final(jid: str) -> str:
            status = outcome(jid, plan, answers, roster.get(jid))
            return status + note(status, jid, plan)
        return print_report(f"Transferred {self.opts.old} → {self.opts.new} (XEP-0015)",
                            contacts, snapshot, asked=final,
                            footer=f"{self.opts.new} has {len(roster)} roster item(s)")

    async def watch(self, plan, answers: Answers, subscribed_before: set[str]) -> None:
        """Step 5: the answers of the contacts the new server asked the XEP-0283 way."""
        asked = [jid for jid in plan.subscribe if jid in answers.contacts]
        if not answers.contacts or self.opts.wait <= 0:
            step(5, "no contact to wait for" if not answers.contacts
                 else "not waiting for answers")
            return
        step(5, f"waiting up to {self.opts.wait:g} s for answers from {len(asked)} contact(s) "
                "asked the XEP-0283 way")
        await watch(self.new, plan, answers, wait=self.opts.wait,
                    subscribed_before=subscribed_before)

    async def preauthorize(self) -> None:
        """H (ours); without it, be available so that the new server can forward B."""
        h = iq("set", payload=x.query(oldaccount=str(self.opts.old), allowed=True))
        try:
            await self.new.request(h)
            log.info("pre-authorised: %s answers the old server itself", self.opts.new.domain)
        except IQError as exc:
            log.warning("%s refused the pre-authorisation (%s); going online so that it can "
                        "forward the question to us instead", self.opts.new.domain, exc)
            self.new.presence(children=[E(f"{{{CLIENT_NS}}}priority", text="0")])

    async def request_and_watch(self):
        """Send A; poll the job state until the answer E arrives."""
        a = iq("set", to=self.opts.old.domain,
               payload=x.query(newaccount=str(self.opts.new)))
        answer = asyncio.ensure_future(self.old.request(a, self.opts.timeout))
        try:
            while True:
                done, _ = await asyncio.wait({answer}, timeout=POLL_INTERVAL)
                if done:
                    return answer.result()
                await self.poll()
        finally:
            if not answer.done():
                answer.cancel()

    async def poll(self) -> JobState | None:
        try:
            job = await job_state(self.old)
        except IQError as exc:
            log.debug("job state: %s", exc)
            return None
        if job is not None and job.new == str(self.opts.new):
            self.progress.update(job)
            return job
        return None

    async def refused(self, exc: IQError, snapshot) -> int:
        why = await self.refusal(exc.condition)
        text = f" — {exc.text}" if exc.text else ""
        print(f"xferd: error: the transfer of {self.opts.old} to {self.opts.new} failed: "
              f"{exc.condition}{text}" + (f" ({why})" if why else ""), file=sys.stderr)
        job = await self.poll()
        if job is not None and job.contacts and job.state in x.LIVE_STATES + (x.FAILED_PARTIAL,):
            print_report(f"Transfer {self.opts.old} → {self.opts.new}: {job.state}",
                         job.contacts, snapshot)
        return 1

    async def refusal(self, condition: str) -> str:
        """What an error answer to A means, naming the server that refused.

        Without XEP-0015 a server answers ``service-unavailable`` (or
        ``feature-not-implemented``): the old server to A itself, or the new
        account's server to the old server's question B, which the old server
        passes on. The new account exists (the tool is logged in to it), so
        the old server tells which: if it has XEP-0015 it keeps a job for A
        and shows it (``get`` on its domain); if not, it refuses that too."""
        old_domain, new_domain = self.opts.old.domain, self.opts.new.domain
        if condition not in x.NOT_IMPLEMENTED:
            why = REFUSALS.get(condition, "")
            return why.format(old_domain=old_domain, new_domain=new_domain, new=self.opts.new)
        try:
            await job_state(self.old)
        except IQError as exc:
            if exc.condition in x.NOT_IMPLEMENTED:
                return (f"{old_domain}, the old account's server, does not offer XEP-0015 "
                        "account transfer; `xferd migrate` moves the account with XEP-0283 "
                        "instead")
        except ClientError as exc:
            log.debug("job state: %s", exc)
        return (f"{new_domain}, the new account's server, does not offer XEP-0015 account "
                f"transfer: it refused {old_domain}'s authorisation request; `xferd migrate` "
                "moves the account with XEP-0283 instead")


# -- status ------------------------------------------------------------------------------------

async def show_status(opts: Options, old_password: str) -> int:
    try:
        old = await login(opts, "old", old_password, resource="xferd-transfer")
    except ClientError as exc:
        moved = _moved_to(exc)
        if moved:
            print(f"{opts.old} has moved to {moved} (its server refuses logins now)")
            return 0
        return _login_failed("old", opts.old, exc)
    try:
        job = await job_state(old)
        if job is None:
            print(f"no transfer recorded for {opts.old}")
            return 1
        snapshot = {item.jid: item for item in await old.roster()}
        code = print_report(f"Transfer {opts.old} → {job.new}: {job.state}", job.contacts,
                            snapshot, transports=False)
        return 1 if job.state in (x.FAILED, x.FAILED_PARTIAL) else code
    except ClientError as exc:
        print(f"xferd: error: {exc}", file=sys.stderr)
        return 1
    finally:
        await old.close()


# -- the report ----------------------------------------------------------------------------------

def bridged(contact: Contact) -> bool:
    """Its server has no XEP-0015: the new server asks it the XEP-0283 way."""
    return contact.status == "failed" and contact.condition in x.NOT_IMPLEMENTED


def job_outcome(contact: Contact, asked=None) -> str:
    """One report line's status for *contact* (see the module docstring);
    *asked* gives the final state of a contact asked the XEP-0283 way (JID →
    text), None while the roster hand-over that asks them has not happened."""
    if contact.status == "ok":
        return UPDATED
    if contact.status == "skipped":
        return ROSTER_ONLY
    if bridged(contact):
        return asked(contact.jid) if asked else BRIDGE_PENDING
    if contact.status == "failed":
        return f"failed: {contact.condition or 'undefined-condition'}"
    return NOT_YET


def print_report(title: str, contacts: dict[str, Contact], snapshot: dict, *,
                 asked=None, footer: str | None = None, transports: bool = True) -> int:
    """Print the per-contact report on stdout; 1 if any contact failed, else 0."""
    print(title)
    lines = [(jid, job_outcome(contact, asked)) for jid, contact in contacts.items()]
    if transports:
        lines += [(jid, LEFT_BEHIND) for jid in snapshot if jid not in contacts]
    width = max([len(jid) for jid, _ in lines] + [8])
    counts: dict[str, int] = {}
    for jid, status in lines:
        print(f"  {jid:<{width}}  {status}")
        key = status.split(":")[0].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    print(", ".join(f"{n} {what}" for what, n in counts.items()) or "no contacts")
    if footer:
        print(footer)
    return 1 if counts.get("failed") else 0


def _from_answer(answer, snapshot, opts: Options) -> dict[str, Contact]:
    """Without a job state: E's failures, every other subscribed contact notified.
    The contacts are those the old server's job holds: the outreach plan's items
    (transports and their contacts stay behind, XEP-0015 §3.1)."""
    failed = {el.get("jid"): el.get("condition")
              for el in answer.iterfind(f"{{{x.NS}}}query/{{{x.NS}}}rosteritem")}
    kept = [snapshot[item.jid] for item in
            plan_outreach(opts.old, opts.new, snapshot.values()).items]
    contacts = {}
    for item in kept:
        if item.jid in failed:
            contacts[item.jid] = Contact(item.jid, "failed", failed[item.jid])
        elif item.subscription in ("to", "from", "both"):
            contacts[item.jid] = Contact(item.jid, "ok")
        else:
            contacts[item.jid] = Contact(item.jid, "skipped")
    return contacts


# -- helpers -----------------------------------------------------------------------------------

def step(n: int, text: str) -> None:
    log.info("[%d/%d] %s", n, STEPS, text)


def _moved_to(exc: ClientError) -> str | None:
    """The new address when a login was refused because the account moved (xferd's
    ``<account-disabled/>`` text "this account moved to NEW")."""
    marker = "moved to "
    if exc.condition == "account-disabled" and exc.text and marker in exc.text:
        return exc.text.split(marker, 1)[1].strip()
    return None


def _login_failed(side: str, jid: JID, exc: ClientError) -> int:
    moved = _moved_to(exc) if side == "old" else None
    if moved:
        print(f"xferd: error: {jid} has already moved to {moved}: its server refuses logins "
              f"({exc.condition}), so there is nothing left to transfer", file=sys.stderr)
        return 1
    return login_failed(side, jid, exc)
