"""The page's inline stylesheet and script (kept as strings: the report is one file with no external requests).

The script is two parts: ``RENDER_JS``, the renderers of a feature's sections (histogram, logit lens, prompt pairs,
contexts with their turns, interval samples), which ``personamine serve`` uses for its feature pages and live
inspection too, and ``REPORT_JS``, the report's own page (header, index, lazily rendered sections). Both build every
element from the embedded JSON with ``textContent`` and ``setAttribute`` only, never ``innerHTML``, so corpus text
can only ever become text. Feature sections render when they scroll near the viewport, which keeps a 1,000-feature
page responsive.
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
.index-wrap { border: 1px solid var(--line); border-radius: 6px; }
table.index { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.index th, table.index td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right;
                                 white-space: nowrap; }
table.index th { position: sticky; top: 0; background: var(--panel); cursor: pointer; user-select: none; }
table.index td.txt, table.index th.txt { text-align: left; }
table.index tbody tr:hover { background: #fff4ec; }
table.index a { color: inherit; }
table.index tr.neg td.score, .stats .neg { color: var(--down); }
.index-empty { padding: 8px 10px; color: var(--muted); font-style: italic; }
.index-more { margin: 6px 0; padding: 4px 10px; border: 1px solid var(--line); border-radius: 6px;
              background: var(--panel); cursor: pointer; }
dl.legend { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 10px 0 0; font-size: 12px;
            color: var(--muted); }
dl.legend dt { font-weight: 600; color: var(--fg); }
dl.legend dd { margin: 0; }
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
.tok.r-template { color: var(--muted); font-size: 11px; }
.tok.r-assistant { border-bottom: 2px solid rgba(130, 80, 223, .45); }
.ctx .turn { font: 600 10px sans-serif; text-transform: uppercase; letter-spacing: .04em; padding: 0 4px;
             margin: 0 4px 0 2px; border-radius: 3px; color: #fff; background: #8c959f; user-select: none; }
.ctx .turn.assistant { background: var(--persona); } .ctx .turn.user { background: #57606a; }
.ctx .turn.system { background: #9a6700; }
details.more summary { cursor: pointer; color: var(--muted); font-size: 12px; padding: 4px 6px; }
.interval-head { font-size: 12px; color: var(--muted); margin: 10px 0 2px; }
.chips { display: flex; flex-wrap: wrap; gap: 4px; }
.chip { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre; padding: 1px 6px;
        border-radius: 10px; border: 1px solid var(--line); }
.chip.up { background: #dafbe1; } .chip.down { background: #ffebe9; }
.chip .v { color: var(--muted); margin-left: .4em; }
svg text { font: 10px sans-serif; fill: var(--muted); }
svg text.count { fill: var(--fg); }
.key { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; vertical-align: -1px; }
.key.persona { background: var(--persona); } .key.control { background: var(--control); }
.chart-note { font-size: 11px; color: var(--muted); }
.note { color: var(--muted); font-style: italic; }
nav.readouts { margin-top: 6px; }
section.readout { border-top: 3px solid var(--fg); margin-top: 32px; }
section.readout .readout-head .meta { color: var(--muted); }
section.direction { border-top: 2px solid var(--line); padding-top: 8px; margin-top: 28px; }
section.direction .stats { color: var(--muted); }
svg.signed rect.above { fill: rgb(255, 98, 0); } svg.signed rect.below { fill: #0969da; }
svg.signed rect.zero { fill: #8c959f; }
.tail.low .tok.on { box-shadow: inset 0 -2px rgba(9, 105, 218, .9); }
table.pct { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.pct th, table.pct td { padding: 2px 10px; text-align: right; border-bottom: 1px solid var(--line); }
.drift { display: inline-flex; gap: 6px; align-items: center; }
.drift .turns { font-size: 12px; color: var(--muted); }
"""

# The renderers of a feature's sections, shared by the report (below) and by ``personamine serve``'s feature pages and
# live inspection, so the two cannot drift: ``personamine.renderers(D)`` takes data of the shape ``report_data``
# returns (any number of features) and returns the functions that build a feature's elements.
RENDER_JS = r"""
var personamine = (function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";

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
  function range(lo, hi) { return "[" + fmt(lo) + ", " + fmt(hi) + ")"; }
  function count(v) { return Math.round(v).toLocaleString(); }

  // A chart's frame: plot area [L, L + PW] x [T, T + PH], a y axis with ticks at 0, half and a round top value.
  var L = 46, T = 14, PH = 110, B = 34;
  function niceTop(v) {
    var e = Math.pow(10, Math.floor(Math.log10(v))), steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * e >= v) return steps[i] * e;
    return 10 * e;
  }
  function yAxis(svg, top, PW, label, format) {
    [0, top / 2, top].forEach(function (v) {
      var y = T + PH - PH * v / top;
      sv("line", {x1: L - 3, x2: L + PW, y1: y, y2: y, stroke: v ? "#eee" : "#bbb"}, svg);
      sv("text", {x: L - 5, y: y + 3, "text-anchor": "end"}, svg).textContent = format(v);
    });
    sv("line", {x1: L, x2: L, y1: T, y2: T + PH, stroke: "#bbb"}, svg);
    sv("text", {x: 10, y: T + PH / 2, transform: "rotate(-90 10 " + (T + PH / 2) + ")", "text-anchor": "middle"},
       svg).textContent = label;
  }
  function xTitle(svg, PW, text) {
    sv("text", {x: L + PW / 2, y: T + PH + B - 4, "text-anchor": "middle"}, svg).textContent = text;
  }

  function renderers(D) {
    var V = D.vocab, ROLE_NAMES = D.meta.roles || [];
    function tok(id) { return V[id] || ["<" + id + ">", "", 1]; }
    function negative(f) { return !!(f.disc && f.disc.score !== null && f.disc.score < 0); }

    // The run's header (``into``: a readout's own head on a page of several readouts, titled with ``tag``).
    function header(title, into, tag) {
      var m = D.meta, h = into || document.getElementById("pm-header");
      h.appendChild(el(tag || "h1", null, title));
      var bits = [m.model + " layer " + m.layer, "SAE " + m.sae, "corpus " + m.corpus,
                  (m.n_documents || 0).toLocaleString() + " documents",
                  m.tokens_scored.toLocaleString() + " tokens scored", "ctx " + m.ctx_len,
                  "top " + m.top_k + (m.per_interval ? " + " + m.per_interval + " per interval" : "")];
      if (m.scored_by_role) bits.push("conversations, scoring " + Object.keys(m.scored_by_role).join(" + ") + " turns");
      if (m.discovery) bits.push("discovery " + m.discovery);
      h.appendChild(el("div", "meta", bits.join(" · ")));
      h.appendChild(el("div", "meta", m.file + " (format v" + m.format_version + ")"));
      (m.directions || []).forEach(function (d) {
        var line = "persona direction at layer " + d.layer + " (" + d.pooling + "): |v| " + fmt(d.norm) +
            ", AUROC " + fmt(d.auroc) + " [" + fmt(d.auroc_ci[0]) + ", " + fmt(d.auroc_ci[1]) + "], split-half " +
            "cosine " + fmt(d.split_half);
        d.saes.forEach(function (s) {
          line += "; " + s.name + " reconstructs " + pct(s.share) + " of it (cos " + fmt(s.cosine) + "), carried by " +
              s.carried.map(function (c) { return c[0] + " (" + fmt(c[1]) + ")"; }).join(", ");
        });
        h.appendChild(el("div", "meta direction", line));
      });
    }

    function topToken(f) {
      if (!f.top.length) return "";
      var w = f.top[0], best = 0;
      for (var j = 1; j < w.a.length; j++) if (w.a[j] > w.a[best]) best = j;
      return tok(w.t[best])[0];
    }

    // In a conversation each turn opens with a label of its role; template tokens (headers, delimiters) are muted
    // and the Assistant's tokens underlined. The peak token's role is named after the position.
    // ``value``: what a token's number is (default "activation"; a direction's tails say "projection"); ``rgb``: the
    // tint of active tokens (default orange).
    function windowRow(w, fmax, value, rgb) {
      var row = el("div", "ctx"), turn = null, best = 0;
      row.appendChild(el("span", "score", fmt(w.s)));
      w.t.forEach(function (id, j) {
        var t = tok(id), a = w.a[j], role = w.r ? ROLE_NAMES[w.r[j]] : null;
        if (a > w.a[best]) best = j;
        if (role === "template") turn = null;
        else if (role && role !== turn) { row.appendChild(el("span", "turn " + role, role)); turn = role; }
        var s = el("span", "tok" + (t[2] ? " piece" : "") + (a > 0 ? " on" : "") + (role ? " r-" + role : ""), t[0]);
        if (a > 0) s.style.backgroundColor = "rgba(" + (rgb || "255, 98, 0") + ", " + Math.min(1, a / fmax).toFixed(3) +
                                             ")";
        s.setAttribute("data-a", a);
        s.setAttribute("title", (value || "activation") + " " + fmt(a) + " | token " + id +
                       (t[1] ? " " + JSON.stringify(t[1]) : "") +
                       (role ? " | " + role : ""));
        row.appendChild(s);
      });
      row.appendChild(el("span", "where", (w.where !== undefined ? w.where : "doc " + w.d + " @ " + w.w) +
                         (w.r && w.t.length ? " · peak in " + ROLE_NAMES[w.r[best]] : "")));
      return row;
    }

    function histogram(f) {
      var E = D.hist_edges, PW = 340, svg = sv("svg", {width: L + PW + 10, height: T + PH + B, class: "hist"});
      if (!f.hist.length) { svg.appendChild(sv("text", {x: 4, y: 14})).textContent = "never active"; return svg; }
      var lo = Math.max(0, f.hist[0][0] - 2), hi = Math.min(E.length - 1, f.hist[f.hist.length - 1][0] + 3);
      var n = hi - lo, bw = PW / n, cmax = Math.max.apply(null, f.hist.map(function (b) { return b[1]; }));
      var top = niceTop(cmax);
      yAxis(svg, top, PW, "tokens", count);
      f.hist.forEach(function (b) {
        var h = Math.max(1, PH * b[1] / top), x = L + (b[0] - lo) * bw;
        var r = sv("rect", {x: x, y: T + PH - h, width: bw - 1, height: h, fill: "rgb(255, 98, 0)"}, svg);
        sv("title", {}, r).textContent = b[1].toLocaleString() + " tokens in " + range(E[b[0]], E[b[0] + 1]);
        if (b[1] === cmax) sv("text", {x: x + bw / 2, y: T + PH - h - 3, "text-anchor": "middle", class: "count"},
                              svg).textContent = count(cmax);
      });
      // Dashed lines and labels at the interval edges (a fixed subset of the bin edges): samples map onto the bars.
      for (var i = lo; i <= hi; i++) {
        if (i % D.interval_step) continue;
        var x = L + (i - lo) * bw;
        sv("line", {x1: x, x2: x, y1: T, y2: T + PH, stroke: "#999", "stroke-dasharray": "2,3"}, svg);
        sv("text", {x: x, y: T + PH + 12, "text-anchor": "middle"}, svg).textContent = fmt(E[i]);
      }
      sv("line", {x1: L, x2: L + PW, y1: T + PH, y2: T + PH, stroke: "#bbb"}, svg);
      xTitle(svg, PW, "activation (log scale, 10 bins per decade)");
      return svg;
    }

    // Persona prompt i and control prompt i ask the same question of the Assistant and of someone else: each pair
    // is drawn side by side, so the chart reads as the contrast the discovery score averages.
    function promptBars(f) {
      var p = f.disc.persona_acts, c = f.disc.control_acts, n = Math.max(p.length, c.length), per = c.length ? 2 : 1;
      var bw = Math.max(2, Math.min(9, Math.floor(640 / (n * (per + 0.6))))), gw = bw * per + Math.ceil(bw * 0.6);
      var PW = n * gw, svg = sv("svg", {width: L + PW + 10, height: T + PH + B, class: "bars"});
      var top = niceTop(Math.max.apply(null, p.concat(c, [1e-12])));
      yAxis(svg, top, PW, "activation", fmt);
      function bar(v, j, kind, x) {
        var h = PH * v / top, text = kind === "persona" ? D.prompts.persona[j] : D.prompts.control[j];
        var r = sv("rect", {x: x, y: T + PH - h, width: Math.max(1, bw - 1), height: Math.max(h, 0.5),
                            fill: kind === "persona" ? "#8250df" : "#8c959f", class: kind, "data-pair": j}, svg);
        r.setAttribute("data-v", v);
        sv("title", {}, r).textContent = kind + " prompt " + (j + 1) + ": " + fmt(v) + "\n" + text;
      }
      var every = Math.ceil(n / 16);
      for (var j = 0; j < n; j++) {
        var x = L + j * gw + 1;
        if (j < p.length) bar(p[j], j, "persona", x);
        if (j < c.length) bar(c[j], j, "control", x + (j < p.length ? bw : 0));
        if (j % every === 0) sv("text", {x: x + bw * per / 2, y: T + PH + 12, "text-anchor": "middle"},
                                svg).textContent = String(j + 1);
      }
      sv("line", {x1: L, x2: L + PW, y1: T + PH, y2: T + PH, stroke: "#bbb"}, svg);
      xTitle(svg, PW, c.length ? "prompt pair (persona line i with control line i)" : "persona prompt");
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

    function panel(title, body, cls) {
      var box = el("div", "panel" + (cls ? " " + cls : ""));
      box.appendChild(el("h3", null, title));
      (Array.isArray(body) ? body : [body]).forEach(function (b) { box.appendChild(b); });
      return box;
    }

    // A feature section, top to bottom: each renderer takes the feature's entry and returns an element or null.
    // A new kind of content is a new function added to one of these lists.
    function statsLine(f) {
      var d = f.disc, box = el("div", "stats", "max " + fmt(f.max) + " · active on " + pct(f.density) +
          " of scored tokens (" + f.active.toLocaleString() + ") · mean when active " + fmt(f.mean) +
          Object.keys(f.by_role || {}).map(function (r) { return " · " + pct(f.by_role[r]) + " of " + r + " tokens"; })
            .join(""));
      if (!d) return box;
      var disc = el("span", negative(f) ? "neg" : null, " · discovery rank " + d.rank + ", score " +
          (negative(f) ? "▼ " : "") + fmt(d.score) + ", fires on " + pct(d.persona) + " of persona prompts" +
          (d.control === null ? "" : " vs " + pct(d.control) + " of controls") +
          (d.ci ? " · 95% CI [" + fmt(d.ci[0]) + ", " + fmt(d.ci[1]) + "], q " + fmt(d.q) + ", carried by " +
                  d.support + " prompt" + (d.support === 1 ? "" : "s") + (d.support < 3 ? " (fewer than 3)" : "")
                : "") +
          (negative(f) ? " (below zero: it fires more on the controls)" : ""));
      box.appendChild(disc);
      return box;
    }

    function histogramPanel(f) {
      return panel("activation histogram: " + f.active.toLocaleString() + " active tokens", histogram(f));
    }

    function lensPanel(f) {
      if (!f.lens) return panel("logit lens", el("div", "note", "not in this file"), "lens");
      return panel("logit lens", [el("div", "interval-head", "promoted"), chips(f.lens.up, "up"),
                                  el("div", "interval-head", "suppressed"), chips(f.lens.down, "down")], "lens");
    }

    function promptsPanel(f) {
      var d = f.disc;
      if (!d || !d.persona_acts) return null;
      var key = el("div", "chart-note");
      key.appendChild(el("span", "key persona")); key.appendChild(document.createTextNode("persona"));
      if (d.control_acts.length) {
        key.appendChild(el("span", "key control")); key.appendChild(document.createTextNode("matched control"));
      }
      key.appendChild(document.createTextNode(" · hover a bar for its prompt"));
      return panel("activation on discovery prompts", [promptBars(f), key]);
    }

    var PANELS = [histogramPanel, lensPanel, promptsPanel];  // side by side, under the stats line

    function panelsRow(f) {
      var row = el("div", "row");
      PANELS.forEach(function (make) { var e = make(f); if (e) row.appendChild(e); });
      return row;
    }

    function topContexts(f) {
      var top = el("div", "top"), fmax = f.max > 0 ? f.max : 1;
      top.appendChild(el("h3", null, "top " + f.top.length + " contexts"));
      // The first few contexts show at once; the rest fold away so a section stays short enough to skim.
      var more = f.top.length > 8 ? el("details", "more") : null;
      if (more) more.appendChild(el("summary", null, (f.top.length - 8) + " more"));
      f.top.forEach(function (w, j) { (j < 8 || !more ? top : more).appendChild(windowRow(w, fmax)); });
      if (more) top.appendChild(more);
      if (!f.top.length) top.appendChild(el("div", "note", "no activating window"));
      return top;
    }

    function intervalSamples(f) {
      var samples = el("div", "samples"), fmax = f.max > 0 ? f.max : 1;
      samples.appendChild(el("h3", null, "interval samples (by each window's max)"));
      if (!D.interval_edges) samples.appendChild(el("div", "note", "not in this file (format version 1)"));
      f.intervals.forEach(function (group) {
        var k = group[0], g = el("div", "interval");
        g.setAttribute("data-interval", k);
        var bounds = range(D.interval_edges[k], D.interval_edges[k + 1]);
        g.appendChild(el("div", "interval-head", "window max in " + bounds + ": " + group[1].length + " sampled"));
        group[1].forEach(function (w) { g.appendChild(windowRow(w, fmax)); });
        samples.appendChild(g);
      });
      return samples;
    }

    var BLOCKS = [statsLine, panelsRow, topContexts, intervalSamples];

    function render(sec, f) {
      BLOCKS.forEach(function (make) { var e = make(f); if (e) sec.appendChild(e); });
      sec.setAttribute("data-rendered", "1");
    }

    // A feature's section: its heading (and Neuronpedia link); ``render`` fills it.
    function section(f) {
      var sec = el("section", "feature");
      sec.id = (D.id_prefix || "") + "f-" + f.id;  // a page of several readouts prefixes each one's ids
      sec.setAttribute("data-feature", f.id);
      sec.appendChild(el("h2", null, "feature " + f.id));
      if (f.np) { var np = el("a", "np", "Neuronpedia"); np.setAttribute("href", f.np); sec.appendChild(np); }
      return sec;
    }

    return {tok: tok, negative: negative, header: header, topToken: topToken, windowRow: windowRow, section: section,
            render: render};
  }

  return {el: el, sv: sv, fmt: fmt, pct: pct, range: range, renderers: renderers};
})();
"""

# A directions readout's part of the page (``personamine.report.directions`` gives its data): per direction the signed
# statistics, a signed histogram, percentiles, both tails' windows (with the feature renderers' context rows) and the
# documents of highest and lowest mean projection with each one's per-assistant-turn means.
DIRECTIONS_JS = r"""
var personamineDirections = (function () {
  "use strict";
  var P = personamine, el = P.el, sv = P.sv, fmt = P.fmt, pct = P.pct;
  var L = 46, T = 14, PH = 110, B = 34;

  // One bar per bin of the signed axis (the negative channel's bins mirrored, the zeros, the positive channel's).
  function signedHistogram(d) {
    var PW = 420, svg = sv("svg", {width: L + PW + 10, height: T + PH + B, class: "hist signed"});
    if (!d.hist.length) { sv("text", {x: 4, y: 14}, svg).textContent = "no scored token"; return svg; }
    var first = d.hist[0][0], last = d.hist[d.hist.length - 1][0], n = last - first + 1, bw = PW / n;
    var cmax = Math.max.apply(null, d.hist.map(function (b) { return b[3]; })), top = cmax;
    [0, top].forEach(function (v) {
      var y = T + PH - PH * v / top;
      sv("line", {x1: L - 3, x2: L + PW, y1: y, y2: y, stroke: v ? "#eee" : "#bbb"}, svg);
      sv("text", {x: L - 5, y: y + 3, "text-anchor": "end"}, svg).textContent = Math.round(v).toLocaleString();
    });
    d.hist.forEach(function (b) {
      var h = Math.max(1, PH * b[3] / top), x = L + (b[0] - first) * bw, sign = b[1] < 0 ? "below" : b[1] > 0 ? "above"
                                                                                            : "zero";
      var r = sv("rect", {x: x, y: T + PH - h, width: Math.max(1, bw - 1), height: h, class: "bar " + sign}, svg);
      r.setAttribute("data-count", b[3]);
      sv("title", {}, r).textContent = b[3].toLocaleString() + " tokens " + (sign === "zero" ? "at 0" : sign === "below"
          ? "in (" + fmt(b[1]) + ", " + fmt(b[2]) + "]" : "in " + P.range(b[1], b[2]));
    });
    var zero = d.hist.filter(function (b) { return b[1] >= 0; })[0];
    if (zero && d.hist[0][1] < 0) {  // the line at 0, between the two tails
      var x0 = L + (zero[0] - first) * bw + (zero[1] === 0 ? bw / 2 : 0);
      sv("line", {x1: x0, x2: x0, y1: T, y2: T + PH, stroke: "#57606a", "stroke-dasharray": "3,2"}, svg);
      sv("text", {x: x0, y: T + PH + 12, "text-anchor": "middle"}, svg).textContent = "0";
    }
    sv("text", {x: L, y: T + PH + 12, "text-anchor": "start"}, svg).textContent = fmt(d.hist[0][1]);
    sv("text", {x: L + PW, y: T + PH + 12, "text-anchor": "end"}, svg).textContent = fmt(d.hist[d.hist.length - 1][2]);
    sv("text", {x: L + PW / 2, y: T + PH + B - 4, "text-anchor": "middle"}, svg).textContent =
        "projection (log bins, 10 per decade each side of 0)";
    return svg;
  }

  function stat(key, label, text) {
    var s = el("span", "stat", label + " " + text);
    s.setAttribute("data-stat", key);
    return s;
  }

  function statsLine(d, m) {
    var box = el("div", "stats");
    [stat("mean", "mean", fmt(d.mean)), stat("max", "max", fmt(d.max)), stat("min", "min", fmt(d.min)),
     stat("above", "above 0 on", pct(d.above)), stat("below", "below 0 on", pct(d.below) + " of " +
                                                      m.tokens_scored.toLocaleString() + " scored tokens")]
      .forEach(function (s, k) { if (k) box.appendChild(document.createTextNode(" · ")); box.appendChild(s); });
    return box;
  }

  function percentiles(d) {
    var t = el("table", "pct"), head = el("tr"), row = el("tr");
    (d.pct || []).forEach(function (p) {
      head.appendChild(el("th", null, "p" + p[0]));
      var td = el("td", null, fmt(p[1]));
      td.setAttribute("data-q", p[0]);
      row.appendChild(td);
    });
    t.appendChild(head); t.appendChild(row);
    return d.pct ? t : el("div", "note", "not in this file");
  }

  function tail(R, d, windows, cls, title, note, fmax, value, rgb) {
    var box = el("div", "tail " + cls);
    box.appendChild(el("h3", null, title));
    box.appendChild(el("div", "chart-note", note));
    windows.forEach(function (w) { box.appendChild(R.windowRow(w, fmax > 0 ? fmax : 1, value, rgb)); });
    if (!windows.length) box.appendChild(el("div", "note", "no window"));
    return box;
  }

  // A document's mean projection per assistant turn, first turn first: a small line and the values.
  function drift(turns) {
    var box = el("span", "drift");
    if (turns.length > 1) {
      var W = 90, H = 22, lo = Math.min.apply(null, turns.map(function (t) { return t[1]; }));
      var hi = Math.max.apply(null, turns.map(function (t) { return t[1]; })), span = hi - lo || 1;
      var svg = sv("svg", {width: W, height: H, class: "drift-line"});
      sv("polyline", {points: turns.map(function (t, k) {
        return (2 + k * (W - 4) / (turns.length - 1)).toFixed(1) + "," +
            (H - 2 - (H - 4) * (t[1] - lo) / span).toFixed(1);
      }).join(" "), fill: "none", stroke: "#8250df", "stroke-width": 1.5}, svg);
      box.appendChild(svg);
    }
    var all = turns.map(function (t) { return "t" + (t[0] + 1) + " " + fmt(t[1]); });
    var text = el("span", "turns", all.length > 4 ? all.slice(0, 2).concat(["…", all[all.length - 1]]).join(" → ") +
                                                    " (" + all.length + " turns)" : all.join(" → "));
    text.setAttribute("title", all.join("\n"));  // every turn's mean
    box.appendChild(text);
    return box;
  }

  function documents(list, cls, title, turns) {
    var box = el("div", "docs " + cls), t = el("table", "index docs-table"), head = el("tr");
    box.appendChild(el("h3", null, title));
    ["#", "document", "mean", "max", "min", "tokens"].concat(turns ? ["mean per assistant turn"] : [])
      .forEach(function (c) { head.appendChild(el("th", c === "mean per assistant turn" ? "txt" : null, c)); });
    t.appendChild(head);
    list.forEach(function (doc, k) {
      var r = el("tr");
      r.setAttribute("data-doc", doc.d);
      r.setAttribute("data-mean", doc.mean);
      [k + 1, "doc " + doc.d, fmt(doc.mean), fmt(doc.max), fmt(doc.min), doc.n.toLocaleString()]
        .forEach(function (v) { r.appendChild(el("td", null, v)); });
      if (turns) { var td = el("td", "txt"); td.appendChild(drift(doc.turns)); r.appendChild(td); }
      t.appendChild(r);
    });
    box.appendChild(t);
    return box;
  }

  function direction(R, D, d) {
    var sec = el("section", "direction"), m = D.meta, turns = !!m.roles;
    sec.id = D.id_prefix + "d-" + d.i;
    sec.setAttribute("data-direction", d.name);
    sec.appendChild(el("h2", null, "direction " + d.name + (m.centred ? " (centred)" : "")));
    sec.appendChild(statsLine(d, m));
    var row = el("div", "row"), hist = el("div", "panel"), pcts = el("div", "panel");
    hist.appendChild(el("h3", null, "signed histogram: tokens by projection"));
    hist.appendChild(signedHistogram(d));
    pcts.appendChild(el("h3", null, "percentiles of the projection over scored tokens"));
    pcts.appendChild(percentiles(d));
    row.appendChild(hist); row.appendChild(pcts);
    sec.appendChild(row);
    sec.appendChild(tail(R, d, d.high, "high", "highest " + d.high.length + " windows",
                         "score: the window's highest projection; token values: the projection where above 0",
                         d.max, "projection", "255, 98, 0"));
    sec.appendChild(tail(R, d, d.low, "low", "lowest " + d.low.length + " windows",
                         "score: the window's lowest projection; token values: \u2212projection where below 0 " +
                         "(so larger is lower)", -d.min, "\u2212projection", "9, 105, 218"));
    if (d.top_docs) {
      sec.appendChild(documents(d.top_docs, "top", "documents of highest mean projection", turns));
      sec.appendChild(documents(d.bottom_docs, "bottom", "documents of lowest mean projection", turns));
    } else sec.appendChild(el("div", "note", "no per-document scores in this file"));
    return sec;
  }

  // ``head``: the readout's head (its title and what it read); ``box``: where its directions go.
  function part(D, head, box) {
    var R = P.renderers(D), m = D.meta;
    head.appendChild(el("h2", null, "readout " + D.readout + ": " + D.directions.length + " direction" +
                                    (D.directions.length === 1 ? "" : "s") + " at layer " + m.layer));
    head.appendChild(el("div", "meta", [m.model + " layer " + m.layer, "corpus " + m.corpus,
                                        (m.n_documents || 0).toLocaleString() + " documents",
                                        m.tokens_scored.toLocaleString() + " tokens scored", "ctx " + m.ctx_len,
                                        "top " + m.top_k + " windows each tail"].join(" · ")));
    head.appendChild(el("div", "meta", "each token's value is its residual's signed projection on the unit " +
                        "direction" + (m.centred ? ", minus the direction's reference mean" : "") + "; " + m.file));
    D.directions.forEach(function (d) { box.appendChild(direction(R, D, d)); });
  }

  return {part: part};
})();
"""

# The report's own page: its header, the sortable index of every feature, and the sections, rendered lazily.
REPORT_JS = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("pm-data").textContent);
  var P = personamine, el = P.el, fmt = P.fmt, pct = P.pct;

  // One SAE readout's features: the index into ``wrap`` and the sections into ``main``; returns its renderers.
  function featuresPart(D, wrap, main) {
    var R = P.renderers(D), PREFIX = D.id_prefix || "";
    var topToken = R.topToken, negative = R.negative;

    // Index columns: [heading, value, kind (0 number, 1 share, 2 text), what it means (shown in the legend)].
    var COLS = [["#", function (f, i) { return i + 1; }, 0, "position in this report (discovery rank order when a " +
                 "discovery file is given, else the file's order)"],
                ["feature", function (f) { return f.id; }, 0, "SAE feature id; click it to jump to its section"]];
    var HAS_DISC = !!(D.prompts || D.features.some(function (f) { return f.disc; }));
    if (HAS_DISC) {
      COLS.push(["rank", function (f) { return f.disc ? f.disc.rank : null; }, 0, "rank in the discovery file " +
                 "(1 = highest score); empty: the discovery did not rank it"],
                ["disc. score", function (f) { return f.disc ? f.disc.score : null; }, 0, "discovery score: mean " +
                 "activation on the persona prompts minus the mean on their matched controls (the raw persona mean " +
                 "when run without controls); ▼ marks a score below zero, a feature that fires more on the controls"],
                ["fires (persona)", function (f) { return f.disc ? f.disc.persona : null; }, 1, "share of the " +
                 "persona prompts on which the feature is active (> 0)"],
                ["fires (control)", function (f) { return f.disc ? f.disc.control : null; }, 1, "share of the " +
                 "control prompts on which it is active"]);
    }
    COLS.push(["density", function (f) { return f.density; }, 1, "share of the scored corpus tokens on which the " +
               "feature is active"],
              ["max", function (f) { return f.max; }, 0, "its largest activation on a scored corpus token"],
              ["mean", function (f) { return f.mean; }, 0, "its mean activation over the tokens where it is active"],
              ["top token", topToken, 2, "the token with the highest activation in its best context"]);
    var SCORED = D.meta.scored_by_role || {}, AFTER_DENSITY = COLS.length - 3;  // conversations: per scored role
    Object.keys(SCORED).forEach(function (role, k) {
      COLS.splice(AFTER_DENSITY + k, 0, ["density " + role,
        function (f) { return f.by_role ? f.by_role[role] : null; }, 1,
        "share of the " + SCORED[role].toLocaleString() + " scored " + role +
        " tokens on which the feature is active"]);
    });
    var SCORE_COL = 3, INDEX_ROWS = 50;  // longer indexes fold after this many rows (a button unfolds them)

    function indexTable() {
      var filter = el("input", "filter");
      filter.setAttribute("placeholder", "filter: feature id or top token");
      var box = el("div", "index-wrap"), table = el("table", "index"), thead = el("thead"), tbody = el("tbody");
      var tr = el("tr"), rows = [], dir = {}, unfolded = false;
      var empty = el("div", "index-empty"), more = el("button", "index-more");
      COLS.forEach(function (c, k) {
        var th = el("th", c[2] === 2 ? "txt" : null, c[0]);
        th.setAttribute("title", c[3] + " (click to sort)");
        th.addEventListener("click", function () { sortBy(k); });
        tr.appendChild(th);
      });
      thead.appendChild(tr);
      D.features.forEach(function (f, i) {
        var r = el("tr", negative(f) ? "neg" : null);
        r.setAttribute("data-feature", f.id);
        COLS.forEach(function (c, k) {
          var v = c[1](f, i), td = el("td", c[2] === 2 ? "txt" : (HAS_DISC && k === SCORE_COL ? "score" : null));
          if (k === 1) {
            var a = el("a", null, v);
            a.setAttribute("href", "#" + PREFIX + "f-" + f.id);
            td.appendChild(a);
          }
          else td.textContent = c[2] === 1 ? pct(v) : (c[2] === 2 ? v : fmt(v));
          if (HAS_DISC && k === SCORE_COL && negative(f)) td.textContent = "▼ " + td.textContent;
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
        show();
      }
      // Filtering searches every row, folded or not; without a filter the fold applies to the current order.
      function show() {
        var q = filter.value.trim().toLowerCase(), hits = 0;
        rows.forEach(function (r, pos) {
          var hit = q ? (r._keys[1] === Number(q) || String(r._keys[COLS.length - 1]).toLowerCase().indexOf(q) >= 0)
                      : (unfolded || pos < INDEX_ROWS);
          if (hit) hits++;
          r.style.display = hit ? "" : "none";
        });
        empty.textContent = q && !hits ? "No feature matches \u201c" + filter.value.trim() +
                                         "\u201d: type a feature id or part of a top token." : "";
        empty.style.display = q && !hits ? "" : "none";
        more.style.display = !q && rows.length > INDEX_ROWS ? "" : "none";
        more.textContent = unfolded ? "show the first " + INDEX_ROWS + " only" : "show all " + rows.length +
                                                                                 " features";
      }
      filter.addEventListener("input", show);
      more.addEventListener("click", function () { unfolded = !unfolded; show(); });
      table.appendChild(thead); table.appendChild(tbody); box.appendChild(table); box.appendChild(empty);
      wrap.appendChild(filter); wrap.appendChild(box); wrap.appendChild(more);
      var legend = el("dl", "legend");
      COLS.forEach(function (c) {
        legend.appendChild(el("dt", null, c[0]));
        legend.appendChild(el("dd", null, c[3]));
      });
      wrap.appendChild(legend);
      show();
    }

    function sections() {
      var byId = {};
      var io = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
        entries.forEach(function (e) {
          if (e.isIntersecting) { io.unobserve(e.target); R.render(e.target, byId[e.target.id]); }
        });
      }, {rootMargin: "800px 0px"}) : null;
      D.features.forEach(function (f) {
        var sec = R.section(f);
        byId[sec.id] = f;
        main.appendChild(sec);
        if (io) io.observe(sec); else R.render(sec, f);
      });
    }

    indexTable();
    sections();
    return R;
  }

  // A run of several readouts: the run's header, a link to each readout, then one part per readout in the run's
  // order, its own head (what it is) above its features or directions.
  function readoutsPage() {
    var m = DATA.meta, h = document.getElementById("pm-header"), main = document.getElementById("pm-readouts");
    h.appendChild(el("h1", null, "personamine report: " + DATA.readouts.length + " readout" +
                     (DATA.readouts.length === 1 ? "" : "s")));
    h.appendChild(el("div", "meta", [m.model, "corpus " + m.corpus, (m.n_documents || 0).toLocaleString() +
                                     " documents", m.file].join(" · ")));
    var nav = el("nav", "readouts");
    DATA.readouts.forEach(function (r, k) {
      var a = el("a", null, r.readout + " (" + (r.kind === "directions" ? r.directions.length + " directions"
                                                                         : r.features.length + " features") + ")");
      a.setAttribute("href", "#r-" + r.readout);
      if (k) nav.appendChild(document.createTextNode(" · "));
      nav.appendChild(a);
    });
    h.appendChild(nav);
    DATA.readouts.forEach(function (r) {
      var sec = el("section", "readout"), head = el("div", "readout-head");
      sec.id = "r-" + r.readout;
      sec.setAttribute("data-readout", r.readout);
      sec.setAttribute("data-kind", r.kind);
      sec.appendChild(head);
      main.appendChild(sec);
      if (r.kind === "directions") { personamineDirections.part(r, head, sec); return; }
      var wrap = el("div", "pm-index"), features = el("div", "pm-features");
      sec.appendChild(el("h3", null, "features")); sec.appendChild(wrap); sec.appendChild(features);
      featuresPart(r, wrap, features).header("readout " + r.readout + ": SAE features at layer " + r.meta.layer +
                                             " (" + r.features.length + ")", head, "h2");
    });
  }

  if (DATA.readouts) readoutsPage();
  else featuresPart(DATA, document.getElementById("pm-index"), document.getElementById("pm-features"))
    .header("personamine report: " + DATA.features.length + " features");
  document.body.setAttribute("data-ready", "1");
})();
"""

JS = RENDER_JS + DIRECTIONS_JS + REPORT_JS
