"""XEP-0092 Software Version for the server itself. The operating system is
left out on purpose (§4: it helps attackers more than users)."""

from importlib import metadata

from ..core.module import Module, iq
from ..xmpp.namespaces import VERSION_NS as NS
from ..xmpp.stanza import E, sub


def _version() -> str:
    try:
        return metadata.version("xferd")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Version(Module):
    name = "version"
    features = (NS,)

    def __init__(self, host):
        super().__init__(host)
        self.version = _version()

    def hooks(self):
        return [iq("get", "host", NS, "query", self.answer)]

    async def answer(self, event) -> bool:
        query = E(f"{{{NS}}}query")
        sub(query, f"{{{NS}}}name", text="xferd")
        sub(query, f"{{{NS}}}version", text=self.version)
        await event.reply(query)
        return True


MODULE = Version
