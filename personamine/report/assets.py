"""The page's inline stylesheet and script (kept as strings: the report is one file with no external requests).

The script builds every element from the embedded JSON with ``textContent`` and ``setAttribute`` only, never
``innerHTML``, so corpus text can only ever become text. Feature sections render when they scroll near the
viewport, which keeps a 1,000-feature page responsive.
"""

CSS = r"""
:root { --fg: #1d1d1f; --muted: #6e6e73; --line: #e3e3e8; --bg: #fff; --panel: #f7f7f9; --hot: 255, 98, 0;
        --up: #1a7f37; --down: #cf222e; --persona: #8250df; --control: #8c959f; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
header.run { padding: 16px 24px; border-bottom: 1px solid var(--line); background: var(--panel); }
header.run h1 { margin: 0 0 4px; font-size: 20px; }
header.run .meta { color: var(--muted); }
main { padding: 0 24px 48px; max-width: 1200px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
h3 { font-size: 13px; margin: 16px 0 6px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.filter { margin: 8px 0; padding: 6px 8px; width: 280px; border: 1px solid var(--line); border-radius: 6px; }
.index-wrap { max-height: 420px; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
table.index { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.index th, table.index td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right;
                                 white-space: nowrap; }
table.index th { position: sticky; top: 0; background: var(--panel); cursor: pointer; user-select: none; }
table.index td.txt, table.index th.txt { text-align: left; }
table.index tbody tr:hover { background: #fff4ec; }
table.index a { color: inherit; }
section.feature { border-top: 2px solid var(--line); padding-top: 8px; margin-top: 28px; min-height: 240px; }
section.feature h2 { margin-top: 8px; }
section.feature .stats { color: var(--muted); }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.panel { background: var(--panel); border-radius: 6px; padding: 8px 10px; }
.panel.lens { flex: 1 1 320px; max-width: 640px; }
.ctx { font: 13px/1.7 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap;
       word-break: break-word; padding: 3px 6px; border-bottom: 1px solid var(--line); }
.ctx .score { display: inline-block; min-width: 6.5em; color: var(--muted); user-select: none; }
.ctx .where { color: var(--muted); font-size: 11px; margin-left: .5em; user-select: none; }
.tok { border-radius: 2px; }
.tok.on { box-shadow: inset 0 -2px rgba(var(--hot), .9); }
.tok.piece { color: #0550ae; font-style: italic; }
details.more summary { cursor: pointer; color: var(--muted); font-size: 12px; padding: 4px 6px; }
.interval-head { font-size: 12px; color: var(--muted); margin: 10px 0 2px; }
.chips { display: flex; flex-wrap: wrap; gap: 4px; }
.chip { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre; padding: 1px 6px;
        border-radius: 10px; border: 1px solid var(--line); }
.chip.up { background: #dafbe1; } .chip.down { background: #ffebe9; }
.chip .v { color: var(--muted); margin-left: .4em; }
svg text { font: 10px sans-serif; fill: var(--muted); }
.note { color: var(--muted); font-style: italic; }
"""

JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("pm-data").textContent);
  var V = D.vocab, SVG = "http://www.w3.org/2000/svg";

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs, parent) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "";
    if (v === 0) return "0";
    var a = Math.abs(v);
    return (a >= 1e4 || a < 1e-3) ? v.toExponential(2) : String(Number(v.toPrecision(4)));
  }
  function pct(v) {
    if (v === null || v === undefined) return "";
    return v === 0 ? "0%" : (v * 100 < 0.01 ? (v * 100).toExponential(1) : (v * 100).toPrecision(3)) + "%";
  }
  function tok(id) { return V[id] || ["<" + id + ">", "", 1]; }
  function range(lo, hi) { return "[" + fmt(lo) + ", " + fmt(hi) + ")"; }

  function header() {
    var m = D.meta, h = document.getElementById("pm-header");
    h.appendChild(el("h1", null, "personamine report: " + D.features.length + " features"));
    var bits = [m.model + " layer " + m.layer, "SAE " + m.sae, "corpus " + m.corpus,
                (m.n_documents || 0).toLocaleString() + " documents",
                m.tokens_scored.toLocaleString() + " tokens scored", "ctx " + m.ctx_len,
                "top " + m.top_k + (m.per_interval ? " + " + m.per_interval + " per interval" : "")];
    if (m.discovery) bits.push("discovery " + m.discovery);
    h.appendChild(el("div", "meta", bits.join(" · ")));
    h.appendChild(el("div", "meta", m.file + " (format v" + m.format_version + ")"));
  }

  function topToken(f) {
    if (!f.top.length) return "";
    var w = f.top[0], best = 0;
    for (var j = 1; j < w.a.length; j++) if (w.a[j] > w.a[best]) best = j;
    return tok(w.t[best])[0];
  }

  var COLS = [["#", function (f, i) { return i + 1; }, 0],
              ["feature", function (f) { return f.id; }, 0]];
  if (D.prompts || D.features.some(function (f) { return f.disc; })) {
    COLS.push(["rank", function (f) { return f.disc ? f.disc.rank : null; }, 0],
              ["disc. score", function (f) { return f.disc ? f.disc.score : null; }, 0],
              ["fires (persona)", function (f) { return f.disc ? f.disc.persona : null; }, 1],
              ["fires (control)", function (f) { return f.disc ? f.disc.control : null; }, 1]);
  }
  COLS.push(["density", function (f) { return f.density; }, 1], ["max", function (f) { return f.max; }, 0],
            ["mean", function (f) { return f.mean; }, 0], ["top token", topToken, 2]);

  function indexTable() {
    var wrap = document.getElementById("pm-index"), filter = el("input", "filter");
    filter.setAttribute("placeholder", "filter: feature id or top token");
    var box = el("div", "index-wrap"), table = el("table", "index"), thead = el("thead"), tbody = el("tbody");
    var tr = el("tr"), rows = [], dir = {};
    COLS.forEach(function (c, k) {
      var th = el("th", c[2] === 2 ? "txt" : null, c[0]);
      th.addEventListener("click", function () { sortBy(k); });
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    D.features.forEach(function (f, i) {
      var r = el("tr");
      r.setAttribute("data-feature", f.id);
      COLS.forEach(function (c, k) {
        var v = c[1](f, i), td = el("td", c[2] === 2 ? "txt" : null);
        if (k === 1) { var a = el("a", null, v); a.setAttribute("href", "#f-" + f.id); td.appendChild(a); }
        else td.textContent = c[2] === 1 ? pct(v) : (c[2] === 2 ? v : fmt(v));
        r.appendChild(td);
      });
      r._keys = COLS.map(function (c) { return c[1](f, i); });
      rows.push(r);
      tbody.appendChild(r);
    });
    function sortBy(k) {
      dir[k] = -(dir[k] || (k < 2 ? -1 : 1));
      rows.sort(function (a, b) {
        var x = a._keys[k], y = b._keys[k];
        if (x === null) return 1; if (y === null) return -1;
        return (x < y ? -1 : x > y ? 1 : 0) * dir[k];
      });
      rows.forEach(function (r) { tbody.appendChild(r); });
    }
    filter.addEventListener("input", function () {
      var q = filter.value.trim().toLowerCase();
      rows.forEach(function (r) {
        var hit = r._keys[1] === Number(q) || String(r._keys[COLS.length - 1]).toLowerCase().indexOf(q) >= 0;
        r.style.display = !q || hit ? "" : "none";
      });
    });
    table.appendChild(thead); table.appendChild(tbody); box.appendChild(table);
    wrap.appendChild(filter); wrap.appendChild(box);
  }

  function windowRow(w, fmax) {
    var row = el("div", "ctx");
    row.appendChild(el("span", "score", fmt(w.s)));
    w.t.forEach(function (id, j) {
      var t = tok(id), a = w.a[j], s = el("span", "tok" + (t[2] ? " piece" : "") + (a > 0 ? " on" : ""), t[0]);
      if (a > 0) s.style.backgroundColor = "rgba(255, 98, 0, " + Math.min(1, a / fmax).toFixed(3) + ")";
      s.setAttribute("data-a", a);
      s.setAttribute("title", "activation " + fmt(a) + " | token " + id + (t[1] ? " " + JSON.stringify(t[1]) : ""));
      row.appendChild(s);
    });
    row.appendChild(el("span", "where", "doc " + w.d + " @ " + w.w));
    return row;
  }

  function histogram(f) {
    var E = D.hist_edges, W = 360, H = 110, pad = 18, svg = sv("svg", {width: W, height: H + pad, class: "hist"});
    if (!f.hist.length) { svg.appendChild(sv("text", {x: 4, y: 14})).textContent = "never active"; return svg; }
    var lo = Math.max(0, f.hist[0][0] - 2), hi = Math.min(E.length - 1, f.hist[f.hist.length - 1][0] + 3);
    var n = hi - lo, bw = W / n, cmax = Math.max.apply(null, f.hist.map(function (b) { return b[1]; }));
    f.hist.forEach(function (b) {
      var h = Math.max(1, H * b[1] / cmax), r = sv("rect", {x: (b[0] - lo) * bw, y: H - h, width: bw - 1, height: h,
                                                            fill: "rgb(255, 98, 0)"}, svg);
      sv("title", {}, r).textContent = b[1].toLocaleString() + " tokens in " + range(E[b[0]], E[b[0] + 1]);
    });
    // Dashed lines and labels at the interval edges (a fixed subset of the bin edges): samples map onto the bars.
    for (var i = lo; i <= hi; i++) {
      if (i % D.interval_step) continue;
      var x = (i - lo) * bw;
      sv("line", {x1: x, x2: x, y1: 0, y2: H, stroke: "#999", "stroke-dasharray": "2,3"}, svg);
      sv("text", {x: x + 2, y: H + 12}, svg).textContent = fmt(E[i]);
    }
    sv("line", {x1: 0, x2: W, y1: H, y2: H, stroke: "#bbb"}, svg);
    return svg;
  }

  function bars(f) {
    var p = f.disc.persona_acts, c = f.disc.control_acts, all = p.concat(c), n = all.length;
    var W = Math.max(240, Math.min(720, n * 10)), H = 110, svg = sv("svg", {width: W, height: H + 18, class: "bars"});
    var top = Math.max.apply(null, all.concat([1e-12])), bw = W / n;
    all.forEach(function (v, j) {
      var persona = j < p.length, h = H * v / top, r = sv("rect", {x: j * bw, y: H - h, width: Math.max(1, bw - 1),
        height: Math.max(h, 0.5), fill: persona ? "#8250df" : "#8c959f", class: persona ? "persona" : "control"}, svg);
      r.setAttribute("data-v", v);
      var text = persona ? D.prompts.persona[j] : D.prompts.control[j - p.length];
      sv("title", {}, r).textContent = (persona ? "persona" : "control") + " prompt: " + fmt(v) + "\n" + text;
    });
    sv("line", {x1: 0, x2: W, y1: H, y2: H, stroke: "#bbb"}, svg);
    sv("text", {x: 2, y: H + 13}, svg).textContent = "persona prompts (" + p.length + ")";
    if (c.length) sv("text", {x: p.length * bw + 2, y: H + 13}, svg).textContent = "control prompts (" + c.length + ")";
    return svg;
  }

  function chips(list, cls) {
    var box = el("div", "chips");
    list.forEach(function (pair) {
      var t = tok(pair[0]), c = el("span", "chip " + cls + (t[2] ? " piece" : ""), t[0]);
      c.setAttribute("title", "token " + pair[0] + (t[1] ? " " + JSON.stringify(t[1]) : "") + ": logit " +
                     fmt(pair[1]));
      c.appendChild(el("span", "v", fmt(pair[1])));
      box.appendChild(c);
    });
    return box;
  }

  function render(sec, f) {
    var fmax = f.max > 0 ? f.max : 1, d = f.disc;
    var stats = "max " + fmt(f.max) + " · active on " + pct(f.density) + " of scored tokens (" +
                f.active.toLocaleString() + ") · mean when active " + fmt(f.mean);
    if (d) stats += " · discovery rank " + d.rank + ", score " + fmt(d.score) + ", fires on " + pct(d.persona) +
                    " of persona prompts" + (d.control === null ? "" : " vs " + pct(d.control) + " of controls");
    sec.appendChild(el("div", "stats", stats));
    var row = el("div", "row"), hist = el("div", "panel");
    hist.appendChild(el("h3", null, "activation histogram (tokens)"));
    hist.appendChild(histogram(f));
    row.appendChild(hist);
    var lens = el("div", "panel lens");
    lens.appendChild(el("h3", null, "logit lens"));
    if (f.lens) {
      lens.appendChild(el("div", "interval-head", "promoted"));
      lens.appendChild(chips(f.lens.up, "up"));
      lens.appendChild(el("div", "interval-head", "suppressed"));
      lens.appendChild(chips(f.lens.down, "down"));
    } else lens.appendChild(el("div", "note", "not in this file"));
    row.appendChild(lens);
    if (d && d.persona_acts) {
      var b = el("div", "panel");
      b.appendChild(el("h3", null, "activation on discovery prompts"));
      b.appendChild(bars(f));
      row.appendChild(b);
    }
    sec.appendChild(row);
    var top = el("div", "top");
    top.appendChild(el("h3", null, "top " + f.top.length + " contexts"));
    // The first few contexts show at once; the rest fold away so a section stays short enough to skim.
    var more = f.top.length > 8 ? el("details", "more") : null;
    if (more) more.appendChild(el("summary", null, (f.top.length - 8) + " more"));
    f.top.forEach(function (w, j) { (j < 8 || !more ? top : more).appendChild(windowRow(w, fmax)); });
    if (more) top.appendChild(more);
    if (!f.top.length) top.appendChild(el("div", "note", "no activating window"));
    sec.appendChild(top);
    var samples = el("div", "samples");
    samples.appendChild(el("h3", null, "interval samples (by each window's max)"));
    if (!D.interval_edges) samples.appendChild(el("div", "note", "not in this file (format version 1)"));
    f.intervals.forEach(function (group) {
      var k = group[0], g = el("div", "interval");
      g.setAttribute("data-interval", k);
      g.appendChild(el("div", "interval-head", "window max in " + range(D.interval_edges[k], D.interval_edges[k + 1]) +
                                               ": " + group[1].length + " sampled"));
      group[1].forEach(function (w) { g.appendChild(windowRow(w, fmax)); });
      samples.appendChild(g);
    });
    sec.appendChild(samples);
    sec.setAttribute("data-rendered", "1");
  }

  function sections() {
    var main = document.getElementById("pm-features"), byId = {};
    var io = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting) { io.unobserve(e.target); render(e.target, byId[e.target.id]); }
      });
    }, {rootMargin: "800px 0px"}) : null;
    D.features.forEach(function (f) {
      var sec = el("section", "feature");
      sec.id = "f-" + f.id;
      sec.setAttribute("data-feature", f.id);
      sec.appendChild(el("h2", null, "feature " + f.id));
      if (f.np) { var np = el("a", "np", "Neuronpedia"); np.setAttribute("href", f.np); sec.appendChild(np); }
      byId[sec.id] = f;
      main.appendChild(sec);
      if (io) io.observe(sec); else render(sec, f);
    });
  }

  header();
  indexTable();
  sections();
  document.body.setAttribute("data-ready", "1");
})();
"""
