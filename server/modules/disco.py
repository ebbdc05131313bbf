"""XEP-0030 Service Discovery (version 2.5) for the domain and its accounts.

The domain (§3.1, §4.1): identity server/im and the features that the loaded
modules announced in ``host.features``, so the list always matches what is
enabled. No items yet; components would be listed there.

An account's bare JID, as the server answers for it (§3.1; the "account"
category of the XMPP Registrar): identity account/registered plus
``host.account_identities`` (e.g. PEP's pubsub/pep), features disco#info,
disco#items and ``host.account_features``. Items of an account are an empty
list — the PEP module may answer with nodes instead. An account that does not
exist gets ``<service-unavailable/>`` (RFC 6121 §8.5.1), as does any other IQ
to it. A ``node`` we do not know is ``<item-not-found/>`` (§3.3, §4.2).
"""

from ..core.module import Module, iq
from ..xmpp.errors import StanzaError
from ..xmpp.namespaces import DISCO_INFO_NS as INFO
from ..xmpp.namespaces import DISCO_ITEMS_NS as ITEMS
from ..xmpp.stanza import E, sub


def _info(identities, features):
    query = E(f"{{{INFO}}}query")
    for attrs in identities:
        sub(query, f"{{{INFO}}}identity", attrs)
    for feature in sorted(features):
        sub(query, f"{{{INFO}}}feature", {"var": feature})
    return query


def _no_node(event) -> None:
    node = event.stanza[0].get("node")
    if node:
        raise StanzaError("item-not-found", f"no node {node!r}")


class Disco(Module):
    name = "disco"
    features = (INFO, ITEMS)

    def hooks(self):
        return [iq("get", "host", INFO, "query", self.domain_info),
                iq("get", "host", ITEMS, "query", self.domain_items),
                # "self" (one's own account) falls back to "bare" in the router
                iq("get", "bare", INFO, "query", self.account_info),
                iq("get", "bare", ITEMS, "query", self.account_items)]

    async def domain_info(self, event) -> bool:
        _no_node(event)
        identity = {"category": "server", "type": "im", "name": "xferd"}
        await event.reply(_info([identity], self.host.features))
        return True

    async def domain_items(self, event) -> bool:
        _no_node(event)
        await event.reply(E(f"{{{ITEMS}}}query"))
        return True

    async def account_info(self, event) -> bool:
        await self._account_exists(event)
        _no_node(event)
        kinds = {("account", "registered")} | self.host.account_identities
        identities = [{"category": c, "type": t} for c, t in sorted(kinds)]
        await event.reply(_info(identities, {INFO, ITEMS} | self.host.account_features))
        return True

    async def account_items(self, event) -> bool:
        await self._account_exists(event)
        _no_node(event)
        await event.reply(E(f"{{{ITEMS}}}query"))
        return True

    async def _account_exists(self, event) -> None:
        if not await self.host.storage.user_exists(self.host.domain, event.to.local):
            raise StanzaError("service-unavailable")


MODULE = Disco
