"""XEP-0313 Message Archive Management against a real server, with slixmpp's
xep_0313 plugin and raw queries: both sides archived with a XEP-0359
stanza-id, what is not archived, the filters, RSM paging both ways, the
extended fields, flip-page, the page limit, preferences, metadata, the
history import IQ, an account's archive deleted with it, and retention."""

import asyncio
import itertools
import time
from datetime import datetime, timezone

import pytest
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.harness import XferdProcess, ask, login, round_trip

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "urn:xmpp:sid:0"
FWD = "urn:xmpp:forward:0"
IMPORT = "urn:xferd:mam-import:0"
MAX_PAGE = 7
_names = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = XferdProcess(tmp_path_factory.mktemp("xferd"), overrides={"mam": {"max_page": MAX_PAGE}})
    proc.start()
    yield proc
    proc.stop()


def users(server, count: int = 2) -> list[str]:
    n = next(_names)
    jids = [f"{name}{n}@localhost" for name in ("ann", "bob", "cat")[:count]]
    for jid in jids:
        assert server.cli("adduser", jid, input="pw\n").returncode == 0
    return jids


async def logged_in(server, *jids):
    clients = []
    for jid in jids:
        client = await login(server, jid, "pw")
        client.register_plugin("xep_0313")
        # slixmpp's "message" event is for messages with a body: results go here
        client.results = asyncio.Queue()
        client.register_handler(Callback(
            "results", MatchXPath(f"{{jabber:client}}message/{{{MAM}}}result"),
            lambda msg, c=client: c.results.put_nowait(msg)))
        client.send_presence()
        await round_trip(client)        # available before anything is sent to it
        clients.append(client)
    return clients


async def next_message(client, timeout: float = 5):
    return await asyncio.wait_for(client.messages.get(), timeout)


def field(var: str, *values: str) -> str:
    return f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>"


async def query(client, *fields: str, rsm: str = "", flip: bool = False, to=None):
    """A raw MAM query: (error condition or None, [(id, body, stamp)], <fin/>)."""
    form = ""
    if fields:
        form = (f"<x xmlns='jabber:x:data' type='submit'>{field('FORM_TYPE', MAM)}"
                + "".join(fields) + "</x>")
    payload = (f"<query xmlns='{MAM}' queryid='q1'>{form}"
               + (f"<set xmlns='{RSM}'>{rsm}</set>" if rsm else "")
               + ("<flip-page/>" if flip else "") + "</query>")
    error, answer = await ask(client, "set", payload, to=to)
    results = []
    while not client.results.empty():
        msg = client.results.get_nowait().xml
        result = msg.find(f"{{{MAM}}}result")
        assert result is not None and result.get("queryid") == "q1", ET.tostring(msg)
        assert msg.get("from") == client.boundjid.bare
        forwarded = result.find(f"{{{FWD}}}forwarded")
        body = forwarded.find("{jabber:client}message/{jabber:client}body")
        stamp = forwarded.find("{urn:xmpp:delay}delay").get("stamp")
        results.append((result.get("id"), body.text if body is not None else None, stamp))
    return error, results, answer.find(f"{{{MAM}}}fin")


def rsm_of(fin) -> dict:
    s = fin.find(f"{{{RSM}}}set")
    return {child.tag.split("}")[1]: child.text for child in s}


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def import_payload(source: str, items, owner: str) -> str:
    """<import/> of (old id, timestamp, other jid, body, outgoing?) items."""
    results = []
    for old_id, when, other, body, outgoing in items:
        frm, to = (owner, other) if outgoing else (other, owner)
        results.append(
            f"<result xmlns='{MAM}' id='{old_id}'><forwarded xmlns='{FWD}'>"
            f"<delay xmlns='urn:xmpp:delay' stamp='{stamp(when)}'/>"
            f"<message xmlns='jabber:client' from='{frm}' to='{to}' type='chat' id='{old_id}'>"
            f"<body>{body}</body><stanza-id xmlns='{SID}' by='{source}' id='{old_id}'/>"
            f"</message></forwarded></result>")
    return f"<import xmlns='{IMPORT}' source='{source}'>" + "".join(results) + "</import>"


def imported_count(answer) -> int:
    return int(answer.find(f"{{{IMPORT}}}imported").get("count"))


# -- archiving ------------------------------------------------------------------------------

async def test_both_sides_are_archived_with_the_stanza_id_the_recipient_got(server):
    ann, bob = users(server)
    a, b = await logged_in(server, ann, bob)
    # ann's client claims an id in bob's archive: it must not reach bob
    msg = a.make_message(mto=bob, mbody="hello bob", mtype="chat")
    ET.SubElement(msg.xml, f"{{{SID}}}stanza-id", {"by": bob, "id": "forged"})
    msg.send()
    got = (await next_message(b)).xml
    ids = [(s.get("by"), s.get("id")) for s in got.findall(f"{{{SID}}}stanza-id")]
    assert len(ids) == 1 and ids[0][0] == bob and ids[0][1] != "forged"

    # not archived: chat states only, no-store, no-permanent-store, headline
    for extra, kind in (("<active xmlns='http://jabber.org/protocol/chatstates'/>", "chat"),
                        ("<body>secret</body><no-store xmlns='urn:xmpp:hints'/>", "chat"),
                        ("<body>secret</body><no-permanent-store xmlns='urn:xmpp:hints'/>",
                         "chat"),
                        ("<body>news</body>", "headline")):
        m = a.make_message(mto=bob, mtype=kind)
        for child in ET.fromstring(f"<x xmlns='jabber:client'>{extra}</x>"):
            m.xml.append(child)
        m.send()
    await round_trip(b, via=a)          # all of them handled (and delivered)
    # … and a note to self, stored once, as sent, carrying its id to the other resource
    a2 = (await logged_in(server, f"{ann}/two"))[0]
    a.make_message(mto=f"{ann}/two", mbody="note to self", mtype="chat").send()
    note = (await next_message(a2)).xml
    note_id = note.find(f"{{{SID}}}stanza-id").get("id")

    page = await b.plugin["xep_0313"].retrieve(with_jid=ann)
    results = page["mam"]["results"]
    assert [r["mam_result"]["forwarded"]["stanza"]["body"] for r in results] == ["hello bob"]
    assert results[0]["mam_result"]["id"] == ids[0][1]
    assert results[0]["mam_result"]["forwarded"]["stanza"]["from"] == f"{ann}/{a.boundjid.resource}"
    # bob's copy is the message as bob got it: without the forged id, which ann's
    # copy (written out first, for her archive) still had
    kept = results[0]["mam_result"]["forwarded"]["stanza"].xml
    assert kept.find(f"{{{SID}}}stanza-id") is None
    assert page.xml.find(f"{{{MAM}}}fin").get("complete") == "true"

    error, mine, _ = await query(a)
    assert error is None and [body for _, body, _ in mine] == ["hello bob", "note to self"]
    assert mine[1][0] == note_id
    for c in (a, b, a2):
        await c.close()


async def test_messages_to_unknown_accounts_are_not_archived_for_them(server):
    ann, = users(server, 1)
    a, = await logged_in(server, ann)
    a.make_message(mto="nobody-here@localhost", mbody="anyone?", mtype="chat").send()
    bounce = (await next_message(a)).xml
    assert bounce.get("type") == "error"
    error, got, _ = await query(a)              # the sender keeps what it sent
    assert [body for _, body, _ in got] == ["anyone?"]
    await a.close()


# -- queries --------------------------------------------------------------------------------

_history: dict = {}


@pytest.fixture
async def history(server):
    """ann with 12 imported messages, one a minute, alternately with bob and cat
    (made once per server; the tests only read it)."""
    if id(server) in _history:
        return _history[id(server)]
    ann, bob, cat = users(server, 3)
    a, = await logged_in(server, ann)
    base = time.time() - 3600
    items = [(f"old{n}", base + 60 * n, bob if n % 2 else cat, f"m{n}", n % 3 == 0)
             for n in range(12)]
    error, answer = await ask(a, "set", import_payload("ann@old.example", items, ann))
    assert error is None and imported_count(answer) == 12
    await a.close()
    _history[id(server)] = ann, bob, cat, base
    return ann, bob, cat, base


async def test_filters_with_start_end(server, history):
    ann, bob, cat, base = history
    a, = await logged_in(server, ann)
    error, got, fin = await query(a, field("with", bob))
    assert error is None and [b for _, b, _ in got] == ["m1", "m3", "m5", "m7", "m9", "m11"]
    assert fin.get("complete") == "true"
    error, got, _ = await query(a, field("with", cat), field("start", stamp(base + 120)),
                                field("end", stamp(base + 480)))
    assert [b for _, b, _ in got] == ["m2", "m4", "m6", "m8"]
    assert got[0][2] == stamp(base + 120)                   # the original time
    error, got, _ = await query(a, field("with", f"{bob}/nowhere"))
    assert error is None and got == []
    await a.close()


async def test_paging_forward_backward_flip_and_the_page_limit(server, history):
    ann, *_ = history
    a, = await logged_in(server, ann)
    error, first, fin = await query(a, rsm="<max>5</max>")
    assert [b for _, b, _ in first] == ["m0", "m1", "m2", "m3", "m4"]
    assert fin.get("complete") in (None, "false")
    assert rsm_of(fin)["first"] == first[0][0] and rsm_of(fin)["last"] == first[-1][0]
    error, nxt, fin = await query(a, rsm=f"<max>5</max><after>{first[-1][0]}</after>")
    assert [b for _, b, _ in nxt] == ["m5", "m6", "m7", "m8", "m9"]
    # more than max_page asked: max_page given, and not complete
    error, big, fin = await query(a, rsm=f"<max>500</max><after>{first[0][0]}</after>")
    assert len(big) == MAX_PAGE and fin.get("complete") in (None, "false")
    # the last page (empty <before/>), in chronological order, complete only at the start
    error, last, fin = await query(a, rsm="<max>3</max><before/>")
    assert [b for _, b, _ in last] == ["m9", "m10", "m11"]
    assert fin.get("complete") in (None, "false")
    assert rsm_of(fin)["first"] == last[0][0]
    error, back, fin = await query(a, rsm=f"<max>5</max><before>{first[2][0]}</before>")
    assert [b for _, b, _ in back] == ["m0", "m1"] and fin.get("complete") == "true"
    # flip-page: the same page, newest first
    error, flipped, fin = await query(a, rsm="<max>3</max><before/>", flip=True)
    assert [b for _, b, _ in flipped] == ["m11", "m10", "m9"]
    assert rsm_of(fin)["first"] == last[0][0]
    # the count alone (XEP-0059 §2.6)
    error, none, fin = await query(a, field("with", history[1]), rsm="<max>0</max>")
    assert none == [] and rsm_of(fin)["count"] == "6"
    # an id the archive does not hold
    error, _, _ = await query(a, rsm="<after>no-such-id</after>")
    assert error == "item-not-found"
    await a.close()


async def test_extended_fields_and_errors(server, history):
    ann, *_ = history
    a, = await logged_in(server, ann)
    _, every, _ = await query(a, rsm="<max>7</max>")
    ids = [i for i, _, _ in every]
    error, got, _ = await query(a, field("after-id", ids[1]), field("before-id", ids[5]))
    assert error is None and [b for _, b, _ in got] == ["m2", "m3", "m4"]
    error, got, _ = await query(a, field("ids", ids[4], ids[0]))
    assert [b for _, b, _ in got] == ["m0", "m4"]
    assert (await query(a, field("ids", "nope")))[0] == "item-not-found"
    assert (await query(a, field("before-id", "nope")))[0] == "item-not-found"
    assert (await query(a, field("colour", "red")))[0] == "feature-not-implemented"
    assert (await query(a, field("start", "yesterday")))[0] == "bad-request"
    assert (await query(a, rsm="<max>-1</max>"))[0] == "bad-request"
    assert (await query(a, rsm="<index>3</index>"))[0] == "feature-not-implemented"
    # someone else's archive
    assert (await query(a, to=history[1]))[0] == "forbidden"
    await a.close()


async def test_form_metadata_and_disco(server, history):
    ann, *_ = history
    a, = await logged_in(server, ann)
    form = await a.plugin["xep_0313"].get_fields()
    assert {"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"} <= \
        {f["var"] for f in form["fields"]}
    meta = await a.plugin["xep_0313"].get_archive_metadata()
    _, every, _ = await query(a, rsm="<max>7</max>")
    assert meta["mam_metadata"]["start"]["id"] == every[0][0]
    _, last, _ = await query(a, rsm="<max>1</max><before/>")
    assert meta["mam_metadata"]["end"]["id"] == last[0][0]
    a.register_plugin("xep_0030")
    info = await a.plugin["xep_0030"].get_info(jid=ann)
    features = set(info["disco_info"]["features"])
    assert {MAM, f"{MAM}#extended", SID, IMPORT} <= features
    await a.close()


async def test_preferences_never_and_roster(server):
    ann, bob, cat = users(server, 3)
    a, b, c = await logged_in(server, ann, bob, cat)
    error, answer = await ask(a, "set", f"<prefs xmlns='{MAM}' default='roster'><always>"
                                        f"<jid>{cat.upper()}</jid></always><never>"
                                        f"<jid>{bob}/Phone</jid></never></prefs>")
    assert error is None
    prefs = answer.find(f"{{{MAM}}}prefs")
    assert prefs.get("default") == "roster"
    assert [j.text for j in prefs.find(f"{{{MAM}}}always")] == [cat]   # normalised
    assert [j.text for j in prefs.find(f"{{{MAM}}}never")] == [f"{bob}/Phone"]
    error, answer = await ask(a, "get", f"<prefs xmlns='{MAM}'/>")
    assert answer.find(f"{{{MAM}}}prefs").get("default") == "roster"
    # bob is not in ann's roster: not archived for ann (bob keeps his own)
    b.make_message(mto=ann, mbody="from bob", mtype="chat").send()
    c.make_message(mto=ann, mbody="from cat", mtype="chat").send()
    for _ in range(2):
        await next_message(a)
    _, got, _ = await query(a)
    assert [body for _, body, _ in got] == ["from cat"]
    _, got, _ = await query(b)
    assert [body for _, body, _ in got] == ["from bob"]
    # never: that contact's messages are not kept on that side
    await ask(a, "set", f"<prefs xmlns='{MAM}' default='always'><never><jid>{cat}</jid>"
                        "</never></prefs>")
    c.make_message(mto=ann, mbody="cat again", mtype="chat").send()
    b.make_message(mto=ann, mbody="bob again", mtype="chat").send()
    for _ in range(2):
        await next_message(a)
    _, got, _ = await query(a)
    assert [body for _, body, _ in got] == ["from cat", "bob again"]
    assert (await ask(a, "set", f"<prefs xmlns='{MAM}' default='sometimes'/>"))[0] == \
        "bad-request"
    for client in (a, b, c):
        await client.close()


# -- the history import ---------------------------------------------------------------------

async def test_history_import(server):
    ann, bob = users(server)
    a, b = await logged_in(server, ann, bob)
    now = time.time()
    items = [("x1", now - 7200, bob, "old one", True), ("x2", now - 7100, bob, "old two", False)]
    error, answer = await ask(a, "set", import_payload("ann@old.example", items, ann))
    assert error is None and imported_count(answer) == 2
    # re-sent: skipped
    error, answer = await ask(a, "set", import_payload("ann@old.example", items, ann))
    assert error is None and imported_count(answer) == 0
    # imported entries sort before newer live ones, keep their time, lose old stanza-ids
    b.make_message(mto=ann, mbody="live", mtype="chat").send()
    await next_message(a)
    _, got, _ = await query(a)
    assert [body for _, body, _ in got] == ["old one", "old two", "live"]
    assert got[0][2] == stamp(now - 7200)
    assert all(i not in ("x1", "x2") for i, _, _ in got)
    # someone else's archive: refused
    error, _ = await ask(a, "set", import_payload("ann@old.example", items, bob), to=bob)
    assert error == "forbidden"
    # a message that is not the account's, or from the future: nothing of the IQ stored
    bad = [("y1", now - 60, bob, "fine", True)]
    error, _ = await ask(a, "set", import_payload("ann@old.example", bad, ann).replace(
        "</import>", import_payload("x@old.example", [("y2", now - 50, bob, "bob's", True)],
                                    "cat@localhost").split(">", 1)[1]))
    assert error == "bad-request"
    error, _ = await ask(a, "set", import_payload(
        "ann@old.example", bad + [("y3", now + 3600, bob, "later", True)], ann))
    assert error == "bad-request"
    _, got, _ = await query(a)
    assert [body for _, body, _ in got] == ["old one", "old two", "live"]
    for client in (a, b):
        await client.close()


# -- life cycle -----------------------------------------------------------------------------

async def test_deleting_the_account_deletes_its_archive(server):
    ann, bob = users(server)
    a, b = await logged_in(server, ann, bob)
    a.make_message(mto=bob, mbody="soon gone", mtype="chat").send()
    await next_message(b)
    await a.close()
    assert server.cli("deluser", ann).returncode == 0
    assert server.cli("adduser", ann, input="pw\n").returncode == 0
    a, = await logged_in(server, ann)
    _, got, fin = await query(a)
    assert got == [] and fin.get("complete") == "true"
    error, answer = await ask(a, "get", f"<metadata xmlns='{MAM}'/>")
    assert len(answer.find(f"{{{MAM}}}metadata")) == 0
    _, got, _ = await query(b)                  # bob's copy is bob's
    assert [body for _, body, _ in got] == ["soon gone"]
    for client in (a, b):
        await client.close()


async def test_retention_deletes_old_entries(make_server):
    server = make_server(mam={"retention_days": 1})
    server.cli("adduser", "ann@localhost", input="pw\n")
    a, = await logged_in(server, "ann@localhost")
    now = time.time()
    items = [(f"r{n}", now - 86400 * days, "bob@localhost", f"{days} days", False)
             for n, days in enumerate((3, 2, 0.5))]
    error, answer = await ask(a, "set", import_payload("ann@old.example", items,
                                                       "ann@localhost"))
    assert imported_count(answer) == 3
    await a.close()
    server.stop()
    server.start()                      # expiry runs before the server reports itself up
    a, = await logged_in(server, "ann@localhost")
    _, got, _ = await query(a)
    assert [body for _, body, _ in got] == ["0.5 days"]
    await a.close()


async def test_switched_off(make_server):
    server = make_server(mam={"enabled": False})
    ann, bob = users(server)
    a, b = await logged_in(server, ann, bob)
    a.make_message(mto=bob, mbody="unrecorded", mtype="chat").send()
    got = (await next_message(b)).xml
    assert got.find(f"{{{SID}}}stanza-id") is None
    assert (await query(a))[0] == "service-unavailable"
    a.register_plugin("xep_0030")
    info = await a.plugin["xep_0030"].get_info(jid=ann)
    assert MAM not in info["disco_info"]["features"]
    for client in (a, b):
        await client.close()
