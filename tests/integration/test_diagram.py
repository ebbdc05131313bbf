"""``xferd diagram`` and ``scripts/two-domains demo-move --diagram FILE`` on
real traces of real servers, shown in a real browser: Debian's Chromium,
headless, renders the page to a PNG and runs its script. Without Chromium
the browser part is skipped, except under CI (CI=true), where it fails.

What is checked against the servers' traces (``--trace``, server/io/trace.py):
one arrow per stanza (RFC 6120 §8: message, presence, iq; c2s and s2s), a
stanza that crossed s2s drawn once, in time order, between the right
lifelines, with the labels the issue asks for; and that the browser draws
each of those arrows where the SVG says, in its colour.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from tests.harness import REPO, XferdProcess, federate, login, round_trip

SVG = "{http://www.w3.org/2000/svg}"
COLOURS = {"c2s": (0x24, 0x63, 0xB8), "s2s": (0xC8, 0x61, 0x1A)}
RECORD = re.compile(r"^\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d),(\d{3}) \w+\s+([\w.-]+): (.*)$")


# -- the browser -----------------------------------------------------------------------

def chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium as /work's machine notes say: no sandbox (root), no
    GPU, nothing fetched in the background, a fresh profile each time."""
    exe = shutil.which("chromium")
    if exe is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
             "--force-device-scale-factor=1", *args],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def decode_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB/RGBA PNG (what
    Chromium writes), with the five filters of PNG §9.2; no dependency."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and not interlace
        elif kind == b"IDAT":
            chunks.append(body)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride, prev, rows = width * bpp, bytes(width * bpp), []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], raw[start + 1:start + 1 + stride]
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = _add_bytes(line, prev)
        else:
            out = bytearray(line)
            for i in range(stride):
                a = out[i - bpp] if i >= bpp else 0
                if kind == 1:
                    p = a
                elif kind == 3:
                    p = (a + prev[i]) >> 1
                else:
                    b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    p = a if pa <= pb and pa <= pc else b if pb <= pc else c
                out[i] = (out[i] + p) & 255
            cur = bytes(out)
        rows.append(cur)
        prev = cur
    if bpp == 4:
        rows = [bytes(b for i, b in enumerate(row) if i % 4 != 3) for row in rows]
    return width, height, rows


def _add_bytes(a: bytes, b: bytes) -> bytes:
    """Bytewise (a + b) mod 256 (the Up filter), two big-integer additions."""
    n = len(a)
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    mask = int.from_bytes(b"\x00\xff" * (n // 2 + 1), "big") & ((1 << (8 * n)) - 1)
    low = ((x & mask) + (y & mask)) & mask
    high = (((x >> 8) & mask) + ((y >> 8) & mask)) & mask
    return (low | (high << 8)).to_bytes(n + 1, "big")[-n:]


def painted_arrows(png: Path) -> list[tuple[str, int, int]]:
    """(hop, first x, last x) of each horizontal line at least 40 px long in
    an arrow colour (each channel within 8), top to bottom (a line two
    pixels thick counts once)."""
    width, height, rows = decode_png(png)
    near = {hop: [bytes(int(abs(v - c) <= 8) for v in range(256)) for c in colour]
            for hop, colour in COLOURS.items()}
    run = re.compile(b"\x01{40,}")
    found, last = [], None
    for row in rows:
        here = None
        for hop, tables in near.items():
            mask = -1
            for channel, table in enumerate(tables):
                mask &= int.from_bytes(row[channel::3].translate(table), "big")
            for match in run.finditer(mask.to_bytes(width, "big")):
                here = (hop, match.start(), match.end() - 1)
        if here and here != last:
            found.append(here)
        last = here
    return found


# -- the page and the traces ---------------------------------------------------------------

def page_parts(html: Path) -> tuple[dict, list[dict]]:
    """Lifelines (key → name, kind, x) and arrows of the page's SVG, in order."""
    text = html.read_text()
    heads = etree.fromstring(text[text.index("<svg", text.index('class="heads"')):
                                  text.index("</svg>") + 6])
    lifelines = {g.get("data-key"): {"name": g.findtext(f"{SVG}title"),
                                     "kind": g.get("class").split()[1], "x": int(g.get("data-x"))}
                 for g in heads.iter(f"{SVG}g")}
    start = text.index('<svg xmlns="http://www.w3.org/2000/svg" id="diagram"')
    body = etree.fromstring(text[start:text.index("</svg>", start) + 6])
    arrows = []
    for g in body.iter(f"{SVG}g"):
        if "arrow" not in g.get("class", "").split():
            continue
        wire = g.find(f"{SVG}line[@class='wire']")
        title = g.findtext(f"{SVG}title")
        arrows.append({"id": g.get("id"), "source": g.get("data-source"),
                       "target": g.get("data-target"), "hop": g.get("data-hop"),
                       "label": g.get("data-label"), "time": g.findtext(f"{SVG}text"),
                       "x1": int(wire.get("x1")), "x2": int(wire.get("x2")),
                       "y": int(wire.get("y1")), "xml": title.partition("\n\n")[2]})
    return lifelines, arrows


def traced_stanzas(path: Path) -> list[dict]:
    """The stanzas in one trace, read here independently of the tool: each
    ``xferd.trace`` record whose element is a message, presence or iq."""
    found, current = [], None
    for line in path.read_text().splitlines():
        match = RECORD.match(line)
        if match:
            current = None
            hms, ms, logger, message = match.groups()
            parts = message.split(" ")
            if logger == "xferd.trace" and parts[-1] in ("recv", "send"):
                current = {"time": f"{hms}.{ms}", "kind": parts[0].partition("#")[0],
                           "dir": parts[-1], "label": " ".join(parts[:-1]), "lines": []}
                found.append(current)
        elif current is not None:
            current["lines"].append(line)
    return [dict(s, xml="\n".join(s["lines"])) for s in found
            if s["lines"] and re.match(r"<(iq|message|presence)[ />]", s["lines"][0])]


def canonical(xml: str) -> tuple:
    """Element, attributes (sorted), text: the same stanza on both ends of s2s."""
    def walk(el):
        return (el.tag, tuple(sorted(el.attrib.items())), (el.text or "").strip(),
                tuple(walk(child) for child in el), (el.tail or "").strip())
    return walk(etree.fromstring(xml.encode(), etree.XMLParser(remove_blank_text=True)))


def expected_arrows(traces: list[Path]) -> Counter:
    """What must be drawn: every c2s stanza; every s2s stanza once (a receive
    whose send is in another trace is the same arrow)."""
    expected, received = Counter(), Counter()
    for path in traces:
        for s in traced_stanzas(path):
            if s["kind"] == "c2s" or s["dir"] == "send":
                expected[("c2s" if s["kind"] == "c2s" else "s2s", canonical(s["xml"]))] += 1
            else:
                received[canonical(s["xml"])] += 1
    for xml, count in received.items():
        extra = count - expected[("s2s", xml)]
        if extra > 0:
            expected[("s2s", xml)] += extra
    return expected


def check_page_against_traces(html: Path, traces: list[Path]) -> tuple[dict, list[dict]]:
    lifelines, arrows = page_parts(html)
    # count and content: the arrows are exactly the traced stanzas, s2s once
    assert Counter((a["hop"], canonical(a["xml"])) for a in arrows) == expected_arrows(traces)
    # order: time runs down
    assert [a["time"] for a in arrows] == sorted(a["time"] for a in arrows)
    # lifelines: one per server, one per client JID bound in the traces
    clients = {s["label"].split(" ")[2] for path in traces for s in traced_stanzas(path)
               if s["kind"] == "c2s" and len(s["label"].split(" ")) > 2}
    assert {v["name"] for v in lifelines.values() if v["kind"] == "client"} == clients
    servers = {v["name"] for v in lifelines.values() if v["kind"] == "server"}
    # endpoints: drawn from the source's lifeline to the target's (the tip
    # stops 6 px short for the arrowhead); c2s between a client and its server
    for a in arrows:
        source, target = lifelines[a["source"]], lifelines[a["target"]]
        assert a["x1"] == source["x"] and abs(a["x2"] - target["x"]) == 6, a
        kinds = {source["kind"], target["kind"]}
        if a["hop"] == "c2s":
            client = source if source["kind"] == "client" else target
            server = target if client is source else source
            assert kinds == {"client", "server"}
            assert client["name"].partition("/")[0].partition("@")[2] == server["name"]
        else:
            assert kinds == {"server"} and source["name"] in servers
    return lifelines, arrows


def check_rendering(html: Path, arrows: list[dict], tmp_path: Path) -> None:
    """Chromium draws the arrows where the SVG puts them, in their colours,
    and the page's script shows a stanza's XML for ``page.html#sN``."""
    width = max(max(a["x1"], a["x2"]) for a in arrows) + 200
    shown = [a for a in arrows if a["y"] < 1200]
    assert shown
    png = tmp_path / "diagram.png"
    chromium(f"--window-size={width},1500", f"--screenshot={png}", html.as_uri())
    painted = painted_arrows(png)
    assert len(painted) >= len(shown)
    for (hop, left, right), a in zip(painted, shown):
        # the line, and the arrowhead at its end (at most 8 px more)
        assert hop == a["hop"], (hop, a)
        assert abs(left - min(a["x1"], a["x2"])) <= 8 and \
            abs(right - max(a["x1"], a["x2"])) <= 8, ((left, right), a)
    s2s = next(a for a in arrows if a["hop"] == "s2s")
    dom = chromium("--dump-dom", html.as_uri() + "#" + s2s["id"]).stdout
    panel = etree.fromstring(dom[dom.index("<aside"):dom.index("</aside>") + 8],
                             etree.HTMLParser()).find(".//aside")
    assert panel.get("hidden") is None and panel.get("data-showing") == s2s["id"]
    assert panel.findtext(".//pre").strip() == s2s["xml"].strip()
    assert panel.findtext(".//b") == s2s["label"]


def free_base() -> int:
    """A TWO_DOMAINS_BASE_PORT whose six ports nothing holds right now."""
    while True:
        base = random.randrange(20000, 30000, 10)
        try:
            for port in (222, 223, 269, 10222, 10223, 10269):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + port))
        except OSError:
            continue
        return base


# -- the tests ---------------------------------------------------------------------------

async def test_a_message_across_two_servers_is_drawn_hop_by_hop(tmp_path):
    """RFC 6120 §10: alice's message goes to her server (c2s), to bob's (s2s,
    in both traces, drawn once), to bob's client (c2s): three arrows, in
    that order, labelled "message", with bob's presence before it."""
    servers = federate({d: XferdProcess(tmp_path / d, domains=(d,), trace=True)
                        for d in ("a.test", "b.test")})
    try:
        servers["a.test"].adduser("alice@a.test", "pw")
        servers["b.test"].adduser("bob@b.test", "pw")
        alice = await login(servers["a.test"], "alice@a.test/pc", "pw")
        bob = await login(servers["b.test"], "bob@b.test/phone", "pw")
        bob.send_presence()
        await round_trip(bob)
        body = f"diagram {random.randrange(10**9)}"
        alice.send_message(mto="bob@b.test", mbody=body, mtype="chat")
        assert (await asyncio.wait_for(bob.messages.get(), 15))["body"] == body
        await alice.close()
        await bob.close()
    finally:
        for proc in servers.values():
            proc.stop()
    traces = [servers[d].log_path for d in ("a.test", "b.test")]
    html = tmp_path / "out.html"
    done = subprocess.run([sys.executable, "-m", "server", "diagram", *map(str, traces),
                           "-o", str(html)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lifelines, arrows = check_page_against_traces(html, traces)
    name = {key: v["name"] for key, v in lifelines.items()}
    path = [(name[a["source"]], name[a["target"]], a["hop"], a["label"]) for a in arrows
            if body in a["xml"]]
    assert path == [("alice@a.test/pc", "a.test", "c2s", "message"),
                    ("a.test", "b.test", "s2s", "message"),
                    ("b.test", "bob@b.test/phone", "c2s", "message")]
    check_rendering(html, arrows, tmp_path)


def test_demo_move_and_demo_transfer_draw_the_move(tmp_path):
    """``scripts/two-domains demo-move --diagram FILE``: FILE is written where
    the user stands, and shows XEP-0283 as it happened: the new account's
    subscription request with <moved/> (§4.2), the contact's server reading
    the moved statement from the old account's PEP (§4.4 "Server-side
    processing of inbound moved notification"), roster pushes.
    ``demo-transfer --diagram FILE`` shows XEP-0015 §2.2's order of events:
    "he sends the 'I want to migrate my account' packet", the old server's
    "'user wants to migrate account to you' packet" to the new account, then
    it "notif[ies] each person subscribed" (our notices).
    Servers started without the trace get told how to start them."""
    base = free_base()
    env = dict(os.environ, TWO_DOMAINS_DIR=str(tmp_path / "pair"),
               TWO_DOMAINS_BASE_PORT=str(base))
    script = str(REPO / "scripts" / "two-domains")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args, trace="1"):
        return subprocess.run([script, *args], env=dict(env, TWO_DOMAINS_TRACE=trace),
                              cwd=elsewhere, capture_output=True, text=True, timeout=180)

    # servers started without the trace: the demo says what to do instead
    assert run("up", trace="").returncode == 0
    try:
        untraced = run("demo-move", "--diagram", "move.html")
    finally:
        run("down")
    assert untraced.returncode == 1 and "TWO_DOMAINS_TRACE=1 scripts/two-domains up" in \
        untraced.stderr and not (elsewhere / "move.html").exists()

    started = run("up")
    try:
        assert started.returncode == 0, started.stderr
        demo = run("demo-move", "--diagram", "move.html")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        transfer = run("demo-transfer", "--diagram", "transfer.html")
        assert transfer.returncode == 0, transfer.stdout + transfer.stderr
    finally:
        run("down")
    html = elsewhere / "move.html"
    assert f"wrote {html}" in demo.stdout
    traces = [tmp_path / "pair" / d / "demo-move.trace" for d in ("a.localhost", "b.localhost")]
    lifelines, arrows = check_page_against_traces(html, traces)
    name = {key: v["name"] for key, v in lifelines.items()}
    story = [(name[a["source"]], name[a["target"]], a["label"]) for a in arrows]

    def first(step, after=-1):
        return next(i for i, s in enumerate(story) if i > after and s == step)

    asked = first(("dora@b.localhost/xferd-migrate", "b.localhost", "subscribe + moved"))
    checked = first(("b.localhost", "a.localhost", "PEP get moved statement"), asked)
    first(("a.localhost", "b.localhost", "moved statement result → dora@b.localhost"), checked)
    assert ("a.localhost", "b.localhost", "subscribe + moved") in story or \
        ("b.localhost", "a.localhost", "subscribe + moved") in story
    assert any(label == "roster push" for _, _, label in story)
    assert any(label == "presence" for _, _, label in story)
    check_rendering(html, arrows, tmp_path)

    html = elsewhere / "transfer.html"
    traces = [tmp_path / "pair" / d / "demo-transfer.trace" for d in ("a.localhost", "b.localhost")]
    lifelines, arrows = check_page_against_traces(html, traces)
    name = {key: v["name"] for key, v in lifelines.items()}
    story = [(name[a["source"]], name[a["target"]], a["label"]) for a in arrows]
    asked = first(("alice@a.localhost/xferd-transfer", "a.localhost", "transfer: move me"))
    may_i = first(("a.localhost", "b.localhost", "transfer: may I?"), asked)
    first(("a.localhost", "b.localhost", "transfer notice"), may_i)
