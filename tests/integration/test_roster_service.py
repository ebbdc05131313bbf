"""The roster service (server/core/rosters.py) under concurrency, against real
servers: every change of a roster goes through one lock-read-decide-write,
so the size limit holds, a remove is not undone by a change racing it, a
XEP-0015 merge loses no roster set, and XEP-0237 versions are one per change
— also during a XEP-0283 move.

Each test fails on the code before the service (4558e33): see the note in
each docstring. The tests wait for events (pushes, answers, a round trip
after stanzas that get no answer), never for time.
"""

import asyncio
import itertools

import pytest
import slixmpp
from slixmpp.xmlstream import ET

from tests.harness import RawClient, ask, federate, login
from tests.integration.test_moved import notice, statement

ROSTER = "jabber:iq:roster"
XFER = "jabber:iq:accountxfer"
_n = itertools.count(1)


# -- helpers -----------------------------------------------------------------------------------

def set_iq(client, item_xml: str):
    iq = client.Iq(stype="set")
    iq.append(ET.fromstring(f"<query xmlns='{ROSTER}'>{item_xml}</query>"))
    return iq


async def roster_set(client, item_xml: str) -> str | None:
    """A roster set: None when accepted, else the error condition."""
    try:
        await set_iq(client, item_xml).send(timeout=30)
    except slixmpp.exceptions.IqError as exc:
        return exc.iq["error"]["condition"]
    return None


async def round_trip(client) -> None:
    """A ping to the server: what the client sent before has been handled
    (a stream's stanzas are handled in order)."""
    await client.ping_server(timeout=30)


class Pushes:
    """The roster pushes a session receives, in order (it must have asked for
    the roster to get any)."""

    def __init__(self, client):
        self.queue: asyncio.Queue = asyncio.Queue()
        client.add_event_handler("roster_update", self.queue.put_nowait)

    async def until(self, jid: str, subscription: str, ask_: bool = False, timeout=20):
        """Wait for a push of *jid* in that state."""
        while True:
            iq = await asyncio.wait_for(self.queue.get(), timeout)
            for item in iq.xml.iterfind(f"{{{ROSTER}}}query/{{{ROSTER}}}item"):
                if item.get("jid") == jid and item.get("subscription") == subscription and \
                        (item.get("ask") == "subscribe") == ask_:
                    return item


async def online(proc, jid, resource="r"):
    """Logged in, available, and interested in roster pushes."""
    client = await login(proc, f"{jid}/{resource}", "pw")
    client.pushes = Pushes(client)
    client.send_presence()
    await client.fetch_roster()
    return client


async def subscribe(asker, asker_jid, other, other_jid, asker_sees: str):
    """asker subscribes to other, other approves; returns once asker's item
    for other is *asker_sees* (to, or both)."""
    asker.send_presence(pto=other_jid, ptype="subscribe")
    await other.next_presence(type="subscribe", sender=asker_jid, timeout=20)
    other.send_presence(pto=asker_jid, ptype="subscribed")
    await asker.pushes.until(other_jid, asker_sees)


async def close(*clients):
    for client in clients:
        await client.close()


# -- the size limit ----------------------------------------------------------------------------

async def test_roster_limit_holds_against_sixteen_sessions(make_server):
    """16 sessions of one account add 64 different items at once with room
    for 20: exactly 20 are accepted, the rest get <not-allowed/>.
    Before the service: each set counted the items outside any common lock,
    so sets in flight together all saw room (33 items stored, in each run)."""
    srv = make_server(im={"max_roster_items": 20})
    srv.adduser("lim@localhost", "pw")
    sessions = await asyncio.gather(*(login(srv, f"lim@localhost/s{i}", "pw")
                                      for i in range(16)))
    outcomes = await asyncio.gather(*(roster_set(s, f"<item jid='c{i}-{k}@example.org'/>")
                                      for i, s in enumerate(sessions) for k in range(4)))
    roster = await sessions[0].fetch_roster()
    assert len(roster) == 20, f"{len(roster)} items stored"
    assert outcomes.count(None) == 20
    assert [o for o in outcomes if o is not None] == ["not-allowed"] * 44
    # a change of an item already there still goes through at the limit
    assert await roster_set(sessions[1], f"<item jid='{next(iter(roster))}' name='x'/>") is None
    await close(*sessions)


# -- remove --------------------------------------------------------------------------------------

@pytest.mark.parametrize("pump", ["pre-approval", "roster-set"])
async def test_remove_is_not_undone_by_a_change_racing_it(make_server, pump):
    """U removes contact C (U subscribed to C: 'to') from one session while
    another session keeps changing the same item — pre-approving and
    cancelling (RFC 6121 §3.4, the subscription state machine) or setting its
    name (§2.3). In any serial order the item ends absent or, re-created by a
    change after the remove, with subscription 'none': the remove cancelled
    U's subscription and told C so. Before the service the remove read and
    deleted without the item's lock, and a change that read the item while
    the delete was being committed wrote it back with its stale 'to'."""
    srv = make_server()
    u_jid = f"u{next(_n)}@localhost"
    srv.adduser(u_jid, "pw")
    remover = await online(srv, u_jid, "remover")
    pumper = await login(srv, f"{u_jid}/pumper", "pw")
    for round_ in range(3):
        c_jid = f"c{next(_n)}@localhost"
        srv.adduser(c_jid, "pw")
        contact = await online(srv, c_jid)
        await subscribe(remover, u_jid, contact, c_jid, "to")
        if pump == "pre-approval":
            for i in range(40):
                pumper.send_presence(pto=c_jid, ptype="subscribed" if i % 2 == 0
                                     else "unsubscribed")
            pumped = round_trip(pumper)
        else:
            pumped = asyncio.gather(*(roster_set(pumper, f"<item jid='{c_jid}' name='n{i}'/>")
                                      for i in range(40)))
        assert await roster_set(remover, f"<item jid='{c_jid}' subscription='remove'/>") \
            is None
        await pumped
        item = (await remover.fetch_roster()).get(c_jid)
        assert item is None or (item["subscription"], item.get("ask")) == ("none", None), \
            f"round {round_}: the removed item came back as {item}"
        await contact.close()
    await close(remover, pumper)


# -- XEP-0015 merge --------------------------------------------------------------------------------

async def test_roster_handover_loses_no_roster_set(make_server):
    """Two sessions of the new account keep setting the item of contact X
    while the old server's roster hand-over (D: X and 300 other items) merges
    X into the new roster; then one last set. In any serial order X ends with
    the merged subscription ('both', as the old account had it) and the name
    and group of the last set. Before the service the merge neither held X's
    lock nor read X in the transaction that wrote it: a set that read X while
    the merge was being committed wrote back the subscription from before
    the merge ('none'), and every later set kept it."""
    old_srv = make_server(domains=("old.test",), start=False,
                          accountxfer={"notice_timeout": 10})
    new_srv = make_server(start=False, accountxfer={"notice_timeout": 10})   # localhost
    federate({"old.test": old_srv, "localhost": new_srv})
    old_jid, x_jid, new_jid = "alice@old.test", "xavier@old.test", "alice@localhost"
    for srv, jid in ((old_srv, old_jid), (old_srv, x_jid), (new_srv, new_jid)):
        srv.adduser(jid, "pw")
    old = await online(old_srv, old_jid)
    x = await online(old_srv, x_jid)
    new = await online(new_srv, new_jid)
    await subscribe(old, old_jid, x, x_jid, "to")
    await subscribe(x, x_jid, old, old_jid, "both")
    await old.pushes.until(x_jid, "both")
    for batch in range(6):                   # a hand-over that takes a while to write
        assert await asyncio.gather(*(roster_set(old, f"<item jid='t{batch}-{i}@example.net'/>")
                                      for i in range(50))) == [None] * 50
    error, _ = await ask(new, "set", f"<query xmlns='{XFER}'><oldaccount>{old_jid}"
                                     "</oldaccount><allowed/></query>")       # H
    assert error is None, error
    pumpers = []                             # raw sessions: sets back to back, no pushes
    for i in range(2):
        raw = await RawClient.connect(new_srv.c2s_port)
        await raw.login_plain(new_srv.cert(), "alice", "pw", resource=f"pump{i}")
        pumpers.append(raw)

    a = old.make_iq_set(ito="old.test")
    a.xml.append(ET.fromstring(f"<query xmlns='{XFER}'><newaccount>{new_jid}</newaccount>"
                               "</query>"))
    transfer = asyncio.ensure_future(a.send(timeout=60))
    sets = itertools.count()

    async def pump(raw):
        while not transfer.done():
            names = [f"n{next(sets)}" for _ in range(50)]
            raw.send("".join(f"<iq type='set' id='{n}'><query xmlns='{ROSTER}'>"
                             f"<item jid='{x_jid}' name='{n}'><group>{n}</group></item>"
                             "</query></iq>" for n in names))
            for _ in names:
                assert (await raw.expect("iq", timeout=30)).get("type") == "result"
    await asyncio.gather(*(pump(raw) for raw in pumpers))
    await transfer                                   # the answer (E): no error
    assert await roster_set(new, f"<item jid='{x_jid}' name='last'><group>last</group>"
                                 "</item>") is None
    roster = await new.fetch_roster()
    item = roster[x_jid]
    assert (item["subscription"], item.get("name"), item["groups"]) == \
        ("both", "last", ["last"]), f"after {next(sets)} sets: {item}"
    assert len(roster) == 301
    for raw in pumpers:
        await raw.close()
    await close(old, x, new)


# -- XEP-0237 versions, with a XEP-0283 move -----------------------------------------------------

def _items(query) -> dict[str, tuple]:
    return {el.get("jid"): (el.get("subscription"), el.get("ask"), el.get("name"))
            for el in query.iterfind(f"{{{ROSTER}}}item")}


async def _roster_get(raw: RawClient, ver: str | None):
    attr = "" if ver is None else f" ver='{ver}'"
    raw.send(f"<iq type='get' id='g{next(_n)}'><query xmlns='{ROSTER}'{attr}/></iq>")
    while True:
        answer = await raw.expect("iq")
        if answer.get("type") == "result":
            return answer.find(f"{{{ROSTER}}}query")      # None: the cache is current


async def test_every_change_has_its_own_version_through_a_move(make_server):
    """R's three sessions add 15 items while R's roster follows a XEP-0283
    move (alice@old → alice@new: two items change). An interested resource
    sees 17 pushes with 17 versions, strictly increasing; a client that
    reconnects with any version it saw gets the roster it would have after
    every later change (the whole roster, or nothing when it is current).
    Before the service the move's two pushes shared one version, and a client
    that saw only the first of them and reconnected with it was told its
    cache was current."""
    srv = make_server()
    n = next(_n)
    old_jid, new_jid, r_jid = f"old{n}@localhost", f"new{n}@localhost", f"r{n}@localhost"
    for jid in (old_jid, new_jid, r_jid):
        srv.adduser(jid, "pw")
    old = await online(srv, old_jid)
    new = await online(srv, new_jid)
    r = await online(srv, r_jid)
    await subscribe(old, old_jid, r, r_jid, "to")       # R shares presence with old: 'from'
    await r.pushes.until(old_jid, "from")
    await statement(old, new_jid)
    writers = [await login(srv, f"{r_jid}/w{i}", "pw") for i in range(3)]

    observer = await RawClient.connect(srv.c2s_port)
    await observer.login_plain(srv.cert(), r_jid.split("@")[0], "pw", resource="observer")
    first = await _roster_get(observer, None)
    start_ver, cache = first.get("ver"), _items(first)

    notice(new, r_jid, old_jid)
    sets = asyncio.gather(*(roster_set(w, f"<item jid='v{i}-{k}@example.org'/>")
                            for i, w in enumerate(writers) for k in range(5)))
    pushes = []                                         # (ver, items) in the order received
    while len(pushes) < 17:
        iq = await observer.expect("iq")
        if iq.get("type") == "set":
            query = iq.find(f"{{{ROSTER}}}query")
            pushes.append((query.get("ver"), _items(query)))
            observer.send(f"<iq type='result' id='{iq.get('id')}'/>")
    assert await sets == [None] * 15
    versions = [int(ver) for ver, _ in pushes]
    assert len(set(versions)) == len(versions), f"a version was pushed twice: {versions}"
    assert versions == sorted(versions), f"versions out of order: {versions}"
    moved = {jid: state for _, items in pushes for jid, state in items.items()
             if jid in (old_jid, new_jid)}
    assert moved == {new_jid: ("from", None, None), old_jid: ("remove", None, None)}

    final = await _roster_get(observer, None)
    assert final.get("ver") == str(versions[-1])
    final_items = _items(final)
    seen = [(start_ver, dict(cache))]
    for ver, items in pushes:
        for jid, state in items.items():
            if state[0] == "remove":
                cache.pop(jid, None)
            else:
                cache[jid] = state
        seen.append((ver, dict(cache)))
    assert seen[-1][1] == final_items
    for ver, cached in seen:
        answer = await _roster_get(observer, ver)
        got = cached if answer is None else _items(answer)
        assert got == final_items, f"a client that reconnects with ver={ver} misses changes"
    await observer.close()
    await close(old, new, r, *writers)
