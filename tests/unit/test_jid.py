"""Tests for server.xmpp.jid (RFC 7622 addresses, stringprep approximation)."""

import pytest

from server.xmpp.jid import JID, JIDError, nameprep, nodeprep, resourceprep, saslprep

# RFC 7622 §3.5 valid examples (those PRECIS and stringprep agree on).
VALID = [
    ("juliet@example.com", ("juliet", "example.com", None)),
    ("juliet@example.com/foo", ("juliet", "example.com", "foo")),
    ("juliet@example.com/foo bar", ("juliet", "example.com", "foo bar")),
    ("juliet@example.com/foo@bar", ("juliet", "example.com", "foo@bar")),
    ("foo\\20bar@example.com", ("foo\\20bar", "example.com", None)),
    ("fussball@example.com", ("fussball", "example.com", None)),
    ("π@example.com", ("π", "example.com", None)),
    ("Σ@example.com/foo", ("σ", "example.com", "foo")),
    ("σ@example.com/foo", ("σ", "example.com", "foo")),
    ("king@example.com/♚", ("king", "example.com", "♚")),
    ("example.com", (None, "example.com", None)),
    ("example.com/foobar", (None, "example.com", "foobar")),
    ("a.example.com/b@example.net", (None, "a.example.com", "b@example.net")),
    # IP literals
    ("juliet@[::1]", ("juliet", "[::1]", None)),
    ("juliet@[0:0:0:0:0:0:0:1]/r", ("juliet", "[::1]", "r")),
    ("juliet@192.0.2.1", ("juliet", "192.0.2.1", None)),
    # trailing dot stripped, IDNA A-label compared as U-label
    ("juliet@example.com.", ("juliet", "example.com", None)),
    ("juliet@xn--mnchen-3ya.de", ("juliet", "münchen.de", None)),
    ("juliet@MÜNCHEN.DE", ("juliet", "münchen.de", None)),
    # resources keep newer characters (MUC nicknames)
    ("room@muc.example.com/🎉 party", ("room", "muc.example.com", "🎉 party")),
]

# RFC 7622 §3.5 invalid examples plus structural errors.
INVALID = [
    '"juliet"@example.com',
    "foo bar@example.com",
    "@example.com/",
    "@example.com",
    "juliet@",
    "/foobar",
    "example.com/",
    "juliet@example.com/",
    "",
    "juliet@example..com",
    "juliet@.example.com",
    "juliet@example.com..",
    "juliet@-example.com",
    "juliet@example-.com",
    "juliet@exa_mple.com",
    "juliet@exa mple.com",
    "a@b@example.com",
    "jul<iet@example.com",
    "jul:iet@example.com",
    "jul&iet@example.com",
    "jul'iet@example.com",
    "juliet@[::1",
    "juliet@[not-an-ip]",
    "juliet@[fe80::1%eth0]",
    "juliet@1.2.3.999",
    "juliet@example.com/foo\x07",
    "juliet\x00@example.com",
    "jul\u200eiet@example.com",  # C.8 change-of-direction mark
    "\u0627\u0031@example.com",  # bidi: RandAL must start and end
    "a\u0627b@example.com",  # bidi: mixes RandAL and L
]


@pytest.mark.parametrize("text, parts", VALID)
def test_valid(text, parts):
    jid = JID.parse(text)
    assert (jid.local, jid.domain, jid.resource) == parts


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text):
    with pytest.raises(JIDError):
        JID.parse(text)


def test_jid_error_is_value_error():
    with pytest.raises(ValueError, match="localpart is empty"):
        JID.parse("@example.com")


def test_case_folding_local_and_domain_not_resource():
    jid = JID.parse("JuLiEt@Example.COM/Balcony")
    assert str(jid) == "juliet@example.com/Balcony"
    assert jid == JID.parse("juliet@example.com/Balcony")
    assert jid != JID.parse("juliet@example.com/balcony")


def test_stringprep_folds_sharp_s():
    # Documented difference from PRECIS, which keeps "ß" distinct.
    assert JID.parse("fußball@example.com") == JID.parse("fussball@example.com")


@pytest.mark.parametrize(
    "part, ok",
    [
        ("a" * 1023, True),
        ("a" * 1024, False),
        ("é" * 511, True),  # 1022 bytes
        ("é" * 512, False),  # 1024 bytes
    ],
)
def test_part_lengths(part, ok):
    for text in (f"{part}@example.com", f"example.com/{part}"):
        if ok:
            JID.parse(text)
        else:
            with pytest.raises(JIDError, match="1023"):
                JID.parse(text)


def test_domain_lengths():
    label = "a" * 63
    JID.parse(f"{label}.com")
    with pytest.raises(JIDError):
        JID.parse(f"{label}a.com")
    domain = ".".join(["b" * 63] * 16)  # exactly 1023 bytes
    assert JID.parse(domain).domain == domain
    with pytest.raises(JIDError):
        JID.parse(domain + "b")


def test_huge_input_is_rejected_quickly():
    with pytest.raises(JIDError):
        JID.parse("a" * 100_000 + "@example.com")


def test_bare_and_with_resource_round_trip():
    full = JID.parse("juliet@example.com/balcony")
    bare = full.bare
    assert bare == JID.parse("juliet@example.com")
    assert bare.is_bare and not full.is_bare
    assert bare.bare is bare
    assert bare.with_resource("balcony") == full
    assert str(full) == "juliet@example.com/balcony"
    assert JID.parse(str(full)) == full


def test_with_resource_prepares_and_validates():
    bare = JID.parse("juliet@example.com")
    assert bare.with_resource("Ⅳ").resource == "IV"  # NFKC, case kept
    with pytest.raises(JIDError):
        bare.with_resource("")
    with pytest.raises(JIDError):
        bare.with_resource("bad\x00")


def test_is_domain():
    assert JID.parse("example.com").is_domain
    assert not JID.parse("example.com/r").is_domain
    assert not JID.parse("u@example.com").is_domain
    assert str(JID.parse("example.com/r")) == "example.com/r"


def test_hashing_and_equality():
    a = JID.parse("Romeo@Example.net/Orchard")
    b = JID.parse("romeo@example.NET./Orchard")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, a.bare, b.bare}) == 2
    assert {a: 1}[b] == 1


def test_direct_construction_prepares():
    assert JID("Juliet", "Example.com") == JID.parse("juliet@example.com")
    assert JID(None, "example.com", "r") == JID.parse("example.com/r")
    with pytest.raises(JIDError):
        JID("", "example.com")
    with pytest.raises(JIDError):
        JID("a", "bad domain")


def test_immutable():
    jid = JID.parse("juliet@example.com")
    with pytest.raises(AttributeError):
        jid.local = "romeo"  # type: ignore[misc]


def test_prep_functions():
    assert nodeprep("Juliet") == "juliet"
    assert nameprep("EXAMPLE.com.") == "example.com"
    assert nameprep("[::FFFF:1]") == "[::ffff:1]"
    assert resourceprep("Foo Bar") == "Foo Bar"
    assert resourceprep("a\u00adb") == "ab"  # B.1 maps soft hyphen to nothing
    for bad in ("", "a b", "a@b"):
        with pytest.raises(JIDError):
            nodeprep(bad)


def test_parse_is_cached():
    assert JID.parse("cached@example.com") is JID.parse("cached@example.com")


# RFC 4013 §3 examples.
@pytest.mark.parametrize(
    "raw, prepared",
    [
        ("I\u00adX", "IX"),
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        ("a\u00a0b", "a b"),  # non-ASCII space maps to SPACE
    ],
)
def test_saslprep_examples(raw, prepared):
    assert saslprep(raw) == prepared


@pytest.mark.parametrize("raw", ["\u0007", "\u0627\u0031"])
def test_saslprep_errors(raw):
    with pytest.raises(ValueError):
        saslprep(raw)


def test_saslprep_unassigned():
    assert saslprep("pw🔑") == "pw🔑"
    with pytest.raises(ValueError):
        saslprep("pw🔑", allow_unassigned=False)
