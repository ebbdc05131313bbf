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
5. print a report on stdout, one line per contact:

   - ``updated`` — the contact's server rewrote its roster (notice C ok);
   - ``fallback (XEP-0283 request sent)`` — the notice failed with
     ``service-unavailable``/``feature-not-implemented``: that server has no
     XEP-0015, so the new server sent a ``subscribe`` carrying ``<moved/>``
     (for a contact who only followed the old account: a pre-approval,
     ``fallback (pre-approved: XEP-0283)``);
   - ``failed: CONDITION`` — any other notice error (unreachable domain …);
   - ``roster only (not subscribed)`` — no subscription, no notice needed;
   - ``left behind (transport, XEP-0015 §3.1)`` — gateway items stay.

``xferd transfer status --old OLD`` logs in to the old account only and prints
the job state the old server keeps (the same per-contact lines); once the
account has moved its server refuses logins, which the command reports as
the answer.

Passwords come from ``$XFERD_OLD_PASSWORD`` / ``$XFERD_NEW_PASSWORD``, else
are asked on the terminal. Exit status: 0 when no contact failed (fallbacks
are not failures); 1 if any failed, the transfer was refused, timed out or
the old account has already moved; 2 on usage and login errors.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field

from ..client import Client, ClientError, IQError, IQTimeout
from .migrate import roster_of
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
STEPS = 4

UPDATED = "updated"
FALLBACK_SUBSCRIBE = "fallback (XEP-0283 request sent)"
FALLBACK_PREAPPROVED = "fallback (pre-approved: XEP-0283)"
ROSTER_ONLY = "roster only (not subscribed)"
LEFT_BEHIND = "left behind (transport, XEP-0015 §3.1)"
NOT_YET = "not notified yet"

#: what an error answer to A means, beyond the server's own text
REFUSALS = {
    "forbidden": "the new account did not allow the transfer",
    "recipient-unavailable": "the new server could not get an answer from the new account",
    "remote-server-not-found": "the old server cannot reach the new account's server",
    "remote-server-timeout": "the new account's server did not answer in time",
    "service-unavailable": "the old server does not offer XEP-0015 account transfer, "
                           "or the new account does not exist",
    "feature-not-implemented": "the old server does not offer XEP-0015 account transfer",
    "conflict": "a transfer of this account is under way or done",
    "interrupted": "the old server restarted while asking the new account",
}


@dataclass
class Options(TwoAccounts):
    action: str = "start"
    timeout: float = 300.0

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
        return cls(old, new, **TwoAccounts.connection_fields(args), action=args.action,
                   timeout=args.timeout)


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
                              old_roster=lambda: roster_of(opts, "old", old_password)).run()
    except (ClientError, OSError) as exc:
        print(f"xferd: error: lost the connection: {exc}; the old server carries on — "
              f"`xferd transfer status --old {opts.old}` shows how it ends", file=sys.stderr)
        return 1
    finally:
        await old.close()
        await new.close()


class Transfer:
    """One run of steps 2–5 with both accounts logged in."""

    def __init__(self, opts: Options, old: Client, new: NewAccount, old_roster=None):
        self.opts, self.old, self.new = opts, old, new
        #: reads the old roster; on a session of its own (see migrate.roster_of), so
        #: that this one is not sent a push for each contact the old server drops
        #: at the end — a push each client must answer, which with a rate limit
        #: on the connection delayed the job state polls past their timeout
        self.old_roster = old_roster or old.roster
        self.progress = Progress()

    async def run(self) -> int:
        step(2, f"reading the roster of {self.opts.old}")
        snapshot = {item.jid: item for item in await self.old_roster()}
        log.info("%d roster item(s)", len(snapshot))
        step(3, f"pre-authorising the move on {self.opts.new}")
        await self.preauthorize()
        step(4, f"asking {self.opts.old.domain} to move {self.opts.old} to {self.opts.new} "
                f"(waiting up to {self.opts.timeout:g} s)")
        try:
            answer = await self.request_and_watch()
        except IQTimeout:
            job = await self.poll()
            print(f"xferd: error: no answer from {self.opts.old.domain} within "
                  f"{self.opts.timeout:g} s (state: {job.state if job else 'unknown'}); the old "
                  f"server carries on — `xferd transfer status --old {self.opts.old}` shows "
                  "how it ends", file=sys.stderr)
            return 1
        except IQError as exc:
            return await self.refused(exc, snapshot)
        job = await self.poll()
        contacts = job.contacts if job else _from_answer(answer, snapshot, self.opts)
        roster = await self.new.roster()
        return print_report(f"Transferred {self.opts.old} → {self.opts.new} (XEP-0015)",
                            contacts, snapshot,
                            footer=f"{self.opts.new} has {len(roster)} roster item(s)")

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
        why = REFUSALS.get(exc.condition, "")
        text = f" — {exc.text}" if exc.text else ""
        print(f"xferd: error: the transfer of {self.opts.old} to {self.opts.new} failed: "
              f"{exc.condition}{text}" + (f" ({why})" if why else ""), file=sys.stderr)
        job = await self.poll()
        if job is not None and job.contacts and job.state in x.LIVE_STATES + (x.FAILED_PARTIAL,):
            print_report(f"Transfer {self.opts.old} → {self.opts.new}: {job.state}",
                         job.contacts, snapshot)
        return 1


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

def outcome(contact: Contact, subscription: str | None) -> str:
    """One report line's status for *contact* (see the module docstring)."""
    if contact.status == "ok":
        return UPDATED
    if contact.status == "skipped":
        return ROSTER_ONLY
    if contact.status == "failed":
        if contact.condition in x.NOT_IMPLEMENTED:
            return FALLBACK_PREAPPROVED if subscription == "from" else FALLBACK_SUBSCRIBE
        return f"failed: {contact.condition or 'undefined-condition'}"
    return NOT_YET


def print_report(title: str, contacts: dict[str, Contact], snapshot: dict, *,
                 footer: str | None = None, transports: bool = True) -> int:
    """Print the per-contact report on stdout; 1 if any contact failed, else 0."""
    print(title)
    lines = []
    for jid, contact in contacts.items():
        item = snapshot.get(jid)
        lines.append((jid, outcome(contact, item.subscription if item else None)))
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
