"""Password guessing that locks nobody out, and registration floods.

Failed logins count per account *and address* (``auth.max_failures``), plus
a slower pace per account over all addresses (``auth.account_max_failures``);
see ``server/io/throttle.py`` LoginThrottle. RFC 6120 §6.4.5: "If the
initiating entity attempts a reconnection with the same authentication
identity, the receiving entity MAY ... [return] <temporary-auth-failure/>" —
we do, to the address that failed, not to the account's owner elsewhere.

In-band registration (XEP-0077 §3.1) is limited per client address
(``registration.max_per_address`` per ``registration.window``, default one per
600 s as ejabberd's ``registration_timeout``) with ``<resource-constraint/>``
type wait (RFC 6120 §8.3.3.18), and to one account per stream (XEP-0077
§3.1.1: a server "MAY return a <not-acceptable/> stanza error if ... an entity
attempts to register a second identity").

Attackers connect from their own loopback addresses (127.0.0.x); the owner and
a bystander use others, and the bystander must get answers within a second
throughout.
"""

import pytest

from tests.harness import RawClient, XferdProcess, login
from tests.integration.test_limits import plain_login, raw_from

pytestmark = pytest.mark.hostile

PER_ADDRESS = 3         # auth.max_failures: per account from one address
ACCOUNT_BUDGET = 6      # auth.account_max_failures: per account from all addresses
REGISTER = "jabber:iq:register"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """Small login budgets; registration with its default limit."""
    proc = XferdProcess(tmp_path_factory.mktemp("hostile-auth"), overrides={
        "auth": {"max_failures": PER_ADDRESS, "failure_window": 600,
                 "account_max_failures": ACCOUNT_BUDGET, "account_failure_window": 3600},
    })
    for user in ("owner", "victim", "bob"):
        proc.adduser(f"{user}@localhost", "right-pw")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
async def bystander(guarded):
    """bob, logged in from 127.0.0.1: served within a second before and after."""
    client = await login(guarded, "bob@localhost/bystander", "right-pw")
    assert await client.ping_server() < 1.0
    yield client
    assert guarded.alive(), guarded.log()[-3000:]
    assert await client.ping_server() < 1.0
    await client.close()


async def secured_from(server, address: str) -> RawClient:
    raw = await raw_from(address, server.c2s_port)
    await raw.secure(server.cert())
    return raw


async def test_wrong_passwords_from_one_address_lock_the_owner_out_nowhere(guarded, bystander):
    """An attacker's failures refuse the attacker's address, not the account: the
    owner logs in at the first try from another address, with SCRAM and PLAIN."""
    attacker = await secured_from(guarded, "127.0.0.2")
    for guess in ("123456", "password", "qwerty"):
        assert await plain_login(attacker, "owner", guess) == "not-authorized"
    # that address is now refused before any password check, even a right one …
    assert await plain_login(attacker, "owner", "right-pw") == "temporary-auth-failure"
    again = await secured_from(guarded, "127.0.0.2")
    assert await plain_login(again, "owner", "right-pw") == "temporary-auth-failure"
    assert await bystander.ping_server() < 1.0
    # … while the owner gets in at once from elsewhere
    owner = await secured_from(guarded, "127.0.0.3")
    assert await plain_login(owner, "owner", "right-pw") == "success"
    scram = await login(guarded, "owner@localhost/phone", "right-pw")   # from 127.0.0.1
    assert await scram.ping_server() < 1.0
    guarded.wait_for_log("authentication as owner@localhost refused: "
                         "too many failures for owner@localhost from 127.0.0.2")
    for client in (attacker, again, owner):
        await client.close()
    await scram.close()


async def test_many_addresses_get_a_bounded_number_of_guesses(guarded, bystander):
    """Across all addresses an account gets ACCOUNT_BUDGET failed checks; beyond it
    new addresses are refused before the check (a right and a wrong password get
    the same answer, so nothing is learnt), while an address the owner logged in
    from before still works."""
    owner = await login(guarded, "victim@localhost/home", "right-pw")     # 127.0.0.1 is known
    await owner.close()
    answers = []
    for n in range(10, 20):                       # ten addresses, three guesses each
        attacker = await secured_from(guarded, f"127.0.0.{n}")
        for guess in range(PER_ADDRESS):
            answers.append(await plain_login(attacker, "victim", f"guess-{n}-{guess}"))
        await attacker.close()
    assert answers.count("not-authorized") == ACCOUNT_BUDGET
    assert set(answers[ACCOUNT_BUDGET:]) == {"temporary-auth-failure"}
    fresh = await secured_from(guarded, "127.0.0.20")
    assert await plain_login(fresh, "victim", "right-pw") == "temporary-auth-failure"
    await fresh.close()
    assert await bystander.ping_server() < 1.0
    # the owner, from an address it logged in from before: first try
    owner = await login(guarded, "victim@localhost/home", "right-pw")
    assert await owner.ping_server() < 1.0
    await owner.close()
    guarded.wait_for_log("too many failures for victim@localhost; only known addresses may try")


async def register(raw: RawClient, username: str, n: int = 0):
    """One XEP-0077 §3.1 registration on *raw*: None on success, else (type, condition)."""
    raw.send(f"<iq type='set' id='reg{n}'><query xmlns='{REGISTER}'><username>{username}"
             f"</username><password>pw-{username}</password></query></iq>")
    reply = await raw.expect("iq")
    assert reply.get("id") == f"reg{n}"
    if reply.get("type") == "result":
        return None
    error = reply.find("{jabber:client}error")
    condition = next(c for c in error if c.tag.startswith(f"{{{STANZAS}}}"))
    return error.get("type"), condition.tag.partition("}")[2]


async def test_one_address_creates_one_account_per_window(guarded, bystander):
    """The flood that created thousands of accounts a minute from one address now
    creates one; the next is told to wait. Other addresses still register, and a
    registration that fails (a taken name) does not use up the allowance."""
    flood = await secured_from(guarded, "127.0.0.4")
    assert await register(flood, "flood0") is None
    await flood.close()
    for n in range(1, 4):
        flood = await secured_from(guarded, "127.0.0.4")
        assert await register(flood, f"flood{n}", n) == ("wait", "resource-constraint")
        await flood.close()
    assert await bystander.ping_server() < 1.0
    users = guarded.cli("users").stdout.split()
    assert "flood0@localhost" in users and "flood1@localhost" not in users
    # another address: a taken name is a conflict and costs nothing
    other = await secured_from(guarded, "127.0.0.5")
    assert await register(other, "owner") == ("cancel", "conflict")
    assert await register(other, "newcomer", 1) is None
    # XEP-0077 §3.1.1: one account per stream, whatever the address's allowance
    assert await register(other, "second", 2) == ("modify", "not-acceptable")
    await other.close()
    newcomer = await secured_from(guarded, "127.0.0.5")
    assert await plain_login(newcomer, "newcomer", "pw-newcomer") == "success"
    await newcomer.close()
