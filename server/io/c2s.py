"""Client sessions: drive the negotiation table, bind resources, carry stanzas.

One :class:`C2SSession` per TCP connection. It reads bytes, feeds the
sans-IO :class:`~server.xmpp.stream.StreamParser`, asks
:func:`~server.xmpp.negotiation.decide` what each element means in the
current phase and runs the matching ``on_<action>`` method. Once bound,
stanzas go to the router.

RFC 6120 §5 (STARTTLS), §6 (SASL), §7 (bind); RFC 3921 §3 session (no-op);
XEP-0368 direct TLS (the listener wraps the socket before we see it).

XEP-0198 Stream Management: the session's life across connections
(hibernation, resumption) and the ``on_sm_*`` actions are in
``stream_management.py`` (:class:`ManagedSession`); here, ``teardown``
asks it whether a bound session ends with its connection.

Limits: a connection beyond ``c2s.max_connections_per_ip`` live ones from its
address is turned away with ``<policy-violation/>`` (RFC 6120 §4.9.3.14)
before we parse a byte of it — on the direct TLS port the listener has done
the TLS handshake by then. ``c2s.auth_timeout`` is one deadline counted from
the connection, not an idle timer: a peer trickling a byte now and then
(slowloris) or saying nothing at all gets ``<connection-timeout/>`` all the
same. Stanza rate: see ``net.py``; failed logins and registrations per
address: ``throttle.py`` (:class:`AuthThrottles`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from typing import TYPE_CHECKING

from .net import StreamConnection
from .stream_management import ManagedSession
from ..core.router import StanzaEvent
from ..core.events import Login
from .throttle import LoginThrottle, SlidingWindow, address_key
from ..xmpp import sasl
from ..xmpp.errors import StanzaError, StreamError
from ..xmpp.jid import JID, JIDError, resourceprep
from ..xmpp.negotiation import (BIND_NS, SASL_NS, Phase, classify, decide,
                               features, phase_after_header)
from ..xmpp.namespaces import DELAY_NS
from ..xmpp.stanza import MESSAGE, STANZA_TAGS, E, error_reply, local_name, result, sub
from ..xmpp.stream import CLIENT_NS, OUR_VERSION, StreamOpened, response_version, stream_header

if TYPE_CHECKING:
    from ..config import AuthConfig, RegistrationConfig
    from ..core.hosts import Host
    from ..core.service import Xferd

log = logging.getLogger("xferd.c2s")

_numbers = itertools.count(1)

_DELAY = f"{{{DELAY_NS}}}delay"

#: failed SASL attempts a stream may retry after its first (RFC 6120 §6.4.5:
#: "at least 2 and no more than 5"); one more failure ends the stream
SASL_RETRIES = 5


class AuthThrottles:
    """Failed logins (``auth.*``) and in-band registrations (``registration.*``)
    per client address, shared by all client sessions."""

    def __init__(self, auth: "AuthConfig", registration: "RegistrationConfig"):
        self.logins = LoginThrottle(
            max_failures=auth.max_failures, window=auth.failure_window,
            max_failures_per_ip=auth.max_failures_per_ip,
            account_max_failures=auth.account_max_failures,
            account_window=auth.account_failure_window,
            trust_time=auth.trusted_address_time)
        self._registrations = (SlidingWindow(registration.max_per_address, registration.window,
                                             max_keys=100_000)
                               if registration.max_per_address > 0 else None)

    def take_registration(self, ip: str) -> float:
        """Count a registration from *ip*; if its address has used up its
        registrations, count nothing and return the seconds until it may try
        again (else 0.0)."""
        window, address = self._registrations, address_key(ip)
        if window is None or window.allow(address):
            return 0.0
        return max(window.retry_after(address), 1.0)

    def give_back_registration(self, ip: str) -> None:
        """A registration counted by :meth:`take_registration` failed (a taken
        name, a bad password): it does not use up the address's allowance."""
        if self._registrations is not None:
            self._registrations.release(address_key(ip))


class C2SSession(ManagedSession, StreamConnection):
    content_ns = CLIENT_NS

    def __init__(self, server: "Xferd", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, direct_tls: bool):
        self.number = next(_numbers)
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.ip = str(peer[0])
        c2s = server.config.c2s
        super().__init__(reader, writer, label=f"c2s#{self.number} {self.ip}:{peer[1]}",
                         max_stanza_size=c2s.max_stanza_size, max_depth=c2s.max_depth,
                         max_attributes=c2s.max_attributes, max_elements=c2s.max_elements,
                         stanza_rate=c2s.stanza_rate, stanza_burst=c2s.stanza_burst)
        self.server = server
        self.config = server.config
        self.max_output = c2s.max_output_buffer
        self.secure = direct_tls
        self.host: Host | None = None
        self.username: str | None = None      # set by SASL success
        self.jid: JID | None = None           # set by bind
        self.phase: Phase | None = None       # None until a stream header arrived
        self.stream_id = ""
        self._reply_to: str | None = None     # our header's 'to' (RFC 6120 §4.7.2)
        self._reply_version: str | None = "1.0"
        self._sasl_failures = 0               # on this connection (RFC 6120 §6.4.5)
        #: the stream's xml:lang, given to the client's stanzas that have none (RFC 6120 §8.1.5)
        self.lang: str | None = None
        self.mechanism: sasl.ServerMechanism | None = None
        self._attempted_user: str | None = None   # for the per-account throttle
        self._timeout = None
        self._counted = None                  # the ConnectionCounter we are counted in
        # presence state, kept by server/modules/presence.py (RFC 6121 §4)
        self.presence = None                  # last available <presence/>; None = unavailable
        self.priority = 0
        self.roster_requested = False         # an "interested resource" (RFC 6121 §2.1.6)
        self.directed: set[str] = set()       # JIDs sent directed presence (§4.6)
        self._init_stream_management()        # XEP-0198 (stream_management.py)

    @property
    def available(self) -> bool:
        return self.presence is not None

    def __repr__(self):
        return f"<c2s#{self.number} {self.jid or self.ip}>"

    # -- connection life cycle -------------------------------------------------
    async def run(self) -> None:
        per_ip = self.server.c2s_per_ip
        if not per_ip.open(self.ip):
            await self.refuse("policy-violation", "too many connections from your address")
            return
        self._counted = per_ip
        loop = asyncio.get_running_loop()
        # from the connection on, not from the last byte: see the module docstring
        self._timeout = loop.call_later(self.config.c2s.auth_timeout, self._negotiation_timeout)
        self.server.c2s_sessions.add(self)
        await super().run()
        self.connection_gone.set()
        resumed = self.handed_over
        if resumed is not None:
            # this task goes on reading the connection, for the resumed session
            pending, self.pending = self.pending, None
            if pending is not None and pending[1]:
                log.debug("%r: %d events after <resume/> go to %r", self, len(pending[1]),
                          resumed)
            await resumed.serve(pending)
            resumed.connection_gone.set()

    async def teardown(self) -> None:
        """The connection is over; the session ends too unless it may be
        resumed (see the module docstring)."""
        if self._timeout is not None:
            self._timeout.cancel()
        if self._counted is not None:
            self._counted.close(self.ip)
            self._counted = None
        self.server.c2s_sessions.discard(self)
        if self.handed_over is not None or self._taken_over:
            log.debug("%r: connection handed over", self)
            return
        if self.jid is None or self.host is None:
            log.debug("%r: closed", self)
            return
        await self.connection_over()

    def _negotiation_timeout(self) -> None:
        if self.phase is not Phase.READY and not self.closing:
            log.info("%r: negotiation timeout", self)
            self.stream_error("connection-timeout", "authentication took too long")

    def send_header(self) -> None:
        self.stream_id = secrets.token_urlsafe(12)
        domain = self.host.domain if self.host else next(iter(self.server.hosts))
        self.send_raw(stream_header(from_=domain, to=self._reply_to, id=self.stream_id,
                                    version=self._reply_version))
        self.header_sent = True

    # -- negotiation ----------------------------------------------------------------
    def on_header(self, opened: StreamOpened) -> None:
        host = self.server.hosts.get((opened.to or "").lower())
        self._reply_to = _bare_or_none(opened.from_)
        self._reply_version = response_version(opened.version)
        self.lang = opened.attrs.get("lang") or None
        if self.host is not None and host is not self.host:
            raise StreamError("host-unknown", "the restarted stream names another host")
        self.host = host
        self.send_header()
        if host is None:
            raise StreamError("host-unknown", f"{opened.to!r} is not served here"
                              if opened.to else "the stream header has no 'to'")
        if self._reply_version is None:
            raise StreamError("unsupported-version",
                              "XMPP %d.%d is required" % OUR_VERSION)
        self.phase = phase_after_header(secure=self.secure,
                                        require_tls=self.config.c2s.require_encryption,
                                        authenticated=self.username is not None)
        self.send(features(self.phase, secure=self.secure, mechanisms=self._mechanisms(),
                           registration=self._registration_open(),
                           extra=tuple(host.stream_features)))

    def _mechanisms(self) -> list[str]:
        mechanisms = list(sasl.MECHANISMS_SCRAM)
        if self.secure and self.config.auth.allow_plain:
            mechanisms.append("PLAIN")          # never offered without TLS
        return mechanisms

    def _registration_open(self) -> bool:
        return bool(self.host and self.host.config.registration and self.secure)

    async def on_element(self, el) -> None:
        rule = decide(self.phase, classify(el))
        self.phase = rule.then
        await getattr(self, f"on_{rule.action}")(el)
        if self.sm is not None and el.tag in STANZA_TAGS:
            self.sm.handled_one()           # XEP-0198 §4: handled, whatever came of it

    async def on_peer_stream_error(self, el) -> None:
        """The client ended the stream with an error (RFC 6120 §4.9.1.1): we
        close ours with ``</stream:stream>`` and answer nothing else (§4.4)."""
        condition = next((local_name(c) for c in el if local_name(c) != "text"),
                         "undefined-condition")
        log.info("%r: the client ended the stream: %s", self, condition)
        self.close()

    async def on_starttls(self, el) -> None:
        await self.accept_starttls(self.server.tls.context)

    def restart(self) -> None:
        super().restart()
        self.phase = None

    # SASL (RFC 6120 §6.4) .......................................................
    async def on_sasl_encryption_required(self, el) -> None:
        self._sasl_failure("encryption-required", "use STARTTLS before authenticating")

    async def on_sasl_start(self, el) -> None:
        name = el.get("mechanism", "")
        if name not in self._mechanisms():
            if name == "PLAIN" and not self.secure:
                return self._sasl_failure("encryption-required", "PLAIN needs TLS")
            return self._sasl_failure("invalid-mechanism", f"{name!r} is not offered")
        self._attempted_user = None
        if self.server.auth_throttles.logins.address_refused(self.ip):
            log.info("%r: authentication refused: too many failures from %s", self, self.ip)
            return self._sasl_failure("temporary-auth-failure",
                                      "too many failed attempts; try again later")
        try:
            initial = sasl.decode_data(el.text, initial=True)
            self.mechanism = sasl.server_mechanism(name)
            step = self.mechanism.start(initial)
            await self._sasl_continue(step)
        except sasl.SaslFailure as failure:
            self._sasl_failed(failure)

    async def on_sasl_step(self, el) -> None:
        try:
            if self.mechanism is None:
                raise sasl.SaslFailure("malformed-request", "no exchange in progress")
            step = self.mechanism.step(sasl.decode_data(el.text))
            await self._sasl_continue(step)
        except sasl.SaslFailure as failure:
            self._sasl_failed(failure)

    async def on_sasl_abort(self, el) -> None:
        self.mechanism = None
        self._sasl_failure("aborted")

    async def _sasl_continue(self, step) -> None:
        while isinstance(step, sasl.NeedCredentials):
            self._attempted_user = step.username
            # refused before any password check: the answer tells nothing about it
            refusal = self.server.auth_throttles.logins.refusal(
                self._account_key(step.username), self.ip)
            if refusal is not None:
                log.info("%r: authentication as %s refused: %s", self,
                         self._account_key(step.username), refusal)
                raise sasl.SaslFailure("temporary-auth-failure",
                                       "too many failed attempts; try again later")
            storage = self.server.storage
            if isinstance(self.mechanism, sasl.PlainServer):
                # all of them: PLAIN checks the password against whichever the
                # account has and may renew them (sasl.PlainServer.renewed)
                stored = {}
                for mech in sasl.MECHANISMS_SCRAM:
                    creds = await storage.get_credentials(self.host.domain, step.username, mech)
                    if creds is not None:
                        stored[mech] = creds
                step = self.mechanism.provide_all(stored)
            else:
                step = self.mechanism.provide(await storage.get_credentials(
                    self.host.domain, step.username, self.mechanism.wants))
        if isinstance(self.mechanism, sasl.PlainServer) and self.mechanism.renewed:
            await self._renew_credentials(step.username, self.mechanism)
        if isinstance(step, sasl.Challenge):
            self.phase = Phase.SASL
            self.send(E(f"{{{SASL_NS}}}challenge", text=sasl.encode_data(step.data)))
            return
        # Success
        if step.authzid and step.authzid != f"{step.username}@{self.host.domain}":
            raise sasl.SaslFailure("invalid-authzid", "you may only act as yourself")
        # modules may still refuse the account (e.g. it moved: XEP-0015)
        await self.host.events.fire("login", Login(self, step.username))
        self.server.auth_throttles.logins.succeeded(self._account_key(step.username), self.ip)
        self.username = step.username
        self.mechanism = None
        log.info("%r: authenticated as %s@%s", self, step.username, self.host.domain)
        self.send(E(f"{{{SASL_NS}}}success",
                    text=sasl.encode_data(step.data) if step.data is not None else None))
        self.restart()

    async def _renew_credentials(self, username: str, plain: sasl.PlainServer) -> None:
        """Store the keys a PLAIN login derived (missing SCRAM-SHA-256 keys, new
        salts for salts with a zero byte) unless the account's keys changed meanwhile."""
        changed = sorted(mech for mech, creds in plain.renewed.items()
                         if plain.checked.get(mech) != creds)
        if await self.server.storage.replace_credentials(self.host.domain, username,
                                                         plain.checked, plain.renewed):
            log.info("%r: %s@%s: %s keys renewed from this PLAIN login", self, username,
                     self.host.domain, ", ".join(changed))
        else:
            log.info("%r: %s@%s: keys changed during this PLAIN login: not renewed", self,
                     username, self.host.domain)

    def _account_key(self, username: str) -> str:
        return f"{username}@{self.host.domain}"

    def _sasl_failed(self, failure: sasl.SaslFailure) -> None:
        # an administrator reading the log sees why a user cannot log in (a
        # throttle's refusal was logged where it was decided, with its reason)
        if failure.condition != "temporary-auth-failure":
            log.info("%r: authentication%s failed: %s%s", self,
                     f" as {self._attempted_user}@{self.host.domain}"
                     if self._attempted_user else "",
                     failure.condition, f" ({failure.text})" if failure.text else "")
        if failure.condition == "not-authorized":
            self.server.auth_throttles.logins.failed(
                self._account_key(self._attempted_user) if self._attempted_user else None,
                self.ip)
        self.mechanism = None
        self._sasl_failure(failure.condition, failure.text)

    def _sasl_failure(self, condition: str, text: str | None = None) -> None:
        """Send ``<failure/>``. RFC 6120 §6.4.5: after the retries we allow
        (:data:`SASL_RETRIES`) have failed too, the stream ends with
        ``<policy-violation/>`` — the condition the RFC says SHOULD be used."""
        self.phase = Phase.AUTH if self.phase is not Phase.TLS else Phase.TLS
        failure = E(f"{{{SASL_NS}}}failure")
        sub(failure, f"{{{SASL_NS}}}{condition}")
        if text:
            sub(failure, f"{{{SASL_NS}}}text", text=text)
        self.send(failure)
        self._sasl_failures += 1
        if self._sasl_failures > SASL_RETRIES:
            self.stream_error("policy-violation",
                              f"{self._sasl_failures} failed authentication attempts")

    # In-band registration before login (XEP-0077 §3) ................................
    async def on_register(self, el) -> None:
        host = self.host
        name = f"iq-{el.get('type')}/unauthenticated/jabber:iq:register:query"
        event = StanzaEvent(el, self, host, host.jid, None, self.server.router)
        try:
            if el.get("to") not in (None, host.domain):
                raise StanzaError("service-unavailable", "log in to talk to other domains")
            if not self._registration_open() or not await host.events.fire(name, event):
                raise StanzaError("service-unavailable", "in-band registration is disabled")
        except StanzaError as err:
            self.send(error_reply(el, err))

    # Resource binding (RFC 6120 §7) ..........................................................
    async def on_bind(self, el) -> None:
        if el.get("type") != "set":
            self.phase = Phase.BIND
            return self.send(error_reply(el, StanzaError("bad-request", "bind with type='set'")))
        requested = el[0].findtext(f"{{{BIND_NS}}}resource")
        try:
            resource = resourceprep(requested) if requested else secrets.token_hex(6)
        except JIDError as exc:
            self.phase = Phase.BIND
            return self.send(error_reply(el, StanzaError("bad-request", f"resource: {exc}")))
        self.jid = JID(self.username, self.host.domain, resource)
        self.tracer.label += f" {self.jid}"
        replaced = self.host.add_session(self)
        if replaced is not None:
            # RFC 6120 §7.7.2.2: we let the newest session win
            log.info("%r replaces %r", self, replaced)
            if replaced.hibernating:
                await replaced.end_session("its resource was bound again")
            else:
                replaced.stream_error("conflict", "replaced by a new connection")
        if self._timeout is not None:
            self._timeout.cancel()
        bind = E(f"{{{BIND_NS}}}bind")
        sub(bind, f"{{{BIND_NS}}}jid", text=str(self.jid))
        self.send(result(el, bind))

    async def on_bind_again(self, el) -> None:
        self.send(error_reply(el, StanzaError("not-allowed", "a resource is already bound")))

    async def on_session(self, el) -> None:
        self.send(result(el))           # RFC 6121 App. E: a no-op kept for old clients

    # Stanzas ...........................................................................
    async def on_stanza(self, el) -> None:
        if el.tag == MESSAGE:
            # a client does not speak for the server: a <delay/> "from" our
            # domain is ours alone (offline.py and stream management trust it)
            for delay in el.findall(_DELAY):
                if delay.get("from") == self.host.domain:
                    el.remove(delay)
        await self.server.router.from_client(self, el)


def _bare_or_none(address: str | None) -> str | None:
    """The bare JID of the client's header ``from`` for our header's ``to``
    (RFC 6120 §4.7.2); None when there is none or it is no JID."""
    if not address:
        return None
    try:
        return str(JID.parse(address).bare)
    except JIDError:
        return None
