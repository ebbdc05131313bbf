"""Quotas per account: what one registered user can make the server keep.

Each limit is in ``[im]`` of ``conf/xferd.toml``. The attacker is a logged-in
account filling its own storage (private XML, PEP, its roster) or another's
(offline messages, a pending subscription request); each test checks what
the attacker is told, that nothing beyond the quota was kept, and that a
well-behaved client on the same server keeps its service (ping round trips
under a second) during and after.
"""

import asyncio
import sqlite3
import time

import pytest
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatcherId

from server.xmpp.sasl import make_all_credentials
from storage.api import RosterItem, UserData
from storage.sqlite import SQLiteStorage
from tests.harness import login, old_database, round_trip

pytestmark = pytest.mark.hostile

PRIVATE = "jabber:iq:private"
PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
ROSTER = "jabber:iq:roster"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NICK = "http://jabber.org/protocol/nick"


async def served_quickly(client) -> None:
    """A ping round trip under a second: the server still serves *client*."""
    assert await client.ping_server(timeout=5) < 1.0


async def ask(client, itype: str, payload: str, to: str | None = None):
    """An IQ carrying *payload*: (None, answer XML) on a result, (condition,
    answer XML) on an error. Read from the XML: slixmpp raises on an error
    whose condition it does not list (<policy-violation/>)."""
    iq = client.make_iq(ito=to, itype=itype)
    iq.xml.append(ET.fromstring(payload))
    answered = asyncio.get_running_loop().create_future()
    client.register_handler(Callback(f"answer {iq['id']}", MatcherId(iq["id"]),
                                     lambda stanza: answered.done() or
                                     answered.set_result(stanza.xml), once=True))
    # slixmpp's own future would hold an exception nobody reads
    iq.send().add_done_callback(lambda f: f.cancelled() or f.exception())
    answer = await asyncio.wait_for(answered, 20)
    if answer.get("type") == "result":
        return None, answer
    error = answer.find("{jabber:client}error")
    return next(c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{STANZAS}}}")), answer


def error_type(answer) -> str:
    return answer.find("{jabber:client}error").get("type")


def pubsub_condition(answer) -> str | None:
    error = answer.find("{jabber:client}error")
    found = [c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{PUBSUB_ERRORS}}}")]
    return found[0] if found else None


# -- XEP-0049 private XML storage ---------------------------------------------------------------

def private_set(*fragments: tuple[str, str]) -> str:
    """A private XML set of (namespace, text) fragments, each <data xmlns=ns>text</data>."""
    return (f"<query xmlns='{PRIVATE}'>"
            + "".join(f"<data xmlns='{ns}'>{text}</data>" for ns, text in fragments)
            + "</query>")


async def test_private_xml_keeps_a_bounded_number_of_fragments(make_server):
    """XEP-0049 §2.3 lets a client store any number of fragments; the server
    keeps at most ``private_max_fragments`` per account. A set that would
    pass it is refused whole with <not-acceptable/> (modify: RFC 6120
    §8.3.3.12, "does not meet criteria defined by the recipient or server"),
    a set that replaces stored fragments still goes through, and sixteen
    sets sent at once cannot overshoot (the count is in the transaction)."""
    srv = make_server(im={"private_max_fragments": 5})
    srv.adduser("mallory@localhost", "pw")
    srv.adduser("bob@localhost", "pw")
    mallory = await login(srv, "mallory@localhost/m", "pw")
    bob = await login(srv, "bob@localhost/b", "pw")

    outcomes = await asyncio.gather(*(ask(mallory, "set", private_set((f"urn:x:{i}", "v")))
                                      for i in range(16)))
    conditions = [condition for condition, _ in outcomes]
    assert conditions.count(None) == 5, conditions
    refused = [answer for condition, answer in outcomes if condition is not None]
    assert {c for c in conditions if c} == {"not-acceptable"}
    assert {error_type(a) for a in refused} == {"modify"}
    await served_quickly(bob)

    kept = [i for i, c in enumerate(conditions) if c is None]
    # replacing a stored fragment is no new fragment
    assert (await ask(mallory, "set", private_set((f"urn:x:{kept[0]}", "new"))))[0] is None
    # a set of several is refused whole: the stored one is not replaced either
    both = private_set((f"urn:x:{kept[1]}", "changed"), ("urn:x:extra", "v"))
    assert (await ask(mallory, "set", both))[0] == "not-acceptable"
    _, answer = await ask(mallory, "get", f"<query xmlns='{PRIVATE}'>"
                                          f"<data xmlns='urn:x:{kept[1]}'/></query>")
    assert answer.find(f".//{{urn:x:{kept[1]}}}data").text == "v"
    await served_quickly(bob)


async def test_private_xml_total_size_is_bounded_by_default(make_server):
    """With the default ``private_max_bytes`` (1 MiB) the attack measured
    before — 100 fragments of 250 KB, all kept — stops at the fifth: the
    account keeps four (1,000,000 bytes), the rest get <not-acceptable/>."""
    srv = make_server()
    srv.adduser("mallory@localhost", "pw")
    srv.adduser("bob@localhost", "pw")
    mallory = await login(srv, "mallory@localhost/m", "pw")
    bob = await login(srv, "bob@localhost/b", "pw")
    big = "x" * 250_000
    results = []
    for i in range(6):
        results.append((await ask(mallory, "set", private_set((f"urn:big:{i}", big))))[0])
        await served_quickly(bob)
    assert results == [None] * 4 + ["not-acceptable"] * 2
    # freeing room (a small fragment in place of a big one) makes room again
    assert (await ask(mallory, "set", private_set(("urn:big:0", "small"))))[0] is None
    assert (await ask(mallory, "set", private_set(("urn:big:4", big))))[0] is None


# -- XEP-0163 PEP -------------------------------------------------------------------------------

def publish(node: str, payload: str) -> str:
    return (f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>"
            f"<item id='current'>{payload}</item></publish></pubsub>")


async def test_pep_nodes_per_account_are_capped(make_server):
    """An account may have at most ``pep_max_nodes`` nodes. One more —
    by auto-create on publish (XEP-0060 §7.1.4) or by create (§8.1) — gets
    <policy-violation/> with XEP-0060's <max-nodes-exceeded/> (the pairing
    §6.1.3.9 uses for its like limit, too many subscriptions). Publishing
    to a node that exists still works, and deleting one makes room."""
    srv = make_server(im={"pep_max_nodes": 3})
    srv.adduser("mallory@localhost", "pw")
    srv.adduser("bob@localhost", "pw")
    mallory = await login(srv, "mallory@localhost/m", "pw")
    bob = await login(srv, "bob@localhost/b", "pw")
    me = "mallory@localhost"
    outcomes = await asyncio.gather(*(ask(mallory, "set", publish(f"urn:n:{i}",
                                                                  "<x xmlns='urn:p'/>"), to=me)
                                      for i in range(8)))
    conditions = [c for c, _ in outcomes]
    assert conditions.count(None) == 3, conditions
    for condition, answer in outcomes:
        if condition is not None:
            assert condition == "policy-violation"
            assert pubsub_condition(answer) == "max-nodes-exceeded"
    await served_quickly(bob)

    condition, answer = await ask(mallory, "set", f"<pubsub xmlns='{PUBSUB}'>"
                                                  "<create node='urn:n:created'/></pubsub>", to=me)
    assert (condition, pubsub_condition(answer)) == ("policy-violation", "max-nodes-exceeded")
    kept = [i for i, c in enumerate(conditions) if c is None]
    assert (await ask(mallory, "set", publish(f"urn:n:{kept[0]}", "<y xmlns='urn:p'/>"),
                      to=me))[0] is None
    delete = f"<pubsub xmlns='{PUBSUB}#owner'><delete node='urn:n:{kept[1]}'/></pubsub>"
    assert (await ask(mallory, "set", delete, to=me))[0] is None
    assert (await ask(mallory, "set", f"<pubsub xmlns='{PUBSUB}'>"
                                      "<create node='urn:n:created'/></pubsub>", to=me))[0] is None
    await served_quickly(bob)


async def test_pep_item_size_is_capped_by_default(make_server):
    """XEP-0060 §7.1.3.5: "If the payload size exceeds a service-defined
    limit, the service MUST return a <not-acceptable/> error, which SHOULD
    also include a pubsub-specific error condition of <payload-too-big/>."
    The default limit (128 KiB) takes an avatar; 200 KB is refused and the
    item published before stays."""
    srv = make_server()
    srv.adduser("mallory@localhost", "pw")
    srv.adduser("bob@localhost", "pw")
    mallory = await login(srv, "mallory@localhost/m", "pw")
    bob = await login(srv, "bob@localhost/b", "pw")
    me = "mallory@localhost"
    avatar = "<data xmlns='urn:xmpp:avatar:data'>" + "A" * 100_000 + "</data>"
    assert (await ask(mallory, "set", publish("urn:xmpp:avatar:data", avatar), to=me))[0] is None
    huge = "<data xmlns='urn:xmpp:avatar:data'>" + "B" * 200_000 + "</data>"
    condition, answer = await ask(mallory, "set", publish("urn:xmpp:avatar:data", huge), to=me)
    assert (condition, pubsub_condition(answer)) == ("not-acceptable", "payload-too-big")
    assert error_type(answer) == "modify"
    _, items = await ask(mallory, "get", f"<pubsub xmlns='{PUBSUB}'>"
                                         "<items node='urn:xmpp:avatar:data'/></pubsub>", to=me)
    stored = items.find(".//{urn:xmpp:avatar:data}data").text
    assert stored.startswith("A") and len(stored) == 100_000
    await served_quickly(bob)


async def test_pep_bytes_per_account_are_capped(make_server):
    """Item size times items per node times nodes is still a lot, so the
    items of all an account's nodes are bounded too (``pep_max_bytes``).
    A publish that would pass it gets §7.1.3.5's <not-acceptable/> +
    <payload-too-big/>; replacing an item counts only the new one."""
    srv = make_server(im={"pep_max_bytes": 250_000})
    srv.adduser("mallory@localhost", "pw")
    srv.adduser("bob@localhost", "pw")
    mallory = await login(srv, "mallory@localhost/m", "pw")
    bob = await login(srv, "bob@localhost/b", "pw")
    me = "mallory@localhost"
    payload = "<x xmlns='urn:p'>" + "p" * 100_000 + "</x>"
    for node in ("urn:n:a", "urn:n:b"):
        assert (await ask(mallory, "set", publish(node, payload), to=me))[0] is None
    condition, answer = await ask(mallory, "set", publish("urn:n:c", payload), to=me)
    assert (condition, pubsub_condition(answer)) == ("not-acceptable", "payload-too-big")
    assert (await ask(mallory, "set", publish("urn:n:a", payload), to=me))[0] is None
    condition, _ = await ask(mallory, "get", f"<pubsub xmlns='{PUBSUB}'>"
                                             "<items node='urn:n:c'/></pubsub>", to=me)
    assert condition == "item-not-found"       # refused whole: not even the node was made
    await served_quickly(bob)


# -- RFC 6121 §2 roster items -------------------------------------------------------------------

def roster_item(jid: str, name: str | None = None, groups=()) -> str:
    name_attr = f" name='{name}'" if name is not None else ""
    return (f"<query xmlns='{ROSTER}'><item jid='{jid}'{name_attr}>"
            + "".join(f"<group>{g}</group>" for g in groups) + "</item></query>")


async def test_roster_item_names_and_groups_are_bounded_by_default(make_server):
    """RFC 6121 §2.3.3: "The server MUST return a <not-acceptable/> stanza
    error to the client if the roster set contains any of the following
    violations: ... The length of the 'name' attribute is greater than a
    server-configured limit ... The XML character data of the <group/>
    element ... is larger than a server-configured limit." The defaults:
    256 characters for a name, 128 for a group, 16 groups an item (the
    number of groups §2.3.3 leaves open; treated alike). Before, an item
    could carry 64 groups of 1 KB (49 KiB; ~480 MB for a full roster)."""
    srv = make_server()
    srv.adduser("mallory@localhost", "pw")
    srv.adduser("bob@localhost", "pw")
    mallory = await login(srv, "mallory@localhost/m", "pw")
    bob = await login(srv, "bob@localhost/b", "pw")
    most = [f"{i:02d}" + "g" * 126 for i in range(16)]
    assert (await ask(mallory, "set", roster_item("a@example.org", "n" * 256, most)))[0] is None
    for refused in (roster_item("b@example.org", "n" * 257),
                    roster_item("c@example.org", groups=["g" * 129]),
                    roster_item("d@example.org", groups=most + ["one more"])):
        condition, answer = await ask(mallory, "set", refused)
        assert (condition, error_type(answer)) == ("not-acceptable", "modify")
        await served_quickly(bob)
    roster = await mallory.fetch_roster()
    assert list(roster) == ["a@example.org"]
    assert len(roster["a@example.org"]["groups"]) == 16


async def fill_roster(srv, user: str, count: int) -> None:
    """*count* items in *user*'s roster, written before the server starts."""
    store = SQLiteStorage(srv.data_dir / "xferd.sqlite")
    await store.open()
    try:
        await asyncio.gather(*(store.save_roster_change(
            "localhost", user, f"old{i}@example.org", RosterItem(f"old{i}@example.org"))
            for i in range(count)))
    finally:
        await store.close()


async def test_roster_limit_is_exact_when_sixteen_sessions_race_at_the_default(make_server):
    """``max_roster_items`` (10,000) was overshot to 10,007 by 16 sessions of
    one account writing at once. With 9,990 items stored, 16 sessions add 64
    new contacts at once — by roster set (RFC 6121 §2.3), by subscribe
    (§3.1.2, which adds an item with ask) and by pre-approval (§3.4, which
    adds an item in state none with approved) — each path through the roster
    service, whose count is taken inside the write transaction. Exactly 10
    are added (the roster ends at 10,000), every other roster set gets
    <not-allowed/>, every other presence an error."""
    srv = make_server(start=False)
    srv.adduser("mallory@localhost", "pw")
    srv.adduser("bob@localhost", "pw")
    await fill_roster(srv, "mallory", 9_990)
    srv.start()
    bob = await login(srv, "bob@localhost/b", "pw")
    sessions = await asyncio.gather(*(login(srv, f"mallory@localhost/s{i}", "pw")
                                      for i in range(16)))
    errors: list = []
    for s in sessions:
        s.add_event_handler("presence_error", errors.append)
        s.send_presence()               # available: a bounced presence reaches it
    for s in sessions:
        await round_trip(s)

    async def add(session, i: int, k: int):
        contact = f"new{i}-{k}@example.org"
        if k % 4 < 2:
            condition, _ = await ask(session, "set", roster_item(contact))
            return "roster", condition
        session.send_presence(pto=contact, ptype="subscribe" if k % 4 == 2 else "subscribed")
        return "presence", None

    started = time.monotonic()
    outcomes = await asyncio.gather(*(add(s, i, k) for i, s in enumerate(sessions)
                                      for k in range(4)))
    for s in sessions:
        await round_trip(s)             # every presence they sent has been handled
    await served_quickly(bob)
    roster = await sessions[0].fetch_roster()
    assert len(roster) == 10_000, f"{len(roster)} items stored"
    added = [jid for jid in roster if jid.startswith("new")]
    assert len(added) == 10
    roster_sets = [c for kind, c in outcomes if kind == "roster"]
    assert set(roster_sets) <= {None, "not-allowed"}
    accepted_sets = roster_sets.count(None)
    assert len(errors) == 32 - (10 - accepted_sets), (len(errors), accepted_sets)
    assert {e["error"]["condition"] for e in errors} <= {"not-allowed"}
    assert time.monotonic() - started < 60


# -- RFC 6121 §3.1.3 a pending subscription request --------------------------------------------

async def test_a_kept_subscription_request_is_cut_not_refused(make_server):
    """RFC 6121 §3.1.3: the contact's server keeps an inbound subscription
    request until the user answers it, and sends it again at each login.
    A 250 KB <status/> used to be kept (and re-sent) whole; here 150 KB. Now the request
    is kept — refusing would lose it — with each <status/> cut to
    ``subscription_max_status`` (1,024) characters, and if the stanza is
    still above ``subscription_max_request`` (8,192) bytes, its other
    children are dropped, last first: a small XEP-0172 <nick/> before a
    90 KB extension survives, the extension does not."""
    srv = make_server()
    srv.adduser("mallory@localhost", "pw")
    srv.adduser("target@localhost", "pw")
    srv.adduser("bob@localhost", "pw")
    mallory = await login(srv, "mallory@localhost/m", "pw")
    bob = await login(srv, "bob@localhost/b", "pw")
    presence = mallory.make_presence(pto="target@localhost", ptype="subscribe")
    presence["status"] = "s" * 150_000
    presence.xml.append(ET.fromstring(f"<nick xmlns='{NICK}'>Mal</nick>"))
    presence.xml.append(ET.fromstring(f"<junk xmlns='urn:x'>{'j' * 90_000}</junk>"))
    presence.send()
    await round_trip(mallory)
    await served_quickly(bob)

    target = await login(srv, "target@localhost/t", "pw")
    target.send_presence()
    request = await target.next_presence(type="subscribe", sender="mallory@localhost",
                                         timeout=10)
    xml = request.xml
    status = xml.find("{jabber:client}status")
    assert status is not None and status.text == "s" * 1024
    assert xml.find(f"{{{NICK}}}nick").text == "Mal"
    assert xml.find("{urn:x}junk") is None
    assert len(ET.tostring(xml)) <= 8192
    await served_quickly(bob)


# -- XEP-0160 offline messages ------------------------------------------------------------------

async def test_offline_bytes_per_user_are_capped(make_server):
    """Besides ``offline_quota`` (messages), ``offline_max_bytes`` bounds
    what is kept for one user. Past it the sender gets
    <service-unavailable/>, as XEP-0160 §2 has for a full queue ("If not
    (e.g., because the recipient's offline message queue is full), the
    server returns a <service-unavailable/> error to the sender"), and the
    user gets what was kept, in order."""
    srv = make_server(im={"offline_max_bytes": 50_000})
    srv.adduser("mallory@localhost", "pw")
    srv.adduser("target@localhost", "pw")
    srv.adduser("bob@localhost", "pw")
    mallory = await login(srv, "mallory@localhost/m", "pw")
    bob = await login(srv, "bob@localhost/b", "pw")
    errors: asyncio.Queue = asyncio.Queue()
    mallory.add_event_handler("message_error", errors.put_nowait)
    ids = []
    for i in range(8):
        msg = mallory.make_message(mto="target@localhost", mbody=f"{i}:" + "b" * 10_000,
                                   mtype="chat")
        msg.send()
        ids.append(msg["id"])
    await round_trip(mallory)
    await served_quickly(bob)
    bounced = []
    while not errors.empty():
        error = errors.get_nowait()
        assert error["error"]["condition"] == "service-unavailable"
        bounced.append(error["id"])
    assert bounced == ids[4:], bounced      # 4 × ~10.1 KB fit in 50,000 bytes

    target = await login(srv, "target@localhost/t", "pw")
    target.send_presence()
    got = [(await asyncio.wait_for(target.messages.get(), 10))["body"].split(":")[0]
           for _ in range(4)]
    assert got == ["0", "1", "2", "3"]
    await round_trip(target)
    assert target.messages.empty()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_thirty_megabytes_of_offline_messages_are_delivered_a_page_at_a_time(make_server):
    """XEP-0160 step 5: at login the user gets every stored message, oldest
    first. 30 MB of them (120 × 250 KB) used to be read, parsed and written
    at once: RSS rose by 160 MiB and, with the default 4 MiB output buffer,
    the client was cut off as a reader too slow. Now they go a page at a
    time, each once the client has read the last: all 120 arrive, in order,
    the server's RSS rises by far less than their size, and another client's
    pings are answered within a second throughout."""
    srv = make_server(start=False, im={"offline_max_bytes": 64 * 1024 * 1024})
    for user in ("mallory", "target", "bob"):
        srv.adduser(f"{user}@localhost", "pw")
    srv.start()
    mallory = await login(srv, "mallory@localhost/m", "pw")
    bob = await login(srv, "bob@localhost/b", "pw")
    body = "m" * 250_000
    for i in range(120):
        mallory.send_message(mto="target@localhost", mbody=f"{i:03d}{body}", mtype="chat")
        if i % 20 == 19:
            await round_trip(mallory, timeout=30)
    await round_trip(mallory, timeout=30)
    pid = srv.proc.pid
    before = _rss(pid)
    peak = before
    done = asyncio.Event()

    async def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss(pid))
            await asyncio.sleep(0.02)   # a measurement, not a wait for an event

    async def pings():
        slowest = 0.0
        while not done.is_set():
            slowest = max(slowest, await bob.ping_server(timeout=5))
        return slowest

    sampler, pinger = asyncio.create_task(sample()), asyncio.create_task(pings())
    target = await login(srv, "target@localhost/t", "pw")
    target.send_presence()
    got = []
    for _ in range(120):
        got.append((await asyncio.wait_for(target.messages.get(), 30))["body"][:3])
    done.set()
    await sampler
    slowest = await pinger
    assert got == [f"{i:03d}" for i in range(120)]
    grown = (peak - before) / 2 ** 20
    print(f"offline delivery of 30 MB: RSS {before / 2 ** 20:.0f} MiB before, "
          f"peak +{grown:.1f} MiB; slowest ping {slowest * 1000:.0f} ms")
    assert grown < 32, f"RSS rose by {grown:.0f} MiB while delivering"
    assert slowest < 1.0
    await round_trip(target)
    assert target.messages.empty()


def usage(path) -> dict:
    """(bytes the usage table says, bytes the stanzas have) per user, read
    by a connection of our own."""
    db = sqlite3.connect(path)
    try:
        kept = dict(db.execute("SELECT username, bytes FROM offline_usage").fetchall())
        real = dict(db.execute("SELECT username, SUM(LENGTH(CAST(stanza AS BLOB))) "
                               "FROM offline_messages GROUP BY username").fetchall())
        return {u: (kept.get(u, 0), real.get(u, 0)) for u in kept.keys() | real.keys()}
    finally:
        db.close()


async def test_the_offline_byte_count_follows_every_writer(tmp_path):
    """The byte quota reads a per-user total that triggers keep (schema
    version 6), not a sum over the queue at each message (~4 ms for 10 MB,
    which a flood of messages to a full queue would have paid each time).
    The total must not drift: it follows stores, deliveries, the account's
    deletion and an XEP-0227 import, and a file of the previous schema gets
    its total from the messages it holds."""
    path = tmp_path / "old.sqlite"
    db = old_database(path, 5, "old")
    db.executemany("INSERT INTO offline_messages (host, username, stanza, stored_at) "
                   "VALUES ('localhost', 'old', ?, 0)", [("<message>é</message>",)] * 3)
    db.commit()
    db.close()
    store = SQLiteStorage(path)
    await store.open()
    try:
        assert usage(path) == {"old": (63, 63)}
        creds = make_all_credentials("pw", iterations=4096)
        assert await store.create_user("localhost", "ann", creds)
        for i in range(5):
            assert await store.store_offline("localhost", "ann", f"<message>{i}ü</message>",
                                             quota=100, max_bytes=10_000)
        assert not await store.store_offline("localhost", "ann", "x" * 10_000, quota=100,
                                             max_bytes=10_000)
        page = await store.get_offline_page("localhost", "ann", max_count=2)
        await store.delete_offline("localhost", "ann", [m.id for m in page])
        assert usage(path)["ann"] == (66, 66)
        assert await store.delete_user("localhost", "ann")
        assert "ann" not in usage(path)
        assert await store.import_user("localhost", "bea", UserData(
            credentials=creds, offline=[("<message>imported</message>", 1.0)]))
        assert usage(path)["bea"] == (27, 27)
    finally:
        await store.close()
