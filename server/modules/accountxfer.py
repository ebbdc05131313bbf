"""XEP-0015 Account Transfer, all three server roles (PROTOCOLS.md §2; the
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
rewritten from the old JID to the new one in one transaction. Notices are
checked side by side (up to 64), each answered when its check is done;
checks of the same move that overlap share one G.
"""

from __future__ import annotations

import asyncio
import logging
import time

from storage.api import PepItem, PepNode, Transfer, TransferContact

from ..core.events import PresenceShare, RosterChange
from ..xmpp import sasl
from ..xmpp import transfer as x
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID
from ..xmpp.outreach import moved_notice, moved_statement, plan_outreach
from ..xmpp.stanza import (E, PRESENCE, error_element, error_reply, find_error_condition, iq,
                           result, sub, to_text)

log = logging.getLogger("xferd.accountxfer")

APPROVAL_TTL = 24 * 3600
AUTHORIZE_TIMEOUT = 180.0
FORWARD_TIMEOUT = 120.0
NOTICES_IN_FLIGHT = 32
NOTICES_CHECKED = 64            # contact's server: notices being checked at once
ROSTER_TRIES = 3
MAX_ITEMS = 10_000
MOVED_NS = "urn:xmpp:moved:1"


def setup(host) -> None:
    storage = host.storage
    router = host.server.router
    host.features.add(x.NS)
    jobs: dict[str, asyncio.Task] = {}
    notice_timeout = host.global_config.accountxfer.notice_timeout

    # -- helpers ------------------------------------------------------------------------------
    async def ask(stanza, timeout: float):
        """Send an IQ on the server's behalf: (answer, error condition or None)."""
        try:
            answer = await router.request(stanza, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            return None, "remote-server-timeout"
        if answer.get("type") == "error":
            return answer, find_error_condition(answer) or "undefined-condition"
        return answer, None

    def from_old_domain(event, query) -> None:
        """§2.4: B, C and D come from the old account's domain JID itself."""
        sender = event.from_
        if sender is None or sender.local is not None or sender.resource is not None or \
                query.oldaccount is None or sender.domain != query.oldaccount.domain:
            raise StanzaError("forbidden", "only the old account's server may send this")

    async def approval(user: str, old: str) -> str | None:
        record = await storage.get_transfer_approval(host.domain, user, old)
        if record is None or record[1] < time.time():
            return None
        return record[0]

    # == old server ===============================================================================
    async def request(event) -> bool:
        """A: the user asks to move (§2.2, checks §2.4)."""
        sender = event.from_
        if event.origin is None or sender is None or sender.domain != host.domain \
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
        existing = await storage.get_transfer(host.domain, sender.local)
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
            start(existing)
            return True
        if existing is not None and existing.state == x.DONE:
            raise StanzaError("conflict", f"this account already moved to {existing.new_jid}")
        _, roster = await storage.get_roster(host.domain, sender.local)
        # the same filter as XEP-0283 outreach: transports and their contacts stay (§2.5)
        plan = plan_outreach(sender.bare, query.newaccount, roster.values())
        kept = [roster[item.jid] for item in plan.items]
        dropped = plan.skipped
        targets = {i.jid for i in x.notice_targets(kept, str(sender.bare), str(query.newaccount))}
        job = Transfer(host.domain, sender.local, str(query.newaccount), x.AUTHORIZING,
                       requester=str(sender), request_id=event.stanza.get("id"))
        for item in kept:
            job.contacts[item.jid] = TransferContact(
                item.jid, item, "pending" if item.jid in targets else "skipped",
                None if item.jid in targets else "not subscribed: no notice")
        await storage.save_transfer(job, contacts=True)
        log.info("transfer %s@%s → %s: %d contacts, %d to notify, %d transport items left",
                 sender.local, host.domain, job.new_jid, len(kept), len(targets), len(dropped))
        start(job)
        return True

    def start(job: Transfer) -> None:
        task = asyncio.create_task(run(job))
        jobs[job.username] = task
        task.add_done_callback(lambda _: jobs.pop(job.username, None))

    async def run(job: Transfer) -> None:
        try:
            if job.state == x.AUTHORIZING:
                await authorize(job)
            if job.state == x.NOTIFYING:
                await notify(job)
            if job.state == x.TRANSFERRING:
                await hand_over(job)
            if job.state == x.DONE:
                await finish(job)
        except Exception:
            log.exception("transfer of %s@%s", job.username, host.domain)
            await fail(job, x.FAILED, "internal-server-error")

    async def authorize(job: Transfer) -> None:
        old = f"{job.username}@{host.domain}"
        b = iq("set", to=job.new_jid, from_=host.domain,
               payload=x.query(oldaccount=old, newaccount=job.new_jid))
        answer, condition = await ask(b, AUTHORIZE_TIMEOUT)
        if condition is None and answer.find(f"{{{x.NS}}}query/{{{x.NS}}}allowed") is None:
            condition = "forbidden"
        if condition is not None:
            await fail(job, x.FAILED, condition)
            return
        job.state = x.NOTIFYING
        await storage.save_transfer(job)

    async def notify(job: Transfer) -> None:
        old = f"{job.username}@{host.domain}"
        slots = asyncio.Semaphore(NOTICES_IN_FLIGHT)

        async def one(contact: TransferContact) -> None:
            async with slots:
                notice = x.query(oldaccount=old, newaccount=job.new_jid)
                sub(notice, f"{{{x.NS}}}rosteritem", {"jid": contact.jid})
                domain = contact.jid.rpartition("@")[2]
                for _ in range(2):                           # one retry on timeout
                    c = iq("set", to=domain, from_=host.domain, payload=notice)
                    _, condition = await ask(c, notice_timeout)
                    if condition != "remote-server-timeout":
                        break
                contact.status, contact.condition = ("ok", None) if condition is None \
                    else ("failed", condition)
                await storage.save_transfer_contact(host.domain, job.username, contact)
                log.info("transfer %s: notice for %s: %s", old, contact.jid,
                         contact.condition or "ok")

        await asyncio.gather(*(one(c) for c in job.contacts.values() if c.status == "pending"))
        job.state = x.TRANSFERRING
        await storage.save_transfer(job)

    async def hand_over(job: Transfer) -> None:
        old = f"{job.username}@{host.domain}"
        await publish_statement(job)
        roster = x.query(oldaccount=old, newaccount=job.new_jid)
        for contact in job.contacts.values():
            roster.append(x.item_element(contact.item, notified=contact.status == "ok"))
        condition = None
        for attempt in range(ROSTER_TRIES):
            d = iq("set", to=JID.parse(job.new_jid).domain, from_=host.domain, payload=roster)
            _, condition = await ask(d, notice_timeout)
            if condition is None:
                break
            await asyncio.sleep(2 ** attempt)
        if condition is not None:
            await fail(job, x.FAILED_PARTIAL, condition)
            return
        job.state = x.DONE
        await storage.save_transfer(job)

    async def publish_statement(job: Transfer) -> None:
        """XEP-0283 statement, so contacts reached without a notice can verify."""
        if not host.global_config.accountxfer.publish_moved:
            return
        payload = moved_statement(job.new_jid)
        await storage.publish_pep_item(host.domain, job.username,
                                       PepNode(MOVED_NS, access_model="open"),
                                       PepItem("current", to_text(payload)))

    async def finish(job: Transfer) -> None:
        """DONE: answer A (E), forget the contacts that moved along."""
        moved = [c.jid for c in job.contacts.values() if c.status == "ok"]
        if moved:
            version = await storage.save_roster_changes(
                host.domain, job.username, [(jid, None, False) for jid in moved])
            for jid in moved:
                await host.events.fire("roster-changed",
                                       RosterChange(host, job.username, jid, None, version))
        await answer_request(job, None)
        log.info("transfer %s@%s → %s done", job.username, host.domain, job.new_jid)

    async def fail(job: Transfer, state: str, condition: str) -> None:
        job.state, job.detail = state, condition
        await storage.save_transfer(job)
        log.info("transfer %s@%s → %s: %s (%s)", job.username, host.domain, job.new_jid,
                 state, condition)
        await answer_request(job, condition)

    async def answer_request(job: Transfer, condition: str | None) -> None:
        if not job.requester:
            return
        if condition is not None:
            reply = E("{jabber:client}iq", {"type": "error", "id": job.request_id,
                                                "to": job.requester, "from": host.domain})
            reply.append(error_element(StanzaError(
                condition if condition in _CONDITIONS else "undefined-condition",
                f"transfer to {job.new_jid}: {condition}")))
        else:
            payload = None
            failed = [c for c in job.contacts.values() if c.status == "failed"]
            if failed:
                payload = x.query()
                for c in failed:
                    sub(payload, f"{{{x.NS}}}rosteritem",
                        {"jid": c.jid, "status": "failed", "condition": c.condition})
            reply = iq("result", to=job.requester, from_=host.domain, id=job.request_id,
                       payload=payload)
        await router.route(reply)

    async def status(event) -> bool:
        """Ours: ``get`` on the domain tells a user how their transfer stands."""
        sender = event.from_
        if sender is None or sender.domain != host.domain or sender.local is None:
            return False
        job = await storage.get_transfer(host.domain, sender.local)
        if job is None:
            raise StanzaError("item-not-found", "no transfer")
        answer = x.query(oldaccount=str(sender.bare), newaccount=job.new_jid)
        answer.set("state", job.state)
        for c in job.contacts.values():
            sub(answer, f"{{{x.NS}}}rosteritem", {"jid": c.jid, "status": c.status,
                                                  "condition": c.condition})
        await event.reply(answer)
        return True

    async def refuse_moved_login(login) -> None:
        session, username = login
        job = await storage.get_transfer(host.domain, username)
        if job is not None and job.state == x.DONE:
            raise sasl.SaslFailure("account-disabled", f"this account moved to {job.new_jid}")

    async def resume(_) -> None:
        for domain, username in await storage.list_transfers(x.LIVE_STATES):
            if domain != host.domain:
                continue
            job = await storage.get_transfer(domain, username)
            if job.state == x.AUTHORIZING:
                await fail(job, x.FAILED, "interrupted")
            else:
                log.info("transfer %s@%s: resuming in state %s", username, domain, job.state)
                start(job)

    # == new server ===============================================================================
    async def authorization(event) -> bool:
        """B, to the new account's bare JID."""
        query = x.parse(event.stanza[0])
        from_old_domain(event, query)
        user = event.to.local
        if not await storage.user_exists(host.domain, user):
            raise StanzaError("service-unavailable", "no such account")
        if query.newaccount != event.to.bare:
            raise StanzaError("bad-request", "<newaccount/> is not the addressee")
        old = str(query.oldaccount)
        if await approval(user, old) == "preauthorized":
            await grant(event, user, old)
            return True
        sessions = sorted((s for s in host.available_sessions(user) if s.priority >= 0),
                          key=lambda s: (s.priority, s.number), reverse=True)
        if not sessions:
            raise StanzaError("recipient-unavailable", "the new account is not online")
        forward = iq("set", to=str(sessions[0].jid), from_=event.stanza.get("from"),
                     payload=x.query(oldaccount=old, newaccount=str(event.to.bare)))
        answer, condition = await ask(forward, FORWARD_TIMEOUT)
        if condition == "remote-server-timeout":
            raise StanzaError("recipient-unavailable", "the new account did not answer")
        if condition is not None or answer.find(f"{{{x.NS}}}query/{{{x.NS}}}allowed") is None:
            raise StanzaError("forbidden", "the new account did not allow the transfer")
        await grant(event, user, old)
        return True

    async def grant(event, user: str, old: str) -> None:
        await storage.set_transfer_approval(host.domain, user, old, "approved",
                                            time.time() + APPROVAL_TTL)
        log.info("transfer %s → %s@%s approved", old, user, host.domain)
        answer = result(event.stanza, x.query(oldaccount=old, newaccount=str(event.to.bare),
                                              allowed=True))
        answer.set("from", str(event.to.bare))            # PROTOCOLS §2.2: bare, as asked
        await router.route(answer)

    async def confirmation(event) -> bool:
        """G: did the new account allow a transfer from this old JID?"""
        query = x.parse(event.stanza[0])
        user = event.to.local
        if query.oldaccount is None or await approval(user, str(query.oldaccount)) \
                not in ("approved", "consumed"):
            raise StanzaError("item-not-found", "no such authorisation")
        await event.reply(x.query(oldaccount=str(query.oldaccount), allowed=True))
        return True

    async def preauthorize(event) -> bool:
        """H: the new account allows a transfer in advance (ours), or lists them."""
        user = event.from_.local
        if event.stanza.get("type") == "get":
            answer = x.query()
            for old, state, expires in await storage.list_transfer_approvals(host.domain, user):
                if expires > time.time():
                    sub(answer, f"{{{x.NS}}}oldaccount",
                        {"expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
                         "state": state}, text=old)
            await event.reply(answer)
            return True
        query = x.parse(event.stanza[0])
        if query.newaccount is not None or query.oldaccount is None or not query.allowed:
            return False                                   # that is A
        await storage.set_transfer_approval(host.domain, user, str(query.oldaccount),
                                            "preauthorized", time.time() + APPROVAL_TTL)
        await event.reply()
        return True

    async def roster_handover(event, query) -> None:
        """D: the old server hands over the roster (§2.3 merge)."""
        new = query.newaccount
        if new is None or new.domain != host.domain or \
                not await storage.user_exists(host.domain, new.local):
            raise StanzaError("item-not-found", "the new account is not here")
        old = str(query.oldaccount)
        state = await approval(new.local, old)
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
        changes = []
        for item, notified in query.items:
            if item.jid in (bare_new, old):
                continue
            existing = await storage.get_roster_item(host.domain, new.local, item.jid)
            merged = x.merge(existing, item, notified)
            merged.approved = item.jid in bridge.preapprove   # they may subscribe again
            merged.ask = item.jid in bridge.subscribe
            changes.append((item.jid, merged, None))
        version = await storage.save_roster_changes(host.domain, new.local, changes) \
            if changes else 0
        await storage.set_transfer_approval(host.domain, new.local, old, "consumed",
                                            time.time() + APPROVAL_TTL)
        await event.reply()
        for jid, merged, _ in changes:
            await host.events.fire("roster-changed",
                                   RosterChange(host, new.local, jid, merged, version))
        for jid, merged, _ in changes:                  # presence follows
            if merged.subscription in ("to", "both"):
                await router.route(E(PRESENCE, {"type": "probe", "from": bare_new, "to": jid}))
            if merged.subscription in ("from", "both"):
                await host.events.fire("presence-grant", PresenceShare(host, new.local, jid))
        for jid in bridge.subscribe:                    # XEP-0283 for the rest (§2.3 bridge)
            notice = moved_notice(jid, old)
            notice.set("from", bare_new)
            await router.route(notice)
        log.info("transfer %s → %s: %d items merged, %d bridged with XEP-0283",
                 old, bare_new, len(changes), len(bridge.subscribe))

    async def quiet_probe(event) -> bool:
        """No ``unsubscribed`` to probes while an authorisation is live (§2.3)."""
        user = event.to.local
        for old, state, expires in await storage.list_transfer_approvals(host.domain, user):
            if state in ("approved", "consumed") and expires > time.time():
                return True
        return False

    # == contact's server ============================================================================
    checking = asyncio.Semaphore(NOTICES_CHECKED)
    notice_tasks: set[asyncio.Task] = set()
    confirming: dict[tuple[str, str], asyncio.Future] = {}

    async def receive_notice(event, query) -> None:
        """C arrives: answered by a task of its own once checked, so the old
        server's stream goes on to its next notice meanwhile — waiting here
        for each check (G, a round trip to the new server) made a contact's
        server handle one notice per round trip. At most NOTICES_CHECKED
        notices are in progress; beyond that the stream waits."""
        await checking.acquire()
        task = asyncio.create_task(answer_notice(event, query))
        notice_tasks.add(task)
        task.add_done_callback(notice_tasks.discard)

    async def answer_notice(event, query) -> None:
        try:
            await notice(event, query)
        except StanzaError as err:
            await router.route(error_reply(event.stanza, err))
        except Exception:
            log.exception("transfer notice from %s", event.from_)
            await router.route(error_reply(event.stanza, StanzaError("internal-server-error")))
        finally:
            checking.release()

    async def notice(event, query) -> None:
        """C: a contact of ours moved; rewrite their roster item."""
        old, new = query.oldaccount, query.newaccount
        if new is None:
            raise StanzaError("bad-request", "<newaccount/> is missing")
        if len(query.rosteritems) != 1:
            raise StanzaError("bad-request", "one <rosteritem/> per notice")
        contact = JID.parse(query.rosteritems[0])
        if contact.domain != host.domain or not await storage.user_exists(host.domain,
                                                                          contact.local):
            raise StanzaError("item-not-found", "no such contact here")
        user = contact.local
        if await applicable(user, old, new) and not await confirmed(old, new):
            raise StanzaError("forbidden", "the new account does not confirm the transfer")
        async with host.roster_items(user, str(old), str(new)):
            # read again after the check: a notice sent twice may have been applied meanwhile
            if not await applicable(user, old, new):
                await event.reply()                     # already done: idempotent
                return
            item_old = await storage.get_roster_item(host.domain, user, str(old))
            item_new = await storage.get_roster_item(host.domain, user, str(new))
            moved = x.merge(item_new, item_old, True)
            moved.jid = str(new)
            version = await storage.save_roster_changes(host.domain, user, [
                (str(new), moved, False), (str(old), None, False)])
        await event.reply()
        await host.events.fire("roster-changed", RosterChange(host, user, str(old), None, version))
        await host.events.fire("roster-changed", RosterChange(host, user, str(new), moved, version))
        log.info("transfer: %s now has %s instead of %s (%s)", contact, new, old,
                 moved.subscription)

    async def applicable(user: str, old: JID, new: JID) -> bool:
        """Does *user*'s roster still hold old to rewrite (False: already done)?
        Raises the notice's error when there is nothing to rewrite at all."""
        item_old = await storage.get_roster_item(host.domain, user, str(old))
        if item_old is None:
            if await storage.get_roster_item(host.domain, user, str(new)) is not None:
                return False
            raise StanzaError("item-not-found", f"{old} is not in {user}@{host.domain}'s roster")
        if item_old.subscription == "none":
            raise StanzaError("not-acceptable", "no subscription with the old account")
        return True

    async def confirmed(old: JID, new: JID) -> bool:
        """G: ask the new account's server (or look, when it is us). Notices for
        the same move checked at the same time share one question: its answer
        is as fresh for each of them as one of their own would be."""
        if not host.global_config.accountxfer.confirm:
            return True
        if new.domain == host.domain:
            return await approval(new.local, str(old)) in ("approved", "consumed")
        key = (str(old), str(new))
        pending = confirming.get(key)
        if pending is None:
            pending = confirming[key] = asyncio.ensure_future(ask_confirmation(old, new))
            pending.add_done_callback(lambda _: confirming.pop(key, None))
        return await asyncio.shield(pending)

    async def ask_confirmation(old: JID, new: JID) -> bool:
        g = iq("get", to=str(new), from_=host.domain, payload=x.query(oldaccount=str(old)))
        answer, condition = await ask(g, notice_timeout)
        return condition is None and answer.find(f"{{{x.NS}}}query/{{{x.NS}}}allowed") is not None

    async def domain_set(event) -> bool:
        """A set to our domain: A from a user of ours, else C or D from a server."""
        if await request(event):
            return True
        query = x.parse(event.stanza[0])
        from_old_domain(event, query)
        if x.domain_set_kind(query, event.stanza[0]) == "notice":
            await receive_notice(event, query)
        else:
            await roster_handover(event, query)
        return True

    async def self_set(event) -> bool:
        return await request(event) or await preauthorize(event)

    ns = f"{x.NS}:query"
    host.events.on(f"iq-set/host/{ns}", domain_set)
    host.events.on(f"iq-get/host/{ns}", status)
    host.events.on(f"iq-set/self/{ns}", self_set)
    host.events.on(f"iq-get/self/{ns}", preauthorize)
    host.events.on(f"iq-set/bare/{ns}", authorization)
    host.events.on(f"iq-get/bare/{ns}", confirmation)
    host.events.on("login", refuse_moved_login)
    host.events.on("probe-unauthorized", quiet_probe)
    host.events.on("server-started", resume)


_CONDITIONS = {"forbidden", "recipient-unavailable", "remote-server-not-found",
               "remote-server-timeout", "service-unavailable", "item-not-found",
               "internal-server-error", "bad-request", "conflict", "not-acceptable",
               "resource-constraint", "feature-not-implemented", "jid-malformed"}
