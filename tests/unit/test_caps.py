"""XEP-0115 verification strings (server/xmpp/caps.py) against the XEP's own
worked examples (§5.2, §5.3) and the §5.4 processing rules."""

import base64
import hashlib

import pytest
from lxml import etree

from server.xmpp import caps

DISCO = "http://jabber.org/protocol/disco#info"

#: §5.2: client/pc "Exodus 0.9.1" and four features
SIMPLE = f"""<query xmlns='{DISCO}'>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
</query>"""

#: §5.3: the disco#info result of the example, exactly as the XEP shows it
COMPLEX = f"""<query xmlns='{DISCO}'
       node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='\u03a8 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'>
      <value>urn:xmpp:dataforms:softwareinfo</value>
    </field>
    <field var='ip_version' type='text-multi' >
      <value>ipv4</value>
      <value>ipv6</value>
    </field>
    <field var='os'>
      <value>Mac</value>
    </field>
    <field var='os_version'>
      <value>10.5.1</value>
    </field>
    <field var='software'>
      <value>Psi</value>
    </field>
    <field var='software_version'>
      <value>0.11</value>
    </field>
  </x>
</query>"""


def q(text):
    return etree.fromstring(text)


def test_simple_generation_example():
    """§5.2: S and ver = QgayPKawpkPSDYmwT/WM94uAlu0= (SHA-1)."""
    query = q(SIMPLE)
    assert caps.verification_string(query) == (
        "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<"
        "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
        "http://jabber.org/protocol/muc<")
    assert caps.ver(query, "sha-1") == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_complex_generation_example():
    """§5.3: two identities sorted by xml:lang, then the features, then the
    softwareinfo form's fields sorted by var; ver = q07IKJEyjvHSyhy//CH0CxmKi8w=."""
    query = q(COMPLEX)
    assert caps.verification_string(query) == (
        "client/pc/el/\u03a8 0.11<client/pc/en/Psi 0.11<"
        "http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<"
        "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
        "urn:xmpp:dataforms:softwareinfo<"
        "ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<")
    assert caps.ver(query, "sha-1") == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_verify_accepts_the_examples_and_other_sha_algorithms():
    """§5.4 3.8 for SHA-1; §9.1 lets an implementation support other
    algorithms: the same S hashed with SHA-256 verifies too."""
    query = q(COMPLEX)
    assert caps.verify(query, caps.Announcement("http://psi-im.org",
                                                "q07IKJEyjvHSyhy//CH0CxmKi8w=", "sha-1"))
    s = caps.verification_string(query).encode()
    sha256 = base64.b64encode(hashlib.sha256(s).digest()).decode()
    assert caps.verify(query, caps.Announcement("http://psi-im.org", sha256, "sha-256"))
    assert not caps.verify(query, caps.Announcement("http://psi-im.org", sha256, "sha-1"))


def test_a_mismatch_is_rejected():
    """§5.4 3.9: an answer whose hash differs from the announced ver is invalid."""
    query = q(SIMPLE.replace("muc'", "muc+notify'"))
    assert not caps.verify(query, caps.Announcement("n", "QgayPKawpkPSDYmwT/WM94uAlu0=",
                                                    "sha-1"))


def test_unsupported_hash_and_legacy_caps_are_not_verifiable():
    """§5.4 steps 1 and 2: no hash (legacy, §13) or an unknown one."""
    query = q(SIMPLE)
    for announced in (caps.Announcement("n", "QgayPKawpkPSDYmwT/WM94uAlu0=", "md5"),
                      caps.Announcement("n", "1.0")):
        assert not announced.verifiable
        assert not caps.verify(query, announced)


@pytest.mark.parametrize("extra, why", [
    ("<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>",
     "identity twice"),
    ("<feature var='http://jabber.org/protocol/muc'/>", "feature twice"),
    ("<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
     "<value>urn:xmpp:dataforms:softwareinfo</value></field></x>", "FORM_TYPE twice"),
])
def test_duplicates_make_the_answer_ill_formed(extra, why):
    """§5.4 3.3–3.5: the entire response is ill-formed, so it never verifies."""
    text = COMPLEX.replace("</query>", extra + "</query>")
    with pytest.raises(caps.IllFormed):
        caps.verification_string(q(text))
    assert not caps.verify(q(text), caps.Announcement(
        "http://psi-im.org", "q07IKJEyjvHSyhy//CH0CxmKi8w=", "sha-1")), why


def test_form_type_with_different_values_is_ill_formed():
    """§5.4 3.5; the same value twice is not (only *different* data counts)."""
    two = COMPLEX.replace("<value>urn:xmpp:dataforms:softwareinfo</value>",
                          "<value>urn:xmpp:dataforms:softwareinfo</value><value>other</value>")
    with pytest.raises(caps.IllFormed):
        caps.verification_string(q(two))
    same = COMPLEX.replace("<value>urn:xmpp:dataforms:softwareinfo</value>",
                           "<value>urn:xmpp:dataforms:softwareinfo</value>"
                           "<value>urn:xmpp:dataforms:softwareinfo</value>")
    assert caps.ver(q(same), "sha-1") == "q07IKJEyjvHSyhy//CH0CxmKi8w="


@pytest.mark.parametrize("form", [
    "<x xmlns='jabber:x:data' type='result'><field var='os'><value>Mac</value></field></x>",
    "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>"
    "<value>urn:example:shown</value></field><field var='a'><value>b</value></field></x>",
])
def test_forms_without_a_hidden_form_type_are_ignored(form):
    """§5.4 3.6: ignore the form but continue processing."""
    query = q(SIMPLE.replace("</query>", form + "</query>"))
    assert caps.ver(query, "sha-1") == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_sorting_is_by_octets():
    """§5.1: "i;octet" collation — upper case before lower case, a shorter
    category before a longer one it begins (sorted by category first, not by
    the formatted string)."""
    query = q(f"<query xmlns='{DISCO}'><identity category='client-x' type='a'/>"
              "<identity category='client' type='z'/>"
              "<feature var='b'/><feature var='B'/><feature var='\u00e9'/></query>")
    assert caps.verification_string(query) == "client/z//<client-x/a//<B<b<\u00e9<"


def test_announcement_of_a_presence():
    """§4: hash, node and ver; without hash it is the legacy format (§13)."""
    ns = "http://jabber.org/protocol/caps"
    presence = q(f"<presence xmlns='jabber:client'><c xmlns='{ns}' hash='sha-1' "
                 "node='http://code.google.com/p/exodus' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>"
                 "</presence>")
    found = caps.announcement(presence)
    assert found == caps.Announcement("http://code.google.com/p/exodus",
                                      "QgayPKawpkPSDYmwT/WM94uAlu0=", "sha-1")
    assert found.verifiable
    assert found.disco_node == "http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0="
    legacy = caps.announcement(q(f"<presence xmlns='jabber:client'><c xmlns='{ns}' "
                                 "node='http://www.chatopus.com/ec' ver='2.1' "
                                 "ext='sendmeloc sendmetunes'/></presence>"))
    assert legacy.hash is None and legacy.ext == "sendmeloc sendmetunes"
    assert not legacy.verifiable
    assert caps.announcement(q("<presence xmlns='jabber:client'/>")) is None
    assert caps.announcement(q(f"<presence xmlns='jabber:client'><c xmlns='{ns}' "
                               "hash='sha-1' ver='x'/></presence>")) is None   # no node


def test_features_of_an_answer():
    assert caps.features(q(SIMPLE)) == {
        "http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc"}


def test_notify_nodes_are_the_features_with_plus_notify():
    """XEP-0060 §9.2 / XEP-0163 §4.2: "NodeID+notify" asks for NodeID's
    notifications; a bare "+notify" names no node."""
    from server.xmpp.pubsub import notify_nodes
    assert notify_nodes({"urn:xmpp:avatar:metadata+notify", "urn:xmpp:avatar:metadata",
                         "http://jabber.org/protocol/nick+notify", "+notify"}) == {
        "urn:xmpp:avatar:metadata", "http://jabber.org/protocol/nick"}
