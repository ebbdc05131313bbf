"""XEP-0199 XMPP Ping: the server answers pings addressed to it (§4.2) and,
as the account's server, pings to the user's own bare JID."""

NS = "urn:xmpp:ping"


def setup(host) -> None:
    async def pong(event) -> bool:
        await event.reply()
        return True

    host.events.on(f"iq-get/host/{NS}:ping", pong)
    host.events.on(f"iq-get/self/{NS}:ping", pong)
    host.features.add(NS)
