"""A slixmpp client that reads its account's archive with slixmpp's own XEP-0313
plugin (xep_0313 over xep_0059 RSM): what a MAM client sees of a conversation."""

from __future__ import annotations

from slixmpp import JID

from tests.harness import Client, login

#: per page: below Prosody's limit of 50, so a long archive takes several pages
PAGE = 40


class MamClient(Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for plugin in ("xep_0030", "xep_0059", "xep_0297", "xep_0203", "xep_0313"):
            self.register_plugin(plugin)


def replace_account(jid: str, old: str, new: str) -> str:
    return new if jid == old else jid


async def conversation(client: MamClient) -> list[tuple[str, str, str, float, str]]:
    """The whole archive, oldest first: (from bare, to bare, body, stamp, archive id)."""
    seen = []
    async for message in client.plugin["xep_0313"].iterate(rsm={"max": PAGE}):
        forwarded = message["mam_result"]["forwarded"]
        inner = forwarded["stanza"]
        seen.append((JID(inner["from"]).bare, JID(inner["to"]).bare, inner["body"],
                     forwarded["delay"]["stamp"].timestamp(), message["mam_result"]["id"]))
    return seen


async def chat(sender, recipient, recipient_jid: str, body: str) -> None:
    """*sender* sends *body* to *recipient_jid*; returns once *recipient* has it
    (so it is in both archives, and the next message comes after it)."""
    sender.send_message(mto=recipient_jid, mbody=body, mtype="chat")
    while True:
        got = await recipient.messages.get()
        if got["body"] == body:
            return


async def converse(server, first: str, second: str, count: int, first_speaks) -> list:
    """Make the accounts *first* and *second* (bare JIDs, password ``pw``) on
    *server*, and let them exchange *count* chat messages: message n is sent
    by *first* when ``first_speaks(n)``, else by *second*, with the body
    ``"<sender's local part> n"``. Returns *first*'s archive as
    :func:`conversation` reads it."""
    for jid in (first, second):
        server.adduser(jid, "pw")
    one = await login(server, f"{first}/r", "pw", client_cls=MamClient)
    two = await login(server, f"{second}/r", "pw", client_cls=MamClient)
    try:
        for client in (one, two):
            client.send_presence()
        for n in range(count):
            if first_speaks(n):
                await chat(one, two, second, f"{first.split('@')[0]} {n}")
            else:
                await chat(two, one, first, f"{second.split('@')[0]} {n}")
        return await conversation(one)
    finally:
        await one.close()
        await two.close()
