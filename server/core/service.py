"""The xferd process: wires config, storage, TLS, hosts, router and listeners.

``Xferd.start()`` brings everything up in dependency order and
``Xferd.stop()`` takes it down gracefully: every client stream is closed with
``<system-shutdown/>`` before storage is closed.
"""

from __future__ import annotations

import asyncio
import logging

from s2s.manager import S2S
from storage.sqlite import SQLiteStorage

from ..io.c2s import AuthThrottles, C2SSession
from ..config import Config
from .events import Lifecycle
from .hosts import Host
from ..io.net import small_tls_buffers
from ..io.memory import Trimmer
from ..io.ratelimit import ConnectionCounter
from .router import Router
from ..io.tls import ServerTLS, certificates

log = logging.getLogger("xferd")


class Xferd:
    def __init__(self, config: Config):
        self.config = config
        self.storage = SQLiteStorage(config.storage_path, synchronous=config.storage.synchronous,
                                     max_size=config.storage.max_size)
        self.hosts: dict[str, Host] = {d: Host(d, hc, self) for d, hc in config.hosts.items()}
        self.router = Router(self)
        self.auth_throttles = AuthThrottles(config.auth, config.registration)
        #: live client connections per address (c2s.max_connections_per_ip)
        self.c2s_per_ip = ConnectionCounter(config.c2s.max_connections_per_ip)
        self.c2s_sessions: set[C2SSession] = set()
        self.tls: ServerTLS | None = None
        self.direct_tls: ServerTLS | None = None
        self.listeners: list[asyncio.base_events.Server] = []
        self.s2s: S2S | None = S2S(self) if config.s2s.enabled else None
        #: listener name → bound port (useful when the config asked for port 0)
        self.ports: dict[str, int] = {}
        self._stopped = asyncio.Event()
        self._connections: set[asyncio.Task] = set()   # one per client connection
        #: gives closed connections' freed memory back to the system (see io/memory.py)
        self.trimmer = Trimmer()

    async def start(self) -> None:
        small_tls_buffers()
        certs = certificates(self.config)
        self.tls = ServerTLS(certs)
        self.direct_tls = ServerTLS(certs, alpn=["xmpp-client"])
        await self.storage.open()
        for host in self.hosts.values():
            host.load_modules()
        c2s = self.config.c2s
        await self._listen("c2s", c2s.interfaces, c2s.port, direct_tls=False)
        if c2s.direct_tls:
            await self._listen("c2s_direct_tls", c2s.interfaces, c2s.direct_tls_port,
                               direct_tls=True)
        if self.s2s is not None:
            await self.s2s.start()
        for host in self.hosts.values():
            await host.events.fire("server-started", Lifecycle(self))  # e.g. resume transfers
        log.info("xferd serving %s; c2s on port %s, direct TLS on port %s, s2s on port %s; "
                 "data in %s", ", ".join(self.hosts), self.ports.get("c2s"),
                 self.ports.get("c2s_direct_tls", "off"), self.ports.get("s2s", "off"),
                 self.config.data_dir)

    async def _listen(self, name: str, interfaces: list[str], port: int, *, direct_tls: bool):
        async def accept(reader, writer):
            task = asyncio.current_task()
            self._connections.add(task)
            try:
                await C2SSession(self, reader, writer, direct_tls=direct_tls).run()
            finally:
                self._connections.discard(task)
                self.trimmer.connection_closed()

        server = await asyncio.start_server(
            accept, host=interfaces, port=port, limit=2 ** 20,
            ssl=self.direct_tls.context if direct_tls else None,
            ssl_handshake_timeout=30 if direct_tls else None)
        self.listeners.append(server)
        self.ports[name] = server.sockets[0].getsockname()[1]

    async def stop(self, condition: str = "system-shutdown") -> None:
        """Close listeners, end every stream with *condition*, close storage."""
        for server in self.listeners:
            server.close()
        for host in self.hosts.values():
            await host.events.fire("server-stopping", Lifecycle(self))  # e.g. flush held requests
        for session in list(self.c2s_sessions):
            session.stream_error(condition, "the server is shutting down")
        # let every session finish its teardown (unavailable presence, …) while
        # storage and federation are still there; then cut what is left
        if self._connections:
            _, late = await asyncio.wait(set(self._connections), timeout=5)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.s2s is not None:
            await self.s2s.stop()
        await self.storage.close()
        self._stopped.set()
        log.info("xferd stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
