"""Salts without a zero byte, and the PLAIN login that replaces old ones.

RFC 5802 §9 asks for "randomly generated salt values" and says nothing of their
bytes; Prosody 0.12's SQL storage gives a stored salt back cut at its first
0x00 (tests/interop/test_prosody_sql.py shows it), so xferd's salts hold
none (server/xmpp/sasl.py ``new_salt``), and a PLAIN login renews the keys
of an account whose stored salt has one (``PlainServer.renewed``).
"""

import math
from collections import Counter

import pytest

from server.xmpp import sasl
from server.xmpp.sasl import (MECHANISMS_SCRAM, PlainServer, SaslFailure, ScramClient,
                              ScramServer, Success, check_password, make_credentials)

FAST = 64
#: a salt as older xferd releases (16 random bytes) made about one in sixteen times
ZERO_SALT = bytes.fromhex("5a00c3e1774b09f2a1d0e3b6c8f4201b")


def test_new_salts_have_no_zero_byte_and_the_old_size():
    """16 bytes, each one of 255 values (127.9 bits): the size of the salts
    accounts made before already have, so unknown users' fake salts (of the
    same size) set neither apart (see new_salt)."""
    assert sasl.SALT_SIZE == 16 and sasl.SALT_SIZE * math.log2(255) > 127.8
    salts = [sasl.new_salt() for _ in range(4000)]
    assert all(len(salt) == sasl.SALT_SIZE and sasl.portable_salt(salt) for salt in salts)
    assert len(set(salts)) == len(salts)
    counts = Counter(byte for salt in salts for byte in salt)
    # every non-zero value, none favoured: 64000 draws, ~251 each (σ ≈ 16)
    assert set(counts) == set(range(1, 256))
    assert 150 < min(counts.values()) and max(counts.values()) < 400


@pytest.mark.parametrize("mech", MECHANISMS_SCRAM)
def test_credentials_get_portable_salts(mech):
    for _ in range(200):        # with 16 random bytes, ~12 of these would have held a 0x00
        assert sasl.portable_salt(make_credentials("pw", mech, 1).salt)


@pytest.mark.parametrize("mech", MECHANISMS_SCRAM)
def test_unknown_users_get_salts_shaped_like_new_ones(mech):
    """The fake salt of an unknown user (server-first-message, RFC 5802 §5.1
    ``s=``) has the size of a real one and no zero byte either: otherwise
    probing would tell unknown users from accounts made since."""
    for n in range(300):
        server = ScramServer(mech, nonce="srv")
        server.start(ScramClient(mech, f"nobody{n}", "pw", nonce="n0nce").first())
        attrs = dict(a.split("=", 1) for a in server.provide(None).data.decode().split(","))
        salt = sasl._unb64(attrs["s"])
        assert len(salt) == sasl.SALT_SIZE and sasl.portable_salt(salt)


def _plain(stored, password="pencil", wants="SCRAM-SHA-256"):
    mech = PlainServer(wants)
    mech.start(f"\0user\0{password}".encode())
    return mech, mech.provide_all(stored)


def test_plain_login_renews_a_salt_with_a_zero_byte():
    sha256 = make_credentials("pencil", "SCRAM-SHA-256", FAST)
    sha1 = make_credentials("pencil", "SCRAM-SHA-1", 4096, salt=ZERO_SALT)
    mech, step = _plain({"SCRAM-SHA-256": sha256, "SCRAM-SHA-1": sha1})
    assert isinstance(step, Success)
    assert mech.checked == {"SCRAM-SHA-256": sha256, "SCRAM-SHA-1": sha1}
    renewed = mech.renewed
    assert renewed["SCRAM-SHA-256"] is sha256               # its salt was fine: kept
    new = renewed["SCRAM-SHA-1"]
    assert sasl.portable_salt(new.salt) and new.iterations == 4096
    assert check_password("pencil", new) and not check_password("pencil!", new)


def test_plain_login_checked_against_a_zero_salt_renews_it_and_adds_the_missing_keys():
    sha1 = make_credentials("pencil", "SCRAM-SHA-1", FAST, salt=ZERO_SALT)
    mech, _ = _plain({"SCRAM-SHA-1": sha1})
    assert set(mech.renewed) == {"SCRAM-SHA-1", "SCRAM-SHA-256"}
    assert all(sasl.portable_salt(c.salt) and c.iterations == FAST and
               check_password("pencil", c) for c in mech.renewed.values())


def test_plain_login_with_portable_salts_renews_nothing():
    stored = {mech: make_credentials("pencil", mech, FAST) for mech in MECHANISMS_SCRAM}
    mech, _ = _plain(stored)
    assert mech.renewed is None


def test_a_failed_plain_login_renews_nothing():
    stored = {"SCRAM-SHA-1": make_credentials("pencil", "SCRAM-SHA-1", FAST, salt=ZERO_SALT)}
    mech = PlainServer()
    mech.start(b"\0user\0pen")
    with pytest.raises(SaslFailure) as failure:
        mech.provide_all(stored)
    assert failure.value.condition == "not-authorized"
    assert mech.renewed is None and mech.checked == {}


# -- storing the renewed keys: only over the keys that were checked ---------------------------

async def test_renewed_keys_replace_the_checked_ones(store):
    old = {"SCRAM-SHA-1": make_credentials("pencil", "SCRAM-SHA-1", FAST, salt=ZERO_SALT)}
    await store.create_user("localhost", "ann", old)
    mech, _ = _plain(old)
    assert await store.replace_credentials("localhost", "ann", mech.checked, mech.renewed)
    for name in MECHANISMS_SCRAM:
        assert await store.get_credentials("localhost", "ann", name) == mech.renewed[name]


async def test_renewed_keys_do_not_undo_a_password_change_made_meanwhile(store):
    old = {"SCRAM-SHA-1": make_credentials("pencil", "SCRAM-SHA-1", FAST, salt=ZERO_SALT)}
    await store.create_user("localhost", "ann", old)
    mech, _ = _plain(old)
    changed = sasl.make_all_credentials("new password", FAST)
    assert await store.set_credentials("localhost", "ann", changed)
    assert not await store.replace_credentials("localhost", "ann", mech.checked, mech.renewed)
    for name in MECHANISMS_SCRAM:
        assert await store.get_credentials("localhost", "ann", name) == changed[name]
    assert not await store.replace_credentials("localhost", "ghost", mech.checked, mech.renewed)
