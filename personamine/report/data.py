"""What the report shows, as plain JSON-able data: one entry per feature plus the shared token table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from personamine.errors import PersonamineError
from personamine.files.mine import MineResults
from personamine.merge.samples import INTERVAL_STEP
from personamine.roles import ROLES
from personamine.saes.neuronpedia import feature_url

if TYPE_CHECKING:
    from personamine.files.discover import DiscoveryResults

_SIG = 4  # significant digits kept for activations: what the hover shows, and it keeps the page small
_VISIBLE = {"\n": "↵", "\r": "␍", "\t": "⇥"}


def display_token(text: str, piece: str) -> tuple[str, bool]:
    """(what to print for a token, whether that is not the literal text) for the page.

    Spaces stay as they are (the page preserves whitespace); newlines and tabs become visible arrows, other control
    characters ``\\xNN`` escapes; a token that decodes to an incomplete UTF-8 sequence (U+FFFD) is shown as its raw
    byte-level piece instead. Non-literal renderings are styled apart so they cannot be mistaken for text.
    """
    if "\ufffd" in text and piece:
        return piece, True
    out = "".join(_VISIBLE.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch)
                  for ch in text)
    return out, out != text


def vocab_entry(token_id: int, text: str | None, piece: str) -> list:
    """A token as the page's script reads it: [what to print, its byte-level piece, 1 if that is not the literal
    text]; a token the file holds no text for prints as ``<id>``."""
    shown, is_piece = display_token(text, piece) if text is not None else (f"<{token_id}>", True)
    return [shown, piece, int(is_piece)]


def rounded(values: np.ndarray) -> list[float | None]:
    # Most per-token activations are 0: skipping their formatting makes a 1,000-feature page several times faster.
    return [0.0 if v == 0 else float(f"{v:.{_SIG}g}") if math.isfinite(v) else None
            for v in np.asarray(values, dtype=np.float64).tolist()]


def feature_order(results: MineResults, features: list[int] | None,
                  discovery: DiscoveryResults | None) -> list[int]:
    """Requested features (in the order given), else discovery ranking order, else the file's order."""
    ids = results.feature_ids.tolist()
    if features:
        present = set(ids)
        missing = [f for f in features if f not in present]
        if missing:
            raise PersonamineError(f"feature(s) {', '.join(map(str, missing[:5]))} are not in {results.path}")
        return list(dict.fromkeys(int(f) for f in features))
    if discovery is None:
        return ids
    rank = {int(f): r for r, f in enumerate(discovery.feature_ids.tolist())}
    return [f for _, f in sorted((rank.get(f, len(rank) + pos), f) for pos, f in enumerate(ids))]


def window_entry(results: MineResults, ex: dict, used: set[int], turns: bool) -> dict:
    keep = results.shown(ex)
    ids = ex["token_ids"][keep].astype(np.int64)
    used.update(ids.tolist())
    out = {"s": rounded([ex["score"]])[0], "d": ex["document"], "w": ex["window_start"], "t": ids.tolist(),
           "a": rounded(ex["activations"][keep])}
    if turns:  # role codes (ROLES) per shown token: the page labels each turn and marks the Assistant's
        out["r"] = ex["roles"][keep].astype(int).tolist()
    return out


def feature_entry(results: MineResults, feature_id: int, discovery: DiscoveryResults | None,
                  used: set[int]) -> dict:
    i = results.feature_index(feature_id)
    turns = results.has_turns() and results.roles is not None
    active = int(results.active_tokens[i])
    entry: dict = {
        "id": int(feature_id), "max": rounded([results.max[i]])[0], "density": float(results.density[i]),
        "active": active, "mean": rounded([results.activation_sum[i] / active])[0] if active else 0.0,
        "hist": [[int(b), int(c)] for b, c in enumerate(results.histogram[i].tolist()) if c],
        "top": [window_entry(results, ex, used, turns) for ex in results.examples(feature_id)],
        # Highest interval first; inside one, by score (the file keeps them by sampling key).
        "intervals": [[interval, [window_entry(results, ex, used, turns)
                                  for ex in sorted(windows, key=lambda w: -w["score"])]]
                      for interval, windows in sorted(results.interval_samples(feature_id).items(), reverse=True)],
        "lens": None, "disc": None,
    }
    if turns:
        entry["by_role"] = {role: float(d[i]) for role, d in results.density_by_role().items()}
    hosted = results.attrs.get("sae_neuronpedia")
    if hosted:  # a plain link: the page itself stays offline
        entry["np"] = feature_url(str(hosted), feature_id)
    lens = results.logit_lens
    if lens is not None:
        up, down = lens.promoted_ids[i].astype(np.int64), lens.suppressed_ids[i].astype(np.int64)
        used.update(up.tolist())
        used.update(down.tolist())
        entry["lens"] = {"up": [[int(t), v] for t, v in zip(up, rounded(lens.promoted_values[i]), strict=True)],
                         "down": [[int(t), v] for t, v in zip(down, rounded(lens.suppressed_values[i]), strict=True)]}
    if discovery is not None:
        hits = np.nonzero(discovery.feature_ids == feature_id)[0]
        if hits.size:
            rank = int(hits[0])
            control = rounded([discovery.control_firing[rank]])[0] if discovery.has_controls else None
            disc: dict = {"rank": rank + 1, "score": rounded([discovery.score[rank]])[0],
                          "persona": rounded([discovery.persona_firing[rank]])[0], "control": control}
            stats = discovery.ranking
            if stats is not None and stats.has_statistics:  # version 2: the CI, q and support behind the rank
                disc.update({"ci": rounded([stats.ci_low[rank], stats.ci_high[rank]]),
                             "q": rounded([stats.q_value[rank]])[0], "support": int(stats.support[rank])})
            if rank < discovery.persona_acts.shape[1]:  # per-prompt activations are stored for the top N only
                disc["persona_acts"] = rounded(discovery.persona_acts[:, rank])
                disc["control_acts"] = rounded(discovery.control_acts[:, rank])
            entry["disc"] = disc
    return entry


def directions_data(discovery: DiscoveryResults) -> list[dict]:
    """Each persona direction of a discovery file: its separation, stability and the SAE features that carry it."""
    out = []
    for (layer, pooling), d in sorted(discovery.directions.items()):
        out.append({"layer": layer, "pooling": pooling, "norm": rounded([d.norm])[0], "auroc": rounded([d.auroc])[0],
                    "auroc_ci": rounded(list(d.auroc_ci)), "split_half": rounded([d.split_half[0]])[0],
                    "saes": [{"name": name, "share": rounded([dec.reconstructed_share])[0],
                              "cosine": rounded([dec.reconstructed_cosine])[0],
                              "carried": [[int(f), v] for f, v in zip(dec.contribution_ids[:5].tolist(),
                                                                       rounded(dec.contribution[:5]), strict=True)],
                              "aligned": [[int(f), v] for f, v in zip(dec.cosine_ids[:5].tolist(),
                                                                       rounded(dec.cosine[:5]), strict=True)]}
                             for name, dec in d.decompositions.items()]})
    return out


def report_data(results: MineResults, features: list[int] | None = None,
                discovery: DiscoveryResults | None = None) -> dict:
    """Everything the page renders, as one JSON-able dict."""
    used: set[int] = set()
    entries = [feature_entry(results, f, discovery, used) for f in feature_order(results, features, discovery)]
    vocab = {str(tid): vocab_entry(tid, results.vocab_text.get(tid), results.vocab_pieces.get(tid, ""))
             for tid in sorted(used)}
    a = results.attrs
    meta = {
        "file": str(results.path), "model": str(a.get("model", "")), "layer": a.get("layer"),
        "sae": str(a.get("sae", "")), "corpus": str(a.get("corpus", "")), "n_documents": a.get("n_documents"),
        "tokens_scored": int(results.tokens_scored), "ctx_len": a.get("ctx_len"), "top_k": a.get("top_k"),
        "n_features_in_file": int(results.feature_ids.size), "format_version": a.get("format_version"),
        "per_interval": int(results.samples.per_interval) if results.samples is not None else None,
        "discovery": str(discovery.path) if discovery is not None else None,
        "directions": directions_data(discovery) if discovery is not None else None,
        "roles": list(ROLES) if results.has_turns() else None,
        "scored_by_role": ({ROLES[r]: int(n) for r, n in enumerate(results.tokens_scored_by_role.tolist()) if n}
                           if results.has_turns() else None),
    }
    interval_edges = results.interval_edges
    return {
        "meta": meta, "vocab": vocab, "hist_edges": results.histogram_edges.tolist(), "interval_step": INTERVAL_STEP,
        "interval_edges": interval_edges.tolist() if interval_edges is not None else None,
        "prompts": {"persona": discovery.persona_text, "control": discovery.control_text} if discovery else None,
        "features": entries,
    }
