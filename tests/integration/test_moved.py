"""XEP-0283 server-side auto-moved across s2s: every step of server/modules/moved.py's
outcome table. old.test hosts the old accounts, new.test the new ones, c.test
the contacts R whose rosters must follow (or not), with the default settings
(``[moved] old_contact = "remove"``, ``notify_contacts = true``); keep.test is a
contact's server with ``old_contact = "keep"``."""

import asyncio
import itertools

import pytest
from slixmpp.xmlstream import ET

from tests.harness import RouteTo, XferdProcess, ask, federate, listen_for, login

MOVED = "urn:xmpp:moved:1"
PUBSUB = "http://jabber.org/protocol/pubsub"
_n = itertools.count(1)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    old = XferdProcess(tmp_path_factory.mktemp("old"), domains=("old.test",))
    new = XferdProcess(tmp_path_factory.mktemp("new"), domains=("new.test",))
    c = XferdProcess(tmp_path_factory.mktemp("c"), domains=("c.test",),
                     overrides={"moved": {"verify_timeout": 3}})
    gone = XferdProcess(tmp_path_factory.mktemp("gone"), domains=("gone.test",))
    keep = XferdProcess(tmp_path_factory.mktemp("keep"), domains=("keep.test",),
                        overrides={"moved": {"verify_timeout": 3, "old_contact": "keep"}})
    servers = {"old.test": old, "new.test": new, "c.test": c, "gone.test": gone,
               "keep.test": keep}
    federate(servers)
    c.proxy_route = RouteTo(c, "gone.test")     # c.test reaches gone.test through a Proxy
    yield servers
    for proc in servers.values():
        proc.stop()


def account(proc: XferdProcess, domain: str, prefix: str) -> str:
    jid = f"{prefix}{next(_n)}@{domain}"
    proc.adduser(jid, "pw")
    return jid


async def online(proc, jid):
    client = await login(proc, f"{jid}/r", "pw")
    client.send_presence()
    await client.fetch_roster()
    return client


async def roster_item(client, jid) -> dict:
    return (await client.fetch_roster()).get(jid, {})


async def wait_item(client, jid, subscription, ask=False, timeout=10):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        item = await roster_item(client, jid)
        if item.get("subscription", "none") == subscription and \
                (item.get("ask") == "subscribe") == ask:
            return item
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{client.boundjid}: {jid} is {item}; wanted "
                                 f"{subscription} ask={ask}")
        await client.roster_pushed(deadline)        # a change comes with a push


async def wait_gone(client, jid, timeout=10):
    deadline = asyncio.get_running_loop().time() + timeout
    while jid in await client.fetch_roster():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{client.boundjid}: {jid} is still in the roster")
        await client.roster_pushed(deadline)        # the removal comes with a push


async def next_message(client, timeout=15):
    return await asyncio.wait_for(client.messages.get(), timeout)


async def subscribe(asker, asker_jid, other, other_jid):
    """asker subscribes to other, other approves: asker 'to', other 'from'."""
    asker.send_presence(pto=other_jid, ptype="subscribe")
    await other.next_presence(type="subscribe", sender=asker_jid, timeout=15)
    other.send_presence(pto=asker_jid, ptype="subscribed")
    await wait_item(other, asker_jid, "from" if (await roster_item(other, asker_jid)).get(
        "subscription") in (None, "none", "from") else "both")


async def relation(r, r_jid, old, old_jid, view: str):
    """Bring R's roster item for old to *view* (none, to, from, both)."""
    if view in ("from", "both"):
        await subscribe(old, old_jid, r, r_jid)                   # old sees R: R 'from'
    if view in ("to", "both"):
        await subscribe(r, r_jid, old, old_jid)                   # R sees old
    if view == "none":
        r.send_presence(pto=old_jid, ptype="subscribe")           # an item, no subscription
        await old.next_presence(type="subscribe", sender=r_jid, timeout=15)
        old.send_presence(pto=r_jid, ptype="unsubscribed")
    await wait_item(r, old_jid, view)


async def statement(old, new_jid, access="open", item_id="current"):
    options = ""
    if access:
        options = (f"<publish-options><x xmlns='jabber:x:data' type='submit'>"
                   f"<field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options"
                   f"</value></field><field var='pubsub#access_model'><value>{access}</value>"
                   f"</field></x></publish-options>")
    error, _ = await ask(old, "set", f"<pubsub xmlns='{PUBSUB}'><publish node='{MOVED}'>"
                                     f"<item id='{item_id}'><moved xmlns='{MOVED}'><new-jid>"
                                     f"{new_jid}</new-jid></moved></item></publish>{options}"
                                     f"</pubsub>")
    assert error is None, error


def notice(new, to, old_jid):
    presence = new.make_presence(pto=to, ptype="subscribe")
    presence.append(ET.fromstring(f"<moved xmlns='{MOVED}'><old-jid>{old_jid}</old-jid></moved>"))
    presence.send()


async def scenario(fed, view, *, access="open", state_to="new", contacts="c.test"):
    """Accounts old/new/R online, R's view of old set, old's statement published
    (pointing at new, or at *state_to* if it is another JID, or none if None);
    R's account on *contacts*."""
    old_jid = account(fed["old.test"], "old.test", "alice")
    new_jid = account(fed["new.test"], "new.test", "alice")
    r_jid = account(fed[contacts], contacts, "bob")
    old = await online(fed["old.test"], old_jid)
    new = await online(fed["new.test"], new_jid)
    r = await online(fed[contacts], r_jid)
    await relation(r, r_jid, old, old_jid, view)
    if state_to is not None:
        await statement(old, new_jid if state_to == "new" else state_to, access)
    await r.quiet(via=old)                                   # forget the set-up traffic
    return old_jid, new_jid, r_jid, old, new, r


async def manual(r, new_jid, old_jid):
    """The fallback: R gets the request itself, with <moved/> kept."""
    got = await r.next_presence(type="subscribe", sender=new_jid, timeout=15)
    assert got.xml.findtext(f"{{{MOVED}}}moved/{{{MOVED}}}old-jid") == old_jid
    assert (await roster_item(r, new_jid)).get("subscription", "none") == "none"


async def close(*clients):
    for client in clients:
        await client.close()


async def test_from_contact_is_moved(fed):
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "from")
    await r.fetch_roster()
    notice(new, r_jid, old_jid)
    await wait_item(r, new_jid, "from")
    await wait_gone(r, old_jid)
    # the new account sees R's approval: its item for R becomes 'to' …
    await wait_item(new, r_jid, "to")
    # … R never had to answer, and R does not subscribe to new (R did not see old)
    assert not [p for p in await r.quiet(via=new) if p["type"] == "subscribe"]
    assert "ask" not in await roster_item(r, new_jid)
    # old's view: R revoked old's subscription
    await wait_item(old, r_jid, "none")
    await close(old, new, r)


async def test_both_contact_is_moved_and_subscribes_to_new(fed):
    """XEP-0283 §4.4: "After authorizing the new JID, the server should revoke
    the presence subscription of the old account" and, the old JID being
    'both', "MUST also send a presence of type 'subscribe' to the new JID".
    With ``old_contact = "remove"`` the old item then goes as a roster remove
    takes it (RFC 6121 §2.5.2): R's subscription to old is cancelled too
    ('unsubscribe'), so the old account ends with R at 'none'."""
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "both")
    await roster_item(r, old_jid)
    r.update_roster(old_jid, name="Alice", groups=["Friends"])
    await r.ping_server()                   # the roster set has been handled
    notice(new, r_jid, old_jid)
    item = await wait_item(r, new_jid, "from", ask=True)
    assert item.get("name") == "Alice" and item["groups"] == ["Friends"]
    await wait_gone(r, old_jid)
    await wait_item(old, r_jid, "none")     # neither subscription is left with old
    # new is asked by R (R subscribed to old, so R subscribes to new)
    await new.next_presence(type="subscribe", sender=r_jid, timeout=15)
    new.send_presence(pto=r_jid, ptype="subscribed")
    await wait_item(r, new_jid, "both")
    await wait_item(new, r_jid, "both")
    assert set(await r.fetch_roster()) == {new_jid}
    await close(old, new, r)


async def test_a_client_without_xep0283_sees_one_entry_and_a_notice(fed):
    """What a contact whose client knows nothing of XEP-0283 (slixmpp, no
    plugin) sees of a verified move: the roster pushes (RFC 6121 §2.1.6) turn
    its contact list — the roster it fetched, with each push applied — into
    ONE entry, at the new address, with the name and groups it gave the old
    one (XEP-0283 §4.4 creates the new item; ``old_contact = "remove"``
    takes the old one away with a ``subscription='remove'`` push, §2.5.2);
    and a chat message from its own server's domain says so in plain words
    (``notify_contacts``), to each of its available clients."""
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "both")
    r.update_roster(old_jid, name="Alice", groups=["Friends", "Work"])
    await r.ping_server()                   # the roster set has been handled
    second = await login(fed["c.test"], f"{r_jid}/tablet", "pw")        # another client
    second.send_presence()
    await second.ping_server()              # its presence has been handled
    shown = await r.fetch_roster()          # what the client shows: this, plus each push
    assert set(shown) == {old_jid}
    while not r.roster_pushes.empty():
        r.roster_pushes.get_nowait()        # pushes from before the fetch
    notice(new, r_jid, old_jid)
    deadline = asyncio.get_running_loop().time() + 15
    while old_jid in shown or new_jid not in shown:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"{r_jid}'s client shows {shown}"
        push = await asyncio.wait_for(r.roster_pushes.get(), left)
        for jid, item in push["roster"]["items"].items():
            if item["subscription"] == "remove":
                shown.pop(str(jid), None)
            else:
                shown[str(jid)] = {"name": item["name"], "groups": sorted(item["groups"])}
    assert shown == {new_jid: {"name": "Alice", "groups": ["Friends", "Work"]}}
    for client in (r, second):
        message = await next_message(client)
        assert (str(message["from"]), message["type"]) == ("c.test", "chat")
        assert message["body"] == (
            f"Alice ({old_jid}) has moved to {new_jid}. Your contact list was updated: "
            f"{new_jid} replaces {old_jid}, name and groups kept.")
    assert set(await r.fetch_roster()) == {new_jid}          # the server agrees
    await close(old, new, r, second)


async def test_keep_leaves_the_old_item_as_the_xep_does_and_says_so(fed):
    """``old_contact = "keep"``: the old item stays where XEP-0283 §4.4 leaves
    it ('both' → 'to': only the old account's subscription is revoked), next
    to the new one, and the notice says that both are there now."""
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "both", contacts="keep.test")
    r.update_roster(old_jid, name="Alice")
    await r.ping_server()                   # the roster set has been handled
    notice(new, r_jid, old_jid)
    item = await wait_item(r, new_jid, "from", ask=True)
    assert item.get("name") == "Alice"
    kept = await wait_item(r, old_jid, "to")
    assert kept.get("name") == "Alice"
    await new.next_presence(type="subscribe", sender=r_jid, timeout=15)
    await wait_item(old, r_jid, "from")             # old lost R's presence, not R its own
    message = await next_message(r)
    assert (str(message["from"]), message["type"]) == ("keep.test", "chat")
    assert message["body"] == (f"Alice ({old_jid}) has moved to {new_jid}. {new_jid} was "
                               f"added to your contact list, name and groups kept; {old_jid} "
                               "stays there until you remove it.")
    assert set(await r.fetch_roster()) == {old_jid, new_jid}
    await close(old, new, r)


@pytest.mark.hostile
@pytest.mark.parametrize("view", ["absent", "none", "to"])
async def test_no_shared_presence_with_old_means_ordinary_request(fed, view):
    old_jid, new_jid, r_jid, old, new, r = await scenario(
        fed, "none" if view == "absent" else view)
    if view == "absent":
        r.update_roster(old_jid, subscription="remove")
        await r.ping_server()               # the roster set has been handled
    notice(new, r_jid, old_jid)
    await manual(r, new_jid, old_jid)
    await close(old, new, r)


@pytest.mark.hostile
@pytest.mark.parametrize("state_to", [None, "someone@else.test", "alice@new.test/phone"])
async def test_missing_or_mismatched_statement_means_ordinary_request(fed, state_to):
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "from", state_to=state_to)
    notice(new, r_jid, old_jid)
    await manual(r, new_jid, old_jid)
    await wait_item(r, old_jid, "from")                      # nothing revoked
    await close(old, new, r)


@pytest.mark.hostile
async def test_presence_model_statement_and_a_from_only_contact(fed):
    # R only shares presence with old ('from'): old does not share with R, so a
    # 'presence' node refuses R (not-authorized) → ordinary request
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "from", access="presence")
    notice(new, r_jid, old_jid)
    await manual(r, new_jid, old_jid)
    await close(old, new, r)


async def test_presence_model_statement_and_a_both_contact(fed):
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "both", access="presence")
    notice(new, r_jid, old_jid)
    await wait_item(r, new_jid, "from", ask=True)
    await close(old, new, r)


class Proxy:
    """A TCP relay that can go silent (holds every byte) or dead (hangs up
    and refuses), to make a federated server unreachable on demand."""

    def __init__(self, route: RouteTo, target_port: int):
        self.route, self.target_port = route, target_port
        self._speaking = asyncio.Event()
        self.mode = "relay"
        self.writers = []

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = value
        if value == "silent":
            self._speaking.clear()
        else:
            self._speaking.set()

    async def __aenter__(self):
        self.server = await listen_for(self.route, self._serve)
        return self

    async def __aexit__(self, *exc):
        self.kill()

    def kill(self):
        self.mode = "dead"
        self.server.close()
        for writer in self.writers:
            writer.close()

    async def _serve(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    async def _pipe(self, reader, writer):
        while data := await reader.read(65536):
            await self._speaking.wait()         # held while silent
            if self.mode == "dead":
                break
            writer.write(data)
        writer.close()


@pytest.mark.hostile
@pytest.mark.parametrize("failure", ["dead", "silent"])
async def test_unreachable_old_server_means_ordinary_request(fed, failure):
    gone = fed["gone.test"]
    async with Proxy(fed["c.test"].proxy_route, gone.s2s_port) as proxy:
        old_jid = account(gone, "gone.test", "alice")
        new_jid = account(fed["new.test"], "new.test", "alice")
        r_jid = account(fed["c.test"], "c.test", "bob")
        old = await online(gone, old_jid)
        new = await online(fed["new.test"], new_jid)
        r = await online(fed["c.test"], r_jid)
        await relation(r, r_jid, old, old_jid, "from")
        await statement(old, new_jid)
        if failure == "dead":
            proxy.kill()
        else:
            proxy.mode = "silent"
        notice(new, r_jid, old_jid)
        await manual(r, new_jid, old_jid)
        await wait_item(r, old_jid, "from")                 # nothing revoked
        await close(old, new, r)


async def test_gone_tombstone_verifies(fed):
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "from")
    await old.close()
    assert fed["old.test"].cli("deluser", old_jid).returncode == 0
    # the tombstone answers for the account …
    error, answer = await ask(r, "get", "<query xmlns='jabber:iq:version'/>", to=old_jid)
    assert error == "gone"
    assert answer.findtext("{jabber:client}error/"
                           "{urn:ietf:params:xml:ns:xmpp-stanzas}gone") == f"xmpp:{new_jid}"
    # … keeps the name from being taken again …
    again = fed["old.test"].cli("adduser", old_jid, input="pw\n")
    assert again.returncode == 1 and f"moving to {new_jid}" in again.stderr
    # … and counts as a statement for the move
    notice(new, r_jid, old_jid)
    await wait_item(r, new_jid, "from")
    await close(new, r)


GONE = "{urn:ietf:params:xml:ns:xmpp-stanzas}gone"


def gone_to(stanza) -> str | None:
    """The text of the ``<gone/>`` in an error stanza (None without one)."""
    return stanza.xml.findtext(f"{{jabber:client}}error/{GONE}")


async def test_tombstone_ignores_presence_broadcasts_and_answers_the_rest(fed):
    """RFC 6121 §8.5.1 (no such user): "For a presence stanza with no 'type'
    attribute or a 'type' attribute of "unavailable", the server MUST silently
    ignore the stanza" — so the presence R still broadcasts to the deleted
    account (R shares presence with it: §4.2.2, §4.4.2, §4.5.2) or directs at
    it gets no answer. Nor do "subscribed", "unsubscribe" and "unsubscribed"
    (§8.5.1 says to ignore those too) or an error (RFC 6120 §8.3.1: never
    answered). What asks for an answer — a message, an IQ, R's server's probe,
    a subscription request — is told where the account went:
    <gone>xmpp:NEW</gone> (RFC 6120 §8.3.3.5; for a probe and a request
    §8.5.1 would allow silence, but XEP-0283 verifiers rely on the answer).
    R stays available while an answer could come, so that one would reach it."""
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "both")
    await old.close()
    await r.next_presence(type="unavailable", sender=old_jid, timeout=15)
    assert fed["old.test"].cli("deluser", old_jid).returncode == 0

    async def answers_to(*sent) -> list:
        """Send the presences, then an IQ to the tombstone along the same path:
        its <gone/> comes back after any answer to the presences."""
        for kwargs in sent:
            r.send_presence(**kwargs)
        error, answer = await ask(r, "get", "<query xmlns='jabber:iq:version'/>", to=old_jid)
        assert error == "gone" and answer.findtext(f"{{jabber:client}}error/{GONE}") == \
            f"xmpp:{new_jid}"
        return [p for p in await r.quiet() if p["from"].bare == old_jid]

    # a broadcast update (old is R's contact 'both'), directed presence to the
    # account and to the resource it had
    assert await answers_to({"pstatus": "here"}, {"pto": old_jid, "pstatus": "psst"},
                            {"pto": f"{old_jid}/r", "ptype": "unavailable"}) == []
    r.send_message(mto=old_jid, mbody="still there?", mtype="chat")
    bounce = await asyncio.wait_for(r.messages.get(), 15)
    assert bounce["type"] == "error" and gone_to(bounce) == f"xmpp:{new_jid}"

    # unavailable (broadcast to old), then available again: the probe R's server
    # sends (§4.2.2, R is subscribed to old) gets the only answer
    r.send_presence(ptype="unavailable")
    r.send_presence(pstatus="back")
    answer = await r.next_presence(type="error", sender=old_jid, timeout=15)
    assert gone_to(answer) == f"xmpp:{new_jid}"
    assert await answers_to() == []

    # subscription bookkeeping and an error: ignored; a new request: <gone/>
    assert await answers_to({"pto": old_jid, "ptype": "subscribed"},
                            {"pto": old_jid, "ptype": "unsubscribed"},
                            {"pto": old_jid, "ptype": "unsubscribe"},
                            {"pto": old_jid, "ptype": "error"}) == []
    r.send_presence(pto=old_jid, ptype="subscribe")
    refusal = await r.next_presence(type="error", sender=old_jid, timeout=15)
    assert gone_to(refusal) == f"xmpp:{new_jid}"
    await close(new, r)


async def test_offline_contact_is_processed_and_sees_it_at_login(fed):
    """R is offline: the move is made all the same, and the notice waits in
    offline storage (a ``chat`` with a body is kept, RFC 6121 §8.5.2.2.1 and
    XEP-0160 §3; a ``headline`` would have been dropped) until R comes back."""
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "from")
    await r.close()
    notice(new, r_jid, old_jid)
    await wait_item(new, r_jid, "to")                        # R's server answered for R
    r = await login(fed["c.test"], f"{r_jid}/later", "pw")
    await wait_item(r, new_jid, "from")
    assert old_jid not in await r.fetch_roster()
    r.send_presence()
    message = await next_message(r)
    assert (str(message["from"]), message["type"]) == ("c.test", "chat")
    assert message["body"] == (f"{old_jid} has moved to {new_jid}. Your contact list was "
                               f"updated: {new_jid} replaces {old_jid}.")
    assert message.xml.find("{urn:xmpp:delay}delay") is not None       # kept while away
    assert not [p for p in await r.quiet() if p["type"] == "subscribe"]
    await close(old, new, r)


async def test_old_account_on_the_contacts_own_server(fed):
    c = fed["c.test"]
    old_jid = account(c, "c.test", "alice")
    new_jid = account(fed["new.test"], "new.test", "alice")
    r_jid = account(c, "c.test", "bob")
    old = await online(c, old_jid)
    new = await online(fed["new.test"], new_jid)
    r = await online(c, r_jid)
    await relation(r, r_jid, old, old_jid, "from")
    await statement(old, new_jid)
    notice(new, r_jid, old_jid)
    await wait_item(r, new_jid, "from")
    await wait_gone(r, old_jid)
    await close(old, new, r)


@pytest.mark.hostile
async def test_second_notice_is_ignored(fed):
    old_jid, new_jid, r_jid, old, new, r = await scenario(fed, "from")
    notice(new, r_jid, old_jid)
    await wait_item(r, new_jid, "from")
    await r.quiet(via=new)
    notice(new, r_jid, old_jid)
    # R's server decides on a notice while handling it (a verification it
    # would start is what the item checks below would show)
    assert not [p for p in await r.quiet(via=new) if p["type"] == "subscribe"]
    assert (await roster_item(r, new_jid))["subscription"] == "from"
    assert old_jid not in await r.fetch_roster()
    await close(old, new, r)


async def test_moved_is_advertised(fed):
    jid = account(fed["c.test"], "c.test", "dora")
    client = await online(fed["c.test"], jid)
    client.register_plugin("xep_0030")
    info = await client.plugin["xep_0030"].get_info(jid="c.test", timeout=10)
    assert MOVED in info["disco_info"]["features"]
    await client.close()
