"""What each page shows, as JSON-able data (the API answers with it too), and the page around it: the report's shell,
style, Content-Security-Policy and renderers, plus the browser's own scripts."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from personamine.files.mine import read_results
from personamine.report.assets import CSS as REPORT_CSS
from personamine.report.assets import RENDER_JS
from personamine.report.data import report_data
from personamine.report.page import CSP, script_json
from personamine.roles import ROLES
from personamine.serve.assets import COMMON_JS, CSS, ERROR_JS, FEATURE_JS, INDEX_JS, INSPECT_JS
from personamine.serve.index import MAX_PAGE_ROWS, MAX_QUERY_CHARS, IndexPage
from personamine.serve.inspect import MAX_CHOSEN, MAX_TEXT_CHARS, MAX_TOKENS, MAX_TOP

if TYPE_CHECKING:
    from personamine.serve.neighbours import DecoderNeighbours
    from personamine.serve.sources import ServedFile, Sources

SCRIPTS = {"index": INDEX_JS, "feature": FEATURE_JS, "inspect": INSPECT_JS, "error": ERROR_JS}


def page_html(kind: str, title: str, data: dict, extra: str = "") -> str:
    """A page of the browser: ``kind`` picks its script; ``extra`` is markup appended after it (the report's
    explanations and steering sections, which add themselves)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
        f"<title>{html.escape(title)}</title><style>{REPORT_CSS}{CSS}</style></head><body>"
        "<header class=\"run\" id=\"pm-header\"></header>"
        "<nav class=\"pm-nav\"><a href=\"/\">Index</a><a href=\"/inspect\">Live inspection</a></nav>"
        "<main id=\"pm-main\"></main>"
        "<noscript>This page renders with JavaScript (inline, no network access).</noscript>"
        f"<script type=\"application/json\" id=\"pm-data\">{script_json(data)}</script>"
        f"<script>{RENDER_JS}{COMMON_JS}{SCRIPTS[kind]}</script>{extra}</body></html>\n"
    )


def files_data(sources: Sources) -> list[dict]:
    return [{"number": f.number, "name": f.path.name, "model": str(f.attrs.get("model", "")),
             "layer": _plain(f.attrs.get("layer")), "sae": str(f.attrs.get("sae", "")),
             "corpus": str(f.attrs.get("corpus", "")), "n_features": int(f.feature_ids.size),
             "tokens_scored": int(f.head.tokens_scored)} for f in sources.files]


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


def index_data(sources: Sources, page: IndexPage) -> dict:
    index = sources.index
    return {
        "files": files_data(sources),
        "limits": {"query": MAX_QUERY_CHARS, "rows": MAX_PAGE_ROWS},
        "index": {
            "total": page.total, "matched": page.matched, "page": page.page, "size": page.size, "sort": page.sort,
            "descending": page.descending, "query": page.query, "columns": index.describe(), "rows": page.rows,
            "row_files": index.file_of[page.positions].tolist(),
            "row_features": index.feature_ids[page.positions].tolist(),
            "default_order": "discovery rank (unranked features after, in file order)"
            if sources.discovery is not None else "file order",
        },
    }


def feature_data(sources: Sources, file: int, feature: int, neighbours: DecoderNeighbours | None) -> dict:
    """A feature's page: the report's data for that one feature (read from the file now, as ``read_results``
    reads it), its neighbours, and the files' header."""
    served = sources.files[file]
    res = read_results(served.path, features=[feature])
    data = report_data(res, [feature], sources.discovery)
    data["meta"]["n_features_in_file"] = int(served.feature_ids.size)
    data["files"] = files_data(sources)
    data["server"] = {"file": file, "neighbours": neighbour_data(sources, file, feature, neighbours)}
    return data


def neighbour_data(sources: Sources, file: int, feature: int, neighbours: DecoderNeighbours | None) -> dict:
    if neighbours is None:
        return {"ready": False, "note": "no neighbours: the file records no SAE", "rows": []}
    found = neighbours.of(feature)
    index = sources.index
    top_token = index.column("top_token").values
    rows = []
    for other, cosine in found.neighbours:
        at = served_row(sources, file, other)
        rows.append({"id": other, "cosine": cosine, "file": None if at is None else int(index.file_of[at]),
                     "top_token": None if at is None else top_token[at]})
    return {"ready": found.ready, "note": found.note, "rows": rows}


def served_row(sources: Sources, file: int, feature: int) -> int | None:
    """The index row of a feature: in ``file`` if it holds it, else in the first served file that does."""
    index = sources.index
    row = index.row_of(file, feature)
    if row is not None:
        return row
    for other in sources.files:
        if feature in other.feature_set:
            return index.row_of(other.number, feature)
    return None


def feature_extra(sources: Sources, feature: int) -> str:
    """The report's own explanations and steering sections, for this feature alone."""
    extra = ""
    if sources.explanations is not None:
        from personamine.report.explanations import explanations_html

        extra += explanations_html(sources.explanations, [feature], table=False)
    if sources.steering is not None and feature in set(sources.steering.term_feature.tolist()):
        from personamine.report.steering import steering_html

        extra += steering_html(sources.steering, [feature], only=feature)
    return extra


def inspect_data(sources: Sources, status: dict, form: dict, result: dict | None = None,
                 error: str | None = None) -> dict:
    """The inspection page: the form (as the user left it), the model's status, and a result or an error."""
    served: ServedFile = sources.files[form["file"]]
    index, in_file, others = sources.index, {}, {}
    max_column = index.column("max").values
    for feature in (result or {}).get("features", []):
        row = index.row_of(served.number, feature)
        in_file[str(feature)] = {"max": float(max_column[row]) if row is not None else 0.0}
    for tops in (result or {}).get("top", []):
        for feature, _ in tops:
            if str(feature) not in others and (row := served_row(sources, served.number, feature)) is not None:
                others[str(feature)] = int(index.file_of[row])
    return {
        "meta": {"roles": list(ROLES)}, "vocab": (result or {}).get("vocab", {}), "hist_edges": [],
        "interval_step": 1, "interval_edges": None, "prompts": None, "features": [], "files": files_data(sources),
        "inspect": {"status": status, "form": form, "result": result, "error": error, "in_file": in_file,
                    "served": others, "limits": {"chars": MAX_TEXT_CHARS, "tokens": MAX_TOKENS, "top": MAX_TOP,
                                                 "features": MAX_CHOSEN}},
    }
