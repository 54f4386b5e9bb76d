"""Print a mining file's top contexts in the terminal, activating tokens marked."""

from __future__ import annotations

import numpy as np

from personamine.merge.hdf5 import MineResults


def render_window(results: MineResults, token_ids: np.ndarray, acts: np.ndarray, *, mark: str = "«»") -> str:
    """Decoded window text; each token with activation > 0 is wrapped in marks with its value."""
    peak = float(acts.max()) if acts.size else 0.0
    parts = []
    for tid, value in zip(token_ids.tolist(), acts.tolist(), strict=True):
        text = results.token_text(tid).replace("\n", "⏎")
        if value > 0:
            strength = "!" if value >= 0.5 * peak else ""
            parts.append(f"{mark[0]}{text}{mark[1]}{strength}{value:.3g}")
        else:
            parts.append(text)
    return "".join(parts)


def format_feature(results: MineResults, feature_id: int, n_examples: int = 5, width: int = 0) -> str:
    i = results.feature_index(feature_id)
    density = results.density[i]
    lines = [f"feature {feature_id}: max {results.max[i]:.3g}, active on {density:.4%} of "
             f"{results.tokens_scored:,} scored tokens"]
    prefix = len(results.attrs.get("sink_prefix", []))
    for rank, ex in enumerate(results.examples(feature_id)[:n_examples], 1):
        text = render_window(results, ex["token_ids"][prefix:], ex["activations"][prefix:])
        if width and len(text) > width:
            text = text[: width - 1] + "…"
        lines.append(f"  #{rank} score {ex['score']:.3g}  doc {ex['document']} @ {ex['window_start']}: {text}")
    return "\n".join(lines)


def format_results(results: MineResults, features: list[int] | None = None, n_examples: int = 5,
                   width: int = 0) -> str:
    ids = features if features else results.feature_ids.tolist()
    header = (f"{results.path}: {results.attrs.get('model')} layer {results.attrs.get('layer')}, "
              f"{len(results.feature_ids)} features, {results.tokens_scored:,} tokens scored over "
              f"{results.attrs.get('n_documents')} documents")
    return "\n\n".join([header] + [format_feature(results, int(f), n_examples, width) for f in ids])
