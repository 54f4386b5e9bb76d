"""What the report shows of a run with several readouts, as JSON-able data: one part per readout in the run's order,
an SAE readout's as ``report_data`` gives for a single file, a directions readout's per direction: its signed
statistics, signed histogram, percentiles, both tails' windows and the documents of highest and lowest mean
projection.

A direction is mined as two nonnegative channels (``personamine/shards/readouts.py``): channel ``i`` holds the
positive part of the projection and channel ``n + i`` the negated negative part. The highest windows are channel
``i``'s top windows; the lowest are channel ``n + i``'s, shown with their signed score (below 0) while their
per-token values stay as stored, ``-projection``, which the page says."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from personamine.files.mine import MineResults
from personamine.merge.documents import DocumentScores
from personamine.merge.stats import signed_bins
from personamine.report.data import report_data, rounded, vocab_entry, window_entry
from personamine.roles import ROLES

if TYPE_CHECKING:
    from personamine.files.discover import DiscoveryResults

PERCENTILES_SHOWN = (1, 10, 50, 90, 99)
N_DOCUMENTS = 10  # documents listed at each end of the ranking by mean projection


def _documents(docs: DocumentScores, i: int, rows: np.ndarray) -> list[dict]:
    out = []
    for r in rows.tolist():
        turns = docs.turn_rows(int(docs.document[r]))
        out.append({"d": int(docs.document[r]), "mean": rounded([docs.mean[r, i]])[0],
                    "max": rounded([docs.max[r, i]])[0], "min": rounded([docs.min[r, i]])[0],
                    "n": int(docs.n_tokens[r]),
                    # each assistant turn's mean projection, first turn first (conversations only)
                    "turns": [[int(docs.turn[t]), rounded([docs.turn_mean[t, i]])[0], int(docs.turn_n_tokens[t])]
                              for t in turns.tolist()]})
    return out


def direction_entry(results: MineResults, i: int, used: set[int], n_documents: int = N_DOCUMENTS) -> dict:
    """Direction ``i`` of a directions readout read whole."""
    names = results.direction_names or []
    n = len(names)
    stats = results.signed_stats()
    turns = results.has_turns() and results.roles is not None
    counts, low, high = signed_bins(results.histogram[i], results.histogram[n + i], results.tokens_scored,
                                    results.histogram_edges)
    entry: dict = {
        "i": i, "name": names[i],
        **{key: rounded([stats[key][i]])[0] for key in ("mean", "max", "min")},
        "above": float(stats["above"][i]), "below": float(stats["below"][i]),
        # [bin, low edge, high edge, tokens] of each non-empty bin of the signed axis (2B + 1 bins, lowest first;
        # bin B, with edges 0 and 0, holds the zeros)
        "hist": [[b, float(low[b]), float(high[b]), int(counts[0, b])] for b in np.nonzero(counts[0])[0].tolist()],
        "pct": ([[q, rounded([results.percentiles[i, q]])[0]] for q in PERCENTILES_SHOWN]
                if results.percentiles is not None else None),
        "high": [window_entry(results, ex, used, turns) for ex in results.examples(i)],
        "low": [{**window_entry(results, ex, used, turns), "s": rounded([-ex["score"]])[0]}
                for ex in results.examples(n + i)],
        "top_docs": None, "bottom_docs": None,
    }
    docs = results.documents
    if docs is not None and docs.document.size:
        top, bottom = docs.ranked(i, n_documents)
        entry["top_docs"], entry["bottom_docs"] = _documents(docs, i, top), _documents(docs, i, bottom)
    return entry


def directions_readout_data(results: MineResults, id_prefix: str = "") -> dict:
    """Everything the page renders of a directions readout, as one JSON-able dict (the shape the page's
    ``personamineDirections.part`` reads; ``vocab`` and ``meta.roles`` as in ``report_data``, so the context renderer
    serves both)."""
    used: set[int] = set()
    entries = [direction_entry(results, i, used) for i in range(len(results.direction_names or []))]
    vocab = {str(tid): vocab_entry(tid, results.vocab_text.get(tid), results.vocab_pieces.get(tid, ""))
             for tid in sorted(used)}
    a = results.attrs
    meta = {
        "file": str(results.path), "model": str(a.get("model", "")), "layer": a.get("layer"),
        "corpus": str(a.get("corpus", "")), "n_documents": a.get("n_documents"),
        "tokens_scored": int(results.tokens_scored), "ctx_len": a.get("ctx_len"), "top_k": a.get("top_k"),
        "centred": bool(results.config.get("center_directions")), "format_version": a.get("format_version"),
        "roles": list(ROLES) if results.has_turns() else None,
        "scored_by_role": ({ROLES[r]: int(n) for r, n in enumerate(results.tokens_scored_by_role.tolist()) if n}
                           if results.has_turns() else None),
    }
    return {"kind": "directions", "readout": results.readout, "id_prefix": id_prefix, "meta": meta, "vocab": vocab,
            "directions": entries}


def readouts_data(where: Path, readouts: list[MineResults], features: list[int] | None = None,
                  discovery: DiscoveryResults | None = None) -> dict:
    """The page of a run's readouts (``where``: the index, or a single directions file): the run's header and each
    readout's data, its ids prefixed with its name so that two SAE readouts' features never share an anchor.
    ``features`` and ``discovery`` apply to the SAE readouts (``discovery`` to those at its layer)."""
    parts = []
    for res in readouts:
        prefix = f"{res.readout}-"
        if res.is_directions:
            parts.append(directions_readout_data(res, prefix))
            continue
        at_layer = discovery is not None and str(discovery.attrs.get("layer")) == str(res.attrs.get("layer"))
        parts.append({**report_data(res, features, discovery if at_layer else None), "kind": "sae",
                      "readout": res.readout, "id_prefix": prefix})
    a = readouts[0].attrs if readouts else {}
    meta = {"file": str(where), "model": str(a.get("model", "")), "corpus": str(a.get("corpus", "")),
            "n_documents": a.get("n_documents")}
    return {"meta": meta, "readouts": parts}
