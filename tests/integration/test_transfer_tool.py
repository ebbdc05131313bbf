"""``xferd transfer`` run as a user would (``python -m server transfer`` in a
subprocess, passwords in the environment, certificates via --old-cafile and
--new-cafile) against real xferd processes federating over static routes.

old.test holds the moving account, new.test the new one, c.test contacts
with XEP-0015; d.test and e.test have it switched off (like Prosody or
ejabberd: the notice is ``service-unavailable`` and the new server falls back
to XEP-0283). d.test updates its users' rosters itself when it can verify
the move (XEP-0283 "Server-side processing of inbound moved notification",
like Prosody with mod_auto_moved); e.test does not (``[moved] auto_update =
false``, like ejabberd 23.01): its users must approve. gone.test is stopped
in the middle of one test to make a notice fail for real.
"""

import asyncio
import os
import sys

import pytest

from server.xmpp import transfer as x
from server.xmpp.jid import JID
from server.xmpp.stanza import E, iq
from server.tools.transfer import authorisation_reply
from tests.harness import REPO, XferdProcess, federate, tool_report
from tests.integration.test_accountxfer import befriend, online, wait_gone, wait_item

pytestmark = pytest.mark.timeout(240)
MOVED = "urn:xmpp:moved:1"
DOMAINS = ("old.test", "new.test", "c.test", "d.test", "e.test", "gone.test")
#: without XEP-0015
NO_XFER = ("d.test", "e.test")


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    overrides = {"accountxfer": {"notice_timeout": 5},
                 "s2s": {"dialback_timeout": 3, "connect_timeout": 2}}
    servers = {}
    for domain in DOMAINS:
        extra = {"accountxfer": {**overrides["accountxfer"], "enabled": domain not in NO_XFER},
                 "moved": {"auto_update": domain != "e.test"}}
        servers[domain] = XferdProcess(tmp_path_factory.mktemp(domain.split(".")[0]),
                                       domains=(domain,), overrides={**overrides, **extra})
    federate(servers)
    yield servers
    for proc in servers.values():
        proc.stop()


_n = iter(range(1, 10_000))


def accounts(fed, **names):
    """Fresh accounts with password 'pw', e.g. {"old": "old3@old.test"}."""
    n = next(_n)
    made = {}
    for who, domain in names.items():
        made[who] = f"{who}{n}@{domain}"
        fed[domain].adduser(made[who], "pw")
    return made


async def run_tool(fed, *args, old_password="pw", new_password="pw", timeout=120):
    """``xferd transfer ARGS`` with both servers' addresses and CAs (those of the
    --old and --new accounts' domains, else old.test and new.test); (status, stdout, stderr)."""
    env = dict(os.environ, XFERD_OLD_PASSWORD=old_password, XFERD_NEW_PASSWORD=new_password,
               PYTHONPATH=str(REPO))
    env.pop("XFERD_CONFIG", None)

    def domain(option: str, default: str) -> str:
        given = args[args.index(option) + 1] if option in args else ""
        return given.partition("@")[2] if given.partition("@")[2] in fed else default
    old_domain, new_domain = domain("--old", "old.test"), domain("--new", "new.test")
    old, new = fed[old_domain], fed[new_domain]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "transfer", *args,
        "--old-host", "127.0.0.1", "--old-port", str(old.c2s_port),
        "--new-host", "127.0.0.1", "--new-port", str(new.c2s_port),
        "--old-cafile", str(old.cert(old_domain)), "--new-cafile", str(new.cert(new_domain)),
        cwd=old.workdir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


report = tool_report


async def test_transfer_moves_every_contact_and_reports(fed):
    who = accounts(fed, alice="old.test", anew="new.test", bob="c.test", carol="c.test",
                   dan="d.test", erin="old.test")
    old = await online(fed["old.test"], who["alice"])
    others = {name: await online(fed[who[name].split("@")[1]], who[name])
              for name in ("bob", "carol", "dan", "erin")}
    for name, how in (("bob", "both"), ("carol", "to"), ("dan", "both"), ("erin", "from")):
        await befriend(old, who["alice"], others[name], who[name], how)
    old.update_roster("nobody@c.test", name="Just a name")            # subscription none
    old.update_roster("icq.gateway.test", name="transport")            # XEP-0015 §3.1
    await old.ping_server()                 # the roster set has been handled
    await old.close()

    code, out, err = await run_tool(fed, "--old", who["alice"], "--new", who["anew"])
    assert code == 0, out + err
    lines = report(out)
    assert lines[who["bob"]] == "updated"
    assert lines[who["carol"]] == "updated"
    assert lines[who["erin"]] == "updated"
    # d.test has no XEP-0015 but verified the move the XEP-0283 way and said yes
    assert lines[who["dan"]] == "auto-updated"
    assert lines["nobody@c.test"] == "roster only (not subscribed)"
    assert lines["icq.gateway.test"].startswith("left behind (transport")
    assert f"Transferred {who['alice']} → {who['anew']}" in out
    assert f"notified {who['bob']}" in err and "pre-authorised" in err
    assert f"no XEP-0015 at {who['dan']}'s server (service-unavailable)" in err

    # the contacts' rosters now name the new account, subscriptions kept
    await wait_gone(others["bob"], who["alice"])
    await wait_item(others["bob"], who["anew"], "both")
    await wait_item(others["carol"], who["anew"], "from")
    await wait_item(others["erin"], who["anew"], "to")
    await wait_item(others["dan"], who["anew"], "both")
    # the new account has the roster (transport left behind)
    new = await online(fed["new.test"], who["anew"])
    roster = await new.fetch_roster()
    assert {who[n] for n in ("bob", "carol", "dan", "erin")} | {"nobody@c.test"} == set(roster)
    assert roster[who["bob"]]["subscription"] == "both"
    for client in (new, *others.values()):
        await client.close()


async def test_contacts_without_xep0015_get_the_state_migrate_reports(fed):
    """Contacts whose server has no XEP-0015 are asked by the new server the
    XEP-0283 way, and the report gives each one's final state as ``xferd
    migrate`` does. XEP-0283, server-side processing: "Upon successful
    verification, the server MUST NOT forward the stanza to Romeo's clients,
    but instead MUST create a roster entry for the new JID … and then
    auto-reply to the subscription request with a presence of type
    'subscribed'" (d.test: ``auto-updated``); a server that does not verify
    processes it "as a normal subscription request" (e.test: the user is
    asked — ``waiting for manual approval`` — and may decline:
    ``failed: refused``). A contact that only saw the old account's presence
    is pre-approved, not asked (RFC 6121 §3.4)."""
    who = accounts(fed, ann="old.test", annie="new.test", dan="d.test", eve="e.test",
                   fay="e.test", ivy="e.test")
    old = await online(fed["old.test"], who["ann"])
    others = {name: await online(fed[who[name].split("@")[1]], who[name])
              for name in ("dan", "eve", "fay", "ivy")}
    for name, how in (("dan", "both"), ("eve", "both"), ("fay", "from"), ("ivy", "both")):
        await befriend(old, who["ann"], others[name], who[name], how)
    await old.close()

    tool = asyncio.ensure_future(run_tool(fed, "--old", who["ann"], "--new", who["annie"],
                                          "--wait", "5"))
    # eve and ivy are asked, with <moved/> naming the old account; ivy says no
    for name in ("eve", "ivy"):
        request = await others[name].next_presence(type="subscribe", sender=who["annie"],
                                                   timeout=30)
        assert request.xml.findtext(f"{{{MOVED}}}moved/{{{MOVED}}}old-jid") == who["ann"]
    others["ivy"].send_presence(pto=who["annie"], ptype="unsubscribed")
    code, out, err = await tool

    assert code == 1, out + err                     # ivy's refusal is a failure
    lines = report(out)
    assert lines == {
        who["dan"]: "auto-updated",
        who["eve"]: "waiting for manual approval",
        who["fay"]: f"waiting for manual approval (pre-approved: accepted once they add "
                    f"{who['annie']})",
        who["ivy"]: "failed: refused (unsubscribed): the contact declined or does not exist",
    }, out
    assert "1 auto-updated, 2 waiting for manual approval, 1 failed" in out
    assert "fallback" not in out
    assert "[5/5] waiting up to 5 s for answers from 3 contact(s)" in err
    # what the contacts see: dan's server moved him; eve still has the question
    await wait_item(others["dan"], who["annie"], "both")
    assert (await others["eve"].fetch_roster())[who["ann"]]["subscription"] == "both"
    for client in others.values():
        await client.close()


async def test_the_server_without_xep0015_is_named(fed):
    """A server without XEP-0015 answers ``<service-unavailable/>`` (RFC 6120
    §8.3.3.19: "the feature requested is not available"): the new account's
    server to the old server's question B, which the old server passes on to
    the user as its answer to A; or the old server to A itself. The tool says
    which server refused."""
    who = accounts(fed, kay="old.test", kai="d.test", lee="d.test", leo="new.test")
    code, out, err = await run_tool(fed, "--old", who["kay"], "--new", who["kai"])
    assert code == 1, out + err
    assert ("d.test, the new account's server, does not offer XEP-0015 account transfer: it "
            "refused old.test's authorisation request") in err, err
    assert "the old account's server" not in err and "or the new account" not in err

    code, out, err = await run_tool(fed, "--old", who["lee"], "--new", who["leo"])
    assert code == 1, out + err
    assert "d.test, the old account's server, does not offer XEP-0015 account transfer" in err
    assert "the new account's server" not in err


async def test_wrong_password_is_a_login_error(fed):
    who = accounts(fed, ann="old.test", anne="new.test")
    code, out, err = await run_tool(fed, "--old", who["ann"], "--new", who["anne"],
                                    old_password="wrong")
    assert code == 2
    assert f"cannot log in to the old account {who['ann']}: not-authorized" in err
    code, _, err = await run_tool(fed, "--old", who["ann"], "--new", who["anne"],
                                  new_password="wrong")
    assert code == 2 and "cannot log in to the new account" in err
    assert out == ""


async def test_an_account_that_moved_cannot_move_again(fed):
    who = accounts(fed, gus="old.test", gust="new.test", gusto="new.test")
    code, out, err = await run_tool(fed, "--old", who["gus"], "--new", who["gust"])
    assert code == 0, out + err
    assert "no contacts" in out
    # again, to another account: the old server refuses the login and says where it went
    code, out, err = await run_tool(fed, "--old", who["gus"], "--new", who["gusto"])
    assert code == 1
    assert f"{who['gus']} has already moved to {who['gust']}" in err
    # status says the same, as the answer it is
    code, out, _ = await run_tool(fed, "status", "--old", who["gus"])
    assert code == 0 and f"{who['gus']} has moved to {who['gust']}" in out


async def test_status_without_a_transfer(fed):
    who = accounts(fed, hal="old.test")
    code, out, _ = await run_tool(fed, "status", "--old", who["hal"])
    assert code == 1 and f"no transfer recorded for {who['hal']}" in out


async def test_usage_errors(fed):
    code, _, err = await run_tool(fed, "--old", "a@old.test")
    assert code == 2 and "--new is required" in err
    code, _, err = await run_tool(fed, "--old", "a@old.test", "--new", "a@old.test")
    assert code == 2 and "same account" in err


async def test_an_unreachable_contact_fails_the_run(fed):
    who = accounts(fed, ivy="old.test", ivan="new.test", joe="c.test", kit="gone.test")
    old = await online(fed["old.test"], who["ivy"])
    joe = await online(fed["c.test"], who["joe"])
    kit = await online(fed["gone.test"], who["kit"])
    await befriend(old, who["ivy"], joe, who["joe"], "both")
    await befriend(old, who["ivy"], kit, who["kit"], "both")
    await kit.close()
    await old.close()
    fed["gone.test"].stop()                       # its domain cannot be reached any more

    code, out, err = await run_tool(fed, "--old", who["ivy"], "--new", who["ivan"])
    assert code == 1, out + err
    lines = report(out)
    assert lines[who["joe"]] == "updated"
    assert lines[who["kit"]].startswith("failed: remote-server-")
    await wait_item(joe, who["ivan"], "both")
    await joe.close()


def test_the_new_account_allows_only_the_transfer_it_runs():
    """The forwarded B (belt and braces next to the pre-authorisation)."""
    old, new = JID.parse("alice@old.test"), JID.parse("alice@new.test")
    b = iq("set", to="alice@new.test/xferd-transfer", from_="old.test", id="b1",
           payload=x.query(oldaccount=str(old), newaccount=str(new)))
    reply = authorisation_reply(b, old, new)
    assert (reply.get("type"), reply.get("to"), reply.get("id")) == ("result", "old.test", "b1")
    assert reply.find(f"{{{x.NS}}}query/{{{x.NS}}}allowed") is not None
    other = iq("set", from_="old.test", payload=x.query(oldaccount="mallory@old.test",
                                                         newaccount=str(new)))
    assert authorisation_reply(other, old, new).get("type") == "error"
    roster_push = iq("set", payload=E("{jabber:iq:roster}query"))
    assert authorisation_reply(roster_push, old, new) is None


async def test_without_preauthorisation_the_tool_answers_the_forwarded_question(fed,
                                                                              monkeypatch,
                                                                              caplog):
    """Belt and braces, in-process: H skipped (as on a server without it), the tool's
    new-account connection goes available and answers the forwarded B itself."""
    from server.tools import transfer as tool
    from server.xmpp.stanza import E as El
    from server.xmpp.stream import CLIENT_NS

    async def available_only(self):
        self.new.presence(children=[El(f"{{{CLIENT_NS}}}priority", text="0")])
    monkeypatch.setattr(tool.Transfer, "preauthorize", available_only)
    who = accounts(fed, lou="old.test", lulu="new.test", max="c.test")
    old = await online(fed["old.test"], who["lou"])
    contact = await online(fed["c.test"], who["max"])
    await befriend(old, who["lou"], contact, who["max"], "both")
    await old.close()
    old_srv, new_srv = fed["old.test"], fed["new.test"]
    opts = tool.Options(JID.parse(who["lou"]), JID.parse(who["lulu"]),
                        old_host="127.0.0.1", old_port=old_srv.c2s_port,
                        new_host="127.0.0.1", new_port=new_srv.c2s_port,
                        old_cafile=str(old_srv.cert("old.test")),
                        new_cafile=str(new_srv.cert("new.test")), timeout=60)
    caplog.set_level("INFO", logger="xferd.transfer")
    assert await tool.transfer(opts, "pw", "pw") == 0
    assert "the new server forwarded the authorisation request" in caplog.text
    await wait_item(contact, who["lulu"], "both")
    await contact.close()
