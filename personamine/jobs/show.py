"""Print a mining file in the terminal: histogram sparkline, logit lens, top contexts (activating tokens marked)
and interval samples."""

from __future__ import annotations

import numpy as np

from personamine.merge.hdf5 import MineResults


def render_window(results: MineResults, token_ids: np.ndarray, acts: np.ndarray, *, mark: str = "«»",
                  width: int = 0) -> str:
    """Decoded window text; each token with activation > 0 is wrapped in marks with its value. With ``width``,
    at most that many characters, cut around the peak token so it always shows (``…`` where text was cut)."""
    parts = _window_parts(results, token_ids, acts, mark)
    if width and sum(map(len, parts)) > width:
        return clip_around(parts, int(acts.argmax()) if acts.size else 0, width)
    return "".join(parts)


def _window_parts(results: MineResults, token_ids: np.ndarray, acts: np.ndarray, mark: str) -> list[str]:
    peak = float(acts.max()) if acts.size else 0.0
    parts = []
    for tid, value in zip(token_ids.tolist(), acts.tolist(), strict=True):
        text = results.token_text(tid).replace("\n", "⏎")
        if value > 0:
            strength = "!" if value >= 0.5 * peak else ""
            parts.append(f"{mark[0]}{text}{mark[1]}{strength}{value:.3g}")
        else:
            parts.append(text)
    return parts


def clip_around(parts: list[str], center: int, width: int) -> str:
    """Whole parts around ``parts[center]``, grown one part at a time on alternate sides (right first) while the
    result, with a ``…`` on each cut side, fits in ``width`` characters. The centre part is kept whole even if it
    alone is wider."""
    lo, hi = center, center + 1
    used = len(parts[center])

    def fits(extra: int, new_lo: int, new_hi: int) -> bool:
        return used + extra + (new_lo > 0) + (new_hi < len(parts)) <= width

    grew = True
    while grew:
        grew = False
        if hi < len(parts) and fits(len(parts[hi]), lo, hi + 1):
            used += len(parts[hi])
            hi += 1
            grew = True
        if lo > 0 and fits(len(parts[lo - 1]), lo - 1, hi):
            lo -= 1
            used += len(parts[lo])
            grew = True
    return ("…" if lo > 0 else "") + "".join(parts[lo:hi]) + ("…" if hi < len(parts) else "")


_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(results: MineResults, i: int) -> str:
    """The feature's token histogram over its non-empty range of log bins, e.g. ``0.0316 ▂█▅▁ 0.1``."""
    counts = results.histogram[i]
    nonzero = np.nonzero(counts)[0]
    if nonzero.size == 0:
        return "never active"
    lo, hi = int(nonzero[0]), int(nonzero[-1]) + 1
    top = counts[lo:hi].max()
    bars = "".join(" " if c == 0 else _SPARK[min(len(_SPARK) - 1, int(c * len(_SPARK) / (top + 1)))]
                   for c in counts[lo:hi].tolist())
    edges = results.histogram_edges
    return f"{edges[lo]:.3g} {bars} {edges[hi]:.3g}  (10 bins per decade)"


def _tokens(results: MineResults, ids: np.ndarray, values: np.ndarray) -> str:
    return ", ".join(f"{results.token_text(t)!r} {v:.3g}" for t, v in zip(ids.tolist(), values.tolist(), strict=True))


def _line(results: MineResults, ex: dict, prefix: int, width: int, label: str) -> str:
    text = render_window(results, ex["token_ids"][prefix:], ex["activations"][prefix:], width=width)
    return f"{label} score {ex['score']:.3g}  doc {ex['document']} @ {ex['window_start']}: {text}"


def format_feature(results: MineResults, feature_id: int, n_examples: int = 5, width: int = 0,
                   n_samples: int = 1) -> str:
    i = results.feature_index(feature_id)
    density = results.density[i]
    lines = [f"feature {feature_id}: max {results.max[i]:.3g}, active on {density:.4%} of "
             f"{results.tokens_scored:,} scored tokens",
             f"  histogram {sparkline(results, i)}"]
    lens = results.logit_lens
    if lens is not None:
        lines.append(f"  promoted:   {_tokens(results, lens.promoted_ids[i], lens.promoted_values[i])}")
        lines.append(f"  suppressed: {_tokens(results, lens.suppressed_ids[i], lens.suppressed_values[i])}")
    prefix = len(results.attrs.get("sink_prefix", []))
    for rank, ex in enumerate(results.examples(feature_id)[:n_examples], 1):
        lines.append(_line(results, ex, prefix, width, f"  #{rank}"))
    if n_samples > 0:
        for interval, windows in sorted(results.interval_samples(feature_id).items(), reverse=True):
            low, high = results.interval_bounds(interval)
            lines.append(f"  window max in [{low:.3g}, {high:.3g}): {len(windows)} sampled")
            lines.extend(_line(results, ex, prefix, width, "    ~") for ex in windows[:n_samples])
    return "\n".join(lines)


def format_results(results: MineResults, features: list[int] | None = None, n_examples: int = 5,
                   width: int = 0, n_samples: int = 1) -> str:
    ids = features if features else results.feature_ids.tolist()
    header = (f"{results.path}: {results.attrs.get('model')} layer {results.attrs.get('layer')}, "
              f"{len(ids)} features shown, {results.tokens_scored:,} tokens scored over "
              f"{results.attrs.get('n_documents')} documents")
    return "\n\n".join([header] + [format_feature(results, int(f), n_examples, width, n_samples) for f in ids])
