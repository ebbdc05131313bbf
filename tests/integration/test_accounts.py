"""Accounts: in-band registration (XEP-0077), password change, removal,
failed-login throttling, and the account commands of the CLI."""

import asyncio
import sqlite3

import slixmpp

import pytest

from tests.harness import SASL, Client, RawClient, XferdProcess, login

REGISTER = "jabber:iq:register"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The usual module server (alice and bob), registering without a
    per-address limit: these tests create several accounts from 127.0.0.1.
    The limit itself is tested in test_hostile_auth.py."""
    proc = XferdProcess(tmp_path_factory.mktemp("xferd"),
                        overrides={"registration": {"max_per_address": 0}})
    proc.adduser("alice@localhost", "alice-pass")
    proc.adduser("bob@localhost", "bob-pass")
    proc.start()
    yield proc
    proc.stop()


class Registrant(Client):
    """slixmpp's XEP-0077 plugin, registering before it logs in."""

    def __init__(self, jid, password, **kwargs):
        super().__init__(jid, password, **kwargs)
        self.register_plugin("xep_0077")
        self.plugin["xep_0077"].force_registration = True
        self.registration_errors = []
        self.add_event_handler("register", self._register)

    async def _register(self, _):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send()
        except slixmpp.exceptions.IqError as exc:
            self.registration_errors.append(exc.iq["error"]["condition"])
            self.disconnect()


async def test_registration_creates_an_account_that_can_log_in(server):
    newcomer = await login(server, "dora@localhost/reg", "dora-pass", client_cls=Registrant)
    assert str(newcomer.boundjid) == "dora@localhost/reg"
    await newcomer.close()
    again = await login(server, "dora@localhost/again", "dora-pass", mechanism="SCRAM-SHA-1")
    await again.close()
    assert "dora@localhost" in server.cli("users").stdout.split()


async def test_registering_a_taken_name_is_a_conflict(server):
    client = await login(server, "alice@localhost/reg", "other-pass", client_cls=Registrant,
                         expect="disconnected")
    assert client.registration_errors == ["conflict"]
    # alice's password did not change
    alice = await login(server, "alice@localhost/ok", "alice-pass")
    await alice.close()


async def test_registration_form_and_bad_username(server):
    raw = await RawClient.connect(server.c2s_port)
    await raw.secure(server.cert())
    raw.send(f"<iq type='get' id='f'><query xmlns='{REGISTER}'/></iq>")
    form = await raw.expect("iq")
    query = form.find(f"{{{REGISTER}}}query")
    assert query.find(f"{{{REGISTER}}}username") is not None
    assert query.find(f"{{{REGISTER}}}password") is not None
    raw.send(f"<iq type='set' id='r'><query xmlns='{REGISTER}'><username>bad@name</username>"
             f"<password>x</password></query></iq>")
    reply = await raw.expect("iq")
    assert reply.get("type") == "error"
    assert reply.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}not-acceptable") is not None
    await raw.close()


async def test_registration_by_data_form_as_dino_does_it(server):
    """XEP-0077 §6: the form also comes as a data form (XEP-0004) whose
    FORM_TYPE is jabber:iq:register, with username and password required;
    a client that only speaks data forms (Dino) submits it, and the account
    it creates logs in. Without the data form, Dino offers no way to sign up."""
    data = "jabber:x:data"
    raw = await RawClient.connect(server.c2s_port)
    await raw.secure(server.cert())
    raw.send(f"<iq type='get' id='f'><query xmlns='{REGISTER}'/></iq>")
    query = (await raw.expect("iq")).find(f"{{{REGISTER}}}query")
    form = query.find(f"{{{data}}}x")
    assert form is not None and form.get("type") == "form"
    fields = {f.get("var"): f for f in form.findall(f"{{{data}}}field")}
    assert fields["FORM_TYPE"].get("type") == "hidden"
    assert fields["FORM_TYPE"].findtext(f"{{{data}}}value") == REGISTER
    assert fields["username"].find(f"{{{data}}}required") is not None
    assert fields["password"].get("type") == "text-private"
    assert fields["password"].find(f"{{{data}}}required") is not None
    raw.send(f"<iq type='set' id='r'><query xmlns='{REGISTER}'>"
             f"<x xmlns='{data}' type='submit'>"
             f"<field var='FORM_TYPE'><value>{REGISTER}</value></field>"
             f"<field var='username'><value>gina</value></field>"
             f"<field var='password'><value>gina-pass</value></field>"
             f"</x></query></iq>")
    reply = await raw.expect("iq")
    assert reply.get("type") == "result", reply.get("type")
    await raw.close()
    gina = await login(server, "gina@localhost/dino", "gina-pass")
    await gina.close()


async def test_registration_can_be_switched_off(make_server):
    srv = make_server(**{'hosts."localhost"': {"registration": False}})
    raw = await RawClient.connect(srv.c2s_port)
    features = await raw.secure(srv.cert())
    assert features.find("{http://jabber.org/features/iq-register}register") is None
    raw.send(f"<iq type='set' id='r'><query xmlns='{REGISTER}'><username>eve</username>"
             f"<password>x</password></query></iq>")
    reply = await raw.expect("iq")
    assert reply.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
    assert "eve@localhost" not in srv.cli("users").stdout
    await raw.close()


async def test_logged_in_user_changes_password_and_removes_account(server):
    server.adduser("frank@localhost", "old-pass")
    frank = await login(server, "frank@localhost/p", "old-pass")
    iq = frank.Iq(stype="set")
    iq["register"]["username"] = "frank"
    iq["register"]["password"] = "new-pass"
    await iq.send(timeout=10)
    await frank.close()
    await (await login(server, "frank@localhost/n", "new-pass")).close()
    old = await login(server, "frank@localhost/o", "old-pass", expect="failed_auth")
    await old.close()

    frank = await login(server, "frank@localhost/r", "new-pass")
    iq = frank.Iq(stype="set")
    iq["register"]["remove"] = True
    await iq.send(timeout=10)
    await asyncio.wait_for(frank.gone, 10)
    assert "frank@localhost" not in server.cli("users").stdout
    gone = await login(server, "frank@localhost/g", "new-pass", expect="failed_auth")
    await gone.close()


async def test_failed_logins_are_throttled_per_account(make_server):
    srv = make_server(auth={"max_failures": 3, "failure_window": 60})
    srv.adduser("gina@localhost", "gina-pass")
    for _ in range(3):
        bad = await login(srv, "gina@localhost/x", "wrong", mechanism="PLAIN", expect="failed_auth")
        assert bad.auth_failures[0] == "not-authorized"
        await bad.close()
    # now even the right password is refused from this address for a while ...
    raw = await RawClient.connect(srv.c2s_port)
    await raw.secure(srv.cert())
    raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGdpbmEAZ2luYS1wYXNz</auth>")
    failure = await raw.expect("failure")
    assert failure[0].tag == f"{{{SASL}}}temporary-auth-failure"
    await raw.close()
    # ... while other accounts are unaffected
    srv.adduser("hal@localhost", "hal-pass")
    await (await login(srv, "hal@localhost/y", "hal-pass")).close()


async def test_failed_logins_are_throttled_per_ip(make_server):
    srv = make_server(auth={"max_failures_per_ip": 2, "failure_window": 60})
    srv.adduser("ida@localhost", "ida-pass")
    for user in ("x1", "x2"):
        bad = await login(srv, f"{user}@localhost/x", "wrong", expect="failed_auth")
        await bad.close()
    blocked = await login(srv, "ida@localhost/x", "ida-pass", mechanism="PLAIN",
                          expect="failed_auth")
    assert blocked.auth_failures[0] == "temporary-auth-failure"
    await blocked.close()
    # the administrator can read why in the log
    srv.wait_for_log("authentication as x1@localhost failed: not-authorized")
    srv.wait_for_log("authentication refused: too many failures from 127.0.0.1")


async def test_unauthenticated_connections_time_out(make_server, server):
    srv = make_server(c2s={"auth_timeout": 1})
    raw = await RawClient.connect(srv.c2s_port)
    await raw.open_stream()
    assert await raw.stream_error(timeout=5) == "connection-timeout"
    assert await raw.wait_closed()


def test_cli_account_commands(make_server):
    srv = make_server(start=False)
    unstarted = srv.cli("adduser", "jane@localhost", input="first-pass\n")
    assert unstarted.returncode == 1 and "no database" in unstarted.stderr
    assert "--init" in unstarted.stderr and not srv.data_dir.exists()
    added = srv.cli("adduser", "--init", "jane@localhost", input="first-pass\n")
    assert added.returncode == 0 and "created jane@localhost" in added.stdout
    dup = srv.cli("adduser", "jane@localhost", input="x\n")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    assert srv.cli("users").stdout.split() == ["jane@localhost"]
    changed = srv.cli("passwd", "jane@localhost", input="second-pass\n")
    assert changed.returncode == 0
    wrong_host = srv.cli("adduser", "kim@example.org", input="x\n")
    assert wrong_host.returncode == 1 and "not a host of this server" in wrong_host.stderr
    bad_jid = srv.cli("adduser", "not a jid", input="x\n")
    assert bad_jid.returncode == 1 and "must look like user@domain" in bad_jid.stderr or \
        "not a valid JID" in bad_jid.stderr
    empty = srv.cli("adduser", "kim@localhost", input="\n")
    assert empty.returncode == 1 and "must not be empty" in empty.stderr

    # nothing but SCRAM keys at rest
    db = sqlite3.connect(srv.data_dir / "xferd.sqlite")
    dump = "\n".join(db.iterdump())
    db.close()
    assert "first-pass" not in dump and "second-pass" not in dump
    assert "SCRAM-SHA-256" in dump and "SCRAM-SHA-1" in dump

    assert srv.cli("deluser", "jane@localhost").returncode == 0
    assert srv.cli("users").stdout == ""
    missing = srv.cli("deluser", "jane@localhost")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


async def test_cli_password_change_takes_effect_on_a_running_server(make_server):
    srv = make_server()
    srv.adduser("lea@localhost", "before")
    await (await login(srv, "lea@localhost/a", "before")).close()
    assert srv.cli("passwd", "lea@localhost", input="after\n").returncode == 0
    await (await login(srv, "lea@localhost/b", "after", mechanism="SCRAM-SHA-1")).close()
    stale = await login(srv, "lea@localhost/c", "before", expect="failed_auth")
    await stale.close()


def test_cli_cert_makes_a_usable_certificate(make_server):
    import ssl
    srv = make_server(start=False)
    made = srv.cli("cert", "example.test")
    assert made.returncode == 0, made.stderr
    cert = srv.data_dir / "certs" / "example.test.crt"
    key = srv.data_dir / "certs" / "example.test.key"
    assert cert.exists() and (key.stat().st_mode & 0o777) == 0o600
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)          # the pair matches
    again = srv.cli("cert", "example.test")
    assert again.returncode == 1 and "--force" in again.stderr
    assert srv.cli("cert", "example.test", "--force").returncode == 0


def test_bad_config_names_the_key(make_server):
    srv = make_server(start=False)
    srv.config.write_text('[c2s]\nprot = 5222\n')
    done = srv.cli("users")
    assert done.returncode == 2
    assert "unknown key c2s.prot" in done.stderr and "did you mean 'port'" in done.stderr
