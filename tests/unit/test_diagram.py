"""``xferd diagram`` on traces written the way ``server/io/trace.py`` writes
them (time, level, ``xferd.trace``, connection label, recv/send, then the
pretty-printed element): arrows, their order, lifelines, labels, bounds."""

from __future__ import annotations

import re

import pytest
from lxml import etree

from server.cli import main
from server.tools import diagram as d
from server.tools.diagram_html import render
from server.tools.diagram_labels import Labeller

MOVED = "urn:xmpp:moved:1"
PUBSUB = "http://jabber.org/protocol/pubsub"


def record(time: str, label: str, direction: str, xml: str = "", text: str = "",
           logger: str = "xferd.trace") -> str:
    head = f"2026-12-02 18:{time} INFO    {logger}: {label} {direction}"
    return head + (f" {text}\n" if text else "\n" + xml.strip() + "\n")


def log_line(time: str, logger: str, message: str, level: str = "INFO") -> str:
    return f"2026-12-02 18:{time} {level:<7} {logger}: {message}\n"


C2S_A = "c2s#1 127.0.0.1:5001"
C2S_B = "c2s#1 127.0.0.1:6001"

# alice@a.example sends bob@b.example a message; it crosses s2s (a → b) and
# reaches bob's client. Both servers' traces, as two files.
TRACE_A = (
    log_line("00:00,000", "xferd", "xferd serving a.example")
    + record("00:01,000", C2S_A, "recv", text="<stream:stream to='a.example' version='1.0'>")
    + record("00:01,001", C2S_A, "send", "<features xmlns='http://etherx.jabber.org/streams'/>")
    + record("00:01,002", C2S_A, "recv",
             "<iq xmlns='jabber:client' type='set' id='b1'>"
             "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>pc</resource></bind></iq>")
    + record("00:01,003", f"{C2S_A} alice@a.example/pc", "send",
             "<iq xmlns='jabber:client' type='result' id='b1'/>")
    + record("00:02,000", f"{C2S_A} alice@a.example/pc", "recv",
             "<message xmlns='jabber:client' to='bob@b.example' id='m1'>\n"
             "  <body>hello &lt;b&gt;</body>\n</message>")
    + record("00:02,001", "s2s-out#1 a.example→b.example", "send",
             '<message xmlns="jabber:server" to="bob@b.example" id="m1" '
             'from="alice@a.example/pc">\n  <body>hello &lt;b&gt;</body>\n</message>')
)
TRACE_B = (
    record("00:00,500", C2S_B, "recv", text="<stream:stream to='b.example' version='1.0'>")
    + record("00:00,501", C2S_B, "recv",
             "<iq xmlns='jabber:client' type='set' id='c1'>"
             "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    + record("00:00,502", f"{C2S_B} bob@b.example/1f2e", "send",
             "<iq xmlns='jabber:client' type='result' id='c1'/>")
    # the same millisecond as the send: still drawn after it
    + record("00:02,001", "s2s-in#1 127.0.0.1:7000", "recv",
             '<message xmlns="jabber:server" from="alice@a.example/pc" id="m1" '
             'to="bob@b.example">\n  <body>hello &lt;b&gt;</body>\n</message>')
    + record("00:02,001", f"{C2S_B} bob@b.example/1f2e", "send",
             '<message xmlns="jabber:client" from="alice@a.example/pc" id="m1" '
             'to="bob@b.example">\n  <body>hello &lt;b&gt;</body>\n</message>')
)


@pytest.fixture
def traces(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text(TRACE_A)
    b.write_text(TRACE_B)
    return a, b


def arrows(diagram):
    return [(r.source, r.target, r.label) for r in diagram.rows if isinstance(r, d.Arrow)]


def test_a_stanza_seen_by_both_servers_is_one_arrow_as_it_travels(traces):
    """RFC 6120 §8: a stanza crosses c2s, then s2s, then c2s; the s2s hop is in
    both traces (sent by a, received by b) and is drawn once, a → b, after its
    send even though b's trace file is given first and the times are equal."""
    b, a = traces[1], traces[0]
    diagram = d.build([b, a])
    servers = {line.name: line.key for line in diagram.lifelines if line.kind == "server"}
    sa, sb = servers["a.example"], servers["b.example"]
    assert arrows(diagram) == [
        ("client:bob@b.example/1f2e", sb, "bind"),
        (sb, "client:bob@b.example/1f2e", "bind result"),
        ("client:alice@a.example/pc", sa, "bind"),
        (sa, "client:alice@a.example/pc", "bind result"),
        ("client:alice@a.example/pc", sa, "message"),
        (sa, sb, "message"),
        (sb, "client:bob@b.example/1f2e", "message"),
    ]
    s2s = [r for r in diagram.rows if isinstance(r, d.Arrow) and r.hop == "s2s"]
    assert [sorted(r.seen_in) for r in s2s] == [["a.example", "b.example"]]


def test_lifelines_a_client_per_bound_jid_left_and_right_of_its_server(traces):
    """A client's bind request comes before the trace names it (RFC 6120 §7):
    it is still drawn on the lifeline of the JID it bound."""
    diagram = d.build(list(traces))
    assert [(line.kind, line.name) for line in diagram.lifelines] == [
        ("client", "alice@a.example/pc"), ("server", "a.example"),
        ("server", "b.example"), ("client", "bob@b.example/1f2e")]


def test_a_receive_without_the_senders_trace_comes_from_a_peer_lifeline(traces):
    diagram = d.build([traces[1]])
    assert ("peer:a.example", "server0", "message") in arrows(diagram)
    assert [line.name for line in diagram.lifelines][-1] == "a.example (no trace)"


def test_negotiation_is_not_drawn_and_notes_are(tmp_path):
    path = tmp_path / "a.log"
    path.write_text(TRACE_A + log_line("00:03,000", "xferd.moved",
                                       "moved: x@a.example → x@b.example for y@a.example: "
                                       "verified")
                    + log_line("00:03,001", "xferd.c2s", "authenticated as z@a.example"))
    diagram = d.build([path])
    notes = [r for r in diagram.rows if isinstance(r, d.Note)]
    assert [n.text for n in notes] == [
        "moved: x@a.example → x@b.example for y@a.example: verified"]
    assert all("features" not in r.xml for r in diagram.rows if isinstance(r, d.Arrow))


def test_since_and_until_keep_a_window(traces, capsys):
    """Only the message's hops, from 18:00:02 on (the time column's form)."""
    diagram = d.build(list(traces), since=d.moment("18:00:02.000"),
                      until=d.moment("2026-12-02 18:00:02.001"))
    assert [label for _, _, label in arrows(diagram)] == ["message"] * 3
    assert arrows(d.build(list(traces), until=d.moment("18:00:00.999"))) == [
        ("client:bob@b.example/1f2e", "server1", "bind"),
        ("server1", "client:bob@b.example/1f2e", "bind result")]
    with pytest.raises(SystemExit):
        main(["diagram", str(traces[0]), "-o", "x.html", "--since", "noon"])
    assert "'noon': not a time" in capsys.readouterr().err


def test_a_huge_trace_is_cut_with_a_note(tmp_path):
    path = tmp_path / "big.log"
    path.write_text(record("00:00,000", C2S_A, "recv",
                           text="<stream:stream to='a.example'>") + "".join(
        record(f"00:{i // 1000:02d},{i % 1000:03d}", f"{C2S_A} alice@a.example/pc", "recv",
               f"<presence xmlns='jabber:client'><status>{i}</status></presence>")
        for i in range(300)))
    diagram = d.build([path], max_stanzas=50)
    assert len(diagram.rows) == 50 and diagram.not_drawn == 250
    page = render(diagram)
    assert "Cut: only the first 50 rows are drawn; 250 more stanza record(s)" in page


def test_one_stanzas_xml_is_bounded(tmp_path):
    path = tmp_path / "a.log"
    body = "x" * (d.MAX_XML * 3)
    path.write_text(record("00:00,000", C2S_A, "recv", text="<stream:stream to='a.example'>")
                    + record("00:00,001", C2S_A, "recv",
                             f"<message xmlns='jabber:client'><body>{body}</body></message>"))
    (arrow,) = d.build([path]).rows
    assert len(arrow.xml) < d.MAX_XML + 100 and arrow.xml.endswith("(cut: longer than the page "
                                                                   "shows)")


def test_not_a_trace_is_an_error(tmp_path):
    path = tmp_path / "plain.log"
    path.write_text(log_line("00:00,000", "xferd", "xferd serving a.example"))
    with pytest.raises(d.DiagramError, match="no stanza trace.*--trace"):
        d.build([path])
    with pytest.raises(d.DiagramError, match="no such file"):
        d.build([tmp_path / "missing.log"])


def test_the_page_is_self_contained_and_escapes_the_xml(traces, tmp_path):
    """No address outside the page (no network: scripts, styles, fonts inline);
    stanza markup cannot become page markup."""
    page = render(d.build(list(traces)))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "hello &amp;lt;b&amp;gt;" in page
    svg = etree.fromstring(page[page.index('<svg xmlns="http://www.w3.org/2000/svg" id="diagram"'):
                                page.index("</svg>", page.index('id="diagram"')) + 6])
    groups = svg.findall("{http://www.w3.org/2000/svg}g")
    assert [g.get("data-label") for g in groups][-3:] == ["message"] * 3
    assert [g.get("data-hop") for g in groups][-3:] == ["c2s", "s2s", "c2s"]
    hostile = tmp_path / "hostile.log"
    hostile.write_text(record("00:00,000", C2S_A, "recv", text="<stream:stream to='a.example'>")
                       + record("00:00,001", C2S_A, "recv",
                                "<message xmlns='jabber:client'><script xmlns='urn:x'>"
                                "alert(1)</script></message>"))
    page = render(d.build([hostile]))
    assert page.count("<script") == 1 and "&lt;script xmlns=" in page


def test_the_command_writes_the_page(traces, tmp_path, capsys):
    out = tmp_path / "out.html"
    assert main(["diagram", *map(str, traces), "-o", str(out)]) == 0
    assert "7 stanza(s), 4 lifelines" in capsys.readouterr().out
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert main(["diagram", str(tmp_path / "nope.log"), "-o", str(out)]) == 1
    assert "no such file" in capsys.readouterr().err


# -- labels ------------------------------------------------------------------------------

def el(xml: str):
    return etree.fromstring(xml)


@pytest.mark.parametrize("xml, to_client, label", [
    # XEP-0283 §4.2: the subscription request from the new account carries <moved/>
    (f"<presence xmlns='jabber:client' type='subscribe' to='c@x'><moved xmlns='{MOVED}'>"
     "<old-jid>o@x</old-jid></moved></presence>", False, "subscribe + moved"),
    ("<presence xmlns='jabber:client' type='subscribe'/>", False, "subscribe"),
    ("<presence xmlns='jabber:client'/>", True, "presence"),
    ("<presence xmlns='jabber:client' type='unavailable'/>", True, "presence unavailable"),
    ("<message xmlns='jabber:client'><body>hi</body></message>", True, "message"),
    # XEP-0283 §4.3: the contact's server reads the statement (XEP-0060 §6.5)
    (f"<iq xmlns='jabber:server' type='get' id='1'><pubsub xmlns='{PUBSUB}'>"
     f"<items node='{MOVED}'/></pubsub></iq>", False, "PEP get moved statement"),
    (f"<iq xmlns='jabber:client' type='set' id='2'><pubsub xmlns='{PUBSUB}'>"
     f"<publish node='{MOVED}'/></pubsub></iq>", False, "PEP publish moved statement"),
    # RFC 6121 §2.1.6: a roster set from the server to a client is a push
    ("<iq xmlns='jabber:client' type='set' id='3'><query xmlns='jabber:iq:roster'/></iq>",
     True, "roster push"),
    ("<iq xmlns='jabber:client' type='set' id='4'><query xmlns='jabber:iq:roster'/></iq>",
     False, "roster set"),
    ("<iq xmlns='jabber:client' type='get' id='5'><query xmlns='jabber:iq:roster'/></iq>",
     False, "roster get"),
    ("<iq xmlns='jabber:client' type='get' id='6'><ping xmlns='urn:xmpp:ping'/></iq>",
     False, "ping"),
    # XEP-0015 (server/xmpp/transfer.py's A, B, C)
    ("<iq xmlns='jabber:client' type='set' id='7'><query xmlns='jabber:iq:accountxfer'>"
     "<newaccount>n@y</newaccount></query></iq>", False, "transfer: move me"),
    ("<iq xmlns='jabber:server' type='set' id='8'><query xmlns='jabber:iq:accountxfer'>"
     "<oldaccount>o@x</oldaccount><newaccount>n@y</newaccount></query></iq>",
     False, "transfer: may I?"),
    ("<iq xmlns='jabber:server' type='set' id='9'><query xmlns='jabber:iq:accountxfer'>"
     "<oldaccount>o@x</oldaccount><newaccount>n@y</newaccount><rosteritem jid='c@z'/>"
     "</query></iq>", False, "transfer notice"),
])
def test_labels(xml, to_client, label):
    assert Labeller().label(el(xml), to_client=to_client) == label


def test_a_result_is_named_after_its_request():
    """RFC 6120 §8.2.3: the result carries the request's id."""
    labeller = Labeller()
    labeller.label(el(f"<iq xmlns='jabber:server' type='get' id='q1'><pubsub xmlns='{PUBSUB}'>"
                      f"<items node='{MOVED}'/></pubsub></iq>"))
    result = el(f"<iq xmlns='jabber:server' type='result' id='q1'><pubsub xmlns='{PUBSUB}'>"
                f"<items node='{MOVED}'><item id='current'><moved xmlns='{MOVED}'>"
                "<new-jid>n@y</new-jid></moved></item></items></pubsub></iq>")
    assert labeller.label(result) == "moved statement result → n@y"
    error = el("<iq xmlns='jabber:client' type='error' id='q1'><error type='cancel'>"
               "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    assert labeller.label(error) == "moved statement error: item-not-found"
    assert Labeller().label(el("<iq xmlns='jabber:client' type='result' id='zz'/>")) == "result"
