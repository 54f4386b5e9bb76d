"""The browser's own style and scripts: the index, a feature page and live inspection.

Each page is the report's kind of page: a static shell, its data as escaped JSON, and inline scripts that build
every element with ``textContent`` and ``setAttribute`` (never ``innerHTML``), under the report's
Content-Security-Policy (no request leaves the page: sorting, paging, filtering and inspecting are links and forms
the server answers with a new page). A feature's sections come from the report's own renderers
(``personamine.report.assets.RENDER_JS``); these scripts add what only a server has: the paged index, neighbours,
and the inspection form and its results.
"""

CSS = r"""
nav.pm-nav { padding: 6px 24px; border-bottom: 1px solid var(--line); font-size: 13px; }
nav.pm-nav a { margin-right: 18px; color: var(--fg); }
.pm-links { margin: 10px 0 0; font-size: 13px; } .pm-links a { margin-right: 16px; }
form.pm-filter { display: flex; gap: 8px; align-items: center; margin: 8px 0; }
form.pm-filter .filter { margin: 0; width: 360px; }
.pager { margin: 8px 0; display: flex; gap: 14px; align-items: center; color: var(--muted); font-size: 13px; }
.pager a { color: var(--fg); }
table.index th a { color: inherit; text-decoration: none; display: block; }
table.index th.sorted { background: #ece7f8; }
table.index td.txt.expl { white-space: normal; min-width: 240px; max-width: 520px; text-align: left; }
.panel.neighbours table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 12px; }
.panel.neighbours td, .panel.neighbours th { padding: 2px 8px; text-align: right; white-space: nowrap; }
.panel.neighbours td.txt, .panel.neighbours th.txt { text-align: left; }
.inspect-form textarea { width: 100%; min-height: 150px; font: 13px/1.5 ui-monospace, SFMono-Regular, Menlo,
                         Consolas, monospace; padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; }
.inspect-form .fields { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; margin: 8px 0; }
.inspect-form input[type=text] { padding: 4px 6px; border: 1px solid var(--line); border-radius: 6px; width: 220px; }
.inspect-form input[type=number] { width: 64px; }
.inspect-form button { padding: 5px 14px; }
.status { color: var(--muted); margin: 6px 0; } .status.unavailable, .error { color: var(--down); }
.error { margin: 10px 0; font-weight: 600; }
.tokens-wrap { max-height: 520px; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
table.tokens { border-collapse: collapse; font-size: 12px; width: 100%; }
table.tokens th { position: sticky; top: 0; background: var(--panel); text-align: left; padding: 3px 8px; }
table.tokens td { border-bottom: 1px solid var(--line); padding: 2px 8px; vertical-align: top; white-space: nowrap; }
table.tokens td.tops { white-space: normal; }
table.tokens td.tk { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre; }
table.tokens tr.unscored td { color: var(--muted); }
table.tokens .chip { margin: 0 4px 2px 0; display: inline-block; }
table.tokens .chip a { color: inherit; }
.inspected h3 { text-transform: none; letter-spacing: 0; font-size: 13px; }
"""

# Shared by the three pages: the header of the served files and the navigation.
COMMON_JS = r"""
var pmServe = (function () {
  "use strict";
  var P = personamine, el = P.el;
  function data() { return JSON.parse(document.getElementById("pm-data").textContent); }
  function filesHeader(title, files) {
    var h = document.getElementById("pm-header");
    h.appendChild(el("h1", null, title));
    files.forEach(function (f) {
      h.appendChild(el("div", "meta", (files.length > 1 ? "file " + f.number + ": " : "") + f.name + " · " + f.model +
        " layer " + f.layer + " · SAE " + f.sae + " · corpus " + f.corpus + " · " + f.n_features.toLocaleString() +
        " features · " + f.tokens_scored.toLocaleString() + " tokens scored"));
    });
  }
  function a(href, text) { var e = el("a", null, text); e.setAttribute("href", href); return e; }
  function featureHref(file, id) { return "/feature/" + file + "/" + id; }
  function ready() { document.body.setAttribute("data-ready", "1"); }
  return {data: data, filesHeader: filesHeader, a: a, featureHref: featureHref, ready: ready};
})();
"""

INDEX_JS = r"""
(function () {
  "use strict";
  var P = personamine, S = pmServe, el = P.el, D = S.data(), X = D.index;
  S.filesHeader("personamine serve: " + X.total.toLocaleString() + " features" +
                (D.files.length > 1 ? " in " + D.files.length + " files" : ""), D.files);
  var main = document.getElementById("pm-main");
  var state = {sort: X.sort, dir: X.descending ? "desc" : "asc", q: X.query, n: X.size, page: X.page};
  function href(change) {
    var s = Object.assign({}, state, change), q = new URLSearchParams();
    if (s.sort !== "#") q.set("sort", s.sort);
    if (s.sort !== "#" || s.dir === "desc") q.set("dir", s.dir);
    if (s.q) q.set("q", s.q);
    if (s.n !== 50) q.set("n", s.n);
    if (s.page) q.set("page", s.page);
    var text = q.toString();
    return "/" + (text ? "?" + text : "");
  }

  var form = el("form", "pm-filter"), input = el("input", "filter");
  form.setAttribute("method", "get");
  form.setAttribute("action", "/");
  input.setAttribute("name", "q");
  input.setAttribute("placeholder", "filter: feature id, top token or explanation text");
  input.setAttribute("maxlength", String(D.limits.query));
  input.value = state.q;
  form.appendChild(input);
  [["sort", state.sort], ["dir", state.dir], ["n", state.n]].forEach(function (kv) {
    var h = el("input");
    h.setAttribute("type", "hidden"); h.setAttribute("name", kv[0]); h.value = String(kv[1]);
    form.appendChild(h);
  });
  form.appendChild(el("button", null, "filter"));
  if (state.q) form.appendChild(S.a(href({q: "", page: 0}), "clear the filter"));
  main.appendChild(form);

  var pages = Math.max(1, Math.ceil(X.matched / X.size));
  function pager() {
    var box = el("div", "pager"), first = X.page * X.size;
    box.appendChild(el("span", null, X.matched ? "rows " + (first + 1).toLocaleString() + "–" +
      Math.min(first + X.size, X.matched).toLocaleString() + " of " + X.matched.toLocaleString() +
      (state.q ? " matching (of " + X.total.toLocaleString() + ")" : "") : "no rows"));
    if (X.page > 0) box.appendChild(S.a(href({page: X.page - 1}), "‹ previous"));
    box.appendChild(el("span", null, "page " + (X.page + 1).toLocaleString() + " of " + pages.toLocaleString()));
    if (X.page + 1 < pages) box.appendChild(S.a(href({page: X.page + 1}), "next ›"));
    box.appendChild(el("span", null, "sorted by " + (state.sort === "#" ? X.default_order : headingOf(state.sort) +
      (state.dir === "desc" ? ", largest first" : ", smallest first"))));
    return box;
  }
  function headingOf(key) {
    for (var i = 0; i < X.columns.length; i++) if (X.columns[i].key === key) return X.columns[i].heading;
    return key;
  }
  main.appendChild(pager());

  var box = el("div", "index-wrap"), table = el("table", "index"), thead = el("thead"), tbody = el("tbody");
  var tr = el("tr"), ASCENDING_FIRST = {feature: 1, file: 1, rank: 1, top_token: 1, explanation: 1};
  X.columns.forEach(function (c) {
    var sorted = state.sort === c.key, th = el("th", (c.kind === "text" ? "txt" : "") + (sorted ? " sorted" : ""));
    var next = sorted ? (state.dir === "desc" ? "asc" : "desc") : (ASCENDING_FIRST[c.key] ? "asc" : "desc");
    var link = S.a(href({sort: c.key, dir: next, page: 0}), c.heading + (sorted ? (state.dir === "desc" ? " ▼" : " ▲")
                                                                                : ""));
    th.setAttribute("title", c.legend + " (click to sort)");
    th.setAttribute("data-col", c.key);
    th.appendChild(link);
    tr.appendChild(th);
  });
  thead.appendChild(tr);
  var SCORE = X.columns.map(function (c) { return c.key; }).indexOf("disc_score");
  X.rows.forEach(function (values, r) {
    var file = X.row_files[r], id = X.row_features[r], neg = SCORE >= 0 && values[SCORE] !== null &&
                                                             values[SCORE] < 0;
    var row = el("tr", neg ? "neg" : null);
    row.setAttribute("data-feature", id);
    row.setAttribute("data-file", file);
    X.columns.forEach(function (c, k) {
      var v = values[k], td = el("td", c.kind === "text" ? "txt" + (c.key === "explanation" ? " expl" : "") :
                                       (k === SCORE ? "score" : null));
      if (c.key === "feature") td.appendChild(S.a(S.featureHref(file, id), String(id)));
      else td.textContent = c.kind === "share" ? P.pct(v) : c.kind === "text" ? (v || "") : P.fmt(v);
      if (k === SCORE && neg) td.textContent = "▼ " + td.textContent;
      row.appendChild(td);
    });
    tbody.appendChild(row);
  });
  table.appendChild(thead); table.appendChild(tbody); box.appendChild(table);
  if (!X.rows.length) box.appendChild(el("div", "index-empty", state.q ? "No feature matches \u201c" + state.q +
    "\u201d: type a feature id, part of a top token or of an explanation." : "No rows on this page."));
  main.appendChild(box);
  main.appendChild(pager());
  var legend = el("dl", "legend");
  X.columns.forEach(function (c) { legend.appendChild(el("dt", null, c.heading)); legend.appendChild(el("dd", null,
                                                                                                  c.legend)); });
  main.appendChild(legend);
  S.ready();
})();
"""

FEATURE_JS = r"""
(function () {
  "use strict";
  var P = personamine, S = pmServe, el = P.el, D = S.data(), V = D.server, R = P.renderers(D), f = D.features[0];
  S.filesHeader("feature " + f.id + (D.files.length > 1 ? " of file " + V.file : ""), [D.files[V.file]]);
  var main = document.getElementById("pm-main"), links = el("div", "pm-links");
  links.appendChild(S.a("/", "← index"));
  links.appendChild(S.a("/inspect?file=" + V.file + "&features=" + f.id, "inspect a text with this feature"));
  main.appendChild(links);
  var sec = R.section(f);
  main.appendChild(sec);
  R.render(sec, f);

  // Neighbours by decoder direction, beside the histogram and logit lens.
  var N = V.neighbours, box = el("div", "panel neighbours");
  box.appendChild(el("h3", null, "neighbours (decoder cosine)"));
  if (N.ready) {
    var t = el("table"), head = el("tr");
    ["feature", "cosine", "top token"].forEach(function (h, k) {
      head.appendChild(el("th", k === 2 ? "txt" : null, h));
    });
    t.appendChild(head);
    N.rows.forEach(function (n) {
      var tr = el("tr"), td = el("td");
      tr.setAttribute("data-feature", n.id);
      if (n.file !== null) td.appendChild(S.a(S.featureHref(n.file, n.id), String(n.id)));
      else td.textContent = String(n.id);
      tr.appendChild(td);
      tr.appendChild(el("td", null, P.fmt(n.cosine)));
      tr.appendChild(el("td", "txt", n.top_token === null ? "(not served)" : n.top_token));
      t.appendChild(tr);
    });
    box.appendChild(t);
  }
  box.appendChild(el("div", "chart-note", N.note));
  (sec.querySelector(".row") || sec).appendChild(box);
  S.ready();
})();
"""

INSPECT_JS = r"""
(function () {
  "use strict";
  var P = personamine, S = pmServe, el = P.el, D = S.data(), I = D.inspect, F = I.form, R = P.renderers(D);
  S.filesHeader("live inspection", D.files);
  var main = document.getElementById("pm-main");

  var form = el("form", "inspect-form");
  form.setAttribute("method", "post");
  form.setAttribute("action", "/inspect");
  var fields = el("div", "fields");
  if (D.files.length > 1) {
    var select = el("select");
    select.setAttribute("name", "file");
    D.files.forEach(function (f) {
      var o = el("option", null, "file " + f.number + ": " + f.name);
      o.value = String(f.number);
      if (f.number === F.file) o.selected = true;
      select.appendChild(o);
    });
    fields.appendChild(select);
  } else {
    var hidden = el("input");
    hidden.setAttribute("type", "hidden"); hidden.setAttribute("name", "file"); hidden.value = "0";
    fields.appendChild(hidden);
  }
  ["text", "chat"].forEach(function (mode) {
    var label = el("label"), radio = el("input");
    radio.setAttribute("type", "radio"); radio.setAttribute("name", "mode"); radio.value = mode;
    if (F.mode === mode) radio.checked = true;
    label.appendChild(radio);
    label.appendChild(document.createTextNode(mode === "text" ? " a text" : " a chat (lines \u201cuser: \u2026\u201d" +
                                              ", \u201cassistant: \u2026\u201d), rendered with the chat template"));
    fields.appendChild(label);
  });
  form.appendChild(fields);
  var area = el("textarea");
  area.setAttribute("name", "text");
  area.setAttribute("maxlength", String(I.limits.chars));
  area.setAttribute("placeholder", "type a text, or a chat: one line \u201cuser: \u2026\u201d then \u201cassistant: " +
                    "\u2026\u201d per turn");
  area.value = F.text;
  form.appendChild(area);
  var more = el("div", "fields"), feats = el("input"), top = el("input");
  feats.setAttribute("type", "text"); feats.setAttribute("name", "features"); feats.value = F.features;
  feats.setAttribute("placeholder", "feature ids, e.g. 12,40");
  top.setAttribute("type", "number"); top.setAttribute("name", "top"); top.setAttribute("min", "0");
  top.setAttribute("max", String(I.limits.top)); top.value = String(F.top);
  var l1 = el("label", null, "features to show "), l2 = el("label", null, "top features per token ");
  l1.appendChild(feats); l2.appendChild(top);
  more.appendChild(l1); more.appendChild(l2);
  more.appendChild(el("button", null, "inspect"));
  form.appendChild(more);
  main.appendChild(form);
  main.appendChild(el("div", "status " + I.status.state, I.status.note));
  if (I.error) main.appendChild(el("div", "error", I.error));

  var X = I.result;
  if (!X) { S.ready(); return; }
  var inFile = I.in_file, shown = X.tokens.map(function (_, j) { return j; });
  var scored = X.state.filter(function (s) { return s === 0; }).length;
  var prefix = X.rules.sink_prefix.map(function (id) { return R.tok(id)[0]; }).join("");
  main.appendChild(el("h2", null, X.tokens.length.toLocaleString() + " tokens, " + scored.toLocaleString() +
                      " scored, in " + X.windows.length + " window" + (X.windows.length === 1 ? "" : "s")));
  main.appendChild(el("div", "chart-note", "as mining reads it: windows of " + X.rules.ctx_len + " tokens, each " +
    "opening with the sink prefix \u201c" + prefix + "\u201d (never scored; a chat's first window opens with its own " +
    "template instead), scoring the " + X.rules.score_roles.join(", ") + " tokens that are not special tokens and " +
    "whose residual norm is at most " + X.rules.norm_filter + "\u00d7 their window's median (0: no limit); " +
    X.seconds + " s"));
  var chat = X.mode === "chat";
  X.features.forEach(function (id, c) {
    var acts = X.activations[c], peak = Math.max.apply(null, acts.concat([0]));
    var box = el("div", "top inspected");
    box.setAttribute("data-feature", id);
    var h = el("h3");
    h.appendChild(S.a(S.featureHref(X.file, id), "feature " + id));
    h.appendChild(document.createTextNode(" \u00b7 max on this text " + P.fmt(peak) + " \u00b7 its max over the " +
                                          "corpus " + P.fmt(inFile[id].max)));
    box.appendChild(h);
    var w = {s: peak, t: X.tokens, a: acts, where: "your " + X.mode};
    if (chat) w.r = X.roles;
    box.appendChild(R.windowRow(w, inFile[id].max > 0 ? inFile[id].max : (peak || 1)));
    main.appendChild(box);
  });
  if (!X.features.length) main.appendChild(el("div", "note", "no features chosen: type ids above to see their " +
                                                             "activations along the text"));

  main.appendChild(el("h3", null, "top features at each token"));
  var wrap = el("div", "tokens-wrap"), t = el("table", "tokens"), head = el("tr");
  ["#", "token", "role", "scored", "top features (activation)"].forEach(function (x) {
    head.appendChild(el("th", null, x));
  });
  t.appendChild(head);
  shown.forEach(function (j) {
    var tr = el("tr", X.state[j] ? "unscored" : null), tk = R.tok(X.tokens[j]);
    tr.setAttribute("data-position", j);
    tr.appendChild(el("td", null, j));
    var cell = el("td", "tk" + (tk[2] ? " piece" : ""), tk[0]);
    cell.setAttribute("title", "token " + X.tokens[j] + (tk[1] ? " " + JSON.stringify(tk[1]) : ""));
    tr.appendChild(cell);
    tr.appendChild(el("td", null, X.role_names[X.roles[j]]));
    tr.appendChild(el("td", null, X.state[j] ? X.states[X.state[j]] : "yes"));
    var tops = el("td", "tops");
    X.top[j].forEach(function (pair) {
      var chip = el("span", "chip"), file = I.served[pair[0]];
      if (file !== undefined) chip.appendChild(S.a(S.featureHref(file, pair[0]), String(pair[0])));
      else chip.appendChild(document.createTextNode(String(pair[0])));
      chip.appendChild(el("span", "v", P.fmt(pair[1])));
      tops.appendChild(chip);
    });
    tr.appendChild(tops);
    t.appendChild(tr);
  });
  wrap.appendChild(t);
  main.appendChild(wrap);
  S.ready();
})();
"""

ERROR_JS = r"""
(function () {
  "use strict";
  var S = pmServe, D = S.data();
  S.filesHeader("personamine serve", D.files);
  var main = document.getElementById("pm-main");
  main.appendChild(personamine.el("div", "error", D.error));
  main.appendChild(S.a("/", "← index"));
  S.ready();
})();
"""
