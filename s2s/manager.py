"""Federation, tied together: the s2s listener, the outbound routes, dialback.

``Xferd`` creates one :class:`S2S`; the router hands it every stanza for a
domain we do not serve (``send``), and inbound streams ask it to check a
dialback key with the claimed domain's authoritative server (``verify``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl

from server.io.ratelimit import ConnectionCounter

from .inbound import InboundStream
from .outbound import Route
from .resolve import Resolver

log = logging.getLogger("xferd.s2s")


class S2S:
    def __init__(self, server):
        self.server = server
        self.config = server.config.s2s
        #: XEP-0185: keys are derived from this; random unless configured
        self.secret = self.config.dialback_secret or secrets.token_hex(32)
        self.resolver = Resolver(self.config)
        self.routes: dict[tuple[str, str], Route] = {}
        self.inbound: set[InboundStream] = set()
        self.inbound_per_ip = ConnectionCounter(self.config.max_connections_per_ip)
        self.client_tls = _client_context(self.config.ca_file)
        self.listener: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        async def accept(reader, writer):
            await InboundStream(self, reader, writer).run()

        self.listener = await asyncio.start_server(accept, host=self.config.interfaces,
                                                   port=self.config.port, limit=2 ** 20)
        self.server.ports["s2s"] = self.listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
        for stream in list(self.inbound):
            stream.stream_error("system-shutdown", "the server is shutting down")
        for route in list(self.routes.values()):
            route.fail("remote-server-not-found", "the server is shutting down")
        for task in list(self._tasks):
            task.cancel()

    def route(self, local: str, remote: str) -> Route:
        key = (local, remote)
        route = self.routes.get(key)
        if route is None:
            route = self.routes[key] = Route(self, local, remote)
        return route

    def forget(self, route: Route) -> None:
        """Drop an idle route with nothing waiting: the table holds only routes
        in use, however many domains users write to (the next stanza for that
        domain makes a new route)."""
        if self.routes.get((route.local, route.remote)) is route:
            del self.routes[(route.local, route.remote)]

    def send(self, stanza, local: str, remote: str) -> None:
        """Queue *stanza* from our domain *local* for the domain *remote*."""
        self.route(local, remote).send(stanza)

    async def verify(self, *, local: str, remote: str, stream_id: str, key: str) -> str:
        """XEP-0220 §2.1.2: is *key* (for a stream to *local*) really from *remote*?"""
        return await self.route(local, remote).verify(stream_id, key)

    def track(self, task: asyncio.Task) -> None:
        """Keep a background task referenced until it ends."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _client_context(ca_file: str) -> ssl.SSLContext:
    """TLS for our outbound streams. Without a CA file, certificates are not
    checked: the peer is authenticated by dialback instead (XEP-0220 §1.2)."""
    if ca_file:
        context = ssl.create_default_context(cafile=ca_file)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["xmpp-server"])
    return context
