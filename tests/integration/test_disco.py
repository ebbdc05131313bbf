"""XEP-0030 Service Discovery: the domain, and accounts' bare JIDs answered by
the server (identity account/registered, RFC 6121 §8.5.1 for unknown users)."""



from tests.harness import ask, login

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"


async def ask_get(client, payload: str, to: str | None = None):
    return await ask(client, "get", payload, to)


async def disco_client(server, jid: str, password: str):
    client = await login(server, jid, password)
    client.register_plugin("xep_0030")
    return client


async def test_domain_info_lists_the_enabled_features(server):
    alice = await disco_client(server, "alice@localhost/d", "alice-pass")
    info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=10)
    assert ("server", "im", None, "xferd") in info["disco_info"]["identities"]
    features = set(info["disco_info"]["features"])
    assert {INFO, ITEMS, "urn:xmpp:ping", "jabber:iq:private", "vcard-temp",
            "urn:xmpp:blocking"} <= features
    items = await alice.plugin["xep_0030"].get_items(jid="localhost", timeout=10)
    assert list(items["disco_items"]["items"]) == []
    await alice.close()


async def test_another_users_account_info(server):
    bob = await disco_client(server, "bob@localhost/d", "bob-pass")
    info = await bob.plugin["xep_0030"].get_info(jid="alice@localhost", timeout=10)
    assert info["from"] == "alice@localhost"
    identities = {(category, kind) for category, kind, _, _ in info["disco_info"]["identities"]}
    assert ("account", "registered") in identities
    assert INFO in info["disco_info"]["features"]
    await bob.close()


async def test_own_account_info_and_items(server):
    alice = await disco_client(server, "alice@localhost/d", "alice-pass")
    error, answer = await ask_get(alice, f"<query xmlns='{INFO}'/>", to="alice@localhost")
    assert error is None
    identity = answer.find(f"{{{INFO}}}query/{{{INFO}}}identity[@category='account']")
    assert identity.get("type") == "registered"
    features = {f.get("var") for f in answer.iter(f"{{{INFO}}}feature")}
    assert {INFO, ITEMS} <= features
    # an account's vCard is served for it; private XML only to its owner, via the server
    assert "vcard-temp" in features
    assert "jabber:iq:private" not in features
    error, answer = await ask_get(alice, f"<query xmlns='{ITEMS}'/>", to="alice@localhost")
    assert error is None
    assert len(answer.find(f"{{{ITEMS}}}query")) == 0
    await alice.close()


async def test_unknown_user_is_service_unavailable(server):
    alice = await disco_client(server, "alice@localhost/d", "alice-pass")
    for ns in (INFO, ITEMS):
        error, _ = await ask_get(alice, f"<query xmlns='{ns}'/>", to="nobody@localhost")
        assert error == "service-unavailable", ns
    await alice.close()


async def test_unknown_node_is_item_not_found(server):
    alice = await disco_client(server, "alice@localhost/d", "alice-pass")
    for to in ("localhost", "bob@localhost"):
        for ns in (INFO, ITEMS):
            error, _ = await ask_get(alice, f"<query xmlns='{ns}' node='no-such-node'/>", to=to)
            assert error == "item-not-found", (to, ns)
    await alice.close()
