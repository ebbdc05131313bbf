"""XEP-0199 XMPP Ping: the server answers pings addressed to it (§4.2) and,
as the account's server, pings to the user's own bare JID."""

from ..core.module import Module, iq

NS = "urn:xmpp:ping"


class Ping(Module):
    name = "ping"
    features = (NS,)

    def hooks(self):
        return [iq("get", "host", NS, "ping", self.pong),
                iq("get", "self", NS, "ping", self.pong)]

    async def pong(self, event) -> bool:
        await event.reply()
        return True


MODULE = Ping
