"""XEP-0077 In-Band Registration.

Before login (§3.1): a client on an encrypted stream asks for the form and
creates an account; ``hosts.<domain>.registration`` switches this off.
Floods are bounded twice: one account per stream (§3.1.1 lets a server answer
``<not-acceptable/>`` to "an entity [that] attempts to register a second
identity"), and ``registration.max_per_address`` accounts per client address
in ``registration.window`` seconds, beyond which the answer is
``<resource-constraint/>`` type wait (RFC 6120 §8.3.3.18: try again later) —
ejabberd's answer and default (one per address per 600 s, its
``registration_timeout``). Only registrations that succeed use the allowance.
After login (§3.2, §3.3): change one's password, or remove one's account.
Passwords are turned into SCRAM credentials at once and never stored.

The registration form comes twice, as Prosody sends it: the plain fields
(§3.1) and a data form (§6, XEP-0004) with ``FORM_TYPE`` ``jabber:iq:register``
and the same two fields. Clients that speak only one of them (Dino submits the
data form and shows nothing without it) each find theirs; an answer is read
from the data form when it carries one, else from the plain fields.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from ..core.accounts import delete_account
from ..core.module import Module, iq
from ..xmpp import sasl
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JIDError, nodeprep
from ..xmpp.namespaces import DATA_NS
from ..xmpp.namespaces import REGISTER_NS as NS
from ..xmpp.stanza import E, sub

log = logging.getLogger("xferd.register")


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def _fields(query) -> tuple[str | None, str | None]:
    """(username, password) of an answer: from its submitted data form (§6)
    if it has one, else from the plain fields (§3.1)."""
    form = query.find(f"{{{DATA_NS}}}x")
    if form is not None and form.get("type") == "submit":
        values = {field.get("var"): field.findtext(f"{{{DATA_NS}}}value")
                  for field in form.iter(f"{{{DATA_NS}}}field")}
        return values.get("username"), values.get("password")
    return query.findtext(_q("username")), query.findtext(_q("password"))


def _data_form():
    """The §6 form: FORM_TYPE, then username and password, both required."""
    form = E(f"{{{DATA_NS}}}x", {"type": "form"})
    sub(form, f"{{{DATA_NS}}}title", text="Creating a new account")
    sub(form, f"{{{DATA_NS}}}instructions", text="Choose a username and password.")
    hidden = sub(form, f"{{{DATA_NS}}}field", {"type": "hidden", "var": "FORM_TYPE"})
    sub(hidden, f"{{{DATA_NS}}}value", text=NS)
    for var, kind, label in (("username", "text-single", "Username"),
                             ("password", "text-private", "Password")):
        field = sub(form, f"{{{DATA_NS}}}field", {"type": kind, "var": var, "label": label})
        sub(field, f"{{{DATA_NS}}}required")
    return form


class Register(Module):
    name = "register"
    features = (NS,)

    def __init__(self, host):
        super().__init__(host)
        #: streams that created an account (one each, XEP-0077 §3.1.1)
        self._registered_on = weakref.WeakSet()

    def hooks(self):
        return [iq("get", "unauthenticated", NS, "query", self.form),
                iq("set", "unauthenticated", NS, "query", self.create),
                *(iq("get", dest, NS, "query", self.registered) for dest in ("host", "self")),
                *(iq("set", dest, NS, "query", self.change) for dest in ("host", "self"))]

    # -- before login (§3.1) -----------------------------------------------------------------
    async def form(self, event) -> bool:
        query = E(_q("query"))
        sub(query, _q("instructions"), text="Choose a username and password.")
        sub(query, _q("username"))
        sub(query, _q("password"))
        query.append(_data_form())
        await event.reply(query)
        return True

    async def create(self, event) -> bool:
        host = self.host
        query = event.stanza[0]
        if query.find(_q("remove")) is not None:
            raise StanzaError("bad-request", "log in to remove an account")
        username, password = _fields(query)
        if not username or password is None:
            raise StanzaError("not-acceptable", "username and password are required")
        try:
            username = nodeprep(username)
        except JIDError as exc:
            raise StanzaError("not-acceptable", f"invalid username: {exc}") from None
        session = event.origin
        if session in self._registered_on:
            raise StanzaError("not-acceptable", "one account per connection: log in to it")
        throttles = session.server.auth_throttles
        wait = throttles.take_registration(session.ip)
        if wait:
            log.info("%r: registration of %s@%s refused: too many from this address",
                     session, username, host.domain)
            raise StanzaError("resource-constraint", "too many accounts created from your "
                              f"address; try again in {wait:.0f} s")
        try:
            if await host.storage.user_exists(host.domain, username):
                raise StanzaError("conflict", "that username is taken")   # spare the PBKDF2
            credentials = await self._credentials(password)
            if not await host.storage.create_user(host.domain, username, credentials):
                raise StanzaError("conflict", "that username is taken")
        except BaseException:
            throttles.give_back_registration(session.ip)
            raise
        self._registered_on.add(session)
        log.info("%r: registered %s@%s", session, username, host.domain)
        await event.reply()
        return True

    # -- after login (§3.2, §3.3) ---------------------------------------------------------------
    async def registered(self, event) -> bool:
        query = E(_q("query"))
        sub(query, _q("registered"))
        sub(query, _q("username"), text=self._own_account(event))
        await event.reply(query)
        return True

    async def change(self, event) -> bool:
        host = self.host
        query = event.stanza[0]
        user = self._own_account(event)
        if query.find(_q("remove")) is not None:
            await delete_account(host.storage, host.domain, user)
            log.info("account %s@%s removed by its owner", user, host.domain)
            await event.reply()
            for session in list(host.user_sessions(user).values()):
                session.stream_error("not-authorized", "account removed")
            return True
        username, password = _fields(query)
        if username is None or password is None:
            raise StanzaError("bad-request", "username and password are required")
        try:
            if nodeprep(username) != user:
                raise StanzaError("not-allowed", "you can only change your own password")
        except JIDError:
            raise StanzaError("bad-request", "invalid username") from None
        credentials = await self._credentials(password)
        await host.storage.set_credentials(host.domain, user, credentials)
        log.info("password changed for %s@%s", user, host.domain)
        await event.reply()
        return True

    # -- helpers ----------------------------------------------------------------------------------
    async def _credentials(self, password: str) -> dict:
        """PBKDF2 is deliberately slow: keep it off the event loop."""
        if not password:
            raise StanzaError("not-acceptable", "a password is required")
        iterations = self.host.global_config.auth.scram_iterations
        try:
            return await asyncio.to_thread(sasl.make_all_credentials, password, iterations)
        except ValueError as exc:
            raise StanzaError("not-acceptable", f"password: {exc}") from None

    def _own_account(self, event) -> str:
        """The local username asking about its own account; others are refused."""
        sender = event.from_
        if event.origin is None or sender is None or sender.domain != self.host.domain:
            raise StanzaError("forbidden", "only this server's users can manage their account")
        return sender.local


MODULE = Register
