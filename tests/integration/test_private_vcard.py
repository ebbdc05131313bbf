"""XEP-0049 Private XML Storage and XEP-0054 vcard-temp against a real server:
round trips, the error conditions of both modules, who may read what, and
that everything is still there after a restart."""



from tests.harness import ask, login

PRIVATE = "jabber:iq:private"
VCARD = "vcard-temp"


def private(*fragments: str) -> str:
    return f"<query xmlns='{PRIVATE}'>{''.join(fragments)}</query>"


# -- XEP-0049 ----------------------------------------------------------------------------

async def test_private_fragments_round_trip(server):
    alice = await login(server, "alice@localhost/pv", "alice-pass")
    error, _ = await ask(alice, "set", private(
        "<prefs xmlns='urn:example:prefs'><nick>Al</nick><colour tone='dark'>blue</colour></prefs>",
        "<notes xmlns='urn:example:notes'>remember the milk</notes>"))
    assert error is None
    error, answer = await ask(alice, "get", private("<prefs xmlns='urn:example:prefs'/>"))
    assert error is None
    prefs = answer.find(f"{{{PRIVATE}}}query/{{urn:example:prefs}}prefs")
    assert prefs.findtext("{urn:example:prefs}nick") == "Al"
    assert prefs.find("{urn:example:prefs}colour").get("tone") == "dark"
    error, answer = await ask(alice, "get", private("<notes xmlns='urn:example:notes'/>"))
    assert answer.findtext(f"{{{PRIVATE}}}query/{{urn:example:notes}}notes") == "remember the milk"
    # a later set replaces the fragment with the same name, and leaves the others
    await ask(alice, "set", private("<prefs xmlns='urn:example:prefs'><nick>Alice</nick></prefs>"))
    _, answer = await ask(alice, "get", private("<prefs xmlns='urn:example:prefs'/>"))
    assert answer.findtext(f".//{{urn:example:prefs}}nick") == "Alice"
    assert answer.find(f".//{{urn:example:prefs}}colour") is None
    _, answer = await ask(alice, "get", private("<notes xmlns='urn:example:notes'/>"))
    assert answer.findtext(f".//{{urn:example:notes}}notes") == "remember the milk"
    # addressing one's own bare JID is the same as no 'to'
    _, answer = await ask(alice, "get", private("<notes xmlns='urn:example:notes'/>"),
                          to="alice@localhost")
    assert answer.findtext(f".//{{urn:example:notes}}notes") == "remember the milk"
    await alice.close()


async def test_nothing_stored_echoes_the_empty_element(server):
    alice = await login(server, "alice@localhost/pv", "alice-pass")
    error, answer = await ask(alice, "get", private("<never xmlns='urn:example:never'/>"))
    assert error is None
    query = answer.find(f"{{{PRIVATE}}}query")
    assert [child.tag for child in query] == ["{urn:example:never}never"]
    assert len(query[0]) == 0
    await alice.close()


async def test_private_storage_errors(server):
    alice = await login(server, "alice@localhost/pv", "alice-pass")
    # a set needs at least one child, each in a namespace of its own (§2.3)
    assert (await ask(alice, "set", private()))[0] == "not-acceptable"
    assert (await ask(alice, "set", private("<plain/>")))[0] == "not-acceptable"
    # a get names what it wants
    assert (await ask(alice, "get", private()))[0] == "bad-request"
    assert (await ask(alice, "get", private("<a xmlns='urn:example:a'/>",
                                            "<b xmlns='urn:example:b'/>")))[0] == "bad-request"
    # reserved namespaces are refused both ways
    for fragment in ("<vCard xmlns='vcard-temp'><FN>A</FN></vCard>",
                     "<query xmlns='jabber:iq:roster'/>",
                     "<x xmlns='http://jabber.org/protocol/muc'/>"):
        assert (await ask(alice, "set", private(fragment)))[0] == "not-acceptable", fragment
        assert (await ask(alice, "get", private(fragment)))[0] == "not-acceptable", fragment
    # nothing of a refused set was stored, even the acceptable part
    error, _ = await ask(alice, "set", private("<ok xmlns='urn:example:ok'>1</ok>",
                                               "<vCard xmlns='vcard-temp'/>"))
    assert error == "not-acceptable"
    _, answer = await ask(alice, "get", private("<ok xmlns='urn:example:ok'/>"))
    assert answer.findtext(f".//{{urn:example:ok}}ok") == ""      # the empty echo
    await alice.close()


async def test_another_user_cannot_read_or_write_private_xml(server):
    alice = await login(server, "alice@localhost/pv", "alice-pass")
    bob = await login(server, "bob@localhost/pv", "bob-pass")
    await ask(alice, "set", private("<secret xmlns='urn:example:secret'>42</secret>"))
    error, _ = await ask(bob, "get", private("<secret xmlns='urn:example:secret'/>"),
                         to="alice@localhost")
    assert error == "forbidden"
    error, _ = await ask(bob, "set", private("<secret xmlns='urn:example:secret'>0</secret>"),
                         to="alice@localhost")
    assert error == "forbidden"
    # bob's own storage is his own: he does not see alice's fragment
    _, answer = await ask(bob, "get", private("<secret xmlns='urn:example:secret'/>"))
    assert answer.findtext(f".//{{urn:example:secret}}secret") == ""
    _, answer = await ask(alice, "get", private("<secret xmlns='urn:example:secret'/>"))
    assert answer.findtext(f".//{{urn:example:secret}}secret") == "42"
    await alice.close()
    await bob.close()


async def test_private_storage_with_the_slixmpp_plugin(server):
    """slixmpp's XEP-0049 plugin, as a client would use it (XEP-0048 bookmarks)."""
    alice = await login(server, "alice@localhost/pv", "alice-pass")
    alice.register_plugin("xep_0048")
    await alice.plugin["xep_0048"].set_bookmarks(
        _bookmarks(alice, "room@muc.example.org", "Room"), method="xep_0049", timeout=10)
    answer = await alice.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=10)
    conferences = answer["private"]["bookmarks"]["conferences"]
    assert [str(c["jid"]) for c in conferences] == ["room@muc.example.org"]
    await alice.close()


def _bookmarks(client, room: str, name: str):
    from slixmpp.plugins.xep_0048 import Bookmarks
    bookmarks = Bookmarks()
    bookmarks.add_conference(room, "alice", name=name, autojoin=False)
    return bookmarks


# -- XEP-0054 ----------------------------------------------------------------------------

def vcard(*fields: str) -> str:
    return f"<vCard xmlns='{VCARD}'>{''.join(fields)}</vCard>"


async def test_own_vcard_starts_empty_and_round_trips(server):
    server.adduser("carol@localhost", "carol-pass")
    carol = await login(server, "carol@localhost/vc", "carol-pass")
    carol.register_plugin("xep_0054")
    error, answer = await ask(carol, "get", vcard())
    assert error is None
    empty = answer.find(f"{{{VCARD}}}vCard")
    assert empty is not None and len(empty) == 0
    card = carol.plugin["xep_0054"].make_vcard()
    card["FN"] = "Carol Example"
    card["NICKNAME"] = "caz"
    await carol.plugin["xep_0054"].publish_vcard(card, timeout=10)
    got = await carol.plugin["xep_0054"].get_vcard(cached=False, timeout=10)
    assert got["vcard_temp"]["FN"] == "Carol Example"
    assert "caz" in got["vcard_temp"]["NICKNAME"]
    await carol.close()


async def test_anyone_can_read_a_vcard(server):
    alice = await login(server, "alice@localhost/vc", "alice-pass")
    bob = await login(server, "bob@localhost/vc", "bob-pass")
    error, _ = await ask(alice, "set", vcard("<FN>Alice Liddell</FN><NICKNAME>al</NICKNAME>"))
    assert error is None
    bob.register_plugin("xep_0054")
    got = await bob.plugin["xep_0054"].get_vcard("alice@localhost", cached=False, timeout=10)
    assert got["from"] == "alice@localhost"
    assert got["vcard_temp"]["FN"] == "Alice Liddell"
    await alice.close()
    await bob.close()


async def test_vcard_errors(server):
    server.adduser("dave@localhost", "dave-pass")
    alice = await login(server, "alice@localhost/vc", "alice-pass")
    await ask(alice, "set", vcard("<FN>Alice</FN>"))
    bob = await login(server, "bob@localhost/vc", "bob-pass")
    # §3.2: only the owner may change it
    error, _ = await ask(bob, "set", vcard("<FN>Mallory</FN>"), to="alice@localhost")
    assert error == "forbidden"
    _, answer = await ask(bob, "get", vcard(), to="alice@localhost")
    assert answer.findtext(f".//{{{VCARD}}}FN") == "Alice"
    # §3.3 (version 1.3.0): no such user and no vCard give the same answer,
    # <service-unavailable/> "in both cases"
    assert (await ask(bob, "get", vcard(), to="nobody@localhost"))[0] == "service-unavailable"
    assert (await ask(bob, "get", vcard(), to="dave@localhost"))[0] == "service-unavailable"
    # larger than 64 KiB: refused, and the old vCard stays
    huge = vcard("<FN>Alice</FN><DESC>" + "x" * 70_000 + "</DESC>")
    assert (await ask(alice, "set", huge))[0] == "not-acceptable"
    _, answer = await ask(alice, "get", vcard())
    assert answer.findtext(f".//{{{VCARD}}}FN") == "Alice"
    await alice.close()
    await bob.close()


async def test_an_empty_vcard_is_stored_and_served(server):
    """XEP-0054 §3.2 replaces the whole vCard with what was sent, and §3.3
    serves "another user's vCard": an empty <vCard/> is stored like any other
    (the XEP defines no deletion), so others get it back, not an error."""
    server.adduser("erin@localhost", "erin-pass")
    erin = await login(server, "erin@localhost/vc", "erin-pass")
    bob = await login(server, "bob@localhost/vc", "bob-pass")
    await ask(erin, "set", vcard("<FN>Erin</FN>"))
    assert (await ask(bob, "get", vcard(), to="erin@localhost"))[0] is None
    assert (await ask(erin, "set", vcard()))[0] is None
    error, answer = await ask(bob, "get", vcard(), to="erin@localhost")
    assert error is None, error
    assert answer.get("from") == "erin@localhost"
    stored = answer.find(f"{{{VCARD}}}vCard")
    assert stored is not None and len(stored) == 0
    _, answer = await ask(erin, "get", vcard())
    assert len(answer.find(f"{{{VCARD}}}vCard")) == 0
    await erin.close()
    await bob.close()


async def test_slixmpp_vcard_flow_reads_an_emptied_vcard(server):
    """slixmpp's own vCard integration test, against us: publish an empty
    vCard, another user reads it (TITLE absent), publish one with a TITLE,
    the other reads that."""
    server.adduser("fran@localhost", "fran-pass")
    fran = await login(server, "fran@localhost/vc", "fran-pass")
    bob = await login(server, "bob@localhost/vc", "bob-pass")
    for client in (fran, bob):
        client.register_plugin("xep_0054")
    await fran.plugin["xep_0054"].publish_vcard(fran.plugin["xep_0054"].make_vcard(),
                                                timeout=10)
    got = await bob.plugin["xep_0054"].get_vcard("fran@localhost", cached=False, timeout=10)
    assert got["vcard_temp"]["TITLE"] is None
    card = fran.plugin["xep_0054"].make_vcard()
    card["TITLE"] = "Coucou coucou"
    await fran.plugin["xep_0054"].publish_vcard(card, timeout=10)
    got = await bob.plugin["xep_0054"].get_vcard("fran@localhost", cached=False, timeout=10)
    assert got["vcard_temp"]["TITLE"] == "Coucou coucou"
    await fran.close()
    await bob.close()


async def test_disco_announces_private_and_vcard(server):
    alice = await login(server, "alice@localhost/vc", "alice-pass")
    alice.register_plugin("xep_0030")
    info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=10)
    features = info["disco_info"]["features"]
    assert PRIVATE in features and VCARD in features
    await alice.close()


# -- persistence ---------------------------------------------------------------------------

async def test_private_xml_and_vcards_survive_a_restart(make_server):
    srv = make_server(start=False)
    srv.adduser("alice@localhost", "alice-pass")
    srv.adduser("bob@localhost", "bob-pass")
    srv.start()
    alice = await login(srv, "alice@localhost/r", "alice-pass")
    await ask(alice, "set", private("<prefs xmlns='urn:example:prefs'><nick>Al</nick></prefs>"))
    await ask(alice, "set", vcard("<FN>Alice Persistent</FN>"))
    await alice.close()
    srv.stop()
    srv.start()
    alice = await login(srv, "alice@localhost/r", "alice-pass")
    _, answer = await ask(alice, "get", private("<prefs xmlns='urn:example:prefs'/>"))
    assert answer.findtext(".//{urn:example:prefs}nick") == "Al"
    bob = await login(srv, "bob@localhost/r", "bob-pass")
    _, answer = await ask(bob, "get", vcard(), to="alice@localhost")
    assert answer.findtext(f".//{{{VCARD}}}FN") == "Alice Persistent"
    await alice.close()
    await bob.close()
