"""XEP-0030 Service Discovery: the domain, and accounts' bare JIDs answered by
the server (identity account/registered, RFC 6121 §8.5.1 for unknown users)."""

import asyncio

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


async def test_what_a_client_asks_at_login_is_answered(server):
    """The queries Gajim sends when an account connects and when it shows the
    server's info, pipelined as it does: disco#info of the domain without a
    caps node (XEP-0030 §3.1) and its items (§4.1), software version
    (XEP-0092), uptime (XEP-0012 §5), ping (XEP-0199 §4.2), disco#info of the
    account's own bare JID (where it looks for PEP, XEP-0163 §4, and MAM),
    the roster (RFC 6121 §2.1.3), the blocklist (XEP-0191 §3.2) and the own
    vCard (XEP-0054 §3.1, for the avatar). Each one is a result, with what a
    client reads out of it."""
    alice = await login(server, "alice@localhost/gajim", "alice-pass")
    queries = {
        "info": ("localhost", f"<query xmlns='{INFO}'/>"),
        "items": ("localhost", f"<query xmlns='{ITEMS}'/>"),
        "version": ("localhost", "<query xmlns='jabber:iq:version'/>"),
        "uptime": ("localhost", "<query xmlns='jabber:iq:last'/>"),
        "ping": ("localhost", "<ping xmlns='urn:xmpp:ping'/>"),
        "account": ("alice@localhost", f"<query xmlns='{INFO}'/>"),
        "roster": (None, "<query xmlns='jabber:iq:roster'/>"),
        "blocklist": (None, "<blocklist xmlns='urn:xmpp:blocking'/>"),
        "vcard": (None, "<vCard xmlns='vcard-temp'/>"),
    }
    answers = dict(zip(queries, await asyncio.gather(
        *(ask_get(alice, payload, to) for to, payload in queries.values()))))
    for name, (error, answer) in answers.items():
        assert error is None, (name, error)
        assert answer.get("type") == "result", name
        expected_from = queries[name][0]
        if expected_from is not None:
            assert answer.get("from") == expected_from, (name, answer.get("from"))

    info = answers["info"][1].find(f"{{{INFO}}}query")
    assert info.get("node") is None
    identities = {(i.get("category"), i.get("type")) for i in info.iter(f"{{{INFO}}}identity")}
    assert ("server", "im") in identities
    features = {f.get("var") for f in info.iter(f"{{{INFO}}}feature")}
    assert {INFO, ITEMS, "jabber:iq:version", "jabber:iq:last", "urn:xmpp:ping",
            "vcard-temp", "urn:xmpp:blocking", "msgoffline"} <= features
    assert answers["items"][1].find(f"{{{ITEMS}}}query") is not None

    version = answers["version"][1].find("{jabber:iq:version}query")
    assert version.findtext("{jabber:iq:version}name") == "xferd"
    assert version.findtext("{jabber:iq:version}version")
    uptime = answers["uptime"][1].find("{jabber:iq:last}query")
    assert int(uptime.get("seconds")) >= 0

    account = answers["account"][1].find(f"{{{INFO}}}query")
    identities = {(i.get("category"), i.get("type")) for i in account.iter(f"{{{INFO}}}identity")}
    assert {("account", "registered"), ("pubsub", "pep")} <= identities
    features = {f.get("var") for f in account.iter(f"{{{INFO}}}feature")}
    assert {"http://jabber.org/protocol/pubsub#publish", "jabber:iq:last",
            "vcard-temp"} <= features

    assert answers["roster"][1].find("{jabber:iq:roster}query") is not None
    assert answers["blocklist"][1].find("{urn:xmpp:blocking}blocklist") is not None
    assert answers["vcard"][1].find("{vcard-temp}vCard") is not None
    await alice.close()
