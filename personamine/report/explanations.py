"""The report's explanations section (``report(..., explanations=FILE)``): its data, style and script in one place,
appended to the page after the main script, so the page's own layout can change without touching it.

It adds a table of every explained feature (its explanation and scores, sortable by any score, each row linking to
the feature) above the feature index, and the explanation with its scores under each feature's heading. Like the
main script it builds everything with ``textContent``, never ``innerHTML``.
"""

from __future__ import annotations

import math
from pathlib import Path

from personamine.files.explain import ExplanationResults, read_explanations
from personamine.report.page import script_json

SHOWN_METRICS = ("balanced_accuracy", "auc")

CSS = r"""
#pm-explanations table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
#pm-explanations th, #pm-explanations td { padding: 4px 10px; border-bottom: 1px solid var(--line, #e3e3e8);
                                           text-align: right; white-space: nowrap; }
#pm-explanations th { position: sticky; top: 0; background: var(--panel, #f7f7f9); cursor: pointer; }
#pm-explanations td.txt, #pm-explanations th.txt { text-align: left; white-space: normal; }
#pm-explanations .wrap { max-height: 420px; overflow: auto; border: 1px solid var(--line, #e3e3e8);
                         border-radius: 6px; }
#pm-explanations .meta, .explanation .scores { color: var(--muted, #6e6e73); font-size: 12px; }
.explanation { margin: 2px 0 8px; padding: 6px 10px; border-left: 3px solid #8250df; background: #f6f2fd; }
.explanation .text { font-size: 15px; }
.explanation .unparsed { color: var(--muted, #6e6e73); font-style: italic; }
"""

JS = r"""
(function () {
  "use strict";
  var X = JSON.parse(document.getElementById("pm-explanations-data").textContent);
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(v) { return v === null ? "–" : v.toFixed(2); }
  var cols = [];
  X.scorers.forEach(function (s) { X.metrics.forEach(function (m) { cols.push([s, m]); }); });
  function scoreLine(f) {
    return X.scorers.map(function (s) {
      var sc = f.scores[s];
      return s + ": balanced accuracy " + num(sc.balanced_accuracy) + ", AUC " + num(sc.auc) + " (" + sc.n +
             " texts" + (sc.n_unanswered ? ", " + sc.n_unanswered + " unanswered" : "") + ")";
    }).join(" · ");
  }

  // The table of every explained feature heads the report; a page of one feature (personamine serve) has only the
  // explanation under its heading.
  if (X.table) explanationsTable();

  function explanationsTable() {
    var sec = el("section"), table = el("table"), thead = el("thead"), tbody = el("tbody"), tr = el("tr");
    sec.id = "pm-explanations";
    sec.appendChild(el("h2", null, "Explanations"));
    sec.appendChild(el("div", "meta", X.features.length + " features explained by " + X.model + " (" + X.backend +
                                      ") · " + X.file));
    var heads = ["feature"].concat(cols.map(function (c) {
      return c[0] + " " + (c[1] === "auc" ? "AUC" : "bal. acc."); })).concat(["explanation"]);
    var dir = {};
    heads.forEach(function (h, k) {
      var th = el("th", k === heads.length - 1 ? "txt" : null, h);
      th.setAttribute("data-col", k);
      th.addEventListener("click", function () { sortBy(k); });
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    var rows = X.features.map(function (f) {
      var r = el("tr"), keys = [f.id].concat(cols.map(function (c) { return f.scores[c[0]][c[1]]; }));
      r.setAttribute("data-feature", f.id);
      var td = el("td"), a = el("a", null, f.id);
      a.setAttribute("href", "#" + (X.anchor_prefix || "") + "f-" + f.id);
      td.appendChild(a);
      r.appendChild(td);
      keys.slice(1).forEach(function (v) { r.appendChild(el("td", null, num(v))); });
      r.appendChild(el("td", "txt" + (f.parsed ? "" : " unparsed"), f.e));
      keys.push(f.e);
      r._keys = keys;
      tbody.appendChild(r);
      return r;
    });
    function sortBy(k) {  // a score column sorts best first on its first click; ids and text ascending
      var desc = dir[k] = dir[k] === undefined ? k > 0 && k < heads.length - 1 : !dir[k];
      rows.sort(function (a, b) {
        var x = a._keys[k], y = b._keys[k];
        if (x === y) return a._keys[0] - b._keys[0];
        if (x === null) return 1;
        if (y === null) return -1;  // unscored rows last either way
        return (x < y ? -1 : 1) * (desc ? -1 : 1);
      });
      rows.forEach(function (r) { tbody.appendChild(r); });
    }
    table.appendChild(thead); table.appendChild(tbody);
    var wrap = el("div", "wrap");
    wrap.appendChild(table);
    sec.appendChild(wrap);
    var main = document.querySelector("main");
    main.insertBefore(sec, main.firstChild);
  }

  X.features.forEach(function (f) {
    var feature = document.getElementById((X.anchor_prefix || "") + "f-" + f.id);
    if (!feature) return;
    var box = el("div", "explanation");
    box.appendChild(el("div", "text" + (f.parsed ? "" : " unparsed"), f.e + (f.parsed ? "" : " (not in the format)")));
    box.appendChild(el("div", "scores", scoreLine(f)));
    var head = feature.querySelector("h2");
    feature.insertBefore(box, head ? head.nextSibling : feature.firstChild);
  });
  document.body.setAttribute("data-explanations", "1");
})();
"""


def _value(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 4)


def _count(v: float) -> int:
    return 0 if math.isnan(v) else int(v)


def explanations_data(ex: ExplanationResults, feature_ids: list[int], table: bool = True) -> dict:
    """The explained features among ``feature_ids`` (the report's, in its order), as JSON-able data; ``table``:
    whether the page shows the table of them all (the report does, a feature page does not)."""
    explained = {int(f): row for row, f in enumerate(ex.feature_ids.tolist())}
    features = []
    for f in feature_ids:
        if (row := explained.get(int(f))) is None or not ex.explanations[row]:
            continue
        features.append({"id": int(f), "e": ex.explanations[row], "parsed": bool(ex.parsed[row]), "scores": {
            s: {**{m: _value(ex.scores[s][m][row]) for m in SHOWN_METRICS},
                "n": _count(ex.scores[s]["n"][row]), "n_unanswered": _count(ex.scores[s]["n_unanswered"][row])}
            for s in ex.scorers}})
    return {"file": str(ex.path), "model": str(ex.attrs.get("model", "")), "backend": str(ex.attrs.get("backend", "")),
            "scorers": ex.scorers, "metrics": list(SHOWN_METRICS), "features": features, "table": table}


def explanations_html(source: str | Path | ExplanationResults, feature_ids: list[int], table: bool = True,
                      anchor_prefix: str = "") -> str:
    """What ``render_page`` appends for an explanations file (or what ``read_explanations`` returned): style, data
    and script; ``anchor_prefix`` as ``steering_html``'s."""
    ex = source if isinstance(source, ExplanationResults) else read_explanations(source)
    data = {**explanations_data(ex, feature_ids, table), "anchor_prefix": anchor_prefix}
    return (f"<style>{CSS}</style><script type=\"application/json\" id=\"pm-explanations-data\">"
            f"{script_json(data)}</script><script>{JS}</script>")
