"""XEP-0054 vcard-temp (version 1.3.0): every account may publish one vCard
that anyone can read.

- Retrieving one's own vCard (§3.1): the stored vCard, or an empty
  ``<vCard xmlns='vcard-temp'/>`` when there is none (the spec allows this or
  ``<item-not-found/>``; the empty result is what most clients expect).
- Updating one's vCard (§3.2): the whole vCard is replaced by what was sent,
  and what was sent is what is served afterwards, however empty: an empty
  ``<vCard/>`` is a vCard with nothing in it, not a deletion (the XEP defines
  none; Prosody and ejabberd store it too, and slixmpp's own vCard test
  reads another user's emptied vCard back). A set addressed to anyone else is
  ``<forbidden/>``.
- Viewing another user's vCard (§3.3): the server answers for the user with
  the stored vCard. When the user does not exist *or* has never stored one,
  the answer is the same ``<service-unavailable/>``: version 1.3.0 says so
  ("MUST be used in both cases", following RFC 6121 for a user that does
  not exist), and one condition for both keeps the vCard from telling a
  harvester which accounts exist. (Versions before 1.3 allowed
  ``<item-not-found/>``, which Prosody still sends.)
- Determining support (§4): ``vcard-temp`` is announced as a feature of the
  server and of every account (their vCards are served for them).

Not in the XEP: a vCard larger than 64 KiB (serialised) is refused with
``<not-acceptable/>`` — avatars belong in XEP-0084, not in the vCard.
The server's own vCard (an IQ to the domain) is not served.
"""

from __future__ import annotations

from ..core.module import Module, iq
from ..xmpp.errors import StanzaError
from ..xmpp.namespaces import VCARD_NS as NS
from ..xmpp.stanza import E, from_text, to_text

VCARD = f"{{{NS}}}vCard"
MAX_SIZE = 64 * 1024


class VCard(Module):
    name = "vcard"
    features = (NS,)
    account_features = (NS,)

    def hooks(self):
        return [iq("set", "self", NS, "vCard", self.update),
                iq("get", "self", NS, "vCard", self.own),
                iq("set", "bare", NS, "vCard", self.not_yours),
                iq("get", "bare", NS, "vCard", self.someone_elses)]

    async def update(self, event) -> bool:
        vcard = event.stanza[0]
        vcard.tail = None
        text = to_text(vcard)
        if len(text.encode()) > MAX_SIZE:
            raise StanzaError("not-acceptable", f"a vCard may not exceed {MAX_SIZE} bytes")
        await self.host.storage.set_vcard(self.host.domain, event.to.local, text)
        await event.reply()
        return True

    async def own(self, event) -> bool:
        stored = await self.host.storage.get_vcard(self.host.domain, event.to.local)
        await event.reply(from_text(stored) if stored is not None else E(VCARD))
        return True

    async def someone_elses(self, event) -> bool:
        # a removed account takes its vCard with it (AccountStore.delete_user),
        # so "no vCard" covers "no such user" as well (§3.3: one condition)
        stored = await self.host.storage.get_vcard(self.host.domain, event.to.local)
        if stored is None:
            raise StanzaError("service-unavailable", "no vCard")
        await event.reply(from_text(stored))
        return True

    async def not_yours(self, event) -> bool:
        raise StanzaError("forbidden", "you can only change your own vCard")


MODULE = VCard
