"""The page ``xferd diagram`` writes: one HTML file that needs nothing else
(inline SVG, CSS and a few lines of script; no network, no fonts to fetch).

The SVG is the diagram itself and readable without the script: a lifeline
per client and per server, one row per stanza in time order, the arrow's
``<title>`` holding the stanza's XML (shown on hover by every browser). The
script adds a panel with the XML of the stanza clicked (or named in the
address: ``page.html#s12``). Each arrow says what it is in data attributes
(``data-source``, ``data-target``, ``data-label``, ``data-hop``), for tools
and tests that read the page.
"""

from __future__ import annotations

from html import escape

from .diagram import Arrow, Diagram, Lifeline, Note

COLUMN = 200            # px between lifelines
LEFT = 96               # the time column
ROW = 30
HEAD = 54
CHARS_PER_COLUMN = 30   # of a label, at the label's font size

STYLE = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #1d2430; background: #fff; }
header.summary { padding: 12px 16px 4px; }
header.summary h1 { font-size: 18px; margin: 0 0 4px; }
header.summary p { margin: 2px 0; }
.legend span { margin-right: 18px; white-space: nowrap; }
.legend i { display: inline-block; width: 28px; height: 0; vertical-align: middle;
            border-top: 2px solid; margin-right: 6px; }
.legend .c2s { border-color: #2463b8; } .legend .s2s { border-color: #c8611a; }
.legend .one { border-color: #c8611a; border-top-style: dashed; }
.legend .note { border: 1px solid #b9a24a; background: #fff6cf; height: 10px; width: 20px; }
p.cut { color: #8a1c1c; font-weight: 600; }
.heads { position: sticky; top: 0; background: rgba(255,255,255,.96); z-index: 1;
         border-bottom: 1px solid #dde3ea; }
svg text { font: 12px system-ui, sans-serif; }
.lifeline rect { fill: #eef3f9; stroke: #5b6b80; }
.lifeline.server rect { fill: #dfe9f7; stroke: #2f4a6e; stroke-width: 1.5; }
.lifeline.peer rect { fill: #f4f4f4; stroke-dasharray: 4 3; }
.lifeline text { text-anchor: middle; font-weight: 600; }
.lifeline text .sub { font-weight: 400; fill: #5b6b80; }
line.life { stroke: #9aa7b8; stroke-dasharray: 3 4; }
line.life.server { stroke: #2f4a6e; stroke-dasharray: none; stroke-width: 1.2; }
.time, .arrow text.time, .note text.time { text-anchor: start; }
.time { fill: #6b7788; font-size: 11px; font-variant-numeric: tabular-nums; }
.arrow { cursor: pointer; }
.arrow line.wire { stroke-width: 2; }
.arrow.c2s line.wire { stroke: #2463b8; } .arrow.s2s line.wire { stroke: #c8611a; }
.arrow.one line.wire { stroke-dasharray: 6 4; }
.arrow line.hit { stroke: transparent; stroke-width: 14; }
.arrow text { text-anchor: middle; fill: #1d2430; }
.arrow:hover line.wire, .arrow.selected line.wire { stroke-width: 3; }
.arrow:hover text, .arrow.selected text { font-weight: 700; }
.note rect { fill: #fff6cf; stroke: #b9a24a; }
.note text { font-size: 11px; fill: #4d4215; }
.note { cursor: pointer; }
#detail { position: fixed; right: 12px; top: 12px; bottom: 12px; width: min(46vw, 640px);
          background: #fbfcfe; border: 1px solid #9aa7b8; box-shadow: 0 4px 18px rgba(0,0,0,.18);
          display: flex; flex-direction: column; z-index: 2; }
#detail[hidden] { display: none; }
#detail header { padding: 8px 12px; border-bottom: 1px solid #dde3ea; }
#detail header b { font-size: 14px; }
#detail button { float: right; }
#detail pre { margin: 0; padding: 10px 12px; overflow: auto; flex: 1;
              font: 12px/1.35 ui-monospace, monospace; white-space: pre-wrap; }
"""

SCRIPT = """
(function () {
  var panel = document.getElementById('detail');
  var selected = null;
  function show(group) {
    if (selected) selected.classList.remove('selected');
    selected = group;
    group.classList.add('selected');
    var title = group.querySelector('title').textContent;
    var split = title.indexOf('\\n\\n');
    panel.querySelector('b').textContent = group.dataset.label || title.slice(0, split);
    panel.querySelector('.meta').textContent = group.dataset.meta || '';
    panel.querySelector('pre').textContent = split < 0 ? title : title.slice(split + 2);
    panel.hidden = false;
    panel.dataset.showing = group.id;
  }
  function fromAddress() {
    var group = location.hash && document.getElementById(location.hash.slice(1));
    if (group && group.matches('.arrow, .note')) {
      show(group);
      group.scrollIntoView({block: 'center'});
    }
  }
  document.querySelectorAll('.arrow, .note').forEach(function (group) {
    group.addEventListener('click', function () {
      history.replaceState(null, '', '#' + group.id);
      show(group);
    });
    group.addEventListener('keydown', function (event) {
      if (event.key === 'Enter') show(group);
    });
  });
  panel.querySelector('button').addEventListener('click', function () { panel.hidden = true; });
  document.addEventListener('keydown', function (event) {
    if (event.key === 'Escape') panel.hidden = true;
  });
  window.addEventListener('hashchange', fromAddress);
  fromAddress();
  document.body.dataset.ready = 'yes';
})();
"""


def x_of(index: int) -> int:
    return LEFT + COLUMN * index + COLUMN // 2


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(limit - 1, 1)] + "…"


def _head(line: Lifeline, index: int) -> str:
    x = x_of(index)
    if line.kind == "client" and "/" in line.name:
        bare, _, resource = line.name.partition("/")
        words = (f'<tspan x="{x}" y="22">{escape(_clip(bare, 28))}</tspan>'
                 f'<tspan class="sub" x="{x}" y="38">/{escape(_clip(resource, 26))}</tspan>')
    else:
        words = f'<tspan x="{x}" y="31">{escape(_clip(line.name, 28))}</tspan>'
    return (f'<g class="lifeline {line.kind}" data-key="{escape(line.key)}" data-x="{x}">'
            f'<title>{escape(line.name)}</title>'
            f'<rect x="{x - COLUMN // 2 + 8}" y="6" width="{COLUMN - 16}" height="42" rx="5"/>'
            f'<text>{words}</text></g>')


def _arrow(arrow: Arrow, y: int, column: dict[str, int]) -> str:
    a, b = column[arrow.source], column[arrow.target]
    x1, x2 = x_of(a), x_of(b)
    tip = -6 if x2 > x1 else 6
    one = arrow.hop == "s2s" and len(arrow.seen_in) < 2 and \
        not (arrow.source.startswith("peer:") or arrow.target.startswith("peer:"))
    classes = f"arrow {arrow.hop}" + (" one" if one else "")
    stamp = arrow.time.strftime("%H:%M:%S.%f")[:-3]
    meta = (f"{stamp}  {arrow.hop}  {arrow.connection}  (in the trace of "
            f"{' and '.join(arrow.seen_in)})")
    label = _clip(arrow.label, CHARS_PER_COLUMN * max(abs(b - a), 1))
    return (f'<g class="{classes}" id="s{arrow.n}" tabindex="0" data-n="{arrow.n}" '
            f'data-source="{escape(arrow.source)}" data-target="{escape(arrow.target)}" '
            f'data-hop="{arrow.hop}" data-label="{escape(arrow.label)}" data-meta="{escape(meta)}">'
            f'<title>{escape(arrow.label)}\n\n{escape(arrow.xml)}</title>'
            f'<text class="time" x="8" y="{y + 4}">{stamp}</text>'
            f'<line class="hit" x1="{x1}" y1="{y}" x2="{x2}" y2="{y}"/>'
            f'<line class="wire" x1="{x1}" y1="{y}" x2="{x2 + tip}" y2="{y}" '
            f'marker-end="url(#tip-{arrow.hop})"/>'
            f'<text x="{(x1 + x2) // 2}" y="{y - 6}">{escape(label)}</text></g>')


def _note(note: Note, y: int, column: dict[str, int]) -> str:
    x = x_of(column[note.lifeline])
    width = COLUMN * 2 - 20
    stamp = note.time.strftime("%H:%M:%S.%f")[:-3]
    return (f'<g class="note" id="s{note.n}" tabindex="0" data-n="{note.n}" '
            f'data-lifeline="{escape(note.lifeline)}" data-label="note" '
            f'data-meta="{stamp}  what the server logged">'
            f'<title>note\n\n{escape(note.text)}</title>'
            f'<text class="time" x="8" y="{y + 4}">{stamp}</text>'
            f'<rect x="{x - width // 2}" y="{y - 11}" width="{width}" height="20" rx="3"/>'
            f'<text x="{x - width // 2 + 6}" y="{y + 3}">{escape(_clip(note.text, 56))}</text></g>')


MARKERS = "".join(
    f'<marker id="tip-{hop}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
    f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
    f'fill="{colour}"/></marker>' for hop, colour in (("c2s", "#2463b8"), ("s2s", "#c8611a")))


def render(diagram: Diagram, title: str | None = None) -> str:
    lines = diagram.lifelines
    column = {line.key: i for i, line in enumerate(lines)}
    width = LEFT + COLUMN * len(lines) + 16
    height = ROW * len(diagram.rows) + ROW
    servers = [line.name for line in lines if line.kind == "server"]
    title = title or "Stanzas between " + " and ".join(servers)
    arrows = [row for row in diagram.rows if isinstance(row, Arrow)]
    rows = []
    for i, row in enumerate(diagram.rows):
        y = ROW * i + ROW
        rows.append(_arrow(row, y, column) if isinstance(row, Arrow) else _note(row, y, column))
    lifelines = "".join(
        f'<line class="life {line.kind}" x1="{x_of(i)}" y1="0" x2="{x_of(i)}" y2="{height}"/>'
        for i, line in enumerate(lines))
    span = ""
    if diagram.rows:
        first, last = diagram.rows[0].time, diagram.rows[-1].time
        span = (f" from {first:%Y-%m-%d %H:%M:%S} to {last:%H:%M:%S}"
                f" ({(last - first).total_seconds():.1f} s)")
    cut = ""
    if diagram.not_drawn:
        cut = (f'<p class="cut">Cut: only the first {len(diagram.rows)} rows are drawn; '
               f'{diagram.not_drawn} more stanza record(s) from '
               f'{diagram.cut_at:%H:%M:%S} on are not (xferd diagram --max-stanzas N).</p>')
    traces = ", ".join(escape(str(path)) for path in diagram.traces)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{STYLE}</style></head>
<body>
<header class="summary"><h1>{escape(title)}</h1>
<p>{len(arrows)} stanza(s) between {len(lines)} lifelines{span}; time runs down.
Hover over an arrow for its XML, click it to keep it open.</p>
<p class="legend"><span><i class="c2s"></i>client ↔ server (c2s)</span>
<span><i class="s2s"></i>server ↔ server (s2s)</span>
<span><i class="one"></i>s2s, in one trace only</span>
<span><i class="note"></i>what a server logged</span></p>
<p>Traces: {traces}</p>{cut}</header>
<div class="heads"><svg xmlns="http://www.w3.org/2000/svg" class="heads"
 width="{width}" height="{HEAD}">
{"".join(_head(line, i) for i, line in enumerate(lines))}</svg></div>
<svg xmlns="http://www.w3.org/2000/svg" id="diagram" width="{width}" height="{height}">
<defs>{MARKERS}</defs>
{lifelines}
{"".join(rows)}
</svg>
<aside id="detail" hidden><header><button type="button">close</button><b></b>
<div class="meta"></div></header><pre></pre></aside>
<script>{SCRIPT}</script>
</body></html>
"""
