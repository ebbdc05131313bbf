"""ejabberd's SCRAM values in XEP-0227 files, read and written (storage/pie_ejabberd.py).

XEP-0227 §4.3: ``<salt/>`` contains "the base64-encoded salt", ``<server-key/>``
and ``<stored-key/>`` "the base64-encoded ServerKey/StoredKey defined by
SCRAM". ejabberd (19.02 onwards, up to today's release) writes the base64 of
its base64 text for all three, and reads the same.
"""

import base64

import pytest
from lxml import etree

from server.xmpp.sasl import check_password, make_credentials
from storage import pie, pie_ejabberd
from storage.api import UserData

#: the credentials ejabberd 23.01 (Debian 12's, ``auth_password_format: scram``)
#: exported for an account registered with ``ejabberdctl register alice ej.test
#: pässwörd-1``: ``ejabberdctl export_piefxis DIR``, the user element as written
EJABBERD_23_01_ALICE = (
    "<user name='alice'><scram-credentials xmlns='urn:xmpp:pie:0#scram' "
    "mechanism='SCRAM-SHA-1'><iter-count>4096</iter-count>"
    "<salt>ZFNwbm5hUGZPMzBuTmFJUmZtUHF5Zz09</salt>"
    "<server-key>NG5BRng0STZKRUh0eXIrbXJydVVXMlVXQk0wPQ==</server-key>"
    "<stored-key>M3p6VHIraFVZcWJQblZHSjd0K1JkZTBadVNnPQ==</stored-key>"
    "</scram-credentials></user>")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def host_file(tmp_path, users_xml: str):
    """ejabberd's host file shape: ``<host>`` root, users inline, one line."""
    path = tmp_path / "20261202-180330_ej_test.xml"
    path.write_text("<?xml version='1.0' encoding='UTF-8'?><server-data xmlns='urn:xmpp:pie:0'>"
                    f"<host jid='ej.test'>{users_xml}</host></server-data>")
    return path


def read(path):
    warnings = []
    users = {name: data for _, name, data in pie.iter_users(path, warn=warnings.append)}
    return users, warnings


def test_ejabberd_23_01_export_logs_in_with_the_old_password(tmp_path):
    """What a real ejabberd wrote: read as SCRAM-SHA-1 keys that verify the
    account's password (and no other), without a warning."""
    users, warnings = read(host_file(tmp_path, EJABBERD_23_01_ALICE))
    creds = users["alice"].credentials["SCRAM-SHA-1"]
    assert (len(creds.stored_key), len(creds.server_key), creds.iterations) == (20, 20, 4096)
    assert creds.salt == base64.b64decode("dSpnnaPfO30nNaIRfmPqyg==")     # 16 bytes
    assert check_password("pässwörd-1", creds)
    assert not check_password("pässwörd-2", creds)
    assert warnings == []


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
@pytest.mark.parametrize("encode", [b64, pie_ejabberd.encode], ids=["xep0227", "ejabberd"])
def test_both_encodings_read_the_same(tmp_path, mechanism, encode):
    creds = make_credentials("secret", mechanism, 4096)
    user = (f"<user name='u'><scram-credentials xmlns='{pie.SCRAM_NS}' mechanism='{mechanism}'>"
            f"<iter-count>4096</iter-count><salt>{encode(creds.salt)}</salt>"
            f"<server-key>{encode(creds.server_key)}</server-key>"
            f"<stored-key>{encode(creds.stored_key)}</stored-key></scram-credentials></user>")
    users, warnings = read(host_file(tmp_path, user))
    assert users["u"].credentials == {mechanism: creds}
    assert warnings == []


@pytest.mark.parametrize("hash_name, mechanism", [(None, "SCRAM-SHA-1"),
                                                  ("sha256", "SCRAM-SHA-256")])
def test_ejabberd_password_attribute_encoded_twice(tmp_path, hash_name, mechanism):
    """ejabberd 19.02–21.07: ``password='scram:[HASH,]StoredKey,ServerKey,Salt,Count'``,
    each value base64 of base64; without HASH the key length tells SHA-1."""
    creds = make_credentials("secret", mechanism, 4096)
    values = [pie_ejabberd.encode(v) for v in (creds.stored_key, creds.server_key, creds.salt)]
    password = "scram:" + ",".join(([hash_name] if hash_name else []) + values + ["4096"])
    users, warnings = read(host_file(tmp_path, f"<user name='u' password='{password}'/>"))
    assert users["u"].credentials == {mechanism: creds}
    assert warnings == []


@pytest.mark.parametrize("salt, server_key, why", [
    # keys encoded twice, salt once: no writer does that, so it is no salt we trust
    (b64(b"\xff" * 16), pie_ejabberd.encode(b"k" * 20), "keys of the wrong size"),
    # base64 text inside, but of a 21-byte value: no SHA-1 key
    (pie_ejabberd.encode(b"s" * 16), pie_ejabberd.encode(b"k" * 21), "keys of the wrong size"),
])
def test_keys_of_neither_form_stop_the_import(tmp_path, salt, server_key, why):
    user = (f"<user name='u'><scram-credentials xmlns='{pie.SCRAM_NS}' mechanism='SCRAM-SHA-1'>"
            f"<iter-count>4096</iter-count><salt>{salt}</salt><server-key>{server_key}"
            f"</server-key><stored-key>{server_key}</stored-key></scram-credentials></user>")
    with pytest.raises(pie.PieError) as caught:
        read(host_file(tmp_path, user))
    assert f"user 'u': scram-credentials with {why}" in str(caught.value)


def test_dialect_ejabberd_writes_each_value_twice_encoded_sha1_first():
    """ejabberd reads only the first ``<scram-credentials>`` (and offers only the
    mechanism of its ``auth_scram_hash``, SHA-1 by default); XEP-0227 §4.3 lets a
    user carry several, one per mechanism."""
    data = UserData(credentials={m: make_credentials("secret", m, 4096)
                                 for m in ("SCRAM-SHA-256", "SCRAM-SHA-1")})
    for dialect, decode in ((pie_ejabberd.STANDARD, base64.b64decode),
                            (pie_ejabberd.DIALECT,
                             lambda text: base64.b64decode(base64.b64decode(text)))):
        user = pie.user_element("ej.test", "u", data, dialect=dialect)
        scrams = user.findall(f"{{{pie.SCRAM_NS}}}scram-credentials")
        assert [s.get("mechanism") for s in scrams] == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
        for scram in scrams:
            creds = data.credentials[scram.get("mechanism")]
            assert [decode(scram.findtext(f"{{{pie.SCRAM_NS}}}{name}"))
                    for name in ("salt", "server-key", "stored-key")] == \
                [creds.salt, creds.server_key, creds.stored_key]
        # and xferd reads its own ejabberd-dialect output back
        username, parsed = pie.parse_user(etree.fromstring(etree.tostring(user)), "ej.test",
                                          "x.xml", lambda m: pytest.fail(m))
        assert parsed.credentials == data.credentials
    # an ejabberd with auth_scram_hash: sha256 wants those keys first
    user = pie.user_element("ej.test", "u", data, dialect=pie_ejabberd.DIALECT,
                            first=pie_ejabberd.SCRAM_HASHES["sha256"])
    assert [s.get("mechanism") for s in user.iter(f"{{{pie.SCRAM_NS}}}scram-credentials")] == \
        ["SCRAM-SHA-256", "SCRAM-SHA-1"]


@pytest.mark.parametrize("host, name", [("ej.test", "ej.test.xml"),
                                        ("bücher.example", "host.xml"), ("main", "host.xml")])
def test_host_file_name_needs_no_escaping(host, name):
    """ejabberd joins an href to the directory as it stands (no %-decoding);
    the host file must not be the main file."""
    assert pie_ejabberd.host_filename(host) == name
