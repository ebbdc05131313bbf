"""Where a stanza goes (RFC 6120 §8 and §10, RFC 6121 §8).

One page, read top to bottom. The decisions themselves (IQ checks, which
destination, which event names, what to do with a stanza nobody handled) are
pure functions in ``server/xmpp/routing.py`` with unit tests that feed
stanzas; this file does the I/O around them.

1. ``from_client``: a stanza from a bound client session gets its ``from``
   stamped with the session's full JID (a different ``from`` is an
   ``<invalid-from/>`` stream error), and the stream's ``xml:lang`` if it
   has none of its own (RFC 6120 §8.1.5). Outbound hooks run first on the
   sender's host — ``pre-presence``, ``pre-message``, ``pre-iq`` — and may
   take the stanza over (presence broadcast, subscription bookkeeping).
2. ``route``: basic checks (``routing.iq_problem``: IQ type, id, exactly one
   payload for get/set); a missing ``to`` means the sender's own account
   (``routing.recipient``); a local domain goes to ``deliver_local``, any
   other domain to federation.
   Before a stanza leaves for another domain, ``filter/out`` on the sender's
   host may drop it (blocking).
3. ``deliver_local``: ``filter/in`` may drop a stanza to a user (blocking);
   then fire the events named after the stanza kind and its destination
   (``routing.destination``: ``host`` = the domain, ``self`` = the sender's
   own bare JID, ``bare``, ``full``; ``routing.event_names``) — e.g.
   ``iq-get/host/urn:xmpp:ping:ping`` or ``message/bare``. A module that
   handles it returns True.
4. Nothing handled it: ``routing.default_action``, taken from RFC 6120 §10.5
   and RFC 6121 §8.5 — anything to a connected full JID is delivered; IQ
   get/set → ``<service-unavailable/>``, IQ results and errors dropped;
   messages other than errors and headlines → ``<service-unavailable/>``;
   presence dropped. (Messages to an offline full JID are treated as sent to
   the bare JID by ``modules/message.py`` before this.)

A handler may raise :class:`StanzaError`; the sender then gets that error.
Errors are never answered with errors.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..xmpp.errors import StanzaError, StreamError
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import ACCOUNTXFER_NS, XML_NS
from ..xmpp.routing import (DELIVER, KINDS, SERVICE_UNAVAILABLE, default_action, destination,
                            event_names, iq_problem, presence_problem, recipient)
from ..xmpp.stanza import error_reply, result

if TYPE_CHECKING:
    from .hosts import Host
    from .service import Xferd

log = logging.getLogger("xferd.router")

_ACCOUNTXFER_QUERY = f"{{{ACCOUNTXFER_NS}}}query"
_XML_LANG = f"{{{XML_NS}}}lang"


class StanzaEvent:
    """What a module's handler receives."""

    __slots__ = ("stanza", "origin", "host", "to", "from_", "router", "tags", "spared")

    def __init__(self, stanza, origin, host: "Host", to: JID | None, from_: JID | None,
                 router: "Router"):
        self.stanza = stanza
        self.origin = origin        # the c2s session it came from, or None
        self.host = host            # the local host it is addressed to
        self.to = to
        self.from_ = from_
        self.router = router
        #: marks modules leave on an event they hand on (e.g. "moved-checked")
        self.tags: set[str] = set()
        #: full JIDs of the addressed user's resources this stanza must not
        #: reach although sent to the bare JID: the sender blocked them
        #: (XEP-0191 items naming one resource; set by blocking.py)
        self.spared: frozenset[str] = frozenset()

    async def reply(self, payload=None) -> None:
        """Answer an IQ get/set with ``type='result'``."""
        answer = result(self.stanza, payload)
        if getattr(self.origin, "jid", "") is None:
            self.origin.send(answer)    # not bound yet: there is no address to route to
        else:
            await self.router.route(answer)

    async def send(self, stanza) -> None:
        await self.router.route(stanza)


class Router:
    def __init__(self, server: "Xferd"):
        self.server = server
        #: IQs the server itself sent and waits for: id → (future, from, to)
        self._requests: dict[str, tuple[asyncio.Future, JID, JID | None]] = {}

    async def request(self, iq, timeout: float):
        """Send an IQ get/set on the server's behalf and wait for the answer.

        Returns the ``result`` or ``error`` stanza. Like Prosody, an answer
        counts only if it comes from the JID the request went to (bare JID
        for a bare request) and carries the same id. Raises TimeoutError.
        """
        future = asyncio.get_running_loop().create_future()
        key = iq.get("id")
        self._requests[key] = (future, JID.parse(iq.get("to")),
                               JID.parse(iq.get("from")) if iq.get("from") else None)
        try:
            await self.route(iq)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            self._requests.pop(key, None)

    def _answers_request(self, stanza, from_: JID | None, to: JID | None) -> bool:
        pending = self._requests.get(stanza.get("id") or "")
        if pending is None or stanza.get("type") not in ("result", "error"):
            return False
        future, asked, asker = pending
        if from_ != asked or (asker is not None and to != asker) or future.done():
            return False
        future.set_result(stanza)
        return True

    # 1 -------------------------------------------------------------------------
    async def from_client(self, session, stanza) -> None:
        claimed = stanza.get("from")
        if claimed is not None:
            try:
                claimed_jid = JID.parse(claimed)
            except JIDError:
                raise StreamError("invalid-from", "malformed from address") from None
            if claimed_jid not in (session.jid, session.jid.bare):
                raise StreamError("invalid-from", "from is not this session's address")
        stanza.set("from", str(session.jid))
        lang = getattr(session, "lang", None)
        if lang and stanza.get(_XML_LANG) is None:
            stanza.set(_XML_LANG, lang)     # RFC 6120 §8.1.5: the stream's language
        kind = KINDS.get(stanza.tag)
        if kind is not None:
            # outbound hooks (presence broadcast, subscription state, blocking …)
            try:
                to = JID.parse(stanza.get("to")) if stanza.get("to") else None
            except JIDError:
                to = None                  # route() bounces it with <jid-malformed/>
            else:
                event = StanzaEvent(stanza, session, session.host, to, session.jid, self)
                try:
                    if await session.host.events.fire(f"pre-{kind}", event):
                        return
                except StanzaError as err:
                    await self._bounce(stanza, err)
                    return
        await self.route(stanza, origin=session)

    # 2 -------------------------------------------------------------------------
    async def route(self, stanza, origin=None) -> None:
        kind = KINDS.get(stanza.tag)
        if kind is None:
            log.debug("dropping non-stanza %s", stanza.tag)
            return
        try:
            from_ = JID.parse(stanza.get("from")) if stanza.get("from") else None
            to_text = stanza.get("to")
            to = JID.parse(to_text) if to_text else None
        except JIDError as exc:
            await self._bounce(stanza, StanzaError("jid-malformed", str(exc)))
            return
        if kind == "iq":
            if stanza.get("type") == "ask" and self.server.config.accountxfer.legacy_ask \
                    and len(stanza) == 1 and stanza[0].tag == _ACCOUNTXFER_QUERY:
                stanza.set("type", "set")   # XEP-0015's own examples use type='ask'
            problem = iq_problem(stanza)
            if problem:
                await self._bounce(stanza, StanzaError("bad-request", problem))
                return
            if self._requests and self._answers_request(stanza, from_, to):
                return
        elif kind == "presence" and (problem := presence_problem(stanza)):
            await self._bounce(stanza, StanzaError("bad-request", problem))
            return
        to = recipient(to, from_)           # RFC 6120 §10.3: none → the sender's account
        if to is None:
            log.debug("dropping stanza without to and from")
            return
        host = self.server.hosts.get(to.domain)
        try:
            if host is not None:
                await self.deliver_local(host, stanza, kind, to, from_, origin)
                return
            sender_host = self.server.hosts.get(from_.domain) if from_ is not None else None
            if sender_host is not None and await sender_host.events.fire(
                    "filter/out", StanzaEvent(stanza, origin, sender_host, to, from_, self)):
                return                      # e.g. the recipient is blocked (XEP-0191)
            await self.route_remote(stanza, to, from_)
        except StanzaError as err:
            await self._bounce(stanza, err)

    async def route_remote(self, stanza, to: JID, from_: JID | None) -> None:
        """Hand a stanza for another domain to federation (``s2s/``)."""
        s2s = self.server.s2s
        if s2s is None:
            raise StanzaError("remote-server-not-found", "federation is switched off")
        if from_ is None or from_.domain not in self.server.hosts:
            log.info("not relaying a stanza from %s to %s", from_, to)
            return
        s2s.send(stanza, from_.domain, to.domain)

    # 3 -------------------------------------------------------------------------
    async def deliver_local(self, host: "Host", stanza, kind: str, to: JID,
                            from_: JID | None, origin) -> None:
        dest = destination(to, from_)
        event = StanzaEvent(stanza, origin, host, to, from_, self)
        if to.local is not None and await host.events.fire("filter/in", event):
            return                          # e.g. the sender is blocked (XEP-0191)
        for name in event_names(stanza, kind, dest):
            if await host.events.fire(name, event):
                return
        await self._default(event, kind, dest)

    # 4 -------------------------------------------------------------------------
    async def _default(self, event: StanzaEvent, kind: str, dest: str) -> None:
        """Nobody handled it: ``routing.default_action`` decides (RFC 6121 §8.5)."""
        session = event.host.session(event.to) if dest == "full" else None
        action = default_action(kind, event.stanza.get("type"), dest, session is not None)
        if action == DELIVER:
            session.send(event.stanza)
        elif action == SERVICE_UNAVAILABLE:
            raise StanzaError("service-unavailable")
        # DROP: e.g. presence no module wanted, IQ results nobody waits for

    async def _bounce(self, stanza, err: StanzaError) -> None:
        """Send *err* back to the sender of *stanza*, unless that would loop."""
        if stanza.get("type") in ("error", "result") or not stanza.get("from"):
            log.debug("not bouncing %s (%s)", err.condition, stanza.get("type"))
            return
        try:
            JID.parse(stanza.get("from"))
        except JIDError:
            return
        if stanza.get("to"):
            try:
                JID.parse(stanza.get("to"))
            except JIDError:
                del stanza.attrib["to"]     # reply comes from the server itself
        await self.route(error_reply(stanza, err))
