"""Run one of slixmpp's itests, unchanged, against the xferd of the test session.

Usage (with the directory holding ``itests/`` on ``PYTHONPATH``)::

    python run_itest.py itests.test_ping.TestPing.test_ping
    python run_itest.py --list      # every itest's id, as slixmpp's runner finds them

The itests are written for slixmpp's CI, where the XMPP domain is also the
server's host name: ``client.connect()`` with no address resolves the domain
(SRV records if there are any, else its A record) and dials port 5222
(STARTTLS) or, with ``default_port = 5223``, direct TLS; ``test_tls_check``
then checks the peer port is 5222 or 5223. The test server is an xferd that
bound port 0. So this script gives the itests the network they expect, with
nothing of theirs changed:

- DNS: slixmpp's resolver without aiodns (slixmpp's documented fallback), so
  there are no SRV lookups and the domain resolves through the system
  (``localhost`` → 127.0.0.1), as a host name without SRV records does in
  slixmpp's CI.
- Ports: an event loop whose ``create_connection`` reaches xferd's c2s port
  when a client dials port 5222 of that host and xferd's direct TLS port for
  5223 — port forwarding, as a NAT does it: the socket still names the
  port the client dialled as its peer's.
- Trust: xferd's self-signed certificate for the domain is the CA bundle
  (``SSL_CERT_FILE``, read by OpenSSL's default verify paths, which
  slixmpp's default SSL context uses); verification stays on.

Environment: ``ITEST_HOST`` (the domain), ``ITEST_PORTS`` (``5222=PORT,5223=PORT``),
``ITEST_LOG`` (slixmpp's debug log is written there), plus what the itests
read themselves (``CI_ACCOUNT1``, ``CI_ACCOUNT1_PASSWORD``, …).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import unittest
from pathlib import Path

import slixmpp.xmlstream.resolver

HOST = os.environ.get("ITEST_HOST", "localhost")
FORWARDED = {int(dialled): int(real) for dialled, real in
             (pair.split("=") for pair in os.environ.get("ITEST_PORTS", "").split(",") if pair)}
#: the addresses the domain resolves to (getaddrinfo of ``localhost``), all forwarded
ADDRESSES = {HOST, "127.0.0.1", "::1"}


class ForwardedSocket(socket.socket):
    """A TCP socket connected through a port forward: its peer's port is the
    one that was dialled (asyncio's transports read ``peername`` from here)."""

    dialled: tuple[str, int]

    def getpeername(self):
        return self.dialled


class ForwardingLoop(asyncio.SelectorEventLoop):
    """The itests' event loop: connections to the domain's ports 5222/5223
    reach xferd's ports; every other connection is made as usual."""

    async def create_connection(self, protocol_factory, host=None, port=None, **kwargs):
        if host not in ADDRESSES or port not in FORWARDED or kwargs.get("sock") is not None:
            return await super().create_connection(protocol_factory, host, port, **kwargs)
        sock = ForwardedSocket(socket.AF_INET, socket.SOCK_STREAM)
        sock.dialled = ("127.0.0.1", port)
        sock.setblocking(False)
        try:
            await self.sock_connect(sock, ("127.0.0.1", FORWARDED[port]))
        except BaseException:
            sock.close()
            raise
        return await super().create_connection(protocol_factory, sock=sock, **kwargs)


class ForwardingPolicy(asyncio.DefaultEventLoopPolicy):
    _loop_factory = ForwardingLoop


def list_itests() -> int:
    """Print the id of every itest, found the way slixmpp's
    ``run_integration_tests.py`` finds them: each ``itests/test_*.py``
    module's ``suite``."""
    import importlib
    import itests

    def flatten(suite):
        for test in suite:
            yield from flatten(test) if isinstance(test, unittest.TestSuite) else [test]

    for path in sorted(Path(itests.__path__[0]).glob("test_*.py")):
        module = importlib.import_module(f"itests.{path.stem}")
        for test in flatten(module.suite):
            print(test.id())
    return 0


def main(test_id: str) -> int:
    slixmpp.xmlstream.resolver.AIODNS_AVAILABLE = False
    asyncio.set_event_loop_policy(ForwardingPolicy())
    logging.basicConfig(filename=os.environ["ITEST_LOG"], level=logging.DEBUG,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    suite = unittest.defaultTestLoader.loadTestsFromName(test_id)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    if not result.testsRun:
        print(f"{test_id}: no test ran", file=sys.stderr)
        return 2
    # a skip is not a pass: the parent reports it as a skip with its reason
    if result.skipped and result.wasSuccessful():
        print("ITEST-SKIPPED: " + "; ".join(reason for _, reason in result.skipped))
        return 3
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(list_itests() if sys.argv[1] == "--list" else main(sys.argv[1]))
