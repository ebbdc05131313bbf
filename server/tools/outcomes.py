"""How contacts answered the requests of a move (XEP-0283), and the final state per contact.

Shared by ``xferd migrate`` (it sends the outreach plan itself) and
``xferd transfer`` (the new server sends the same plan, as XEP-0015's bridge,
to contacts whose server has no XEP-0015). Either way the new account's
session learns the outcome the same way: it watches for the contacts'
answers for a while (:func:`watch`) — ``subscribed`` or an error presence,
roster pushes, and a disco#info probe per contact domain, since servers drop
error presence addressed to a bare JID, so the probe is what finds
unreachable domains — and :func:`outcome` turns what it saw and the new
roster into one of:

- ``auto-updated``: ``subscribed`` came back within the wait — the contact's
  server verified the moved statement (XEP-0283 §4.4);
- ``approved``: the subscription exists now (the contact said yes later);
- ``waiting for manual approval``: the request is with the contact;
- ``failed: why``: an error presence, a refusal, an unreachable domain;
- ``roster only``: nothing to restore.
"""

from __future__ import annotations

import asyncio
import logging

from ..client import Client, ClientError, IQError, stanza_error
from ..xmpp.jid import JID, JIDError
from ..xmpp.outreach import Plan
from ..xmpp.stanza import E, IQ, PRESENCE, iq

log = logging.getLogger("xferd.outcomes")

AUTO, APPROVED = "auto-updated", "approved"
WAITING, ROSTER_ONLY = "waiting for manual approval", "roster only (no subscription to restore)"
UNREACHABLE = ("remote-server-not-found", "remote-server-timeout")
#: an ``unsubscribed`` answer to the request (RFC 6121 §3.2.3; §3.1.3: no such contact)
REFUSED = "refused (unsubscribed): the contact declined or does not exist"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
ROSTER_NS = "jabber:iq:roster"


class Answers:
    """What contacts answered the requests sent in this run."""

    def __init__(self, contacts: set[str]):
        self.contacts = contacts
        self.subscribed: set[str] = set()
        self.failed: dict[str, str] = {}
        self.changed = asyncio.Event()

    def settle(self, waiting: list[str]) -> bool:
        """Drop from the front of *waiting* the contacts that answered or
        failed; True when none is left. A contact that has answered stays so
        (a failure can only turn into a subscription), so nobody is looked at
        twice: waiting through N answers costs N, not N² lookups."""
        done = 0
        while done < len(waiting) and (waiting[done] in self.subscribed
                                       or waiting[done] in self.failed):
            done += 1
        del waiting[:done]
        return not waiting

    def fail(self, jid: str, why: str) -> None:
        if jid not in self.subscribed:
            self.failed.setdefault(jid, why)
            self.changed.set()

    def see(self, el) -> None:
        """A stanza for the new account: answers to our presence, roster pushes."""
        if el.tag == IQ:                                    # roster push
            for item in el.iterfind(f"{{{ROSTER_NS}}}query/{{{ROSTER_NS}}}item"):
                self.see_item(_bare(item.get("jid")), item.get("subscription"))
            return
        jid = _bare(el.get("from"))
        if el.tag != PRESENCE or jid not in self.contacts:
            return
        kind = el.get("type")
        if kind == "subscribed":
            self._subscribed(jid)
        elif kind == "unsubscribed":
            self.fail(jid, REFUSED)
        elif kind == "error":
            condition, text = stanza_error(el)
            self.fail(jid, condition + (f" ({text})" if text else ""))

    def see_item(self, jid: str | None, subscription: str | None) -> None:
        """A roster item of the new account as the server reports it."""
        if jid in self.contacts and subscription in ("to", "both"):
            self._subscribed(jid)

    def _subscribed(self, jid: str) -> None:
        self.failed.pop(jid, None)
        self.subscribed.add(jid)
        self.changed.set()


def subscribed_to(items) -> set[str]:
    """The JIDs of roster *items* whose presence the account receives."""
    return {item.jid for item in items if item.subscription in ("to", "both")}


async def watch(client: Client, plan: Plan, answers: Answers, *, wait: float,
                subscribed_before: set[str]) -> None:
    """Watch *client* (the new account, with ``answers.see`` among its stanza
    handlers) for up to *wait* seconds, until every contact asked to
    subscribe has answered or failed and every contact domain has answered
    its probe. *subscribed_before*: the contacts the new account was
    subscribed to before the requests (they prove nothing)."""
    asked = [jid for jid in plan.subscribe if jid in answers.contacts]
    loop = asyncio.get_running_loop()
    domains = {JID.parse(jid).domain for jid in answers.contacts} - {client.domain}
    questions = [loop.create_task(probe(client, domain, answers, wait))
                 for domain in sorted(domains)]
    questions.append(loop.create_task(answered_already(client, answers, wait,
                                                       subscribed_before)))
    deadline = loop.time() + wait
    try:
        waiting = list(asked)
        while not answers.settle(waiting) or not all(q.done() for q in questions):
            left = deadline - loop.time()
            if left <= 0:
                break
            answers.changed.clear()
            try:
                await asyncio.wait_for(answers.changed.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass
    finally:
        for question in questions:
            question.cancel()
    log.info("answers: %d subscribed, %d failed, %d still open", len(answers.subscribed),
             len(answers.failed), len(answers.contacts) - len(answers.subscribed)
             - len(answers.failed))


async def answered_already(client: Client, answers: Answers, wait: float,
                           subscribed_before: set[str]) -> None:
    """Ask for the roster on the working session only now (earlier, it would
    be sent a push for every change the copy and the requests make): from
    here on it is an interested resource, which some servers require before
    they pass on a ``subscribed`` (RFC 6121 §3.1.6; Prosody does), and the
    answer shows who has said yes before that. The server answers after the
    stanzas ahead of it on the stream, so this may take as long as the wait."""
    try:
        items = await client.roster(timeout=max(wait, 1.0))
    except ClientError as exc:
        log.debug("roster: %s", exc)
        return
    for item in items:
        if item.jid not in subscribed_before:
            answers.see_item(item.jid, item.subscription)
    answers.changed.set()


async def probe(client: Client, domain: str, answers: Answers, wait: float) -> None:
    """Ask *domain* for disco#info: an unreachable domain fails its contacts."""
    request = iq("get", to=domain, payload=E(f"{{{DISCO_INFO}}}query"))
    try:
        await client.request(request, timeout=max(wait, 1.0))
    except IQError as exc:
        if exc.condition in UNREACHABLE:
            for jid in answers.contacts:
                if JID.parse(jid).domain == domain:
                    answers.fail(jid, exc.condition)
    finally:
        answers.changed.set()


def outcome(jid: str, plan: Plan, answers: Answers, item) -> str:
    """The final state of contact *jid* after this run's requests and wait;
    *item* is its roster item on the new account now (None: there is none).

    A request the session did not see answered may still have been: an
    ``unsubscribed`` reaches only resources that asked for the roster (RFC
    6121 §3.2.3), but it also takes the pending ``ask`` off the item, so an
    item without ``ask`` and without a subscription to the contact was
    refused."""
    if jid in answers.failed:
        return f"failed: {answers.failed[jid]}"
    if jid in answers.subscribed:
        return AUTO
    sub_now = item.subscription if item is not None else "none"
    if jid in plan.subscribe:
        if sub_now in ("to", "both"):
            return APPROVED
        return WAITING if item is None or item.ask else f"failed: {REFUSED}"
    if jid in plan.preapprove:
        return APPROVED if sub_now in ("from", "both") else WAITING
    return ROSTER_ONLY


def note(status: str, jid: str, plan: Plan) -> str:
    """What a report adds to *status*: a contact only pre-approved is not
    asked anything; its own request to the new account will be accepted."""
    if status == WAITING and jid not in plan.subscribe:
        return f" (pre-approved: accepted once they add {plan.new})"
    return ""


def _bare(text: str | None) -> str | None:
    try:
        return str(JID.parse(text).bare) if text else None
    except JIDError:
        return None
