"""The report's steering section: per steered feature or direction, its metrics against the unsteered model, the
curves over alpha (inline SVG), the projection on a direction before and after with how often a cap or floor acted,
and the generations side by side, from a ``personamine steer`` file.

Appended to the page by ``report(..., steering=...)``. Like the rest of the page, the script builds every element
with ``textContent`` and ``setAttribute`` only, so generated text can only ever become text.
"""

from __future__ import annotations

import html
import math

import numpy as np

from personamine.files.steer import SteeringResults
from personamine.report.page import script_json


def _num(value: float) -> float | None:
    return float(f"{value:.5g}") if math.isfinite(value) else None


def steering_data(res: SteeringResults, page_features: list[int] | None = None, only: int | None = None) -> dict:
    """What the section renders, as JSON-able data; ``only``: just the groups that steer this feature (a feature's
    own page in ``personamine serve``)."""
    summary = res.summary()
    groups: dict[tuple[tuple[int, ...], tuple[str, ...]], list[int]] = {}
    for i in range(1, len(res.names)):
        groups.setdefault((res.features_of(i), res.directions_of(i)), []).append(i)
    interventions = []
    for i, row in enumerate(summary):
        metrics = {}
        for kind in res.sets:
            metrics[kind] = {"delta": {s: _num(row[f"{kind}_delta_{s}"]) for s in res.set_names},
                             "logprob": {s: _num(row[f"{kind}_logprob_{s}"]) for s in res.set_names},
                             "kl": _num(row[f"{kind}_kl"])}
        terms = np.nonzero(res.term_intervention == i)[0]
        stats = res.sets["persona"].term_stats
        acts = [[int(res.term_feature[t]), _num(stats["before_fired_mean"][t]), _num(stats["after_fired_mean"][t]),
                 int(stats["n_fired"][t])] for t in terms]
        dstats = res.sets["persona"].direction_stats
        dirs = [[res.direction_target[r], int(res.direction_layer[r]), res.direction_kind[r],
                 _num(float(dstats["before_mean"][r])), _num(float(dstats["after_mean"][r])),
                 _num(float(dstats["active_fraction"][r]))]
                for r in np.nonzero(res.direction_intervention == i)[0]] if dstats else []
        interventions.append({"name": res.names[i], "kind": res.kinds[i], "alpha": _num(float(res.alphas[i])),
                              "metrics": metrics, "ppl": _num(float(res.perplexity[i])), "acts": acts,
                              "dirs": dirs})
    a = res.attrs
    meta = {key: (a[key].item() if isinstance(a.get(key), np.generic) else a.get(key)) for key in (
        "model", "layer", "sae", "positions", "clamp_unit", "clamp_where", "alpha_unit", "decoding",
        "max_new_tokens", "ppl_corpus", "ppl_tokens", "self_name")}
    meta.update(file=str(res.path) if res.path else "", alpha_scale=_num(float(a.get("alpha_scale", math.nan))))
    on_page = set(page_features or [])
    return {
        "meta": meta, "sets": res.set_names,
        "continuations": [[c, int(s)] for c, s in zip(res.continuations, res.continuation_set.tolist(), strict=True)],
        "prompts": {kind: data.text for kind, data in res.sets.items()},
        "responses": {kind: data.responses for kind, data in res.sets.items()},
        "interventions": interventions,
        "groups": [{"features": list(features), "directions": list(directions), "rows": rows,
                    "linked": [f for f in features if f in on_page]}
                   for (features, directions), rows in groups.items() if only is None or only in features],
    }


CSS = r"""
#pm-steering { padding: 0 24px 48px; max-width: 1400px; }
#pm-steering .st-meta { color: var(--muted, #6e6e73); margin-bottom: 8px; }
#pm-steering section.st-group { border-top: 2px solid #e3e3e8; padding-top: 8px; margin-top: 24px; }
#pm-steering table.st-metrics { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 6px 0; }
#pm-steering table.st-metrics th, #pm-steering table.st-metrics td { padding: 3px 9px; border-bottom: 1px solid #e3e3e8;
  text-align: right; white-space: nowrap; }
#pm-steering table.st-metrics th:first-child, #pm-steering table.st-metrics td:first-child { text-align: left; }
#pm-steering .st-curves { display: flex; flex-wrap: wrap; gap: 16px; margin: 8px 0; }
#pm-steering .st-curve { background: #f7f7f9; border-radius: 6px; padding: 6px 8px; }
#pm-steering .st-curve h4 { margin: 0 0 4px; font-size: 12px; color: #6e6e73; font-weight: 600; }
#pm-steering .st-gens { overflow-x: auto; border: 1px solid #e3e3e8; border-radius: 6px; margin: 6px 0; }
#pm-steering table.st-gen { border-collapse: collapse; table-layout: fixed; }
#pm-steering table.st-gen th, #pm-steering table.st-gen td { vertical-align: top; padding: 4px 8px; width: 240px;
  min-width: 200px; border-right: 1px solid #e3e3e8; border-bottom: 1px solid #e3e3e8; text-align: left; }
#pm-steering table.st-gen td { font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  white-space: pre-wrap; word-break: break-word; }
#pm-steering table.st-gen td.st-same { color: #8c959f; }
#pm-steering table.st-gen th { position: sticky; top: 0; background: #f7f7f9; font-size: 12px; }
#pm-steering svg text { font: 10px sans-serif; fill: #6e6e73; }
#pm-steering .st-legend span { margin-right: 12px; font-size: 11px; }
"""

JS = r"""
(function () {
  "use strict";
  var S = JSON.parse(document.getElementById("pm-steer-data").textContent), NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#8250df", "#cf222e", "#1a7f37", "#bf8700", "#0969da", "#6e7781"];

  function node(tag, cls, text, parent) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (parent) parent.appendChild(e);
    return e;
  }
  function svgNode(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (parent) parent.appendChild(e);
    return e;
  }
  function num(v, digits) {
    if (v === null || v === undefined) return "";
    return Math.abs(v) >= 1e4 ? v.toExponential(2) : String(Number(v.toFixed(digits === undefined ? 3 : digits)));
  }

  // One chart: x = alpha (0 = unsteered), one polyline per series; hover a point for its value.
  function curve(title, xs, series, cls) {
    var box = node("div", "st-curve " + cls), W = 300, H = 140, L = 44, B = 22, T = 6, R = 8;
    node("h4", null, title, box);
    var ys = [];
    series.forEach(function (s) { s.values.forEach(function (v) { if (v !== null) ys.push(v); }); });
    var svg = svgNode("svg", {width: W, height: H, "class": "st-chart"}, box);
    if (!ys.length) { svgNode("text", {x: 4, y: 14}, svg).textContent = "no data"; return box; }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys);
    var y1 = Math.max.apply(null, ys);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    function px(x) { return L + (W - L - R) * (x - x0) / (x1 - x0); }
    function py(y) { return T + (H - T - B) * (1 - (y - y0) / (y1 - y0)); }
    svgNode("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#bbb"}, svg);
    svgNode("line", {x1: L, x2: L, y1: T, y2: H - B, stroke: "#bbb"}, svg);
    if (x0 < 0 && x1 > 0) svgNode("line", {x1: px(0), x2: px(0), y1: T, y2: H - B, stroke: "#ddd",
                                           "stroke-dasharray": "2,3"}, svg);
    [y0, y1].forEach(function (y) {
      svgNode("text", {x: 2, y: py(y) + 3}, svg).textContent = num(y);
    });
    xs.forEach(function (x) {
      svgNode("text", {x: px(x) - 6, y: H - 8}, svg).textContent = num(x, 2);
    });
    series.forEach(function (s, k) {
      var pts = [];
      s.values.forEach(function (v, j) { if (v !== null) pts.push([px(xs[j]), py(v), xs[j], v]); });
      var line = svgNode("polyline", {points: pts.map(function (p) { return p[0] + "," + p[1]; }).join(" "),
        fill: "none", stroke: s.color || COLORS[k % COLORS.length], "stroke-width": 1.5,
        "stroke-dasharray": s.dashed ? "4,3" : "none", "class": "st-line", "data-series": s.name}, svg);
      line.setAttribute("data-values", JSON.stringify(s.values));
      pts.forEach(function (p) {
        var c = svgNode("circle", {cx: p[0], cy: p[1], r: 2.5, fill: s.color || COLORS[k % COLORS.length]}, svg);
        svgNode("title", {}, c).textContent = s.name + " at alpha " + num(p[2], 3) + ": " + num(p[3], 4);
      });
    });
    var legend = node("div", "st-legend", null, box);
    series.forEach(function (s, k) {
      var item = node("span", null, (s.dashed ? "- - " : "\u2014 ") + s.name, legend);
      item.style.color = s.color || COLORS[k % COLORS.length];
    });
    return box;
  }

  function metricsTable(rows) {
    var t = node("table", "st-metrics"), head = node("tr", null, null, node("thead", null, null, t));
    var cols = ["intervention"];
    S.sets.forEach(function (s) { cols.push("\u0394log p " + s + " (persona)"); });
    S.sets.forEach(function (s) { cols.push("\u0394log p " + s + " (control)"); });
    cols.push("KL persona", "KL control", "perplexity", "activation where it fired (persona)",
              "projection on the direction, before \u2192 after (persona; how often the cap or floor acted)");
    cols.forEach(function (c) { node("th", null, c, head); });
    var body = node("tbody", null, null, t);
    [0].concat(rows).forEach(function (i) {
      var iv = S.interventions[i], tr = node("tr", null, null, body);
      tr.setAttribute("data-intervention", i);
      node("td", null, iv.name, tr);
      ["persona", "control"].forEach(function (kind) {
        S.sets.forEach(function (s) { node("td", null, num(iv.metrics[kind].delta[s]), tr); });
      });
      node("td", null, num(iv.metrics.persona.kl, 4), tr);
      node("td", null, num(iv.metrics.control.kl, 4), tr);
      node("td", null, num(iv.ppl), tr);
      node("td", null, iv.acts.map(function (a) {
        return a[0] + ": " + num(a[1]) + " \u2192 " + num(a[2]) + " (" + a[3] + " tokens)";
      }).join("; "), tr);
      node("td", "st-dirs", iv.dirs.map(function (d) {
        return "L" + d[1] + ": " + num(d[3]) + " \u2192 " + num(d[4]) +
          (d[2] === "cap" || d[2] === "floor" ? " (" + d[2] + " " + num(100 * d[5], 1) + "%)" : "");
      }).join("; "), tr);
    });
    return t;
  }

  function curves(group) {
    // The adds of this group's features at one common alpha, by alpha, with the unsteered model at 0.
    var adds = group.rows.filter(function (i) { return S.interventions[i].kind === "add" &&
                                                        S.interventions[i].alpha !== null; });
    var box = node("div", "st-curves");
    if (adds.length < 1) return box;
    var pts = adds.map(function (i) { return [S.interventions[i].alpha, i]; });
    if (!pts.some(function (p) { return p[0] === 0; })) pts.push([0, 0]);
    pts.sort(function (a, b) { return a[0] - b[0]; });
    var xs = pts.map(function (p) { return p[0]; }), at = function (f) {
      return pts.map(function (p) { return f(S.interventions[p[1]], p[1]); });
    };
    var lp = [];
    S.sets.forEach(function (s, k) {
      lp.push({name: s + " (persona)", color: COLORS[k],
               values: at(function (iv) { return iv.metrics.persona.delta[s]; })});
      lp.push({name: s + " (control)", color: COLORS[k], dashed: true,
               values: at(function (iv) { return iv.metrics.control.delta[s]; })});
    });
    box.appendChild(curve("\u0394 log p of each continuation set vs alpha", xs, lp, "st-logprob"));
    box.appendChild(curve("KL of the first generated token (nats)", xs, [
      {name: "persona", color: COLORS[0], values: at(function (iv) { return iv.metrics.persona.kl; })},
      {name: "control", color: COLORS[5], values: at(function (iv) { return iv.metrics.control.kl; })}], "st-kl"));
    box.appendChild(curve("perplexity on the corpus sample", xs, [
      {name: "perplexity", color: COLORS[2], values: at(function (iv) { return iv.ppl; })}], "st-ppl"));
    var f0 = group.features[0];
    if (f0 !== undefined) {
      box.appendChild(curve("feature " + f0 + " where it fired (persona)", xs, [
        {name: "before", color: COLORS[5], dashed: true, values: at(function (iv) {
          return iv.acts.length ? iv.acts[0][1] : null; })},
        {name: "after", color: COLORS[3], values: at(function (iv) { return iv.acts.length ? iv.acts[0][2] : null; })}
      ], "st-act"));
    } else if (group.directions.length) {
      // The direction's first layer: its projection before and after, over the positions the add acted on.
      box.appendChild(curve("projection on " + group.directions[0] + " (persona, first layer)", xs, [
        {name: "before", color: COLORS[5], dashed: true, values: at(function (iv) {
          return iv.dirs.length ? iv.dirs[0][3] : null; })},
        {name: "after", color: COLORS[3], values: at(function (iv) { return iv.dirs.length ? iv.dirs[0][4] : null; })}
      ], "st-proj"));
    }
    return box;
  }

  function generations(group, kind) {
    var wrap = node("div", "st-gens"), t = node("table", "st-gen");
    var head = node("tr", null, null, node("thead", null, null, t));
    var cols = [0].concat(group.rows);
    node("th", null, kind + " prompt", head);
    cols.forEach(function (i) { node("th", null, S.interventions[i].name, head); });
    var body = node("tbody", null, null, t);
    S.prompts[kind].forEach(function (prompt, p) {
      var tr = node("tr", null, null, body), base = S.responses[kind][0][p];
      node("td", null, prompt, tr);
      cols.forEach(function (i) {
        var text = S.responses[kind][i][p], td = node("td", i > 0 && text === base ? "st-same" : null, text, tr);
        td.setAttribute("data-intervention", i);
        if (i > 0 && text === base) td.setAttribute("title", "the same as unsteered");
      });
    });
    wrap.appendChild(t);
    return wrap;
  }

  var root = document.getElementById("pm-steering"), m = S.meta;
  node("h2", null, "Steering", root);
  node("div", "st-meta", [m.model + " layer " + m.layer, "SAE " + m.sae, "positions " + m.positions,
    "clamp in " + m.clamp_unit + " (" + m.clamp_where + ")", "alpha in " + m.alpha_unit +
    (m.alpha_unit === "residual-norm" ? " (1 = " + num(m.alpha_scale) + ")" : ""), m.decoding + ", " +
    m.max_new_tokens + " tokens", "perplexity on " + (m.ppl_tokens || 0) + " tokens of " + (m.ppl_corpus || "-")
  ].join(" \u00b7 "), root);
  node("div", "st-meta", "continuations: " + S.continuations.map(function (c) {
    return S.sets[c[1]] + ": \u201c" + c[0] + "\u201d"; }).join(" \u00b7 "), root);
  S.groups.forEach(function (g) {
    var sec = node("section", "st-group", null, root), title = node("h3", null, null, sec);
    sec.setAttribute("data-features", g.features.join(","));
    sec.setAttribute("data-directions", g.directions.join(","));
    sec.id = "steer-" + g.features.join("-") + (g.directions.length ? "-d" + S.groups.indexOf(g) : "");
    var named = [];
    if (g.features.length) named.push((g.features.length > 1 ? "features " : "feature ") + g.features.join(" + "));
    if (g.directions.length) named.push((g.directions.length > 1 ? "directions " : "direction ") +
                                        g.directions.join(" + "));
    title.appendChild(document.createTextNode(named.join(" + ") + " "));
    g.linked.forEach(function (f) {
      var a = node("a", null, "(contexts of " + f + ")", title);
      a.setAttribute("href", "#" + (S.anchor_prefix || "") + "f-" + f);
    });
    sec.appendChild(metricsTable(g.rows));
    sec.appendChild(curves(g));
    node("h4", null, "generations, persona prompts (grey: the same as unsteered)", sec);
    sec.appendChild(generations(g, "persona"));
    var more = node("details", null, null, sec);
    node("summary", null, "generations, control prompts", more);
    more.appendChild(generations(g, "control"));
  });
  root.setAttribute("data-ready", "1");
})();
"""


def steering_html(res: SteeringResults, page_features: list[int] | None = None, only: int | None = None,
                  anchor_prefix: str = "") -> str:
    """The section, its style, its data and its script, to append to the page's body; ``anchor_prefix``: what the
    page's feature anchors start with (a page of several readouts prefixes them with the readout's name)."""
    data = script_json({**steering_data(res, page_features, only), "anchor_prefix": anchor_prefix})
    return (f"<style>{CSS}</style><section id=\"pm-steering\" aria-label=\"{html.escape('steering')}\"></section>"
            f"<script type=\"application/json\" id=\"pm-steer-data\">{data}</script><script>{JS}</script>")
