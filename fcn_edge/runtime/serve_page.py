"""The live view's page (``runtime/serve.py``): one self-contained HTML document, no external
resources, so it works on a box without internet. It shows each stream's MJPEG in an
``<img>``, the class legend, and figures that a script refreshes from ``/stats.json``."""
from __future__ import annotations

from html import escape
from typing import Sequence

__all__ = ["render_page", "REFRESH_MS"]

REFRESH_MS = 500  # the figures' refresh period

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em; background: #111; color: #eee; }
h1 { font-size: 1.2em; margin: 0 0 .5em; }
#streams { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
img.stream { display: block; max-width: 100%; min-width: 160px; background: #000; }
figcaption { color: #bbb; }
#panel { display: flex; flex-wrap: wrap; gap: 2em; margin-top: 1em; }
dl { display: grid; grid-template-columns: auto auto; gap: .2em 1em; margin: 0; }
dt { color: #999; } dd { margin: 0; min-width: 5em; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; }
td, th { padding: 0 .6em; min-width: 3.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
#legend { list-style: none; padding: 0; margin: 0; display: grid;
          grid-template-columns: repeat(2, auto); gap: .2em 1.5em; align-content: start; }
.swatch { display: inline-block; width: 1em; height: 1em; margin-right: .4em;
          vertical-align: middle; border: 1px solid #555; }
#state { color: #fa6; }
"""

_SCRIPT = """
const ms = x => x === undefined ? '–' : x.toFixed(1);
function uptime(s) {
  const m = Math.floor(s / 60), h = Math.floor(m / 60);
  return (h ? h + ' h ' : '') + (m ? m % 60 + ' min ' : '') + (s % 60).toFixed(0) + ' s';
}
function show(f) {
  for (const key of ['frames', 'dropped', 'viewers'])
    document.getElementById(key).textContent = f[key];
  document.getElementById('fps').textContent = f.fps.toFixed(1);
  document.getElementById('uptime').textContent = uptime(f.uptime);
  const stages = [...new Set(f.streams.flatMap(s => Object.keys(s.latency_p50_ms)))];
  const head = '<tr><th>p50 ms</th>' + f.streams.map(s => '<th>' + (f.streams.length > 1 ? s.index : '') + '</th>').join('');
  document.getElementById('latency').innerHTML = head + '</tr>' + stages.map(stage =>
    '<tr><td>' + stage + '</td>' +
    f.streams.map(s => '<td>' + ms(s.latency_p50_ms[stage]) + '</td>').join('') + '</tr>'
  ).join('');
  for (const s of f.streams) {
    const el = document.getElementById('stream-' + s.index + '-figures');
    if (el) el.textContent = s.fps.toFixed(1) + ' fps, ' + s.frames + ' frames, ' +
                             s.dropped + ' dropped';
  }
  document.getElementById('state').textContent = f.running ? '' : 'the run has ended';
}
async function refresh() {
  try {
    const answer = await fetch('/stats.json', {cache: 'no-store'});
    show(await answer.json());
  } catch (e) {
    document.getElementById('state').textContent = 'the run has ended (no answer from it)';
    return;
  }
  setTimeout(refresh, REFRESH_MS);
}
refresh();
"""


def render_page(title: str, legend: Sequence[tuple[str, tuple[int, int, int]]],
                streams: Sequence[tuple[int, str]]) -> str:
    """The page for ``streams`` ((index, name) pairs) and ``legend`` ((class, RGB) pairs)."""
    figures = "\n".join(
        f'<figure><img class="stream" id="stream-{i}" alt="live overlay of {escape(name)}" '
        f'src="{"/stream.mjpg" if i == 0 else f"/stream/{i}.mjpg"}">'
        f'<figcaption><b>{escape(name)}</b> <span id="stream-{i}-figures"></span>'
        f'</figcaption></figure>' for i, name in streams)
    classes = "\n".join(
        f'<li><span class="swatch" data-rgb="{r},{g},{b}" '
        f'style="background: rgb({r}, {g}, {b})"></span>{escape(name)}</li>'
        for name, (r, g, b) in legend)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<div id="streams">
{figures}
</div>
<div id="panel">
<dl id="figures">
<dt>FPS</dt><dd id="fps">–</dd><dt>frames</dt><dd id="frames">–</dd>
<dt>dropped frames</dt><dd id="dropped">–</dd><dt>uptime</dt><dd id="uptime">–</dd>
<dt>viewers</dt><dd id="viewers">–</dd>
</dl>
<table id="latency"></table>
<ul id="legend">
{classes}
</ul>
</div>
<p id="state"></p>
<script>const REFRESH_MS = {REFRESH_MS};
{_SCRIPT}</script>
</body></html>
"""
