"""A small asyncio XMPP client on the same sans-IO core as the server.

Used by ``xferd migrate`` (and later ``xferd transfer`` and the benchmark's
load generator)::

    client = await Client.connect("alice@example.org", password, cafile="ca.pem")
    items = await client.roster()
    await client.close()

``connection.py`` negotiates and dispatches, ``account.py`` holds the
requests on one's own account, ``archive.py`` reads one's message archive
(XEP-0313) and hands it to an xferd, ``resolve.py`` finds the server (SRV).
"""

from .account import Client, DiscoItem, RosterItem
from .connection import ClientError, Connection, IQError, IQTimeout, stanza_error, tls_context

__all__ = ["Client", "ClientError", "Connection", "DiscoItem", "IQError", "IQTimeout",
           "RosterItem", "stanza_error", "tls_context"]
