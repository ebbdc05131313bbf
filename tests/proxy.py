"""A TCP proxy the tests control: it forwards every connection to a target
port until :meth:`Proxy.cut` aborts both sides at once — what a client sees
when its network goes away (no ``</stream:stream>``, no TLS close_notify)."""

from __future__ import annotations

import asyncio


class Proxy:
    """``await Proxy.start(port)``: listens on a free loopback port
    (:attr:`port`) and forwards to *port*."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    async def start(cls, target_port: int) -> "Proxy":
        self = cls(target_port)
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1",
                                                                     self.target_port)
        self._links.append((client_writer, server_writer))
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            task = asyncio.create_task(_pump(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def cut(self) -> None:
        """Abort every forwarded connection, both sides, without a goodbye."""
        for client_writer, server_writer in self._links:
            client_writer.transport.abort()
            server_writer.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        self.cut()
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if not writer.is_closing():
            writer.close()
