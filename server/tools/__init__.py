"""Client-side commands, kept apart from the server: ``xferd migrate``
(XEP-0283 with standard XMPP), ``xferd transfer`` (XEP-0015 from the
client's side), ``xferd import --as`` (re-home an export). They use the
client library in ``server/client`` and the sans-IO core, never the server."""
