"""XEP-0049 Private XML Storage (version 1.2): a user keeps XML fragments on
their own server, one per ``{namespace}name``.

- Set (§2.3): the ``<query/>`` holds one or more fragments, each in a
  namespace of its own; all of them are stored in one transaction, replacing
  earlier fragments with the same qualified name. An empty query, or a child
  without a namespace of its own, is ``<not-acceptable/>``.
- Get (§2.3): the query names the fragment by an empty element. The answer
  carries the stored fragment, or that empty element echoed back when nothing
  is stored. A get without a child is ``<bad-request/>`` (the spec's "Bad
  Format" is no stanza condition; bad-request is the nearest). Several
  children in one namespace are answered together; children in different
  namespaces are ``<bad-request/>`` ("a client MUST NOT query for more than
  one namespace").
- Reserved namespaces (``jabber:*``, ``http://jabber.org/*``, ``vcard-temp``)
  are refused with ``<not-acceptable/>`` on get and set. §2.3 makes this
  optional; we refuse so that private storage can never shadow protocol data
  (the vCard lives in vcard.py, not here).
- Another user's storage (§2.3, §4): ``<forbidden/>``, the preferred one of
  the two conditions the spec allows.
- Quotas (``[im] private_max_fragments`` and ``private_max_bytes``): a set
  that would leave the account with more fragments, or more bytes of them,
  is refused whole with ``<not-acceptable/>`` (modify). XEP-0049 names no
  condition for it; RFC 6120 §8.3.3.12 has not-acceptable for a request that
  "does not meet criteria defined by the recipient or server", and modify
  says what helps: storing less. (resource-constraint, type wait, would
  tell the client to retry the same set later, which cannot succeed.)
  Neither Prosody nor ejabberd limits private storage.

Only the account's own resources reach the ``self`` events; everyone else,
local or remote, lands on ``bare``.
"""

from __future__ import annotations

from storage.api import QuotaExceeded

from ..core.module import Module, iq
from ..xmpp.errors import StanzaError
from ..xmpp.namespaces import PRIVATE_NS as NS
from ..xmpp.namespaces import VCARD_NS
from ..xmpp.stanza import E, from_text, namespace, to_text

RESERVED_PREFIXES = ("jabber:", "http://jabber.org/")
RESERVED = frozenset({VCARD_NS})


_QUOTA_TEXT = {"private_max_fragments": "private storage holds at most %d fragments",
               "private_max_bytes": "private storage holds at most %d bytes"}


def _check_namespace(ns: str | None) -> None:
    if ns is None:
        raise StanzaError("not-acceptable", "each fragment needs a namespace of its own")
    if ns in RESERVED or ns.startswith(RESERVED_PREFIXES):
        raise StanzaError("not-acceptable", f"{ns} is a reserved namespace")


def _text(fragment) -> str:
    """The fragment as stored text, without the whitespace that followed it."""
    fragment.tail = None
    return to_text(fragment)


class Private(Module):
    name = "private"
    features = (NS,)

    def hooks(self):
        return [iq("set", "self", NS, "query", self.store),
                iq("get", "self", NS, "query", self.fetch),
                iq("set", "bare", NS, "query", self.someone_else),
                iq("get", "bare", NS, "query", self.someone_else)]

    async def store(self, event) -> bool:
        query = event.stanza[0]
        if len(query) == 0:
            raise StanzaError("not-acceptable", "nothing to store")
        fragments = {}
        for child in query:
            _check_namespace(namespace(child))
            fragments[child.tag] = _text(child)     # lxml tags are "{ns}name"
        im = self.host.global_config.im
        try:
            await self.host.storage.set_private(self.host.domain, event.to.local, fragments,
                                                max_fragments=im.private_max_fragments,
                                                max_bytes=im.private_max_bytes)
        except QuotaExceeded as exc:
            raise StanzaError("not-acceptable", _QUOTA_TEXT[exc.quota] % exc.limit) from None
        await event.reply()
        return True

    async def fetch(self, event) -> bool:
        wanted = list(event.stanza[0])
        if not wanted:
            raise StanzaError("bad-request", "name the fragment to retrieve")
        namespaces = {namespace(child) for child in wanted}
        if len(namespaces) > 1:
            raise StanzaError("bad-request", "ask for one namespace at a time")
        _check_namespace(namespaces.pop())
        answer = E(f"{{{NS}}}query")
        for child in wanted:
            stored = await self.host.storage.get_private(self.host.domain, event.to.local,
                                                         child.tag)
            answer.append(from_text(stored) if stored is not None else E(child.tag))
        await event.reply(answer)
        return True

    async def someone_else(self, event) -> bool:
        raise StanzaError("forbidden", "private XML belongs to its owner alone")


MODULE = Private
