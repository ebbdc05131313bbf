"""One client connection on the sans-IO core (RFC 6120 §4–§8).

:meth:`Connection.connect` walks the client's half of the negotiation: TCP
(or TLS from the first byte, XEP-0368) → stream header → STARTTLS (§5) →
SASL (§6: SCRAM-SHA-256, SCRAM-SHA-1, PLAIN — PLAIN never without TLS, and
there is no "without TLS": a server that offers no STARTTLS is refused) →
stream restart → resource binding (§7) → optionally initial presence.
Failures raise :class:`ClientError` with a condition and a readable text.

The certificate is checked against *cafile*, or the system store (plus
*local_ca*, the local CA a caller trusts for its own domains).
``verify=False`` switches the check off: for tests and development only —
anyone on the path could then read the password.

Afterwards a reader task dispatches what arrives: IQ results and errors
complete :meth:`request`; IQ get/set addressed to us are answered with
``<service-unavailable/>`` (§8.4), except roster pushes (RFC 6121 §2.1.6),
which get a result; messages, presence and roster pushes go to the callbacks
registered with :meth:`on_stanza`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from typing import Callable, Iterable

from ..xmpp.errors import StanzaError, StreamError
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import (BIND_NS, CLIENT_NS, ROSTER_NS, SASL_NS, SESSION_NS,
                               STANZA_ERRORS_NS, STREAM_ERRORS_NS, STREAMS_NS, TLS_NS)
from ..xmpp.sasl import SaslFailure, ScramClient, decode_data, encode_data, plain_client
from ..xmpp.stanza import (IQ, MESSAGE, PRESENCE, E, error_reply, iq, local_name, namespace,
                           new_id, result, sub)
from ..xmpp.stream import (STREAM_FOOTER, Element, StreamClosed, StreamOpened,
                           StreamParser, serialize, stream_header)
from .resolve import DIRECT_TLS_PORT, STARTTLS_PORT, client_targets

log = logging.getLogger("xferd.client")

DEFAULT_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
READ_SIZE = 64 * 1024


class ClientError(Exception):
    """The connection or a request failed: *condition* names why (an RFC 6120
    stream, SASL or stanza condition, or one of ours such as ``tls-failure``)."""

    #: what the user can do about it, if the caller knows (e.g. which option trusts a CA)
    hint: str | None = None

    def __init__(self, condition: str, text: str | None = None):
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


class IQError(ClientError):
    """An IQ came back as ``type='error'`` (RFC 6120 §8.3); *element* is the reply."""

    def __init__(self, condition: str, text: str | None = None, element=None):
        super().__init__(condition, text)
        self.element = element

    @classmethod
    def from_reply(cls, reply) -> "IQError":
        condition, text = stanza_error(reply)
        return cls(condition, text, reply)


class IQTimeout(IQError):
    """No answer in time (condition ``timeout``, not an RFC condition)."""


def stanza_error(stanza) -> tuple[str, str | None]:
    """(condition, text) of an error stanza (RFC 6120 §8.3.2)."""
    condition, text = "undefined-condition", None
    err = stanza.find(f"{{{CLIENT_NS}}}error")
    for child in err if err is not None else ():
        if namespace(child) != STANZA_ERRORS_NS:
            continue
        if local_name(child) == "text":
            text = child.text
        elif condition == "undefined-condition":
            condition = local_name(child)
    return condition, text


def tls_context(cafile: str | None = None, verify: bool = True,
                local_ca: str | None = None) -> ssl.SSLContext:
    """Client TLS: the server's certificate checked against *cafile*, or else the
    system store and *local_ca* (a CA whose name constraints limit it to the
    local domains: see server/io/local_ca.py)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if local_ca and not cafile:
        ctx.load_verify_locations(cafile=local_ca)
    if cafile:
        # "trust these certificates": a server's own certificate given as cafile is
        # trusted as it is, even if a CA issued it (not only self-signed ones)
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Connection:
    """A negotiated client stream. Build with :meth:`connect`."""

    def __init__(self, account: JID, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.jid = account                   # the full JID once bound
        self._reader, self._writer = reader, writer
        self._parser = StreamParser(CLIENT_NS)
        self._events: deque = deque()
        self._pending: dict[str, tuple[asyncio.Future, str | None]] = {}
        self._handlers: list[Callable] = []
        self._task: asyncio.Task | None = None
        self._closing = False
        #: resolves with the ClientError that ended the connection
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()

    @property
    def domain(self) -> str:
        return self.jid.domain

    # -- connecting --------------------------------------------------------------------------
    @classmethod
    async def connect(cls, jid, password: str, *, host: str | None = None,
                      port: int | None = None, direct_tls: bool = False,
                      cafile: str | None = None, verify: bool = True,
                      local_ca: str | None = None, mechanisms=DEFAULT_MECHANISMS,
                      resource: str | None = None, presence: bool = False,
                      timeout: float = 30.0):
        """Log in as *jid* (``user@domain``); see the module docstring.

        Without *host* and *port* the server is found by DNS SRV (which also
        says whether to use direct TLS); with either, *direct_tls* decides.
        """
        try:
            account = jid if isinstance(jid, JID) else JID.parse(jid)
        except JIDError as exc:
            raise ClientError("jid-malformed", f"{jid!r}: {exc}") from None
        if account.local is None:
            raise ClientError("jid-malformed", f"{jid!r} is not user@domain")
        tls = tls_context(cafile, verify, local_ca)
        if host is not None or port is not None:
            targets = [(host or account.domain,
                        port or (DIRECT_TLS_PORT if direct_tls else STARTTLS_PORT), direct_tls)]
        else:
            targets = await client_targets(account.domain)
        reader, writer, secure = await _open(targets, tls, account.domain, timeout)
        self = cls(account.bare, reader, writer)
        try:
            await asyncio.wait_for(self._negotiate(password, secure, tls, mechanisms, resource),
                                   timeout)
        except asyncio.TimeoutError:
            self._abort()
            raise ClientError("connection-timeout",
                              f"no answer from {account.domain} within {timeout:g} s") from None
        except ssl.SSLError as exc:
            self._abort()
            raise ClientError("tls-failure", f"{account.domain}: {exc}") from None
        except (ConnectionError, OSError) as exc:
            self._abort()
            raise ClientError("connection-closed", f"{account.domain}: {exc}") from None
        except BaseException:
            self._abort()
            raise
        self._task = asyncio.get_running_loop().create_task(self._run())
        if presence:
            self.presence()
        log.info("logged in as %s", self.jid)
        return self

    async def _negotiate(self, password, secure, tls, mechanisms, resource) -> None:
        features = await self._open_stream(secure)
        if not secure:
            if features.find(f"{{{TLS_NS}}}starttls") is None:
                raise ClientError("encryption-required",
                                  f"{self.domain} does not offer STARTTLS")
            self._write(E(f"{{{TLS_NS}}}starttls"))
            answer = await self._next_element()
            if answer.tag != f"{{{TLS_NS}}}proceed":
                raise ClientError("tls-failure", f"{self.domain} refused STARTTLS")
            if self._events or len(getattr(self._reader, "_buffer", b"")):
                raise ClientError("tls-failure", "data arrived before the TLS handshake")
            await self._writer.start_tls(tls, server_hostname=self.domain)
            features = await self._open_stream(True)
        await self._authenticate(features, password, mechanisms)
        features = await self._open_stream(True)
        await self._bind(features, resource)

    async def _open_stream(self, secure: bool):
        """Send our header on a fresh stream; return the server's features (§4.3)."""
        self._parser = StreamParser(CLIENT_NS)
        self._events.clear()
        self._writer.write(stream_header(
            to=self.domain, from_=str(self.jid.bare) if secure else None).encode())
        event = await self._next_event()
        if not isinstance(event, StreamOpened):
            raise ClientError("bad-format", "the server did not open a stream")
        features = await self._next_element()
        if features.tag != f"{{{STREAMS_NS}}}features":
            raise ClientError("bad-format", f"expected stream features, got <{features.tag}>")
        return features

    async def _authenticate(self, features, password: str, mechanisms) -> None:
        """SASL (RFC 6120 §6.4): the first of *mechanisms* the server offers."""
        offered = [m.text for m in features.iterfind(
            f"{{{SASL_NS}}}mechanisms/{{{SASL_NS}}}mechanism")]
        choice = next((m for m in mechanisms if m in offered), None)
        if choice is None:
            raise ClientError("invalid-mechanism", f"{self.domain} offers {offered or 'none'}, "
                                                   f"we allow {list(mechanisms)}")
        scram = None
        try:
            if choice == "PLAIN":
                initial = plain_client(self.jid.local, password)
            else:
                scram = ScramClient(choice, self.jid.local, password)
                initial = scram.first()
            self._write(E(f"{{{SASL_NS}}}auth", {"mechanism": choice}, text=encode_data(initial)))
            verified = scram is None
            answered = False
            while True:
                el = await self._next_element()
                name = local_name(el) if namespace(el) == SASL_NS else None
                if name == "challenge" and scram is not None and not answered:
                    answered = True
                    response = scram.final(decode_data(el.text))
                elif name == "challenge" and scram is not None and not verified:
                    scram.verify(decode_data(el.text))        # additional data as a challenge
                    verified, response = True, b""
                elif name == "success":
                    data = decode_data(el.text)
                    if data and not verified:
                        scram.verify(data)
                        verified = True
                    if not verified:
                        raise ClientError("not-authorized",
                                          "the server did not prove it knows the password")
                    return
                elif name == "failure":
                    condition = next((local_name(c) for c in el if local_name(c) != "text"),
                                     "not-authorized")
                    text = el.findtext(f"{{{SASL_NS}}}text")
                    raise ClientError(condition, text or f"{self.jid} could not log in "
                                                         f"with {choice}")
                else:
                    raise ClientError("malformed-request", f"unexpected <{el.tag}> during SASL")
                self._write(E(f"{{{SASL_NS}}}response", text=encode_data(response)))
        except SaslFailure as exc:
            raise ClientError(exc.condition, exc.text) from None

    async def _bind(self, features, resource: str | None) -> None:
        """Resource binding (§7), and the legacy session when it is not optional."""
        if features.find(f"{{{BIND_NS}}}bind") is None:
            raise ClientError("bad-format", "the server offers no resource binding")
        bind = E(f"{{{BIND_NS}}}bind")
        if resource:
            sub(bind, f"{{{BIND_NS}}}resource", text=resource)
        answer = await self._negotiation_iq(iq("set", payload=bind))
        text = answer.findtext(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
        try:
            self.jid = JID.parse(text or "")
        except JIDError:
            raise ClientError("bad-format", f"the server bound a bad JID {text!r}") from None
        session = features.find(f"{{{SESSION_NS}}}session")
        if session is not None and session.find(f"{{{SESSION_NS}}}optional") is None:
            await self._negotiation_iq(iq("set", payload=E(f"{{{SESSION_NS}}}session")))

    async def _negotiation_iq(self, request):
        self._write(request)
        while True:
            answer = await self._next_element()
            if answer.tag == IQ and answer.get("id") == request.get("id"):
                if answer.get("type") == "error":
                    raise IQError.from_reply(answer)
                return answer

    # -- reading ---------------------------------------------------------------------------
    async def _next_event(self):
        while not self._events:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise ClientError("connection-closed", f"{self.domain} closed the connection")
            try:
                self._events.extend(self._parser.feed(data))
            except StreamError as exc:
                raise ClientError(exc.condition, f"bad XML from {self.domain}: {exc.text}") \
                    from None
        return self._events.popleft()

    async def _next_element(self):
        """The next top-level element; a stream error or the end raises."""
        event = await self._next_event()
        if isinstance(event, StreamClosed):
            raise ClientError("connection-closed", f"{self.domain} ended the stream")
        if not isinstance(event, Element):
            raise ClientError("bad-format", "unexpected stream header")
        el = event.element
        if el.tag == f"{{{STREAMS_NS}}}error":
            condition = next((local_name(c) for c in el if namespace(c) == STREAM_ERRORS_NS
                              and local_name(c) != "text"), "undefined-condition")
            raise ClientError(condition, el.findtext(f"{{{STREAM_ERRORS_NS}}}text")
                              or f"stream error from {self.domain}")
        return el

    async def _run(self) -> None:
        reason = ClientError("connection-closed", "closed")
        try:
            while True:
                self._dispatch(await self._next_element())
        except ClientError as exc:
            reason = exc
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            reason = ClientError("connection-closed", str(exc))
        except asyncio.CancelledError:
            pass
        finally:
            if not self._closing:
                log.info("%s: connection ended: %s", self.jid, reason)
            self._finish(reason)

    def _dispatch(self, el) -> None:
        if el.tag == IQ:
            kind = el.get("type")
            if kind in ("result", "error"):
                self._answer(el)
            elif kind in ("get", "set"):
                self._incoming_request(el)
            return
        if el.tag in (MESSAGE, PRESENCE):
            self._notify(el)

    def _answer(self, el) -> None:
        waiting = self._pending.get(el.get("id") or "")
        if waiting is None:
            log.debug("%s: unexpected IQ %s id=%s", self.jid, el.get("type"), el.get("id"))
            return
        future, to = waiting
        if not self._from_matches(to, el.get("from")):
            log.warning("%s: ignoring an answer from %s to a request to %s", self.jid,
                        el.get("from"), to)
            return
        if not future.done():
            future.set_result(el)

    def _incoming_request(self, el) -> None:
        payload = el[0] if len(el) else None
        push = (el.get("type") == "set" and payload is not None
                and payload.tag == f"{{{ROSTER_NS}}}query"
                and self._from_matches(None, el.get("from")))
        if push:                                            # RFC 6121 §2.1.6
            self.send(result(el))
            self._notify(el)
        else:                                               # RFC 6120 §8.4
            self.send(error_reply(el, StanzaError("service-unavailable")))

    def _notify(self, el) -> None:
        for handler in list(self._handlers):
            try:
                handler(el)
            except Exception:
                log.exception("%s: stanza handler failed", self.jid)

    def _from_matches(self, to: str | None, sender: str | None) -> bool:
        """Does a reply from *sender* answer a request sent to *to* (RFC 6120 §8.1.2.1)?"""
        own = {None, self.jid.bare, self.jid}
        expected, got = _prep(to), _prep(sender)
        if expected in own:
            return got in own
        return got == expected

    def _finish(self, reason: ClientError) -> None:
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        self._pending.clear()
        if not self.closed.done():
            self.closed.set_result(reason)
        self._abort()

    def _abort(self) -> None:
        self._closing = True
        if not self._writer.is_closing():
            self._writer.close()

    # -- API ---------------------------------------------------------------------------------
    def on_stanza(self, handler: Callable) -> Callable[[], None]:
        """Call ``handler(element)`` for every message, presence and roster push;
        returns a function that removes it."""
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    async def wait_for(self, predicate: Callable, timeout: float):
        """The next message/presence/roster push for which *predicate* is true."""
        future = asyncio.get_running_loop().create_future()

        def check(el):
            if not future.done() and predicate(el):
                future.set_result(el)
        remove = self.on_stanza(check)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            remove()

    def send(self, element) -> None:
        """Send a stanza (no ``from``: the server stamps it)."""
        if self._closing:
            raise ClientError("connection-closed", f"not connected to {self.domain}")
        self._write(element)

    async def request(self, stanza, timeout: float = 30.0):
        """Send an IQ get/set; return the result or raise IQError/IQTimeout/ClientError."""
        if not stanza.get("id"):
            stanza.set("id", new_id())
        key = stanza.get("id")
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = (future, stanza.get("to"))
        try:
            self.send(stanza)
            answer = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise IQTimeout("timeout", f"no answer from {stanza.get('to') or self.domain} "
                                       f"within {timeout:g} s") from None
        finally:
            self._pending.pop(key, None)
        if answer.get("type") == "error":
            raise IQError.from_reply(answer)
        return answer

    async def request_all(self, requests: Iterable[tuple[object, object]], *, window: int,
                          done: Callable[[object, object], None] | None = None,
                          timeout: float = 30.0) -> None:
        """:meth:`request` for each ``(key, stanza)`` of *requests*, with up to
        *window* of them in flight; ``done(key, answer)`` is called for each in
        the order sent. Waiting for every answer before the next request makes
        a bulk job cost a round trip per stanza. The first failure raises
        (IQError, …) after the requests still in flight are abandoned."""
        if window < 1:
            raise ValueError("window must be at least 1")
        flight: deque[tuple[object, asyncio.Future]] = deque()

        async def settle() -> None:
            key, answer = flight.popleft()
            answer = await answer
            if done is not None:
                done(key, answer)
        try:
            for key, stanza in requests:
                if len(flight) >= window:
                    await settle()
                flight.append((key, asyncio.ensure_future(self.request(stanza, timeout))))
            while flight:
                await settle()
        finally:
            for _, answer in flight:
                answer.cancel()
            if flight:
                await asyncio.gather(*(answer for _, answer in flight), return_exceptions=True)

    def presence(self, to: str | None = None, type: str | None = None, children=()):
        """Send a presence stanza (RFC 6121 §4) and return it."""
        stanza = E(PRESENCE, {"to": to, "type": type}, *children)
        self.send(stanza)
        return stanza

    async def drain(self) -> None:
        """Wait until the socket buffer has room again (back-pressure for bulk senders)."""
        await self._writer.drain()

    async def close(self, timeout: float = 3.0) -> None:
        """End the stream (RFC 6120 §4.4) and wait briefly for the server's end."""
        if not self._closing:
            self._writer.write(STREAM_FOOTER.encode())
            self._closing = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
        self._abort()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), timeout)
        except (Exception, asyncio.CancelledError):
            pass

    def _write(self, element) -> None:
        log.debug("%s ← %s", self.domain, element.tag)
        self._writer.write(serialize(element, stream_ns=CLIENT_NS).encode())


async def _open(targets, tls: ssl.SSLContext, domain: str, timeout: float):
    """Connect to the first target that answers; TLS at once for direct ones."""
    if not targets:
        raise ClientError("remote-server-not-found", f"{domain} offers no XMPP client service")
    problems = []
    for host, port, direct in targets:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                host, port, ssl=tls if direct else None,
                server_hostname=domain if direct else None), timeout)
            return reader, writer, direct
        except ssl.SSLError as exc:
            raise ClientError("tls-failure", f"{host}:{port}: {exc}") from None
        except (OSError, asyncio.TimeoutError) as exc:
            problems.append(f"{host}:{port}: {exc or 'timeout'}")
    raise ClientError("remote-server-not-found", f"cannot connect to {domain} "
                                                 f"({'; '.join(problems)})")


def _prep(text: str | None) -> JID | str | None:
    """The prepared JID; a malformed one stays text, which equals no JID."""
    if text is None:
        return None
    try:
        return JID.parse(text)
    except JIDError:
        return text
