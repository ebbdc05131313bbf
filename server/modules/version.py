"""XEP-0092 Software Version for the server itself. The operating system is
left out on purpose (§4: it helps attackers more than users)."""

from importlib import metadata

from ..xmpp.stanza import E, sub

NS = "jabber:iq:version"


def _version() -> str:
    try:
        return metadata.version("xferd")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def setup(host) -> None:
    version = _version()

    async def answer(event) -> bool:
        query = E(f"{{{NS}}}query")
        sub(query, f"{{{NS}}}name", text="xferd")
        sub(query, f"{{{NS}}}version", text=version)
        await event.reply(query)
        return True

    host.events.on(f"iq-get/host/{NS}:query", answer)
    host.features.add(NS)
