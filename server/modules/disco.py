"""XEP-0030 Service Discovery for the domain: identity and the features that
the loaded modules announced in ``host.features`` (so the list always matches
what is enabled). No items yet; components would be listed there."""

from ..xmpp.errors import StanzaError
from ..xmpp.stanza import E, sub

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"


def setup(host) -> None:
    host.features.update({INFO, ITEMS})

    async def info(event) -> bool:
        node = event.stanza[0].get("node")
        if node:
            raise StanzaError("item-not-found", f"no node {node!r}")
        query = E(f"{{{INFO}}}query")
        sub(query, f"{{{INFO}}}identity", {"category": "server", "type": "im", "name": "xferd"})
        for feature in sorted(host.features):
            sub(query, f"{{{INFO}}}feature", {"var": feature})
        await event.reply(query)
        return True

    async def items(event) -> bool:
        node = event.stanza[0].get("node")
        if node:
            raise StanzaError("item-not-found", f"no node {node!r}")
        await event.reply(E(f"{{{ITEMS}}}query"))
        return True

    host.events.on(f"iq-get/host/{INFO}:query", info)
    host.events.on(f"iq-get/host/{ITEMS}:query", items)
