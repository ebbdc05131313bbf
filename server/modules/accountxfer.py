"""XEP-0015 Account Transfer, all three server roles (the
wire profile and checks are in ``server/xmpp/transfer.py``).

Old server — the user's request A starts a persisted job:
AUTHORIZING (ask the new account, B) → NOTIFYING (one notice C per contact,
to the contact's domain; at most 32 wait for their answer at a time, as
each answer costs the contact's server a round trip to the new server —
with 8, a 2,000-contact move spent seconds waiting; one retry on timeout)
→ TRANSFERRING (the moved statement is published for XEP-0283 checks,
then the roster D goes to the new domain, up to 3 tries) → DONE (A
answered, notified contacts dropped from the old roster, logins refused
with a text naming the new address).
If every hand-over try fails the job ends FAILED_PARTIAL (A gets the
condition); the user's next A for the same new account tries it again.
Each step is stored before it is taken, so a restart resumes NOTIFYING and
TRANSFERRING where they stood; an interrupted AUTHORIZING ends FAILED.

New server — B is answered from a pre-authorisation (H) or forwarded to
one resource of the new account, whose ``<allowed/>`` is remembered for 24
hours; D is accepted only against that authorisation, merged into the new
roster (union of subscriptions and groups) and followed by probes and
presence; contacts whose server got no notice are reached through XEP-0283
(a ``subscribe`` with ``<moved/>``, or a pre-approval). G answers whether
the authorisation exists. While it does, probes to the new account are not
answered ``unsubscribed`` (a contact already rewritten may probe early).

Contact's server — a notice C from the old JID's own domain is checked
with the new account's server (G), then the contact's roster item is
rewritten from the old JID to the new one in one transaction (the old item
removed, or kept without subscription: ``moved.old_contact``), and the
contact is told in plain words (``moved.notify_contacts``, the same notice
as XEP-0283's in ``moved.py``). Notices are
checked side by side (up to 64), each answered when its check is done;
checks of the same move that overlap share one G.

Every roster change of the three roles — the old roster's clean-up, the
merge of D, the contact's rewrite — is one call of the host's roster service
(``server/core/rosters.py``) with a pure ``decide`` function (below), so it
is made under the items' locks, on what the roster holds at that moment, and
pushed with a version per item.

The code follows the roles: :class:`OldServer`, :class:`NewServer`,
:class:`ContactServer`; :class:`AccountXfer` is the module that routes the
IQs to them.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from typing import Mapping

from storage.api import PepItem, PepNode, Transfer, TransferContact

from ..core.events import Login, PresenceShare
from ..core.module import Hook, Module, iq as iq_hook
from ..xmpp import sasl, timestamps
from ..xmpp import transfer as x
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID
from ..xmpp.namespaces import ACCOUNTXFER_NS, CLIENT_NS, MOVED_NS
from ..xmpp.outreach import moved_notice, moved_statement, plan_outreach
from ..xmpp.roster import RosterDecision, RosterEntry, RosterFull, RosterItem
from ..xmpp.stanza import (E, PRESENCE, error_element, error_reply, find_error_condition, iq,
                           result, sub, to_text)
from .moved import tell_contact

log = logging.getLogger("xferd.accountxfer")

APPROVAL_TTL = 24 * 3600
AUTHORIZE_TIMEOUT = 180.0
FORWARD_TIMEOUT = 120.0
NOTICES_IN_FLIGHT = 32
NOTICES_CHECKED = 64            # contact's server: notices being checked at once
ROSTER_TRIES = 3
MAX_ITEMS = 10_000


# -- roster decisions (pure: the roster service runs them inside the transaction) -------------

def decide_forget(moved: list[str]):
    """Old server, DONE: the contacts that moved along leave the old roster
    (items and any request they left)."""
    def decide(entries: Mapping[str, RosterEntry]) -> RosterDecision:
        return RosterDecision(items={jid: None for jid in moved},
                              requests={jid: None for jid in moved if entries[jid].request})
    return decide


def decide_merge(items: list[tuple[RosterItem, bool]], skip: tuple[str, ...],
                 preapprove, subscribe):
    """New server, D: each handed-over item merged into what the new roster
    holds now (``transfer.merge``); contacts bridged with
    XEP-0283 are pre-approved or asked. The result: the merged items, in
    order."""
    def decide(entries: Mapping[str, RosterEntry]) -> RosterDecision:
        decision = RosterDecision()
        for item, notified in items:
            if item.jid in skip:
                continue
            existing = decision.items.get(item.jid, entries[item.jid].item)
            merged = x.merge(existing, item, notified)
            merged.approved = item.jid in preapprove     # they may subscribe again
            merged.ask = item.jid in subscribe
            decision.items[item.jid] = merged
        decision.result = list(decision.items.values())
        return decision
    return decide


def rewrite_needed(item_old: RosterItem | None, item_new: RosterItem | None,
                   where: str) -> bool:
    """Contact's server, C: does the roster still hold old to rewrite (False:
    already done — old gone, or kept without subscription, and new there)?
    Raises the notice's error when there is nothing to rewrite."""
    if item_new is not None and (item_old is None or item_old.subscription == "none"):
        return False
    if item_old is None:
        raise StanzaError("item-not-found", f"the old account is not in {where}'s roster")
    if item_old.subscription == "none":
        raise StanzaError("not-acceptable", "no subscription with the old account")
    return True


def decide_rewrite(old: str, new: str, where: str, keep_old: bool = False):
    """Contact's server, C: old's item becomes new's (merged into any item
    new already has; pushed first). Old's item goes (RFC 6121 §2.5.2's push
    of ``subscription='remove'``) — or, with *keep_old*
    (``moved.old_contact = "keep"``), stays with its name and groups but
    without subscription: the subscription moved to new, and the old server
    forgets the contacts it notified once the transfer is done. The result:
    the new item, or None if the rewrite was already done (a notice sent
    twice)."""
    def decide(entries: Mapping[str, RosterEntry]) -> RosterDecision:
        item_old, item_new = entries[old].item, entries[new].item
        if not rewrite_needed(item_old, item_new, where):
            return RosterDecision()
        moved = x.merge(item_new, item_old, True)
        moved.jid = new
        kept = None
        if keep_old:
            kept = copy.copy(item_old)
            kept.subscription, kept.ask, kept.approved = "none", False, False
        return RosterDecision(items={new: moved, old: kept}, requests={old: None, new: None},
                              result=moved)
    return decide


# -- what the three roles share ---------------------------------------------------------------

class _Role:
    def __init__(self, host):
        self.host = host

    @property
    def storage(self):
        return self.host.storage

    @property
    def router(self):
        return self.host.server.router

    @property
    def notice_timeout(self) -> float:
        return self.host.global_config.accountxfer.notice_timeout

    async def ask(self, stanza, timeout: float):
        """Send an IQ on the server's behalf: (answer, error condition or None)."""
        try:
            answer = await self.router.request(stanza, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            return None, "remote-server-timeout"
        if answer.get("type") == "error":
            return answer, find_error_condition(answer) or "undefined-condition"
        return answer, None

    async def approval(self, user: str, old: str) -> str | None:
        """The new account's authorisation of a transfer from *old*, unless expired."""
        record = await self.storage.get_transfer_approval(self.host.domain, user, old)
        if record is None or record[1] < time.time():
            return None
        return record[0]


def from_old_domain(event, query) -> None:
    """§2.4: B, C and D come from the old account's domain JID itself."""
    sender = event.from_
    if sender is None or sender.local is not None or sender.resource is not None or \
            query.oldaccount is None or sender.domain != query.oldaccount.domain:
        raise StanzaError("forbidden", "only the old account's server may send this")


def _allowed(answer) -> bool:
    return answer.find(f"{{{ACCOUNTXFER_NS}}}query/{{{ACCOUNTXFER_NS}}}allowed") is not None


# == old server ===================================================================================

class OldServer(_Role):
    """The moving account's server: A starts a job, run to DONE or FAILED."""

    def __init__(self, host):
        super().__init__(host)
        self.jobs: dict[str, asyncio.Task] = {}

    async def request(self, event) -> bool:
        """A: the user asks to move (§2.2, checks §2.4)."""
        storage, domain = self.storage, self.host.domain
        sender = event.from_
        if event.origin is None or sender is None or sender.domain != domain \
                or sender.local is None:
            return False
        query = x.parse(event.stanza[0])
        if query.newaccount is None and query.oldaccount is not None and query.allowed:
            return False                               # that is H, for the new-server side
        if query.oldaccount is not None and query.oldaccount != sender.bare:
            raise StanzaError("forbidden", "you can only move your own account")
        if query.newaccount is None:
            raise StanzaError("bad-request", "<newaccount/> is missing")
        if query.newaccount == sender.bare:
            raise StanzaError("not-acceptable", "the new account is this account")
        existing = await storage.get_transfer(domain, sender.local)
        if existing is not None and existing.state in x.LIVE_STATES:
            raise StanzaError("conflict", "a transfer of this account is under way")
        if existing is not None and existing.state == x.FAILED_PARTIAL and \
                existing.new_jid == str(query.newaccount):
            # the contacts were notified; only the roster hand-over failed: try it again
            existing.state, existing.detail = x.TRANSFERRING, None
            existing.requester, existing.request_id = str(sender), event.stanza.get("id")
            await storage.save_transfer(existing)
            log.info("transfer %s → %s: the user asks again; handing the roster over again",
                     sender.bare, existing.new_jid)
            self.start(existing)
            return True
        if existing is not None and existing.state == x.DONE:
            raise StanzaError("conflict", f"this account already moved to {existing.new_jid}")
        _, roster = await self.host.rosters.get(sender.local)
        # the same filter as XEP-0283 outreach: transports and their contacts stay (§2.5)
        plan = plan_outreach(sender.bare, query.newaccount, roster.values())
        kept = [roster[item.jid] for item in plan.items]
        dropped = plan.skipped
        targets = {i.jid for i in x.notice_targets(kept, str(sender.bare), str(query.newaccount))}
        job = Transfer(domain, sender.local, str(query.newaccount), x.AUTHORIZING,
                       requester=str(sender), request_id=event.stanza.get("id"))
        for item in kept:
            job.contacts[item.jid] = TransferContact(
                item.jid, item, "pending" if item.jid in targets else "skipped",
                None if item.jid in targets else "not subscribed: no notice")
        await storage.save_transfer(job, contacts=True)
        log.info("transfer %s@%s → %s: %d contacts, %d to notify, %d transport items left",
                 sender.local, domain, job.new_jid, len(kept), len(targets), len(dropped))
        self.start(job)
        return True

    def start(self, job: Transfer) -> None:
        task = asyncio.create_task(self.run(job))
        self.jobs[job.username] = task
        task.add_done_callback(lambda _: self.jobs.pop(job.username, None))

    async def run(self, job: Transfer) -> None:
        """The job's states in order (``server/xmpp/transfer.py``); each step is stored first."""
        try:
            if job.state == x.AUTHORIZING:
                await self.authorize(job)
            if job.state == x.NOTIFYING:
                await self.notify(job)
            if job.state == x.TRANSFERRING:
                await self.hand_over(job)
            if job.state == x.DONE:
                await self.finish(job)
        except Exception:
            log.exception("transfer of %s@%s", job.username, self.host.domain)
            await self.fail(job, x.FAILED, "internal-server-error")

    async def authorize(self, job: Transfer) -> None:
        """B: may the old account move to the new one?"""
        old = f"{job.username}@{self.host.domain}"
        b = iq("set", to=job.new_jid, from_=self.host.domain,
               payload=x.query(oldaccount=old, newaccount=job.new_jid))
        answer, condition = await self.ask(b, AUTHORIZE_TIMEOUT)
        if condition is None and not _allowed(answer):
            condition = "forbidden"
        if condition is not None:
            await self.fail(job, x.FAILED, condition)
            return
        job.state = x.NOTIFYING
        await self.storage.save_transfer(job)

    async def notify(self, job: Transfer) -> None:
        """C: one notice per contact to the contact's domain, NOTICES_IN_FLIGHT at a time."""
        old = f"{job.username}@{self.host.domain}"
        slots = asyncio.Semaphore(NOTICES_IN_FLIGHT)

        async def one(contact: TransferContact) -> None:
            async with slots:
                notice = x.query(oldaccount=old, newaccount=job.new_jid)
                sub(notice, f"{{{ACCOUNTXFER_NS}}}rosteritem", {"jid": contact.jid})
                domain = contact.jid.rpartition("@")[2]
                for _ in range(2):                           # one retry on timeout
                    c = iq("set", to=domain, from_=self.host.domain, payload=notice)
                    _, condition = await self.ask(c, self.notice_timeout)
                    if condition != "remote-server-timeout":
                        break
                contact.status, contact.condition = ("ok", None) if condition is None \
                    else ("failed", condition)
                await self.storage.save_transfer_contact(self.host.domain, job.username,
                                                         contact)
                log.info("transfer %s: notice for %s: %s", old, contact.jid,
                         contact.condition or "ok")

        await asyncio.gather(*(one(c) for c in job.contacts.values() if c.status == "pending"))
        job.state = x.TRANSFERRING
        await self.storage.save_transfer(job)

    async def hand_over(self, job: Transfer) -> None:
        """D: the roster goes to the new domain, up to ROSTER_TRIES times."""
        old = f"{job.username}@{self.host.domain}"
        await self.publish_statement(job)
        roster = x.query(oldaccount=old, newaccount=job.new_jid)
        for contact in job.contacts.values():
            roster.append(x.item_element(contact.item, notified=contact.status == "ok"))
        condition = None
        for attempt in range(ROSTER_TRIES):
            d = iq("set", to=JID.parse(job.new_jid).domain, from_=self.host.domain,
                   payload=roster)
            _, condition = await self.ask(d, self.notice_timeout)
            if condition is None:
                break
            await asyncio.sleep(2 ** attempt)
        if condition is not None:
            await self.fail(job, x.FAILED_PARTIAL, condition)
            return
        job.state = x.DONE
        await self.storage.save_transfer(job)

    async def publish_statement(self, job: Transfer) -> None:
        """XEP-0283 statement, so contacts reached without a notice can verify."""
        if not self.host.global_config.accountxfer.publish_moved:
            return
        payload = moved_statement(job.new_jid)
        await self.storage.publish_pep_item(self.host.domain, job.username,
                                            PepNode(MOVED_NS, access_model="open"),
                                            PepItem("current", to_text(payload)))

    async def finish(self, job: Transfer) -> None:
        """DONE: answer A (E), forget the contacts that moved along."""
        moved = [c.jid for c in job.contacts.values() if c.status == "ok"]
        if moved:
            await self.host.rosters.update(job.username, moved, decide_forget(moved))
        await self.answer_request(job, None)
        log.info("transfer %s@%s → %s done", job.username, self.host.domain, job.new_jid)

    async def fail(self, job: Transfer, state: str, condition: str) -> None:
        job.state, job.detail = state, condition
        await self.storage.save_transfer(job)
        log.info("transfer %s@%s → %s: %s (%s)", job.username, self.host.domain, job.new_jid,
                 state, condition)
        await self.answer_request(job, condition)

    async def answer_request(self, job: Transfer, condition: str | None) -> None:
        """E: the answer to A — the condition, or the contacts whose notice failed."""
        if not job.requester:
            return
        if condition is not None:
            reply = E(f"{{{CLIENT_NS}}}iq", {"type": "error", "id": job.request_id,
                                             "to": job.requester, "from": self.host.domain})
            reply.append(error_element(StanzaError(
                condition if condition in _CONDITIONS else "undefined-condition",
                f"transfer to {job.new_jid}: {condition}")))
        else:
            payload = None
            failed = [c for c in job.contacts.values() if c.status == "failed"]
            if failed:
                payload = x.query()
                for c in failed:
                    sub(payload, f"{{{ACCOUNTXFER_NS}}}rosteritem",
                        {"jid": c.jid, "status": "failed", "condition": c.condition})
            reply = iq("result", to=job.requester, from_=self.host.domain, id=job.request_id,
                       payload=payload)
        await self.router.route(reply)

    async def status(self, event) -> bool:
        """Ours: ``get`` on the domain tells a user how their transfer stands."""
        sender = event.from_
        if sender is None or sender.domain != self.host.domain or sender.local is None:
            return False
        job = await self.storage.get_transfer(self.host.domain, sender.local)
        if job is None:
            raise StanzaError("item-not-found", "no transfer")
        answer = x.query(oldaccount=str(sender.bare), newaccount=job.new_jid)
        answer.set("state", job.state)
        for c in job.contacts.values():
            sub(answer, f"{{{ACCOUNTXFER_NS}}}rosteritem", {"jid": c.jid, "status": c.status,
                                                           "condition": c.condition})
        await event.reply(answer)
        return True

    async def refuse_moved_login(self, login: Login) -> None:
        """After DONE, logins are refused with a text naming the new address."""
        job = await self.storage.get_transfer(self.host.domain, login.username)
        if job is not None and job.state == x.DONE:
            raise sasl.SaslFailure("account-disabled", f"this account moved to {job.new_jid}")

    async def resume(self, _) -> None:
        """At start: NOTIFYING and TRANSFERRING go on; an interrupted AUTHORIZING fails."""
        for domain, username in await self.storage.list_transfers(x.LIVE_STATES):
            if domain != self.host.domain:
                continue
            job = await self.storage.get_transfer(domain, username)
            if job.state == x.AUTHORIZING:
                await self.fail(job, x.FAILED, "interrupted")
            else:
                log.info("transfer %s@%s: resuming in state %s", username, domain, job.state)
                self.start(job)


# == new server ===================================================================================

class NewServer(_Role):
    """The new account's server: B, G, H, and D merged into the new roster."""

    async def authorization(self, event) -> bool:
        """B, to the new account's bare JID."""
        query = x.parse(event.stanza[0])
        from_old_domain(event, query)
        user = event.to.local
        if not await self.storage.user_exists(self.host.domain, user):
            raise StanzaError("service-unavailable", "no such account")
        if query.newaccount != event.to.bare:
            raise StanzaError("bad-request", "<newaccount/> is not the addressee")
        old = str(query.oldaccount)
        if await self.approval(user, old) == "preauthorized":
            await self.grant(event, user, old)
            return True
        sessions = sorted((s for s in self.host.available_sessions(user) if s.priority >= 0),
                          key=lambda s: (s.priority, s.number), reverse=True)
        if not sessions:
            raise StanzaError("recipient-unavailable", "the new account is not online")
        forward = iq("set", to=str(sessions[0].jid), from_=event.stanza.get("from"),
                     payload=x.query(oldaccount=old, newaccount=str(event.to.bare)))
        answer, condition = await self.ask(forward, FORWARD_TIMEOUT)
        if condition == "remote-server-timeout":
            raise StanzaError("recipient-unavailable", "the new account did not answer")
        if condition is not None or not _allowed(answer):
            raise StanzaError("forbidden", "the new account did not allow the transfer")
        await self.grant(event, user, old)
        return True

    async def grant(self, event, user: str, old: str) -> None:
        await self.storage.set_transfer_approval(self.host.domain, user, old, "approved",
                                                 time.time() + APPROVAL_TTL)
        log.info("transfer %s → %s@%s approved", old, user, self.host.domain)
        answer = result(event.stanza, x.query(oldaccount=old, newaccount=str(event.to.bare),
                                              allowed=True))
        answer.set("from", str(event.to.bare))            # bare, as B was addressed
        await self.router.route(answer)

    async def confirmation(self, event) -> bool:
        """G: did the new account allow a transfer from this old JID?"""
        query = x.parse(event.stanza[0])
        user = event.to.local
        if query.oldaccount is None or await self.approval(user, str(query.oldaccount)) \
                not in ("approved", "consumed"):
            raise StanzaError("item-not-found", "no such authorisation")
        await event.reply(x.query(oldaccount=str(query.oldaccount), allowed=True))
        return True

    async def preauthorize(self, event) -> bool:
        """H: the new account allows a transfer in advance (ours), or lists them."""
        user = event.from_.local
        if event.stanza.get("type") == "get":
            answer = x.query()
            for old, state, expires in await self.storage.list_transfer_approvals(
                    self.host.domain, user):
                if expires > time.time():
                    sub(answer, f"{{{ACCOUNTXFER_NS}}}oldaccount",
                        {"expires": timestamps.format(expires, "seconds"),
                         "state": state}, text=old)
            await event.reply(answer)
            return True
        query = x.parse(event.stanza[0])
        if query.newaccount is not None or query.oldaccount is None or not query.allowed:
            return False                                   # that is A
        await self.storage.set_transfer_approval(self.host.domain, user, str(query.oldaccount),
                                                 "preauthorized", time.time() + APPROVAL_TTL)
        await event.reply()
        return True

    async def roster_handover(self, event, query) -> None:
        """D: the old server hands over the roster (§2.3 merge)."""
        new = query.newaccount
        if new is None or new.domain != self.host.domain or \
                not await self.storage.user_exists(self.host.domain, new.local):
            raise StanzaError("item-not-found", "the new account is not here")
        old = str(query.oldaccount)
        state = await self.approval(new.local, old)
        if state == "consumed":
            await event.reply()                           # the same hand-over again
            return
        if state != "approved":
            raise StanzaError("forbidden", "the new account did not allow this transfer")
        if len(query.items) > MAX_ITEMS:
            raise StanzaError("resource-constraint", "too many items")
        bare_new = str(new)
        # contacts whose server got no notice are reached as XEP-0283 would (§2.3 bridge)
        bridge = plan_outreach(old, bare_new, [i for i, notified in query.items if not notified])
        contacts = [item.jid for item, _ in query.items if item.jid not in (bare_new, old)]
        try:
            merged = await self.host.rosters.update(
                new.local, contacts, decide_merge(query.items, (bare_new, old),
                                                  frozenset(bridge.preapprove),
                                                  frozenset(bridge.subscribe))) \
                if contacts else []
        except RosterFull:
            raise StanzaError("resource-constraint", "the new account's roster is full") \
                from None
        await self.storage.set_transfer_approval(self.host.domain, new.local, old, "consumed",
                                                 time.time() + APPROVAL_TTL)
        await event.reply()
        for item in merged:                             # presence follows
            if item.subscription in ("to", "both"):
                await self.router.route(E(PRESENCE, {"type": "probe", "from": bare_new,
                                                     "to": item.jid}))
            if item.subscription in ("from", "both"):
                await self.host.events.fire("presence-grant",
                                            PresenceShare(self.host, new.local, item.jid))
        for jid in bridge.subscribe:                    # XEP-0283 for the rest (§2.3 bridge)
            notice = moved_notice(jid, old)
            notice.set("from", bare_new)
            await self.router.route(notice)
        log.info("transfer %s → %s: %d items merged, %d bridged with XEP-0283",
                 old, bare_new, len(merged), len(bridge.subscribe))

    async def quiet_probe(self, event) -> bool:
        """No ``unsubscribed`` to probes while an authorisation is live (§2.3)."""
        user = event.to.local
        for old, state, expires in await self.storage.list_transfer_approvals(
                self.host.domain, user):
            if state in ("approved", "consumed") and expires > time.time():
                return True
        return False


# == contact's server =============================================================================

class ContactServer(_Role):
    """A contact's server: C rewrites a local roster item from old to new."""

    def __init__(self, host):
        super().__init__(host)
        self.checking = asyncio.Semaphore(NOTICES_CHECKED)
        self.notice_tasks: set[asyncio.Task] = set()
        self.confirming: dict[tuple[str, str], asyncio.Future] = {}

    async def receive_notice(self, event, query) -> None:
        """C arrives: answered by a task of its own once checked, so the old
        server's stream goes on to its next notice meanwhile — waiting here
        for each check (G, a round trip to the new server) made a contact's
        server handle one notice per round trip. At most NOTICES_CHECKED
        notices are in progress; beyond that the stream waits."""
        await self.checking.acquire()
        task = asyncio.create_task(self.answer_notice(event, query))
        self.notice_tasks.add(task)
        task.add_done_callback(self.notice_tasks.discard)

    async def answer_notice(self, event, query) -> None:
        try:
            await self.notice(event, query)
        except StanzaError as err:
            await self.router.route(error_reply(event.stanza, err))
        except Exception:
            log.exception("transfer notice from %s", event.from_)
            await self.router.route(error_reply(event.stanza,
                                                StanzaError("internal-server-error")))
        finally:
            self.checking.release()

    async def notice(self, event, query) -> None:
        """C: a contact of ours moved; rewrite their roster item."""
        old, new = query.oldaccount, query.newaccount
        if new is None:
            raise StanzaError("bad-request", "<newaccount/> is missing")
        if len(query.rosteritems) != 1:
            raise StanzaError("bad-request", "one <rosteritem/> per notice")
        contact = JID.parse(query.rosteritems[0])
        if contact.domain != self.host.domain or \
                not await self.storage.user_exists(self.host.domain, contact.local):
            raise StanzaError("item-not-found", "no such contact here")
        user, rosters = contact.local, self.host.rosters
        needed = rewrite_needed(await rosters.item(user, str(old)),
                                await rosters.item(user, str(new)), str(contact))
        if needed and not await self.confirmed(old, new):
            raise StanzaError("forbidden", "the new account does not confirm the transfer")
        # decided again on what the roster holds then: a notice sent twice may
        # have been applied meanwhile (then nothing changes: idempotent)
        settings = self.host.global_config.moved
        keep = settings.old_contact == "keep"
        try:
            moved = await rosters.update(user, [str(old), str(new)],
                                         decide_rewrite(str(old), str(new), str(contact), keep))
        except RosterFull:
            raise StanzaError("resource-constraint", f"{contact}'s roster is full") from None
        await event.reply()
        if moved is not None:
            log.info("transfer: %s now has %s instead of %s (%s)", contact, new, old,
                     moved.subscription)
            if settings.notify_contacts:
                await tell_contact(self.host, user, str(old), str(new), moved, keep)

    async def confirmed(self, old: JID, new: JID) -> bool:
        """G: ask the new account's server (or look, when it is us). Notices for
        the same move checked at the same time share one question: its answer
        is as fresh for each of them as one of their own would be."""
        if not self.host.global_config.accountxfer.confirm:
            return True
        if new.domain == self.host.domain:
            return await self.approval(new.local, str(old)) in ("approved", "consumed")
        key = (str(old), str(new))
        pending = self.confirming.get(key)
        if pending is None:
            pending = self.confirming[key] = asyncio.ensure_future(
                self.ask_confirmation(old, new))
            pending.add_done_callback(lambda _: self.confirming.pop(key, None))
        return await asyncio.shield(pending)

    async def ask_confirmation(self, old: JID, new: JID) -> bool:
        g = iq("get", to=str(new), from_=self.host.domain,
               payload=x.query(oldaccount=str(old)))
        answer, condition = await self.ask(g, self.notice_timeout)
        return condition is None and _allowed(answer)


# == the module ===================================================================================

class AccountXfer(Module):
    name = "accountxfer"
    depends = ("roster",)               # the roster service pushes what the roles change
    features = (ACCOUNTXFER_NS,)

    def __init__(self, host):
        super().__init__(host)
        self.old = OldServer(host)
        self.new = NewServer(host)
        self.contact = ContactServer(host)

    def hooks(self):
        ns = ACCOUNTXFER_NS
        return [iq_hook("set", "host", ns, "query", self.domain_set),
                iq_hook("get", "host", ns, "query", self.old.status),
                iq_hook("set", "self", ns, "query", self.self_set),
                iq_hook("get", "self", ns, "query", self.new.preauthorize),
                iq_hook("set", "bare", ns, "query", self.new.authorization),
                iq_hook("get", "bare", ns, "query", self.new.confirmation),
                Hook("login", self.old.refuse_moved_login),
                Hook("probe-unauthorized", self.new.quiet_probe),
                Hook("server-started", self.old.resume)]

    async def domain_set(self, event) -> bool:
        """A set to our domain: A from a user of ours, else C or D from a server."""
        if await self.old.request(event):
            return True
        query = x.parse(event.stanza[0])
        from_old_domain(event, query)
        if x.domain_set_kind(query, event.stanza[0]) == "notice":
            await self.contact.receive_notice(event, query)
        else:
            await self.new.roster_handover(event, query)
        return True

    async def self_set(self, event) -> bool:
        """A from the user, or H (a pre-authorisation)."""
        return await self.old.request(event) or await self.new.preauthorize(event)


MODULE = AccountXfer

_CONDITIONS = {"forbidden", "recipient-unavailable", "remote-server-not-found",
               "remote-server-timeout", "service-unavailable", "item-not-found",
               "internal-server-error", "bad-request", "conflict", "not-acceptable",
               "resource-constraint", "feature-not-implemented", "jid-malformed"}
